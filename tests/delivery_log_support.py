"""Helpers of the delivery-log tests (tests/test_delivery_recovery.py, tests/test_polling_mode.py) and
bench/recovery.py: what the app stored of a delivery, its jobs, the sweep's last run."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from bot.events import wait_for
from bot.models import Delivery, Job
from bot.store import Store
from pipeline.deliveries.service import STATE_KEY
from tests.fakes.github import FakeGitHub
from tests.pg import free_port
from tests.pull_requests import Scenario, open_pull_request

PASSING = "validate:\n  - test -f app.py\n"


def nowhere() -> str:
    """A webhook URL nothing listens at: GitHub's POST fails to connect (the app is down, or unreachable)."""
    return f"http://127.0.0.1:{free_port()}/api/v1/webhooks/github"


def pull_requests(fake: FakeGitHub, count: int) -> list[Scenario]:
    return [open_pull_request(fake, config=PASSING) for _ in range(count)]


async def stored_sources(store: Store, guids: list[str]) -> dict[str, str]:
    """guid -> deliveries.source of those stored."""
    stmt = select(Delivery.id, Delivery.source).where(Delivery.id.in_(guids))
    return dict(await store.db.read(lambda conn: conn.execute(stmt).all()))


async def jobs_per_delivery(store: Store, guids: list[str]) -> dict[str, int]:
    stmt = select(Job.delivery_id, func.count()).where(Job.delivery_id.in_(guids)).group_by(Job.delivery_id)
    return dict(await store.db.read(lambda conn: conn.execute(stmt).all()))


async def last_sweep(store: Store) -> dict[str, Any] | None:
    state = await store.app_state.get(STATE_KEY)
    return state.get("last_run") if state else None


async def delivery_log_health(bot: Any) -> dict[str, Any]:
    """/health's `delivery_log` part (a failed sweep does not make the app unhealthy: 200 all the same)."""
    async with bot.webhooks.session.get(f"{bot.url}/health") as response:
        assert response.status == 200
        return (await response.json())["delivery_log"]  # type: ignore[no-any-return]


async def swept(bot: Any, *, timeout: float = 30.0) -> dict[str, Any]:
    """The first sweep a started app ran by itself, once it has ended (its `last_run` record)."""
    with bot.services.bus.subscribe() as events:
        if (last := await last_sweep(bot.store)) is None:
            await wait_for(events, "delivery_log.swept", timeout=timeout)
            last = await last_sweep(bot.store)
    assert last is not None
    return last

