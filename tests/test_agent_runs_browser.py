"""Agent runs in a real headless Chromium: launch a run from the project page ("Target text"), watch
its plan arrive live on the run page, Confirm it, and watch the run open its PR live (the fake Codegen
agent, the fake GitHub, a webhook relay). Screenshots: tests/artifacts/run-*.png."""

from __future__ import annotations

import re
from types import SimpleNamespace

import aiohttp
import pytest

from tests.agent_support import FAST, WebhookRelay, make_repository, record_project
from tests.browser import screenshot, watch_csp
from tests.conftest import WEBHOOK_SECRET
from tests.dashboard_support import start_dashboard
from tests.fakes.codegen import API_KEY, ORG_ID, ScriptedAgent
from tests.pull_requests import INSTALLATION_ID
from tests.webhook_sender import WebhookSender

pytestmark = pytest.mark.slow

CONFIG = "validate:\n  - name: greeting\n    run: grep -qx 'hello world' greeting.txt\n"
PLAN = "1. Write 'hello world' to greeting.txt.\n2. Open a PR <script>alert(1)</script>."
GOAL = "Greet the world in greeting.txt"


@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_launch_an_agent_run_and_confirm_its_plan(browser, fake_github, aiohttp_server, make_settings,
                                                         fake_codegen) -> None:  # noqa: F811
    from playwright.async_api import expect

    make_repository(fake_github, config=CONFIG)
    dash = await start_dashboard(fake_github, aiohttp_server, make_settings, CODEGEN_API_URL=fake_codegen.url,
                                 CODEGEN_API_KEY=API_KEY, CODEGEN_ORG_ID=ORG_ID)
    services = dash.services
    assert services.agent_runs is not None
    services.agent_runs.timing = FAST
    project = await record_project(SimpleNamespace(store=services.store), fake_github)
    fake_github.set_permission("acme/widgets", "alice", "write")
    fake_github.approve_oauth_as("alice", installation_ids=[INSTALLATION_ID])
    session = aiohttp.ClientSession()
    relay = WebhookRelay(fake_github, SimpleNamespace(webhooks=WebhookSender(session, dash.url, WEBHOOK_SECRET)))
    agent = ScriptedAgent(fake_github, plan=PLAN, change={"greeting.txt": "hello world\n"}, on_change=relay.poke)
    agent.hold()  # the plan arrives once the run page is open
    fake_codegen.script = agent
    relay.start()
    context = await browser.new_context(viewport={"width": 1100, "height": 800})
    page = await context.new_page()
    refused = watch_csp(page)
    try:
        await page.goto(f"{dash.url}/auth/login?next=/projects/acme/widgets")
        await expect(page.get_by_role("heading", level=1)).to_contain_text("acme/widgets")

        # Launch: the dialog on the project page.
        await page.get_by_text("Launch agent run").click()
        await page.get_by_label("Target text").fill(GOAL)
        await screenshot(page, "run-01-launch")
        await page.get_by_role("button", name="Start run").click()
        await page.wait_for_url(re.compile(r"/projects/acme/widgets/runs/[0-9a-f]{32}$"))
        await expect(page.get_by_text("live", exact=True)).to_be_visible()
        await page.evaluate("window.__notReloaded = true")

        # The plan arrives live; Confirm appears.
        agent.release()
        status = page.locator('[data-field="run-status"]')
        await expect(status).to_have_text("Waiting for confirmation", timeout=30_000)
        await expect(page.locator('[data-field="run-plan"]')).to_contain_text("Write 'hello world' to greeting.txt.")
        assert await page.evaluate("window.__notReloaded") is True
        assert await page.locator("script:not([src])").count() == 0  # the plan is text
        await expect(page.locator("#run-log")).to_contain_text("Waiting for confirmation")
        await screenshot(page, "run-02-plan")

        # Confirm: the run goes on, and its PR shows up live.
        await page.get_by_role("button", name="Confirm").click()
        await expect(page.get_by_role("button", name="Confirm")).to_be_hidden()
        await page.evaluate("window.__notReloaded = true")
        await expect(page.locator('[data-field="run-pr"] a')).to_have_text(re.compile(r"#\d+"), timeout=30_000)
        await expect(status).not_to_have_text("Waiting for confirmation")
        assert await page.evaluate("window.__notReloaded") is True
        [run] = await services.store.agent_runs.for_project(project.id)
        assert run.plan_decided_by == "alice" and run.requested_by == "alice" and run.source == "dashboard"
        await screenshot(page, "run-03-confirmed")

        # Phone width.
        await page.set_viewport_size({"width": 390, "height": 844})
        await screenshot(page, "run-04-phone")
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the run page scrolls sideways at phone width ({width}px)"
        assert refused == []  # the Content-Security-Policy allowed every script and style (files of ours)
    finally:
        await context.close()
        await relay.stop()
        await session.close()
