"""Handlers and the services under them, over the recording GitHub fake: `router.dispatch(event, ctx)`
with a real store and no HTTP (the end-to-end tests cover the same paths over the wire)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from gidgethub import sansio
from sqlalchemy import update

from bot.errors import GitHubUnavailable
from bot.events import AppEvent, EventBus, wait_for
from bot.github.errors import UnexpectedResponse
from bot.models import JOB_VALIDATE, Job
from bot.services import Services
from bot.store import ClaimedJob, InstallationRef, RepoRef, Store
from handlers import handle_event
from pipeline.merge.service import MergeService
from pipeline.workspace.volumes import GIB, RunVolumes
from tests.check_run_support import validation_service_without_runner
from tests.fakes.github_ops import RecordingGitHub, pull_request
from worker.runner import Worker

INSTALLATION = 77
REPOSITORY = {"id": 5150, "full_name": "octo/app", "name": "app", "owner": {"login": "octo"}}
HEAD, NEWER = "a" * 40, "c" * 40


@pytest.fixture
async def services(store: Store, tmp_path: Path, make_settings: Any) -> Services:
    await store.projects.upsert_installation(InstallationRef(id=INSTALLATION, account_login="octo"))
    await store.projects.upsert_projects(INSTALLATION, [RepoRef(id=REPOSITORY["id"], full_name="octo/app")])
    github = RecordingGitHub(pulls=[pull_request(1, head_sha=HEAD)], roles={"alice": "write", "bob": "read"})
    bus = EventBus()
    merges = MergeService(store, github, bus)  # type: ignore[arg-type]
    validations = validation_service_without_runner(
        store, github, bus=bus, merges=merges, data_dir=tmp_path,
        volumes=RunVolumes(tmp_path / "workspaces", limit_bytes=GIB, min_free_bytes=0))
    return Services(settings=make_settings(), store=store, http=None, bus=bus, github=github,  # type: ignore
                    sandbox=None, validations=validations, merges=merges, agent_runs=None,  # type: ignore
                    worker=None, screenshot_pruner=None)


def event(name: str, action: str, **data: Any) -> sansio.Event:
    payload = {"action": action, "installation": {"id": INSTALLATION}, "repository": REPOSITORY, **data}
    return sansio.Event(payload, event=name, delivery_id=f"delivery-{name}-{action}")


def comment(body: str, login: str) -> sansio.Event:
    return event("issue_comment", "created", issue={"number": 1, "pull_request": {"url": "https://api.github.test/repos/octo/app/pulls/1"}},
                 comment={"id": 9, "body": body, "user": {"login": login, "type": "User"}},
                 sender={"login": login, "type": "User"})


def pull_request_event(action: str, head_sha: str) -> sansio.Event:
    return event("pull_request", action, number=1, pull_request={
        "number": 1, "state": "open", "draft": False, "user": {"login": "alice"},
        "head": {"sha": head_sha, "ref": "feature", "repo": REPOSITORY},
        "base": {"sha": "b" * 40, "ref": "main", "repo": REPOSITORY}})


async def test_a_command_from_a_reader_is_refused_and_nothing_runs(services: Services) -> None:
    github: RecordingGitHub = services.github  # type: ignore[assignment]
    await handle_event(services, comment("/merge", "bob"))
    [reply] = github.replies(1)
    assert reply == "@bob you need write access to octo/app to run `/merge` (you have read), so nothing was done."
    assert "pulls.merge" not in github.operations() and "comments.react" not in github.operations()


async def test_validate_from_a_writer_starts_a_check_run_on_the_current_head(services: Services) -> None:
    github: RecordingGitHub = services.github  # type: ignore[assignment]
    await handle_event(services, comment("/validate", "alice"))
    [check_run] = github.check_runs.values()
    assert (check_run["head_sha"], check_run["status"], check_run["title"]) == (HEAD, "in_progress",
                                                                               "Validation queued")
    reactions = [call.args[1] for call in github.calls if call.operation == "comments.react"]
    assert reactions == ["eyes", "+1"] and github.replies(1) == []


async def test_validate_on_a_closed_pull_request_says_so(services: Services) -> None:
    github: RecordingGitHub = services.github  # type: ignore[assignment]
    github.pulls[1] = pull_request(1, head_sha=HEAD, state="closed")
    await handle_event(services, comment("/validate", "alice"))
    assert github.replies(1) == ["@alice Not validating: the PR is closed."]
    assert not github.check_runs


async def test_a_new_head_cancels_the_check_run_of_the_old_one(services: Services) -> None:
    github: RecordingGitHub = services.github  # type: ignore[assignment]
    await handle_event(services, pull_request_event("opened", HEAD))
    await handle_event(services, pull_request_event("synchronize", NEWER))
    old, new = github.check_runs.values()
    assert (old["head_sha"], old["conclusion"], old["title"]) == (HEAD, "cancelled", "Cancelled: superseded by ccccccc")
    assert (new["head_sha"], new["status"]) == (NEWER, "in_progress")


async def test_the_same_head_twice_makes_one_check_run(services: Services) -> None:
    github: RecordingGitHub = services.github  # type: ignore[assignment]
    await handle_event(services, pull_request_event("opened", HEAD))
    await handle_event(services, pull_request_event("reopened", HEAD))
    assert [call.operation for call in github.calls].count("check_runs.create") == 1


class _Misunderstood:
    """A pulls operation whose GitHub answered without the PR's head."""

    async def get(self, number: int) -> Any:
        raise UnexpectedResponse(f"GET /repos/octo/app/pulls/{number}", "`head.sha`", {"number": number})


def meeting(services: Services, pulls: Any) -> None:
    """GitHub's pulls are `pulls` from now on."""
    github: RecordingGitHub = services.github  # type: ignore[assignment]
    repo = github.repo
    github.repo = lambda *args: dataclasses.replace(repo(*args), pulls=pulls)  # type: ignore[method-assign]


async def validation_job_meeting(services: Services, pulls: Any) -> tuple[int, ClaimedJob]:
    """A PR's validation started (its check run id) and its job claimed; GitHub's pulls are now `pulls`."""
    github: RecordingGitHub = services.github  # type: ignore[assignment]
    await handle_event(services, pull_request_event("opened", HEAD))
    [check_run_id] = github.check_runs
    [job] = await services.store.jobs.claim("test", limit=1, lease_seconds=60, kinds=frozenset({JOB_VALIDATE}))
    meeting(services, pulls)
    return check_run_id, job


async def validation_job_through_a_worker(services: Services, **worker_options: Any) -> AppEvent:
    """The queued validation job run by a worker as the app builds it (bot/app.py); its job.finished."""
    worker = Worker(services.store, {JOB_VALIDATE: services.validations.run_job}, bus=services.bus,
                    on_dead={JOB_VALIDATE: services.validations.job_died}, poll_interval=0.05, **worker_options)
    with services.bus.subscribe() as events:
        await worker.start()
        try:
            worker.wake()
            return await wait_for(events, "job.finished", kind=JOB_VALIDATE)
        finally:
            await worker.stop()


async def test_a_validation_github_answers_strangely_for_ends_at_once_saying_what_came(services: Services) -> None:
    github: RecordingGitHub = services.github  # type: ignore[assignment]
    await handle_event(services, pull_request_event("opened", HEAD))
    [check_run_id] = github.check_runs
    meeting(services, _Misunderstood())
    finished = await validation_job_through_a_worker(services)
    assert (finished.data["outcome"], finished.data["attempts"]) == ("dead", 1)  # not retried: reported
    check_run = github.check_runs[check_run_id]
    assert (check_run["status"], check_run["conclusion"]) == ("completed", "failure")
    state = await services.store.validations.get(check_run["external_id"])
    assert state.status == "completed" and state.test_results == {
        "error": "UnexpectedResponse: GET /repos/octo/app/pulls/1 answered without `head.sha`: "
                 "got an object with keys [number]"}


class _Unreachable:
    """A pulls operation while GitHub is failing."""

    async def get(self, number: int) -> Any:
        raise GitHubUnavailable(f"GitHub answered 502 to GET /repos/octo/app/pulls/{number} (4 tries)", retry_after=5)


async def test_a_validation_on_its_last_attempt_waits_out_github_failing_instead_of_ending(services: Services) -> None:
    """GitHub failing is not the validation's fault: even on its last attempt it is not ended as broken
    (which would leave it completed and its retried job with nothing to do); the worker tries it again."""
    github: RecordingGitHub = services.github  # type: ignore[assignment]
    check_run_id, job = await validation_job_meeting(services, _Unreachable())
    with pytest.raises(GitHubUnavailable):
        await services.validations.run_job(dataclasses.replace(job, attempts=job.max_attempts))
    assert github.check_runs[check_run_id]["status"] == "in_progress"
    state = await services.store.validations.get(github.check_runs[check_run_id]["external_id"])
    assert state.status == "in_progress"


async def test_a_validation_whose_job_github_kept_failing_past_its_budget_ends_saying_why(
        services: Services) -> None:
    """The worker gives the job up once GitHub stayed unavailable past the outage budget, on its last
    try: the validation must not stay "in progress" (nor its check run) with nothing left to run it."""
    github: RecordingGitHub = services.github  # type: ignore[assignment]
    await handle_event(services, pull_request_event("opened", HEAD))
    [check_run_id] = github.check_runs
    await services.store.db.write(lambda conn: conn.execute(update(Job).where(Job.kind == JOB_VALIDATE).values(
        max_attempts=1)))
    meeting(services, _Unreachable())
    finished = await validation_job_through_a_worker(services, outage_budget_seconds=0)
    assert finished.data["outcome"] == "dead"
    check_run = github.check_runs[check_run_id]
    assert (check_run["status"], check_run["conclusion"]) == ("completed", "failure")
    state = await services.store.validations.get(check_run["external_id"])
    assert state.status == "completed" and state.test_results["error"].startswith("GitHubUnavailable: GitHub answered 502")


async def test_a_merge_reads_the_branch_protection_once_while_github_computes_mergeability(
        services: Services) -> None:
    github: RecordingGitHub = services.github  # type: ignore[assignment]
    github.pulls[1] = pull_request(1, head_sha=HEAD, mergeable=None)  # GitHub is still computing it
    project = await services.store.projects.get_project_by_name("octo/app")
    assert project is not None
    validation = await services.store.validations.create(project_id=project.id, pr_number=1, head_sha=HEAD)
    assert await services.store.validations.complete(validation.id, conclusion="success", title="Passed", results={})
    services.merges.mergeable_retry_delays = (0.0, 0.0)
    outcome = await services.merges.merge(project, 1, trigger="command", requested_by="alice")
    assert not outcome.merged and "has not finished checking" in outcome.message
    operations = github.operations()
    assert (operations.count("pulls.get"), operations.count("repos.protection")) == (4, 1)  # 2 retries, 1 read
