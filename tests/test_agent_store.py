"""Agent runs' storage on SQLite and PostgreSQL: the first job with the run, one lease per run, writes
fenced by lease and status, and one live poll."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import select, update

from bot.models import AgentRun, Job, utcnow
from bot.store import InstallationRef, RepoRef, Store
from bot.models import JOB_AGENT_RUN
from bot.store.agent_runs import NewRun


async def new_run(store: Store, **changes) -> AgentRun:
    await store.projects.upsert_installation(InstallationRef(1, "acme"))
    await store.projects.upsert_projects(1, [RepoRef(10, "acme/widgets", default_branch="main")])
    project = await store.projects.get_project_by_name("acme/widgets")
    values = dict(project_id=project.id, target_text="Greet", source="api", requested_by="me", backend="codegen",
                  auto_confirm=False, max_fix_attempts=project.max_fix_attempts)
    values.update(changes)
    return await store.agent_runs.create(NewRun(**values))


async def agent_jobs(store: Store) -> list:
    return await store.db.read(lambda conn: conn.execute(
        select(Job.id, Job.args, Job.run_after).where(Job.kind == JOB_AGENT_RUN).order_by(Job.id)).all())


async def test_a_run_is_created_with_its_first_job(store: Store) -> None:
    run = await new_run(store, origin_pr_number=5)
    assert (run.status, run.pr_number, run.origin_pr_number, run.max_fix_attempts) == ("pending", 5, 5, 3)
    assert run.agent_handle == {} and run.fix_attempts == 0 and run.status_changed_at is not None
    [(job_id, args, _)] = await agent_jobs(store)
    assert args == {"run_id": run.id, "token": None}
    assert [r.id for r in await store.agent_runs.active_for_pr(run.project_id, 5)] == [run.id]


async def test_one_lease_per_run_and_an_expired_one_is_taken_over(store: Store) -> None:
    run = await new_run(store)
    runs = store.agent_runs
    assert await runs.acquire(run.id, "a", seconds=30) is not None
    assert await runs.acquire(run.id, "b", seconds=30) is None
    assert await runs.acquire(run.id, "a", seconds=30) is not None  # its own lease again
    await store.db.write(lambda conn: conn.execute(update(AgentRun).where(AgentRun.id == run.id).values(
        lease_expires_at=utcnow() - timedelta(seconds=60))))
    assert await runs.acquire(run.id, "b", seconds=30) is not None
    assert not await runs.extend(run.id, "a", seconds=30)
    await runs.release(run.id, "a")  # not the holder: nothing happens
    assert await runs.acquire(run.id, "c", seconds=30) is None
    await runs.release(run.id, "b")
    assert await runs.acquire(run.id, "c", seconds=30) is not None


async def test_concurrent_acquires_give_the_lease_to_one(store: Store) -> None:
    run = await new_run(store)
    won = await asyncio.gather(*(store.agent_runs.acquire(run.id, f"w{i}", seconds=30) for i in range(10)))
    assert sum(result is not None for result in won) == 1


async def test_saves_are_fenced_and_a_poll_comes_with_its_job(store: Store) -> None:
    run = await new_run(store)
    runs = store.agent_runs
    await runs.acquire(run.id, "job", seconds=30)
    saved = await runs.save(run.id, "job", expect="pending", values={"status": "planning", "polls": 0},
                            poll_after=5.0)
    assert saved.status == "planning" and saved.poll_token is not None
    jobs = await agent_jobs(store)
    assert jobs[-1].args == {"run_id": run.id, "token": saved.poll_token}
    assert await runs.save(run.id, "other", expect="planning", values={"polls": 9}) is None  # not the holder
    assert await runs.save(run.id, "job", expect="pending", values={"polls": 9}) is None  # stale status
    again = await runs.save(run.id, "job", expect="planning", values={}, poll_after=1.0)
    assert again.poll_token != saved.poll_token  # the older poll is now a no-op


async def test_a_users_decision_beats_a_job_holding_the_lease(store: Store) -> None:
    run = await new_run(store)
    runs = store.agent_runs
    await runs.acquire(run.id, "job", seconds=30)
    assert await runs.transition(run.id, expect=("running",), values={"status": "cancelled"}) is None
    cancelled = await runs.transition(run.id, expect=("pending", "planning"), values={
        "status": "cancelled", "reason": "cancelled by me"})
    assert cancelled.status == "cancelled" and cancelled.lease_owner == "job"
    assert await runs.save(run.id, "job", expect="pending", values={"status": "planning"}) is None
    assert len(await agent_jobs(store)) == 2  # the decision queued a job to take it from there
    assert await runs.active_for_pr(run.project_id, 1) == []


async def test_the_active_runs_of_a_pr_leave_out_the_ended_ones(store: Store) -> None:
    runs = [await new_run(store, origin_pr_number=7) for _ in range(4)]
    for run, status in zip(runs[1:], ("completed", "failed", "cancelled"), strict=True):
        assert await store.agent_runs.transition(run.id, expect=("pending",), values={"status": status})
    assert [r.id for r in await store.agent_runs.active_for_pr(runs[0].project_id, 7)] == [runs[0].id]
    # PostgreSQL reads the PRs asked at once in one statement: each gets its own runs
    asked = await asyncio.gather(store.agent_runs.active_for_pr(runs[0].project_id, 7),
                                 store.agent_runs.active_for_pr(runs[0].project_id, 8))
    assert [[r.id for r in found] for found in asked] == [[runs[0].id], []]


async def test_validations_link_to_their_run_once(store: Store) -> None:
    run = await new_run(store, origin_pr_number=4)
    state = await store.validations.create(project_id=run.project_id, pr_number=4, head_sha="a" * 40)
    await store.agent_runs.link_validation(state.id, run.id)
    other = await new_run(store)
    await store.agent_runs.link_validation(state.id, other.id)
    assert (await store.validations.get(state.id)).agent_run_id == run.id
