"""One head, one check run, whatever fails: a POST whose answer is lost is not sent again, a retried
start adopts the check run an earlier try made, and what a killed process left half done is settled
(`ValidationService.recover_check_runs`, at start and every minute). The last tests kill a real
`codegenapp serve` with SIGKILL."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from bot.crypto import Crypto
from bot.db import Database
from bot.errors import GitHubUnavailable
from bot.github.github_app import GitHubApp
from bot.github.types import PullRequest
from bot.models import JOB_WEBHOOK, ValidationState
from bot.store import IncomingDelivery, Store
from pipeline.validation.buttons import recovered_actions
from pipeline.validation.service import recovered_output
from tests.check_run_support import (CHECK_RUNS, age_validation, begin_validation, check_runs_of, queued_validations,
                                     recorded_pull_request, validation_service_without_runner)
from tests.cli_support import ServedApp, cli_env
from tests.conftest import APP_ID, WEBHOOK_SECRET
from tests.fakes.github import FakeGitHub
from tests.pg import free_port
from tests.pull_requests import INSTALLATION_ID, Scenario, open_pull_request

CLIENT_TIMEOUT = 1.0  # the app's is 60 s: a POST answered after it is one GitHub made but the app never heard of


@pytest.fixture
async def github_of_process(make_settings: Callable[..., Any],
                            fake_github: FakeGitHub) -> AsyncIterator[Callable[[], GitHubApp]]:
    """Makes the GitHub layer of one more process (its own client, its own view of GitHub failing)."""
    settings = make_settings(GITHUB_API_URL=fake_github.api_url, GITHUB_URL=fake_github.base_url)
    made: list[GitHubApp] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CLIENT_TIMEOUT)) as http:
        def make() -> GitHubApp:
            made.append(GitHubApp(http, settings))
            return made[-1]

        yield make
        for github in made:
            await github.close()


# ---- a lost answer, a retried start --------------------------------------------------------------------

async def test_a_check_run_answered_too_late_is_adopted_by_the_retry_not_created_again(
        store: Store, fake_github: FakeGitHub, github_of_process: Callable[[], GitHubApp]) -> None:
    project, scenario, pr = await recorded_pull_request(store, fake_github)
    # GitHub creates the check run at once but answers after the client gave up waiting
    late = fake_github.hold_next("POST", CHECK_RUNS, seconds=CLIENT_TIMEOUT + 1)
    with pytest.raises(GitHubUnavailable):  # not sent again: the job is tried again later
        await validation_service_without_runner(store, github_of_process()).start(
            project, pr, trigger="pull_request.opened", claimer="delivery-1")
    assert late.arrived.is_set()
    [orphan] = check_runs_of(fake_github, pr.head_sha)
    # the delivery's job, tried again (here by another process: this one's GitHub work is paused)
    state = await validation_service_without_runner(store, github_of_process()).start(
        project, pr, trigger="pull_request.opened", claimer="delivery-1")
    assert check_runs_of(fake_github, pr.head_sha) == [orphan] and orphan["external_id"] == state.id
    assert (await store.validations.get(state.id)).check_run_id == orphan["id"]
    assert await queued_validations(store) == [state.id]


async def test_a_delivery_job_run_again_after_the_pr_moved_on_makes_no_second_check_run(
        store: Store, fake_github: FakeGitHub, github_of_process: Callable[[], GitHubApp]) -> None:
    # The state a SIGKILL leaves when it comes after a delivery's job made its check run but before the
    # job was recorded done (or when its lease expired under load and it was claimed again): by the
    # time the job runs again its validation may have ended, here superseded by a push.
    service = validation_service_without_runner(store, github_of_process())
    project, scenario, pr = await recorded_pull_request(store, fake_github)
    first = await service.start(project, pr, trigger="pull_request.opened", claimer="delivery-1")
    scenario.push({"more.txt": "more\n"})
    pushed = PullRequest.parse(fake_github.pulls[(scenario.full_name, scenario.number)], source="the fake",
                               repository=scenario.full_name)
    second = await service.start(project, pushed, trigger="pull_request.synchronize", claimer="delivery-2")
    again = await validation_service_without_runner(store, github_of_process()).start(
        project, pr, trigger="pull_request.opened", claimer="delivery-1")  # delivery-1's job, run again
    assert again.id == first.id
    [old] = check_runs_of(fake_github, pr.head_sha)
    assert (old["external_id"], old["conclusion"]) == (first.id, "cancelled")
    [new] = check_runs_of(fake_github, pushed.head_sha)
    assert (new["external_id"], new["status"]) == (second.id, "in_progress")  # not ended by the old head
    assert (await store.validations.get(second.id)).status == "queued"
    assert len(await store.validations.for_project(project.id)) == 2


async def test_a_new_validation_creates_its_check_run_without_looking_first(
        store: Store, fake_github: FakeGitHub, github_of_process: Callable[[], GitHubApp]) -> None:
    project, scenario, pr = await recorded_pull_request(store, fake_github)
    await validation_service_without_runner(store, github_of_process()).start(
        project, pr, trigger="pull_request.opened", claimer="delivery-1")
    assert len(check_runs_of(fake_github, pr.head_sha)) == 1
    assert not fake_github.calls_to("GET", "/repos/*/*/commits/*/check-runs")  # nothing to doubt: one request


# ---- the recovery ---------------------------------------------------------------------------------------

async def _begun(store: Store, project: Any, pr: PullRequest) -> ValidationState:
    """A validation whose process claimed its check run and then died."""
    return (await begin_validation(store, project.id, "dead-process", pr=pr)).validation


async def _made_by_dead_process(github: GitHubApp, project: Any, state: ValidationState) -> int:
    return await github.repo(project.installation_id, project.name).check_runs.create(
        head_sha=state.head_sha, details_url="http://app.test/x", external_id=state.id, title="Validation queued",
        summary="...")


async def test_the_recovery_adopts_the_check_run_a_dead_process_made_or_makes_the_missing_one(
        store: Store, fake_github: FakeGitHub, github_of_process: Callable[[], GitHubApp]) -> None:
    github = github_of_process()
    service = validation_service_without_runner(store, github)
    project, first, pr = await recorded_pull_request(store, fake_github)
    orphaned = await _begun(store, project, pr)  # died after the POST, before recording its answer
    orphan_id = await _made_by_dead_process(github, project, orphaned)
    _, second, other_pr = await recorded_pull_request(store, fake_github)
    never_made = await _begun(store, project, other_pr)  # died before the POST
    _, third, fresh_pr = await recorded_pull_request(store, fake_github)
    fresh = await _begun(store, project, fresh_pr)  # its process may still be at it

    assert await service.recover_check_runs() == 0  # claims still fresh: not touched
    await age_validation(store, orphaned.id)
    await age_validation(store, never_made.id)
    assert await service.recover_check_runs() == 2

    assert [run["id"] for run in check_runs_of(fake_github, pr.head_sha)] == [orphan_id]
    assert (await store.validations.get(orphaned.id)).check_run_id == orphan_id
    [made] = check_runs_of(fake_github, other_pr.head_sha)
    assert (made["external_id"], made["status"]) == (never_made.id, "in_progress")
    assert not check_runs_of(fake_github, fresh_pr.head_sha)
    assert sorted(await queued_validations(store)) == sorted([orphaned.id, never_made.id])
    assert fresh.id not in [v.id for v in await store.validations.unsettled()]
    assert await service.recover_check_runs() == 0


async def test_the_recovery_leaves_a_validation_to_the_delivery_job_that_will_run_again(
        store: Store, fake_github: FakeGitHub, github_of_process: Callable[[], GitHubApp]) -> None:
    # Made here, the check run's validation could end before that job runs again, and the job would
    # then begin a second validation (and check run) of the same head.
    service = validation_service_without_runner(store, github_of_process())
    project, scenario, pr = await recorded_pull_request(store, fake_github)
    stored = await store.deliveries.store(IncomingDelivery(
        id="delivery-9", event="pull_request", action="opened", installation_id=INSTALLATION_ID, payload="{}",
        job_kind=JOB_WEBHOOK, max_attempts=5))
    begun = await begin_validation(store, project.id, "delivery-9", pr=pr)
    await age_validation(store, begun.validation.id)
    assert await service.recover_check_runs() == 0
    assert not check_runs_of(fake_github, pr.head_sha)
    [job] = await store.jobs.claim("w", limit=1, lease_seconds=60, kinds=frozenset({JOB_WEBHOOK}))
    assert job.id == stored.job_id
    assert await store.jobs.complete_many("w", [job.id]) == {job.id}  # the job ran: now the recovery may
    assert await service.recover_check_runs() == 1
    assert len(check_runs_of(fake_github, pr.head_sha)) == 1


async def test_the_recovery_completes_check_runs_whose_validation_ended_while_they_ran(
        store: Store, fake_github: FakeGitHub, github_of_process: Callable[[], GitHubApp]) -> None:
    github = github_of_process()
    service = validation_service_without_runner(store, github)
    project, scenario, pr = await recorded_pull_request(store, fake_github)
    state = await service.start(project, pr, trigger="pull_request.opened", claimer="delivery-1")
    # its job recorded the outcome, then died before it completed the check run
    assert await store.validations.start(state.id)
    assert await store.validations.complete(state.id, conclusion="success", title="All 3 steps passed", results={})
    # a new head's start ended another validation, then died before cancelling its check run (made by a
    # start that died before recording it)
    _, other, other_pr = await recorded_pull_request(store, fake_github)
    superseded = await _begun(store, project, other_pr)
    orphan_id = await _made_by_dead_process(github, project, superseded)
    await store.validations.supersede(project.id, other_pr.number, new_head_sha="f" * 40)

    assert await service.recover_check_runs() == 0  # they ended a moment ago: their process may be at it
    await age_validation(store, state.id)
    await age_validation(store, superseded.id)
    assert await service.recover_check_runs() == 2

    run = fake_github.check_runs[(await store.validations.get(state.id)).check_run_id]
    assert (run["status"], run["conclusion"], run["output"]["title"]) == ("completed", "success",
                                                                         "All 3 steps passed")
    assert "interrupted" in run["output"]["summary"] and run["actions"][0]["identifier"] == "rerun"
    orphan = fake_github.check_runs[orphan_id]
    assert (orphan["status"], orphan["conclusion"], orphan["output"]["title"]) == \
        ("completed", "cancelled", "Superseded by fffffff")
    assert await store.validations.unsettled() == []
    assert await service.recover_check_runs() == 0


async def test_the_job_run_again_after_its_try_recorded_the_end_completes_the_check_run_at_once(
        store: Store, fake_github: FakeGitHub, github_of_process: Callable[[], GitHubApp]) -> None:
    """Killed between recording the end and telling GitHub: the job's next try (its lease expired) completes
    the check run then, not a minute later at the recovery's round (the chaos test met this)."""
    service = validation_service_without_runner(store, github_of_process())
    project, scenario, pr = await recorded_pull_request(store, fake_github)
    state = await service.start(project, pr, trigger="pull_request.opened", claimer="delivery-1")
    assert await store.validations.start(state.id)
    assert await store.validations.complete(state.id, conclusion="neutral", title="Nothing to validate", results={})
    [job] = await store.jobs.claim("w", limit=10, lease_seconds=60, kinds=frozenset({"validate"}))
    await service.run_job(job)  # its first try: the end was recorded by someone else, who settles it
    assert fake_github.check_runs[(await store.validations.get(state.id)).check_run_id]["status"] == "in_progress"
    job = dataclasses.replace(job, attempts=2)  # the try that recorded the end was killed; its lease expired
    await service.run_job(job)  # ... only a moment ago: whoever recorded it may still be telling GitHub
    assert fake_github.check_runs[(await store.validations.get(state.id)).check_run_id]["status"] == "in_progress"
    await age_validation(store, state.id)

    await service.run_job(job)

    run = fake_github.check_runs[(await store.validations.get(state.id)).check_run_id]
    assert (run["status"], run["conclusion"], run["output"]["title"]) == ("completed", "neutral", "Nothing to validate")
    assert await store.validations.unsettled() == [] and (await store.validations.get(state.id)).check_run_settled
    await service.run_job(job)  # once more: nothing left to do, nothing sent
    assert fake_github.check_runs[run["id"]] == run


async def test_a_check_run_that_cannot_be_reached_any_more_is_given_up(
        store: Store, fake_github: FakeGitHub, github_of_process: Callable[[], GitHubApp]) -> None:
    service = validation_service_without_runner(store, github_of_process())
    project, scenario, pr = await recorded_pull_request(store, fake_github)
    state = await service.start(project, pr, trigger="pull_request.opened", claimer="delivery-1")
    assert await store.validations.cancel(state.id, title="Cancelled: by hand")
    await age_validation(store, state.id)
    fake_github.fail_next("GET", "/repos/*/*/check-runs/*", status=404)  # the repository was deleted
    assert await service.recover_check_runs() == 0
    assert await store.validations.unsettled() == []  # not asked again every minute


def test_what_the_recovery_writes_on_the_check_run_of_an_ended_validation() -> None:
    ended = ValidationState(id="v1", status="completed", conclusion="failure", title="ruff failed")
    conclusion, output = recovered_output(ended, "http://app.test/validations/v1")
    assert conclusion == "failure" and output == {
        "title": "ruff failed",
        "summary": "ruff failed.\n\nCodegenApp was interrupted before it updated this check run: "
                   "[the validation's page](http://app.test/validations/v1) shows what it recorded."}
    conclusion, output = recovered_output(ValidationState(id="v2", status="completed"), "u")  # nothing recorded
    assert (conclusion, output["title"]) == ("cancelled", "Cancelled")

    def buttons(status: str, conclusion: str) -> list[str] | None:
        actions = recovered_actions(status, conclusion, agent_configured=True)
        return None if actions is None else [action["identifier"] for action in actions]

    assert buttons("completed", "failure") == ["rerun", "fix"]
    assert buttons("completed", "success") == ["rerun"]  # never Merge: nothing decided it
    assert buttons("superseded", "cancelled") is None  # the newer head's check run has them


# ---- a real `codegenapp serve`, killed with SIGKILL ------------------------------------------------------

@pytest.fixture
async def served(tmp_path: Path, app_private_key: str,
                 fake_github: FakeGitHub) -> AsyncIterator[Callable[[], Any]]:
    """Starts `codegenapp serve` (again: each process on the same DATA_DIR, database and port)."""
    port = free_port()
    env = cli_env(tmp_path, HOME=str(tmp_path), LANG="C.UTF-8", APP_ID=str(APP_ID), PRIVATE_KEY=app_private_key,
                  WEBHOOK_SECRET=WEBHOOK_SECRET, HOST="127.0.0.1", GITHUB_API_URL=fake_github.api_url,
                  GITHUB_URL=fake_github.base_url, JOB_LEASE_SECONDS="2", GITHUB_WRITES_PER_MINUTE="1000",
                  GITHUB_WRITES_PER_HOUR="10000", LOG_LEVEL="INFO")
    apps: list[ServedApp] = []
    async with aiohttp.ClientSession() as session:
        async def start() -> ServedApp:
            apps.append(ServedApp(env, port=port, session=session))
            return await apps[-1].start()

        yield start
        for app in apps:
            await app.stop()


@pytest.fixture
async def app_store(tmp_path: Path) -> AsyncIterator[Store]:
    """The served app's database, as the test sees it between two processes."""
    store = Store(Database(f"sqlite:///{tmp_path / 'data' / 'codegenapp.db'}"), Crypto(Crypto.generate_key()))
    yield store
    await store.close()


async def _validations_of(store: Store, scenario: Scenario) -> list[ValidationState]:
    project = await store.projects.get_project_by_name(scenario.full_name)
    return [v for v in await store.validations.for_project(project.id) if v.pr_number == scenario.number]


def _all_completed(fake: FakeGitHub, heads: list[str]) -> Callable[[], bool]:
    return lambda: all(check_runs_of(fake, head)
                       and all(run["status"] == "completed" for run in check_runs_of(fake, head))
                       for head in heads)


@pytest.mark.slow
async def test_killed_after_github_made_the_check_run_the_next_process_adopts_it(
        served: Callable[[], Any], fake_github: FakeGitHub, app_store: Store) -> None:
    scenario = open_pull_request(fake_github, config=None)
    created = fake_github.hold_next("POST", CHECK_RUNS)  # made; the app dies waiting for the answer
    app = await served()
    assert (await app.webhooks.send("pull_request", scenario.payload("opened"))).status == 202
    await asyncio.wait_for(created.arrived.wait(), 30)
    await app.kill()
    created.release()
    [orphan] = check_runs_of(fake_github, scenario.head_sha)

    await served()  # the delivery's job, run again once its lease expired, adopts the check run
    await fake_github.wait_until(_all_completed(fake_github, [scenario.head_sha]), timeout=60)
    [run] = check_runs_of(fake_github, scenario.head_sha)
    assert (run["id"], run["conclusion"], run["output"]["title"]) == (orphan["id"], "neutral", "Nothing to validate")
    [validation] = await _validations_of(app_store, scenario)
    assert validation.check_run_id == orphan["id"]


@pytest.mark.slow
async def test_killed_before_it_completed_the_check_run_the_next_process_completes_it_at_start(
        served: Callable[[], Any], fake_github: FakeGitHub, app_store: Store) -> None:
    scenario = open_pull_request(fake_github, config=None)
    completing = fake_github.hold_next("PATCH", "/repos/*/*/check-runs/*", before_handling=True)  # never done
    app = await served()
    assert (await app.webhooks.send("pull_request", scenario.payload("opened"))).status == 202
    await asyncio.wait_for(completing.arrived.wait(), 30)
    await app.kill()
    [validation] = await _validations_of(app_store, scenario)
    assert (validation.status, validation.conclusion) == ("completed", "neutral")  # recorded, not reported
    await age_validation(app_store, validation.id)  # the app stayed down a while

    await served()
    await fake_github.wait_until(_all_completed(fake_github, [scenario.head_sha]), timeout=30)
    [run] = check_runs_of(fake_github, scenario.head_sha)
    assert (run["conclusion"], run["output"]["title"]) == ("neutral", "Nothing to validate")
    assert "interrupted" in run["output"]["summary"]  # by the recovery: the job, run again, had nothing to do


@pytest.mark.slow
async def test_a_burst_of_pull_requests_through_a_sigkill_gets_one_check_run_per_head(
        served: Callable[[], Any], fake_github: FakeGitHub, app_store: Store) -> None:
    scenarios = [open_pull_request(fake_github, config=None) for _ in range(24)]
    deliveries = [(scenario, f"delivery-{n}") for n, scenario in enumerate(scenarios)]
    # A slow GitHub: the kill comes while the twelfth check run is made but not answered, 5.5 s in, when
    # the first validations (which wait up to 5 s for a burst of webhooks) have ended and their check
    # runs' completions wait behind it (an installation's writes go one at a time).
    fake_github.hold_next("POST", CHECK_RUNS, seconds=0.5, times=11)
    twelfth = fake_github.hold_next("POST", CHECK_RUNS)
    app = await served()
    acknowledged = asyncio.Semaphore(0)

    async def deliver(scenario: Scenario, delivery_id: str) -> None:
        try:
            answer = await app.webhooks.send("pull_request", scenario.payload("opened"), delivery_id=delivery_id)
        except aiohttp.ClientError:
            return  # the app was killed: GitHub would redeliver it
        if answer.status == 202:
            acknowledged.release()

    sending = [asyncio.create_task(deliver(*delivery)) for delivery in deliveries]
    for _ in range(10):
        await asyncio.wait_for(acknowledged.acquire(), 30)
    await asyncio.wait_for(twelfth.arrived.wait(), 30)
    await app.kill()
    await asyncio.gather(*sending)
    twelfth.release()
    everything = select(ValidationState.id)
    for validation_id in await app_store.db.read(lambda conn: conn.execute(everything).scalars().all()):
        await age_validation(app_store, validation_id)  # the app stayed down a while

    app = await served()
    for scenario, delivery_id in deliveries:  # redelivered; those stored already are duplicates
        assert (await app.webhooks.send("pull_request", scenario.payload("opened"),
                                        delivery_id=delivery_id)).status in (200, 202)
    heads = [scenario.head_sha for scenario in scenarios]
    await fake_github.wait_until(_all_completed(fake_github, heads), timeout=120)
    assert {head: len(check_runs_of(fake_github, head)) for head in heads} == {head: 1 for head in heads}
    for scenario in scenarios:
        [validation] = await _validations_of(app_store, scenario)
        assert validation.check_run_id == check_runs_of(fake_github, scenario.head_sha)[0]["id"]
