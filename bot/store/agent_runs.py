"""Agent runs: creation with their first job, a lease per run, fenced state changes, and the one live poll.

Two jobs never advance the same run at once: a job first takes the run's lease (one fenced statement;
an expired lease can be taken over), and every change it writes is fenced by that lease *and* by the
status it believes current, so a user's confirm, reject or cancel that landed meanwhile always wins.
Waiting is a delayed `agent_run` job; the run's `poll_token` names the one poll that is live, and the
token and its job are written in one transaction, so a crash never leaves a run without its next poll
nor with two chains of polls.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, bindparam, func, insert, or_, select, update

from bot.db import Database
from bot.models import (AGENT_PENDING, AGENT_TERMINAL, JOB_AGENT_RUN, JOB_QUEUED, AgentRun, Job, Project,
                        ValidationState, new_id, utcnow)
from bot.store.batch import GroupCommit
from bot.store.prepared import Prepared
from bot.store.sql import any_of, entities, entity, from_rows, pulls_asked, pulls_params

JOB_MAX_ATTEMPTS = 5


@dataclass(frozen=True)
class NewRun:
    project_id: str
    target_text: str
    source: str
    requested_by: str | None
    backend: str
    auto_confirm: bool
    max_fix_attempts: int
    origin_pr_number: int | None = None


def _job_values(run_id: str, *, token: str | None, run_after: datetime) -> dict[str, Any]:
    return {"kind": JOB_AGENT_RUN, "args": {"run_id": run_id, "token": token}, "delivery_id": None,
            "dedupe_key": f"agent-run:{run_id}:{new_id()}", "status": JOB_QUEUED, "attempts": 0,
            "max_attempts": JOB_MAX_ATTEMPTS, "run_after": run_after, "created_at": utcnow()}


_COLUMNS = tuple(AgentRun.__table__.c)
_NOT_ENDED = ~any_of(AgentRun.status, AGENT_TERMINAL)


def _active_for_prs() -> Any:
    """PostgreSQL: `active_for_pr` of many PRs in one statement (each row says which PR asked for it)."""
    asked = pulls_asked()
    return (select(*_COLUMNS)
            .join(asked, and_(AgentRun.project_id == asked.c.project_id, AgentRun.pr_number == asked.c.pr_number))
            .where(_NOT_ENDED)
            .order_by(AgentRun.created_at.desc()))


_ACTIVE_FOR_PRS = Prepared(_active_for_prs())
_ACTIVE_FOR_PR = Prepared(select(*_COLUMNS)
                          .where(AgentRun.project_id == bindparam("b_project"), AgentRun.pr_number == bindparam("b_pr"),
                                 _NOT_ENDED)
                          .order_by(AgentRun.created_at.desc()))


class AgentRunStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        # PostgreSQL: every validation that ends asks (its PR's runs are nudged): those asked meanwhile go in
        # one round trip. SQLite reads in process, one statement each, as before.
        self._active: GroupCommit[tuple[str, int], list[AgentRun]] | None = (
            None if db.is_sqlite else GroupCommit(self._read_active))

    async def create(self, new: NewRun) -> AgentRun:
        """Record the run and queue the job that starts it, in one transaction."""
        run_id, now = new_id(), utcnow()
        values = {
            "id": run_id, "project_id": new.project_id, "target_text": new.target_text, "status": AGENT_PENDING,
            "plan_generated": False, "pr_created": False, "created_at": now, "source": new.source,
            "requested_by": new.requested_by, "backend": new.backend, "auto_confirm": new.auto_confirm,
            "origin_pr_number": new.origin_pr_number, "pr_number": new.origin_pr_number, "agent_handle": {},
            "agent_seen_active": False, "agent_resumed": False, "fix_attempts": 0,
            "max_fix_attempts": new.max_fix_attempts, "polls": 0, "transient_errors": 0,
            "status_changed_at": now, "updated_at": now}

        def work(conn: Connection) -> AgentRun:
            conn.execute(insert(AgentRun).values(values))
            conn.execute(insert(Job).values(_job_values(run_id, token=None, run_after=now)))
            found = entity(conn, select(AgentRun).where(AgentRun.id == run_id))
            assert found is not None
            return found

        return await self._db.write(work)

    async def get(self, run_id: str) -> AgentRun | None:
        return await self._db.read(lambda conn: entity(conn, select(AgentRun).where(AgentRun.id == run_id)))

    async def for_project(self, project_id: str, *, limit: int = 50) -> list[AgentRun]:
        stmt = (select(AgentRun).where(AgentRun.project_id == project_id)
                .order_by(AgentRun.created_at.desc(), AgentRun.id).limit(limit))
        return await self._db.read(lambda conn: entities(conn, stmt), large=True)

    async def running_counts(self, project_ids: list[str]) -> dict[str, int]:
        """How many runs of each project have not ended (one statement, for the project cards)."""
        if not project_ids:
            return {}
        stmt = (select(AgentRun.project_id, func.count())
                .where(AgentRun.project_id.in_(project_ids), AgentRun.status.not_in(AGENT_TERMINAL))
                .group_by(AgentRun.project_id))
        counted = dict(await self._db.read(lambda conn: conn.execute(stmt).all()))
        return {project_id: counted.get(project_id, 0) for project_id in project_ids}

    async def active_for_pr(self, project_id: str, pr_number: int) -> list[AgentRun]:
        if self._active is not None:
            return await self._active.submit((project_id, pr_number))
        params = {"b_project": project_id, "b_pr": pr_number}
        return await self._db.read(lambda conn: from_rows(AgentRun, _ACTIVE_FOR_PR.run(conn, params).mappings()))

    async def _read_active(self, prs: list[tuple[str, int]]) -> list[list[AgentRun]]:
        params = pulls_params(prs)  # each PR once: one asked twice would join its runs twice
        runs = await self._db.read(lambda conn: from_rows(AgentRun, _ACTIVE_FOR_PRS.run(conn, params).mappings()))
        return [[run for run in runs if (run.project_id, run.pr_number) == pr] for pr in prs]

    async def close(self) -> None:
        if self._active is not None:
            await self._active.close()

    # ---- state changes -----------------------------------------------------------------------------

    async def transition(self, run_id: str, *, expect: tuple[str, ...], values: dict[str, Any]) -> AgentRun | None:
        """A user's change (confirm, reject, cancel): only from the `expect`ed statuses, lease or not.
        Returns the run as it is after the change, or None when it was in another status."""
        values = {**values, "updated_at": utcnow()}
        if "status" in values:
            values["status_changed_at"] = values["updated_at"]
        stmt = (update(AgentRun).where(AgentRun.id == run_id, AgentRun.status.in_(expect))
                .values(**values).returning(AgentRun.id))

        def work(conn: Connection) -> AgentRun | None:
            if conn.execute(stmt).scalar_one_or_none() is None:
                return None
            conn.execute(insert(Job).values(_job_values(run_id, token=None, run_after=utcnow())))
            return entity(conn, select(AgentRun).where(AgentRun.id == run_id))

        return await self._db.write(work)

    async def acquire(self, run_id: str, owner: str, *, seconds: float) -> AgentRun | None:
        """Take the run's lease (free, expired, or already ours); None when another job holds it."""
        now = utcnow()
        stmt = (update(AgentRun)
                .where(AgentRun.id == run_id,
                       or_(AgentRun.lease_owner.is_(None), AgentRun.lease_owner == owner,
                           AgentRun.lease_expires_at < now))
                .values(lease_owner=owner, lease_expires_at=now + timedelta(seconds=seconds))
                .returning(AgentRun.id))

        def work(conn: Connection) -> AgentRun | None:
            if conn.execute(stmt).scalar_one_or_none() is None:
                return None
            return entity(conn, select(AgentRun).where(AgentRun.id == run_id))

        return await self._db.write(work)

    async def lease_expiry(self, run_id: str) -> datetime | None:
        stmt = select(AgentRun.lease_expires_at).where(AgentRun.id == run_id)
        return await self._db.read(lambda conn: conn.execute(stmt).scalar_one_or_none())

    async def extend(self, run_id: str, owner: str, *, seconds: float) -> bool:
        stmt = (update(AgentRun).where(AgentRun.id == run_id, AgentRun.lease_owner == owner)
                .values(lease_expires_at=utcnow() + timedelta(seconds=seconds)).returning(AgentRun.id))
        return await self._db.write(lambda conn: conn.execute(stmt).scalar_one_or_none() is not None)

    async def release(self, run_id: str, owner: str) -> None:
        stmt = (update(AgentRun).where(AgentRun.id == run_id, AgentRun.lease_owner == owner)
                .values(lease_owner=None, lease_expires_at=None))
        await self._db.write(lambda conn: conn.execute(stmt))

    async def save(self, run_id: str, owner: str, *, expect: str, values: dict[str, Any],
                   poll_after: float | None = None, nudge_after: float | None = None) -> AgentRun | None:
        """The job's change: fenced by its lease and the status it read. With `poll_after` (seconds), the
        run's next poll is written with it (a new token: any older poll becomes a no-op); `nudge_after`
        queues a token-less job (for a lease held elsewhere). None when the fence failed."""
        now = utcnow()
        values = {**values, "updated_at": now}
        if values.get("status", expect) != expect:
            values["status_changed_at"] = now
        token = new_id() if poll_after is not None else None
        if token is not None:
            values["poll_token"] = token
        stmt = (update(AgentRun)
                .where(AgentRun.id == run_id, AgentRun.lease_owner == owner, AgentRun.status == expect)
                .values(**values).returning(AgentRun.id))

        def work(conn: Connection) -> AgentRun | None:
            if conn.execute(stmt).scalar_one_or_none() is None:
                return None
            if poll_after is not None:
                conn.execute(insert(Job).values(_job_values(
                    run_id, token=token, run_after=now + timedelta(seconds=poll_after))))
            return entity(conn, select(AgentRun).where(AgentRun.id == run_id))

        return await self._db.write(work)

    async def nudge(self, run_id: str, *, after: float = 0.0) -> None:
        """Queue a job that advances the run (a token-less job always looks; it then owns the polling)."""
        job = _job_values(run_id, token=None, run_after=utcnow() + timedelta(seconds=after))
        await self._db.write(lambda conn: conn.execute(insert(Job).values(job)))

    # ---- links and settings ------------------------------------------------------------------------

    async def link_validation(self, validation_id: str, run_id: str) -> None:
        stmt = (update(ValidationState)
                .where(ValidationState.id == validation_id, ValidationState.agent_run_id.is_(None))
                .values(agent_run_id=run_id))
        await self._db.write(lambda conn: conn.execute(stmt))

    async def update_project_settings(self, project_id: str, values: dict[str, Any]) -> Project | None:
        """The agent settings of a project (agent_backend, agent_command, max_fix_attempts,
        auto_confirm_plans, repository_rules, planning_statement)."""
        allowed = {"agent_backend", "agent_command", "max_fix_attempts", "auto_confirm_plans", "repository_rules",
                   "planning_statement"}
        unknown = set(values) - allowed
        if unknown:
            raise ValueError(f"not agent settings: {', '.join(sorted(unknown))}")
        stmt = (update(Project).where(Project.id == project_id)
                .values(**values, updated_at=utcnow()).returning(Project.id))

        def work(conn: Connection) -> Project | None:
            if conn.execute(stmt).scalar_one_or_none() is None:
                return None
            return entity(conn, select(Project).where(Project.id == project_id))

        return await self._db.write(work)
