import asyncio
import re
from datetime import timedelta

import pytest
from sqlalchemy import Connection, update
from sqlalchemy.dialects import postgresql

from bot import migrate
from bot.crypto import Crypto
from bot.db import Database
from bot.models import JOB_DEAD, JOB_DONE, JOB_QUEUED, JOB_RUNNING, Job, utcnow
from bot.store import Store
from bot.store.jobs import _claim_statement
from tests.pg import PostgresCluster

WEBHOOKS = frozenset({"webhook"})  # the webhook lane's kinds, as bot/app.py's worker has them


async def expire_leases(store: Store) -> None:
    await store.db.write(lambda conn: conn.execute(update(Job).values(lease_expires_at=utcnow() - timedelta(seconds=1))))


async def test_claim_run_complete(store: Store) -> None:
    job_id = await store.jobs.enqueue("echo", args={"x": 1})
    [job] = await store.jobs.claim("w1", limit=5, lease_seconds=30)
    assert (job.id, job.kind, job.args, job.attempts) == (job_id, "echo", {"x": 1}, 1)
    assert await store.jobs.claim("w2", limit=5, lease_seconds=30) == []
    assert await store.jobs.complete_many("w1", [job_id]) == {job_id}
    assert (await store.jobs.get(job_id)).status == JOB_DONE


async def test_completing_many_at_once_finishes_only_the_jobs_the_caller_holds(store: Store) -> None:
    held = [await store.jobs.enqueue("echo") for _ in range(3)]
    await store.jobs.claim("w1", limit=3, lease_seconds=30)
    other = await store.jobs.enqueue("echo")
    await store.jobs.claim("w2", limit=1, lease_seconds=30)
    queued = await store.jobs.enqueue("echo")
    assert await store.jobs.complete_many("w1", [*held, other, queued, 10_000]) == set(held)
    assert [(await store.jobs.get(job_id)).status for job_id in (*held, other, queued)] == \
        [JOB_DONE] * 3 + [JOB_RUNNING, JOB_QUEUED]
    assert await store.jobs.complete_many("w1", held) == set()  # done already: not again


async def test_expired_lease_is_claimed_again_and_the_old_owner_is_fenced_off(store: Store) -> None:
    job_id = await store.jobs.enqueue("echo")
    await store.jobs.claim("dead-worker", limit=1, lease_seconds=30)
    await expire_leases(store)
    [again] = await store.jobs.claim("w2", limit=1, lease_seconds=30)
    assert (again.id, again.attempts) == (job_id, 2)
    assert await store.jobs.complete_many("dead-worker", [job_id]) == set()
    assert await store.jobs.extend_leases("dead-worker", [job_id], lease_seconds=30) == set()
    assert await store.jobs.extend_leases("w2", [job_id], lease_seconds=30) == {job_id}
    assert await store.jobs.complete_many("w2", [job_id]) == {job_id}


async def test_failed_job_waits_for_its_retry_then_dead_letters(store: Store) -> None:
    job_id = await store.jobs.enqueue("flaky", max_attempts=2)
    await store.jobs.claim("w", limit=1, lease_seconds=30)
    assert await store.jobs.fail("w", job_id, error="boom 1", retry_at=utcnow() + timedelta(hours=1))
    assert await store.jobs.claim("w", limit=1, lease_seconds=30) == []
    await store.db.write(lambda conn: conn.execute(update(Job).values(run_after=utcnow() - timedelta(seconds=1))))
    [job] = await store.jobs.claim("w", limit=1, lease_seconds=30)
    assert job.attempts == 2
    await store.jobs.fail("w", job_id, error="boom 2", retry_at=None)
    dead = await store.jobs.get(job_id)
    assert (dead.status, dead.last_error) == (JOB_DEAD, "boom 2")
    assert (await store.jobs.counts())[JOB_DEAD] == 1


async def test_release_gives_the_attempt_back(store: Store) -> None:
    job_id = await store.jobs.enqueue("long")
    await store.jobs.claim("w", limit=1, lease_seconds=30)
    assert await store.jobs.release("w", job_id)
    job = await store.jobs.get(job_id)
    assert (job.status, job.attempts, job.lease_owner) == (JOB_QUEUED, 0, None)


async def test_dedupe_key_enqueues_once(store: Store) -> None:
    assert await store.jobs.enqueue("validate", dedupe_key="o/r#1@abc") is not None
    assert await store.jobs.enqueue("validate", dedupe_key="o/r#1@abc") is None


async def test_two_workers_never_claim_the_same_job(store: Store, database_url: str) -> None:
    ids = {await store.jobs.enqueue("n", args={"i": i}) for i in range(120)}
    # A second engine on the same database stands for another worker process.
    other = Store(Database(database_url), Crypto(Crypto.generate_key()))
    claimed: dict[str, list[int]] = {"a": [], "b": []}

    async def drain(name: str, s: Store) -> None:
        while True:
            jobs = await s.jobs.claim(name, limit=3, lease_seconds=60)
            if not jobs:
                return
            claimed[name].extend(j.id for j in jobs)

    try:
        await asyncio.gather(drain("a", store), drain("b", other), drain("a", store), drain("b", other))
    finally:
        await other.close()
    assert not set(claimed["a"]) & set(claimed["b"])
    assert len(claimed["a"]) + len(claimed["b"]) == 120
    assert set(claimed["a"]) | set(claimed["b"]) == ids


async def test_a_lane_claims_its_own_due_jobs_oldest_first_past_older_jobs_of_other_lanes(store: Store) -> None:
    now = utcnow()
    older = [await store.jobs.enqueue("validate", run_after=now - timedelta(minutes=10 - i)) for i in range(5)]
    webhooks = [await store.jobs.enqueue("webhook", run_after=now - timedelta(seconds=5 - i)) for i in range(4)]
    await store.jobs.enqueue("webhook", run_after=now + timedelta(hours=1))  # not due yet
    first = await store.jobs.claim("w", limit=2, lease_seconds=30, kinds=WEBHOOKS)
    assert [job.id for job in first] == webhooks[:2]
    rest = await store.jobs.claim("w", limit=5, lease_seconds=30, kinds=WEBHOOKS)
    assert [job.id for job in rest] == webhooks[2:]
    background = await store.jobs.claim("w", limit=10, lease_seconds=30, exclude_kinds=WEBHOOKS)
    assert [job.id for job in background] == older


async def test_a_claim_takes_expired_leases_and_due_jobs_oldest_first_never_more_than_its_limit(store: Store) -> None:
    hours_ago = [utcnow() - timedelta(hours=h) for h in (3, 2, 1.5, 1)]
    abandoned = [await store.jobs.enqueue("webhook", run_after=hours_ago[i]) for i in (0, 2)]
    await store.jobs.claim("dead-worker", limit=2, lease_seconds=30, kinds=WEBHOOKS)
    await expire_leases(store)
    due = [await store.jobs.enqueue("webhook", run_after=hours_ago[i]) for i in (1, 3, 3)]
    await store.jobs.enqueue("validate", run_after=hours_ago[0])
    claimed = await store.jobs.claim("w", limit=3, lease_seconds=30, kinds=WEBHOOKS)
    assert {job.id: job.attempts for job in claimed} == {abandoned[0]: 2, due[0]: 1, abandoned[1]: 2}
    counts = await store.jobs.counts()
    assert (counts[JOB_RUNNING], counts[JOB_QUEUED]) == (3, 3)
    assert [job.id for job in await store.jobs.claim("w", limit=3, lease_seconds=30, kinds=WEBHOOKS)] == due[1:]


async def test_two_workers_of_one_lane_never_claim_the_same_job(store: Store, database_url: str) -> None:
    ids = {await store.jobs.enqueue("webhook", args={"i": i}) for i in range(60)}
    others = {await store.jobs.enqueue("validate") for _ in range(30)}
    other = Store(Database(database_url), Crypto(Crypto.generate_key()))
    claimed: list[list[int]] = []

    async def drain(s: Store) -> None:
        while jobs := await s.jobs.claim(f"w{id(s)}", limit=4, lease_seconds=60, kinds=WEBHOOKS):
            assert len(jobs) <= 4
            claimed.append([job.id for job in jobs])

    try:
        await asyncio.gather(drain(store), drain(other), drain(store), drain(other))
    finally:
        await other.close()
    every = [job_id for batch in claimed for job_id in batch]
    assert sorted(every) == sorted(ids)  # each exactly once
    assert (await store.jobs.counts())[JOB_QUEUED] == len(others)


async def test_a_lane_leaves_out_any_kind_it_is_told_to(store: Store) -> None:
    """The kinds a lane leaves out are written into the claim's SQL as literals: quoted as SQL quotes them."""
    odd = "it's -- a kind"
    await store.jobs.enqueue(odd)
    kept = await store.jobs.enqueue("validate")
    claimed = await store.jobs.claim("w", limit=5, lease_seconds=60, exclude_kinds=frozenset({odd, "webhook"}))
    assert [job.id for job in claimed] == [kept]
    assert [job.kind for job in await store.jobs.claim("w", limit=5, lease_seconds=60,
                                                       kinds=frozenset({odd}))] == [odd]


async def _claim_plan(db: Database, *, kinds: frozenset[str] | None = None,
                      exclude_kinds: frozenset[str] | None = None) -> dict[str, str]:
    """PostgreSQL's generic plan of a lane's claim (the one its prepared statement settles on), by CTE."""
    compiled = _claim_statement(skip_locked=True, kinds=kinds, exclude_kinds=exclude_kinds).compile(
        dialect=postgresql.asyncpg.dialect())
    now = utcnow()
    given = {"now": now, "limit": 8, "owner": "w", "lease_until": now + timedelta(seconds=30)}
    values = tuple(given[name] if name in given else compiled.binds[name].effective_value
                   for name in compiled.positiontup)

    def explain(conn: Connection) -> str:
        conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_generic_plan")
        return "\n".join(row[0] for row in conn.exec_driver_sql("EXPLAIN " + compiled.string, values))

    plan = await db.write(explain)
    due = plan.partition("CTE due")[2]
    return {"expired": plan.partition("CTE expired")[2].partition("CTE due")[0],
            "due": re.split(r"CTE chosen|InitPlan", due)[0], "plan": plan}


async def _burst_left_behind(store: Store, db: Database) -> None:
    """What a burst leaves: many jobs that ran and ended (their old versions still in the indexes, no vacuum
    yet), background jobs piled up older than the webhooks, and a few running."""
    ended = [await store.jobs.enqueue("validate") for _ in range(200)]
    while claimed := await store.jobs.claim("w0", limit=50, lease_seconds=60, exclude_kinds=WEBHOOKS):
        await store.jobs.complete_many("w0", [job.id for job in claimed])
    assert len(ended) == 200
    for i in range(300):
        await store.jobs.enqueue("validate", run_after=utcnow() - timedelta(minutes=10, seconds=-i))
    for _ in range(5):
        await store.jobs.enqueue("webhook")
    await store.jobs.claim("w1", limit=3, lease_seconds=60, exclude_kinds=WEBHOOKS)
    await db.write(lambda conn: conn.exec_driver_sql("ANALYZE jobs"))


@pytest.mark.postgres
async def test_on_postgresql_each_lane_claims_from_its_own_index(postgres_cluster: PostgresCluster) -> None:
    """The webhook lane's claim must not read and sort the background jobs (as an OR over the two job states
    made it do) but read its own kind in order; the background lane must read its due jobs in order, not
    sort every queued one; and neither may read every running job (and every old version of one) to find
    the expired leases."""
    db = Database(postgres_cluster.create_database())
    store = Store(db, Crypto(Crypto.generate_key()))
    try:
        await migrate.upgrade(db)
        await _burst_left_behind(store, db)
        webhooks = await _claim_plan(db, kinds=WEBHOOKS)
        background = await _claim_plan(db, exclude_kinds=WEBHOOKS)
    finally:
        await store.close()
    assert "ix_jobs_queued" in webhooks["due"] and "ix_jobs_claim" not in webhooks["due"], webhooks["plan"]
    assert "ix_jobs_background" in background["due"] and "Sort" not in background["due"], background["plan"]
    for lane in (webhooks, background):
        assert "ix_jobs_leased" in lane["expired"] and "ix_jobs_claim" not in lane["expired"], lane["plan"]


async def test_migrate_is_idempotent(database_url: str) -> None:
    assert migrate.SCHEMA_HEAD == migrate.alembic_head(), "set SCHEMA_HEAD to the newest migration"
    db = Database(database_url)
    try:
        assert await migrate.current_revision(db) is None
        assert await migrate.upgrade(db) == migrate.head_revision()
        assert await migrate.upgrade(db) == migrate.head_revision()
        assert await migrate.current_revision(db) == migrate.head_revision()
    finally:
        await db.dispose()
