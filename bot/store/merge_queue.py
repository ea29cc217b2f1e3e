"""The merge queues: one document per repository base branch (the pure decider's state, encoded by
pipeline/merge_queue/codec.py), and the landings that make landing idempotent.

A queue changes by compare-and-swap: `load` returns the document with its version, `save` writes the
next one only if the version is still the one read. Two processes that decide on the same queue at
once therefore never both apply their actions' results: the loser reads again and decides again.

A landing is recorded before its merge request is sent, keyed by the candidate and the PR, so a landing
interrupted (a SIGKILL between the request and the queue's save) is recognised when it is tried again:
the PR's merge is then looked up instead of being sent twice.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update

from bot.db import Database
from bot.models import MergeQueueLanding, MergeQueueState, utcnow
from bot.store.sql import entity, upsert_insert


KEY_LIMIT = 64  # merge_queue_landings.candidate_key and leases.name


def fitting_key(key: str, limit: int = KEY_LIMIT) -> str:
    """`key` as a column of `limit` characters holds it: itself when it fits, else a digest of it (a key
    holding a long branch name), so no migration widens the column."""
    if len(key) <= limit:
        return key
    prefix = "sha256:"
    return prefix + hashlib.sha256(key.encode()).hexdigest()[:limit - len(prefix)]


@dataclass(frozen=True)
class StoredQueue:
    project_id: str
    base_ref: str
    state: dict[str, Any]
    version: int  # 0: no row yet


class MergeQueueStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def load(self, project_id: str, base_ref: str) -> StoredQueue | None:
        stmt = select(MergeQueueState.state, MergeQueueState.version).where(
            MergeQueueState.project_id == project_id, MergeQueueState.base_ref == base_ref)
        row = await self._db.read(lambda conn: conn.execute(stmt).first())
        return None if row is None else StoredQueue(project_id, base_ref, row.state, row.version)

    async def save(self, project_id: str, base_ref: str, state: dict[str, Any], *, version: int,
                   active: bool) -> bool:
        """Store `state` as the queue's next version if its stored version is still `version` (0: the
        queue has no row yet). False: another process changed it first (read it again)."""
        now = utcnow()
        if version == 0:
            stmt = upsert_insert(self._db, MergeQueueState).values(
                project_id=project_id, base_ref=base_ref, state=state, version=1, active=active,
                updated_at=now).on_conflict_do_nothing(index_elements=["project_id", "base_ref"])
        else:
            stmt = (update(MergeQueueState)
                    .where(MergeQueueState.project_id == project_id, MergeQueueState.base_ref == base_ref,
                           MergeQueueState.version == version)
                    .values(state=state, version=version + 1, active=active, updated_at=now))
        return await self._db.write(lambda conn: conn.execute(stmt).rowcount == 1)

    async def of_project(self, project_id: str) -> list[StoredQueue]:
        """Every base branch's queue of the project, by branch name."""
        stmt = (select(MergeQueueState.base_ref, MergeQueueState.state, MergeQueueState.version)
                .where(MergeQueueState.project_id == project_id).order_by(MergeQueueState.base_ref))
        rows = await self._db.read(lambda conn: conn.execute(stmt).all())
        return [StoredQueue(project_id, row.base_ref, row.state, row.version) for row in rows]

    async def active(self) -> list[tuple[str, str]]:
        """(project id, base ref) of every queue with something queued or running: resumed at start."""
        stmt = select(MergeQueueState.project_id, MergeQueueState.base_ref).where(MergeQueueState.active)
        return [(row.project_id, row.base_ref) for row in await self._db.read(lambda conn: conn.execute(stmt).all())]

    async def claim_landing(self, project_id: str, candidate_key: str, pr_number: int) -> bool:
        """Record that `candidate_key` is landing `pr_number`. False: it was recorded before (a landing
        interrupted or done already: look its merge up, never send it again)."""
        candidate_key = fitting_key(candidate_key)
        stmt = upsert_insert(self._db, MergeQueueLanding).values(
            project_id=project_id, candidate_key=candidate_key, pr_number=pr_number, landed_at=utcnow(),
        ).on_conflict_do_nothing(index_elements=["project_id", "candidate_key", "pr_number"])
        return await self._db.write(lambda conn: conn.execute(stmt).rowcount == 1)

    async def landed(self, project_id: str, candidate_key: str, pr_number: int, merged_sha: str) -> None:
        candidate_key = fitting_key(candidate_key)
        await self._db.write(lambda conn: conn.execute(
            update(MergeQueueLanding)
            .where(MergeQueueLanding.project_id == project_id, MergeQueueLanding.candidate_key == candidate_key,
                   MergeQueueLanding.pr_number == pr_number)
            .values(merged_sha=merged_sha)))

    async def landing(self, project_id: str, candidate_key: str, pr_number: int) -> MergeQueueLanding | None:
        candidate_key = fitting_key(candidate_key)
        stmt = select(MergeQueueLanding).where(
            MergeQueueLanding.project_id == project_id, MergeQueueLanding.candidate_key == candidate_key,
            MergeQueueLanding.pr_number == pr_number)
        return await self._db.read(lambda conn: entity(conn, stmt))
