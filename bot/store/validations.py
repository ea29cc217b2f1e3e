"""Validations of PR heads (and of the commits merge queues make: `begin_subject`), the fork gate's
approvals and the sticky comment of each PR.

State changes are single fenced statements: a validation that was superseded or cancelled meanwhile
is never moved back to running or completed by a slower worker.

The right to create a validation's check run is claimed in `begin`'s transaction, so that of two
processes starting the same head at once only one creates it (see `may_claim_check_run`).
`unsettled` finds what a crash may have left for the recovery (ValidationService.recover_check_runs):
a validation without a check run whose claim is stale, an ended one whose check run may still show it
running.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import (Connection, String, and_, any_, bindparam, exists, insert, literal, not_, null, or_, select,
                        text, update)
from sqlalchemy.dialects import postgresql

from bot.db import Database
from bot.models import (JOB_QUEUED, SUBJECT_PULL_REQUEST, VALIDATION_ACTIVE, VALIDATION_COMPLETED, VALIDATION_IN_PROGRESS, VALIDATION_QUEUED,
                        VALIDATION_SUPERSEDED, VALIDATION_WAITING, HeadApproval, Job, PullRequestComment,
                        ValidationState, new_id, utcnow)
from bot.store.batch import GroupCommit
from bot.store.jobs import JobStore
from bot.store.prepared import Prepared
from bot.store.sql import any_of, entities, entity, first_from_rows, from_rows, pulls_asked, pulls_params, upsert_insert
from bot.store.tracked_pulls import PullRecorder

_COLUMNS = tuple(ValidationState.__table__.c)
# What a list of validations reads: all but their results (up to 64 KB a step).
_LISTED = tuple(c for c in _COLUMNS if c.key != "test_results")
# The start of a validation is on every pull request's path: its statements are built once.
_OPEN_STATUSES = (*VALIDATION_ACTIVE, VALIDATION_WAITING)
_OPEN = any_of(ValidationState.status, _OPEN_STATUSES)
# What is about a PR (superseding, its comment, merging, its listings) reads the validations of its own
# heads only, never those of a merge queue's commit made for it.
_OF_PR_HEAD = ValidationState.subject == SUBJECT_PULL_REQUEST
# What ending an open validation for a new head ("restart" on a restart) writes.
_ENDED_BY_HEAD = dict(status=VALIDATION_SUPERSEDED, conclusion="cancelled", superseded_by=bindparam("b_head"),
                      completed_at=bindparam("b_now"), title=bindparam("b_title"))
_SUPERSEDE = (update(ValidationState)
              .where(ValidationState.project_id == bindparam("b_project"),
                     ValidationState.pr_number == bindparam("b_pr"), _OF_PR_HEAD,
                     ValidationState.head_sha != bindparam("b_head"), _OPEN)
              .values(**_ENDED_BY_HEAD)
              .returning(*_COLUMNS))
# The PR's open validations, and those of the head that the claimer began already (any state: its
# job, run again after a kill or an expired lease, must not begin another; see `begin`).
_OPEN_FOR_PR_WHERE = (ValidationState.project_id == bindparam("b_project"),
                      ValidationState.pr_number == bindparam("b_pr"), _OF_PR_HEAD,
                      or_(_OPEN, and_(ValidationState.head_sha == bindparam("b_head"),
                                      ValidationState.check_run_claimed_by == bindparam("b_claimer"))))
_OPEN_FOR_PR = Prepared(select(*_COLUMNS).where(*_OPEN_FOR_PR_WHERE).order_by(ValidationState.created_at.desc()))


def _open_for_pr_else_record() -> Any:
    """PostgreSQL: `_OPEN_FOR_PR`, and when it finds nothing, the new validation's INSERT (its columns
    as parameters `v_<column>`) in the same statement, which is what `begin` does then: one round trip
    less on a PR's first event. Both see the statement's snapshot, taken once `begin` holds the PR's lock."""
    found = select(*_COLUMNS).where(*_OPEN_FOR_PR_WHERE).cte("found")
    new_row = select(*(bindparam(f"v_{c.key}", type_=c.type) for c in _COLUMNS)).where(~exists(select(found.c.id)))
    recorded = insert(ValidationState).from_select([c.key for c in _COLUMNS], new_row).cte("recorded")
    return select(*found.c).add_cte(recorded).order_by(found.c.created_at.desc())


_OPEN_FOR_PR_ELSE_RECORD = Prepared(_open_for_pr_else_record())
_END = Prepared(update(ValidationState).where(ValidationState.id == bindparam("b_id"), _OPEN)
                .values(**_ENDED_BY_HEAD))
_INSERT = Prepared(insert(ValidationState))
# A claim on creating the check run that is this old was given up (its process died, or its POST
# failed and the delivery's retries ran out): another start may take it over.
CHECK_RUN_CLAIM_STALE = timedelta(seconds=60)
_ACTIVE = any_of(ValidationState.status, VALIDATION_ACTIVE)


def _claim_given_up(stale_before: Any) -> Any:
    """SQL: nobody holds the claim on creating the check run: never taken, or taken before `stale_before`."""
    return or_(ValidationState.check_run_claimed_by.is_(None), ValidationState.check_run_claimed_at < stale_before)


# may_claim_check_run as one fenced statement (PostgreSQL: a concurrent claim of the row is waited
# for and the WHERE evaluated again on the row as that claim left it). Its parameters: `_claim`.
_CLAIM_CHECK_RUN = Prepared(update(ValidationState)
                            .where(ValidationState.id == bindparam("b_id"), _ACTIVE,
                                   ValidationState.check_run_id.is_(None),
                                   or_(_claim_given_up(bindparam("b_stale_before")),
                                       ValidationState.check_run_claimed_by == bindparam("b_claimer")))
                            .values(check_run_claimed_by=bindparam("b_claimer"),
                                    check_run_claimed_at=bindparam("b_now")))
_SET_CHECK_RUN = Prepared(update(ValidationState).where(ValidationState.id == bindparam("b_id"))
                          .values(check_run_id=bindparam("b_check_run"))
                          .returning(ValidationState.status, ValidationState.title))


def _set_check_run_then_queue() -> Any:
    """PostgreSQL: `_SET_CHECK_RUN` and, when that found the validation still active, `JobStore.add` of
    its job (deduplicated as `add` is), in one statement: one round trip where they were two."""
    recorded = _SET_CHECK_RUN.statement.cte("recorded")
    job = Job.__table__.c
    now = bindparam("b_now", type_=job.created_at.type)
    values = {"kind": bindparam("b_kind", type_=job.kind.type), "args": bindparam("b_args", type_=job.args.type),
              "delivery_id": null(), "dedupe_key": bindparam("b_dedupe_key", type_=job.dedupe_key.type),
              "status": literal(JOB_QUEUED, job.status.type), "attempts": literal(0, job.attempts.type),
              "max_attempts": bindparam("b_max_attempts", type_=job.max_attempts.type), "run_after": now,
              "created_at": now, "lease_owner": null(), "lease_expires_at": null(), "last_error": null(),
              "finished_at": null()}
    still_active = select(*values.values()).select_from(recorded).where(any_of(recorded.c.status, VALIDATION_ACTIVE))
    queued = (postgresql.insert(Job).from_select(list(values), still_active)
              .on_conflict_do_nothing(index_elements=["dedupe_key"]).cte("queued"))
    return select(recorded.c.status, recorded.c.title).add_cte(queued)


_SET_CHECK_RUN_THEN_QUEUE = Prepared(_set_check_run_then_queue())


def _read_then_start() -> Any:
    """PostgreSQL: `get` then `start` in one statement: the row as it was before (its statement's snapshot)
    and whether this started it (the UPDATE, fenced as `start`, waits for a concurrent writer of the row
    and checks the fence again on what it left). No row: no result."""
    before = select(*_COLUMNS).where(ValidationState.id == bindparam("b_id")).cte("before")
    started = (update(ValidationState).where(ValidationState.id == bindparam("b_id"), _ACTIVE)
               .values(status=VALIDATION_IN_PROGRESS, started_at=bindparam("b_now"))
               .returning(ValidationState.id).cte("started"))
    return select(*before.c, exists(select(started.c.id)).label("started_now")).select_from(before)


_READ_THEN_START = Prepared(_read_then_start())
_GET = Prepared(select(*_COLUMNS).where(ValidationState.id == bindparam("b_id")))
_SETTLE = Prepared(update(ValidationState).where(ValidationState.id == bindparam("b_id"))
                   .values(check_run_settled=True))
_COMMENT_ID = Prepared(select(PullRequestComment.comment_id)
                       .where(PullRequestComment.project_id == bindparam("b_project"),
                              PullRequestComment.pr_number == bindparam("b_pr")))
# `_fenced` updates, one per set of allowed statuses and of columns written (a handful: start, complete, ...).
_FENCED: dict[tuple[tuple[str, ...], tuple[str, ...]], Prepared] = {}


def _fenced_update(allowed: tuple[str, ...], columns: tuple[str, ...]) -> Prepared:
    if (prepared := _FENCED.get((allowed, columns))) is None:
        table = ValidationState.__table__.c
        prepared = _FENCED[(allowed, columns)] = Prepared(
            update(ValidationState)
            .where(ValidationState.id == bindparam("b_id"), any_of(ValidationState.status, allowed))
            .values({column: bindparam(f"v_{column}", type_=table[column].type) for column in columns})
            .returning(ValidationState.id))
    return prepared


# PostgreSQL: `settle_check_run` and `comment_id` of many validations or PRs at once (one round trip).
_SETTLE_ALL = Prepared(update(ValidationState)
                       .where(ValidationState.id == any_(bindparam("b_ids", type_=postgresql.ARRAY(String))))
                       .values(check_run_settled=True))


def _comment_ids() -> Any:
    asked = pulls_asked()
    return (select(PullRequestComment.project_id, PullRequestComment.pr_number, PullRequestComment.comment_id)
            .join(asked, and_(PullRequestComment.project_id == asked.c.project_id,
                              PullRequestComment.pr_number == asked.c.pr_number)))


_COMMENT_IDS = Prepared(_comment_ids())
_BEGIN_LOCK = text("SELECT pg_advisory_xact_lock(:b_key)")


def begin_lock_key(project_id: str, *what: object) -> int:
    """The PostgreSQL advisory lock key of the begins of one PR (`what`: its number) or of one subject's
    head (its subject and head): a stable signed 64-bit hash."""
    name = ":".join(str(part) for part in ("validation-begin", project_id, *what))
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


class Begun(NamedTuple):
    """What `ValidationStore.begin` did: the validations it ended, the one joined or recorded, whether
    the caller holds the claim on creating that one's check run, and whether `begin` recorded it (so no
    check run of it can exist yet: a joined one's may have been created by an earlier claimer)."""
    ended: list[ValidationState]
    validation: ValidationState
    claimed: bool
    recorded: bool = False


class ValidationLifetime(NamedTuple):
    """When a validation was created and ended (`ValidationStore.lifetimes`; screenshot retention)."""
    id: str
    status: str
    created_at: datetime
    completed_at: datetime | None


class ValidationStore:
    def __init__(self, db: Database, jobs: JobStore) -> None:
        self._db = db
        self._jobs = jobs
        # PostgreSQL: what many validations ending at once write and read, in one round trip for all of
        # them (SQLite runs in process: one statement each, as before).
        self._settling: GroupCommit[str, None] | None = None
        self._comment_ids: GroupCommit[tuple[str, int], int | None] | None = None
        if not db.is_sqlite:
            self._settling, self._comment_ids = GroupCommit(self._settle_all), GroupCommit(self._read_comment_ids)

    async def close(self) -> None:
        for batcher in (self._settling, self._comment_ids):
            if batcher is not None:
                await batcher.close()

    async def create(self, *, project_id: str, pr_number: int, head_sha: str, base_sha: str | None = None,
                     is_fork: bool = False, author: str | None = None, trigger: str = "pull_request",
                     agent_run_id: str | None = None, triggered_by: str | None = None) -> ValidationState:
        values = dict(project_id=project_id, pr_number=pr_number, head_sha=head_sha, base_sha=base_sha,
                      is_fork=is_fork, author=author, trigger=trigger, agent_run_id=agent_run_id,
                      triggered_by=triggered_by)
        return await self._db.write(lambda conn: _insert(conn, values))

    async def supersede(self, project_id: str, pr_number: int, *, new_head_sha: str) -> list[ValidationState]:
        """End every active validation of this PR at another head; returns them as they were."""
        return await self._db.write(lambda conn: _supersede(conn, project_id, pr_number, new_head_sha))

    async def begin(self, *, project_id: str, pr_number: int, head_sha: str, restart: bool, base_sha: str | None,
                    is_fork: bool, author: str | None, trigger: str, claimer: str,
                    triggered_by: str | None = None,
                    record_pull: PullRecorder | None = None) -> Begun | None:
        """In one transaction: end the runs of this PR's other heads (of every head on a restart), then
        join the active validation of this head or record a new one, and claim the creation of its
        check run for `claimer` when that is still to be done and allowed (`may_claim_check_run`):
        a new validation is claimed as it is recorded; joining one costs a statement only when its
        check run is not recorded yet. A claimer that began a validation of this head already (its job
        run again) gets that one back, whatever its state, and nothing ends (`begun_by`).
        `triggered_by`: the login of the person who asked (a command, a button, the dashboard), None for
        an event such as a push. `record_pull` (PostgreSQL: TrackedPullStore.under_lock): the event's record
        of the PR, written in the statement that takes the lock; when the record holds a newer event, nothing
        is begun and None is returned (the caller decides on what is recorded, then begins without it)."""
        assert record_pull is None or not self._db.is_sqlite, "SQLite records the PR in a unit of its own"
        values = dict(project_id=project_id, pr_number=pr_number, head_sha=head_sha, base_sha=base_sha,
                      is_fork=is_fork, author=author, trigger=trigger, agent_run_id=None,
                      check_run_claimed_by=claimer, triggered_by=triggered_by)

        def work(conn: Connection) -> Begun | None:
            if not self._db.is_sqlite:  # SQLite's BEGIN IMMEDIATE already serializes every begin
                # One begin per PR at a time across processes: two new heads (or the same new head
                # twice) must not both record a validation beside the other's, unseen.
                key = begin_lock_key(project_id, pr_number)
                if record_pull is None:
                    conn.execute(_BEGIN_LOCK, {"b_key": key})
                elif not record_pull(conn, key):
                    return None
            found = {"b_project": project_id, "b_pr": pr_number, "b_head": head_sha, "b_claimer": claimer}
            if self._db.is_sqlite:
                rows = from_rows(ValidationState, _OPEN_FOR_PR.run(conn, found).mappings())
            else:
                new = _new_row({**values, "check_run_claimed_at": utcnow()})
                rows = from_rows(ValidationState, _OPEN_FOR_PR_ELSE_RECORD.run(conn, {
                    **found, **{f"v_{key}": value for key, value in new.items()}}).mappings())
                if not rows:  # nothing to end or join: recorded by that statement
                    return Begun([], from_rows(ValidationState, [new])[0], True, recorded=True)
            to_end, join = plan_begin([v for v in rows if v.status in _OPEN_STATUSES], head_sha=head_sha,
                                      restart=restart)
            if join is None and (earlier := begun_by(rows, head_sha=head_sha, claimer=claimer)) is not None:
                # The claimer's job runs again (its process was killed, or its lease expired, before
                # the job was recorded done) and what it began has ended since (or waits for approval):
                # that was this delivery's validation; another would give the head a second check run
                # (or, the PR having moved on, end its newer head's run).
                return Begun([], earlier, False)
            ended_by = "restart" if restart else head_sha
            now = utcnow()
            if to_end:
                _END.run_many(conn, [{"b_id": v.id, **_ended_by_head(ended_by, now)} for v in to_end])
            if join is None:
                return Begun(to_end, _insert(conn, {**values, "check_run_claimed_at": now}), True, recorded=True)
            return Begun(to_end, join, _claim_joined(conn, join, claimer, now))

        return await self._db.write(work)

    async def begin_subject(self, *, project_id: str, subject: str, subject_ref: str, pr_number: int, head_sha: str,
                            base_sha: str, trigger: str, claimer: str) -> Begun:
        """`begin` for a commit a merge queue made (`subject`, not a PR's own head), in one transaction:
        join the validation of this subject's head, whatever its state (a redelivered event, or the job
        of a delivery run again, starts nothing new), else record one; then claim the creation of its
        check run for `claimer` as `begin` does. It ends nothing: other heads of the subject (GitHub
        tests several groups at once) and the PRs' own validations go on."""
        values = dict(project_id=project_id, pr_number=pr_number, subject=subject, subject_ref=subject_ref,
                      head_sha=head_sha, base_sha=base_sha, is_fork=False, trigger=trigger,
                      check_run_claimed_by=claimer)
        def work(conn: Connection) -> Begun:
            now = utcnow()
            join = _lock_subject_head(conn, self._db.is_sqlite, project_id, subject, head_sha)
            if join is None:
                return Begun([], _insert(conn, {**values, "check_run_claimed_at": now}), True, recorded=True)
            return Begun([], join, _claim_joined(conn, join, claimer, now))

        return await self._db.write(work)

    async def end_unbegun_subject(self, *, project_id: str, subject: str, subject_ref: str, pr_number: int,
                                  head_sha: str, base_sha: str, trigger: str,
                                  title: str) -> tuple[ValidationState, bool]:
        """The validation of this subject's head (as `begin_subject` joins it); when there is none, one
        recorded ended already (`cancelled`, saying `title`; no check run to make or settle), so a start
        that comes later begins nothing. Returns it and whether it was recorded here."""
        values = dict(project_id=project_id, pr_number=pr_number, subject=subject, subject_ref=subject_ref,
                      head_sha=head_sha, base_sha=base_sha, is_fork=False, trigger=trigger)

        def work(conn: Connection) -> tuple[ValidationState, bool]:
            join = _lock_subject_head(conn, self._db.is_sqlite, project_id, subject, head_sha)
            if join is not None:
                return join, False
            row = {**_new_row(values), "status": VALIDATION_COMPLETED, "conclusion": "cancelled", "title": title,
                   "completed_at": utcnow(), "check_run_settled": True}
            _INSERT.run(conn, row)
            return from_rows(ValidationState, [row])[0], True

        return await self._db.write(work)

    async def begin_candidate(self, *, project_id: str, subject: str, subject_ref: str, pr_number: int,
                              head_sha: str, base_sha: str, trigger: str, then_queue: str) -> ValidationState:
        """A validation of a commit that exists only in the app's mirror (its own merge queue's candidate):
        no check run can be made on it, so none is claimed and nothing is left for the recovery (settled
        from the start); its job (`then_queue`) is queued in the same transaction. `subject_ref` names one
        try: the same again (a queue job run again after a kill) joins it, whatever its state."""
        values = dict(project_id=project_id, pr_number=pr_number, subject=subject, subject_ref=subject_ref,
                      head_sha=head_sha, base_sha=base_sha, is_fork=False, trigger=trigger)
        found = (select(*_COLUMNS).where(ValidationState.project_id == project_id, ValidationState.subject == subject,
                                         ValidationState.subject_ref == subject_ref)
                 .order_by(ValidationState.created_at.desc()).limit(1))

        def work(conn: Connection) -> ValidationState:
            if not self._db.is_sqlite:
                conn.execute(_BEGIN_LOCK, {"b_key": begin_lock_key(project_id, subject, subject_ref)})
            join = first_from_rows(ValidationState, conn.execute(found).mappings())
            if join is not None:
                return join
            row = _new_row(values)
            row["check_run_settled"] = True
            _INSERT.run(conn, row)
            state = from_rows(ValidationState, [row])[0]
            self._jobs.add(conn, then_queue, args={"validation_id": state.id},
                           dedupe_key=f"{then_queue}:{state.id}", max_attempts=3)
            return state

        return await self._db.write(work)

    async def of_subject_ref(self, project_id: str, subject: str, subject_ref: str) -> ValidationState | None:
        stmt = (select(ValidationState).where(ValidationState.project_id == project_id,
                                              ValidationState.subject == subject,
                                              ValidationState.subject_ref == subject_ref)
                .order_by(ValidationState.created_at.desc()))
        return await self._db.read(lambda conn: entity(conn, stmt))

    async def latest_of_subject(self, project_id: str, subject: str, head_sha: str) -> ValidationState | None:
        """The newest validation of this subject's head (a merge group's, say)."""
        stmt = (select(ValidationState).where(*_of_subject_head(project_id, subject, head_sha))
                .order_by(ValidationState.created_at.desc()))
        return await self._db.read(lambda conn: entity(conn, stmt))

    async def cancel(self, validation_id: str, *, title: str) -> bool:
        return await self._fenced(validation_id, VALIDATION_ACTIVE + (VALIDATION_WAITING,), {
            "status": VALIDATION_COMPLETED, "conclusion": "cancelled", "title": title, "completed_at": utcnow()})

    async def set_check_run(self, validation_id: str, check_run_id: int, *, then_queue: str | None = None,
                            max_attempts: int = 3) -> str | None:
        """Record the validation's check run and, with `then_queue`, queue its job of that kind in the
        same transaction (the job never runs before the check run it reports to is known).
        Returns None, or the validation's title when it ended while its check run was being created
        (another process superseded or closed it): then nothing is queued and the caller ends the
        check run it just made."""
        params = {"b_id": validation_id, "b_check_run": check_run_id}
        if then_queue is not None and not self._db.is_sqlite:
            params.update(b_kind=then_queue, b_args={"validation_id": validation_id}, b_max_attempts=max_attempts,
                          b_dedupe_key=f"{then_queue}:{validation_id}", b_now=utcnow())
            row = await self._db.write(lambda conn: _SET_CHECK_RUN_THEN_QUEUE.run(conn, params).first())
            status, title = row or (None, None)
            return None if status in VALIDATION_ACTIVE else title or "Cancelled"

        def work(conn: Connection) -> str | None:
            row = _SET_CHECK_RUN.run(conn, params).first()
            status, title = row or (None, None)
            if status not in VALIDATION_ACTIVE:
                return title or "Cancelled"
            if then_queue is not None:
                self._jobs.add(conn, then_queue, args={"validation_id": validation_id},
                               dedupe_key=f"{then_queue}:{validation_id}", max_attempts=max_attempts)
            return None

        return await self._db.write(work)

    async def claim_check_run(self, validation_id: str, claimer: str) -> bool:
        """Claim the creation of this validation's check run for `claimer`, if `may_claim_check_run`
        allows it (the recovery, taking over a stale claim)."""
        params = _claim(validation_id, claimer, utcnow())
        return await self._db.write(lambda conn: _CLAIM_CHECK_RUN.run(conn, params).rowcount == 1)

    async def settle_check_run(self, validation_id: str) -> None:
        """GitHub has been told how this validation ended (or it has no check run): nothing to recover."""
        if self._settling is not None:
            await self._settling.submit(validation_id)
            return
        await self._db.write(lambda conn: _SETTLE.run(conn, {"b_id": validation_id}))

    async def _settle_all(self, validation_ids: list[str]) -> list[None]:
        await self._db.write(lambda conn: _SETTLE_ALL.run(conn, {"b_ids": validation_ids}))
        return [None] * len(validation_ids)

    async def unsettled(self, *, limit: int = 100) -> list[ValidationState]:
        """What a crash may have left, oldest first: active validations without a check run whose claim
        on creating it is stale (or was never taken), and validations that ended longer than the same
        while ago whose check run was not settled (`settle_check_run`)."""
        stale_before = utcnow() - CHECK_RUN_CLAIM_STALE
        stmt = (select(ValidationState)
                .where(not_(ValidationState.check_run_settled),
                       or_(and_(_ACTIVE, ValidationState.check_run_id.is_(None), _claim_given_up(stale_before)),
                           and_(not_(_ACTIVE), or_(ValidationState.completed_at.is_(None),
                                                   ValidationState.completed_at < stale_before))))
                .order_by(ValidationState.created_at).limit(limit))
        return await self._db.read(lambda conn: entities(conn, stmt))

    async def read_then_start(self, validation_id: str) -> tuple[ValidationState | None, bool]:
        """`get`, then `start`: the validation as it was before this started it (None: no such
        validation), and whether this started it. One statement on PostgreSQL (a round trip less)."""
        if self._db.is_sqlite:  # run inline: two statements cost less than the one with CTEs
            state = await self.get(validation_id)
            return state, state is not None and await self.start(validation_id)
        params = {"b_id": validation_id, "b_now": utcnow()}
        rows = await self._db.write(lambda conn: _READ_THEN_START.run(conn, params).mappings())
        if not rows:
            return None, False
        return from_rows(ValidationState, rows)[0], bool(rows[0]["started_now"])

    async def start(self, validation_id: str) -> bool:
        return await self._fenced(validation_id, VALIDATION_ACTIVE,
                                  {"status": VALIDATION_IN_PROGRESS, "started_at": utcnow()})

    async def wait_for_approval(self, validation_id: str, *, title: str) -> bool:
        return await self._fenced(validation_id, VALIDATION_ACTIVE, {
            "status": VALIDATION_WAITING, "conclusion": "action_required", "title": title,
            "completed_at": utcnow()})

    async def complete(self, validation_id: str, *, conclusion: str, title: str, results: dict[str, Any],
                       snapshot_id: str | None = None) -> bool:
        return await self._fenced(validation_id, VALIDATION_ACTIVE, {
            "status": VALIDATION_COMPLETED, "conclusion": conclusion, "title": title, "test_results": results,
            "snapshot_id": snapshot_id, "completed_at": utcnow(),
            "auto_merge_eligible": conclusion == "success"})

    async def _fenced(self, validation_id: str, allowed: tuple[str, ...], values: dict[str, Any]) -> bool:
        statement = _fenced_update(allowed, tuple(values))
        params = {"b_id": validation_id, **{f"v_{column}": value for column, value in values.items()}}
        return await self._db.write(lambda conn: bool(statement.run(conn, params).rows))

    async def set_plan(self, validation_id: str, planned: list[dict[str, str]]) -> None:
        """The steps the running validation will take ({"name", "stage"} each, in order), recorded as it
        starts so that its page lists them all, pending, from the start; the first one runs."""
        first = planned[0] if planned else {}
        await self.set_progress(validation_id, {"planned": planned, "steps": [], "current": first.get("name"),
                                                "stage": first.get("stage"), "tail": ""})

    async def set_progress(self, validation_id: str, progress: dict[str, Any]) -> None:
        """What the running validation is doing, for its page (while it is still running): one write a
        progress update (a few seconds apart at most), keeping the plan (`set_plan`) and when the
        running step started."""
        active = (ValidationState.id == validation_id, ValidationState.status.in_(VALIDATION_ACTIVE))
        read = select(ValidationState.test_results).where(*active)

        def work(conn: Connection) -> None:
            row = conn.execute(read).first()
            if row is None:
                return
            live = merged_progress((row[0] or {}).get("live"), progress, now=utcnow())
            conn.execute(update(ValidationState).where(*active).values(test_results={"live": live}))

        await self._db.write(work)

    async def is_active(self, validation_id: str) -> bool:
        stmt = select(ValidationState.status).where(ValidationState.id == validation_id)
        return await self._db.read(lambda conn: conn.execute(stmt).scalar_one_or_none() in VALIDATION_ACTIVE)

    async def get(self, validation_id: str) -> ValidationState | None:
        params = {"b_id": validation_id}
        return await self._db.read(lambda conn: first_from_rows(ValidationState, _GET.run(conn, params).mappings()))

    async def latest_for_pr(self, project_id: str, pr_number: int) -> ValidationState | None:
        stmt = (select(ValidationState)
                .where(ValidationState.project_id == project_id, ValidationState.pr_number == pr_number,
                       _OF_PR_HEAD)
                .order_by(ValidationState.created_at.desc()))
        return await self._db.read(lambda conn: entity(conn, stmt))

    async def previous_completed(self, state: ValidationState) -> ValidationState | None:
        """The PR's latest validation completed before `state` was recorded (the PR comment's "Previous")."""
        stmt = (select(ValidationState)
                .where(ValidationState.project_id == state.project_id, ValidationState.pr_number == state.pr_number,
                       _OF_PR_HEAD, ValidationState.status == VALIDATION_COMPLETED, ValidationState.id != state.id,
                       ValidationState.created_at <= state.created_at)
                .order_by(ValidationState.created_at.desc()))
        return await self._db.read(lambda conn: entity(conn, stmt))

    async def latest_for_head(self, project_id: str, head_sha: str, *,
                              pr_number: int | None = None) -> ValidationState | None:
        stmt = (select(ValidationState)
                .where(ValidationState.project_id == project_id, ValidationState.head_sha == head_sha, _OF_PR_HEAD)
                .order_by(ValidationState.created_at.desc()))
        if pr_number is not None:
            stmt = stmt.where(ValidationState.pr_number == pr_number)
        return await self._db.read(lambda conn: entity(conn, stmt))

    async def for_project(self, project_id: str, *, limit: int = 50) -> list[ValidationState]:
        stmt = (select(ValidationState).where(ValidationState.project_id == project_id)
                .order_by(ValidationState.created_at.desc()).limit(limit))
        return await self._db.read(lambda conn: entities(conn, stmt), large=True)

    async def for_pr(self, project_id: str, pr_number: int, *, limit: int = 200) -> list[ValidationState]:
        """The PR's validations, newest first, without their `test_results` (left None: large, and
        what lists them does not read them)."""
        stmt = (select(*_LISTED).where(ValidationState.project_id == project_id,
                                       ValidationState.pr_number == pr_number, _OF_PR_HEAD)
                .order_by(ValidationState.created_at.desc(), ValidationState.id.desc()).limit(limit))
        return await self._db.read(lambda conn: from_rows(ValidationState, conn.execute(stmt).mappings()))

    async def validated_heads(self, project_id: str, head_shas: list[str], *,
                              chunk: int = 500) -> set[tuple[int, str]]:
        """(PR number, head) of every validation, in any state, of these heads (the resync's question)."""
        found: set[tuple[int, str]] = set()
        for start in range(0, len(head_shas), chunk):
            stmt = (select(ValidationState.pr_number, ValidationState.head_sha).distinct()
                    .where(ValidationState.project_id == project_id, _OF_PR_HEAD,
                           ValidationState.head_sha.in_(head_shas[start:start + chunk])))
            found.update((number, sha) for number, sha in
                         await self._db.read(lambda conn, stmt=stmt: conn.execute(stmt).all()))
        return found

    async def lifetimes(self, ids: list[str], *, chunk: int = 500) -> list[ValidationLifetime]:
        """When these validations were created and completed; ids without a row are left out."""
        columns = (ValidationState.id, ValidationState.status, ValidationState.created_at,
                   ValidationState.completed_at)
        found: list[ValidationLifetime] = []
        for start in range(0, len(ids), chunk):
            stmt = select(*columns).where(ValidationState.id.in_(ids[start:start + chunk]))
            found.extend(ValidationLifetime(*row) for row in
                         await self._db.read(lambda conn, stmt=stmt: conn.execute(stmt).all(), large=True))
        return found

    # the fork gate
    async def approve_head(self, project_id: str, pr_number: int, head_sha: str, *, approved_by: str) -> None:
        stmt = (upsert_insert(self._db, HeadApproval)
                .values(project_id=project_id, pr_number=pr_number, head_sha=head_sha, approved_by=approved_by,
                        created_at=utcnow())
                .on_conflict_do_nothing(index_elements=["project_id", "pr_number", "head_sha"]))
        await self._db.write(lambda conn: conn.execute(stmt))

    async def is_head_approved(self, project_id: str, pr_number: int, head_sha: str) -> bool:
        stmt = select(HeadApproval.id).where(HeadApproval.project_id == project_id,
                                             HeadApproval.pr_number == pr_number, HeadApproval.head_sha == head_sha)
        return await self._db.read(lambda conn: conn.execute(stmt).first() is not None)

    # the sticky comment
    async def comment_id(self, project_id: str, pr_number: int) -> int | None:
        if self._comment_ids is not None:
            return await self._comment_ids.submit((project_id, pr_number))
        params = {"b_project": project_id, "b_pr": pr_number}
        return await self._db.read(lambda conn: _COMMENT_ID.run(conn, params).scalar())

    async def _read_comment_ids(self, prs: list[tuple[str, int]]) -> list[int | None]:
        params = pulls_params(prs)
        found = await self._db.read(lambda conn: {(project, number): comment for project, number, comment
                                                  in _COMMENT_IDS.run(conn, params).rows})
        return [found.get(pr) for pr in prs]

    async def set_comment_id(self, project_id: str, pr_number: int, comment_id: int) -> None:
        now: datetime = utcnow()
        stmt = (upsert_insert(self._db, PullRequestComment)
                .values(project_id=project_id, pr_number=pr_number, comment_id=comment_id, updated_at=now))
        stmt = stmt.on_conflict_do_update(index_elements=["project_id", "pr_number"],
                                          set_={"comment_id": comment_id, "updated_at": now})
        await self._db.write(lambda conn: conn.execute(stmt))


def plan_begin(open_validations: list[ValidationState], *, head_sha: str,
               restart: bool) -> tuple[list[ValidationState], ValidationState | None]:
    """What beginning a validation of `head_sha` does to the PR's open (queued, running or waiting)
    validations, newest first: (those to end, the one to join or None to record a new one).
    Another head's runs end; a restart ends them all; otherwise the newest queued or running
    validation of this head is joined (a waiting one is not: a new event asks for a new run)."""
    if restart:
        return list(open_validations), None
    to_end = [v for v in open_validations if v.head_sha != head_sha]
    join = next((v for v in open_validations if v.head_sha == head_sha and v.status in VALIDATION_ACTIVE), None)
    return to_end, join


def begun_by(validations: list[ValidationState], *, head_sha: str, claimer: str) -> ValidationState | None:
    """The newest of `validations` of `head_sha` that `claimer` began (it holds, or held, the claim on
    creating its check run), whatever its state: a delivery begins at most one validation of its head."""
    return next((v for v in validations if v.head_sha == head_sha and v.check_run_claimed_by == claimer), None)


def merged_progress(previous: dict[str, Any] | None, progress: dict[str, Any], *, now: datetime) -> dict[str, Any]:
    """A running validation's live record after a progress update: `progress` (its steps so far, the
    running step and its output tail), the plan kept from `previous`, and when the running step started
    (kept while the same step runs)."""
    previous = previous or {}
    live = {"planned": previous.get("planned", []), **progress}
    same_step = (previous.get("current"), previous.get("stage")) == (live.get("current"), live.get("stage"))
    live["current_started_at"] = (previous.get("current_started_at") if same_step and "current_started_at" in previous
                                  else now.isoformat())
    return live


def may_claim_check_run(validation: ValidationState, claimer: str, *, now: datetime,
                        stale_after: timedelta = CHECK_RUN_CLAIM_STALE) -> bool:
    """Whether `claimer` may create the check run of this active validation: none is recorded yet and
    nobody else holds the claim on creating it: unclaimed, claimed by `claimer` itself (a retried job
    of the same delivery, e.g. after the POST failed), or claimed longer than `stale_after` ago (the
    claimer gave up). `_CLAIM_CHECK_RUN`'s WHERE says the same in SQL."""
    if validation.status not in VALIDATION_ACTIVE or validation.check_run_id is not None:
        return False
    claimed_by, claimed_at = validation.check_run_claimed_by, validation.check_run_claimed_at
    return (claimed_by is None or claimed_by == claimer
            or (claimed_at is not None and claimed_at < now - stale_after))


def _of_subject_head(project_id: str, subject: str, head_sha: str) -> tuple[Any, ...]:
    return (ValidationState.project_id == project_id, ValidationState.subject == subject,
            ValidationState.head_sha == head_sha)


def _lock_subject_head(conn: Connection, is_sqlite: bool, project_id: str, subject: str,
                       head_sha: str) -> ValidationState | None:
    """Take the begin lock of this subject's head (SQLite's BEGIN IMMEDIATE already serializes every
    begin) and read its newest validation."""
    if not is_sqlite:
        conn.execute(_BEGIN_LOCK, {"b_key": begin_lock_key(project_id, subject, head_sha)})
    found = (select(*_COLUMNS).where(*_of_subject_head(project_id, subject, head_sha))
             .order_by(ValidationState.created_at.desc()).limit(1))
    return first_from_rows(ValidationState, conn.execute(found).mappings())


def _claim_joined(conn: Connection, join: ValidationState, claimer: str, now: datetime) -> bool:
    """Claim the creation of the check run of the validation `begin` joined for `claimer`, if
    `may_claim_check_run` allows it; whether it did (`join` then shows the claim)."""
    if not may_claim_check_run(join, claimer, now=now):
        return False
    if _CLAIM_CHECK_RUN.run(conn, _claim(join.id, claimer, now)).rowcount != 1:
        return False  # PostgreSQL: another transaction claimed it meanwhile
    join.check_run_claimed_by, join.check_run_claimed_at = claimer, now
    return True


def _new_row(values: dict[str, Any]) -> dict[str, Any]:
    """Every column of a new validation recorded with `values`."""
    row: dict[str, Any] = {column.key: None for column in _COLUMNS}
    row["subject"] = SUBJECT_PULL_REQUEST
    row.update(values, id=new_id(), status=VALIDATION_QUEUED, test_results={}, auto_merge_eligible=False,
               check_run_settled=False, created_at=utcnow())
    return row


def _insert(conn: Connection, values: dict[str, Any]) -> ValidationState:
    row = _new_row(values)
    _INSERT.run(conn, row)
    return from_rows(ValidationState, [row])[0]


def _supersede(conn: Connection, project_id: str, pr_number: int, new_head_sha: str) -> list[ValidationState]:
    """End every active or waiting validation of the PR at another head; returns them (now ended)."""
    return from_rows(ValidationState, conn.execute(_SUPERSEDE, {
        "b_project": project_id, "b_pr": pr_number, **_ended_by_head(new_head_sha, utcnow())}).mappings())


def _claim(validation_id: str, claimer: str, now: datetime) -> dict[str, Any]:
    """The parameters of `_CLAIM_CHECK_RUN`: `claimer` claims at `now` (a claim older than
    CHECK_RUN_CLAIM_STALE was given up)."""
    return {"b_id": validation_id, "b_claimer": claimer, "b_now": now, "b_stale_before": now - CHECK_RUN_CLAIM_STALE}


def _ended_by_head(head: str, now: datetime) -> dict[str, Any]:
    """The parameters of `_ENDED_BY_HEAD`: ended at `now` for `head` (a sha, or "restart")."""
    return {"b_head": head, "b_now": now, "b_title": f"Superseded by {head[:7]}"}
