"""The dashboard over HTTP: GitHub login, who sees what, CSRF, settings and secrets, setup mode."""

from __future__ import annotations

import json
import stat

import aiohttp
import pytest

from bot import registration
from tests.dashboard_support import csrf_of, start_dashboard


@pytest.fixture
async def dashboard(dashboard):  # type: ignore[no-untyped-def]
    """tests/dashboard_support.py's, with a second installation, of another owner (2, other/secret-plans)."""
    dashboard.fake.add_installation(2, "other", repos=["secret-plans"])
    await dashboard.record(2, "other/secret-plans")
    return dashboard


async def test_login_shows_only_the_users_installations(dashboard) -> None:
    async with await dashboard.login("alice", installation_ids=[1]) as session:
        async with session.get(dashboard.url + "/") as response:
            page = await response.text()
        assert "acme/widgets" in page and "other/secret-plans" not in page
        assert "alice" in page
        async with session.get(dashboard.url + "/projects/acme/widgets") as response:
            assert response.status == 200
        async with session.get(dashboard.url + "/projects/other/secret-plans") as response:
            assert response.status == 404  # exists, but not for alice
        async with session.get(dashboard.url + "/projects/nobody/nothing") as response:
            assert response.status == 404
        async with session.get(dashboard.url + "/projects/acme/widgets/settings") as response:
            assert response.status == 403  # she sees it, with read access only
    [grant] = dashboard.fake.oauth_grants
    user = await dashboard.services.store.projects.get_user(int(dashboard.fake.users["alice"]["id"]))
    assert user is not None and user.login == "alice"
    assert grant["token"] not in (user.access_token_encrypted or "")  # stored encrypted
    assert await dashboard.services.store.projects.user_access_token(user.id) == grant["token"]


async def test_anonymous_pages_ask_for_login(dashboard) -> None:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        async with session.get(dashboard.url + "/") as response:
            assert "Log in with GitHub" in await response.text()
            cookie = response.cookies.get("cga_session")
        async with session.get(dashboard.url + "/projects/acme/widgets", allow_redirects=False) as response:
            assert response.status == 302 and response.headers["Location"].startswith("/auth/login?next=")
        async with session.get(dashboard.url + "/api/v1/ws") as response:
            assert response.status == 401
    assert cookie is not None and cookie["httponly"] and cookie["samesite"] == "Lax" and not cookie["secure"]


async def test_oauth_state_is_single_use_and_bound_to_the_browser(dashboard) -> None:
    dashboard.fake.approve_oauth_as("alice")
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        async with session.get(dashboard.url + "/auth/login", allow_redirects=False) as response:
            authorize = response.headers["Location"]
        async with session.get(authorize, allow_redirects=False) as response:
            callback = response.headers["Location"]
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as other_browser:
            async with other_browser.get(callback) as response:
                assert response.status == 400  # another session's state
        async with session.get(callback) as response:
            assert response.status == 400  # popped by the attempt above: single use
        async with session.get(dashboard.url + "/auth/login") as response:
            assert response.status == 200 and "alice" in await response.text()
    dashboard.fake.take_errors()  # the code was used once, by the first attempt


async def test_post_without_the_csrf_token_is_refused(dashboard) -> None:
    dashboard.fake.set_permission("acme/widgets", "alice", "maintain")
    async with await dashboard.login("alice", installation_ids=[1]) as session:
        settings_url = dashboard.url + "/projects/acme/widgets/settings"
        form = {"repository_rules": "changed", "max_fix_attempts": "3"}
        async with session.post(settings_url, data=form, allow_redirects=False) as response:
            assert response.status == 403 and "CSRF" in await response.text()
        async with session.post(settings_url, data={**form, "csrf_token": "forged"}, allow_redirects=False) as response:
            assert response.status == 403
        token = await csrf_of(session, settings_url)
        async with session.post(settings_url, data=form, headers={"X-CSRF-Token": token},
                                allow_redirects=False) as response:
            assert response.status == 303
    project = await dashboard.services.store.projects.get_project_by_name("acme/widgets")
    assert project.repository_rules == "changed"


async def test_settings_round_trip_exactly_and_are_validated(dashboard) -> None:
    dashboard.fake.set_permission("acme/widgets", "alice", "admin")
    rules = "\nKeep <script>alert('x')</script> & {{ 7*7 }} {% raw %} as typed.\n  indented\n"
    async with await dashboard.login("alice", installation_ids=[1]) as session:
        url = dashboard.url + "/projects/acme/widgets/settings"
        token = await csrf_of(session, url)
        form = {"csrf_token": token, "repository_rules": rules.replace("\n", "\r\n"),
                "setup_commands": "pip install -e .\r\n\r\nmake deps", "validate_commands": "pytest -q",
                "auto_merge_enabled": "on", "planning_statement": "Plan small.", "agent_backend": "local",
                "agent_command": "my-agent --goal-file GOAL", "max_fix_attempts": "5"}
        async with session.post(url, data=form) as response:
            page = await response.text()
            assert response.status == 200 and "Settings saved." in page
        project = await dashboard.services.store.projects.get_project_by_name("acme/widgets")
        assert project.repository_rules == rules
        assert project.setup_commands == ["pip install -e .", "make deps"]
        assert (project.auto_merge_enabled, project.auto_confirm_plans) == (True, False)
        assert (project.agent_backend, project.max_fix_attempts) == ("local", 5)
        assert "<script>alert" not in page and "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; {{ 7*7 }}" in page

        bad = {**form, "repository_rules": "x" * 20_001, "max_fix_attempts": "99", "agent_backend": "mystery"}
        async with session.post(url, data=bad) as response:
            page = await response.text()
        assert response.status == 400 and "Nothing was saved" in page
        assert "Repository rules is 20001 characters long; the limit is 20000" in page
        assert "Max fix attempts must be a whole number from 0 to 20" in page
        assert "Agent backend must be one of" in page
        assert (await dashboard.services.store.projects.get_project_by_name("acme/widgets")).max_fix_attempts == 5

        async with session.get(dashboard.url + "/projects/acme/widgets/audit") as response:
            audit = await response.text()
        assert "@alice changed the settings: " in audit and "project.settings.updated" not in audit


async def test_secrets_are_added_replaced_deleted_and_never_shown(dashboard) -> None:
    dashboard.fake.set_permission("acme/widgets", "alice", "admin")
    store = dashboard.services.store
    project = await store.projects.get_project_by_name("acme/widgets")
    async with await dashboard.login("alice", installation_ids=[1]) as session:
        url = dashboard.url + "/projects/acme/widgets/settings"
        token = await csrf_of(session, url)
        for value in ("first-value-123", "second-value-456"):
            async with session.post(dashboard.url + "/projects/acme/widgets/secrets",
                                    data={"csrf_token": token, "name": "DEPLOY_KEY", "value": value}) as response:
                page = await response.text()
            assert response.status == 200 and "DEPLOY_KEY" in page and value not in page
        assert await store.projects.secret_values(project.id) == {"DEPLOY_KEY": "second-value-456"}
        async with session.post(dashboard.url + "/projects/acme/widgets/secrets",
                                data={"csrf_token": token, "name": "bad-name", "value": "v"}) as response:
            assert response.status == 400 and "must be capital letters" in await response.text()
        async with session.post(dashboard.url + "/projects/acme/widgets/secrets",
                                data={"csrf_token": token, "name": "BIG", "value": "x" * (64 * 1024 + 1)}) as response:
            assert response.status == 400 and "larger than 64 KiB" in await response.text()
        async with session.post(dashboard.url + "/projects/acme/widgets/secrets/DEPLOY_KEY/delete",
                                data={"csrf_token": token}) as response:
            assert response.status == 200
        assert await store.projects.secret_values(project.id) == {}
    actions = [e.action for e in await store.audit.list(project_id=project.id)]
    assert {"project.secret.added", "project.secret.replaced", "project.secret.deleted"} <= set(actions)


async def test_markup_in_titles_renders_as_text(dashboard) -> None:
    store = dashboard.services.store
    project = await store.projects.get_project_by_name("acme/widgets")
    state = await store.validations.create(project_id=project.id, pr_number=7, head_sha="a" * 40)
    await store.validations.start(state.id)
    await store.validations.complete(state.id, conclusion="failure", title='<img src=x onerror="alert(1)">',
                                     results={})
    async with await dashboard.login("alice", installation_ids=[1]) as session:
        async with session.get(dashboard.url + "/projects/acme/widgets") as response:
            page = await response.text()
    assert "<img src=x" not in page and "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in page


async def test_personal_api_token_authenticates_without_csrf(dashboard) -> None:
    async with await dashboard.login("alice", installation_ids=[1]) as session:
        token = await csrf_of(session, dashboard.url + "/account")
        async with session.post(dashboard.url + "/account/tokens", data={"csrf_token": token, "name": "ci"}) as response:
            page = await response.text()
    api_token = page.split('id="new-token">', 1)[1].split("<", 1)[0]
    assert api_token.startswith("cga_")
    async with aiohttp.ClientSession() as client:
        headers = {"Authorization": f"Bearer {api_token}"}
        async with client.ws_connect(dashboard.url + "/api/v1/ws", headers=headers) as ws:
            project = await dashboard.services.store.projects.get_project_by_name("acme/widgets")
            hidden = await dashboard.services.store.projects.get_project_by_name("other/secret-plans")
            dashboard.services.bus.publish("validation.started", project_id=hidden.id, validation_id="h", pr_number=1)
            dashboard.services.bus.publish("validation.started", project_id=project.id, validation_id="v", pr_number=2)
            first = await ws.receive_json(timeout=5)
        assert first == {"event": "validation.started",
                         "data": {"project_id": project.id, "validation_id": "v", "pr_number": 2,
                                  "repository": "acme/widgets", "label": "Running"}}
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.ws_connect(dashboard.url + "/api/v1/ws", headers={"Authorization": "Bearer cga_wrong"})
        assert refused.value.status == 401
    tokens = await dashboard.services.store.projects.api_tokens(int(dashboard.fake.users["alice"]["id"]))
    assert [t.name for t in tokens] == ["ci"] and tokens[0].token_hash != api_token


async def test_setup_mode_needs_the_setup_token(fake_github, aiohttp_server, make_settings) -> None:
    dash = await start_dashboard(fake_github, aiohttp_server, make_settings, with_app=False)
    settings = dash.services.settings
    path = settings.data_dir / registration.SETUP_TOKEN_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        async with session.get(dash.url + "/") as response:
            page = await response.text()
        assert "not configured" in page and "Register GitHub App" not in page
        async with session.get(dash.url + "/?setup_token=guess") as response:
            assert response.status == 403
        async with session.get(dash.url + "/?setup_token=" + path.read_text().strip()) as response:
            page = await response.text()
        assert str(response.url) == dash.url + "/" and "Register GitHub App" in page
        manifest = json.loads(page.split('name="manifest" value="', 1)[1].split('"', 1)[0].replace("&#34;", '"')
                              .replace("&amp;", "&"))
    assert manifest["hook_attributes"]["url"] == dash.url + "/api/v1/webhooks/github"
    assert manifest["redirect_url"] == dash.url + "/setup/callback"
    assert manifest["callback_urls"] == [dash.url + "/auth/callback"] and manifest["public"] is False
    assert manifest["default_events"] == ["pull_request", "check_run", "check_suite", "issue_comment", "merge_group",
                                          "push"]
    assert manifest["default_permissions"] == {"metadata": "read", "checks": "write", "contents": "write",
                                               "pull_requests": "write", "statuses": "read", "merge_queues": "read"}
    async with aiohttp.ClientSession() as stranger:
        async with stranger.get(dash.url + "/setup/callback?code=abc&state=whatever") as response:
            assert response.status == 400


async def test_environment_wins_over_the_stored_registration(make_settings, app_private_key) -> None:
    settings = make_settings(APP_ID=None, PRIVATE_KEY=None, WEBHOOK_SECRET="from-env")
    registration.save(settings, registration.Registration(
        app_id="777", slug="mine", html_url="https://github.com/apps/mine", client_id="Iv1.abc",
        private_key=app_private_key, webhook_secret="stored-secret", client_secret="client-secret-xyz"))
    text = (settings.data_dir / registration.REGISTRATION_FILE).read_text()
    assert "stored-secret" not in text and "client-secret-xyz" not in text and "PRIVATE KEY" not in text
    assert stat.S_IMODE((settings.data_dir / registration.REGISTRATION_FILE).stat().st_mode) == 0o600
    applied = registration.apply(settings)
    assert (applied.app_id, applied.webhook_secrets, applied.github_client_secret) == (
        "777", ("from-env",), "client-secret-xyz")
    assert applied.private_key == app_private_key and applied.app_configured
