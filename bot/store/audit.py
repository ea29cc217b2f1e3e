"""The append-only audit log and worker heartbeats."""

from __future__ import annotations

import os
import socket
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select

from bot.db import Database
from bot.models import AuditEvent, WorkerHeartbeat, utcnow
from bot.store.sql import entities, entity, upsert_insert


class AuditStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def record(self, action: str, *, actor: str | None = None, installation_id: int | None = None,
                     project_id: str | None = None, delivery_id: str | None = None,
                     details: dict[str, Any] | None = None) -> None:
        stmt = insert(AuditEvent).values(at=utcnow(), action=action, actor=actor, installation_id=installation_id,
                                         project_id=project_id, delivery_id=delivery_id, details=details or {})
        await self._db.write(lambda conn: conn.execute(stmt))

    async def list(self, *, project_id: str | None = None, installation_id: int | None = None,
                   limit: int = 100) -> list[AuditEvent]:
        stmt = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
        if project_id is not None:
            stmt = stmt.where(AuditEvent.project_id == project_id)
        if installation_id is not None:
            stmt = stmt.where(AuditEvent.installation_id == installation_id)
        return await self._db.read(lambda conn: entities(conn, stmt), large=True)


class HeartbeatStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def beat(self, worker_id: str, *, running_jobs: int, started_at: datetime) -> None:
        now = utcnow()
        stmt = upsert_insert(self._db, WorkerHeartbeat).values(
            worker_id=worker_id, hostname=socket.gethostname(), pid=os.getpid(), started_at=started_at,
            seen_at=now, running_jobs=running_jobs)
        stmt = stmt.on_conflict_do_update(index_elements=["worker_id"],
                                          set_={"seen_at": now, "running_jobs": running_jobs})
        await self._db.write(lambda conn: conn.execute(stmt))

    async def latest(self) -> WorkerHeartbeat | None:
        stmt = select(WorkerHeartbeat).order_by(WorkerHeartbeat.seen_at.desc())
        return await self._db.read(lambda conn: entity(conn, stmt))

    async def remove(self, worker_id: str) -> None:
        stmt = delete(WorkerHeartbeat).where(WorkerHeartbeat.worker_id == worker_id)
        await self._db.write(lambda conn: conn.execute(stmt))
