"""Webhook deliveries and the jobs that handle them, stored together in one transaction."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cachetools import LRUCache
from sqlalchemy import BigInteger, Connection, cast, func, insert, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import aliased

from bot.db import Database
from bot.models import JOB_DEAD, JOB_QUEUED, JOB_RUNNING, JOB_WEBHOOK, Delivery, Job, utcnow
from bot.store.batch import GroupCommit
from bot.store.prepared import Prepared
from bot.store.sql import insert_unnested, unnested_params, upsert_insert

_INSERT_JOB = Prepared(insert(Job).returning(Job.id))
_DELIVERY_COLUMNS = ("id", "event", "action", "installation_id", "payload", "received_at", "source")
_JOB_COLUMNS = ("kind", "delivery_id", "args", "dedupe_key", "status", "attempts", "max_attempts", "run_after",
                "created_at", "lease_owner", "lease_expires_at", "last_error", "finished_at")
# PostgreSQL: a batch's deliveries (those not known yet) and their jobs, a statement each.
_INSERT_DELIVERIES = Prepared(insert_unnested(Delivery, _DELIVERY_COLUMNS)
                              .on_conflict_do_nothing(index_elements=["id"]).returning(Delivery.id))
_INSERT_JOBS = Prepared(insert_unnested(Job, _JOB_COLUMNS).returning(Job.id, Job.delivery_id))


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
    source: str = "webhook"  # bot.models.DELIVERY_*: received, or fetched from the App's delivery log


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


@dataclass(frozen=True)
class ListedDelivery:
    """A stored delivery and how its newest job stands (`job_*` None: it has no job), for the
    deliveries page and `codegenapp deliveries list`; `jobs`: how many jobs handled it (replays add one)."""
    id: str
    event: str
    action: str | None
    installation_id: int | None
    received_at: datetime
    source: str
    payload: str
    job_id: int | None
    job_status: str | None
    attempts: int | None
    max_attempts: int | None
    error: str | None
    finished_at: datetime | None
    jobs: int

    def data(self) -> dict[str, Any]:
        try:
            parsed = json.loads(self.payload)
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}


_DEAD = aliased(Job)
_LATEST_JOB = (select(func.max(Job.id)).where(Job.delivery_id == Delivery.id).correlate(Delivery)
               .scalar_subquery())
_JOB_COUNT = (select(func.count()).select_from(Job).where(Job.delivery_id == Delivery.id).correlate(Delivery)
              .scalar_subquery())
_LISTING = (select(Delivery.id, Delivery.event, Delivery.action, Delivery.installation_id, Delivery.received_at,
                   Delivery.source, Delivery.payload, Job.id, Job.status, Job.attempts, Job.max_attempts,
                   Job.last_error, Job.finished_at, _JOB_COUNT)
            .select_from(Delivery).outerjoin(Job, Job.id == _LATEST_JOB))


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
            if conn.dialect.name == "postgresql" and len(first_by_id) > 1:
                return self._insert_together(conn, list(first_by_id.values()), now)
            inserted: set[str] = set()
            job_ids: dict[str, int] = {}
            for d in first_by_id.values():
                row = {"id": d.id, "event": d.event, "action": d.action, "installation_id": d.installation_id,
                       "payload": d.payload, "received_at": now, "source": d.source}
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

    def _insert_together(self, conn: Connection, deliveries: list[IncomingDelivery],
                         now: datetime) -> tuple[set[str], dict[str, int]]:
        """PostgreSQL: the batch's deliveries in one statement, then the jobs of the new ones in another: two
        round trips to the server for the batch instead of two for each delivery (on SQLite, in process,
        a statement per row costs less than building a statement of many)."""
        rows = [{"id": d.id, "event": d.event, "action": d.action, "installation_id": d.installation_id,
                 "payload": d.payload, "received_at": now, "source": d.source} for d in deliveries]
        inserted = {row[0] for row in _INSERT_DELIVERIES.run(conn, unnested_params(Delivery, _DELIVERY_COLUMNS,
                                                                                    rows)).rows}
        jobs = [_job_row(d, now) for d in deliveries if d.id in inserted]
        if not jobs:
            return inserted, {}
        found = _INSERT_JOBS.run(conn, unnested_params(Job, _JOB_COLUMNS, jobs)).rows
        return inserted, {delivery_id: job_id for job_id, delivery_id in found}

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

    def _repository_id(self) -> Any:
        """SQL: the `repository.id` of the delivery's payload (deliveries keep no column of it)."""
        if self._db.is_sqlite:
            return func.json_extract(Delivery.payload, "$.repository.id")
        return cast(func.jsonb_extract_path_text(cast(Delivery.payload, JSONB), "repository", "id"), BigInteger)

    async def listing(self, *, repository_id: int | None = None, failed: bool = False, limit: int = 50,
                      offset: int = 0) -> list[ListedDelivery]:
        """Stored deliveries, newest first, with their newest job: of one repository (by GitHub's id) or
        all; with `failed`, only those whose newest job was dead-lettered."""
        stmt = _LISTING.order_by(Delivery.received_at.desc(), Delivery.id.desc()).limit(limit).offset(offset)
        if repository_id is not None:
            stmt = stmt.where(self._repository_id() == repository_id)
        if failed:  # dead jobs are few: look there first (ix_jobs_claim), not through every payload
            stmt = stmt.where(Job.status == JOB_DEAD,
                              Delivery.id.in_(select(_DEAD.delivery_id).where(_DEAD.status == JOB_DEAD)))
        return await self._db.read(lambda conn: [ListedDelivery(*row) for row in conn.execute(stmt)], large=True)

    async def listed(self, delivery_id: str) -> ListedDelivery | None:
        """One delivery as `listing` shows it."""
        stmt = _LISTING.where(Delivery.id == delivery_id)
        row = await self._db.read(lambda conn: conn.execute(stmt).first())
        return ListedDelivery(*row) if row is not None else None

    async def queue_again(self, delivery_id: str, *, max_attempts: int) -> tuple[int | None, int | None]:
        """Replay: a new `webhook` job for the stored delivery, in one transaction with the check that
        none of its jobs is queued or running (the same delivery is never handled twice at once).
        Returns (the new job's id, None), or (None, the pending job's id), or (None, None) when the
        delivery is not stored. Two replays at the same moment queue one job (its dedupe key counts the
        delivery's jobs)."""
        def work(conn: Connection) -> tuple[int | None, int | None]:
            if conn.execute(select(Delivery.id).where(Delivery.id == delivery_id)).first() is None:
                return None, None
            jobs = conn.execute(select(Job.id, Job.status).where(Job.delivery_id == delivery_id)
                                .order_by(Job.id)).all()
            pending = [job_id for job_id, status in jobs if status in (JOB_QUEUED, JOB_RUNNING)]
            if pending:
                return None, pending[-1]
            now = utcnow()
            row = {"kind": JOB_WEBHOOK, "delivery_id": delivery_id, "args": {"replay": len(jobs)},
                   "dedupe_key": f"replay:{delivery_id}:{len(jobs)}", "status": JOB_QUEUED, "attempts": 0,
                   "max_attempts": max_attempts, "run_after": now, "created_at": now, "lease_owner": None,
                   "lease_expires_at": None, "last_error": None, "finished_at": None}
            inserted = conn.execute(upsert_insert(self._db, Job).values(row)
                                    .on_conflict_do_nothing(index_elements=["dedupe_key"]).returning(Job.id)).scalar()
            if inserted is None:  # another replay queued it a moment ago
                return None, conn.execute(select(Job.id).where(Job.dedupe_key == row["dedupe_key"])).scalar()
            return inserted, None

        return await self._db.write(work)

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
