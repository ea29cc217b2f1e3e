"""The durable job queue's storage: claim with a lease, heartbeat, finish, retry, dead-letter.

Every state change is one statement, so nothing is read and then written back (no lost updates on
SQLite, no double claims on PostgreSQL, where the claim also uses FOR UPDATE SKIP LOCKED).
Finishing and failing are fenced by the lease owner: a worker whose lease expired and was taken over
cannot overwrite the new owner's result.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (BigInteger, Connection, and_, any_, bindparam, case, func, insert, literal, literal_column, or_,
                        select, type_coerce, union_all, update)
from sqlalchemy.dialects import postgresql

from bot.db import Database
from bot.models import JOB_DEAD, JOB_DONE, JOB_QUEUED, JOB_RUNNING, Job, UTCDateTime, utcnow
from bot.store.prepared import Prepared
from bot.store.sql import any_of, upsert_insert


@dataclass(frozen=True)
class ClaimedJob:
    id: int
    kind: str
    delivery_id: str | None
    args: dict[str, Any]
    attempts: int
    max_attempts: int
    first_failed_at: datetime | None = None


@dataclass(frozen=True)
class KindCount:
    """Jobs of one kind in one state; `ready`: those queued and due now, the oldest due since `oldest_ready_at`."""

    kind: str
    status: str
    count: int
    ready: int
    oldest_ready_at: datetime | None


@dataclass(frozen=True)
class QueueSummary:
    rows: list[KindCount]
    dead: int
    read_at: datetime


_CLAIM_COLUMNS = (Job.id, Job.kind, Job.delivery_id, Job.args, Job.attempts, Job.max_attempts, Job.first_failed_at)


def _kind_filter(kinds: frozenset[str] | None, exclude_kinds: frozenset[str] | None) -> list[Any]:
    conditions = []
    if kinds is not None:
        conditions.append(any_of(Job.kind, sorted(kinds)))
    # The kinds left out are literals (quoted as SQL quotes a string), so that a prepared statement's generic
    # plan may use ix_jobs_background, whose predicate leaves webhooks out, on PostgreSQL.
    for kind in sorted(exclude_kinds or ()):
        conditions.append(Job.kind != literal_column("'{}'".format(kind.replace("'", "''"))))
    return conditions


def _claim_statement(*, skip_locked: bool, kinds: frozenset[str] | None = None,
                     exclude_kinds: frozenset[str] | None = None) -> Any:
    now = bindparam("now")
    of_kind = _kind_filter(kinds, exclude_kinds)
    claimable = and_(or_(and_(Job.status == JOB_QUEUED, Job.run_after <= now),
                         and_(Job.status == JOB_RUNNING, Job.lease_expires_at < now)), *of_kind)
    if skip_locked:
        # The chosen rows are locked, and were checked again as they were locked: nothing to filter. Looked up
        # as `id = ANY(ARRAY(...))`, by primary key: a join (and a filter) led PostgreSQL, on a young table's
        # statistics, to scan every job.
        chosen = _chosen_skip_locked(now, of_kind)
        which = [Job.id == any_(func.array(select(chosen.c.id).scalar_subquery()))]
    else:
        chosen = select(Job.id).where(claimable).order_by(Job.run_after, Job.id).limit(bindparam("limit")).cte("chosen")
        which = [Job.id == chosen.c.id, claimable]
    return (update(Job)
            .where(*which)
            .values(status=JOB_RUNNING, lease_owner=bindparam("owner"), lease_expires_at=bindparam("lease_until"),
                    attempts=Job.attempts + 1)
            .returning(*_CLAIM_COLUMNS))


def _chosen_skip_locked(now: Any, of_kind: list[Any]) -> Any:
    """PostgreSQL: the jobs to claim, locked, as CTEs (PostgreSQL may run an `id IN (subquery)` more than
    once, and with SKIP LOCKED each run picks other rows, so a claim could take more than `limit` jobs).

    One locking read per state instead of an OR over both: with the OR, PostgreSQL reads and sorts every
    due job of every kind (hundreds pile up in a burst) to return a few; without it, a lane of named kinds
    reads its due jobs in order from ix_jobs_queued, the background lane (all kinds but webhooks) from
    ix_jobs_background, and expired leases come from ix_jobs_leased (the state and the kind left out are
    literals so that the prepared statement's generic plan can use those partial indexes). The
    oldest `limit` of the two are claimed, as SQLite's single statement does. When some lease expired (a
    worker died), up to `limit` more rows may be locked than claimed: other claims skip them until this
    one commits."""
    def locked(*conditions: Any, name: str) -> Any:
        return (select(Job.id, Job.run_after).where(*conditions, *of_kind).order_by(Job.run_after, Job.id)
                .limit(bindparam("limit")).with_for_update(skip_locked=True).cte(name))

    expired = locked(Job.status == literal_column(f"'{JOB_RUNNING}'"), Job.lease_expires_at < now, name="expired")
    due = locked(Job.status == literal_column(f"'{JOB_QUEUED}'"), Job.run_after <= now, name="due")
    both = union_all(select(expired), select(due)).subquery("both")
    return select(both.c.id).order_by(both.c.run_after, both.c.id).limit(bindparam("limit")).cte("chosen")


# Built once: constructing statements costs more than running them on the hot path.
_COMPLETE = Prepared(update(Job)
                     .where(Job.id == bindparam("b_id"), Job.lease_owner == bindparam("owner"),
                            Job.status == JOB_RUNNING)
                     .values(status=JOB_DONE, finished_at=bindparam("now"), lease_owner=None, lease_expires_at=None,
                             last_error=None)
                     .returning(Job.id))


# PostgreSQL: `_COMPLETE` for a whole batch of jobs in one statement (one round trip where it was one a job).
_COMPLETE_ALL = Prepared(update(Job)
                         .where(Job.id == any_(bindparam("b_ids", type_=postgresql.ARRAY(BigInteger))),
                                Job.lease_owner == bindparam("owner"), Job.status == JOB_RUNNING)
                         .values(status=JOB_DONE, finished_at=bindparam("now"), lease_owner=None,
                                 lease_expires_at=None, last_error=None)
                         .returning(Job.id))


def _first_failure_at(now: datetime) -> Any:
    """A job's first failure: kept once recorded."""
    return func.coalesce(Job.first_failed_at, literal(now, UTCDateTime()))


class JobStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._claims: dict[tuple[frozenset[str] | None, frozenset[str] | None], Prepared] = {}
        self._insert = Prepared(insert(Job).returning(Job.id))
        self._insert_deduped = Prepared(upsert_insert(db, Job).on_conflict_do_nothing(index_elements=["dedupe_key"])
                                        .returning(Job.id))

    async def enqueue(self, kind: str, *, args: dict[str, Any] | None = None, delivery_id: str | None = None,
                      dedupe_key: str | None = None, run_after: datetime | None = None,
                      max_attempts: int = 5) -> int | None:
        """Add a job; with a dedupe_key that is already known, adds nothing and returns None."""
        return await self._db.write(lambda conn: self.add(conn, kind, args=args, delivery_id=delivery_id,
                                                          dedupe_key=dedupe_key, run_after=run_after,
                                                          max_attempts=max_attempts))

    def add(self, conn: Connection, kind: str, *, args: dict[str, Any] | None = None,
            delivery_id: str | None = None, dedupe_key: str | None = None, run_after: datetime | None = None,
            max_attempts: int = 5) -> int | None:
        """`enqueue` as a part of another unit of work (the job is queued if that one commits)."""
        now = utcnow()
        values = {"kind": kind, "args": args or {}, "delivery_id": delivery_id, "dedupe_key": dedupe_key,
                  "status": JOB_QUEUED, "attempts": 0, "max_attempts": max_attempts,
                  "run_after": run_after or now, "created_at": now, "lease_owner": None,
                  "lease_expires_at": None, "last_error": None, "finished_at": None}
        return (self._insert if dedupe_key is None else self._insert_deduped).run(conn, values).scalar()

    async def claim(self, owner: str, *, limit: int, lease_seconds: float, kinds: frozenset[str] | None = None,
                    exclude_kinds: frozenset[str] | None = None) -> list[ClaimedJob]:
        """Lease up to `limit` due jobs (of `kinds` only, or of any kind but `exclude_kinds`)."""
        if limit <= 0:
            return []
        key = (kinds, exclude_kinds or None)
        if (statement := self._claims.get(key)) is None:
            statement = self._claims[key] = Prepared(_claim_statement(skip_locked=not self._db.is_sqlite, kinds=kinds,
                                                                      exclude_kinds=exclude_kinds))
        now = utcnow()
        params = {"now": now, "limit": limit, "owner": owner, "lease_until": now + timedelta(seconds=lease_seconds)}
        rows = await self._db.write(lambda conn: statement.run(conn, params).rows)
        return sorted((ClaimedJob(*row) for row in rows), key=lambda job: job.id)

    async def extend_leases(self, owner: str, job_ids: list[int], *, lease_seconds: float) -> set[int]:
        """Heartbeat: push the leases this worker still holds; returns the ids it still holds."""
        if not job_ids:
            return set()
        stmt = (update(Job)
                .where(Job.id.in_(job_ids), Job.lease_owner == owner, Job.status == JOB_RUNNING)
                .values(lease_expires_at=utcnow() + timedelta(seconds=lease_seconds))
                .returning(Job.id))
        return await self._db.write(lambda conn: set(conn.execute(stmt).scalars()))

    async def complete_many(self, owner: str, job_ids: list[int]) -> set[int]:
        if not job_ids:
            return set()
        now = utcnow()
        if not self._db.is_sqlite:
            params = {"b_ids": list(job_ids), "owner": owner, "now": now}
            return await self._db.write(lambda conn: {row[0] for row in _COMPLETE_ALL.run(conn, params).rows})

        def work(conn: Connection) -> set[int]:
            return {job_id for job_id in job_ids
                    if _COMPLETE.run(conn, {"b_id": job_id, "owner": owner, "now": now}).rows}

        return await self._db.write(work)

    async def fail(self, owner: str, job_id: int, *, error: str, retry_at: datetime | None) -> bool:
        """Record a failed attempt: back to the queue at retry_at, or dead-lettered when None."""
        values: dict[str, Any] = {"last_error": error[-20_000:], "lease_owner": None, "lease_expires_at": None,
                                  "first_failed_at": _first_failure_at(utcnow())}
        if retry_at is None:
            values.update(status=JOB_DEAD, finished_at=utcnow())
        else:
            values.update(status=JOB_QUEUED, run_after=retry_at)
        return await self._fenced_update(owner, job_id, values)

    async def postpone(self, owner: str, job_id: int, *, error: str, retry_at: datetime) -> bool:
        """Back to the queue at retry_at without spending the attempt (GitHub was unavailable)."""
        return await self._fenced_update(owner, job_id, {
            "status": JOB_QUEUED, "run_after": retry_at, "lease_owner": None, "lease_expires_at": None,
            "attempts": Job.attempts - 1, "last_error": error[-20_000:],
            "first_failed_at": _first_failure_at(utcnow())})

    async def release(self, owner: str, job_id: int) -> bool:
        """Give a job back untried (shutdown): it keeps its place and does not spend an attempt."""
        return await self._fenced_update(owner, job_id, {
            "status": JOB_QUEUED, "lease_owner": None, "lease_expires_at": None,
            "attempts": Job.attempts - 1})

    async def _fenced_update(self, owner: str, job_id: int, values: dict[str, Any]) -> bool:
        stmt = (update(Job)
                .where(Job.id == job_id, Job.lease_owner == owner, Job.status == JOB_RUNNING)
                .values(**values)
                .returning(Job.id))
        return await self._db.write(lambda conn: conn.execute(stmt).scalar_one_or_none() is not None)

    async def get(self, job_id: int) -> Any:
        return await self._db.read(lambda conn: conn.execute(select(Job.__table__).where(Job.id == job_id)).first())

    async def for_delivery(self, delivery_id: str) -> list[Any]:
        stmt = select(Job.__table__).where(Job.delivery_id == delivery_id).order_by(Job.id)
        return await self._db.read(lambda conn: conn.execute(stmt).all())

    async def queued(self, kind: str) -> int:
        """How many jobs of `kind` are due and waiting to be claimed (not running, not retrying later): the
        queue a job of `kind` queued now waits behind. One COUNT on ix_jobs_claim (status, run_after), on
        PostgreSQL on ix_jobs_queued."""
        stmt = (select(func.count()).select_from(Job)
                .where(Job.status == JOB_QUEUED, Job.run_after <= utcnow(), Job.kind == kind))
        return await self._db.read(lambda conn: conn.execute(stmt).scalar_one())

    async def queue_summary(self) -> QueueSummary:
        """The queue at a glance, in one read transaction of two statements: per kind and state (queued,
        running), how many, how many of the queued are due now and since when the oldest of those waits;
        and the dead-lettered jobs (an index-only count on ix_jobs_claim: they pile up, and their kind is
        not needed)."""
        now = utcnow()
        due = Job.run_after <= now
        # One part per state: the queued jobs (tens of thousands in a backlog) are then, on PostgreSQL, an
        # index-only scan of ix_jobs_queued in kind order; the state is a literal for that partial index.
        queued = (select(Job.kind, Job.status, func.count(), func.sum(case((due, 1), else_=0)),
                         func.min(case((due, Job.run_after), else_=None)))
                  .where(Job.status == literal_column(f"'{JOB_QUEUED}'")).group_by(Job.kind, Job.status))
        running = (select(Job.kind, Job.status, func.count(), literal(0), literal(None, UTCDateTime()))
                   .where(Job.status == JOB_RUNNING).group_by(Job.kind, Job.status))
        both = union_all(queued, running).subquery()
        by_kind = select(*both.c[:4], type_coerce(both.c[4], UTCDateTime()))
        dead = select(func.count()).select_from(Job).where(Job.status == JOB_DEAD)

        def work(conn: Connection) -> QueueSummary:
            rows = [KindCount(kind, status, count, int(ready or 0), oldest)
                    for kind, status, count, ready, oldest in conn.execute(by_kind)]
            return QueueSummary(rows=rows, dead=conn.execute(dead).scalar_one(), read_at=now)

        return await self._db.read(work)

    async def counts(self) -> dict[str, int]:
        stmt = (select(Job.status, func.count()).where(Job.status.in_([JOB_QUEUED, JOB_RUNNING, JOB_DEAD]))
                .group_by(Job.status))

        def work(conn: Connection) -> dict[str, int]:
            counts = {JOB_QUEUED: 0, JOB_RUNNING: 0, JOB_DEAD: 0}
            counts.update({status: n for status, n in conn.execute(stmt)})
            return counts

        return await self._db.read(work)
