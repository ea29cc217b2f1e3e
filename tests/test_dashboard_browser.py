"""The dashboard in a real headless Chromium (Playwright, Debian's /usr/bin/chromium) against the real
server and the fake GitHub's web flows: register the App, log in, pick a project, change its settings,
add a secret, and watch a card change live when a validation completes. Screenshots: tests/artifacts/."""

from __future__ import annotations

import re

import aiohttp
import pytest

from bot import registration
from tests.browser import screenshot, watch_csp
from tests.dashboard_support import start_dashboard
from tests.pull_requests import INSTALLATION_ID, open_pull_request, record_project
from tests.webhook_sender import WebhookSender

pytestmark = pytest.mark.slow

PASSING = "validate:\n  - test -f app.py\n"
RULES = "Never <b>bold</b> & {{ config }}\n  keep this indent\n"


@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_register_login_configure_and_watch_live(browser, fake_github, aiohttp_server, make_settings) -> None:
    from playwright.async_api import expect

    # WEBHOOK_MODE left to its default: with a loopback PUBLIC_URL the app polls, and registers a hook URL
    # GitHub accepts (GitHub refuses a loopback one).
    dash = await start_dashboard(fake_github, aiohttp_server, make_settings, with_app=False, WEBHOOK_MODE=None)
    services = dash.services
    setup_token = (services.settings.data_dir / registration.SETUP_TOKEN_FILE).read_text().strip()
    context = await browser.new_context(viewport={"width": 1100, "height": 800})
    page = await context.new_page()
    refused = watch_csp(page)

    # 1. Setup mode: one click registers the App through GitHub's manifest flow.
    await page.goto(f"{dash.url}/?setup_token={setup_token}")
    assert page.url == dash.url + "/"  # the token left the address bar
    await screenshot(page, "01-setup")
    await page.get_by_role("button", name="Register GitHub App").click()
    await expect(page.get_by_role("heading", name="GitHub App registered")).to_be_visible()
    await screenshot(page, "02-registered")
    [manifest] = fake_github.manifests.values()
    assert manifest["hook_attributes"] == {"url": services.settings.polling_hook_url, "active": True}
    assert services.settings.app_configured and services.github is not None  # no restart
    assert services.settings.github_client_id == fake_github.client_id
    assert not (services.settings.data_dir / registration.SETUP_TOKEN_FILE).exists()
    assert fake_github.client_secret not in (services.settings.data_dir / registration.REGISTRATION_FILE).read_text()

    # The App gets installed on acme/widgets (and, elsewhere, on other/hidden).
    scenario = open_pull_request(fake_github, config=PASSING)
    await record_project(services.store, scenario)
    fake_github.add_installation(99, "other", repos=["hidden"])
    await dash.record(99, "other/hidden")
    fake_github.set_permission("acme/widgets", "alice", "admin")
    fake_github.approve_oauth_as("alice", installation_ids=[INSTALLATION_ID])

    # 2. Log in with GitHub (the fake approves as alice).
    await page.get_by_role("link", name="Log in with GitHub").click()
    await expect(page.get_by_role("heading", name="Projects")).to_be_visible()
    await expect(page.get_by_role("link", name="alice")).to_be_visible()
    await screenshot(page, "03-projects")

    # 3. Pick the project, open its settings, change them.
    await page.get_by_label("Project").select_option("acme/widgets")
    await page.wait_for_url(dash.url + "/projects/acme/widgets")
    await page.get_by_role("link", name="Settings").click()
    await page.get_by_label("Repository rules").fill(RULES)
    # the repository's file sets validate: shown read-only, it is not typed here
    assert await page.get_by_label("Validate commands").get_attribute("readonly") is not None
    await page.get_by_label("Auto-merge").check()
    await page.get_by_label("Agent backend").select_option("codegen")  # agent fields show for a backend
    await page.get_by_label("Planning statement").fill("Small steps.")
    await page.get_by_role("button", name="Save settings").click()
    await expect(page.get_by_text("Settings saved.")).to_be_visible()
    assert await page.get_by_label("Repository rules").input_value() == RULES
    assert await page.get_by_label("Auto-merge").is_checked()
    assert await page.locator("b").count() == 0  # the rules' markup is text
    project = await services.store.projects.get_project_by_name("acme/widgets")
    assert project.repository_rules == RULES and project.validate_commands == []

    # 4. A secret: stored, listed by name, its value never rendered back.
    await page.get_by_label("Secret name").fill("DEPLOY_TOKEN")
    await page.get_by_label("Secret value").fill("s3cr3t-value-never-shown")
    await page.get_by_role("button", name="Save secret").click()
    await expect(page.get_by_role("cell", name="DEPLOY_TOKEN", exact=True)).to_be_visible()
    assert "s3cr3t-value-never-shown" not in await page.content()
    assert await services.store.projects.secret_values(project.id) == {"DEPLOY_TOKEN": "s3cr3t-value-never-shown"}
    await screenshot(page, "04-settings")

    # 5. The card changes live (no reload) when a validation of a PR completes.
    await page.goto(dash.url + "/")
    card = page.locator(f'[data-project-id="{project.id}"]')
    await expect(card.locator('[data-field="validation"]')).to_have_text("none")  # no PR is open yet
    await expect(page.get_by_text("live", exact=True)).to_be_visible()
    await page.evaluate("window.__notReloaded = true")
    async with aiohttp.ClientSession() as session:
        sender = WebhookSender(session, dash.url, fake_github.manifest_webhook_secret)
        answer = await sender.send("pull_request", scenario.payload("opened"))
        assert answer.status == 202, answer
    # Auto-merge (turned on above) merges the PR once it passed: the card then has no open PR to show.
    await expect(page.locator("#notifications li").first).to_contain_text(
        re.compile(r"acme/widgets #\d+: (Passed|Failed)"), timeout=60_000)
    await expect(page.locator("#notifications")).to_contain_text(f"acme/widgets #{scenario.number}: merged")
    await expect(card.locator('[data-field="headline-title"]')).to_have_text("Open pull requests")
    await expect(card.locator('[data-field="validation"]')).to_have_text("none")
    assert await page.evaluate("window.__notReloaded") is True
    await screenshot(page, "05-live-card")

    # The validation page the toast's PR links to, styled by its own stylesheet (no inline style allowed).
    [validation] = await services.store.validations.for_pr(project.id, scenario.number)
    await page.goto(f"{dash.url}/validations/{validation.id}")
    await expect(page.get_by_role("heading", level=1)).to_be_visible()
    assert await page.evaluate("getComputedStyle(document.querySelector('main')).maxWidth") == "1024px"  # 64rem
    await screenshot(page, "05b-validation")

    # 6. Phone width.
    await page.set_viewport_size({"width": 390, "height": 844})
    await screenshot(page, "06-phone")
    await page.goto(dash.url + "/projects/acme/widgets/settings")
    await screenshot(page, "07-phone-settings")
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the settings page scrolls sideways at phone width ({width}px)"

    # 7. Another installation's project, by URL: 404.
    response = await page.goto(dash.url + "/projects/other/hidden")
    assert response is not None and response.status == 404
    await context.close()
    assert refused == []  # every script and style is a file of ours: the Content-Security-Policy allows them
