"""From a signed pull_request event to the completed check run and the sticky comment, end to end:
real git over smart HTTP, the real sandbox, the fake GitHub over HTTP."""

import shutil
import subprocess

import pytest

from bot.events import wait_for
from pipeline.report import COMMENT_MARKER
from tests.pull_requests import Scenario, open_pull_request

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap not installed: `make install`")

PASSING = """\
validate:
  - test -f app.py
  - name: greeting
    run: grep -q changed app.py
"""


async def validate(bot, scenario: Scenario, action: str = "opened", *, timeout: float = 60):
    with bot.services.bus.subscribe() as events:
        answer = await bot.webhooks.send("pull_request", scenario.payload(action))
        assert answer.status == 202
        done = await wait_for(events, "validation.completed", timeout=timeout, head_sha=scenario.head_sha)
    state = await bot.store.validations.get(done.data["validation_id"])
    return state


def check_run(fake, state):
    return fake.check_runs[state.check_run_id]


def comments_on(fake, scenario):
    return [c for c in fake.comments.values() if c["body"].startswith(COMMENT_MARKER)]


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
    # the first event records the project; make sure it exists before setting a secret
    await bot.deliver("pull_request", {**scenario.payload("labeled")})
    return await bot.store.projects.get_project_by_name(scenario.full_name)


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
    scenario = open_pull_request(fake_github, config="validate:\n  - grep -q v2 app.py || sleep 60\n")
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
    leftover = subprocess.run(["pgrep", "-f", "sleep 60"], capture_output=True, text=True)
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
