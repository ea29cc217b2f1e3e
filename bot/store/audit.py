"""The append-only audit log and worker heartbeats."""

from __future__ import annotations

import os
import socket
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, delete, exists, func, insert, or_, select

from bot.db import Database
from bot.fleet import LOST_WINDOW
from bot.models import AuditEvent, WorkerHeartbeat, utcnow
from bot.store.batch import GroupCommit
from bot.store.prepared import Prepared
from bot.store.sql import entities, entity, insert_unnested, unnested_params, upsert_insert

PAGE_SIZE = 50
_INSERT = Prepared(insert(AuditEvent))
_COLUMNS = ("at", "action", "actor", "installation_id", "project_id", "delivery_id", "details")
# PostgreSQL: the events recorded meanwhile, in one statement.
_INSERT_ALL = Prepared(insert_unnested(AuditEvent, _COLUMNS))


@dataclass(frozen=True)
class AuditPage:
    """One page of a project's audit log, newest first; whether newer and older events exist."""

    events: list[AuditEvent]
    newer: bool
    older: bool


class AuditStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        # PostgreSQL: the events recorded meanwhile go in one round trip (SQLite writes in process: as before).
        self._batcher: GroupCommit[dict[str, Any], None] | None = None if db.is_sqlite else GroupCommit(self._insert)

    async def record(self, action: str, *, actor: str | None = None, installation_id: int | None = None,
                     project_id: str | None = None, delivery_id: str | None = None,
                     details: dict[str, Any] | None = None) -> None:
        row = dict(at=utcnow(), action=action, actor=actor, installation_id=installation_id, project_id=project_id,
                   delivery_id=delivery_id, details=details or {})
        if self._batcher is not None:
            await self._batcher.submit(row)
            return
        await self._db.write(lambda conn: _INSERT.run(conn, row))

    async def _insert(self, rows: list[dict[str, Any]]) -> list[None]:
        params = unnested_params(AuditEvent, _COLUMNS, rows)
        await self._db.write(lambda conn: _INSERT_ALL.run(conn, params))
        return [None] * len(rows)

    async def close(self) -> None:
        if self._batcher is not None:
            await self._batcher.close()

    async def list(self, *, project_id: str | None = None, installation_id: int | None = None,
                   limit: int = 100) -> list[AuditEvent]:
        stmt = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
        if project_id is not None:
            stmt = stmt.where(AuditEvent.project_id == project_id)
        if installation_id is not None:
            stmt = stmt.where(AuditEvent.installation_id == installation_id)
        return await self._db.read(lambda conn: entities(conn, stmt), large=True)

    async def page(self, project_id: str, *, actions: Collection[str] | None = None, actor: str | None = None,
                   before: int | None = None, after: int | None = None, limit: int = PAGE_SIZE) -> AuditPage:
        """A page of the project's events (keyset paging on the id): the newest ones, the `limit` older
        than `before`, or the `limit` just newer than `after`. `actions`: only these kinds; `actor`: only
        this login (case-insensitive)."""
        conditions = [AuditEvent.project_id == project_id]
        if actions is not None:
            conditions.append(AuditEvent.action.in_(sorted(actions)) if actions else AuditEvent.id.is_(None))
        if actor:
            conditions.append(func.lower(AuditEvent.actor) == actor.lower())

        def read(conn: Connection) -> AuditPage:
            stmt = select(AuditEvent).where(*conditions)
            if after is not None:
                found = entities(conn, stmt.where(AuditEvent.id > after).order_by(AuditEvent.id.asc()).limit(limit))
                found.reverse()
            else:
                if before is not None:
                    stmt = stmt.where(AuditEvent.id < before)
                found = entities(conn, stmt.order_by(AuditEvent.id.desc()).limit(limit))
            if not found:  # paged past an end: the way back
                return AuditPage([], newer=before is not None and _any(conn, conditions, AuditEvent.id >= before),
                                 older=after is not None and _any(conn, conditions, AuditEvent.id <= after))
            return AuditPage(found, newer=_any(conn, conditions, AuditEvent.id > found[0].id),
                             older=_any(conn, conditions, AuditEvent.id < found[-1].id))

        return await self._db.read(read, large=True)

    async def actors(self, project_id: str, *, limit: int = 100) -> list[str]:
        """The logins that appear in the project's log (the actor filter's suggestions)."""
        stmt = (select(AuditEvent.actor).where(AuditEvent.project_id == project_id, AuditEvent.actor.is_not(None))
                .group_by(AuditEvent.actor).order_by(func.max(AuditEvent.id).desc()).limit(limit))
        return await self._db.read(lambda conn: [row[0] for row in conn.execute(stmt)], large=True)

    async def for_run(self, project_id: str, run_id: str, *, pr_number: int | None = None,
                      since: datetime | None = None, kinds_of_pr: Collection[str] = (),
                      limit: int = 200) -> list[AuditEvent]:
        """An agent run's events, oldest first: those naming the run, and (`pr_number`) those of
        `kinds_of_pr` about its PR since `since` (its validations and merges)."""
        mine = AuditEvent.details["run_id"].as_string() == run_id
        if pr_number is not None and kinds_of_pr:
            about_pr = and_(AuditEvent.action.in_(sorted(kinds_of_pr)),
                            AuditEvent.details["pr"].as_integer() == pr_number,
                            *([AuditEvent.at >= since] if since is not None else []))
            mine = or_(mine, about_pr)
        stmt = (select(AuditEvent).where(AuditEvent.project_id == project_id, mine)
                .order_by(AuditEvent.id.desc()).limit(limit))
        found = await self._db.read(lambda conn: entities(conn, stmt), large=True)
        found.reverse()
        return found


def _any(conn: Connection, conditions: list[Any], beyond: Any) -> bool:
    return bool(conn.execute(select(exists().where(*conditions, beyond))).scalar())


class HeartbeatStore:
    # How often a process deletes the rows of workers gone for longer than LOST_WINDOW (killed ones: a
    # worker stopping cleanly removes its own), with one of its beats.
    FORGET_EVERY = timedelta(minutes=5)

    def __init__(self, db: Database) -> None:
        self._db = db
        self._forgot_at: datetime | None = None

    async def beat(self, worker_id: str, *, running_jobs: int, started_at: datetime) -> None:
        now = utcnow()
        stmt = upsert_insert(self._db, WorkerHeartbeat).values(
            worker_id=worker_id, hostname=socket.gethostname(), pid=os.getpid(), started_at=started_at,
            seen_at=now, running_jobs=running_jobs)
        stmt = stmt.on_conflict_do_update(index_elements=["worker_id"],
                                          set_={"seen_at": now, "running_jobs": running_jobs})
        forget = None
        if self._forgot_at is None or now - self._forgot_at >= self.FORGET_EVERY:
            self._forgot_at = now
            forget = delete(WorkerHeartbeat).where(WorkerHeartbeat.seen_at < now - LOST_WINDOW)

        def write(conn: Connection) -> None:
            conn.execute(stmt)
            if forget is not None:
                conn.execute(forget)

        await self._db.write(write)

    async def latest(self) -> WorkerHeartbeat | None:
        stmt = select(WorkerHeartbeat).order_by(WorkerHeartbeat.seen_at.desc())
        return await self._db.read(lambda conn: entity(conn, stmt))

    async def since(self, seen_after: datetime, *, limit: int = 500) -> list[WorkerHeartbeat]:
        """The workers that beat after `seen_after`, the latest beat first (one row per worker: a worker
        that stops cleanly removes its own; one that was killed stays until it is older than that)."""
        stmt = (select(WorkerHeartbeat).where(WorkerHeartbeat.seen_at >= seen_after)
                .order_by(WorkerHeartbeat.seen_at.desc()).limit(limit))
        return await self._db.read(lambda conn: entities(conn, stmt))

    async def remove(self, worker_id: str) -> None:
        stmt = delete(WorkerHeartbeat).where(WorkerHeartbeat.worker_id == worker_id)
        await self._db.write(lambda conn: conn.execute(stmt))
