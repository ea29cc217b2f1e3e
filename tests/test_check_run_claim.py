"""Of several processes starting a validation of the same PR head at once, only one creates its check
run: the claim on creating it is taken in the database, in ValidationStore.begin's transaction."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from gidgethub import BadRequest

from bot.models import ValidationState, utcnow
from bot.github.github_app import GitHubApp
from bot.github.types import PullRequest
from bot.models import JOB_VALIDATE
from bot.store import Store
from bot.store.validations import CHECK_RUN_CLAIM_STALE, may_claim_check_run
from pipeline.validation.service import ValidationService
from tests.check_run_support import (CHECK_RUNS, age_validation, begin_validation, check_runs_of,  # noqa: F401
                                     other_store, project_id, queued_validations, recorded_pull_request,
                                     validation_service_without_runner)
from tests.fakes.github import FakeGitHub

NOW = utcnow()


# ---- the rule ----------------------------------------------------------------------------------------

def _state(*, status: str = "queued", check_run_id: int | None = None, claimed_by: str | None = None,
           claimed_ago: timedelta | None = None) -> ValidationState:
    return ValidationState(id="v", status=status, check_run_id=check_run_id, check_run_claimed_by=claimed_by,
                           check_run_claimed_at=None if claimed_ago is None else NOW - claimed_ago)


def test_an_unclaimed_validation_without_a_check_run_may_be_claimed_by_anyone() -> None:
    assert may_claim_check_run(_state(), "d1", now=NOW)
    assert may_claim_check_run(_state(status="in_progress"), "d1", now=NOW)


def test_a_fresh_claim_is_held_against_others_but_not_against_its_own_claimer() -> None:
    held = _state(claimed_by="d1", claimed_ago=timedelta(seconds=1))
    assert not may_claim_check_run(held, "d2", now=NOW)
    assert may_claim_check_run(held, "d1", now=NOW)  # the delivery's retried job
    at_the_bound = _state(claimed_by="d1", claimed_ago=CHECK_RUN_CLAIM_STALE)
    assert not may_claim_check_run(at_the_bound, "d2", now=NOW)


def test_a_stale_claim_is_taken_over() -> None:
    stale = _state(claimed_by="d1", claimed_ago=CHECK_RUN_CLAIM_STALE + timedelta(seconds=1))
    assert may_claim_check_run(stale, "d2", now=NOW)
    assert not may_claim_check_run(stale, "d2", now=NOW, stale_after=timedelta(minutes=5))


def test_nobody_claims_a_recorded_check_run_or_an_ended_validation() -> None:
    assert not may_claim_check_run(_state(check_run_id=7), "d1", now=NOW)
    assert not may_claim_check_run(_state(check_run_id=7, claimed_by="d1", claimed_ago=timedelta(0)), "d1", now=NOW)
    for status in ("completed", "superseded", "waiting"):
        assert not may_claim_check_run(_state(status=status), "d1", now=NOW)


# ---- the store, on SQLite and PostgreSQL ---------------------------------------------------------------

async def test_begin_claims_for_one_claimer_at_a_time(store: Store, other_store: Store, project_id: str) -> None:
    first = await begin_validation(store, project_id, "d1")
    assert first.claimed and first.validation.check_run_claimed_by == "d1"
    # another process joins while d1 creates the check run: it must not create one too
    joined = await begin_validation(other_store, project_id, "d2")
    assert joined.validation.id == first.validation.id and not joined.claimed
    # d1's job, retried (say its POST failed), claims again at once
    again = await begin_validation(other_store, project_id, "d1")
    assert again.validation.id == first.validation.id and again.claimed

    # two claimers race for an unclaimed validation (as one recorded before migration 0006): one wins
    await age_validation(store, first.validation.id, CHECK_RUN_CLAIM_STALE + timedelta(seconds=5))
    races = await asyncio.gather(*(begin_validation(s, project_id, c)
                                   for s, c in [(store, "d3"), (other_store, "d4"), (store, "d5"), (other_store, "d6")]))
    assert {r.validation.id for r in races} == {first.validation.id}
    winners = [r.validation.check_run_claimed_by for r in races if r.claimed]
    assert len(winners) == 1
    stored = await store.validations.get(first.validation.id)
    assert stored is not None and stored.check_run_claimed_by == winners[0]

    # once the check run is recorded, nobody claims it, not even a stale claim's taker
    await store.validations.set_check_run(first.validation.id, 99)
    await age_validation(store, first.validation.id, CHECK_RUN_CLAIM_STALE * 2)
    assert not (await begin_validation(other_store, project_id, "d7")).claimed
    assert (await store.validations.get(first.validation.id)).check_run_claimed_by == winners[0]


async def test_a_stale_claim_is_taken_over_and_a_restart_claims_its_new_validation(
        store: Store, other_store: Store, project_id: str) -> None:
    first = await begin_validation(store, project_id, "d1")
    await age_validation(store, first.validation.id, CHECK_RUN_CLAIM_STALE + timedelta(seconds=1))
    taken = await begin_validation(other_store, project_id, "d2")
    assert taken.claimed and taken.validation.id == first.validation.id
    assert not (await begin_validation(store, project_id, "d1")).claimed  # d1 gave it up
    restarted = await begin_validation(store, project_id, "d3", restart=True)
    assert restarted.claimed and restarted.validation.id != first.validation.id
    assert [v.id for v in restarted.ended] == [first.validation.id]


async def test_two_processes_beginning_the_same_new_head_at_once_record_one_validation(
        store: Store, other_store: Store, project_id: str) -> None:
    # No row exists yet: without a per-PR lock, two PostgreSQL transactions would each insert one.
    for head in ("c" * 40, "d" * 40, "e" * 40):
        begun = await asyncio.gather(*(begin_validation(s, project_id, c, head_sha=head)
                                       for s, c in [(store, "d1"), (other_store, "d2"), (store, "d3"),
                                                    (other_store, "d4")]))
        assert len({b.validation.id for b in begun}) == 1
        assert sum(b.claimed for b in begun) == 1
    open_ = [v for v in await store.validations.for_project(project_id) if v.status in ("queued", "in_progress")]
    assert [v.head_sha for v in open_] == ["e" * 40]  # each new head ended the one before


async def test_a_check_run_recorded_for_a_validation_ended_meanwhile_is_reported_back(
        store: Store, project_id: str) -> None:
    first = await begin_validation(store, project_id, "d1")
    await begin_validation(store, project_id, "d2", head_sha="f" * 40)  # another process's new head ends it
    ended_as = await store.validations.set_check_run(first.validation.id, 41, then_queue=JOB_VALIDATE)
    assert ended_as == f"Superseded by {'f' * 7}"
    assert (await store.jobs.counts())["queued"] == 0  # no job for a validation that ended
    live = await begin_validation(store, project_id, "d3", head_sha="f" * 40)
    assert await store.validations.set_check_run(live.validation.id, 42, then_queue=JOB_VALIDATE) is None
    assert (await store.jobs.counts())["queued"] == 1


async def test_a_prs_first_begin_records_the_validation_it_returns_and_the_next_joins_it(
        store: Store, project_id: str) -> None:
    # PostgreSQL reads the PR's open validations and, finding none, records the new one in one statement.
    begun = await begin_validation(store, project_id, "d1")
    assert (begun.claimed, begun.recorded, begun.ended) == (True, True, [])
    stored = await store.validations.get(begun.validation.id)
    columns = [c.key for c in ValidationState.__table__.c]
    assert [getattr(stored, key) for key in columns] == [getattr(begun.validation, key) for key in columns]
    joined = await begin_validation(store, project_id, "d2")
    assert (joined.validation.id, joined.recorded, joined.claimed) == (begun.validation.id, False, False)
    assert len(await store.validations.for_project(project_id)) == 1


async def test_recording_the_check_run_again_queues_the_validations_job_once(store: Store, project_id: str) -> None:
    # PostgreSQL records the check run and queues the job in one statement: the same job as JobStore.add's.
    begun = await begin_validation(store, project_id, "d1")
    for check_run in (41, 42):
        assert await store.validations.set_check_run(begun.validation.id, check_run, then_queue=JOB_VALIDATE,
                                                     max_attempts=2) is None
    assert (await store.validations.get(begun.validation.id)).check_run_id == 42
    [job] = await store.jobs.claim("w", limit=5, lease_seconds=30)
    assert (job.kind, job.args, job.delivery_id, job.attempts, job.max_attempts) == (
        JOB_VALIDATE, {"validation_id": begun.validation.id}, None, 1, 2)
    assert (await store.jobs.get(job.id)).dedupe_key == f"{JOB_VALIDATE}:{begun.validation.id}"


async def test_the_job_reads_its_validation_as_it_was_and_starts_it_once_it_is_still_active(
        store: Store, project_id: str) -> None:
    # PostgreSQL reads and starts in one statement: what it returns is the row before the start.
    assert await store.validations.read_then_start("nope") == (None, False)
    begun = await begin_validation(store, project_id, "d1")
    before, started = await store.validations.read_then_start(begun.validation.id)
    assert (before.id, before.status, before.started_at, before.head_sha, started) == (
        begun.validation.id, "queued", None, "a" * 40, True)
    first_start = (await store.validations.get(begun.validation.id)).started_at
    assert first_start is not None
    again, started = await store.validations.read_then_start(begun.validation.id)  # the job tried again
    assert (again.status, again.started_at, started) == ("in_progress", first_start, True)
    await store.validations.cancel(begun.validation.id, title="Cancelled")
    ended, started = await store.validations.read_then_start(begun.validation.id)
    assert (ended.status, started) == ("completed", False)
    assert (await store.validations.get(begun.validation.id)).status == "completed"


async def test_recording_the_check_run_of_an_unknown_validation_queues_nothing(store: Store) -> None:
    assert await store.validations.set_check_run("nope", 41, then_queue=JOB_VALIDATE) == "Cancelled"
    assert (await store.jobs.counts())["queued"] == 0


async def test_a_delivery_run_again_after_its_validation_ended_begins_no_other(
        store: Store, other_store: Store, project_id: str) -> None:
    # d1's job began it and was killed (or lost its lease) before the job was recorded done; meanwhile
    # the PR moved on (d2's new head ended it). d1's job, run again, must neither end the newer head's
    # run nor begin a second validation (and check run) of its old head.
    first = await begin_validation(store, project_id, "d1")
    await store.validations.set_check_run(first.validation.id, 41)
    newer = await begin_validation(store, project_id, "d2", head_sha="c" * 40)
    assert [v.id for v in newer.ended] == [first.validation.id]
    again = await begin_validation(other_store, project_id, "d1")
    assert (again.validation.id, again.claimed, again.ended) == (first.validation.id, False, [])
    assert (await store.validations.get(newer.validation.id)).status == "queued"
    # cancelled by hand, then d2's job run again: it stays cancelled
    assert await store.validations.cancel(newer.validation.id, title="Cancelled: by hand")
    again = await begin_validation(other_store, project_id, "d2", head_sha="c" * 40)
    assert (again.validation.id, again.claimed) == (newer.validation.id, False)
    # another delivery of that head (a later event) does begin a new validation
    later = await begin_validation(store, project_id, "d3", head_sha="c" * 40)
    assert later.claimed and later.validation.id not in (first.validation.id, newer.validation.id)
    assert len(await store.validations.for_project(project_id)) == 3


# ---- two processes' ValidationService over one database, against the fake GitHub -----------------------

class CheckRunHold:
    """Holds a process's check-run creation once armed, with the POST in flight, until released."""

    def __init__(self) -> None:
        self.armed = False
        self.posting = asyncio.Event()
        self.release = asyncio.Event()


class _HeldClient:
    def __init__(self, gh: Any, hold: CheckRunHold) -> None:
        self._gh = gh
        self._hold = hold

    async def post(self, url: str, **kwargs: Any) -> Any:
        if self._hold.armed and url.endswith("/check-runs"):
            self._hold.posting.set()
            await asyncio.wait_for(self._hold.release.wait(), 10)
        return await self._gh.post(url, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._gh, name)


class HoldingGitHub(GitHubApp):
    """The GitHub layer of one process, whose check-run creation can be held (`hold`)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.hold = CheckRunHold()

    def installation_api(self, installation_id: int) -> Any:
        return _HeldClient(super().installation_api(installation_id), self.hold)


@pytest.fixture
async def two_processes(database_url: str, store: Store, other_store: Store, make_settings: Callable[..., Any],
                        fake_github: FakeGitHub) -> AsyncIterator[list[ValidationService]]:
    """The validation services of two processes sharing the database."""
    settings = make_settings(DATABASE_URL=database_url, GITHUB_API_URL=fake_github.api_url,
                             GITHUB_URL=fake_github.base_url)
    made = []
    async with aiohttp.ClientSession() as http:
        for s in (store, other_store):
            # start uses neither the runner, the checkouts, the merges nor the volumes
            made.append(validation_service_without_runner(
                s, HoldingGitHub(http, settings), public_url=settings.public_url, data_dir=settings.data_dir,
                chromium_path=settings.chromium_path))
        yield made
        for service in made:
            await service.github.close()


async def _start_held(service: ValidationService, project: Any,
                      pr: PullRequest) -> tuple[CheckRunHold, asyncio.Task[Any]]:
    """Process A's start, held with its check-run POST in flight (release it with `.release.set()`)."""
    held = service.github.hold  # type: ignore[attr-defined]
    held.armed = True
    starting = asyncio.create_task(service.start(project, pr, trigger="pull_request.opened",
                                                 claimer="delivery-a"))
    await asyncio.wait_for(held.posting.wait(), 10)
    return held, starting


async def test_two_processes_starting_one_head_create_one_check_run(two_processes, store: Store,
                                                                    fake_github: FakeGitHub) -> None:
    service_a, service_b = two_processes
    project, scenario, pr = await recorded_pull_request(store, fake_github)
    # process A has recorded the validation and is creating its check run when B's event arrives
    held, starting_a = await _start_held(service_a, project, pr)
    state_b = await asyncio.wait_for(service_b.start(project, pr, trigger="pull_request.reopened",
                                                     claimer="delivery-b"), 10)
    assert state_b.check_run_id is None and not fake_github.calls_to("POST", CHECK_RUNS)
    held.release.set()
    state_a = await asyncio.wait_for(starting_a, 10)

    assert state_a.id == state_b.id
    [run] = check_runs_of(fake_github, scenario.head_sha)
    assert (run["status"], run["external_id"]) == ("in_progress", state_a.id)
    assert (await store.validations.get(state_a.id)).check_run_id == run["id"]
    assert await queued_validations(store) == [state_a.id]


async def test_two_processes_starting_one_head_at_the_same_moment(two_processes, store: Store,
                                                                  fake_github: FakeGitHub) -> None:
    service_a, service_b = two_processes
    project, scenario, pr = await recorded_pull_request(store, fake_github)
    # the validation is already recorded (the PR's first event); two later events of its head meet
    await store.validations.create(project_id=project.id, pr_number=pr.number, head_sha=pr.head_sha,
                                   base_sha=pr.base_sha)
    states = await asyncio.wait_for(asyncio.gather(
        service_a.start(project, pr, trigger="pull_request.reopened", claimer="delivery-a"),
        service_b.start(project, pr, trigger="pull_request.ready_for_review", claimer="delivery-b")), 10)
    assert len({s.id for s in states}) == 1
    [run] = check_runs_of(fake_github, scenario.head_sha)
    assert (await store.validations.get(states[0].id)).check_run_id == run["id"]


async def test_a_delivery_whose_check_run_failed_creates_it_on_its_retry(two_processes, store: Store,
                                                                         fake_github: FakeGitHub) -> None:
    service_a, service_b = two_processes
    project, scenario, pr = await recorded_pull_request(store, fake_github)
    fake_github.fail_next("POST", CHECK_RUNS, status=422)
    with pytest.raises(BadRequest):
        await service_a.start(project, pr, trigger="pull_request.opened", claimer="delivery-a")
    fake_github.take_errors()
    # another delivery of the head meanwhile leaves it to the claimer; the claimer's retry creates it
    assert (await service_b.start(project, pr, trigger="pull_request.reopened",
                                  claimer="delivery-b")).check_run_id is None
    assert not check_runs_of(fake_github, scenario.head_sha)
    state = await service_b.start(project, pr, trigger="pull_request.opened", claimer="delivery-a")
    [run] = check_runs_of(fake_github, scenario.head_sha)
    assert (await store.validations.get(state.id)).check_run_id == run["id"]


async def test_a_check_run_created_for_a_head_superseded_meanwhile_ends_cancelled(two_processes, store: Store,
                                                                                  fake_github: FakeGitHub) -> None:
    service_a, service_b = two_processes
    project, scenario, pr = await recorded_pull_request(store, fake_github)
    held, starting_a = await _start_held(service_a, project, pr)
    # a push arrives in process B while A's check run is on its way: B ends A's validation, which has
    # no check run recorded yet, so B cannot cancel it on GitHub
    newer = dataclasses.replace(pr, head_sha="9" * 40)
    state_b = await asyncio.wait_for(service_b.start(project, newer, trigger="pull_request.synchronize",
                                                     claimer="delivery-b"), 10)
    held.release.set()
    state_a = await asyncio.wait_for(starting_a, 10)
    [run_a] = check_runs_of(fake_github, pr.head_sha)
    assert (run_a["status"], run_a["conclusion"]) == ("completed", "cancelled")
    assert run_a["output"]["title"] == "Superseded by 9999999"
    assert await queued_validations(store) == [state_b.id]
    assert state_a.id != state_b.id


async def test_jobs_starting_at_once_each_read_and_start_their_own_validation(store: Store, project_id: str) -> None:
    # Each job gets its own row as it was before its start, whatever the others asked meanwhile.
    created = [await store.validations.create(project_id=project_id, pr_number=number, head_sha=f"{number}" * 40)
               for number in (1, 2, 3)]
    await store.validations.cancel(created[2].id, title="Cancelled")
    asked = [created[0].id, "nope", created[1].id, created[2].id]
    results = await asyncio.gather(*(store.validations.read_then_start(asked_id) for asked_id in asked))
    assert [(state and state.id, state and state.status, started) for state, started in results] == [
        (created[0].id, "queued", True), (None, None, False), (created[1].id, "queued", True),
        (created[2].id, "completed", False)]
    assert [(await store.validations.get(state.id)).status for state in created] == [
        "in_progress", "in_progress", "completed"]
