"""Slash commands, check-run buttons and merging, end to end: signed deliveries to the app over HTTP,
the app talking to the fake GitHub over HTTP.

Most tests store the validation they need (`seed_validation`) instead of running one: what is merged
is a function of stored state. The tests at the end run real validations (the sandbox) for
auto-merge, the buttons of a completed run and /ok-to-test on a fork PR.
"""

import asyncio

import pytest

from bot.events import wait_for
from bot.models import JOB_VALIDATE
from pipeline.commands.parse import COMMANDS
from tests.pull_requests import APP_ID, Scenario, open_pull_request, record_project, seed_validation, validate
from tests.sandbox_support import needs_bwrap

USERS = {"ada": "admin", "max": "maintain", "wes": "write", "tri": "triage", "rea": "read", "nobody": "none"}
ALLOWED = ("admin", "maintain", "write")
MERGE_PATH = "/repos/*/*/pulls/*/merge"
PERMISSION_PATH = "/repos/*/*/collaborators/*/permission"


@pytest.fixture
async def app(start_bot):  # type: ignore[no-untyped-def]
    # many writes in one test: the pacing of GitHub writes is tested elsewhere
    return await start_bot(GITHUB_WRITES_PER_MINUTE="10000", GITHUB_WRITES_PER_HOUR="100000")


@pytest.fixture
def quiet(app, monkeypatch):  # type: ignore[no-untyped-def]
    """Validations are started (check run, job) but their jobs do nothing: they stay queued."""
    async def nothing(job) -> None:  # type: ignore[no-untyped-def]
        return None

    monkeypatch.setitem(app.services.worker.handlers, JOB_VALIDATE, nothing)


def with_users(fake, scenario: Scenario) -> Scenario:
    for user, role in USERS.items():
        fake.set_permission(scenario.full_name, user, role)
    return scenario


@pytest.fixture
def pr(fake_github) -> Scenario:
    return with_users(fake_github, open_pull_request(fake_github, config=None))


async def comment(app, scenario: Scenario, body: str, *, user: str = "wes", **options) -> dict:
    payload = scenario.comment_payload(body, user=user, **options)
    await app.deliver("issue_comment", payload)
    return payload["comment"]


async def click(app, scenario: Scenario, identifier: str, *, user: str = "wes", **check_run) -> None:
    await app.deliver("check_run", scenario.requested_action_payload(scenario.check_run(**check_run), identifier,
                                                                     user=user))


def replies(fake, scenario: Scenario) -> list[str]:
    """What the app said on the PR, oldest first."""
    issue = f"/repos/{scenario.full_name}/issues/{scenario.number}"
    return [c["body"] for _, c in sorted(fake.comments.items())
            if c["user"]["type"] == "Bot" and c["issue_url"].endswith(issue)]


def reactions(fake, comment_id: int) -> list[str]:
    return [r["content"] for r in fake.reactions if r["comment_id"] == comment_id]


async def audit_actions(app, project) -> list[str]:
    return [event.action for event in reversed(await app.store.audit.list(project_id=project.id))]


# ---- who may -----------------------------------------------------------------------------------

COMMAND_LINES = ["/validate", "/cancel", "/merge", "/auto-merge on", "/ok-to-test", "/agent fix the tests",
                 "/plan confirm", "/queue", "/dequeue", "/help"]
BUTTONS = {"rerun": "Re-run", "merge": "Merge", "fix": "Fix with agent"}


def test_the_matrix_covers_every_command() -> None:
    assert {line.split()[0][1:] for line in COMMAND_LINES} == set(COMMANDS)


@pytest.mark.parametrize("user, role", list(USERS.items()))
async def test_permission_matrix_for_every_command_and_button(app, quiet, pr, fake_github, user, role) -> None:
    project = await record_project(app.store, pr)
    validated = await seed_validation(app.store, pr)
    allowed = role in ALLOWED
    for line in COMMAND_LINES:
        said = len(replies(fake_github, pr))
        taken = await comment(app, pr, line, user=user)
        new = replies(fake_github, pr)[said:]
        if allowed:
            assert "eyes" in reactions(fake_github, taken["id"]), line
            assert all("you need write access" not in body for body in new)
        else:
            assert reactions(fake_github, taken["id"]) == [], line
            assert len(new) == 1, (line, new)
            assert new[0].startswith(f"@{user} you need write access to {pr.full_name}") and f"`{line.split()[0]}`" \
                in new[0] and f"you have {role}" in new[0]
    for identifier, label in BUTTONS.items():
        said = len(replies(fake_github, pr))
        await click(app, pr, identifier, user=user, external_id=validated.id)
        new = replies(fake_github, pr)[said:]
        if allowed:
            assert all("you need write access" not in body for body in new)
        else:
            assert len(new) == 1 and f"you need write access to {pr.full_name} to use the {label} button" in new[0]

    validations = await app.store.validations.for_project(project.id)
    refusals = (await audit_actions(app, project)).count("command.refused")
    if allowed:
        assert refusals == 0
        assert len(validations) > 1  # /validate, the Re-run button
        assert await app.store.pull_requests.auto_merge(project.id, pr.number) is True
        assert await app.store.validations.is_head_approved(project.id, pr.number, pr.head_sha)
    else:
        assert refusals == len(COMMAND_LINES) + len(BUTTONS)
        assert [v.id for v in validations] == [validated.id]  # nothing ran
        assert fake_github.merges == [] and fake_github.calls_to("PUT", MERGE_PATH) == []
        assert await app.store.pull_requests.auto_merge(project.id, pr.number) is None
        assert not await app.store.validations.is_head_approved(project.id, pr.number, pr.head_sha)
        assert fake_github.reactions == []


async def test_the_permission_is_looked_up_once_a_minute_per_user(app, quiet, pr, fake_github) -> None:
    await record_project(app.store, pr)
    for _ in range(3):
        await comment(app, pr, "/help", user="wes")
    await comment(app, pr, "/help", user="rea")
    looked_up = [call.path.rsplit("/", 2)[-2] for call in fake_github.calls_to("GET", PERMISSION_PATH)]
    assert looked_up == ["wes", "rea"]


# ---- what is not a command ---------------------------------------------------------------------

async def test_commands_in_code_and_quotes_are_ignored(app, pr, fake_github) -> None:
    body = ("To merge, a maintainer writes\n```\n/merge\n```\nor\n~~~\n/validate\n~~~\n\n> /merge squash\n\n"
            "    /cancel\n<!-- /ok-to-test -->\nThanks! `/merge` later.")
    await seed_validation(app.store, pr)
    taken = await comment(app, pr, body, user="ada")
    assert reactions(fake_github, taken["id"]) == [] and replies(fake_github, pr) == []
    assert fake_github.calls_to("GET", PERMISSION_PATH) == [] and fake_github.merges == []


async def test_bots_and_the_apps_own_comments_are_ignored(app, pr, fake_github) -> None:
    await seed_validation(app.store, pr)
    fake_github.set_permission(pr.full_name, "dependabot[bot]", "write")
    await comment(app, pr, "/merge", user="dependabot[bot]", user_type="Bot")
    await comment(app, pr, "/merge", user="codegenapp-test[bot]", user_type="Bot", via_app_id=APP_ID)
    await comment(app, pr, "/merge", user="ada", via_app_id=APP_ID)  # written through the app, e.g. the dashboard
    assert fake_github.reactions == [] and replies(fake_github, pr) == [] and fake_github.merges == []
    assert fake_github.calls_to("GET", PERMISSION_PATH) == []


async def test_unknown_words_and_comments_on_issues_are_ignored(app, pr, fake_github) -> None:
    await seed_validation(app.store, pr)
    await comment(app, pr, "/lgtm\n/assign @ada", user="ada")
    issue_comment = pr.comment_payload("/merge", user="ada")
    del issue_comment["issue"]["pull_request"]  # a plain issue
    await app.deliver("issue_comment", issue_comment)
    assert fake_github.reactions == [] and replies(fake_github, pr) == [] and fake_github.merges == []


async def test_bad_arguments_get_the_usage(app, pr, fake_github) -> None:
    await seed_validation(app.store, pr)
    taken = await comment(app, pr, "/merge foo\n/auto-merge maybe", user="wes")
    assert reactions(fake_github, taken["id"]) == ["eyes"]
    [reply] = replies(fake_github, pr)
    assert "Usage: `/merge [merge|squash|rebase]`" in reply and "Usage: `/auto-merge on|off`" in reply
    assert fake_github.merges == []


async def test_help_and_agent(app, pr, fake_github) -> None:
    project = await record_project(app.store, pr)
    taken = await comment(app, pr, "/help\n/agent make the tests faster", user="max")
    assert reactions(fake_github, taken["id"]) == ["eyes"]  # no 👍: the agent did not start
    [reply] = replies(fake_github, pr)
    assert reply.startswith("@max") and "`/merge [merge|squash|rebase]`" in reply
    assert "set its agent backend" in reply  # no backend for this project: nothing started
    [agent] = [e for e in await app.store.audit.list(project_id=project.id) if e.action == "command.agent"]
    assert agent.actor == "max" and agent.details["args"] == ["make the tests faster"]


# ---- /merge ------------------------------------------------------------------------------------

async def test_merge_before_and_after_the_validation_succeeded(app, pr, fake_github) -> None:
    project = await record_project(app.store, pr)
    early = await comment(app, pr, "/merge", user="wes")
    assert "has not been validated" in replies(fake_github, pr)[-1]
    assert reactions(fake_github, early["id"]) == ["eyes"]

    running = await seed_validation(app.store, pr, conclusion=None)
    await comment(app, pr, "/merge", user="wes")
    assert f"the validation of {pr.head_sha[:7]} is still running" in replies(fake_github, pr)[-1]
    assert fake_github.merges == [] and fake_github.calls_to("PUT", MERGE_PATH) == []

    assert await app.store.validations.start(running.id)
    assert await app.store.validations.complete(running.id, conclusion="success", title="ok", results={})
    said = len(replies(fake_github, pr))
    merged = await comment(app, pr, "/merge", user="wes")
    [merge] = fake_github.merges
    assert (merge["head_sha"], merge["merge_method"], merge["number"]) == (pr.head_sha, "merge", pr.number)
    assert fake_github.calls_to("PUT", MERGE_PATH)[0].json == {"sha": pr.head_sha, "merge_method": "merge"}
    assert reactions(fake_github, merged["id"]) == ["eyes", "+1"] and len(replies(fake_github, pr)) == said
    actions = await audit_actions(app, project)
    assert actions.count("merge.refused") == 2 and actions.count("merge.merged") == 1
    [record] = await app.store.pull_requests.merges(project.id, pr.number)
    assert (record.status, record.requested_by, record.head_sha) == ("merged", "wes", pr.head_sha)


async def test_a_failed_validation_is_not_merged(app, pr, fake_github) -> None:
    await seed_validation(app.store, pr, conclusion="failure")
    await comment(app, pr, "/merge", user="wes")
    assert "did not pass (Failed: seeded)" in replies(fake_github, pr)[-1] and fake_github.merges == []


async def test_the_merge_method_comes_from_the_command_then_the_config(app, fake_github) -> None:
    squash = with_users(fake_github, open_pull_request(fake_github, config="auto_merge: {method: squash}\n"))
    await seed_validation(app.store, squash)
    await comment(app, squash, "/merge", user="wes")
    rebase = with_users(fake_github, open_pull_request(fake_github, config="auto_merge: {method: squash}\n"))
    await seed_validation(app.store, rebase)
    await comment(app, rebase, "/merge rebase", user="wes")
    assert [(m["number"], m["merge_method"]) for m in fake_github.merges] == [(squash.number, "squash"),
                                                                             (rebase.number, "rebase")]


async def test_a_head_pushed_after_the_validation_is_not_merged(app, pr, fake_github) -> None:
    validated = pr.head_sha
    await seed_validation(app.store, pr)
    pr.push({"app.py": "print('unvalidated')\n"})
    await comment(app, pr, "/merge", user="wes")
    assert f"the current head {pr.head_sha[:7]} has not been validated" in replies(fake_github, pr)[-1]
    assert validated != pr.head_sha and fake_github.calls_to("PUT", MERGE_PATH) == []


async def test_a_head_that_moves_during_the_merge_is_not_merged_and_not_retried(app, pr, fake_github) -> None:
    project = await record_project(app.store, pr)
    await seed_validation(app.store, pr)
    # GitHub answers 409 when the head is no longer the `sha` sent: a push landed between read and merge
    fake_github.fail_next("PUT", MERGE_PATH, status=409,
                          body={"message": "Head branch was modified. Review and try the merge again."})
    await comment(app, pr, "/merge", user="wes")
    reply = replies(fake_github, pr)[-1]
    assert f"the head moved after {pr.head_sha[:7]} was validated" in reply and "Head branch was modified" in reply
    assert fake_github.merges == [] and len(fake_github.calls_to("PUT", MERGE_PATH)) == 1
    [record] = await app.store.pull_requests.merges(project.id, pr.number)
    assert record.status == "failed" and record.error.startswith("409")
    assert "merge.failed" in await audit_actions(app, project)
    # the next /merge is a new attempt (the failure did not lock the head out)
    await comment(app, pr, "/merge", user="wes")
    assert [m["head_sha"] for m in fake_github.merges] == [pr.head_sha]


async def test_a_blocked_merge_says_why(app, pr, fake_github) -> None:
    await seed_validation(app.store, pr)
    fake_github.fail_next("PUT", MERGE_PATH, status=405,
                          body={"message": "At least 1 approving review is required by reviewers with write access."})
    await comment(app, pr, "/merge", user="wes")
    reply = replies(fake_github, pr)[-1]
    assert "cannot be merged into main" in reply and "approving review is required" in reply
    assert len(fake_github.calls_to("PUT", MERGE_PATH)) == 1


async def test_repeated_merge_merges_once(app, pr, fake_github) -> None:
    project = await record_project(app.store, pr)
    await seed_validation(app.store, pr)
    first, second = pr.comment_payload("/merge", user="wes"), pr.comment_payload("/merge", user="max")
    await asyncio.gather(app.deliver("issue_comment", first), app.deliver("issue_comment", second))
    assert len(fake_github.merges) == 1 and len(fake_github.calls_to("PUT", MERGE_PATH)) == 1
    outcomes = sorted([reactions(fake_github, first["comment"]["id"]), reactions(fake_github, second["comment"]["id"])])
    assert outcomes == [["eyes"], ["eyes", "+1"]]
    await comment(app, pr, "/merge", user="ada")
    assert len(fake_github.merges) == 1
    assert all("already merged" in body for body in replies(fake_github, pr))
    actions = await audit_actions(app, project)
    assert actions.count("merge.merged") == 1 and actions.count("merge.refused") == 2


async def test_required_checks_of_the_base_branch(app, pr, fake_github) -> None:
    fake_github.set_branch_protection(pr.full_name, "main", {"required_status_checks": {
        "strict": False, "contexts": ["ci/lint", "CodegenApp"],
        "checks": [{"context": "ci/lint", "app_id": None}, {"context": "CodegenApp", "app_id": APP_ID}]}})
    await seed_validation(app.store, pr)
    await comment(app, pr, "/merge", user="wes")
    assert "required check `ci/lint` has not reported on this head" in replies(fake_github, pr)[-1]
    assert "CodegenApp" not in replies(fake_github, pr)[-1]  # the app's own check: the stored validation says
    fake_github.statuses.append({"id": 1, "context": "ci/lint", "state": "pending", "sha": pr.head_sha,
                                 "repository": pr.full_name, "updated_at": "2026-01-01T00:00:00Z"})
    await comment(app, pr, "/merge", user="wes")
    assert "required check `ci/lint` is still pending" in replies(fake_github, pr)[-1]
    fake_github.statuses.append({"id": 2, "context": "ci/lint", "state": "success", "sha": pr.head_sha,
                                 "repository": pr.full_name, "updated_at": "2026-01-01T00:01:00Z"})
    await comment(app, pr, "/merge", user="wes")
    assert [m["head_sha"] for m in fake_github.merges] == [pr.head_sha]


async def test_unreadable_commit_statuses_leave_a_required_status_missing(app, pr, fake_github) -> None:
    fake_github.set_branch_protection(pr.full_name, "main", {"required_status_checks": {
        "strict": False, "contexts": ["ci/lint"]}})
    fake_github.fail_next("GET", "/repos/*/*/commits/*/status", status=403,
                          body={"message": "Resource not accessible by integration"})
    await seed_validation(app.store, pr)
    await comment(app, pr, "/merge", user="wes")
    assert "required check `ci/lint` has not reported" in replies(fake_github, pr)[-1] and fake_github.merges == []


async def test_an_unreadable_protection_requires_nothing(app, pr, fake_github) -> None:
    fake_github.set_branch_protection(pr.full_name, "main", {"required_status_checks": {
        "strict": False, "contexts": ["ci/lint"]}})
    fake_github.fail_next("GET", "/repos/*/*/branches/main/protection", status=403,
                          body={"message": "Resource not accessible by integration"})
    await seed_validation(app.store, pr)
    await comment(app, pr, "/merge", user="wes")
    assert len(fake_github.merges) == 1
    assert fake_github.calls_to("GET", "/repos/*/*/branches/main")  # its summary was read instead


async def test_the_head_branch_is_deleted_after_the_merge_when_configured(app, fake_github) -> None:
    config = "delete_branch_after_merge: true\n"
    own = with_users(fake_github, open_pull_request(fake_github, config=config))
    await seed_validation(app.store, own)
    await comment(app, own, "/merge", user="wes")
    assert fake_github.deleted_refs == [{"repository": own.full_name, "ref": "refs/heads/feature"}]
    fork = with_users(fake_github, open_pull_request(fake_github, config=config, fork_owner="outsider",
                                                     author="outsider"))
    await seed_validation(app.store, fork)
    await comment(app, fork, "/merge", user="wes")
    assert len(fake_github.merges) == 2 and len(fake_github.deleted_refs) == 1  # a fork's branch is not ours


async def test_the_branch_stays_by_default(app, pr, fake_github) -> None:
    await seed_validation(app.store, pr)
    await comment(app, pr, "/merge", user="wes")
    assert len(fake_github.merges) == 1 and fake_github.deleted_refs == []


# ---- /auto-merge, /cancel, /validate -----------------------------------------------------------

async def test_auto_merge_switch(app, pr, fake_github) -> None:
    project = await record_project(app.store, pr)
    taken = await comment(app, pr, "/auto-merge off", user="wes")
    assert reactions(fake_github, taken["id"]) == ["eyes", "+1"]
    assert await app.store.pull_requests.auto_merge(project.id, pr.number) is False
    await comment(app, pr, "/auto-merge on", user="wes")  # not validated yet: nothing to merge now
    assert await app.store.pull_requests.auto_merge(project.id, pr.number) is True
    assert fake_github.merges == [] and replies(fake_github, pr) == []


async def test_auto_merge_on_merges_an_already_validated_head(app, pr, fake_github) -> None:
    await seed_validation(app.store, pr)
    taken = await comment(app, pr, "/auto-merge on", user="max")
    assert [m["head_sha"] for m in fake_github.merges] == [pr.head_sha]
    assert reactions(fake_github, taken["id"]) == ["eyes", "+1"]


async def test_validate_and_cancel(app, quiet, pr, fake_github) -> None:
    project = await record_project(app.store, pr)
    nothing = await comment(app, pr, "/cancel", user="wes")
    assert "Nothing to cancel" in replies(fake_github, pr)[-1] and reactions(fake_github, nothing["id"]) == ["eyes"]

    with app.services.bus.subscribe() as events:
        taken = await comment(app, pr, "/retest", user="wes")
        started = await wait_for(events, "validation.started", head_sha=pr.head_sha)
    assert reactions(fake_github, taken["id"]) == ["eyes", "+1"]
    state = await app.store.validations.get(started.data["validation_id"])
    assert (state.status, state.trigger, state.triggered_by) == ("queued", "command.validate", "wes")

    cancelled = await comment(app, pr, "/cancel", user="wes")
    assert reactions(fake_github, cancelled["id"]) == ["eyes", "+1"]
    state = await app.store.validations.get(state.id)
    assert (state.status, state.conclusion, state.title) == ("completed", "cancelled", "Cancelled: cancelled by @wes")
    run = fake_github.check_runs[state.check_run_id]
    assert (run["status"], run["conclusion"]) == ("completed", "cancelled")
    assert [a["identifier"] for a in run["actions"]] == ["rerun"]
    assert "validation.cancelled" in await audit_actions(app, project)


async def test_validate_on_a_closed_pr_says_so(app, quiet, fake_github) -> None:
    closed = with_users(fake_github, open_pull_request(fake_github, config=None))
    fake_github.pulls[(closed.full_name, closed.number)]["state"] = "closed"
    await record_project(app.store, closed)
    await comment(app, closed, "/validate", user="wes")
    assert "the PR is closed" in replies(fake_github, closed)[-1]


# ---- buttons -----------------------------------------------------------------------------------

async def test_merge_button(app, pr, fake_github) -> None:
    validated = await seed_validation(app.store, pr)
    await click(app, pr, "merge", user="ada", external_id=validated.id)
    assert [m["head_sha"] for m in fake_github.merges] == [pr.head_sha] and replies(fake_github, pr) == []
    await click(app, pr, "merge", user="ada", external_id=validated.id)  # clicked again
    assert len(fake_github.merges) == 1 and "already merged" in replies(fake_github, pr)[-1]


async def test_merge_button_of_an_older_head(app, pr, fake_github) -> None:
    old = await seed_validation(app.store, pr)
    old_head = pr.head_sha
    pr.push({"app.py": "print('newer')\n"})
    await click(app, pr, "merge", user="ada", external_id=old.id, head_sha=old_head)
    assert f"the PR's head is now {pr.head_sha[:7]}, not {old_head[:7]}" in replies(fake_github, pr)[-1]
    assert fake_github.calls_to("PUT", MERGE_PATH) == []


async def test_fix_button_without_an_agent_backend(app, pr, fake_github) -> None:
    failed = await seed_validation(app.store, pr, conclusion="failure")
    await click(app, pr, "fix", user="wes", external_id=failed.id, conclusion="failure")
    [reply] = replies(fake_github, pr)
    assert reply.startswith("@wes ") and "set its agent backend" in reply


async def test_rerun_button(app, quiet, pr, fake_github) -> None:
    validated = await seed_validation(app.store, pr, conclusion="failure")
    with app.services.bus.subscribe() as events:
        await click(app, pr, "rerun", user="wes", external_id=validated.id)
        started = await wait_for(events, "validation.started", head_sha=pr.head_sha)
    rerun = await app.store.validations.get(started.data["validation_id"])
    assert (rerun.trigger, rerun.triggered_by) == ("button.rerun", "wes")
    old_head = pr.head_sha
    pr.push({"app.py": "print('newer')\n"})
    await click(app, pr, "rerun", user="wes", external_id=validated.id, head_sha=old_head)
    assert f"Not re-running: {old_head[:7]} is no longer the head" in replies(fake_github, pr)[-1]


async def test_buttons_of_other_apps_are_ignored(app, pr, fake_github) -> None:
    validated = await seed_validation(app.store, pr)
    await click(app, pr, "merge", user="ada", external_id=validated.id, app_id=999)
    assert fake_github.merges == [] and replies(fake_github, pr) == []


async def test_buttons_on_a_fork_pr_find_the_pr_from_the_stored_validation(app, fake_github) -> None:
    fork = with_users(fake_github, open_pull_request(fake_github, config=None, fork_owner="outsider",
                                                     author="outsider"))
    validated = await seed_validation(app.store, fork)
    check_run = fork.check_run(external_id=validated.id)
    assert check_run["pull_requests"] == []  # GitHub leaves it empty for forks
    await app.deliver("check_run", fork.requested_action_payload(check_run, "merge", user="max"))
    assert [m["number"] for m in fake_github.merges] == [fork.number]


# ---- with real validations ---------------------------------------------------------------------

PASSING = "validate:\n  - test -f app.py\n"


def buttons(fake, state) -> list[str]:
    return [a["identifier"] for a in fake.check_runs[state.check_run_id]["actions"]]


@needs_bwrap
async def test_auto_merge_from_the_repository_config(app, fake_github) -> None:
    scenario = with_users(fake_github, open_pull_request(fake_github, config=PASSING + "auto_merge: true\n"))
    state = await validate(app, scenario, until_job_finished=True)
    assert state.conclusion == "success"
    [merge] = fake_github.merges
    assert (merge["head_sha"], merge["merge_method"]) == (state.head_sha, "merge")
    assert buttons(fake_github, state) == ["rerun"]  # merged right away: no Merge button
    project = await record_project(app.store, scenario)
    [merged] = [e for e in await app.store.audit.list(project_id=project.id) if e.action == "merge.merged"]
    assert merged.details["trigger"] == "auto-merge" and merged.actor is None


@needs_bwrap
async def test_auto_merge_off_on_the_pr_wins_over_the_config(app, fake_github) -> None:
    scenario = with_users(fake_github, open_pull_request(fake_github, config=PASSING + "auto_merge: true\n"))
    await record_project(app.store, scenario)
    await comment(app, scenario, "/auto-merge off", user="wes")
    state = await validate(app, scenario, until_job_finished=True)
    assert state.conclusion == "success" and fake_github.merges == []
    assert buttons(fake_github, state) == ["rerun", "merge"]  # a maintainer merges with the button
    await app.deliver("check_run", scenario.requested_action_payload(
        fake_github.check_runs[state.check_run_id], "merge", user="wes"))
    assert [m["head_sha"] for m in fake_github.merges] == [state.head_sha]


@needs_bwrap
async def test_auto_merge_on_from_a_comment_merges_after_the_validation(app, fake_github) -> None:
    scenario = with_users(fake_github, open_pull_request(fake_github, config=PASSING))
    await record_project(app.store, scenario)
    await comment(app, scenario, "/auto-merge on", user="wes")
    state = await validate(app, scenario, until_job_finished=True)
    assert [m["head_sha"] for m in fake_github.merges] == [state.head_sha]


@needs_bwrap
async def test_auto_merge_refusal_is_explained_on_the_pr(app, fake_github) -> None:
    scenario = with_users(fake_github, open_pull_request(fake_github, config=PASSING + "auto_merge: true\n"))
    fake_github.set_branch_protection(scenario.full_name, "main", {"required_status_checks": {
        "strict": False, "contexts": ["ci/build"]}})
    state = await validate(app, scenario, until_job_finished=True)
    assert state.conclusion == "success" and fake_github.merges == []
    [said] = [body for body in replies(fake_github, scenario) if body.startswith("Auto-merge")]
    assert "required check `ci/build` has not reported" in said and "`/merge`" in said


@needs_bwrap
async def test_a_failed_validation_has_only_the_rerun_button(app, fake_github) -> None:
    scenario = with_users(fake_github, open_pull_request(fake_github, config="validate:\n  - 'false'\n"
                                                                                "auto_merge: true\n"))
    state = await validate(app, scenario, until_job_finished=True)
    assert state.conclusion == "failure" and fake_github.merges == []
    assert buttons(fake_github, state) == ["rerun"]  # no agent backend: no "Fix with agent"
    assert not [body for body in replies(fake_github, scenario) if body.startswith("Auto-merge")]


@needs_bwrap
async def test_ok_to_test_lets_one_head_of_a_fork_pr_run(app, fake_github) -> None:
    scenario = with_users(fake_github, open_pull_request(fake_github, config=PASSING, fork_owner="stranger",
                                                         author="stranger"))
    fake_github.set_permission(scenario.full_name, "stranger", "read")
    waiting = await validate(app, scenario, until_job_finished=True)
    assert waiting.status == "waiting"
    assert buttons(fake_github, waiting) == ["rerun"]

    await comment(app, scenario, "/ok-to-test", user="stranger")  # the author cannot approve themself
    assert "you need write access" in replies(fake_github, scenario)[-1]

    with app.services.bus.subscribe() as events:
        taken = await comment(app, scenario, "/ok-to-test", user="max")
        done = await wait_for(events, "validation.completed", timeout=60, head_sha=scenario.head_sha)
    assert reactions(fake_github, taken["id"]) == ["eyes", "+1"]
    state = await app.store.validations.get(done.data["validation_id"])
    assert (state.conclusion, state.trigger) == ("success", "command.ok-to-test")
    assert "without the project's secrets" in fake_github.check_runs[state.check_run_id]["output"]["summary"]

    scenario.push({"app.py": "print('changed again')\n"})
    again = await validate(app, scenario, "synchronize", until_job_finished=True)
    assert again.status == "waiting"  # the approval was for the previous head only
