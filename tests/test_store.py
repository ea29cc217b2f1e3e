import asyncio

import pytest
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

from bot.models import JOB_QUEUED, JOB_RUNNING, Project, ProjectSecret, utcnow
from bot.store import IncomingDelivery, InstallationRef, InvalidSecret, RepoRef, Store


def incoming(delivery_id: str, **overrides) -> IncomingDelivery:
    values = dict(id=delivery_id, event="pull_request", action="opened", installation_id=7,
                  payload='{"action": "opened"}', job_kind="webhook", max_attempts=5)
    values.update(overrides)
    return IncomingDelivery(**values)


async def test_delivery_is_stored_with_its_job_once(store: Store) -> None:
    first = await store.deliveries.store(incoming("d-1"))
    again = await store.deliveries.store(incoming("d-1"))
    assert not first.duplicate and first.job_id is not None
    assert again.duplicate and again.job_id is None
    jobs = await store.jobs.for_delivery("d-1")
    assert [(j.id, j.status, j.kind) for j in jobs] == [(first.job_id, JOB_QUEUED, "webhook")]
    stored = await store.deliveries.get("d-1")
    assert (stored.event, stored.action, stored.installation_id) == ("pull_request", "opened", 7)


async def test_concurrent_deliveries_share_transactions_and_never_double(store: Store) -> None:
    ids = [f"d-{i % 150}" for i in range(300)]  # every id twice, arriving together
    results = await asyncio.gather(*(store.deliveries.store(incoming(i)) for i in ids))
    accepted = [i for i, r in zip(ids, results) if not r.duplicate]
    assert sorted(accepted) == sorted(set(ids))
    assert await store.deliveries.count() == 150
    assert (await store.jobs.counts())[JOB_QUEUED] == 150
    for delivery_id, result in zip(ids, results):  # each its own job (PostgreSQL inserts a batch's together)
        if not result.duplicate:
            assert [job.id for job in await store.jobs.for_delivery(delivery_id)] == [result.job_id]


async def test_a_batch_mixing_new_known_and_leased_deliveries_stores_each_right(store: Store) -> None:
    await store.deliveries.store(incoming("known"))
    results = await asyncio.gather(store.deliveries.store(incoming("known")),
                                   store.deliveries.store(incoming("new-1")),
                                   store.deliveries.store(incoming("leased", lease_owner="w1", lease_seconds=30)),
                                   store.deliveries.store(incoming("new-1")))
    assert [r.duplicate for r in results] == [True, False, False, True]
    leased = await store.jobs.get(results[2].job_id)
    assert (leased.delivery_id, leased.status, leased.lease_owner) == ("leased", JOB_RUNNING, "w1")
    assert (await store.jobs.get(results[1].job_id)).delivery_id == "new-1"
    assert await store.deliveries.count() == 3


async def test_a_delivery_can_be_stored_already_leased_to_a_worker(store: Store) -> None:
    stored = await store.deliveries.store(incoming("d-2", lease_owner="w1", lease_seconds=30))
    job = await store.jobs.get(stored.job_id)
    assert (job.status, job.lease_owner, job.attempts) == (JOB_RUNNING, "w1", 1)
    assert await store.jobs.claim("w2", limit=10, lease_seconds=30) == []


async def test_installations_and_projects_follow_github(store: Store) -> None:
    projects = store.projects
    await projects.upsert_installation(InstallationRef(id=1, account_login="octo-org", account_type="Organization"))
    await projects.upsert_projects(1, [RepoRef(10, "octo-org/one"), RepoRef(11, "octo-org/two", private=True)])
    assert [p.name for p in await projects.list_projects()] == ["octo-org/one", "octo-org/two"]

    await projects.upsert_projects(1, [RepoRef(10, "octo-org/renamed")])
    assert (await projects.get_project_by_name("octo-org/renamed")).github_repo_id == 10

    assert await projects.archive_projects([11]) == ["octo-org/two"]
    assert [p.name for p in await projects.list_projects()] == ["octo-org/renamed"]
    assert len(await projects.list_projects(include_archived=True)) == 2

    # re-added: the same project comes back with its settings, not a new one
    archived = await projects.get_project_by_name("octo-org/two")
    await projects.upsert_projects(1, [RepoRef(11, "octo-org/two")])
    revived = await projects.get_project_by_name("octo-org/two")
    assert revived.id == archived.id and revived.archived_at is None

    assert sorted(await projects.mark_installation_deleted(1)) == ["octo-org/renamed", "octo-org/two"]
    assert (await projects.get_installation(1)).deleted_at is not None
    assert await projects.list_projects() == []


async def test_only_if_missing_does_not_overwrite(store: Store) -> None:
    projects = store.projects
    await projects.upsert_installation(InstallationRef(id=2, account_login="real-login", account_type="User"))
    await projects.upsert_installation(InstallationRef(id=2, account_login="guess"), only_if_missing=True)
    assert (await projects.get_installation(2)).account_login == "real-login"


async def test_what_only_if_missing_records_first_is_what_an_upsert_records(store: Store) -> None:
    """The first event of an installation and repository records them with a prepared insert: the same row,
    defaults included, as the upsert of the installation events."""
    projects = store.projects
    ref = InstallationRef(id=5, account_login="acme", account_type="Organization", permissions={"checks": "write"},
                          events=["pull_request"])
    await projects.upsert_installation(ref, only_if_missing=True)
    await projects.upsert_projects(5, [RepoRef(50, "acme/first", default_branch="trunk")], only_if_missing=True)
    await projects.upsert_installation(InstallationRef(id=6, **{k: getattr(ref, k) for k in (
        "account_login", "account_type", "permissions", "events")}))
    await projects.upsert_projects(6, [RepoRef(60, "acme/second", default_branch="trunk")])
    first, second = await projects.get_installation(5), await projects.get_installation(6)
    assert ((first.account_login, first.account_type, first.permissions, first.events, first.deleted_at) ==
            (second.account_login, second.account_type, second.permissions, second.events, second.deleted_at) ==
            ("acme", "Organization", {"checks": "write"}, ["pull_request"], None))
    one, two = await projects.get_project_by_name("acme/first"), await projects.get_project_by_name("acme/second")
    same = [c.key for c in Project.__table__.c if c.key not in ("id", "installation_id", "github_repo_id", "name",
                                                                  "github_url", "created_at", "updated_at")]
    assert [getattr(one, key) for key in same] == [getattr(two, key) for key in same]
    assert (one.default_branch, one.max_fix_attempts, one.agent_command, one.pinned) == ("trunk", 3, "", True)


async def test_a_project_is_read_with_its_secrets_in_one_statement(store: Store) -> None:
    await store.projects.upsert_installation(InstallationRef(id=4, account_login="o"))
    await store.projects.upsert_projects(4, [RepoRef(40, "o/a"), RepoRef(41, "o/b")])
    a = await store.projects.get_project_by_name("o/a")
    b = await store.projects.get_project_by_name("o/b")
    project, secrets = await store.projects.project_with_secrets(a.id)
    columns = [c.key for c in Project.__table__.c]
    assert ([getattr(project, key) for key in columns], secrets) == (
        [getattr(await store.projects.get_project(a.id), key) for key in columns], {})
    await store.projects.set_secret(a.id, "ONE", "1")
    await store.projects.set_secret(a.id, "TWO", "2")
    await store.projects.set_secret(b.id, "OTHER", "x")
    project, secrets = await store.projects.project_with_secrets(a.id)
    assert (project.id, project.name, secrets) == (a.id, "o/a", {"ONE": "1", "TWO": "2"})
    assert await store.projects.project_with_secrets("missing") == (None, {})


async def test_secrets_are_encrypted_and_replaced_by_name(store: Store) -> None:
    await store.projects.upsert_installation(InstallationRef(id=3, account_login="o"))
    await store.projects.upsert_projects(3, [RepoRef(30, "o/r")])
    project = await store.projects.get_project_by_name("o/r")
    await store.projects.set_secret(project.id, "API_TOKEN", "first-value")
    await store.projects.set_secret(project.id, "API_TOKEN", "second-value")
    assert await store.projects.secret_values(project.id) == {"API_TOKEN": "second-value"}
    assert [name for name, _ in await store.projects.secret_names(project.id)] == ["API_TOKEN"]
    raw = await store.db.read(lambda conn: conn.execute(select(ProjectSecret.value_encrypted)).scalar_one())
    assert "second-value" not in raw
    with pytest.raises(InvalidSecret, match="must match"):
        await store.projects.set_secret(project.id, "lower", "x")
    with pytest.raises(InvalidSecret, match="64 KiB"):
        await store.projects.set_secret(project.id, "BIG", "x" * (64 * 1024 + 1))


async def test_revoked_user_tokens_are_forgotten(store: Store) -> None:
    await store.projects.save_user(99, "mona", access_token="ghu_token")
    assert await store.projects.forget_user_tokens(99)
    assert (await store.projects.get_user(99)).access_token_encrypted is None
    assert not await store.projects.forget_user_tokens(100)


async def test_audit_log_is_appended(store: Store) -> None:
    await store.audit.record("merge", actor="mona", project_id="p1", details={"sha": "abc"})
    await store.audit.record("refuse", actor="hubot", project_id="p1")
    events = await store.audit.list(project_id="p1")
    assert [(e.action, e.actor) for e in events] == [("refuse", "hubot"), ("merge", "mona")]
    assert events[1].details == {"sha": "abc"}


async def test_audit_events_recorded_at_once_are_each_kept_whole(store: Store) -> None:
    """On PostgreSQL the events recorded meanwhile go in one statement: every field of each arrives, in
    its own row, nested details and empty fields included."""
    await asyncio.gather(*(store.audit.record(f"action-{n}", actor=None if n % 2 else f"user-{n}",
                                              installation_id=n or None, project_id="p2", delivery_id=f"d{n}",
                                              details={"n": n, "nested": {"list": [n, "x"]}, "text": "ü \"q\""})
                           for n in range(5)))
    events = sorted(await store.audit.list(project_id="p2"), key=lambda e: e.action)
    assert [(e.action, e.actor, e.installation_id, e.delivery_id) for e in events] == [
        (f"action-{n}", None if n % 2 else f"user-{n}", n or None, f"d{n}") for n in range(5)]
    assert [e.details for e in events] == [{"n": n, "nested": {"list": [n, "x"]}, "text": "ü \"q\""}
                                           for n in range(5)]
    assert all(abs((e.at - utcnow()).total_seconds()) < 60 for e in events)


async def test_an_audit_field_too_long_for_its_column_is_never_cut(store: Store) -> None:
    """PostgreSQL refuses it (as a single insert would), SQLite keeps it whole: no database stores a cut value."""
    long_actor = "a" * 300
    try:
        await asyncio.gather(store.audit.record("long", actor=long_actor, project_id="p3"),
                             store.audit.record("short", actor="ok", project_id="p3"))
    except DBAPIError:
        assert not store.db.is_sqlite
    assert "a" * 255 not in [e.actor for e in await store.audit.list(project_id="p3")]


async def test_write_lanes_are_taken_refused_renewed_and_handed_over(store: Store) -> None:
    """The store behind shared pacing (the app uses it on PostgreSQL), on either database."""
    lanes = store.write_lanes
    taken = await lanes.acquire(7, "one", ttl=30, reserved=[100.0])
    assert taken is not None and list(taken.sent_times) == [] and taken.hold_until is None
    assert await lanes.acquire(7, "two", ttl=30) is None  # its lease runs
    renewed = await lanes.renew(7, "one", ttl=30, sent_times=[100.0, 101.0])
    assert renewed is not None and renewed.hold_until is None
    assert await lanes.renew(7, "two", ttl=30, sent_times=[]) is None  # not its lane
    await lanes.release(7, "one", sent_times=[100.0, 101.0], hold_until=None)
    handed = await lanes.acquire(7, "two", ttl=30, reserved=[102.0])
    assert handed is not None and list(handed.sent_times) == [100.0, 101.0]
    assert list((await lanes.acquire(7, "two", ttl=30)).sent_times) == [100.0, 101.0, 102.0]


def test_plan_begin_ends_other_heads_and_joins_a_running_one_of_this_head() -> None:
    from bot.models import ValidationState
    from bot.store.validations import plan_begin

    def v(head: str, status: str) -> ValidationState:
        return ValidationState(id=f"{head}-{status}", head_sha=head, status=status)

    old, running, waiting = v("a", "in_progress"), v("b", "queued"), v("b", "waiting")
    assert plan_begin([old, running, waiting], head_sha="b", restart=False) == ([old], running)
    # a head that waits for /ok-to-test is not joined: the new event asks for a new run
    assert plan_begin([waiting], head_sha="b", restart=False) == ([], None)
    assert plan_begin([old, running], head_sha="c", restart=False) == ([old, running], None)
    assert plan_begin([old, running], head_sha="b", restart=True) == ([old, running], None)
    assert plan_begin([], head_sha="b", restart=False) == ([], None)
