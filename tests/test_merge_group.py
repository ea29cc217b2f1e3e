"""GitHub's merge queue, end to end: a `merge_group` delivery (GitHub's example, adapted to the fake's
repository) validates the group's head in the real sandbox, with the config of the group's base, and
reports a check run on that head; `destroyed` cancels what still runs."""

from __future__ import annotations

import copy
import subprocess
import uuid
from typing import Any

from bot.events import wait_for
from bot.github.check_runs import CHECK_NAME
from bot.github.repos import COMPARE_PAGE_SIZE
from bot.models import SUBJECT_MERGE_GROUP
from pipeline.validation.subjects import UNTRACEABLE
from tests.conftest import WEBHOOK_SECRET, BotUnderTest
from tests.dashboard_support import start_dashboard
from tests.ghfixtures import load_webhook
from tests.test_human_words import RAW, readable
from tests.pull_requests import (INSTALLATION_ID, Scenario, check_run, comments_on, open_pull_request,
                                 record_project)
from tests.sandbox_support import needs_bwrap
from tests.webhook_sender import WebhookSender

pytestmark = needs_bwrap

# The base's config passes only with the project's secret and the PR's change; the group's own copy of
# the file would fail: what runs must be read at the base.
NEEDS_SECRET = "validate:\n  - name: with secret\n    run: test -n \"$API_TOKEN\" && grep -q changed app.py\n"
HEAD_CONFIG = "validate:\n  - exit 1\n"


def queue_group(scenario: Scenario, *, files: dict[str, str] | None = None, onto: str | None = None) -> dict[str, Any]:
    """The PR's head merged onto its base (or onto `onto`, a commit on it) on a
    `gh-readonly-queue/main/pr-<n>-<sha>` branch, as GitHub's queue makes it with its `merge` method;
    returns the `merge_group` object of its events."""
    fake = scenario.fake
    ref = f"gh-readonly-queue/main/pr-{scenario.number}-{scenario.base_sha}"
    head = fake.git_repo(scenario.full_name).commit(
        {"app.py": "print('changed')\n", **(files or {})}, branch=ref, parents=[onto or scenario.base_sha,
                                                                                 scenario.head_sha],
        message=f"Merge pull request #{scenario.number} from acme/feature\n\nthe change")
    for path, content in (files or {}).items():
        fake.set_file(scenario.full_name, head, path, content.encode())
    return {"head_sha": head, "head_ref": f"refs/heads/{ref}", "base_sha": scenario.base_sha,
            "base_ref": "refs/heads/main"}


def group_event(scenario: Scenario, group: dict[str, Any], action: str = "checks_requested",
                **extra: Any) -> dict[str, Any]:
    """GitHub's example of `merge_group.<action>` about `group` of the scenario's repository."""
    payload = load_webhook("merge_group", "checks_requested")
    payload["merge_group"].update(group)
    payload.update(action=action, repository=copy.deepcopy(scenario.fake.repos[scenario.full_name]),
                   installation={"id": INSTALLATION_ID}, **extra)
    payload.pop("organization", None)
    return payload


async def validate_group(bot: Any, scenario: Scenario, group: dict[str, Any], *, timeout: float = 60) -> Any:
    with bot.services.bus.subscribe() as events:
        answer = await bot.webhooks.send("merge_group", group_event(scenario, group))
        assert answer.status == 202
        done = await wait_for(events, "validation.completed", timeout=timeout, head_sha=group["head_sha"])
    return await bot.store.validations.get(done.data["validation_id"])


async def with_secret(bot: Any, scenario: Scenario) -> None:
    project = await record_project(bot.store, scenario)
    await bot.store.projects.set_secret(project.id, "API_TOKEN", "tok-group-secret-123")


async def test_checks_requested_leads_to_a_check_run_on_the_groups_head_with_the_bases_config(
        bot, fake_github) -> None:
    scenario = open_pull_request(fake_github, config=NEEDS_SECRET)
    await with_secret(bot, scenario)
    group = queue_group(scenario, files={".github/codegenapp.yml": HEAD_CONFIG})
    state = await validate_group(bot, scenario, group)

    run = check_run(fake_github, state)
    assert (run["name"], run["head_sha"], run["status"], run["conclusion"]) == (
        CHECK_NAME, group["head_sha"], "completed", "success"), run["output"]
    created = fake_github.calls_to("POST", "/repos/*/*/check-runs")[-1].json
    assert (created["head_sha"], created["status"]) == (group["head_sha"], "in_progress")
    assert (state.subject, state.subject_ref, state.pr_number, state.base_sha) == (
        SUBJECT_MERGE_GROUP, group["head_ref"], scenario.number, scenario.base_sha)
    config_reads = [c.query.get("ref") for c in fake_github.calls_to("GET", "/repos/*/*/contents/**")]
    assert config_reads == [scenario.base_sha]
    assert fake_github.calls_to("GET", f"/repos/*/*/compare/{scenario.base_sha}...{group['head_sha']}")
    assert comments_on(fake_github, scenario) == []  # a group is no PR's head: no sticky comment
    assert run.get("actions", []) == []  # no Re-run, Merge or Fix button: the queue runs a group again
    async with bot.webhooks.session.get(f"{bot.url}/validations/{state.id}") as page:
        html = await page.text()
    assert page.status == 200 and "Merge queue group for <a" in html and "tok-group-secret-123" not in html
    assert "via GitHub&#39;s merge queue" in html

    # the group is merged: a finished validation stays as it was
    await bot.deliver("merge_group", group_event(scenario, group, "destroyed", reason="merged"))
    assert check_run(fake_github, await bot.store.validations.get(state.id))["conclusion"] == "success"


async def test_a_redelivered_checks_requested_starts_nothing_new(bot, fake_github) -> None:
    scenario = open_pull_request(fake_github, config="validate:\n  - grep -q changed app.py\n")
    group = queue_group(scenario)
    first = await validate_group(bot, scenario, group)
    payload = group_event(scenario, group)
    await bot.deliver("merge_group", payload)  # another delivery of the event
    await bot.deliver("merge_group", payload, delivery_id=str(uuid.uuid4()))
    validations = [v for v in await bot.store.validations.for_project(first.project_id)
                   if v.head_sha == group["head_sha"]]
    assert [v.id for v in validations] == [first.id]
    runs = [r for r in fake_github.check_runs.values() if r["head_sha"] == group["head_sha"]]
    assert [r["id"] for r in runs] == [first.check_run_id]


async def test_destroyed_while_running_cancels_it_saying_why(bot, fake_github) -> None:
    marker = f"sleep 60.{uuid.uuid4().int % 10**6:06d}"  # unique, so other runs on the machine don't count
    scenario = open_pull_request(fake_github, config=f"validate:\n  - {marker}\n")
    group = queue_group(scenario)
    with bot.services.bus.subscribe() as events, bot.services.bus.subscribe() as jobs:
        await bot.webhooks.send("merge_group", group_event(scenario, group))
        started = await wait_for(events, "validation.started", head_sha=group["head_sha"])
        state = await bot.store.validations.get(started.data["validation_id"])
        # running once the check run shows its progress (the first PATCH to it)
        await fake_github.wait_for_call("PATCH", f"/repos/*/*/check-runs/{state.check_run_id}", timeout=30)
        await bot.webhooks.send("merge_group", group_event(scenario, group, "destroyed", reason="dequeued"))
        done = await wait_for(events, "validation.completed", timeout=30, head_sha=group["head_sha"])
        await wait_for(jobs, "job.finished", timeout=30, kind="validate")  # its sandbox is gone by then
    assert done.data["conclusion"] == "cancelled"
    ended = await bot.store.validations.get(state.id)
    assert (ended.status, ended.conclusion) == ("completed", "cancelled")
    run = check_run(fake_github, ended)
    assert (run["status"], run["conclusion"]) == ("completed", "cancelled")
    assert run["output"]["title"] == "Cancelled: the merge group was removed from the queue"
    leftover = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True)
    assert leftover.stdout == "", "the cancelled run's sandbox was not killed"


async def test_a_group_naming_a_fork_pr_runs_without_the_projects_secrets(bot, fake_github) -> None:
    config = "validate:\n  - name: no secret\n    run: test -z \"$API_TOKEN\"\n"
    scenario = open_pull_request(fake_github, config=config, fork_owner="stranger", author="stranger")
    await with_secret(bot, scenario)
    state = await validate_group(bot, scenario, queue_group(scenario))
    run = check_run(fake_github, state)
    assert run["conclusion"] == "success", run["output"]
    note = f"merge queue group: run without the project's secrets: #{scenario.number} comes from a fork"
    assert note in state.test_results["notes"] and note in run["output"]["summary"] + run["output"].get("text", "")


async def test_a_fork_commit_rebased_under_a_same_repository_prs_merge_gets_no_secrets(bot, fake_github) -> None:
    # The group is named for, and its only merge names, a same-repository PR; under it lies a fork PR's
    # commit rebased onto the base, which no commit message names.
    config = "validate:\n  - name: no secret\n    run: test -z \"$API_TOKEN\"\n"
    fork = open_pull_request(fake_github, config=config, fork_owner="stranger", author="stranger")
    await with_secret(bot, fork)
    same_repo = open_pull_request(fake_github, config=config)
    rebased = fake_github.git_repo(fork.full_name).commit({"app.py": "print('from the fork')\n"}, branch=None,
                                                          parent=same_repo.base_sha, message="tweak")
    state = await validate_group(bot, same_repo, queue_group(same_repo, onto=rebased))
    run = check_run(fake_github, state)
    assert run["conclusion"] == "success", "the fork's rebased code ran with the project's secrets"
    note = f"merge queue group: run without the project's secrets: {UNTRACEABLE}"
    assert note in state.test_results["notes"] and note in run["output"]["summary"] + run["output"].get("text", "")


async def test_destroyed_before_its_checks_requested_the_group_is_never_validated(bot, fake_github) -> None:
    scenario = open_pull_request(fake_github, config="validate:\n  - grep -q changed app.py\n")
    group = queue_group(scenario)
    await bot.deliver("merge_group", group_event(scenario, group, "destroyed", reason="merged"))
    await bot.deliver("merge_group", group_event(scenario, group))  # the late checks_requested
    [state] = [v for v in await bot.store.validations.for_project((await record_project(bot.store, scenario)).id)
               if v.head_sha == group["head_sha"]]
    assert (state.status, state.conclusion, state.check_run_id, state.started_at) == (
        "completed", "cancelled", None, None)
    assert state.title == "Cancelled: the merge group was merged before its checks were requested"
    assert [r for r in fake_github.check_runs.values() if r["head_sha"] == group["head_sha"]] == []


async def test_every_page_of_a_long_comparison_is_read(bot, fake_github) -> None:
    scenario = open_pull_request(fake_github, config=None)
    repo = fake_github.git_repo(scenario.full_name)
    head = scenario.base_sha
    for n in range(2 * COMPARE_PAGE_SIZE + 60):  # more than GitHub lists without pages (250)
        head = repo.commit({"n.txt": f"{n}\n"}, branch="long", parent=head, message=f"commit {n}")
    compared = await bot.services.github.repo(INSTALLATION_ID, scenario.full_name).repos.compare(
        scenario.base_sha, head)
    assert (len(compared.commits), compared.complete, compared.commits[-1].sha) == (
        2 * COMPARE_PAGE_SIZE + 60, True, head)
    assert [c.query.get("page") for c in fake_github.calls_to("GET", "/repos/*/*/compare/*")] == ["1", "2", "3"]


async def test_a_groups_validation_reads_as_the_groups_on_the_dashboard(fake_github, aiohttp_server,
                                                                         make_settings) -> None:
    dash = await start_dashboard(fake_github, aiohttp_server, make_settings)
    scenario = open_pull_request(fake_github, config=None)  # nothing to validate: the notice's words
    group = queue_group(scenario)
    fake_github.set_permission(scenario.full_name, "alice", "admin")
    async with await dash.login("alice", installation_ids=[INSTALLATION_ID]) as session:
        state = await validate_group(BotUnderTest(dash.url, dash.services, WebhookSender(session, dash.url,
                                                                                         WEBHOOK_SECRET)),
                                     scenario, group)
        pages = {}
        for path in (f"/projects/{scenario.full_name}", f"/projects/{scenario.full_name}/audit",
                     f"/validations/{state.id}"):
            async with session.get(dash.url + path) as response:
                assert response.status == 200, path
                pages[path] = readable(await response.text())
    project_page, audit_page, validation_page = pages.values()
    assert f"merge queue group for #{scenario.number}" in project_page
    assert f"Validation of {group['head_sha'][:7]} on the merge queue group for #{scenario.number} : " \
           "Neutral · Nothing to validate" in audit_page, audit_page  # (readable() spaces out the link)
    assert "then add the pull request to the merge queue again" in validation_page
    assert "/validate" not in validation_page and "via GitHub's merge queue" in validation_page
    assert not [RAW.findall(text) for text in pages.values() if RAW.search(text)]
