"""What the app last heard of each pull request (its `pull_request` events), and the PR overview's read:
each tracked PR with the latest validation of its current head and the app's merge of that head.

Recording is one statement (an upsert keyed by project and number) that leaves a row alone when the
event is older than what it holds (GitHub's `updated_at`): a redelivered or late `opened` does not
reopen a PR that was closed since.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import BigInteger, Connection, Select, and_, bindparam, exists, func, or_, select, update
from sqlalchemy.dialects import postgresql

from bot.db import Database
from bot.models import PR_CLOSED, PR_OPEN, SUBJECT_PULL_REQUEST, PullRequestMerge, TrackedPullRequest, ValidationState
from bot.store.prepared import Prepared
from bot.store.sql import entities, from_rows, upsert_insert


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


_SNAPSHOT_FIELDS = tuple(field.name for field in fields(PullSnapshot))
# `TrackedPullStore.under_lock`: records the PR in a unit of work, taking an advisory lock (its key) first.
PullRecorder = Callable[[Connection, int], bool]


class TrackedPullStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        # On every pull_request event's path: built once (bound parameters), run through `Prepared`.
        stmt = upsert_insert(db, TrackedPullRequest).values(
            project_id=bindparam("project_id"), **{key: bindparam(key) for key in _SNAPSHOT_FIELDS})
        self._record = Prepared(stmt.on_conflict_do_update(
            index_elements=["project_id", "number"],
            set_={key: getattr(stmt.excluded, key) for key in _SNAPSHOT_FIELDS if key != "number"},
            where=TrackedPullRequest.updated_at <= stmt.excluded.updated_at,
        ).returning(TrackedPullRequest.id))

    @property
    def records_under_lock(self) -> bool:
        """Whether `under_lock` may be given to ValidationStore.begin (PostgreSQL: it saves a round trip)."""
        return not self._db.is_sqlite

    async def record(self, project_id: str, snapshot: PullSnapshot) -> bool:
        """Insert or update the PR's row; False when the row holds a newer event (nothing changed)."""
        params = _record_params(project_id, snapshot)
        return await self._db.write(lambda conn: self._record.run(conn, params).scalar() is not None)

    def under_lock(self, project_id: str, snapshot: PullSnapshot) -> PullRecorder:
        """PostgreSQL: `record` as a part of another unit of work that takes the transaction-scoped advisory
        lock `key` first, in one statement (the lock is taken before the row is written). Returns what
        `record` returns."""
        params = _record_params(project_id, snapshot)
        return lambda conn, key: bool(_LOCK_THEN_RECORD.run(conn, {**params, "b_key": key}).scalar())

    async def open_pulls(self, project_id: str) -> dict[int, datetime]:
        """The project's PRs recorded as open: number -> the `updated_at` recorded."""
        stmt = select(TrackedPullRequest.number, TrackedPullRequest.updated_at).where(
            TrackedPullRequest.project_id == project_id, TrackedPullRequest.state == PR_OPEN)
        return dict(await self._db.read(lambda conn: conn.execute(stmt).all()))

    async def close_missed(self, project_id: str, seen: dict[int, datetime], *, closed_at: datetime) -> list[int]:
        """Record as closed the PRs `seen` open (number -> updated_at, as `open_pulls` read them) whose
        row is still exactly that: a row an event changed meanwhile is left alone. `updated_at` is kept,
        so that the close event itself, when it arrives after all, still applies (merged, say)."""
        if not seen:
            return []
        stmt = (update(TrackedPullRequest)
                .where(TrackedPullRequest.project_id == project_id, TrackedPullRequest.state == PR_OPEN,
                       TrackedPullRequest.number == bindparam("b_number"),
                       TrackedPullRequest.updated_at == bindparam("b_updated"))
                .values(state=PR_CLOSED, closed_at=closed_at, updated_at=TrackedPullRequest.updated_at))

        def work(conn: Connection) -> list[int]:
            return [number for number, updated in sorted(seen.items())
                    if conn.execute(stmt, {"b_number": number, "b_updated": updated}).rowcount == 1]

        return await self._db.write(work)

    async def get(self, project_id: str, number: int) -> TrackedPullRequest | None:
        stmt = select(TrackedPullRequest).where(TrackedPullRequest.project_id == project_id,
                                                TrackedPullRequest.number == number)
        found = await self._db.read(lambda conn: entities(conn, stmt))
        return found[0] if found else None

    async def overview(self, project_id: str, *, closed_since: datetime, limit: int = 200) -> list[OverviewRow]:
        """Every open PR and those closed or merged since `closed_since`, most recently updated first."""
        return (await self.overviews([project_id], closed_since=closed_since, limit=limit))[project_id]

    async def overviews(self, project_ids: list[str], *, closed_since: datetime,
                        limit: int = 200) -> dict[str, list[OverviewRow]]:
        """`overview` of several projects (the home page's cards) in three statements, whatever their
        number: the PRs (at most `limit` a project), the latest validation of each one's current head
        (without its `test_results`, which are left None: up to 64 KB a step, and unused here), and the
        latest merge of each one's current head."""
        found: dict[str, list[OverviewRow]] = {project_id: [] for project_id in project_ids}
        if not project_ids:
            return found
        shown = and_(TrackedPullRequest.project_id.in_(project_ids),
                     or_(TrackedPullRequest.state == PR_OPEN, TrackedPullRequest.updated_at >= closed_since))
        place = (func.row_number()
                 .over(partition_by=TrackedPullRequest.project_id,
                       order_by=(TrackedPullRequest.updated_at.desc(), TrackedPullRequest.number.desc()))
                 .label("place"))
        ranked = select(TrackedPullRequest, place).where(shown).subquery()
        pulls_stmt = (select(*(ranked.c[column.key] for column in _PULL_COLUMNS))
                      .where(ranked.c.place <= limit)
                      .order_by(ranked.c.updated_at.desc(), ranked.c.number.desc()))

        def latest_of_heads(model: type, columns: tuple, newest_first: tuple,  # type: ignore[type-arg]
                            *only: Any) -> Select:  # type: ignore[type-arg]
            newest = (func.row_number()
                      .over(partition_by=(model.project_id, model.pr_number),  # type: ignore[attr-defined]
                            order_by=newest_first)
                      .label("newest"))
            heads = and_(TrackedPullRequest.project_id == model.project_id,  # type: ignore[attr-defined]
                         TrackedPullRequest.number == model.pr_number,  # type: ignore[attr-defined]
                         TrackedPullRequest.head_sha == model.head_sha, shown)  # type: ignore[attr-defined]
            ranked_heads = (select(*columns, newest).join(TrackedPullRequest, heads)
                            .where(model.project_id.in_(project_ids), *only)  # type: ignore[attr-defined]
                            .subquery())
            return select(*(ranked_heads.c[c.key] for c in columns)).where(ranked_heads.c.newest == 1)

        validations_stmt = latest_of_heads(ValidationState, _OVERVIEW_VALIDATION_COLUMNS,
                                           (ValidationState.created_at.desc(), ValidationState.id.desc()),
                                           ValidationState.subject == SUBJECT_PULL_REQUEST)  # not a queue's commit
        merges_stmt = latest_of_heads(PullRequestMerge, _MERGE_COLUMNS,
                                      (PullRequestMerge.claimed_at.desc(), PullRequestMerge.id.desc()))

        def work(conn: Connection) -> dict[str, list[OverviewRow]]:
            pulls = from_rows(TrackedPullRequest, conn.execute(pulls_stmt).mappings())
            validations = {(v.project_id, v.pr_number): v
                           for v in from_rows(ValidationState, conn.execute(validations_stmt).mappings())}
            merges = {(m.project_id, m.pr_number): m
                      for m in from_rows(PullRequestMerge, conn.execute(merges_stmt).mappings())}
            for p in pulls:
                key = (p.project_id, p.number)
                found[p.project_id].append(OverviewRow(p, validations.get(key), merges.get(key)))
            return found

        return await self._db.read(work, large=True)


def _record_params(project_id: str, snapshot: PullSnapshot) -> dict[str, Any]:
    return {"project_id": project_id, **{key: getattr(snapshot, key) for key in _SNAPSHOT_FIELDS}}


def _lock_then_record() -> Any:
    """PostgreSQL: `pg_advisory_xact_lock(b_key)`, then `TrackedPullStore.record`'s upsert (an INSERT ... SELECT
    from the lock's row, so that it waits for the lock), and whether it wrote the row."""
    columns = TrackedPullRequest.__table__.c
    locked = select(func.pg_advisory_xact_lock(bindparam("b_key", type_=BigInteger)).label("locked")).cte("locked")
    keys = ("project_id", *_SNAPSHOT_FIELDS)
    row = select(*(bindparam(key, type_=columns[key].type) for key in keys)).select_from(locked)
    stmt = postgresql.insert(TrackedPullRequest).from_select(list(keys), row)
    recorded = (stmt.on_conflict_do_update(
        index_elements=["project_id", "number"],
        set_={key: getattr(stmt.excluded, key) for key in _SNAPSHOT_FIELDS if key != "number"},
        where=TrackedPullRequest.updated_at <= stmt.excluded.updated_at)
        .returning(TrackedPullRequest.id).cte("recorded"))
    return select(exists(select(recorded.c.id)).label("current"))


_LOCK_THEN_RECORD = Prepared(_lock_then_record())
_PULL_COLUMNS = tuple(TrackedPullRequest.__table__.c)
_MERGE_COLUMNS = tuple(PullRequestMerge.__table__.c)
# What the overview and the cards read of a validation: all but its results (large, unused there).
_OVERVIEW_VALIDATION_COLUMNS = tuple(c for c in ValidationState.__table__.c if c.key != "test_results")
