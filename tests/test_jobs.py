import asyncio
from datetime import timedelta

from sqlalchemy import update

from bot import migrate
from bot.crypto import Crypto
from bot.db import Database
from bot.models import JOB_DEAD, JOB_DONE, JOB_QUEUED, JOB_RUNNING, Job, utcnow
from bot.store import Store


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
