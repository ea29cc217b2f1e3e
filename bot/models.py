"""Database tables and the job kinds (JOB_WEBHOOK, JOB_VALIDATE, JOB_AGENT_RUN). Column meanings
follow the seed design's models where it has them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (JSON, BigInteger, Boolean, DateTime, ForeignKey, Index, Integer, String, Text,
                        UniqueConstraint, false, text)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


def seconds_between(start: datetime, end: datetime) -> float:
    """Seconds from `start` to `end`, at least 0; a datetime without its zone (as SQLite gives one back
    outside the UTCDateTime column type) is UTC."""
    def utc(moment: datetime) -> datetime:
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
    return max(0.0, (utc(end) - utc(start)).total_seconds())


def new_id() -> str:
    return uuid.uuid4().hex


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both SQLite (which drops the zone) and PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[Any]: JSON}


class Installation(Base):
    __tablename__ = "installations"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    account_login: Mapped[str] = mapped_column(String(255))
    account_id: Mapped[int | None] = mapped_column(BigInteger)
    account_type: Mapped[str | None] = mapped_column(String(32))
    repository_selection: Mapped[str | None] = mapped_column(String(16))
    permissions: Mapped[dict[str, Any]] = mapped_column(default=dict)
    events: Mapped[list[Any]] = mapped_column(default=list)
    suspended_at: Mapped[datetime | None]
    deleted_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Project(Base):
    __tablename__ = "projects"
    __table_args__ = (UniqueConstraint("github_repo_id", name="uq_projects_repo"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    installation_id: Mapped[int | None] = mapped_column(ForeignKey("installations.id"), index=True)
    github_repo_id: Mapped[int] = mapped_column(BigInteger)
    name: Mapped[str] = mapped_column(String(255))  # owner/repo
    github_url: Mapped[str] = mapped_column(String(512))
    webhook_url: Mapped[str | None] = mapped_column(String(512))
    default_branch: Mapped[str | None] = mapped_column(String(255))
    private: Mapped[bool] = mapped_column(Boolean, default=False)
    repository_rules: Mapped[str] = mapped_column(Text, default="")
    setup_commands: Mapped[list[Any]] = mapped_column(default=list)
    validate_commands: Mapped[list[Any]] = mapped_column(default=list)
    auto_merge_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    auto_confirm_plans: Mapped[bool] = mapped_column(Boolean, default=False)
    planning_statement: Mapped[str] = mapped_column(Text, default="")
    # Agent runs: "codegen", "local", "none", or NULL (Codegen when CODEGEN_API_KEY and CODEGEN_ORG_ID are set).
    agent_backend: Mapped[str | None] = mapped_column(String(16))
    agent_command: Mapped[str] = mapped_column(Text, default="")  # the local backend's command
    max_fix_attempts: Mapped[int] = mapped_column(Integer, default=3)
    # The merge queue's settings from the dashboard ({"enabled": ..., "method": ..., ...}; a key left out
    # is not set here); the repository's file wins key by key (pipeline/repo_config/effective.py).
    merge_queue: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    pinned: Mapped[bool] = mapped_column(Boolean, default=True)
    archived_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    @property
    def owner(self) -> str:
        return self.name.split("/", 1)[0]

    @property
    def repo(self) -> str:
        return self.name.split("/", 1)[1]


class ProjectSecret(Base):
    """A project secret; the value is Fernet-encrypted and never read back by the API."""

    __tablename__ = "project_secrets"
    __table_args__ = (UniqueConstraint("project_id", "name", name="uq_project_secret_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128))
    value_encrypted: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class User(Base):
    """A GitHub user who logged in to the dashboard; tokens are Fernet-encrypted."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    login: Mapped[str] = mapped_column(String(255))
    access_token_encrypted: Mapped[str | None] = mapped_column(Text)
    refresh_token_encrypted: Mapped[str | None] = mapped_column(Text)
    token_expires_at: Mapped[datetime | None]
    # Dashboard sessions issued at a lower epoch are over: logout and a revoked authorization raise it.
    session_epoch: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ApiToken(Base):
    """A personal API token of a dashboard user (`Authorization: Bearer cga_...`); only its SHA-256 is kept."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]  # None: never; an expired token no longer authenticates


AGENT_PENDING = "pending"
AGENT_PLANNING = "planning"
AGENT_AWAITING_CONFIRMATION = "awaiting_confirmation"
AGENT_RUNNING = "running"
AGENT_PR_OPEN = "pr_open"
AGENT_VALIDATING = "validating"
AGENT_FIXING = "fixing"
AGENT_COMPLETED = "completed"
AGENT_FAILED = "failed"
AGENT_CANCELLED = "cancelled"
AGENT_TERMINAL = (AGENT_COMPLETED, AGENT_FAILED, AGENT_CANCELLED)


class AgentRun(Base):
    """A goal handed to a coding agent, driven to a validated PR (the seed's model, extended).

    The run is a state machine (pipeline/agents/machine.py) advanced by `agent_run` jobs; the lease
    columns keep two jobs from advancing the same run at once, `poll_token` names the one live poll.
    """

    __tablename__ = "agent_runs"
    __table_args__ = (Index("ix_agent_runs_pr", "project_id", "pr_number"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    target_text: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(32), default=AGENT_PENDING)
    plan_generated: Mapped[bool] = mapped_column(Boolean, default=False)
    pr_created: Mapped[bool] = mapped_column(Boolean, default=False)
    validation_status: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    completed_at: Mapped[datetime | None]
    # who and what
    source: Mapped[str] = mapped_column(String(32), default="api")  # api | dashboard | pr_comment | fix_button
    requested_by: Mapped[str | None] = mapped_column(String(255))
    backend: Mapped[str] = mapped_column(String(16), default="codegen")
    auto_confirm: Mapped[bool] = mapped_column(Boolean, default=False)
    plan_text: Mapped[str | None] = mapped_column(Text)
    plan_decided_by: Mapped[str | None] = mapped_column(String(255))
    origin_pr_number: Mapped[int | None] = mapped_column(Integer)  # the PR the run was started on
    pr_number: Mapped[int | None] = mapped_column(Integer)  # the PR the run works on
    pr_url: Mapped[str | None] = mapped_column(String(512))
    branch: Mapped[str | None] = mapped_column(String(255))
    # the agent
    agent_handle: Mapped[dict[str, Any]] = mapped_column(default=dict)
    agent_started_at: Mapped[datetime | None]
    agent_seen_active: Mapped[bool] = mapped_column(Boolean, default=False)
    agent_resumed: Mapped[bool] = mapped_column(Boolean, default=False)
    # the fix loop
    fix_attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_fix_attempts: Mapped[int] = mapped_column(Integer, default=3)
    fix_base_sha: Mapped[str | None] = mapped_column(String(40))
    handled_validation_id: Mapped[str | None] = mapped_column(String(32))
    last_validation_id: Mapped[str | None] = mapped_column(String(32))
    # bookkeeping of the job that advances it
    polls: Mapped[int] = mapped_column(Integer, default=0)
    transient_errors: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str | None] = mapped_column(Text)
    status_changed_at: Mapped[datetime | None]
    updated_at: Mapped[datetime | None]
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None]
    poll_token: Mapped[str | None] = mapped_column(String(32))


VALIDATION_QUEUED = "queued"
VALIDATION_IN_PROGRESS = "in_progress"
VALIDATION_COMPLETED = "completed"
VALIDATION_SUPERSEDED = "superseded"
VALIDATION_WAITING = "waiting"  # fork gate: a maintainer must say /ok-to-test
VALIDATION_ACTIVE = (VALIDATION_QUEUED, VALIDATION_IN_PROGRESS)
# What a validation validates (ValidationState.subject). Only a pull request's own head takes part in
# what is about a PR: superseding, the sticky comment, merging, the PR overview, commands and buttons.
SUBJECT_PULL_REQUEST = "pull_request"
SUBJECT_MERGE_GROUP = "merge_group"          # a group of GitHub's merge queue (its gh-readonly-queue/... head)
SUBJECT_QUEUE_CANDIDATE = "queue_candidate"  # a candidate commit the app's own merge queue built


class ValidationState(Base):
    """One validation of one PR head (the seed's model, extended), or of a commit made to merge PRs
    (`subject`: a merge queue's group or candidate; `pr_number` is then the PR it was made for, the
    last of those it merges, and `subject_ref` the ref that names it)."""

    __tablename__ = "validation_states"
    __table_args__ = (Index("ix_validation_pr", "project_id", "pr_number"),
                      Index("ix_validation_head", "project_id", "head_sha"),
                      # the few whose check run may still need settling (ValidationStore.unsettled)
                      Index("ix_validation_unsettled", "created_at", sqlite_where=text("check_run_settled = 0"),
                            postgresql_where=text("NOT check_run_settled")))

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    agent_run_id: Mapped[str | None] = mapped_column(ForeignKey("agent_runs.id"))
    pr_number: Mapped[int] = mapped_column(Integer)
    subject: Mapped[str] = mapped_column(String(32), default=SUBJECT_PULL_REQUEST,
                                         server_default=SUBJECT_PULL_REQUEST)
    subject_ref: Mapped[str | None] = mapped_column(String(255))
    head_sha: Mapped[str] = mapped_column(String(40))
    base_sha: Mapped[str | None] = mapped_column(String(40))
    is_fork: Mapped[bool] = mapped_column(Boolean, default=False)
    author: Mapped[str | None] = mapped_column(String(255))
    trigger: Mapped[str] = mapped_column(String(64), default="pull_request")
    triggered_by: Mapped[str | None] = mapped_column(String(255))  # the login who asked (a command, a button)
    check_run_id: Mapped[int | None] = mapped_column(BigInteger)
    # Who may create the check run (ValidationStore.begin, may_claim_check_run): a delivery id or a
    # random id, and since when; stays on the row once check_run_id is recorded.
    check_run_claimed_by: Mapped[str | None] = mapped_column(String(64))
    check_run_claimed_at: Mapped[datetime | None]
    # Whether GitHub has been told how this validation ended: its check run completed, or found to have
    # none. Until then the recovery (ValidationService.recover_check_runs) may have to do it.
    check_run_settled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    snapshot_id: Mapped[str | None] = mapped_column(String(64))
    deployment_status: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(32), default=VALIDATION_QUEUED)
    conclusion: Mapped[str | None] = mapped_column(String(32))
    title: Mapped[str | None] = mapped_column(Text)
    superseded_by: Mapped[str | None] = mapped_column(String(40))
    test_results: Mapped[dict[str, Any]] = mapped_column(default=dict)
    auto_merge_eligible: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]


class HeadApproval(Base):
    """A maintainer's /ok-to-test for one head of a fork PR (the fork gate)."""

    __tablename__ = "head_approvals"
    __table_args__ = (UniqueConstraint("project_id", "pr_number", "head_sha", name="uq_head_approval"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    pr_number: Mapped[int] = mapped_column(Integer)
    head_sha: Mapped[str] = mapped_column(String(40))
    approved_by: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PullRequestComment(Base):
    """The one sticky comment the app keeps on a PR."""

    __tablename__ = "pull_request_comments"
    __table_args__ = (UniqueConstraint("project_id", "pr_number", name="uq_pr_comment"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    pr_number: Mapped[int] = mapped_column(Integer)
    comment_id: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class PullRequestSettings(Base):
    """Per-PR switches set with commands: `/auto-merge on|off` (None: not set, the config decides)."""

    __tablename__ = "pull_request_settings"
    __table_args__ = (UniqueConstraint("project_id", "pr_number", name="uq_pr_settings"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    pr_number: Mapped[int] = mapped_column(Integer)
    auto_merge: Mapped[bool | None] = mapped_column(Boolean)
    auto_merge_set_by: Mapped[str | None] = mapped_column(String(255))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


PR_OPEN = "open"
PR_CLOSED = "closed"
PR_MERGED = "merged"


class TrackedPullRequest(Base):
    """What the app last heard of a pull request (its events, or a listing): the PR overview's rows."""

    __tablename__ = "pull_requests"
    __table_args__ = (UniqueConstraint("project_id", "number", name="uq_pull_request"),
                      Index("ix_pull_request_state", "project_id", "state"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    number: Mapped[int] = mapped_column(Integer)
    title: Mapped[str] = mapped_column(Text, default="")
    author: Mapped[str | None] = mapped_column(String(255))
    head_sha: Mapped[str] = mapped_column(String(40))
    head_ref: Mapped[str | None] = mapped_column(String(255))
    base_ref: Mapped[str | None] = mapped_column(String(255))
    is_fork: Mapped[bool] = mapped_column(Boolean, default=False)
    draft: Mapped[bool] = mapped_column(Boolean, default=False)
    state: Mapped[str] = mapped_column(String(16), default=PR_OPEN)
    opened_at: Mapped[datetime | None]  # GitHub's created_at
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    closed_at: Mapped[datetime | None]


MERGE_MERGING = "merging"
MERGE_MERGED = "merged"
MERGE_FAILED = "failed"


class PullRequestMerge(Base):
    """The app's merge of one PR head: claimed before the merge request, so one head merges once."""

    __tablename__ = "pull_request_merges"
    __table_args__ = (UniqueConstraint("project_id", "pr_number", "head_sha", name="uq_pr_merge_head"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    pr_number: Mapped[int] = mapped_column(Integer)
    head_sha: Mapped[str] = mapped_column(String(40))
    base_ref: Mapped[str] = mapped_column(String(255))
    method: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=MERGE_MERGING)
    trigger: Mapped[str] = mapped_column(String(64))
    requested_by: Mapped[str | None] = mapped_column(String(255))
    merge_commit_sha: Mapped[str | None] = mapped_column(String(40))
    error: Mapped[str | None] = mapped_column(Text)
    claimed_at: Mapped[datetime] = mapped_column(default=utcnow)
    completed_at: Mapped[datetime | None]


class MergeLock(Base):
    """At most one merge at a time per (project, base branch), across workers: a row claimed in one
    statement, released by its holder, taken over once it expires (a worker died holding it)."""

    __tablename__ = "merge_locks"

    project_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    base_ref: Mapped[str] = mapped_column(String(255), primary_key=True)
    holder: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime]


DELIVERY_WEBHOOK = "webhook"      # POSTed by GitHub to the webhook URL
DELIVERY_RECOVERED = "recovered"  # fetched from the App's delivery log by the recovery sweep
DELIVERY_POLLED = "polled"        # fetched from the delivery log in polling mode


class Delivery(Base):
    """A webhook delivery exactly as received (payload is the JSON text)."""

    __tablename__ = "deliveries"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # X-GitHub-Delivery
    event: Mapped[str] = mapped_column(String(64))
    action: Mapped[str | None] = mapped_column(String(64))
    installation_id: Mapped[int | None] = mapped_column(BigInteger)
    payload: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    source: Mapped[str] = mapped_column(String(16), default=DELIVERY_WEBHOOK, server_default=DELIVERY_WEBHOOK)


class Lease(Base):
    """Work that must run in one process at a time (a sweep, a resync, pruning): a row claimed in one
    statement, renewed by its holder, taken over once it expires (the holder died)."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime]


class MergeQueueState(Base):
    """One base branch's own merge queue: the pure decider's state (pipeline/merge_queue/model.py) as one
    document, replaced by compare-and-swap on `version` (bot/store/merge_queue.py)."""

    __tablename__ = "merge_queues"

    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), primary_key=True)
    base_ref: Mapped[str] = mapped_column(String(255), primary_key=True)
    state: Mapped[dict[str, Any]] = mapped_column(JSON)
    version: Mapped[int] = mapped_column(Integer)
    active: Mapped[bool] = mapped_column(Boolean)  # anything queued or running: resumed at start
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class MergeQueueLanding(Base):
    """A PR a queue candidate merged (or is merging): landing twice is refused by the key."""

    __tablename__ = "merge_queue_landings"

    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), primary_key=True)
    candidate_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    pr_number: Mapped[int] = mapped_column(Integer, primary_key=True)
    merged_sha: Mapped[str | None] = mapped_column(String(40))
    landed_at: Mapped[datetime] = mapped_column(default=utcnow)


class GitHubWriteLane(Base):
    """On PostgreSQL, one installation's GitHub write pacing shared by every process: who may write for it
    now (a lease), the times of its writes in the last hour, and GitHub's hold on it (bot/github/pacing.py
    rules; bot/store/write_lanes.py)."""

    __tablename__ = "github_write_lanes"

    installation_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    holder: Mapped[str | None] = mapped_column(String(64))
    expires_at: Mapped[datetime | None]
    sent_times: Mapped[list[float]] = mapped_column(JSON, default=list)
    hold_until: Mapped[datetime | None]


class EventPayload(Base):
    """An event too large for one PostgreSQL NOTIFY (8000 bytes): the notification carries its id."""

    __tablename__ = "event_payloads"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True,
                                    autoincrement=True)
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class AppState(Base):
    """Small named facts the app keeps across restarts (where the last delivery-log sweep stopped)."""

    __tablename__ = "app_state"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class SkippedDelivery(Base):
    """A delivery-log entry the sweep could not ingest (no payload, not the shape its event promises)."""

    __tablename__ = "skipped_deliveries"

    guid: Mapped[str] = mapped_column(String(64), primary_key=True)
    log_id: Mapped[int] = mapped_column(BigInteger)
    event: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    skipped_at: Mapped[datetime] = mapped_column(default=utcnow)


JOB_QUEUED = "queued"
JOB_RUNNING = "running"
JOB_DONE = "done"
JOB_DEAD = "dead"

# What a job does; bot/app.py gives the worker a handler for each.
JOB_WEBHOOK = "webhook"      # handle a stored webhook delivery (handlers/)
JOB_VALIDATE = "validate"    # run a validation (pipeline/validation/)
JOB_AGENT_RUN = "agent_run"  # advance an agent run (pipeline/agents/)
JOB_MERGE_QUEUE = "merge_queue"  # advance one base branch's merge queue (pipeline/merge_queue/service.py)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_claim", "status", "run_after"),
        # PostgreSQL: a lane's due jobs in claim order, not reading other lanes' (bot/store/jobs.py, migration
        # 0015). `status` leads although constant: PostgreSQL costs an index's heap reads by its first column's
        # correlation, and led by `kind` it lost to ix_jobs_claim plus a filter over every other due job.
        Index("ix_jobs_queued", "status", "kind", "run_after", "id",
              postgresql_where=text(f"status = '{JOB_QUEUED}'")).ddl_if(dialect="postgresql"),
        # PostgreSQL (migration 0016): the background lane's due jobs (every kind but webhooks) in claim order, and
        # the leases that may have expired. Without them each claim read every queued job to sort them, and
        # every version of a running job a claim had left in ix_jobs_claim since the last vacuum.
        Index("ix_jobs_background", "run_after", "id",
              postgresql_where=text(f"status = '{JOB_QUEUED}' AND kind <> '{JOB_WEBHOOK}'")
              ).ddl_if(dialect="postgresql"),
        Index("ix_jobs_leased", "lease_expires_at",
              postgresql_where=text(f"status = '{JOB_RUNNING}'")).ddl_if(dialect="postgresql"),
        UniqueConstraint("dedupe_key", name="uq_jobs_dedupe_key"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    kind: Mapped[str] = mapped_column(String(64))
    delivery_id: Mapped[str | None] = mapped_column(ForeignKey("deliveries.id"), index=True)
    args: Mapped[dict[str, Any]] = mapped_column(default=dict)
    dedupe_key: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), default=JOB_QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=5)
    run_after: Mapped[datetime] = mapped_column(default=utcnow)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    first_failed_at: Mapped[datetime | None]  # where the GitHub outage budget starts (worker/policy.py)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]


class AuditEvent(Base):
    """Append-only: what the bot did, for whom, when."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    action: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str | None] = mapped_column(String(255))
    installation_id: Mapped[int | None] = mapped_column(BigInteger)
    project_id: Mapped[str | None] = mapped_column(String(32), index=True)
    delivery_id: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)


class WorkerHeartbeat(Base):
    __tablename__ = "worker_heartbeats"

    worker_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    running_jobs: Mapped[int] = mapped_column(Integer, default=0)
