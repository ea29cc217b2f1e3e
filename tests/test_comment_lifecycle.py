"""The sticky PR comment over a run's whole life, end to end over the fake GitHub: a failed run, then a
new head whose run is held halfway (the fake GitHub holds its read of the PR's files): the comment says
"Validating `abc1234`…" with the previous result in one line, then the result. One comment throughout,
and one write more per run than the result alone."""

from __future__ import annotations

import asyncio
import logging

from bot.events import wait_for
from tests.pull_requests import comments_on, open_pull_request, validate
from tests.sandbox_support import needs_bwrap

pytestmark = needs_bwrap

CONFIG = "validate:\n  - name: unit tests\n    run: grep -q v2 app.py\n"


def comment_writes(fake) -> int:  # type: ignore[no-untyped-def]
    return len(fake.calls_to("POST", "/repos/*/*/issues/*/comments")) + \
        len(fake.calls_to("PATCH", "/repos/*/*/issues/comments/*"))


async def test_the_comment_says_validating_then_the_result_with_the_previous_one(bot, fake_github, caplog) -> None:
    scenario = open_pull_request(fake_github, config=CONFIG)
    first = await validate(bot, scenario)
    assert first.conclusion == "failure"
    [comment] = comments_on(fake_github, scenario)
    assert "### ✗ Validation failed" in comment["body"] and "`unit tests` failed" in comment["body"]
    assert "Previous:" not in comment["body"]  # nothing ran before it
    old_sha7 = scenario.head_sha[:7]

    new_head = scenario.push({"app.py": "print('v2')\n"})
    writes_before = comment_writes(fake_github)
    held = fake_github.hold_next("GET", f"/repos/{scenario.full_name}/pulls/{scenario.number}/files")
    with bot.services.bus.subscribe() as events, caplog.at_level(logging.INFO, logger="pipeline.validation.service"):
        answer = await bot.webhooks.send("pull_request", scenario.payload("synchronize"))
        assert answer.status == 202
        await asyncio.wait_for(held.arrived.wait(), 60)  # the run is under way: checked out, not reported
        [running] = comments_on(fake_github, scenario)
        assert running["id"] == comment["id"]
        body = running["body"]
        assert f"### Validating `{new_head[:7]}`…" in body and "/validations/" in body
        assert f"Previous: ✗ Failed on `{old_sha7}` — `unit tests` failed" not in body  # a title is plain text
        assert f"Previous: ✗ Failed on `{old_sha7}` — unit tests failed" in body
        assert "| ✗ |" not in body  # the old result's table is gone
        held.release()
        done = await wait_for(events, "validation.completed", timeout=60, head_sha=new_head)
    assert done.data["conclusion"] == "success"
    [final] = comments_on(fake_github, scenario)
    assert final["id"] == comment["id"]
    assert "### ✓ Validation passed" in final["body"] and f"commit `{new_head[:7]}`" in final["body"]
    assert "| ✓ | `unit tests` |" in final["body"]
    assert f"Previous: ✗ Failed on `{old_sha7}` — unit tests failed" in final["body"]
    assert comment_writes(fake_github) - writes_before == 2  # "Validating…", then the result
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("validation ")
              and new_head[:7] in r.getMessage()]
    assert line.startswith(f"validation {scenario.full_name}#{scenario.number} at {new_head[:7]}: Passed in ")
    assert line.endswith("(All 2 steps passed)")


async def test_a_cancelled_run_does_not_leave_the_comment_saying_validating(bot, fake_github) -> None:
    scenario = open_pull_request(fake_github, config=CONFIG)
    held = fake_github.hold_next("GET", f"/repos/{scenario.full_name}/pulls/{scenario.number}/files")
    with bot.services.bus.subscribe() as events:
        await bot.webhooks.send("pull_request", scenario.payload("opened"))
        started = await wait_for(events, "validation.started", timeout=30, head_sha=scenario.head_sha)
        await asyncio.wait_for(held.arrived.wait(), 60)
        assert "Validating" in comments_on(fake_github, scenario)[0]["body"]
        state = await bot.store.validations.get(started.data["validation_id"])
        project = await bot.store.projects.get_project(state.project_id)
        assert await bot.services.validations.cancel(project, state, reason="/cancel by alice", actor="alice")
        held.release()
    [comment] = comments_on(fake_github, scenario)
    assert "### Validation cancelled" in comment["body"] and "Cancelled: /cancel by alice" in comment["body"]
    assert "Validating" not in comment["body"]
