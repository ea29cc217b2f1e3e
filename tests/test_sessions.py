"""Ending dashboard sessions server-side: logout and a revoked authorization end every session of the
user (a copied cookie, another browser), through the per-user session epoch; the decision is pure."""

from __future__ import annotations

import copy

import aiohttp
import pytest
from sqlalchemy import text
from yarl import URL

from bot import migrate
from bot.crypto import Crypto
from bot.db import Database
from bot.store import Store
from bot.store import projects as project_store
from dashboard.auth import COOKIE, session_stands
from tests.api_support import api_token_for
from tests.conftest import WEBHOOK_SECRET, BotUnderTest
from tests.dashboard_support import csrf_of
from tests.ghfixtures import load_webhook, require_fixtures
from tests.webhook_sender import WebhookSender


@pytest.mark.parametrize(("claims", "current", "stands"), [
    ({"uid": 1, "ep": 3}, 3, True),
    ({"uid": 1, "ep": 4}, 3, True),  # issued where the raise is known, read where it is not yet
    ({"uid": 1, "ep": 2}, 3, False),  # logged out (or revoked) since
    ({"uid": 1}, 0, True),  # issued before epochs existed, no logout since
    ({"uid": 1}, 1, False),
    ({"uid": 1, "ep": 0}, None, False),  # no such user
    ({"uid": 1, "ep": "9"}, 0, False),
    ({"uid": 1, "ep": True}, 0, False),
])
def test_session_stands(claims: dict, current: int | None, stands: bool) -> None:
    assert session_stands(claims, current) is stands


def cookie_of(session: aiohttp.ClientSession, url: str) -> str:
    return session.cookie_jar.filter_cookies(URL(url))[COOKIE].value


async def with_cookie(url: str, cookie: str) -> tuple[int, str, str | None]:
    """GET `url` from a browser that has only the session cookie `cookie`: status, Location, new cookie."""
    async with aiohttp.ClientSession() as client:
        async with client.get(url, headers={"Cookie": f"{COOKIE}={cookie}"}, allow_redirects=False) as response:
            new = response.cookies.get(COOKIE)
            return response.status, response.headers.get("Location", ""), new.value if new else None


async def assert_signed_in(dashboard, cookie: str) -> None:  # type: ignore[no-untyped-def]
    assert (await with_cookie(dashboard.url + "/projects/acme/widgets", cookie))[0] == 200
    assert (await with_cookie(dashboard.url + "/api/v1/projects", cookie))[0] == 200


async def assert_signed_out(dashboard, cookie: str) -> None:  # type: ignore[no-untyped-def]
    status, location, new = await with_cookie(dashboard.url + "/projects/acme/widgets", cookie)
    assert status == 302 and location.startswith("/auth/login?next=")
    assert new is not None and new != cookie  # replaced by an anonymous session
    status, _, _ = await with_cookie(dashboard.url + "/api/v1/projects", cookie)
    assert status == 401
    # ... and the cookie it was replaced by names nobody either
    assert (await with_cookie(dashboard.url + "/api/v1/projects", new))[0] == 401


async def test_logout_ends_every_session_of_the_user(dashboard) -> None:
    dashboard.fake.set_permission("acme/widgets", "alice", "read")
    dashboard.fake.set_permission("acme/widgets", "bob", "read")
    first = await dashboard.login("alice", installation_ids=[1])
    second = await dashboard.login("alice", installation_ids=[1])  # another browser of hers
    bobs = await dashboard.login("bob", installation_ids=[1])
    api_token = await api_token_for(dashboard.services.store, dashboard.fake, "alice", role="read")
    try:
        copied, other, bob = (cookie_of(s, dashboard.url) for s in (first, second, bobs))
        for cookie in (copied, other, bob):
            await assert_signed_in(dashboard, cookie)
        token = await csrf_of(first, dashboard.url + "/")
        async with first.post(dashboard.url + "/auth/logout", data={"csrf_token": token}) as response:
            assert response.status == 200 and "Log in with GitHub" in await response.text()
        await assert_signed_out(dashboard, copied)  # a copy of the cookie taken before the logout
        await assert_signed_out(dashboard, other)  # her other browser
        await assert_signed_in(dashboard, bob)  # nobody else
        async with aiohttp.ClientSession() as client:  # personal API tokens are revoked one by one
            async with client.get(dashboard.url + "/api/v1/projects",
                                  headers={"Authorization": f"Bearer {api_token}"}) as response:
                assert response.status == 200
        again = await dashboard.login("alice", installation_ids=[1])  # a new login is a new session
        async with again:
            await assert_signed_in(dashboard, cookie_of(again, dashboard.url))
    finally:
        for session in (first, second, bobs):
            await session.close()
    events = await dashboard.services.store.audit.list()
    assert [e.actor for e in events if e.action == "dashboard.logout"] == ["alice"]


async def test_logging_out_an_ended_session_ends_no_other(dashboard) -> None:
    """A stale copy of the cookie (it holds the CSRF token) cannot log her out of her new session."""
    dashboard.fake.set_permission("acme/widgets", "alice", "read")
    async with await dashboard.login("alice", installation_ids=[1]) as first:
        stale = cookie_of(first, dashboard.url)
        token = await csrf_of(first, dashboard.url + "/")
        async with first.post(dashboard.url + "/auth/logout", data={"csrf_token": token}) as response:
            assert response.status == 200
    async with await dashboard.login("alice", installation_ids=[1]) as current:
        async with aiohttp.ClientSession() as thief:
            async with thief.post(dashboard.url + "/auth/logout", data={"csrf_token": token},
                                  headers={"Cookie": f"{COOKIE}={stale}"}, allow_redirects=False) as response:
                assert response.status == 302
        await assert_signed_in(dashboard, cookie_of(current, dashboard.url))


async def test_revoked_authorization_ends_the_sessions(dashboard) -> None:
    require_fixtures()
    dashboard.fake.set_permission("acme/widgets", "alice", "read")
    alice = dashboard.fake.users["alice"]
    revoked = copy.deepcopy(load_webhook("github_app_authorization", "revoked"))
    revoked["sender"].update(id=alice["id"], login="alice")
    async with await dashboard.login("alice", installation_ids=[1]) as browser, aiohttp.ClientSession() as client:
        cookie = cookie_of(browser, dashboard.url)
        await assert_signed_in(dashboard, cookie)
        bot = BotUnderTest(dashboard.url, dashboard.services, WebhookSender(client, dashboard.url, WEBHOOK_SECRET))
        await bot.deliver("github_app_authorization", revoked)
        await assert_signed_out(dashboard, cookie)
    assert await dashboard.services.store.projects.user_access_token(int(alice["id"])) is None


async def test_session_epoch_migration_and_store(database_url: str) -> None:
    """0005 adds the epoch to existing users (0) and comes off again; the store raises and caches it."""
    from alembic import command

    db = Database(database_url)
    try:
        await db.run_migration(lambda conn: command.upgrade(migrate.alembic_config(conn), "0004"))
        await db.write(lambda conn: conn.execute(text(
            "INSERT INTO users (id, login, created_at, updated_at) VALUES (7, 'mona', CURRENT_TIMESTAMP, "
            "CURRENT_TIMESTAMP)")))
        assert await migrate.upgrade(db) == migrate.SCHEMA_HEAD
        store = Store(db, Crypto(Crypto.generate_key()))
        projects = store.projects
        assert await projects.session_epoch(7) == 0
        assert await projects.end_sessions(7) == 1
        assert await projects.forget_user_tokens(7, end_sessions=True)
        assert await projects.forget_user_tokens(7)  # tokens only
        assert await projects.session_epoch(7) == 2
        assert await projects.save_user(7, "mona", access_token="ghu_x") == 2  # a login keeps the epoch
        assert await projects.session_epoch(8) is None and await projects.end_sessions(8) is None

        # Another process (its own engine and cache) sees a raise within SESSION_EPOCH_SECONDS.
        now = [1000.0]
        other = Store(Database(database_url), Crypto(Crypto.generate_key()), clock=lambda: now[0])
        try:
            assert await other.projects.session_epoch(7) == 2
            assert await projects.end_sessions(7) == 3
            now[0] += project_store.SESSION_EPOCH_SECONDS - 0.1
            assert await other.projects.session_epoch(7) == 2  # its copy, still young
            now[0] += 0.2
            assert await other.projects.session_epoch(7) == 3
        finally:
            await other.close()

        await db.run_migration(lambda conn: command.downgrade(migrate.alembic_config(conn), "0004"))
        assert await migrate.current_revision(db) == "0004"
        assert await migrate.upgrade(db) == migrate.SCHEMA_HEAD
        epoch = await db.read(lambda conn: conn.execute(text("SELECT session_epoch FROM users WHERE id = 7")).scalar())
        assert epoch == 0  # the column came back, at 0 for the existing row
    finally:
        await db.dispose()
