"""Shared fixtures: settings, a store on SQLite or PostgreSQL, and the bot served over real HTTP
on 127.0.0.1 talking to the fake GitHub."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from bot import migrate
from bot.config import Settings, load_settings
from bot.crypto import Crypto
from bot.db import Database
from bot.events import AppEvent, wait_for
from bot.services import SERVICES, Services
from bot.store import Store
from bot.app import create_app
from tests.fakes.codegen import fake_codegen  # noqa: F401 - shared fixture
from tests.fakes.fixtures import *  # noqa: F401,F403 - app_private_key, fake_github
from tests.pg import postgres_cluster  # noqa: F401
from tests.browser import browser  # noqa: F401 - headless Chromium (Playwright)
from tests.dashboard_support import dashboard  # noqa: F401 - the dashboard with acme/widgets
from tests.webhook_sender import Answer, WebhookSender

WEBHOOK_SECRET = "whsec-test-0f1e2d3c4b5a"
APP_ID = 12345


@pytest.fixture
def make_settings(tmp_path: Path, app_private_key: str) -> Callable[..., Settings]:
    """Settings as the environment would give them; keyword arguments are environment variables."""

    def make(**env: str) -> Settings:
        values = {"DATA_DIR": str(tmp_path / "data"), "APP_ID": str(APP_ID), "PRIVATE_KEY": app_private_key,
                  "WEBHOOK_SECRET": WEBHOOK_SECRET, "LOG_LEVEL": "DEBUG", "JOB_LEASE_SECONDS": "5",
                  "RESYNC_INTERVAL": "0",  # tests that want the resync ask for it (tests/test_resync.py)
                  # Deliveries come from the test; the delivery log is swept or polled only where a test asks
                  # (tests/test_delivery_recovery.py, tests/test_polling_mode.py).
                  "WEBHOOK_MODE": "webhook", "SWEEP_INTERVAL": "0"}
        values.update(env)
        return load_settings({k: v for k, v in values.items() if v is not None}, dotenv_path=None)

    return make


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    return request.getfixturevalue("postgres_cluster").create_database()


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    db = Database(database_url)
    await migrate.upgrade(db)
    store = Store(db, Crypto(Crypto.generate_key()))
    yield store
    await store.close()


@dataclass
class BotUnderTest:
    url: str
    services: Services
    webhooks: WebhookSender

    @property
    def store(self) -> Store:
        return self.services.store

    async def deliver(self, event: str, payload: dict, *, timeout: float = 10.0, **options) -> tuple[Answer, AppEvent]:
        """Send a signed delivery and wait until the worker has finished its job."""
        with self.services.bus.subscribe() as events:
            answer = await self.webhooks.send(event, payload, **options)
            assert answer.status == 202, answer
            finished = await wait_for(events, "job.finished", timeout=timeout, delivery_id=answer.body["delivery"])
        return answer, finished


@pytest.fixture
async def start_bot(fake_github, aiohttp_server, make_settings) -> AsyncIterator[Callable[..., object]]:  # type: ignore[no-untyped-def]
    """Start the real app (web + in-process worker) on 127.0.0.1 against the fake GitHub. The fake is set
    up first so that it is torn down last: the app stops while GitHub still answers (else a job in
    flight at the end retries against a closed port until its backoff gives up)."""
    session = aiohttp.ClientSession()

    async def start(**env: str) -> BotUnderTest:
        env.setdefault("GITHUB_API_URL", fake_github.api_url)
        env.setdefault("GITHUB_URL", fake_github.base_url)
        app = create_app(make_settings(**env))
        server = await aiohttp_server(app)
        url = str(server.make_url("/")).rstrip("/")
        return BotUnderTest(url, app[SERVICES], WebhookSender(session, url, WEBHOOK_SECRET))

    yield start
    await session.close()


@pytest.fixture
async def bot(start_bot) -> BotUnderTest:  # type: ignore[no-untyped-def]
    return await start_bot()
