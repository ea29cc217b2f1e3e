"""Webhook deliveries and the jobs that handle them, stored together in one transaction."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cachetools import LRUCache
from sqlalchemy import Connection, func, insert, select

from bot.db import Database
from bot.models import JOB_QUEUED, JOB_RUNNING, Delivery, Job, utcnow
from bot.store.batch import GroupCommit
from bot.store.prepared import Prepared
from bot.store.sql import upsert_insert

_INSERT_JOB = Prepared(insert(Job).returning(Job.id))


@dataclass(frozen=True)
class IncomingDelivery:
    id: str
    event: str
    action: str | None
    installation_id: int | None
    payload: str
    job_kind: str
    max_attempts: int
    # When set, the job is stored already leased to this worker, which runs it straight away
    # (no claim round trip); if that worker dies the lease expires and any worker takes it.
    lease_owner: str | None = None
    lease_seconds: float = 60.0
    parsed: dict[str, Any] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class StoredDelivery:
    duplicate: bool
    job_id: int | None = None


@dataclass(frozen=True)
class DeliveryRecord:
    id: str
    event: str
    action: str | None
    installation_id: int | None
    payload: str
    received_at: datetime
    parsed: dict[str, Any] | None = field(default=None, compare=False, repr=False)

    def data(self) -> dict[str, Any]:
        return self.parsed if self.parsed is not None else json.loads(self.payload)


class DeliveryStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._batcher: GroupCommit[IncomingDelivery, StoredDelivery] = GroupCommit(self._store_batch)
        # Deliveries handed to this process's worker as they are stored are read back by their job a
        # moment later: keep them (parsed) until then. As many as the worker has webhook slots; the
        # bound is only a safety net. Queued ones are read from the database when claimed.
        self._recent: LRUCache[str, DeliveryRecord] = LRUCache(maxsize=256)
        self._insert = Prepared(upsert_insert(db, Delivery).on_conflict_do_nothing(index_elements=["id"])
                                .returning(Delivery.id))

    async def store(self, delivery: IncomingDelivery) -> StoredDelivery:
        return await self._batcher.submit(delivery)

    async def _store_batch(self, items: list[IncomingDelivery]) -> list[StoredDelivery]:
        now = utcnow()
        first_by_id: dict[str, IncomingDelivery] = {}
        for item in items:
            first_by_id.setdefault(item.id, item)

        def work(conn: Connection) -> tuple[set[str], dict[str, int]]:
            inserted: set[str] = set()
            job_ids: dict[str, int] = {}
            for d in first_by_id.values():
                row = {"id": d.id, "event": d.event, "action": d.action, "installation_id": d.installation_id,
                       "payload": d.payload, "received_at": now}
                if self._insert.run(conn, row).rows:  # nothing when the id is known: a duplicate
                    inserted.add(d.id)
                    job_ids[d.id] = _INSERT_JOB.run(conn, _job_row(d, now)).scalar()
            return inserted, job_ids

        inserted, job_ids = await self._db.write(work)
        results: list[StoredDelivery] = []
        for item in items:
            if item.id in inserted and first_by_id[item.id] is item:
                if item.lease_owner is not None:  # its job starts now and reads it at once
                    self._recent[item.id] = DeliveryRecord(item.id, item.event, item.action, item.installation_id,
                                                           item.payload, now, item.parsed)
                results.append(StoredDelivery(duplicate=False, job_id=job_ids[item.id]))
            else:
                results.append(StoredDelivery(duplicate=True))
        return results

    async def get(self, delivery_id: str) -> DeliveryRecord | None:
        # Each delivery is read once by its job: hand the cached copy over and drop it (a retry reads the row).
        if (recent := self._recent.pop(delivery_id, None)) is not None:
            return recent
        stmt = select(Delivery.id, Delivery.event, Delivery.action, Delivery.installation_id, Delivery.payload,
                      Delivery.received_at).where(Delivery.id == delivery_id)
        row = await self._db.read(lambda conn: conn.execute(stmt).first())
        return DeliveryRecord(*row) if row is not None else None

    async def count(self) -> int:
        return await self._db.read(lambda conn: conn.execute(select(func.count()).select_from(Delivery)).scalar_one())

    async def close(self) -> None:
        await self._batcher.close()


def _job_row(delivery: IncomingDelivery, now: datetime) -> dict[str, object]:
    leased = delivery.lease_owner is not None
    return {"kind": delivery.job_kind, "delivery_id": delivery.id, "args": {}, "dedupe_key": None,
            "status": JOB_RUNNING if leased else JOB_QUEUED, "attempts": 1 if leased else 0,
            "max_attempts": delivery.max_attempts, "run_after": now, "created_at": now,
            "lease_owner": delivery.lease_owner,
            "lease_expires_at": now + timedelta(seconds=delivery.lease_seconds) if leased else None,
            "last_error": None, "finished_at": None}
