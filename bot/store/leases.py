"""Leases for work that must run in one process at a time, across processes (the delivery-log sweep,
the resync of open pull requests, pruning), and the small named facts the app keeps across restarts.

A lease is one statement: an upsert whose update only happens when the row is free, expired or already
this holder's (a renewal), as the merge lock is (bot/store/pull_requests.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

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
