"""What the delivery-log sweep (pipeline/deliveries) reads and writes besides the deliveries themselves:
which guids are known (stored, or skipped before) and the entries it skipped, with the reason."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, select

from bot.db import Database
from bot.models import Delivery, SkippedDelivery, utcnow
from bot.store.sql import upsert_insert

_CHUNK = 500  # guids per IN (...) list


@dataclass(frozen=True)
class Skipped:
    guid: str
    log_id: int
    event: str | None
    reason: str
    skipped_at: datetime


class DeliveryLogStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def known(self, guids: Collection[str]) -> set[str]:
        """Which of `guids` (X-GitHub-Delivery values) are stored deliveries or skipped log entries."""
        wanted = list(dict.fromkeys(guids))

        def work(conn: Connection) -> set[str]:
            found: set[str] = set()
            for start in range(0, len(wanted), _CHUNK):
                chunk = wanted[start:start + _CHUNK]
                found.update(conn.execute(select(Delivery.id).where(Delivery.id.in_(chunk))).scalars())
                found.update(conn.execute(
                    select(SkippedDelivery.guid).where(SkippedDelivery.guid.in_(chunk))).scalars())
            return found

        return await self._db.read(work) if wanted else set()

    async def anything_known(self) -> bool:
        """Whether any delivery is stored or any log entry skipped (False: a new database)."""
        def work(conn: Connection) -> bool:
            return conn.execute(select(Delivery.id).limit(1)).first() is not None or \
                conn.execute(select(SkippedDelivery.guid).limit(1)).first() is not None

        return await self._db.read(work)

    async def skip(self, guid: str, *, log_id: int, event: str | None, reason: str) -> None:
        """Record an entry that cannot be ingested; the first reason recorded stays."""
        stmt = upsert_insert(self._db, SkippedDelivery).values(
            guid=guid, log_id=log_id, event=event, reason=reason, skipped_at=utcnow(),
        ).on_conflict_do_nothing(index_elements=["guid"])
        await self._db.write(lambda conn: conn.execute(stmt))

    async def skipped(self, *, limit: int = 100) -> list[Skipped]:
        """The skipped entries, newest first."""
        stmt = (select(SkippedDelivery.guid, SkippedDelivery.log_id, SkippedDelivery.event, SkippedDelivery.reason,
                       SkippedDelivery.skipped_at).order_by(SkippedDelivery.skipped_at.desc()).limit(limit))
        return await self._db.read(lambda conn: [Skipped(*row) for row in conn.execute(stmt)])
