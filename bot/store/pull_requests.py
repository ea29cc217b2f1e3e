"""Per-PR settings set by commands, the app's merges, and the per-base-branch merge lock.

Both the merge claim and the lock are single statements (an upsert whose update only happens when
the existing row may be taken over), so they hold across worker processes: with PostgreSQL the
conflicting row is locked for the statement, with SQLite every write is serialized (BEGIN IMMEDIATE).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Connection, and_, delete, or_, select, update

from bot.db import Database
from bot.models import (MERGE_FAILED, MERGE_MERGED, MERGE_MERGING, MergeLock, PullRequestMerge, PullRequestSettings,
                        new_id, utcnow)
from bot.store.sql import entities, entity, upsert_insert

# A "merging" claim older than this belongs to a worker that died between claim and outcome.
STALE_MERGE_CLAIM = timedelta(minutes=10)


@dataclass(frozen=True)
class MergeClaim:
    claimed: bool            # True: this caller may send the merge request
    merge: PullRequestMerge  # the row as it is now (on False: who merged it, or who is merging it)


class PullRequestStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    # ---- settings ------------------------------------------------------------------------------

    async def set_auto_merge(self, project_id: str, pr_number: int, value: bool | None, *, set_by: str | None) -> None:
        now = utcnow()
        stmt = (upsert_insert(self._db, PullRequestSettings)
                .values(project_id=project_id, pr_number=pr_number, auto_merge=value, auto_merge_set_by=set_by,
                        updated_at=now))
        stmt = stmt.on_conflict_do_update(index_elements=["project_id", "pr_number"],
                                          set_={"auto_merge": value, "auto_merge_set_by": set_by, "updated_at": now})
        await self._db.write(lambda conn: conn.execute(stmt))

    async def auto_merge(self, project_id: str, pr_number: int) -> bool | None:
        """The PR's `/auto-merge` switch, or None when nobody set it."""
        stmt = select(PullRequestSettings.auto_merge).where(PullRequestSettings.project_id == project_id,
                                                            PullRequestSettings.pr_number == pr_number)
        return await self._db.read(lambda conn: conn.execute(stmt).scalar_one_or_none())

    # ---- merges --------------------------------------------------------------------------------

    async def claim_merge(self, *, project_id: str, pr_number: int, head_sha: str, base_ref: str, method: str,
                          trigger: str, requested_by: str | None) -> MergeClaim:
        """Claim the merge of this head: a new row, or a failed (or long-abandoned) one taken over.

        A head that is merged, or being merged by someone else, is not claimed again: a repeated
        `/merge` (or a button clicked twice, or a re-delivered webhook) merges once.
        """
        now = utcnow()
        key = (PullRequestMerge.project_id == project_id, PullRequestMerge.pr_number == pr_number,
               PullRequestMerge.head_sha == head_sha)
        fresh = {"base_ref": base_ref, "method": method, "status": MERGE_MERGING, "trigger": trigger,
                 "requested_by": requested_by, "merge_commit_sha": None, "error": None, "claimed_at": now,
                 "completed_at": None}
        stmt = (upsert_insert(self._db, PullRequestMerge)
                .values(id=new_id(), project_id=project_id, pr_number=pr_number, head_sha=head_sha, **fresh))
        stmt = stmt.on_conflict_do_update(
            index_elements=["project_id", "pr_number", "head_sha"], set_=fresh,
            where=or_(PullRequestMerge.status == MERGE_FAILED,
                      and_(PullRequestMerge.status == MERGE_MERGING,
                           PullRequestMerge.claimed_at < now - STALE_MERGE_CLAIM)),
        ).returning(PullRequestMerge.id)

        def work(conn: Connection) -> MergeClaim:
            claimed = conn.execute(stmt).scalar_one_or_none() is not None
            row = entity(conn, select(PullRequestMerge).where(*key))
            assert row is not None
            return MergeClaim(claimed, row)

        return await self._db.write(work)

    async def finish_merge(self, merge_id: str, *, merged: bool, merge_commit_sha: str | None = None,
                           error: str | None = None) -> None:
        stmt = (update(PullRequestMerge)
                .where(PullRequestMerge.id == merge_id, PullRequestMerge.status == MERGE_MERGING)
                .values(status=MERGE_MERGED if merged else MERGE_FAILED, merge_commit_sha=merge_commit_sha,
                        error=error, completed_at=utcnow()))
        await self._db.write(lambda conn: conn.execute(stmt))

    async def merges(self, project_id: str, pr_number: int) -> list[PullRequestMerge]:
        stmt = (select(PullRequestMerge)
                .where(PullRequestMerge.project_id == project_id, PullRequestMerge.pr_number == pr_number)
                .order_by(PullRequestMerge.claimed_at))
        return await self._db.read(lambda conn: entities(conn, stmt))

    # ---- the merge lock ------------------------------------------------------------------------

    async def acquire_merge_lock(self, project_id: str, base_ref: str, holder: str, *, ttl: timedelta) -> bool:
        """Take the lock of (project, base branch) if it is free or expired; one statement."""
        now = utcnow()
        stmt = (upsert_insert(self._db, MergeLock)
                .values(project_id=project_id, base_ref=base_ref, holder=holder, expires_at=now + ttl))
        stmt = stmt.on_conflict_do_update(index_elements=["project_id", "base_ref"],
                                          set_={"holder": holder, "expires_at": now + ttl},
                                          where=MergeLock.expires_at < now).returning(MergeLock.holder)
        return await self._db.write(lambda conn: conn.execute(stmt).scalar_one_or_none() == holder)

    async def release_merge_lock(self, project_id: str, base_ref: str, holder: str) -> None:
        stmt = delete(MergeLock).where(MergeLock.project_id == project_id, MergeLock.base_ref == base_ref,
                                       MergeLock.holder == holder)
        await self._db.write(lambda conn: conn.execute(stmt))
