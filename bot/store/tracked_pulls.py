"""What the app last heard of each pull request (its `pull_request` events), and the PR overview's read:
each tracked PR with the latest validation of its current head and the app's merge of that head.

Recording is one statement (an upsert keyed by project and number) that leaves a row alone when the
event is older than what it holds (GitHub's `updated_at`): a redelivered or late `opened` does not
reopen a PR that was closed since.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import Connection, and_, or_, select

from bot.db import Database
from bot.models import PR_OPEN, PullRequestMerge, TrackedPullRequest, ValidationState
from bot.store.sql import entities, upsert_insert


@dataclass(frozen=True)
class PullSnapshot:
    """A pull request as one event described it."""
    number: int
    title: str
    author: str | None
    head_sha: str
    head_ref: str | None
    base_ref: str | None
    is_fork: bool
    draft: bool
    state: str                   # PR_OPEN, PR_CLOSED, PR_MERGED
    opened_at: datetime | None   # GitHub's created_at
    updated_at: datetime         # GitHub's updated_at: which of two events is newer
    closed_at: datetime | None


class OverviewRow(NamedTuple):
    """One PR of the overview: the PR, the latest validation of its current head, the app's merge of that head."""
    pull: TrackedPullRequest
    validation: ValidationState | None
    merge: PullRequestMerge | None


class TrackedPullStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def record(self, project_id: str, snapshot: PullSnapshot) -> bool:
        """Insert or update the PR's row; False when the row holds a newer event (nothing changed)."""
        values = asdict(snapshot)
        stmt = upsert_insert(self._db, TrackedPullRequest).values(project_id=project_id, **values)
        changed = {key: getattr(stmt.excluded, key) for key in values if key != "number"}
        stmt = stmt.on_conflict_do_update(
            index_elements=["project_id", "number"], set_=changed,
            where=TrackedPullRequest.updated_at <= stmt.excluded.updated_at,
        ).returning(TrackedPullRequest.id)
        return await self._db.write(lambda conn: conn.execute(stmt).scalar_one_or_none() is not None)

    async def get(self, project_id: str, number: int) -> TrackedPullRequest | None:
        stmt = select(TrackedPullRequest).where(TrackedPullRequest.project_id == project_id,
                                                TrackedPullRequest.number == number)
        found = await self._db.read(lambda conn: entities(conn, stmt))
        return found[0] if found else None

    async def overview(self, project_id: str, *, closed_since: datetime, limit: int = 200) -> list[OverviewRow]:
        """Every open PR and those closed or merged since `closed_since`, most recently updated first."""
        pulls_stmt = (select(TrackedPullRequest)
                      .where(TrackedPullRequest.project_id == project_id,
                             or_(TrackedPullRequest.state == PR_OPEN, TrackedPullRequest.updated_at >= closed_since))
                      .order_by(TrackedPullRequest.updated_at.desc()).limit(limit))

        def of_heads(model: type, number_column: object, sha_column: object) -> object:
            return and_(model.project_id == project_id,  # type: ignore[attr-defined]
                        TrackedPullRequest.project_id == project_id,
                        TrackedPullRequest.number == number_column, TrackedPullRequest.head_sha == sha_column,
                        or_(TrackedPullRequest.state == PR_OPEN, TrackedPullRequest.updated_at >= closed_since))

        validations_stmt = (select(ValidationState)
                            .join(TrackedPullRequest, of_heads(ValidationState, ValidationState.pr_number,
                                                               ValidationState.head_sha))
                            .order_by(ValidationState.created_at.desc()))
        merges_stmt = (select(PullRequestMerge)
                       .join(TrackedPullRequest, of_heads(PullRequestMerge, PullRequestMerge.pr_number,
                                                          PullRequestMerge.head_sha))
                       .order_by(PullRequestMerge.claimed_at.desc()))

        def work(conn: Connection) -> list[OverviewRow]:
            pulls = entities(conn, pulls_stmt)
            latest: dict[int, ValidationState] = {}
            for validation in entities(conn, validations_stmt):
                latest.setdefault(validation.pr_number, validation)
            merges: dict[int, PullRequestMerge] = {}
            for merge in entities(conn, merges_stmt):
                merges.setdefault(merge.pr_number, merge)
            return [OverviewRow(p, latest.get(p.number), merges.get(p.number)) for p in pulls]

        return await self._db.read(work, large=True)
