"""Leases for work that must run in one process at a time, across processes (the delivery-log sweep,
the resync of open pull requests, pruning), and the small named facts the app keeps across restarts.

A lease is one statement: an upsert whose update only happens when the row is free, expired or already
this holder's (a renewal), as the merge lock is (bot/store/pull_requests.py).

Work that holds a lease for longer than one GitHub call runs under `held`: a task of its own renews the
lease every third of its time, whatever the work is waiting on (a retry, a rate limit's wait), and
cancels the work if the lease is lost."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any, TypeVar

from sqlalchemy import delete, select

from bot.db import Database
from bot.models import AppState, Lease, utcnow
from bot.store.sql import upsert_insert


class LeaseStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def acquire(self, name: str, holder: str, *, ttl: timedelta) -> bool:
        """Take (or renew) the lease `name` for `ttl` if it is free, expired or `holder`'s own."""
        now = utcnow()
        stmt = upsert_insert(self._db, Lease).values(name=name, holder=holder, expires_at=now + ttl)
        stmt = stmt.on_conflict_do_update(
            index_elements=["name"], set_={"holder": holder, "expires_at": now + ttl},
            where=(Lease.expires_at < now) | (Lease.holder == holder)).returning(Lease.holder)
        return await self._db.write(lambda conn: conn.execute(stmt).scalar_one_or_none() == holder)

    async def release(self, name: str, holder: str) -> None:
        await self._db.write(lambda conn: conn.execute(
            delete(Lease).where(Lease.name == name, Lease.holder == holder)))

    async def holder(self, name: str) -> str | None:
        """Who holds the lease now (None: nobody, or it expired)."""
        now = utcnow()
        return await self._db.read(lambda conn: conn.execute(
            select(Lease.holder).where(Lease.name == name, Lease.expires_at >= now)).scalar_one_or_none())


log = logging.getLogger(__name__)


class LeaseLost(Exception):
    """The lease was taken over (or could not be renewed before it expired): the work under it was cancelled."""


@asynccontextmanager
async def held(leases: LeaseStore, name: str, holder: str, *, ttl: timedelta) -> AsyncIterator[bool]:
    """Hold the lease `name` for the body: yields False at once when another holder has it. While the body
    runs, a background task renews it every `ttl`/3; when a renewal is refused (another holder took it) or
    none succeeded for `ttl` (the database away), the body's task is cancelled and `LeaseLost` raised
    here. The lease is released on exit (not when lost: it is someone else's)."""
    if not await leases.acquire(name, holder, ttl=ttl):
        yield False
        return
    body = asyncio.current_task()
    assert body is not None
    loop = asyncio.get_running_loop()
    seconds = ttl.total_seconds()
    lost: list[str] = []

    async def keep() -> None:
        renewed = loop.time()
        while True:
            await asyncio.sleep(seconds / 3)
            try:
                if await leases.acquire(name, holder, ttl=ttl):
                    renewed = loop.time()
                    continue
                lost.append(f"the lease {name!r} was taken by {await leases.holder(name)}")
            except Exception as exc:  # noqa: BLE001 - tried again until the lease would have expired
                log.warning("renewing the lease %r failed: %s", name, exc)
                if loop.time() - renewed < seconds:
                    continue
                lost.append(f"the lease {name!r} could not be renewed for {seconds:g} s ({exc})")
            body.cancel()
            return

    keeper = asyncio.create_task(keep(), name=f"lease:{name}")
    try:
        yield True
    except asyncio.CancelledError:
        if lost and body.uncancel() == 0:  # cancelled by the keeper only: the lease is gone
            raise LeaseLost(lost[0]) from None
        raise
    finally:
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)
        if not lost:
            try:
                await leases.release(name, holder)
            except Exception:  # noqa: BLE001 - it expires by itself
                log.exception("releasing the lease %r failed", name)


T = TypeVar("T")


async def run_once(leases: LeaseStore, name: str, holder: str, *, ttl: timedelta, work: Callable[[], Awaitable[T]],
                   doing: str, level: int = logging.INFO) -> T | None:
    """`work()` under the lease `name` (`held`); None when another process holds it, logged as that process
    `doing` the work now: the run-once shape of the sweeps, the resync, the recovery and the prune."""
    async with held(leases, name, holder, ttl=ttl) as mine:
        if not mine:
            log.log(level, "%s: another process (%s) is at it", doing, await leases.holder(name))
            return None
        return await work()


class AppStateStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, key: str) -> dict[str, Any] | None:
        return await self._db.read(lambda conn: conn.execute(
            select(AppState.value).where(AppState.key == key)).scalar_one_or_none())

    async def put(self, key: str, value: dict[str, Any]) -> None:
        now = utcnow()
        stmt = upsert_insert(self._db, AppState).values(key=key, value=value, updated_at=now)
        stmt = stmt.on_conflict_do_update(index_elements=["key"], set_={"value": value, "updated_at": now})
        await self._db.write(lambda conn: conn.execute(stmt))
