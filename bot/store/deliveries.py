"""Webhook deliveries and the jobs that handle them, stored together in one transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, insert, select

from bot.db import Database
from bot.models import JOB_QUEUED, JOB_RUNNING, Delivery, Job, utcnow
from bot.store.batch import GroupCommit
from bot.store.dialect import upsert_insert


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


@dataclass(frozen=True)
class StoredDelivery:
    duplicate: bool
    job_id: int | None = None


class DeliveryStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._batcher: GroupCommit[IncomingDelivery, StoredDelivery] = GroupCommit(self._store_batch)

    async def store(self, delivery: IncomingDelivery) -> StoredDelivery:
        return await self._batcher.submit(delivery)

    async def _store_batch(self, items: list[IncomingDelivery]) -> list[StoredDelivery]:
        now = utcnow()
        first_by_id: dict[str, IncomingDelivery] = {}
        for item in items:
            first_by_id.setdefault(item.id, item)
        async with self._db.write() as session:
            stmt = (upsert_insert(self._db, Delivery)
                    .values([{"id": d.id, "event": d.event, "action": d.action,
                              "installation_id": d.installation_id, "payload": d.payload,
                              "received_at": now} for d in first_by_id.values()])
                    .on_conflict_do_nothing(index_elements=["id"])
                    .returning(Delivery.id))
            inserted = set((await session.execute(stmt)).scalars())
            job_ids: dict[str, int] = {}
            if inserted:
                rows = [_job_row(first_by_id[delivery_id], now) for delivery_id in inserted]
                result = await session.execute(insert(Job).values(rows).returning(Job.id, Job.delivery_id))
                job_ids = {delivery_id: job_id for job_id, delivery_id in result}
        results: list[StoredDelivery] = []
        for item in items:
            if item.id in inserted and first_by_id[item.id] is item:
                results.append(StoredDelivery(duplicate=False, job_id=job_ids[item.id]))
            else:
                results.append(StoredDelivery(duplicate=True))
        return results

    async def get(self, delivery_id: str) -> Delivery | None:
        async with self._db.read() as session:
            return await session.get(Delivery, delivery_id)

    async def count(self) -> int:
        async with self._db.read() as session:
            return (await session.execute(select(func.count()).select_from(Delivery))).scalar_one()

    async def close(self) -> None:
        await self._batcher.close()


def _job_row(delivery: IncomingDelivery, now: datetime) -> dict[str, object]:
    row: dict[str, object] = {"kind": delivery.job_kind, "delivery_id": delivery.id, "args": {},
                              "status": JOB_QUEUED, "attempts": 0, "max_attempts": delivery.max_attempts,
                              "run_after": now, "created_at": now, "lease_owner": None, "lease_expires_at": None}
    if delivery.lease_owner is not None:
        row.update(status=JOB_RUNNING, attempts=1, lease_owner=delivery.lease_owner,
                   lease_expires_at=now + timedelta(seconds=delivery.lease_seconds))
    return row
