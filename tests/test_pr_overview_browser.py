"""The PR overview and the project card in a real headless Chromium: a PR's row changes live (no reload)
when its validation completes, the toast names the repository, and the pages hold at phone width.
Screenshots: tests/artifacts/pr-overview-*.png."""

from __future__ import annotations

import re
from datetime import timedelta

import aiohttp
import pytest

from bot.models import utcnow
from tests.browser import logged_in_page, screenshot, watch_csp
from tests.conftest import WEBHOOK_SECRET
from tests.dashboard_support import start_dashboard
from tests.pull_requests import INSTALLATION_ID, open_pull_request, record_project
from tests.test_pr_overview import seed_overview
from tests.webhook_sender import WebhookSender

pytestmark = pytest.mark.slow

PASSING = "validate:\n  - test -f app.py\n"
# No word is cut in two at phone width: each of these must sit on one line.
WHOLE_WORDS = "table.pulls .state, .card [data-field=conclusion], .filters a, table.pulls td:last-child a"


async def _lines_of(page, selector: str) -> list[tuple[str, int]]:
    """(text, lines it takes) of every element matching `selector` that takes more than one line."""
    return await page.evaluate("""selector => Array.from(document.querySelectorAll(selector)).map(el => {
        const lines = new Set(Array.from(el.getClientRects()).map(r => Math.round(r.top)));
        const range = document.createRange(); range.selectNodeContents(el);
        const tops = new Set(Array.from(range.getClientRects()).map(r => Math.round(r.top)));
        return [el.textContent.trim(), Math.max(lines.size, tops.size)];
    }).filter(([, n]) => n > 1)""", selector)


@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_overview_updates_live_and_reads_well_on_a_phone(browser, aiohttp_server, make_settings,
                                                               fake_github) -> None:
    from playwright.async_api import expect

    dash = await start_dashboard(fake_github, aiohttp_server, make_settings)
    scenario = open_pull_request(fake_github, config=PASSING, author="dev-bob")
    project = await record_project(dash.services.store, scenario)
    await seed_overview(dash.services.store, project.id)
    await dash.services.store.projects.update_project(project.id, {"pinned": True})
    fake_github.approve_oauth_as("alice", installation_ids=[INSTALLATION_ID])

    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    refused = watch_csp(page)
    await page.goto(dash.url + "/auth/login")
    await page.goto(dash.url + "/projects/acme/widgets")
    await expect(page.get_by_text("live", exact=True)).to_be_visible()
    await page.evaluate("window.__notReloaded = true")
    row = page.locator(f'tr[data-pr="{scenario.number}"]')
    await expect(row).to_have_count(0)

    async with aiohttp.ClientSession() as session:
        answer = await WebhookSender(session, dash.url, WEBHOOK_SECRET).send("pull_request", scenario.payload("opened"))
        assert answer.status == 202, answer
    # The new PR's row appears, then turns from running to ready to merge when its validation passes.
    await expect(row).to_have_count(1, timeout=30_000)
    await expect(row.locator('[data-field="pr-state"]')).to_have_text("Ready to merge", timeout=60_000)
    await expect(row.locator('[data-field="pr-validation"]')).to_have_text("Passed")
    await expect(page.locator("#notifications li").first).to_have_text(f"acme/widgets #{scenario.number}: Passed")
    assert await page.evaluate("window.__notReloaded") is True
    card = page.locator(f'[data-project-id="{project.id}"]')
    # the worst first (issue 15): the seeded #3 still fails, so the new PR's pass does not make the headline
    await expect(card.locator('[data-field="validation"]')).to_have_text("1 failing: #3")
    await expect(card.locator('[data-field="headline-title"]')).to_have_text("Needs a fix")
    await expect(card.locator('[data-field="ready"]')).to_have_text("2")  # the seeded #4 and this one
    await expect(card.locator('[data-field="failing"]')).to_have_text("1")
    await expect(card.locator('[data-field="waiting"]')).to_have_text("1")
    await screenshot(page, "pr-overview-1280")

    # A filter is a plain link: it works without script.
    await page.get_by_role("link", name=re.compile(r"^Failing \d+$")).click()
    await page.wait_for_url(re.compile(r"\?state=failing"))
    await expect(page.locator("table.pulls tbody tr")).to_have_count(1)
    await expect(page.locator("table.pulls tbody tr")).to_have_attribute("data-state", "failing")

    # Phone width: nothing scrolls sideways and no word is cut in two.
    await page.set_viewport_size({"width": 390, "height": 844})
    for url, name in ((dash.url + "/projects/acme/widgets", "pr-overview-390"), (dash.url + "/", "pr-cards-390")):
        await page.goto(url)
        await screenshot(page, name)
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"{url} scrolls sideways at phone width ({width}px)"
        assert await _lines_of(page, WHOLE_WORDS) == []
    await context.close()
    assert refused == []


@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_a_burst_of_status_events_costs_one_fetch_of_the_overview(browser, aiohttp_server, make_settings,
                                                                         fake_github) -> None:
    """live.js waits for the rest of a burst (~500 ms) and keeps one fetch in flight and one pending: ten
    status changes 40 ms apart reload the PR table once or twice, not ten times."""
    from playwright.async_api import expect

    dash = await start_dashboard(fake_github, aiohttp_server, make_settings, with_worker=False)
    scenario = open_pull_request(fake_github, config=PASSING, author="dev-bob")
    project = await record_project(dash.services.store, scenario)
    await seed_overview(dash.services.store, project.id)
    fake_github.approve_oauth_as("alice", installation_ids=[INSTALLATION_ID])
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    await page.goto(dash.url + "/auth/login")
    await page.goto(dash.url + "/projects/acme/widgets")
    await expect(page.get_by_text("live", exact=True)).to_be_visible()
    await page.wait_for_timeout(1500)  # the reload after connecting is done
    fetched: list[str] = []
    page.on("request", lambda request: fetched.append(request.url) if "/pulls" in request.url else None)
    for _ in range(10):
        dash.services.bus.publish("pr.updated", project_id=project.id, pr_number=3, state="open")
        await page.wait_for_timeout(40)
    await page.wait_for_timeout(2000)
    assert 1 <= len(fetched) <= 2, fetched
    await expect(page.locator('tr[data-pr="3"]')).to_have_count(1)
    await context.close()


@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_a_card_whose_last_failing_pr_closes_says_live_what_a_reload_says(browser, aiohttp_server, make_settings,
                                                                              fake_github) -> None:
    """When the only failing PR is closed, the card's headline follows live (live.js renders the server's
    headline, "none" included) rather than keeping "1 failing: #N" beside a Failing count of 0."""
    from playwright.async_api import expect

    dash = await start_dashboard(fake_github, aiohttp_server, make_settings)
    scenario = open_pull_request(fake_github, config="validate:\n  - 'false'\n", author="dev-bob")
    project = await record_project(dash.services.store, scenario)
    fake_github.approve_oauth_as("alice", installation_ids=[INSTALLATION_ID])
    page, refused = await logged_in_page(browser, dash.url)
    await expect(page.get_by_text("live", exact=True)).to_be_visible()
    card = page.locator(f'[data-project-id="{project.id}"]')
    headline, title = card.locator('[data-field="validation"]'), card.locator('[data-field="headline-title"]')
    await expect(headline).to_have_text("none")  # no PR is open yet
    await expect(title).to_have_text("Open pull requests")
    await page.evaluate("window.__notReloaded = true")

    async with aiohttp.ClientSession() as session:
        sender = WebhookSender(session, dash.url, WEBHOOK_SECRET)
        assert (await sender.send("pull_request", scenario.payload("opened"))).status == 202
        await expect(headline).to_have_text(f"1 failing: #{scenario.number}", timeout=60_000)
        await expect(title).to_have_text("Needs a fix")
        closed = scenario.payload("closed")
        later = (utcnow() + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")  # newer than `opened`'s
        closed["pull_request"].update(state="closed", closed_at=later, updated_at=later)
        assert (await sender.send("pull_request", closed)).status == 202

    await expect(card.locator('[data-field="failing"]')).to_have_text("0", timeout=30_000)
    await expect(headline).to_have_text("none")
    await expect(title).to_have_text("Open pull requests")
    assert await page.evaluate("window.__notReloaded") is True
    live = await card.inner_text()
    await screenshot(page, "pr-card-after-close-live")
    await page.reload()
    await expect(page.get_by_text("live", exact=True)).to_be_visible()
    assert await card.inner_text() == live
    assert refused == []
