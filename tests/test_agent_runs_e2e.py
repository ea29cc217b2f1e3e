"""Agent runs end to end over real HTTP: the app, the fake GitHub (git smart HTTP included), the fake
Codegen API and the real sandbox. A webhook relay sends the pull_request events GitHub would."""

from __future__ import annotations

import subprocess
import uuid
from typing import Any

import aiohttp
import pytest
from sqlalchemy import func, select

from bot.events import wait_for
from bot.models import Job
from bot.services import SERVICES
from bot.app import create_app
from bot.github.check_runs import CHECK_NAME
from tests.agent_support import FAST, WebhookRelay, make_repository, record_project, wait_run
from tests.api_support import api_token_for
from tests.conftest import WEBHOOK_SECRET, BotUnderTest
from tests.fakes.codegen import API_KEY, ORG_ID, ScriptedAgent
from tests.pull_requests import open_pull_request
from tests.sandbox_support import needs_bwrap
from tests.webhook_sender import WebhookSender

pytestmark = needs_bwrap

CONFIG = "validate:\n  - name: greeting\n    run: grep -qx 'hello world' greeting.txt\n"
AUTO_MERGE = CONFIG + "auto_merge: true\n"
GOAL = "Greet the world in greeting.txt"
PLAN = "1. Write 'hello world' to greeting.txt.\n2. Open a PR."

LOCAL_AGENT = '''\
import json, os, pathlib, sys
mode = os.environ["CODEGENAPP_MODE"]
goal = pathlib.Path(os.environ["CODEGENAPP_GOAL_FILE"]).read_text()
context = json.loads(pathlib.Path(os.environ["CODEGENAPP_CONTEXT_FILE"]).read_text())
if mode == "plan":
    key = "set" if os.environ.get("AGENT_KEY") else "unset"
    pathlib.Path(os.environ["CODEGENAPP_PLAN_FILE"]).write_text(
        f"1. Write greeting.txt for: {context['goal']}\\n2. The model key is {key}.\\n")
    sys.exit(0)
if os.environ.get("AGENT_SLEEP"):
    import time; time.sleep(60)
attempt = int(os.environ["CODEGENAPP_ATTEMPT"])
pathlib.Path("greeting.txt").write_text("hello world\\n" if attempt else "hello\\n")
pathlib.Path("agent-log").mkdir(exist_ok=True)
pathlib.Path(f"agent-log/attempt-{attempt}.md").write_text(goal)
# hooks planted in the agent's .git must never run: this one would refuse every commit
pathlib.Path(".git/hooks").mkdir(exist_ok=True)
hook = pathlib.Path(".git/hooks/pre-commit")
hook.write_text("#!/bin/sh\\nexit 1\\n")
hook.chmod(0o755)
with open(".git/config", "a") as config:
    config.write("[core]\\n\\thooksPath = /workspace/.git/hooks\\n")
print("model key:", os.environ.get("AGENT_KEY"), "branch:", os.environ["CODEGENAPP_BRANCH"])
'''


@pytest.fixture
async def launch(fake_github, aiohttp_server, make_settings, fake_codegen):  # noqa: F811
    """Start the app (web + worker) on a DATA_DIR shared by every app of the test: (bot, server)."""
    session = aiohttp.ClientSession()

    async def launch(**env: str) -> tuple[BotUnderTest, Any]:
        values = {"GITHUB_API_URL": fake_github.api_url, "GITHUB_URL": fake_github.base_url,
                  "CODEGEN_API_URL": fake_codegen.url, "CODEGEN_API_KEY": API_KEY, "CODEGEN_ORG_ID": ORG_ID,
                  **env}
        app = create_app(make_settings(**values))
        server = await aiohttp_server(app)
        url = str(server.make_url("/")).rstrip("/")
        bot = BotUnderTest(url, app[SERVICES], WebhookSender(session, url, WEBHOOK_SECRET))
        bot.fake = fake_github  # type: ignore[attr-defined]
        assert bot.services.agent_runs is not None
        bot.services.agent_runs.timing = FAST
        return bot, server

    yield launch
    await session.close()


async def api(bot: BotUnderTest, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """Call the API as alice (an admin of acme/widgets) with her personal API token."""
    token = getattr(bot, "token", None)
    if token is None:
        token = bot.token = await api_token_for(bot.store, bot.fake, "alice")  # type: ignore[attr-defined]
    async with bot.webhooks.session.request(method, bot.url + path, json=body,
                                            headers={"Authorization": f"Bearer {token}"}) as response:
        return response.status, await response.json()


async def start_run(bot: BotUnderTest, project_id: str, goal: str = GOAL) -> dict[str, Any]:
    status, run = await api(bot, "POST", f"/api/v1/projects/{project_id}/agent-run", {"target_text": goal})
    assert status == 201, run
    assert run["status"] == "pending" and run["target_text"] == goal
    return run


def comments_on(fake, number: int) -> list[str]:
    return [c["body"] for c in fake.comments.values() if c["issue_url"].endswith(f"/issues/{number}")]


def check_conclusions(fake, head_sha: str) -> list[str | None]:
    return [run["conclusion"] for run in fake.check_runs.values()
            if run["head_sha"] == head_sha and run["name"] == CHECK_NAME]


# ---- Codegen -----------------------------------------------------------------------------------------------


async def test_codegen_goal_plan_confirm_pr_failure_fix_pass_merge(launch, fake_github, fake_codegen) -> None:
    make_repository(fake_github, config=AUTO_MERGE)
    bot, _ = await launch()
    project = await record_project(bot, fake_github, repository_rules="Keep changes small.",
                                   planning_statement="Plan in at most two steps.")
    relay = WebhookRelay(fake_github, bot).start()
    fake_codegen.script = ScriptedAgent(fake_github, plan=PLAN, change={"greeting.txt": "hello\n"},
                                        fixes=[{"greeting.txt": "hello world\n"}], on_change=relay.poke)
    with bot.services.bus.subscribe() as events:
        run = await start_run(bot, project.id)
        await wait_run(events, run["id"], "awaiting_confirmation")
        status, shown = await api(bot, "GET", f"/api/v1/runs/{run['id']}")
        assert status == 200 and shown["plan"] == PLAN and shown["plan_generated"] and shown["backend"] == "codegen"
        [planning] = fake_codegen.runs.values()
        assert planning.metadata["mode"] == "plan" and planning.metadata["codegenapp_run_id"] == run["id"]
        for words in ("PLAN only", GOAL, "Keep changes small.", "Plan in at most two steps."):
            assert words in planning.prompt

        status, confirmed = await api(bot, "POST", f"/api/v1/runs/{run['id']}/confirm")
        assert status == 200 and confirmed["status"] == "running" and confirmed["plan_decided_by"] == "alice"
        created = await wait_for(events, "pr.created", run_id=run["id"], timeout=30)
        await wait_run(events, run["id"], "fixing", timeout=60)
        done = await wait_for(events, "agent.run.completed", run_id=run["id"], timeout=60)
    assert done.data["status"] == "completed", done.data
    number = created.data["pr_number"]
    executing = fake_codegen.runs[max(fake_codegen.runs)]
    assert executing.metadata["mode"] == "execute" and "Confirmed plan" in executing.prompt and PLAN in executing.prompt
    fix_prompt = executing.prompts[1]
    assert f"pull request #{number}" in fix_prompt and "Step `greeting` (validate) failed." in fix_prompt
    assert "greeting failed" in fix_prompt  # the check run's title

    status, final = await api(bot, "GET", f"/api/v1/runs/{run['id']}")
    assert (final["status"], final["pr_number"], final["fix_attempts"], final["validation_status"]) == \
        ("completed", number, 1, "success")
    assert final["reason"] in ("the validation passed", "the pull request was merged") and final["completed_at"]
    pull = fake_github.pulls[("acme/widgets", number)]
    assert check_conclusions(fake_github, pull["head"]["sha"]) == ["success"]
    await fake_github.wait_for_call("PUT", f"/repos/acme/widgets/pulls/{number}/merge", timeout=30)  # auto-merge
    assert [(m["number"], m["head_sha"]) for m in fake_github.merges] == [(number, pull["head"]["sha"])]
    linked = await bot.store.validations.latest_for_pr(project.id, number)
    assert linked.agent_run_id == run["id"]
    actions = [event.action for event in await bot.store.audit.list(project_id=project.id)]
    for action in ("agent.run.started", "agent.plan.confirmed", "pr.created", "agent.run.updated",
                   "agent.run.completed"):
        assert action in actions
    status, listing = await api(bot, "GET", f"/api/v1/projects/{project.id}/runs")
    assert [r["id"] for r in listing["runs"]] == [run["id"]]
    await relay.stop()


async def test_a_rejected_plan_is_never_executed(launch, fake_github, fake_codegen) -> None:
    make_repository(fake_github, config=CONFIG)
    bot, _ = await launch()
    project = await record_project(bot, fake_github)
    fake_codegen.script = ScriptedAgent(fake_github, plan=PLAN)
    with bot.services.bus.subscribe() as events:
        run = await start_run(bot, project.id)
        await wait_run(events, run["id"], "awaiting_confirmation")
        status, rejected = await api(bot, "POST", f"/api/v1/runs/{run['id']}/reject")
        assert status == 200 and rejected["status"] == "cancelled" and rejected["reason"] == "plan rejected by alice"
        status, again = await api(bot, "POST", f"/api/v1/runs/{run['id']}/confirm")
        assert status == 409 and "not waiting" in again["error"]
    assert len(fake_codegen.calls_to("POST", "**/agent/run")) == 1 and not fake_github.pulls


async def test_cancel_stops_a_run_waiting_for_the_agent(launch, fake_github, fake_codegen) -> None:
    make_repository(fake_github, config=CONFIG)
    bot, _ = await launch()
    project = await record_project(bot, fake_github, auto_confirm_plans=True)
    script = fake_codegen.script = ScriptedAgent(fake_github)
    script.hold()
    with bot.services.bus.subscribe() as events:
        run = await start_run(bot, project.id)
        await wait_run(events, run["id"], "running")
        await fake_codegen.wait_for_call("GET", "**/agent/run/*")
        status, cancelled = await api(bot, "POST", f"/api/v1/runs/{run['id']}/cancel")
        assert status == 200 and cancelled["status"] == "cancelled"
        done = await wait_for(events, "agent.run.completed", run_id=run["id"])
    assert done.data["reason"] == "cancelled by alice"
    script.release()
    status, again = await api(bot, "POST", f"/api/v1/runs/{run['id']}/cancel")
    assert status == 409 and "already ended" in again["error"]
    assert (await bot.store.agent_runs.get(run["id"])).status == "cancelled"


async def test_attempts_exhausted_says_on_the_pr_that_a_human_is_needed(launch, fake_github, fake_codegen) -> None:
    make_repository(fake_github, config=CONFIG)
    bot, _ = await launch()
    project = await record_project(bot, fake_github, auto_confirm_plans=True, max_fix_attempts=1)
    relay = WebhookRelay(fake_github, bot).start()
    fake_codegen.script = ScriptedAgent(fake_github, change={"greeting.txt": "hello\n"},
                                        fixes=[{"greeting.txt": "hello again\n"}], on_change=relay.poke)
    with bot.services.bus.subscribe() as events:
        run = await start_run(bot, project.id)
        done = await wait_for(events, "agent.run.completed", run_id=run["id"], timeout=90)
    assert done.data["status"] == "failed"
    final = await bot.store.agent_runs.get(run["id"])
    assert final.fix_attempts == 1 and "still fails after 1 fix attempt(s)" in final.reason
    [said] = [body for body in comments_on(fake_github, final.pr_number) if "A human is needed" in body]
    assert run["id"] in said and "still fails" in said
    await relay.stop()


@pytest.mark.parametrize("status,where,words", [
    (402, "POST", "requires payment (402)"),
    (404, "GET", "found nothing (404)")])
async def test_codegen_client_errors_end_the_run_with_the_reason(launch, fake_github, fake_codegen, status, where,
                                                                 words) -> None:
    make_repository(fake_github, config=CONFIG)
    bot, _ = await launch()
    project = await record_project(bot, fake_github, auto_confirm_plans=True)
    fake_codegen.script = ScriptedAgent(fake_github)
    fake_codegen.fail_next(where, "/v1/organizations/*/agent/run" + ("/*" if where == "GET" else ""), status=status)
    with bot.services.bus.subscribe() as events:
        run = await start_run(bot, project.id)
        done = await wait_for(events, "agent.run.completed", run_id=run["id"])
    assert done.data["status"] == "failed" and words in done.data["reason"]
    status_code, shown = await api(bot, "GET", f"/api/v1/runs/{run['id']}")
    assert words in shown["reason"]


async def test_codegen_429_backs_off_and_the_run_goes_on(launch, fake_github, fake_codegen) -> None:
    make_repository(fake_github, config=CONFIG)
    bot, _ = await launch()
    project = await record_project(bot, fake_github, auto_confirm_plans=True)
    relay = WebhookRelay(fake_github, bot).start()
    fake_codegen.script = ScriptedAgent(fake_github, change={"greeting.txt": "hello world\n"}, on_change=relay.poke)
    fake_codegen.fail_next("GET", "**", status=429, times=4, headers={"Retry-After": "0"})
    with bot.services.bus.subscribe() as events:
        run = await start_run(bot, project.id)
        done = await wait_for(events, "agent.run.completed", run_id=run["id"], timeout=60)
    assert done.data["status"] == "completed", done.data
    assert [c.status for c in fake_codegen.calls_to("GET", "**")][:4] == [429] * 4
    final = await bot.store.agent_runs.get(run["id"])
    assert final.fix_attempts == 0 and final.transient_errors == 0
    await relay.stop()


async def test_a_restarted_app_continues_the_run(launch, fake_github, fake_codegen) -> None:
    make_repository(fake_github, config=CONFIG)
    bot, server = await launch()
    project = await record_project(bot, fake_github, auto_confirm_plans=True)
    relay = WebhookRelay(fake_github, bot).start()
    script = fake_codegen.script = ScriptedAgent(fake_github, change={"greeting.txt": "hello world\n"},
                                                 on_change=relay.poke)
    script.hold()
    with bot.services.bus.subscribe() as events:
        run = await start_run(bot, project.id)
        await wait_run(events, run["id"], "running")
    await fake_codegen.wait_for_call("GET", "**/agent/run/*")
    await server.close()  # the app stops while the run waits for the agent
    polls_before = len(fake_codegen.calls_to("GET", "**"))

    script.release()
    second, _ = await launch()
    relay.bot = second
    with second.services.bus.subscribe() as events:
        done = await wait_for(events, "agent.run.completed", run_id=run["id"], timeout=60)
    assert done.data["status"] == "completed", done.data
    assert len(fake_codegen.calls_to("GET", "**")) > polls_before
    assert len(fake_codegen.calls_to("POST", "**/agent/run")) == 1  # the same agent run, not a new one
    final = await second.store.agent_runs.get(run["id"])
    assert final.pr_number is not None and final.validation_status == "success"
    await relay.stop()


async def test_closing_the_pr_ends_the_run(launch, fake_github, fake_codegen) -> None:
    make_repository(fake_github, config=CONFIG)
    bot, _ = await launch()
    project = await record_project(bot, fake_github, auto_confirm_plans=True)
    relay = WebhookRelay(fake_github, bot).start()
    script = fake_codegen.script = ScriptedAgent(fake_github, change={"greeting.txt": "hello\n"}, on_change=relay.poke)
    with bot.services.bus.subscribe() as events:
        run = await start_run(bot, project.id)
        created = await wait_for(events, "pr.created", run_id=run["id"], timeout=30)
        script.hold()  # the fix never comes
        await wait_run(events, run["id"], "fixing", timeout=60)
        pull = fake_github.pulls[("acme/widgets", created.data["pr_number"])]
        pull["state"] = "closed"
        relay.poke()
        done = await wait_for(events, "agent.run.completed", run_id=run["id"], timeout=30)
    assert (done.data["status"], done.data["reason"]) == ("cancelled", "the pull request was closed")
    await relay.stop()


async def test_fix_with_agent_and_plan_commands_on_an_existing_pr(launch, fake_github, fake_codegen) -> None:
    scenario = open_pull_request(fake_github, config=CONFIG, base_files={"greeting.txt": "hi\n"},
                                 head_files={"greeting.txt": "hello\n"})
    bot, _ = await launch()
    project = await record_project(bot, fake_github)
    relay = WebhookRelay(fake_github, bot).start()
    with bot.services.bus.subscribe() as events:
        await bot.webhooks.send("pull_request", scenario.payload("opened"))
        failed = await wait_for(events, "validation.completed", head_sha=scenario.head_sha, timeout=60)
        assert failed.data["conclusion"] == "failure"
        fake_codegen.script = ScriptedAgent(fake_github, change={"greeting.txt": "hello world\n"},
                                            on_change=relay.poke)
        started, reply = await bot.services.agent_runs.fix_button(project, scenario.number, actor="alice")
        assert started and "/plan confirm" in reply
        started, busy = await bot.services.agent_runs.agent_command(project, scenario.number, "something else",
                                                                    actor="bob")
        assert not started and busy.startswith("No agent run was started") and "already working on this PR" in busy
        [run] = await bot.store.agent_runs.for_project(project.id)
        assert (run.source, run.requested_by, run.origin_pr_number) == ("fix_button", "alice", scenario.number)
        await wait_run(events, run.id, "awaiting_confirmation")
        [plan_comment] = [b for b in comments_on(fake_github, scenario.number) if "/plan confirm" in b]
        assert PLAN.splitlines()[0] not in plan_comment  # ScriptedAgent's default plan, not ours
        assert "Plan of agent run" in plan_comment
        assert await bot.services.agent_runs.plan_command(project, scenario.number, "confirm", actor="carol") == \
            (True, f"Plan confirmed: the agent is making the change (run `{run.id}`).")
        done = await wait_for(events, "agent.run.completed", run_id=run.id, timeout=60)
    assert done.data["status"] == "completed", done.data
    [planning, executing] = sorted(fake_codegen.runs.values(), key=lambda r: r.id)
    for prompt in (planning.prompt, executing.prompt):
        assert f"pull request #{scenario.number}" in prompt and "Step `greeting` (validate) failed." in prompt
    assert executing.metadata["pr_number"] == scenario.number and executing.metadata["branch"] == "feature"
    assert not [p for (name, n), p in fake_github.pulls.items() if n != scenario.number]  # no second PR
    assert await bot.services.agent_runs.plan_command(project, scenario.number, "confirm", actor="carol") == \
        (False, "No plan of an agent run is waiting for confirmation on this PR.")
    await relay.stop()


# ---- the local command -------------------------------------------------------------------------------------


async def test_local_agent_plans_executes_and_fixes(launch, fake_github) -> None:
    make_repository(fake_github, config=CONFIG, files={"agent.py": LOCAL_AGENT})
    bot, _ = await launch(CODEGEN_API_KEY=None, CODEGEN_ORG_ID=None)
    project = await record_project(bot, fake_github, agent_backend="local",
                                   agent_command="/usr/bin/python3 agent.py", max_fix_attempts=2,
                                   repository_rules="Keep changes small.", planning_statement="Plan in two steps.")
    await bot.store.projects.set_secret(project.id, "AGENT_KEY", "model-key-very-secret-42")
    relay = WebhookRelay(fake_github, bot).start()
    with bot.services.bus.subscribe() as events:
        run = await start_run(bot, project.id)
        await wait_run(events, run["id"], "awaiting_confirmation", timeout=60)
        status, shown = await api(bot, "GET", f"/api/v1/runs/{run['id']}")
        assert shown["backend"] == "local"
        assert shown["plan"] == f"1. Write greeting.txt for: {GOAL}\n2. The model key is set."
        await api(bot, "POST", f"/api/v1/runs/{run['id']}/confirm")
        created = await wait_for(events, "pr.created", run_id=run["id"], timeout=60)
        done = await wait_for(events, "agent.run.completed", run_id=run["id"], timeout=90)
    assert done.data["status"] == "completed", done.data
    final = await bot.store.agent_runs.get(run["id"])
    assert final.fix_attempts == 1 and final.branch.startswith(f"codegenapp/{run['id'][:8]}-greet-the-world")
    pull = fake_github.pulls[("acme/widgets", created.data["pr_number"])]
    assert pull["head"]["ref"] == final.branch and pull["base"]["ref"] == "main"
    assert pull["title"] == GOAL and run["id"] in pull["body"]
    repo = fake_github.git_repo("acme/widgets")
    head = pull["head"]["sha"]
    files = repo.ls_files(head)
    assert repo.read(head, "greeting.txt") == b"hello world\n"
    assert not [f for f in files if f.startswith(".codegenapp-agent/")]  # the agent's inputs are never committed
    fix_goal = repo.read(head, "agent-log/attempt-1.md").decode()
    assert "Step `greeting` (validate) failed." in fix_goal and "attempt 1 of 2" in fix_goal
    assert "Keep changes small." in fix_goal and "Plan in two steps." in fix_goal
    first_goal = repo.read(head, "agent-log/attempt-0.md").decode()
    assert "Confirmed plan" in first_goal and "The model key is set." in first_goal
    message = repo.git("log", "-2", "--format=%an <%ae>|%s", head).splitlines()
    assert message[0].startswith("CodegenApp agent <12345+codegenapp[bot]@") and "attempt 1" in message[0]
    assert message[1].endswith(f"|{GOAL}")
    assert check_conclusions(fake_github, head) == ["success"]
    await relay.stop()


async def test_cancel_kills_a_running_local_agent(launch, fake_github) -> None:
    make_repository(fake_github, config=CONFIG, files={"agent.py": LOCAL_AGENT})
    bot, _ = await launch(CODEGEN_API_KEY=None, CODEGEN_ORG_ID=None)
    marker = f"AGENT_SLEEP={uuid.uuid4().hex}"  # unique: other test sessions may run agents too
    project = await record_project(bot, fake_github, agent_backend="local", auto_confirm_plans=True,
                                   agent_command=f"{marker} /usr/bin/python3 agent.py")
    with bot.services.bus.subscribe() as events:
        run = await start_run(bot, project.id)
        await wait_for(events, "agent.local.started", run_id=run["id"], timeout=30)
        status, cancelled = await api(bot, "POST", f"/api/v1/runs/{run['id']}/cancel")
        assert status == 200 and cancelled["status"] == "cancelled"
        first_job = await bot.store.db.read(lambda conn: conn.execute(
            select(func.min(Job.id)).where(Job.kind == "agent_run")).scalar_one())
        await wait_for(events, "job.finished", job_id=first_job, timeout=15)  # the job that ran the agent
    leftover = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True)
    assert leftover.stdout == "", "the cancelled agent's sandbox was not killed"
    assert not fake_github.pulls

