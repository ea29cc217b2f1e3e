"""What an agent run says on its PR, end to end with the local agent backend (the real sandbox, the fake
GitHub over HTTP): on the PR a `/agent` command was given on, the plan (then who confirmed it) and the
outcome with a link to the run's page; on a PR the agent opened, the context (goal, who asked, plan)
and the outcome. One comment of each kind, edited in place, each found again by its own marker."""

from __future__ import annotations

import logging

from bot.events import wait_for
from bot.github.comments import marker
from tests.agent_support import FAST, WebhookRelay, make_repository, record_project, wait_run
from tests.pull_requests import open_pull_request
from tests.sandbox_support import needs_bwrap

pytestmark = needs_bwrap

CONFIG = "validate:\n  - name: greeting\n    run: grep -qx 'hello world' greeting.txt\n"
GOAL = "Greet the world in greeting.txt"
AGENT = '''\
import os, pathlib
if os.environ["CODEGENAPP_MODE"] == "plan":
    pathlib.Path(os.environ["CODEGENAPP_PLAN_FILE"]).write_text("1. Write *hello world* to greeting.txt.\\n")
else:
    pathlib.Path("greeting.txt").write_text("hello world\\n")
'''
COMMAND = "/usr/bin/python3 agent.py"


def app_comments(fake, number: int) -> list[dict]:  # type: ignore[type-arg]
    """The app's comments on PR `number`, oldest first."""
    return [c for c in fake.comments.values() if c["issue_url"].endswith(f"/issues/{number}")
            and c.get("performed_via_github_app")]


def marked(fake, number: int, kind: str, run_id: str) -> dict:  # type: ignore[type-arg]
    [comment] = [c for c in app_comments(fake, number) if c["body"].startswith(marker(kind, run_id))]
    return comment


async def test_a_run_started_on_a_pr_shows_its_plan_the_decision_and_the_outcome(bot, fake_github, caplog) -> None:
    scenario = open_pull_request(fake_github, config=CONFIG, base_files={"agent.py": AGENT, "greeting.txt": "hi\n"},
                                 head_files={"greeting.txt": "hello\n"})
    bot.services.agent_runs.timing = FAST
    project = await record_project(bot, fake_github, agent_backend="local", agent_command=COMMAND)
    relay = WebhookRelay(fake_github, bot).start()
    agents = bot.services.agent_runs
    with bot.services.bus.subscribe() as events, caplog.at_level(logging.INFO, logger="pipeline.agents.service"):
        started, _ = await agents.agent_command(project, scenario.number, GOAL, actor="dev-alice")
        assert started
        [run] = await bot.store.agent_runs.for_project(project.id)
        await wait_run(events, run.id, "awaiting_confirmation", timeout=60)
        plan = marked(fake_github, scenario.number, "agent-plan", run.id)
        assert "### Plan of agent run: waiting for confirmation" in plan["body"]
        assert f"**Goal:** {GOAL} · asked by @dev-alice via /agent" in plan["body"]
        assert "1. Write *hello world* to greeting.txt." in plan["body"] and "`/plan confirm`" in plan["body"]

        confirmed, _ = await agents.plan_command(project, scenario.number, "confirm", actor="carol")
        assert confirmed
        decided = marked(fake_github, scenario.number, "agent-plan", run.id)
        assert decided["id"] == plan["id"]  # the same comment, edited
        assert "### ✓ Plan confirmed by @carol" in decided["body"] and "/plan confirm" not in decided["body"]
        done = await wait_for(events, "agent.run.completed", run_id=run.id, timeout=90)
    assert done.data["status"] == "completed", done.data
    outcome = marked(fake_github, scenario.number, "agent-outcome", run.id)
    assert "### ✓ Agent run done" in outcome["body"]
    assert f"/projects/{scenario.full_name}/runs/{run.id})" in outcome["body"]
    assert "Last validation: passed." in outcome["body"]
    kinds = [c["body"].split(" ", 2)[1].split(":")[1] for c in app_comments(fake_github, scenario.number)
             if c["body"].startswith("<!-- codegenapp:agent-")]
    assert sorted(kinds) == ["agent-outcome", "agent-plan"]  # no context comment: the agent did not open this PR
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"agent run {run.id}")]
    assert line == f"agent run {run.id} on {scenario.full_name}: Done ({done.data['reason']}), PR #{scenario.number}"
    await relay.stop()


async def test_a_pr_the_agent_opened_gets_the_context_and_the_outcome(bot, fake_github) -> None:
    make_repository(fake_github, config=CONFIG, files={"agent.py": AGENT})
    bot.services.agent_runs.timing = FAST
    project = await record_project(bot, fake_github, agent_backend="local", agent_command=COMMAND)
    relay = WebhookRelay(fake_github, bot).start()
    agents = bot.services.agent_runs
    with bot.services.bus.subscribe() as events:
        run = await agents.start(project, GOAL + "\n\nKeep it short.", source="dashboard", requested_by="dev-alice")
        await wait_run(events, run.id, "awaiting_confirmation", timeout=60)
        await agents.confirm(run.id, by="carol")
        created = await wait_for(events, "pr.created", run_id=run.id, timeout=60)
        done = await wait_for(events, "agent.run.completed", run_id=run.id, timeout=90)
    assert done.data["status"] == "completed", done.data
    number = created.data["pr_number"]
    context = marked(fake_github, number, "agent-context", run.id)
    body = context["body"]
    assert "### Opened by a CodegenApp agent run" in body
    assert f"**Goal:** {GOAL} · asked by @dev-alice via the dashboard" in body
    assert "<summary>The plan (confirmed by @carol)</summary>" in body and "*hello world*" in body
    assert "Keep it short." in body  # the goal in full, folded
    assert f"/projects/{project.name}/runs/{run.id})" in body
    outcome = marked(fake_github, number, "agent-outcome", run.id)
    assert "### ✓ Agent run done" in outcome["body"]
    assert not [c for c in app_comments(fake_github, number) if c["body"].startswith(marker("agent-plan", run.id))]
    await relay.stop()
