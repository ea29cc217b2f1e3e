"""The agent run page and the audit log in a real headless Chromium, at 1280 and 390 pixels wide: a run
awaiting confirmation of a markdown plan (redrawn live when it moves on), a run that merged, and the
audit log filtered and paged without script. Screenshots: tests/artifacts/run-audit-*.png."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

import pytest

from bot.models import AGENT_AWAITING_CONFIRMATION, AGENT_COMPLETED, AGENT_RUNNING
from pipeline.agents.machine import MERGED_REASON
from tests.browser import screenshot, watch_csp
from tests.dashboard_support import Dashboard, start_dashboard
from tests.test_run_page import MARKDOWN_PLAN, SHA, audit, make_run

pytestmark = pytest.mark.slow

WIDTHS = (1280, 390)
RAW = re.compile(r"awaiting_confirmation|in_progress|action_required|pr_open|requested_action|[a-z]+\.[a-z_]+\.[a-z_]+"
                 r"|\\u[0-9a-f]{4}|\{\"")


@pytest.fixture
async def dash(fake_github, aiohttp_server, make_settings) -> Dashboard:
    fake_github.add_installation(1, "acme", repos=["widgets"])
    fake_github.set_permission("acme/widgets", "alice", "write")
    fake_github.approve_oauth_as("alice", installation_ids=[1])
    dashboard = await start_dashboard(fake_github, aiohttp_server, make_settings, with_worker=False)
    await dashboard.record(1, "acme/widgets")
    return dashboard


async def look(page: Any, name: str) -> None:
    """Screenshots at each width; the page never scrolls sideways and shows no raw value."""
    for width in WIDTHS:
        await page.set_viewport_size({"width": width, "height": 900})
        await screenshot(page, f"run-audit-{name}-{width}")
        scroll = await page.evaluate("document.documentElement.scrollWidth")
        assert scroll <= width, f"{name} scrolls sideways at {width}px ({scroll}px)"
    text = await page.locator("main").inner_text()
    assert not RAW.search(text), RAW.search(text)


async def test_run_pages_and_the_audit_log_in_chromium(browser, dash: Dashboard) -> None:
    from playwright.async_api import expect

    waiting = await make_run(dash, AGENT_AWAITING_CONFIRMATION, plan_text=MARKDOWN_PLAN, plan_generated=True,
                             goal="Add a health endpoint that answers 200 with the app's version, and a test of it",
                             agent_handle={"backend": "codegen", "id": 5,
                                           "web_url": "https://codegen.test/agent/trace/5"})
    await audit(dash, "agent.run.started", "alice", run_id=waiting.id, source="dashboard")
    await audit(dash, "agent.run.updated", None, run_id=waiting.id,
                **{"from": "planning", "to": "awaiting_confirmation", "reason": "the plan waits for confirmation"})
    pr_url = f"{dash.fake.base_url}/acme/widgets/pull/7"
    done = await make_run(dash, AGENT_COMPLETED, plan_text="1. Fix the greeting.", pr_number=7, pr_url=pr_url,
                          reason=MERGED_REASON, completed_at=datetime.now(timezone.utc), fix_attempts=1)
    validation = await dash.services.store.validations.create(project_id=done.project_id, pr_number=7,
                                                              head_sha=SHA, agent_run_id=done.id)
    await dash.services.store.validations.complete(validation.id, conclusion="success",
                                                   title="All 4 steps passed", results={})
    await audit(dash, "agent.plan.confirmed", "alice", run_id=done.id)
    await audit(dash, "pr.created", None, run_id=done.id, pr=7, url=pr_url)
    await audit(dash, "validation.completed", None, pr=7, head_sha=SHA, conclusion="failure",
                title="pytest: 2 failed", validation_id=validation.id)
    await audit(dash, "agent.run.updated", None, run_id=done.id,
                **{"from": "validating", "to": "fixing", "reason": "the validation failed (pytest: 2 failed)"})
    await audit(dash, "validation.completed", None, pr=7, head_sha=SHA, conclusion="success",
                title="All 4 steps passed", validation_id=validation.id)
    await audit(dash, "merge.merged", "alice", pr=7, head_sha=SHA, base="main", method="squash",
                trigger="check_run.requested_action")
    await audit(dash, "agent.run.updated", None, run_id=done.id,
                **{"from": "validating", "to": "completed", "reason": MERGED_REASON})
    await audit(dash, "merge.refused", "bob", pr=9, head_sha=SHA, trigger="command.merge",
                reason="the validation of 3f2a9c1 failed")
    await audit(dash, "project.secret.added", "alice", name="DEPLOY_KEY")
    for i in range(52):
        await audit(dash, "command.validate", "carol", pr=20 + i, args=[], comment=i)

    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    refused = watch_csp(page)
    try:
        base = f"{dash.url}/projects/acme/widgets"
        await page.goto(f"{dash.url}/auth/login?next=/projects/acme/widgets/runs/{waiting.id}")
        await expect(page.locator('[data-field="run-status"]')).to_have_text("Waiting for confirmation")
        await expect(page.get_by_text("live", exact=True)).to_be_visible()
        plan = page.locator('[data-field="run-plan"]')
        await expect(plan.locator("table")).to_be_visible()
        await expect(plan.locator("pre code")).to_contain_text("def health():")
        assert await plan.locator("script, img, [onclick]").count() == 0
        await expect(page.locator('li[aria-current="step"]')).to_contain_text("Confirm")
        await expect(page.get_by_role("button", name="Confirm")).to_be_visible()
        await look(page, "awaiting")

        # The run moves on: the page redraws itself (live.js → run.js), without a reload.
        await page.set_viewport_size({"width": 1280, "height": 900})
        await page.evaluate("window.__notReloaded = true")
        store = dash.services.store
        await store.agent_runs.transition(waiting.id, expect=(AGENT_AWAITING_CONFIRMATION,),
                                          values={"status": AGENT_RUNNING, "plan_decided_by": "alice"})
        await audit(dash, "agent.plan.confirmed", "alice", run_id=waiting.id)
        dash.services.bus.publish("agent.run.updated", run_id=waiting.id, project_id=waiting.project_id,
                                  status=AGENT_RUNNING, previous=AGENT_AWAITING_CONFIRMATION)
        await expect(page.locator('[data-field="run-status"]')).to_have_text("Working")
        await expect(page.locator('li[aria-current="step"]')).to_contain_text("Working")
        await expect(page.locator("#run-log")).to_contain_text("@alice confirmed the plan")
        await expect(page.get_by_role("button", name="Confirm")).to_have_count(0)
        assert await page.evaluate("window.__notReloaded") is True

        await page.goto(f"{base}/runs/{done.id}")
        await expect(page.locator('[data-field="run-status"]')).to_have_text("Done")
        await expect(page.locator(".step-title").last).to_have_text("Merged")
        await expect(page.locator('[data-field="run-pr"] a')).to_have_attribute("href", pr_url)
        await expect(page.locator('[data-field="run-validation"] a')).to_have_text("Validation: Passed")
        await expect(page.locator("#run-log")).to_contain_text(
            "@alice merged #7 at 3f2a9c1 into main (squash) via a check-run button")
        await look(page, "merged")

        await page.goto(f"{base}/audit")
        events = page.locator("ol.events li")
        await expect(events).to_have_count(50)
        await expect(events.first).to_contain_text("@alice confirmed the plan of the agent run")
        await expect(events.nth(1)).to_contain_text("@carol commented /validate on #71")
        await look(page, "audit")
        await page.set_viewport_size({"width": 1280, "height": 900})
        await page.get_by_role("link", name="Older →").click()
        await expect(page.locator("main")).to_contain_text("@alice added the secret DEPLOY_KEY")
        await expect(page.get_by_role("link", name="← Newer")).to_be_visible()

        # The filter is a plain form: choose, submit, and the URL says what is shown.
        await page.select_option("#kind", "merge")
        await page.fill("#actor", "bob")
        await page.get_by_role("button", name="Filter").click()
        await page.wait_for_url(re.compile(r"/audit\?kind=merge&actor=bob$"))
        await expect(events).to_have_count(1)
        await expect(events.first).to_contain_text(
            "Did not merge #9: the validation of 3f2a9c1 failed (asked by @bob via /merge)")
        await look(page, "audit-filtered")
        assert refused == []  # the Content-Security-Policy allowed every script and style (files of ours)
    finally:
        await context.close()
