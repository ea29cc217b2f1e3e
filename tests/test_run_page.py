"""The agent run page: its stepper as a pure function of the run (no I/O), the plan's markdown sanitised,
which events its log shows, and the page over HTTP for a run awaiting confirmation, one that merged and
one that failed: status words, links (Codegen run, PR, validation), buttons only for writers."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from html import unescape
from typing import Any

import pytest

from bot.models import (AGENT_AWAITING_CONFIRMATION, AGENT_CANCELLED, AGENT_COMPLETED, AGENT_FAILED, AGENT_FIXING,
                        AGENT_PENDING, AGENT_PLANNING, AGENT_PR_OPEN, AGENT_RUNNING, AGENT_VALIDATING, AgentRun,
                        AuditEvent)
from bot.store.agent_runs import NewRun
from dashboard.markdown import render_markdown
from dashboard.run_stepper import (CONFIRM, DONE, ORDER, PLAN, PR, VALIDATING, WORKING, RunSnapshot, position,
                                   steps)
from dashboard.runs import ended_from, shown_in_log
from pipeline.agents.machine import MERGED_REASON
from tests.dashboard_support import Dashboard, start_dashboard

SHA = "3f2a9c1d" * 5
MARKDOWN_PLAN = """## Plan

1. Add `GET /health` to **app.py**.
2. Test it <script>alert(1)</script><img src=x onerror="alert(2)">.

| file | change |
| --- | --- |
| app.py | new route |

```python
def health():
    return "ok"
```

[docs](https://example.com/docs) [bad](javascript:alert(3)) <a href="javascript:alert(4)" onclick="x()">also bad</a>
"""


# ---- the stepper ------------------------------------------------------------------------------------------

def states(run: RunSnapshot) -> dict[str, str]:
    return {step.key: step.state for step in steps(run)}


@pytest.mark.parametrize(("status", "at"), [
    (AGENT_PENDING, PLAN), (AGENT_PLANNING, PLAN), (AGENT_AWAITING_CONFIRMATION, CONFIRM), (AGENT_RUNNING, WORKING),
    (AGENT_PR_OPEN, PR), (AGENT_VALIDATING, VALIDATING), (AGENT_FIXING, VALIDATING), (AGENT_COMPLETED, DONE)])
def test_each_status_has_its_step(status: str, at: str) -> None:
    run = RunSnapshot(status=status, has_plan=True, pr_number=7)
    assert position(run) == at
    shown = states(run)
    before, after = ORDER[:ORDER.index(at)], ORDER[ORDER.index(at) + 1:]
    assert all(shown[key] == "done" for key in before)
    assert all(shown[key] == "upcoming" for key in after)
    assert shown[at] == ("done" if at == DONE else "current")


def test_a_finished_run_says_merged_or_passed() -> None:
    merged = steps(RunSnapshot(status=AGENT_COMPLETED, pr_number=7, pr_merged=True))
    assert merged[-1].title == "Merged" and merged[-1].state == "done"
    assert next(s for s in merged if s.key == PR).note == "#7"
    assert steps(RunSnapshot(status=AGENT_COMPLETED, pr_number=7))[-1].title == "Passed"


def test_a_failed_or_cancelled_run_stops_at_its_step() -> None:
    failed = steps(RunSnapshot(status=AGENT_FAILED, has_plan=True, pr_number=7, ended_from=AGENT_FIXING))
    assert [(s.key, s.state) for s in failed][3:] == [(PR, "done"), (VALIDATING, "failed"), (DONE, "upcoming")]
    assert failed[4].note == "Failed here" and failed[-1].title == "Done"
    rejected = states(RunSnapshot(status=AGENT_CANCELLED, has_plan=True, ended_from=AGENT_AWAITING_CONFIRMATION))
    assert (rejected[PLAN], rejected[CONFIRM], rejected[WORKING]) == ("done", "cancelled", "upcoming")
    # the status it ended from unknown (no event recorded): what it had got to
    assert position(RunSnapshot(status=AGENT_FAILED, pr_number=7)) == VALIDATING
    assert position(RunSnapshot(status=AGENT_FAILED, has_plan=True)) == CONFIRM
    assert position(RunSnapshot(status=AGENT_FAILED)) == PLAN


def test_plans_confirmed_by_themselves_skip_plan_and_confirm() -> None:
    run = RunSnapshot(status=AGENT_PENDING, auto_confirm=True)
    assert position(run) == WORKING
    shown = steps(run)
    assert [s.state for s in shown[:3]] == ["skipped", "skipped", "current"] and shown[2].note == "Starting"
    assert position(RunSnapshot(status=AGENT_FAILED, auto_confirm=True, ended_from=AGENT_PENDING)) == WORKING


def test_fixing_says_which_attempt() -> None:
    fixing = steps(RunSnapshot(status=AGENT_FIXING, pr_number=7, fix_attempts=2, max_fix_attempts=3))
    assert fixing[4].note == "The agent is fixing a failure (attempt 2 of 3)"


# ---- the plan's markdown ------------------------------------------------------------------------------------

def test_markdown_keeps_structure_and_drops_what_could_run() -> None:
    html = str(render_markdown(MARKDOWN_PLAN))
    for gone in ("<script", "alert(1)", "onerror", "<img", "href=\"javascript", "onclick"):
        assert gone not in html, gone
    assert "[bad](javascript:alert(3))" in html  # markdown-it refuses the link: it stays text
    assert "<h2>Plan</h2>" in html and "<table>" in html and "<td>app.py</td>" in html
    assert "<pre><code>def health():" in html and "<code>GET /health</code>" in html and "<strong>app.py</strong>" in html
    assert '<a href="https://example.com/docs" rel="nofollow noopener">docs</a>' in html
    assert '<a rel="nofollow noopener">also bad</a>' in html  # the link without its href
    assert str(render_markdown(None)) == "" and str(render_markdown("<b>x</b> & y")) == "<p><b>x</b> &amp; y</p>\n"
    assert "<style" not in str(render_markdown("<style>body{display:none}</style><iframe src=x></iframe>hi"))


# ---- the log ------------------------------------------------------------------------------------------------

def _event(action: str, actor: str | None = None, **details: Any) -> AuditEvent:
    return AuditEvent(id=1, at=datetime(2026, 12, 7, tzinfo=timezone.utc), action=action, actor=actor,
                      details=details)


def test_the_log_leaves_out_what_another_event_said() -> None:
    events = [_event("agent.plan.confirmed", "alice"),
              _event("agent.run.updated", "alice", **{"from": "awaiting_confirmation", "to": "running"}),
              _event("agent.run.updated", None, **{"from": "running", "to": "failed"}),
              _event("agent.run.completed", None, status="failed")]
    assert [(e.action, e.actor) for e in shown_in_log(events)] == [("agent.plan.confirmed", "alice"),
                                                                   ("agent.run.updated", None)]
    assert ended_from(AgentRun(status="failed"), events) == "running"
    assert ended_from(AgentRun(status="cancelled"), events) is None


# ---- the page over HTTP -------------------------------------------------------------------------------------

async def make_run(dash: Dashboard, status: str, *, goal: str = "Add a health endpoint", **values: Any) -> AgentRun:
    store = dash.services.store
    project = await store.projects.get_project_by_name("acme/widgets")
    run = await store.agent_runs.create(NewRun(project_id=project.id, target_text=goal, source="dashboard",
                                               requested_by="alice", backend="codegen", auto_confirm=False,
                                               max_fix_attempts=2))
    changed = await store.agent_runs.transition(run.id, expect=(AGENT_PENDING,), values={"status": status, **values})
    assert changed is not None
    return changed


async def audit(dash: Dashboard, action: str, actor: str | None = None, **details: Any) -> None:
    project = await dash.services.store.projects.get_project_by_name("acme/widgets")
    await dash.services.store.audit.record(action, actor=actor, project_id=project.id, details=details)


def visible_text(page: str) -> str:
    """The words of a page's <main> as a person reads them (a select's options left out)."""
    body = page.split("<main>", 1)[1].split("</main>", 1)[0]
    body = re.sub(r"<(select|datalist)\b.*?</\1>", " ", body, flags=re.S)
    body = re.sub(r"</?(?:a|code|span|time|strong|em)\b[^>]*>", "", body)
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", body)).split())


@pytest.fixture
async def dash(fake_github, aiohttp_server, make_settings) -> Dashboard:
    fake_github.add_installation(1, "acme", repos=["widgets"])
    fake_github.set_permission("acme/widgets", "alice", "write")
    fake_github.set_permission("acme/widgets", "bob", "read")
    dashboard = await start_dashboard(fake_github, aiohttp_server, make_settings, with_worker=False)
    await dashboard.record(1, "acme/widgets")
    return dashboard


async def get_page(dash: Dashboard, run: AgentRun, login: str = "alice") -> tuple[int, str]:
    async with await dash.login(login, installation_ids=[1]) as session:
        async with session.get(f"{dash.url}/projects/acme/widgets/runs/{run.id}") as response:
            return response.status, await response.text()


async def test_a_run_awaiting_confirmation_shows_its_plan_and_the_decision(dash: Dashboard) -> None:
    run = await make_run(dash, AGENT_AWAITING_CONFIRMATION, plan_text=MARKDOWN_PLAN, plan_generated=True,
                         agent_handle={"backend": "codegen", "id": 5, "web_url": "https://codegen.test/agent/trace/5"})
    await audit(dash, "agent.run.started", "alice", run_id=run.id, source="dashboard", backend="codegen")
    await audit(dash, "agent.run.updated", None, run_id=run.id, **{"from": "planning",
                                                                  "to": "awaiting_confirmation"})
    status, page = await get_page(dash, run)
    assert status == 200
    text = visible_text(page)
    assert "Agent run Waiting for confirmation" in text and "awaiting_confirmation" not in page.replace(
        "badge-awaiting_confirmation", "")
    assert "Started" in text and "by @alice via the dashboard · Codegen agent" in text
    current = re.search(r'<li class="step step-current" aria-current="step">(.*?)</li>', page, re.S)
    assert current and "Confirm" in current.group(1) and "Waiting for a maintainer" in current.group(1)
    assert '<a href="https://codegen.test/agent/trace/5" rel="noopener">Codegen run</a>' in page
    plan = page.split('data-field="run-plan">', 1)[1].split("</div>", 1)[0]
    assert "<table>" in plan and "<pre><code>" in plan and "<script" not in plan and "onerror" not in plan
    assert 'href="javascript' not in page and 'rel="nofollow noopener"' in plan
    assert "Let the agent carry out this plan?" in text and 'action="/projects/acme/widgets/runs/' in page
    assert all(f">{button}</button>" in page for button in ("Confirm", "Reject", "Cancel run"))
    assert "@alice started an agent run via the dashboard" in text
    assert "The agent run went from Planning to Waiting for confirmation" in text
    assert f'href="/projects/acme/widgets/runs/{run.id}"' not in page.split('id="run-log"', 1)[1]  # not itself

    status, page = await get_page(dash, run, "bob")  # may read, may not decide
    assert status == 200 and "</button>" not in page.split("<main>", 1)[1]
    assert "Waiting for someone with write access" in visible_text(page)


async def test_a_merged_run_links_its_pr_and_validation_and_tells_its_story(dash: Dashboard) -> None:
    store = dash.services.store
    pr_url = f"{dash.fake.base_url}/acme/widgets/pull/7"
    run = await make_run(dash, AGENT_COMPLETED, plan_text="1. Do it.", plan_decided_by="alice", pr_number=7,
                         pr_url=pr_url, reason=MERGED_REASON, completed_at=datetime.now(timezone.utc),
                         agent_handle={"backend": "codegen", "id": 6, "web_url": "javascript:alert(1)"})
    validation = await store.validations.create(project_id=run.project_id, pr_number=7, head_sha=SHA,
                                                agent_run_id=run.id)
    await store.validations.complete(validation.id, conclusion="success", title="All 3 steps passed", results={})
    await audit(dash, "agent.plan.confirmed", "alice", run_id=run.id)
    await audit(dash, "agent.run.updated", "alice", run_id=run.id, **{"from": "awaiting_confirmation",
                                                                     "to": "running"})
    await audit(dash, "pr.created", None, run_id=run.id, pr=7, url=pr_url)
    await audit(dash, "validation.completed", None, pr=7, head_sha=SHA, conclusion="success",
                title="All 3 steps passed", validation_id=validation.id)
    await audit(dash, "validation.completed", None, pr=8, head_sha=SHA, conclusion="failure", title="another PR")
    await audit(dash, "merge.merged", "alice", pr=7, head_sha=SHA, base="main", method="squash",
                trigger="button.merge")
    await audit(dash, "agent.run.updated", None, run_id=run.id, **{"from": "validating", "to": "completed",
                                                                  "reason": MERGED_REASON})
    await audit(dash, "agent.run.completed", None, run_id=run.id, status="completed", reason=MERGED_REASON)

    status, page = await get_page(dash, run)
    assert status == 200
    text = visible_text(page)
    assert "Agent run Done" in text and "The pull request was merged." in text
    assert [m for m in re.findall(r'class="step step-(\w+)"', page)] == ["done"] * 6
    assert re.search(r'step-done">\s*<span class="marker" aria-hidden="true">✓</span>\s*<span class="step-text">'
                     r'<span class="step-title">Merged</span>', page)
    assert "Codegen run" not in text  # a javascript: address is no link
    assert f'<a href="{pr_url}" rel="noopener">Pull request #7</a>' in page
    assert f'<a href="/validations/{validation.id}">Validation: Passed</a>' in page
    log = visible_text("<main>" + page.split('id="run-log"', 1)[1].split("</ol>", 1)[0] + "</main>")
    assert [line for line in (
        "@alice confirmed the plan", "The agent opened #7",
        "Validation of 3f2a9c1 on #7: Passed · All 3 steps passed",
        "@alice merged #7 at 3f2a9c1 into main (squash) via the Merge button",
        "The agent run went from Validating to Done: the pull request was merged") if line not in log] == []
    assert "another PR" not in log and "ended" not in log  # another PR's; the end said once
    assert "running" not in log and "completed" not in log


async def test_a_failed_run_stops_at_its_step_and_another_projects_run_is_not_found(dash: Dashboard) -> None:
    run = await make_run(dash, AGENT_FAILED, plan_text="1. Do it.", pr_number=7, fix_attempts=2,
                         reason="the validation still fails after 2 fix attempt(s) (pytest): a human is needed",
                         completed_at=datetime.now(timezone.utc))
    await audit(dash, "agent.run.updated", None, run_id=run.id, **{"from": "validating", "to": "failed"})
    status, page = await get_page(dash, run)
    text = visible_text(page)
    assert status == 200 and "Agent run Failed" in text
    assert re.findall(r'class="step step-(\w+)"', page) == ["done"] * 4 + ["failed", "upcoming"]
    assert "Failed here" in text and "The validation still fails after 2 fix attempt(s) (pytest)" in text
    assert "Cancel run" not in text and "None yet." in text

    dash.fake.add_installation(2, "other", repos=["thing"])
    await dash.record(2, "other/thing")
    dash.fake.set_permission("other/thing", "alice", "write")
    async with await dash.login("alice", installation_ids=[1, 2]) as session:
        async with session.get(f"{dash.url}/projects/other/thing/runs/{run.id}") as response:
            assert response.status == 404
