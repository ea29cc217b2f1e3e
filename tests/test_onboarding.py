"""Onboarding over HTTP and in Chromium: the logged-out home keeps the operator's details to the
operator, the setup page warns when GitHub cannot reach PUBLIC_URL, and a reloaded or expired
registration callback explains itself on a page with a way back."""

from __future__ import annotations

import html
import json
from pathlib import Path

import aiohttp
import pytest

from bot import registration
from bot.config import DEFAULT_POLLING_HOOK_URL, ConfigError, load_settings
from tests.browser import screenshot, watch_csp
from tests.dashboard_support import Dashboard, start_dashboard
from tests.registration_support import register_app

WARNING = "GitHub cannot reach this app"


def jar() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


def setup_link(dash: Dashboard) -> str:
    token = (dash.services.settings.data_dir / registration.SETUP_TOKEN_FILE).read_text().strip()
    return f"{dash.url}/?setup_token={token}"


async def page_of(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with session.get(url) as response:
        return response.status, await response.text()


async def test_the_logged_out_home_shows_no_operator_details(dashboard) -> None:
    settings = dashboard.services.settings
    async with jar() as session:
        status, page = await page_of(session, dashboard.url + "/")
    assert status == 200 and "Log in with GitHub" in page
    for detail in (settings.webhook_url, "/api/v1/webhooks", str(settings.app_id), 'href="/health"',
                   'href="/metrics"'):
        assert detail not in page, detail


async def test_the_setup_page_warns_that_github_cannot_reach_a_loopback_public_url(
        fake_github, aiohttp_server, make_settings) -> None:
    dash = await start_dashboard(fake_github, aiohttp_server, make_settings, with_app=False)
    async with jar() as session:
        status, anonymous = await page_of(session, dash.url + "/")
        assert status == 200 and WARNING not in anonymous  # only for who holds the setup link
        status, page = await page_of(session, setup_link(dash))
    assert status == 200 and "Register GitHub App" in page
    assert WARNING in page and "a loopback address" in page
    assert "set <code>PUBLIC_URL</code> to an https address GitHub can reach" in page
    assert f"ngrok http {dash.url.rsplit(':', 1)[1]}" in page  # a tunnel to the port it listens on


async def test_in_polling_mode_the_setup_page_says_a_loopback_public_url_is_fine(
        fake_github, aiohttp_server, make_settings) -> None:
    """WEBHOOK_MODE left to its default: a loopback PUBLIC_URL means polling, so nothing is wrong."""
    dash = await start_dashboard(fake_github, aiohttp_server, make_settings, with_app=False, WEBHOOK_MODE=None)
    assert dash.services.settings.webhook_mode == "poll"
    async with jar() as session:
        status, page = await page_of(session, setup_link(dash))
    assert status == 200 and "Register GitHub App" in page
    assert "GitHub cannot reach this app: it will poll instead" in page and 'role="alert"' not in page
    assert "reads the App's delivery log on GitHub every 5 s" in page
    disclosure = " ".join(page.replace("<wbr>", "").split())
    assert ("GitHub will send each event's payload (pull request titles and bodies, comments, commit messages) "
            f"to <code>{DEFAULT_POLLING_HOOK_URL}</code>") in disclosure
    assert "It should be a URL you trust" in disclosure and "this one is a placeholder on example.com" in disclosure
    assert "harmless" not in page
    assert "change the App's webhook URL on GitHub too" in page  # moving to webhooks later


async def test_polling_hook_url_chooses_where_github_posts_the_events_in_polling_mode(
        fake_github, aiohttp_server, make_settings) -> None:
    chosen = "https://discard.example.org/codegenapp"
    dash = await start_dashboard(fake_github, aiohttp_server, make_settings, with_app=False, WEBHOOK_MODE=None,
                                 POLLING_HOOK_URL=chosen)
    async with jar() as session:
        status, page = await page_of(session, setup_link(dash))
        assert status == 200
        disclosure = page.replace("<wbr>", "")
        assert f"to <code>{chosen}</code></strong>" in disclosure and "it is your <code>POLLING_HOOK_URL</code>" in page
        assert "placeholder on example.com" not in page
        callback = await register_app(session, setup_link(dash))
    assert callback.status == 200, callback.page
    [manifest] = fake_github.manifests.values()
    assert manifest["hook_attributes"] == {"url": chosen, "active": True}


@pytest.mark.parametrize(("url", "problem"), [
    ("http://discard.example.org/hook", "POLLING_HOOK_URL must be an https URL, got 'http://discard.example.org/hook'"),
    ("https://127.0.0.1/hook", "POLLING_HOOK_URL must be an address GitHub can reach, not a loopback address"),
    ("https://10.1.2.3/hook", "POLLING_HOOK_URL must be an address GitHub can reach, not a private-range address"),
    ("https://localhost/hook", "POLLING_HOOK_URL must be an address GitHub can reach, not a loopback name")])
def test_polling_hook_url_must_be_https_and_reachable_by_github(tmp_path: Path, url: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"DATA_DIR": str(tmp_path), "POLLING_HOOK_URL": url}, dotenv_path=None)
    assert [p for p in caught.value.problems if p.startswith(problem)], caught.value.problems
    unset = load_settings({"DATA_DIR": str(tmp_path), "POLLING_HOOK_URL": ""}, dotenv_path=None)
    assert unset.polling_hook_url == DEFAULT_POLLING_HOOK_URL


async def test_the_setup_page_does_not_warn_for_a_public_address(fake_github, aiohttp_server, make_settings) -> None:
    # http: under https the session cookie is Secure, and this client speaks plain HTTP to 127.0.0.1
    dash = await start_dashboard(fake_github, aiohttp_server, make_settings, with_app=False,
                                 PUBLIC_URL="http://codegen.example.com")
    async with jar() as session:
        status, page = await page_of(session, setup_link(dash))
    assert status == 200 and "Register GitHub App" in page and WARNING not in page


async def test_registering_from_a_laptop_in_polling_mode_sends_a_placeholder_webhook_github_accepts(
        fake_github, aiohttp_server, make_settings) -> None:
    """A loopback PUBLIC_URL, polling: GitHub refuses a webhook URL it cannot reach, so the manifest names a
    public placeholder, kept active (GitHub logs an active webhook's deliveries only: polling reads them)."""
    dash = await start_dashboard(fake_github, aiohttp_server, make_settings, with_app=False, WEBHOOK_MODE=None)
    assert dash.services.settings.webhook_mode == "poll"
    async with jar() as session:
        callback = await register_app(session, setup_link(dash))
    assert callback.status == 200 and "GitHub App registered" in callback.page, callback.page
    [manifest] = fake_github.manifests.values()
    assert manifest["hook_attributes"] == {"url": DEFAULT_POLLING_HOOK_URL, "active": True}
    assert manifest["redirect_url"] == dash.url + "/setup/callback"  # the browser's way back stays this app's
    assert dash.services.settings.app_configured


async def test_registering_in_webhook_mode_with_a_loopback_public_url_is_refused_by_github(
        fake_github, aiohttp_server, make_settings) -> None:
    """WEBHOOK_MODE=webhook insists on this app's own URL: GitHub.com refuses it, and the page says why."""
    dash = await start_dashboard(fake_github, aiohttp_server, make_settings, with_app=False, WEBHOOK_MODE="webhook")
    async with jar() as session:
        status, page = await page_of(session, setup_link(dash))
        manifest = json.loads(html.unescape(page.split('name="manifest" value="', 1)[1].split('"', 1)[0]))
        assert manifest["hook_attributes"]["url"] == dash.services.settings.webhook_url
        assert "GitHub.com refuses to register an App with the webhook URL below" in page
        callback = await register_app(session, setup_link(dash))
    assert callback.status == 502
    assert "isn&#39;t reachable over the public Internet (127.0.0.1)" in callback.page, callback.page
    [refused] = fake_github.take_errors()
    assert "/conversions -> 422" in refused and "reachable over the public Internet" in refused
    assert not dash.services.settings.app_configured


async def test_a_reloaded_registration_callback_gets_a_page_with_a_way_back(
        fake_github, aiohttp_server, make_settings) -> None:
    dash = await start_dashboard(fake_github, aiohttp_server, make_settings, with_app=False, WEBHOOK_MODE=None)
    async with jar() as session:
        callback = await register_app(session, setup_link(dash))
        assert callback.status == 200 and "GitHub App registered" in callback.page
        async with session.get(callback.url) as response:  # the browser's reload
            status, page, kind = response.status, await response.text(), response.content_type
    assert (status, kind) == (409, "text/html")
    assert "<h1>The GitHub App is already registered</h1>" in page and 'href="/"' in page
    assert dash.services.settings.app_configured


async def test_an_expired_registration_callback_gets_a_page_with_a_way_back(
        fake_github, aiohttp_server, make_settings) -> None:
    dash = await start_dashboard(fake_github, aiohttp_server, make_settings, with_app=False)
    async with jar() as session:
        await page_of(session, setup_link(dash))  # this browser may register
        async with session.get(dash.url + "/setup/callback?code=abc&state=expired") as response:
            status, page, kind = response.status, await response.text(), response.content_type
    assert (status, kind) == (400, "text/html")
    assert "<h1>This registration link has expired</h1>" in page and 'href="/"' in page
    assert "Nothing was registered" in page and not dash.services.settings.app_configured


@pytest.mark.slow
async def test_screenshots_of_the_setup_page_and_the_logged_out_home(
        browser, fake_github, aiohttp_server, make_settings) -> None:
    from playwright.async_api import expect

    dash = await start_dashboard(fake_github, aiohttp_server, make_settings, with_app=False, WEBHOOK_MODE="poll")
    for width in (1280, 390):
        context = await browser.new_context(viewport={"width": width, "height": 800})
        page = await context.new_page()
        refused = watch_csp(page)
        await page.goto(setup_link(dash))
        await expect(page.get_by_role("heading", name=WARNING)).to_be_visible()
        await expect(page.get_by_role("button", name="Register GitHub App")).to_be_visible()
        await screenshot(page, f"onboarding-setup-{width}")
        assert await page.evaluate("document.documentElement.scrollWidth") <= width
        assert refused == []
        await context.close()

    context = await browser.new_context(viewport={"width": 390, "height": 800})
    page = await context.new_page()
    await page.goto(setup_link(dash))
    await page.get_by_role("button", name="Register GitHub App").click()
    await expect(page.get_by_role("heading", name="GitHub App registered")).to_be_visible()
    await screenshot(page, "onboarding-registered-390")
    await page.reload()
    await expect(page.get_by_role("heading", name="The GitHub App is already registered")).to_be_visible()
    await screenshot(page, "onboarding-callback-reloaded-390")
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390
    await page.get_by_role("link", name="Back to the start page").click()
    await page.wait_for_url(dash.url + "/")
    await context.close()

    for width in (1280, 390):
        context = await browser.new_context(viewport={"width": width, "height": 800})  # logged out
        page = await context.new_page()
        refused = watch_csp(page)
        await page.goto(dash.url + "/")
        await expect(page.get_by_role("link", name="Log in with GitHub")).to_be_visible()
        await screenshot(page, f"onboarding-home-logged-out-{width}")
        assert refused == []
        await context.close()
