"""A project's deliveries page in a real headless Chromium, at 1280 and at phone width (390): deliveries in
every state, a failed one's error, the Failed filter, and the Replay button (a plain form: no script), which
queues the delivery again and says so. Screenshots: tests/artifacts/deliveries-*.png."""

from __future__ import annotations

import aiohttp
import pytest

from tests.browser import logged_in_page, screenshot
from tests.conftest import WEBHOOK_SECRET
from tests.dashboard_support import start_dashboard
from tests.pull_requests import INSTALLATION_ID, open_pull_request, record_project
from tests.test_replay import finish_jobs
from tests.webhook_sender import WebhookSender

pytestmark = pytest.mark.slow

ERROR = ("Traceback (most recent call last):\n"
         '  File "/srv/codegenapp/handlers/__init__.py", line 52, in handle_delivery\n'
         "    await handle_event(services, event)\n"
         "bot.github.errors.UnexpectedResponse: GET /repos/acme/widgets/pulls/2 answered without `head.sha`\n")


@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_the_deliveries_page_at_desktop_and_phone_width(browser, aiohttp_server, make_settings,
                                                              fake_github) -> None:
    from playwright.async_api import expect

    dash = await start_dashboard(fake_github, aiohttp_server, make_settings, with_worker=False)
    first = open_pull_request(fake_github, config="validate:\n  - true\n")
    second = open_pull_request(fake_github, config="validate:\n  - true\n")
    await record_project(dash.services.store, first)
    async with aiohttp.ClientSession() as session:
        sender = WebhookSender(session, dash.url, WEBHOOK_SECRET)
        sent = [await sender.send("pull_request", first.payload("opened")),
                await sender.send("pull_request", second.payload("opened")),
                await sender.send("issue_comment", first.comment_payload("/validate"))]
        assert all(answer.status == 202 for answer in sent), sent
        handled, failed, comment = (answer.body["delivery"] for answer in sent)
        await finish_jobs(dash.services.store, fail={failed}, error=ERROR)
        waiting = await sender.send("pull_request", second.payload("synchronize"))  # its job stays queued
        assert waiting.status == 202
    fake_github.set_permission("acme/widgets", "alice", "admin")
    fake_github.approve_oauth_as("alice", installation_ids=[INSTALLATION_ID])

    page, refused = await logged_in_page(browser, dash.url)
    await page.goto(dash.url + "/projects/acme/widgets")
    await page.get_by_role("link", name="Deliveries").click()
    await page.wait_for_url("**/projects/acme/widgets/deliveries")
    rows = page.locator("table.deliveries tbody tr")
    await expect(rows).to_have_count(4)
    states = {delivery: await page.locator(f'tr[data-delivery="{delivery}"] [data-field="delivery-state"]')
              .text_content() for delivery in (handled, failed, comment, waiting.body["delivery"])}
    assert states == {handled: "Handled", failed: "Failed", comment: "Handled", waiting.body["delivery"]: "Queued"}
    failed_row = page.locator(f'tr[data-delivery="{failed}"]')
    # the error as the repository's admin reads it: the message, no exception class nor server traceback
    await expect(failed_row.locator(".delivery-error")).to_have_text(
        "GET /repos/acme/widgets/pulls/2 answered without `head.sha`")
    assert await failed_row.locator("pre").count() == 0
    await expect(failed_row.locator("td.pr")).to_have_text(f"#{second.number}")
    await expect(page.locator(f'tr[data-delivery="{comment}"] td.event')).to_contain_text("Issue comment created")
    await expect(page.locator(f'tr[data-delivery="{waiting.body["delivery"]}"] td.replay')).to_have_text(
        "being handled")
    await screenshot(page, "deliveries-1280")

    await page.get_by_role("link", name="Failed", exact=True).click()
    await page.wait_for_url("**/deliveries?failed=1")
    await expect(rows).to_have_count(1)
    await failed_row.get_by_role("button", name="Replay").click()
    await page.wait_for_url(f"**/deliveries?replayed={failed}&failed=1")
    await expect(page.get_by_role("status")).to_have_text(f"Replaying pull request opened (#{second.number}): queued.")
    await expect(page.locator("table.deliveries tbody tr")).to_have_count(0)  # queued again: no longer failed
    await page.get_by_role("link", name="All", exact=True).click()
    await expect(page.locator(f'tr[data-delivery="{failed}"] [data-field="delivery-state"]')).to_have_text("Queued")
    await expect(page.locator(f'tr[data-delivery="{failed}"] .tag')).to_have_text("replayed 1×")

    await page.set_viewport_size({"width": 390, "height": 844})
    await page.reload()
    await expect(rows).to_have_count(4)
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390, "the page scrolls sideways"
    for button in await page.get_by_role("button", name="Replay").all():
        box = await button.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390
    await screenshot(page, "deliveries-390")
    assert not refused, refused
    [event] = [e for e in await dash.services.store.audit.list() if e.action == "delivery.replayed"]
    assert (event.actor, event.delivery_id) == ("alice", failed)
