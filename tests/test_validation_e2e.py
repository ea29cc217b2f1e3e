"""From a signed pull_request event to the completed check run and the sticky comment, end to end:
real git over smart HTTP, the real sandbox, the fake GitHub over HTTP."""

import json
import subprocess
import uuid

import pytest

from bot.events import wait_for
from pipeline.report.comment import COMMENT_MARKER
from tests.pull_requests import (check_run, comments_on, open_pull_request, record_project, seed_validation,
                                 validate)
from tests.sandbox_support import needs_bwrap

pytestmark = needs_bwrap

PASSING = """\
validate:
  - test -f app.py
  - name: greeting
    run: grep -q changed app.py
"""


async def test_a_passing_pr_gets_a_green_check_run_and_one_comment(bot, fake_github) -> None:
    scenario = open_pull_request(fake_github, config=PASSING)
    state = await validate(bot, scenario)
    run = check_run(fake_github, state)
    assert (run["status"], run["conclusion"]) == ("completed", "success")
    assert run["head_sha"] == scenario.head_sha
    assert run["details_url"].endswith(f"/validations/{state.id}")
    assert "passed" in run["output"]["title"].lower()
    assert "greeting" in run["output"]["summary"]
    [comment] = comments_on(fake_github, scenario)
    assert scenario.head_sha[:7] in comment["body"]
    async with bot.webhooks.session.get(run["details_url"].replace(bot.services.settings.public_url, bot.url)) as page:
        html = await page.text()
    assert page.status == 200 and "greeting" in html and run["output"]["title"] in html

    # a re-run edits the same comment in place
    scenario.push({"app.py": "print('changed again')\n"})
    await validate(bot, scenario, "synchronize")
    assert len(comments_on(fake_github, scenario)) == 1


async def test_a_persons_comment_carrying_the_marker_is_not_taken_for_the_apps(bot, fake_github) -> None:
    scenario = open_pull_request(fake_github, config=PASSING)
    theirs = fake_github.add_comment(scenario.full_name, scenario.number, f"{COMMENT_MARKER}\nquoting the app")
    state = await validate(bot, scenario)
    assert state.conclusion == "success"
    [ours] = [c for c in comments_on(fake_github, scenario) if c["id"] != theirs["id"]]
    assert "Validation passed" in ours["body"]
    assert fake_github.comments[theirs["id"]]["body"] == f"{COMMENT_MARKER}\nquoting the app"


async def test_a_failing_step_is_named_with_its_output_tail(bot, fake_github) -> None:
    config = ("validate:\n  - name: unit tests\n    run: \"echo 'AssertionError: expected 2, got 3' && exit 1\"\n"
              "  - test -f app.py\n")
    scenario = open_pull_request(fake_github, config=config)
    state = await validate(bot, scenario)
    run = check_run(fake_github, state)
    assert run["conclusion"] == "failure"
    assert "unit tests" in run["output"]["title"]
    assert "AssertionError: expected 2, got 3" in run["output"]["text"]
    assert state.conclusion == "failure"


async def test_secrets_reach_commands_and_are_masked_everywhere(bot, fake_github) -> None:
    scenario = open_pull_request(fake_github, config="validate:\n  - echo \"token=$API_TOKEN\"; exit 1\n")
    project = await bot.store.projects.get_project_by_name(scenario.full_name) or await _project(bot, scenario)
    await bot.store.projects.set_secret(project.id, "API_TOKEN", "tok-very-secret-123")
    state = await validate(bot, scenario)
    run = check_run(fake_github, state)
    assert "token=***" in run["output"]["text"]
    async with bot.webhooks.session.get(f"{bot.url}/validations/{state.id}") as page:
        assert "tok-very-secret-123" not in await page.text()
    everything = str(run) + str(list(fake_github.comments.values())) + str(state.test_results)
    assert "tok-very-secret-123" not in everything


async def _project(bot, scenario):
    # make sure the project exists before setting a secret
    return await record_project(bot.store, scenario)


async def test_config_is_read_at_the_base_not_the_head(bot, fake_github) -> None:
    scenario = open_pull_request(fake_github, config="validate:\n  - exit 1\n",
                                 head_files={".github/codegenapp.yml": "validate:\n  - 'true'\n"})
    state = await validate(bot, scenario)
    assert state.conclusion == "failure"  # the PR's own config change does not count


async def test_an_invalid_config_fails_naming_key_and_line(bot, fake_github) -> None:
    scenario = open_pull_request(fake_github, config="validate:\n  - 'true'\ntimeout_minutes: ten\n")
    state = await validate(bot, scenario)
    run = check_run(fake_github, state)
    assert run["conclusion"] == "failure"
    assert "timeout_minutes" in run["output"]["summary"] and "line 3" in run["output"]["summary"]


async def test_a_new_head_cancels_the_running_validation(bot, fake_github) -> None:
    # the first head sleeps (until it is cancelled); the second passes at once
    marker = f"sleep 60.{uuid.uuid4().int % 10**6:06d}"  # unique, so other runs on the machine don't count
    scenario = open_pull_request(fake_github, config=f"validate:\n  - grep -q v2 app.py || {marker}\n")
    first_head = scenario.head_sha
    with bot.services.bus.subscribe() as events:
        await bot.webhooks.send("pull_request", scenario.payload("opened"))
        started = await wait_for(events, "validation.started", head_sha=first_head)
        first = await bot.store.validations.get(started.data["validation_id"])
        await _wait_until_running(fake_github, first.check_run_id)
        scenario.push({"app.py": "print('v2')\n"})
        await bot.webhooks.send("pull_request", scenario.payload("synchronize"))
        await wait_for(events, "validation.completed", timeout=60, head_sha=scenario.head_sha)
    old = await bot.store.validations.get(first.id)
    assert (old.status, old.conclusion, old.superseded_by) == ("superseded", "cancelled", scenario.head_sha)
    run = fake_github.check_runs[old.check_run_id]
    assert run["conclusion"] == "cancelled" and scenario.head_sha[:7] in run["output"]["title"]
    leftover = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True)
    assert leftover.stdout == "", "the superseded run's sandbox was not killed"


async def _wait_until_running(fake_github, check_run_id: int) -> None:
    """The step is running once the check run shows its progress (the first PATCH to it)."""
    await fake_github.wait_for_call("PATCH", f"/repos/*/*/check-runs/{check_run_id}", timeout=30)


async def test_a_fork_pr_from_a_reader_waits_for_ok_to_test(bot, fake_github) -> None:
    scenario = open_pull_request(fake_github, config=PASSING, fork_owner="stranger", author="stranger")
    fake_github.set_permission(scenario.full_name, "stranger", "read")
    state = await validate(bot, scenario)
    run = check_run(fake_github, state)
    assert run["conclusion"] == "action_required"
    assert "/ok-to-test" in run["output"]["title"]
    assert state.status == "waiting"


async def test_setup_is_restored_from_a_snapshot_the_second_time(bot, fake_github) -> None:
    config = ("setup:\n  - mkdir -p .deps && echo built > .deps/lib.txt\n"
              "cache_key: [README.md]\nvalidate:\n  - test -f .deps/lib.txt\n")
    scenario = open_pull_request(fake_github, config=config)
    first = await validate(bot, scenario)
    assert first.conclusion == "success"
    assert "setup restored from snapshot" not in check_run(fake_github, first)["output"]["summary"]
    scenario.push({"app.py": "print('v3')\n"})
    second = await validate(bot, scenario, "synchronize")
    assert second.conclusion == "success"
    assert "setup restored from snapshot" in check_run(fake_github, second)["output"]["summary"]


async def test_pr_code_cannot_reach_the_apps_secrets_database_or_port(start_bot, fake_github, tmp_path,
                                                                      app_private_key, monkeypatch) -> None:
    key_file = tmp_path / "app.pem"
    key_file.write_text(app_private_key)
    monkeypatch.setenv("WEBHOOK_SECRET", "host-env-webhook-secret")  # what the host's environment holds
    bot = await start_bot(PRIVATE_KEY=None, PRIVATE_KEY_PATH=str(key_file))
    data_dir = bot.services.settings.data_dir
    port = bot.url.rsplit(":", 1)[1]
    attempts = {
        "private key": f"cat {key_file}",
        "encryption key": f"cat {data_dir}/encryption-key",
        "database": f"head -c 100 {data_dir}/codegenapp.db",
        "host environment": "cat /proc/*/environ | tr '\\000' '\\n' | grep WEBHOOK_SECRET",
        "app port": f"python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", {port}), timeout=3)'",
    }
    steps = "".join(f"  - name: {name}\n    run: {json.dumps('! (' + command + ')')}\n"
                    for name, command in attempts.items())
    scenario = open_pull_request(fake_github, config=f"validate:\n{steps}")
    state = await validate(bot, scenario)
    run = check_run(fake_github, state)
    assert run["conclusion"] == "success", run["output"]  # every attempt failed
    everything = str(run) + str(list(fake_github.comments.values())) + str(state.test_results)
    for leaked in ("BEGIN RSA PRIVATE KEY", bot.services.settings.encryption_key, "host-env-webhook-secret",
                   "SQLite format 3"):
        assert leaked not in everything


SARIF_SCRIPT = '''import json, sys
lines = int(sys.argv[1])
results = [{"ruleId": "E1", "level": "error", "message": {"text": f"problem on line {n}"},
            "locations": [{"physicalLocation": {"artifactLocation": {"uri": "file:///workspace/app.py"},
                                                "region": {"startLine": n}}}]} for n in range(1, lines + 1)]
results.append({"ruleId": "W2", "level": "warning", "message": {"text": "old code"},
                "locations": [{"physicalLocation": {"artifactLocation": {"uri": "README.md"},
                                                    "region": {"startLine": 1}}}]})
print(json.dumps({"version": "2.1.0", "runs": [{"tool": {"driver": {"name": "lint"}}, "results": results}]}))
'''


async def test_sarif_findings_become_annotations_on_changed_lines_in_batches(bot, fake_github) -> None:
    config = "validate:\n  - 'true'\nanalysis:\n  - name: lint\n    run: python3 lint.py 120\n"
    scenario = open_pull_request(fake_github, config=config, base_files={"lint.py": SARIF_SCRIPT},
                                 head_files={"app.py": "".join(f"x{n} = {n}\n" for n in range(1, 121))})
    state = await validate(bot, scenario)
    run = check_run(fake_github, state)
    annotations = run["annotations"]
    assert len(annotations) == 120  # README.md was not changed by the PR: its finding is dropped
    assert {a["path"] for a in annotations} == {"app.py"}
    assert annotations[0]["annotation_level"] == "failure" and annotations[0]["message"] == "problem on line 1"
    patches = [c.json for c in fake_github.calls_to("PATCH", f"/repos/*/*/check-runs/{state.check_run_id}")]
    assert [len(p["output"].get("annotations", [])) for p in patches if "annotations" in p.get("output", {})] \
        == [50, 50, 20]
    assert run["conclusion"] == "failure"  # errors on changed lines fail the check
    # ... and the report says so: the step failed, and which findings (not "Failed — 3 of 3 steps passed")
    assert run["output"]["title"] == "lint: 120 findings on changed lines — 2 of 3 steps passed"
    assert "✗ failed — 120 findings on changed lines" in run["output"]["summary"]
    assert "app.py:1 E1 problem on line 1" in run["output"]["text"]
    [comment] = comments_on(fake_github, scenario)
    assert "- ✗ `app.py:2` `E1` problem on line 2" in comment["body"]  # the findings as a list
    assert any(p["output"]["title"].startswith("Running") for p in patches if "output" in p)  # live progress


async def test_a_fork_pr_from_a_writer_runs_without_secrets(bot, fake_github) -> None:
    scenario = open_pull_request(fake_github, config="validate:\n  - test -z \"$API_TOKEN\"\n",
                                 fork_owner="helper", author="helper")
    fake_github.set_permission(scenario.full_name, "helper", "write")
    project = await _project(bot, scenario)
    await bot.store.projects.set_secret(project.id, "API_TOKEN", "never-for-forks")
    state = await validate(bot, scenario)
    run = check_run(fake_github, state)
    assert run["conclusion"] == "success"
    assert "without the project's secrets" in run["output"]["summary"]


async def test_the_same_head_delivered_twice_is_validated_once(bot, fake_github) -> None:
    scenario = open_pull_request(fake_github, config=PASSING)
    with bot.services.bus.subscribe() as events:
        await bot.webhooks.send("pull_request", scenario.payload("opened"))
        await bot.webhooks.send("pull_request", scenario.payload("opened"))  # a new delivery id, same head
        await wait_for(events, "validation.completed", timeout=60, head_sha=scenario.head_sha)
    project = await bot.store.projects.get_project_by_name(scenario.full_name)
    assert len(await bot.store.validations.for_project(project.id)) == 1
    assert len(fake_github.calls_to("POST", "/repos/*/*/check-runs")) == 1


async def test_a_repository_with_nothing_configured_gets_a_neutral_check_and_no_checkout(bot, fake_github) -> None:
    scenario = open_pull_request(fake_github, config=None)
    state = await validate(bot, scenario)
    run = check_run(fake_github, state)
    assert (run["conclusion"], run["output"]["title"]) == ("neutral", "Nothing to validate")
    assert ".github/codegenapp.yml" in run["output"]["summary"]
    assert not [c for c in fake_github.calls if "git-upload-pack" in c.path]  # nothing was fetched


async def test_nothing_configured_edits_the_prs_comment_it_has_and_starts_none(bot, fake_github) -> None:
    scenario = open_pull_request(fake_github, config=None)
    await validate(bot, scenario)
    assert comments_on(fake_github, scenario) == []  # none started
    project = await record_project(bot.store, scenario)
    await seed_validation(bot.store, scenario, conclusion="failure")  # an earlier result, to show as "Previous"
    ours = fake_github.add_comment(scenario.full_name, scenario.number, f"{COMMENT_MARKER}\nValidating…",
                                   user_login=f"{fake_github.app_slug}[bot]")
    await bot.store.validations.set_comment_id(project.id, scenario.number, ours["id"])
    await validate(bot, scenario, "reopened")
    [comment] = comments_on(fake_github, scenario)
    assert comment["id"] == ours["id"]
    assert "Nothing was validated" in comment["body"] and "Previous: ✗ Failed" in comment["body"]


@pytest.mark.slow  # output shows at the next progress update, a few seconds in
async def test_the_details_page_shows_the_running_step_and_its_output(bot, fake_github) -> None:
    marker = f"sleep 60.{uuid.uuid4().int % 10**6:06d}"
    config = (f"setup:\n  - 'true'\nvalidate:\n  - name: slow tests\n    run: echo 'collected 12 items <b>'; {marker}\n"
              "  - name: lint\n    run: test -f app.py\n")
    scenario = open_pull_request(fake_github, config=config)
    with bot.services.bus.subscribe() as events:
        await bot.webhooks.send("pull_request", scenario.payload("opened"))
        started = await wait_for(events, "validation.started", head_sha=scenario.head_sha)
        validation_id = started.data["validation_id"]
        await wait_for(events, "validation.progress", validation_id=validation_id, step="slow tests",
                       has_output=True, timeout=30)
        async with bot.webhooks.session.get(f"{bot.url}/validations/{validation_id}/live") as response:
            live = await response.json()
        async with bot.webhooks.session.get(f"{bot.url}/validations/{validation_id}") as response:
            page = await response.text()
        state = await bot.store.validations.get(validation_id)
        project = await bot.store.projects.get_project(state.project_id)
        await bot.services.validations.cancel(project, state, reason="test over")
    assert live["running"] and live["current"] == "slow tests"
    assert live["log"][0][1].startswith("collected 12 items <b>") and "tail" not in live  # the log, once
    assert "collected 12 items &lt;b&gt;" in page and '<span class="state">Running</span>' in page
    # every step is listed from the start: those done, the running one, those to come
    assert [(s["name"], s["state"]) for s in live["steps"]] == [
        ("checkout", "passed"), ("true", "passed"), ("slow tests", "running"), ("lint", "pending")]
    async with bot.webhooks.session.get(f"{bot.url}/validations/{validation_id}") as response:
        cancelled = await response.text()  # how far it got
    assert '<li id="step-3" class="step cancelled"' in cancelled and '<li id="step-4" class="step skipped"' in cancelled


@pytest.mark.slow  # the queue tries three times (2 s and 4 s apart) before reporting
async def test_an_internal_error_is_reported_without_the_projects_secrets(bot, fake_github) -> None:
    scenario = open_pull_request(fake_github, config=PASSING)
    project = await _project(bot, scenario)
    await bot.store.projects.set_secret(project.id, "API_TOKEN", "tok-leaky-value-42")

    async def broken_checkout(*args, **kwargs):
        raise RuntimeError("checkout blew up near tok-leaky-value-42")

    bot.services.validations.checkouts.checkout = broken_checkout
    with bot.services.bus.subscribe() as events:
        await bot.webhooks.send("pull_request", scenario.payload("opened"))
        done = await wait_for(events, "validation.completed", timeout=60, head_sha=scenario.head_sha)
    state = await bot.store.validations.get(done.data["validation_id"])
    run = check_run(fake_github, state)
    assert run["conclusion"] == "failure" and "RuntimeError: checkout blew up near ***" in run["output"]["summary"]
    assert "tok-leaky-value-42" not in str(run) + str(state.test_results)


async def test_closing_the_pr_cancels_its_running_validation(bot, fake_github) -> None:
    marker = f"sleep 60.{uuid.uuid4().int % 10**6:06d}"
    scenario = open_pull_request(fake_github, config=f"validate:\n  - {marker}\n")
    with bot.services.bus.subscribe() as events:
        await bot.webhooks.send("pull_request", scenario.payload("opened"))
        started = await wait_for(events, "validation.started", head_sha=scenario.head_sha)
        state = await bot.store.validations.get(started.data["validation_id"])
        await _wait_until_running(fake_github, state.check_run_id)
        fake_github.pulls[(scenario.full_name, scenario.number)]["state"] = "closed"
        await bot.deliver("pull_request", scenario.payload("closed"))
        await wait_for(events, "job.finished", kind="validate", timeout=30)  # its sandbox is gone by then
    ended = await bot.store.validations.get(state.id)
    assert (ended.status, ended.conclusion) == ("superseded", "cancelled")
    run = fake_github.check_runs[state.check_run_id]
    assert (run["conclusion"], run["output"]["title"]) == ("cancelled", "Cancelled: the PR was closed")
    leftover = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True)
    assert leftover.stdout == "", "the closed PR's sandbox was not killed"
