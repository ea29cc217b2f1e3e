"""Helpers of the dashboard tests: the bot on a known port (PUBLIC_URL must be its real address for
GitHub's redirects), projects recorded from the fake GitHub, and a logged-in HTTP session."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import unused_port

from bot.services import SERVICES, Services
from bot.store import InstallationRef, RepoRef
from bot.app import create_app
from tests.fakes.github import FakeGitHub

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class Dashboard:
    url: str
    services: Services
    fake: FakeGitHub
    app: web.Application

    async def record(self, installation_id: int, *full_names: str) -> None:
        """The installation's repositories as projects, as the installation webhook records them."""
        owner = full_names[0].split("/")[0]
        await self.services.store.projects.upsert_installation(InstallationRef(id=installation_id, account_login=owner))
        await self.services.store.projects.upsert_projects(installation_id, [
            RepoRef(id=self.fake.repos[name]["id"], full_name=name) for name in full_names])

    async def login(self, login: str, *, installation_ids: list[int] | None = None) -> aiohttp.ClientSession:
        """An HTTP session logged in as `login` through the OAuth web flow (the fake approves at once)."""
        self.fake.approve_oauth_as(login, installation_ids=installation_ids)
        session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        async with session.get(self.url + "/auth/login") as response:
            assert response.status == 200, await response.text()
            assert str(response.url) == self.url + "/", response.url
        return session


async def start_dashboard(fake: FakeGitHub, aiohttp_server: Any, make_settings: Any, *, with_app: bool = True,
                          with_worker: bool = True, clock: Callable[[], float] = time.monotonic,
                          **env: str | None) -> Dashboard:
    """The app on 127.0.0.1 at PUBLIC_URL against `fake`, logging in through it (`with_app`: a GitHub App
    configured, else setup mode); `with_worker` and `clock` go to `create_app`, `env` to the settings."""
    port = unused_port()
    values: dict[str, str | None] = {"PUBLIC_URL": f"http://127.0.0.1:{port}", "GITHUB_API_URL": fake.api_url,
                                     "GITHUB_URL": fake.base_url}
    if with_app:
        values.update(GITHUB_CLIENT_ID=fake.client_id, GITHUB_CLIENT_SECRET=fake.client_secret)
    else:
        values.update(APP_ID=None, PRIVATE_KEY=None, WEBHOOK_SECRET=None)
    values.update(env)
    app = create_app(make_settings(**values), with_worker=with_worker, clock=clock)
    await aiohttp_server(app, host="127.0.0.1", port=port)
    return Dashboard(f"http://127.0.0.1:{port}", app[SERVICES], fake, app)


@pytest.fixture
async def dashboard(fake_github: FakeGitHub, aiohttp_server: Any, make_settings: Any) -> Dashboard:
    """The dashboard with one installation (1, acme) and its repository acme/widgets recorded as a project
    (registered in tests/conftest.py; a test file extends it by overriding it with one that asks for it)."""
    fake_github.add_installation(1, "acme", repos=["widgets"])
    dash = await start_dashboard(fake_github, aiohttp_server, make_settings)
    await dash.record(1, "acme/widgets")
    return dash


async def csrf_of(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(url) as response:
        found = CSRF.search(await response.text())
    assert found, f"no csrf_token on {url}"
    return found.group(1)
