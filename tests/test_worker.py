"""The worker over a real database: outcomes, graceful stop, and recovery from a SIGKILLed process."""

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from datetime import timedelta

from sqlalchemy import update

from bot.errors import GitHubUnavailable
from bot.events import EventBus, wait_for
from bot.github.errors import UnexpectedResponse
from bot.models import JOB_DEAD, JOB_DONE, JOB_QUEUED, Job, utcnow
from bot.store import ClaimedJob, Store
from worker.runner import Lane, Worker

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def make_worker(store: Store, handlers, **options) -> Worker:
    return Worker(store, handlers, bus=EventBus(), lease_seconds=5, poll_interval=0.05, **options)


async def test_jobs_run_and_finish_with_their_outcomes(store: Store) -> None:
    async def ok(job: ClaimedJob) -> None:
        pass

    async def broken(job: ClaimedJob) -> None:
        raise ValueError("handler bug")

    worker = make_worker(store, {"ok": ok, "broken": broken})
    with worker.bus.subscribe() as events:
        await worker.start()
        try:
            done_id = await store.jobs.enqueue("ok")
            retry_id = await store.jobs.enqueue("broken", max_attempts=3)
            dead_id = await store.jobs.enqueue("broken", max_attempts=1)
            unknown_id = await store.jobs.enqueue("no-such-kind", max_attempts=1)
            worker.wake()
            outcomes = {}
            for _ in range(4):
                event = await wait_for(events, "job.finished")
                outcomes[event.data["job_id"]] = event.data["outcome"]
        finally:
            await worker.stop()
    assert outcomes == {done_id: "done", retry_id: "retry", dead_id: "dead", unknown_id: "dead"}
    assert (await store.jobs.get(done_id)).status == JOB_DONE
    retried = await store.jobs.get(retry_id)
    assert retried.status == JOB_QUEUED and "handler bug" in retried.last_error
    assert (await store.jobs.get(dead_id)).status == JOB_DEAD
    assert "no handler for job kind 'no-such-kind'" in (await store.jobs.get(unknown_id)).last_error


async def test_concurrency_limit_is_respected(store: Store) -> None:
    running = 0
    peak = 0
    release = asyncio.Event()
    three_running = asyncio.Event()

    async def slow(job: ClaimedJob) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        if running == 3:
            three_running.set()
        await release.wait()
        running -= 1

    worker = make_worker(store, {"slow": slow}, concurrency=3)
    with worker.bus.subscribe() as events:
        for _ in range(7):
            await store.jobs.enqueue("slow")
        await worker.start()
        try:
            await asyncio.wait_for(three_running.wait(), 5)
            release.set()
            for _ in range(7):
                await wait_for(events, "job.finished")
        finally:
            await worker.stop()
    assert peak == 3


async def test_stop_releases_unfinished_jobs_without_spending_an_attempt(store: Store) -> None:
    started = asyncio.Event()

    async def forever(job: ClaimedJob) -> None:
        started.set()
        await asyncio.Event().wait()

    worker = make_worker(store, {"forever": forever})
    job_id = await store.jobs.enqueue("forever")
    await worker.start()
    await asyncio.wait_for(started.wait(), 5)
    await worker.stop(grace=0.05)
    job = await store.jobs.get(job_id)
    assert (job.status, job.attempts, job.lease_owner) == (JOB_QUEUED, 0, None)


async def _read_line(process: asyncio.subprocess.Process, expected: str, timeout: float = 20) -> str:
    async with asyncio.timeout(timeout):
        while True:
            line = (await process.stdout.readline()).decode().strip()
            if not line and process.stdout.at_eof():
                raise AssertionError(f"worker exited before printing {expected!r}")
            if line.startswith(expected):
                return line


async def _worker_process(database_url: str, mode: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    return await asyncio.create_subprocess_exec(sys.executable, "-m", "tests.worker_process", database_url, mode,
                                                cwd=PROJECT_ROOT, env=env, stdout=asyncio.subprocess.PIPE)


@pytest.mark.slow
async def test_a_job_whose_worker_was_killed_runs_again_after_its_lease_expires(store: Store, database_url: str) -> None:
    job_id = await store.jobs.enqueue("probe")
    doomed = await _worker_process(database_url, "hang")
    try:
        assert await _read_line(doomed, "started") == f"started {job_id} 1"
    finally:
        doomed.send_signal(signal.SIGKILL)
        await doomed.wait()
    survivor = await _worker_process(database_url, "finish")
    try:
        assert await _read_line(survivor, "started") == f"started {job_id} 2"
        await _read_line(survivor, "finished")
    finally:
        survivor.send_signal(signal.SIGTERM)
        await survivor.wait()
    job = await store.jobs.get(job_id)
    assert (job.status, job.attempts) == (JOB_DONE, 2)


@pytest.mark.slow
async def test_sigterm_gives_the_running_job_back(store: Store, database_url: str) -> None:
    job_id = await store.jobs.enqueue("probe")
    process = await _worker_process(database_url, "hang")
    await _read_line(process, "started")
    process.send_signal(signal.SIGTERM)
    await _read_line(process, "stopped")
    assert await process.wait() == 0
    job = await store.jobs.get(job_id)
    assert (job.status, job.attempts) == (JOB_QUEUED, 0)


async def test_webhook_jobs_have_slots_of_their_own_and_background_jobs_wait_for_them(store: Store) -> None:
    release = {"slow": asyncio.Event(), "webhook": asyncio.Event()}
    started: dict[int, asyncio.Event] = {}

    async def handler(job: ClaimedJob) -> None:
        started.setdefault(job.id, asyncio.Event()).set()
        await release[job.kind].wait()

    def has_started(job_id: int) -> asyncio.Event:
        return started.setdefault(job_id, asyncio.Event())

    lanes = [Lane("webhooks", 2, frozenset({"webhook"}), urgent=True), Lane("background", 1)]
    worker = make_worker(store, {"webhook": handler, "slow": handler}, lanes=lanes)
    with worker.bus.subscribe() as events:
        first = await store.jobs.enqueue("slow")
        await worker.start()
        try:
            await asyncio.wait_for(has_started(first).wait(), 5)
            # the one background slot is taken: a webhook job still starts at once
            hook = await store.jobs.enqueue("webhook")
            worker.wake("webhook")
            await asyncio.wait_for(has_started(hook).wait(), 5)
            # while it runs, a queued background job does not start, though its slot is free again
            second = await store.jobs.enqueue("slow")
            release["slow"].set()
            await wait_for(events, "job.finished", job_id=first)
            worker.wake("slow")
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(asyncio.shield(has_started(second).wait()), 0.5)
            release["webhook"].set()
            await wait_for(events, "job.finished", job_id=hook)
            await asyncio.wait_for(has_started(second).wait(), 5)  # once the webhook lane is quiet
        finally:
            for event in release.values():
                event.set()
            await worker.stop()


async def test_the_ingress_waits_for_a_webhook_slot_and_gives_up_after_its_timeout(store: Store) -> None:
    worker = make_worker(store, {}, lanes=[Lane("webhooks", 1, frozenset({"webhook"}), urgent=True)])
    assert worker.try_reserve("webhook")
    assert not worker.try_reserve("webhook")
    assert not await worker.reserve("webhook", timeout=0.05)  # full, and nothing frees it
    waiting = asyncio.create_task(worker.reserve("webhook", timeout=5))
    await asyncio.sleep(0)  # let it start waiting (one turn of the loop, not a wait for work)
    assert not waiting.done()
    worker.cancel_reservation("webhook")  # the slot comes free: the waiting ingress takes it
    assert await asyncio.wait_for(waiting, 1)
    assert not worker.try_reserve("webhook")


async def test_a_permanent_error_ends_the_job_at_its_first_attempt(store: Store) -> None:
    async def misunderstood(job: ClaimedJob) -> None:
        raise UnexpectedResponse("GET /repos/o/r/pulls/1", "`head.sha`", {"number": 1})

    job_id, finished = await run_once(store, misunderstood, max_attempts=5)
    assert (finished.data["outcome"], finished.data["attempts"]) == ("dead", 1)
    job = await store.jobs.get(job_id)
    assert job.status == JOB_DEAD
    assert "GET /repos/o/r/pulls/1 answered without `head.sha`: got an object with keys [number]" in job.last_error


async def run_once(store: Store, handler, *, max_attempts: int, first_failed_at=None, **options):  # type: ignore[no-untyped-def]
    """Run one job of `handler` until its first attempt ends; (its id, the job.finished event)."""
    job_id = await store.jobs.enqueue("once", max_attempts=max_attempts)
    if first_failed_at is not None:
        await make_due(store, job_id, first_failed_at=first_failed_at)
    worker = make_worker(store, {"once": handler}, **options)
    with worker.bus.subscribe() as events:
        await worker.start()
        try:
            return job_id, await wait_for(events, "job.finished", job_id=job_id)
        finally:
            await worker.stop()


async def make_due(store: Store, job_id: int, **values: object) -> None:
    """The job's postponement is over (without waiting for it)."""
    await store.db.write(lambda conn: conn.execute(update(Job).where(Job.id == job_id)
                                                   .values(run_after=utcnow(), **values)))


async def test_github_unavailable_postpones_the_job_without_counting_its_attempts(store: Store) -> None:
    tries = 0

    async def outage(job: ClaimedJob) -> None:
        nonlocal tries
        tries += 1
        if tries <= 7:
            raise GitHubUnavailable("GitHub answered 502 to GET /repos/o/r (4 tries)", retry_after=30.0)

    worker = make_worker(store, {"github": outage})
    with worker.bus.subscribe() as events:
        await worker.start()
        try:
            job_id = await store.jobs.enqueue("github", max_attempts=2)
            worker.wake()
            outcomes = []
            for _ in range(8):  # more tries than its attempts: GitHub failing is not the job's fault
                finished = await wait_for(events, "job.finished", job_id=job_id)
                outcomes.append(finished.data["outcome"])
                job = await store.jobs.get(job_id)
                if finished.data["outcome"] == "postponed":
                    assert job.status == JOB_QUEUED and job.attempts == 0
                    assert 20 <= (job.run_after - utcnow()).total_seconds() <= 36  # when GitHub may be asked
                    assert "GitHub answered 502" in job.last_error and job.first_failed_at is not None
                    await make_due(store, job_id)
                    worker.wake()
        finally:
            await worker.stop()
    assert outcomes == ["postponed"] * 7 + ["done"]
    assert (await store.jobs.get(job_id)).status == JOB_DONE


async def test_once_its_outage_budget_is_spent_github_unavailable_counts_and_the_job_says_why(store: Store) -> None:
    async def outage(job: ClaimedJob) -> None:
        raise GitHubUnavailable("GitHub answered 502 to GET /repos/o/r (4 tries)", retry_after=30.0)

    job_id, finished = await run_once(store, outage, max_attempts=1, outage_budget_seconds=6 * 3600,
                                      first_failed_at=utcnow() - timedelta(hours=6, seconds=1))
    assert (finished.data["outcome"], finished.data["attempts"]) == ("dead", 1)
    job = await store.jobs.get(job_id)
    assert job.status == JOB_DEAD
    assert job.last_error.startswith(
        "GitHub stayed unavailable beyond the job's outage budget (6 h since its first failure; "
        "GITHUB_OUTAGE_BUDGET_HOURS): GitHub answered 502 to GET /repos/o/r (4 tries)\n\nTraceback")


async def test_a_job_given_up_is_handed_to_its_kinds_on_dead_hook_once(store: Store) -> None:
    died: list[tuple[int, str]] = []

    async def broken(job: ClaimedJob) -> None:
        raise ValueError(f"try {job.attempts}")

    async def on_dead(job: ClaimedJob, exc: Exception) -> None:
        died.append((job.id, str(exc)))

    worker = make_worker(store, {"broken": broken}, on_dead={"broken": on_dead})
    with worker.bus.subscribe() as events:
        await worker.start()
        try:
            retried = await store.jobs.enqueue("broken", max_attempts=2)
            given_up = await store.jobs.enqueue("broken", max_attempts=1)
            worker.wake()
            outcomes = {}
            for _ in range(2):
                event = await wait_for(events, "job.finished")
                outcomes[event.data["job_id"]] = event.data["outcome"]
        finally:
            await worker.stop()
    assert outcomes == {retried: "retry", given_up: "dead"}
    assert died == [(given_up, "try 1")]  # the retried job is not dead (yet)


async def test_a_wake_up_met_while_the_database_was_away_is_claimed_soon_not_at_the_fallback_poll(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.events import JobWakeup

    claim = store.jobs.claim
    away: list[bool] = []
    claimed_once = asyncio.Event()

    async def claim_unless_away(*args, **kwargs):  # type: ignore[no-untyped-def]
        if away:
            away.clear()  # back for the next claim
            raise ConnectionError("the database is briefly away")
        claimed = await claim(*args, **kwargs)
        claimed_once.set()
        return claimed

    async def handler(job: ClaimedJob) -> None:
        pass

    wakeup = JobWakeup()
    worker = Worker(store, {"k": handler}, wakeup=wakeup, poll_interval=3600)  # a poll would come in an hour
    with worker.bus.subscribe() as events:
        monkeypatch.setattr(store.jobs, "claim", claim_unless_away)
        await worker.start()
        try:
            await asyncio.wait_for(claimed_once.wait(), 5)  # the first claim, at start, found nothing
            away.append(True)
            job_id = await store.jobs.enqueue("k")
            wakeup.wake("k")
            finished = await wait_for(events, "job.finished", timeout=3)
        finally:
            await worker.stop()
    assert finished.data["job_id"] == job_id and finished.data["outcome"] == "done" and not away
