"""Replaying a stored webhook delivery on demand: a new `webhook` job for it, so the handlers run again on
the stored payload (they are idempotent: a replayed `pull_request.opened` of a head already validated
starts nothing new). For an admin of its repository (the deliveries page, the JSON API)
or the operator (`codegenapp deliveries replay`), and audited as `delivery.replayed`.

What a delivery's state is, which PR it is about and whether it may be replayed now are pure functions of
the stored rows (`view_of`, `refusal`); `DeliveryReplay` is the thin shell that reads and queues.
"""

from __future__ import annotations

import re

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot import labels
from bot.events import JobWakeup
from bot.models import JOB_DEAD, JOB_DONE, JOB_QUEUED, JOB_RUNNING, JOB_WEBHOOK
from bot.redact import PROCESS_REDACTOR
from bot.store import Store
from bot.store.deliveries import ListedDelivery

HANDLED, FAILED, QUEUED, RETRYING, RUNNING, UNHANDLED = "handled", "failed", "queued", "retrying", "running", \
    "unhandled"
PENDING = (QUEUED, RETRYING, RUNNING)
_EXCEPTION_NAME = re.compile(r"^(?:[A-Za-z_][\w]*\.)*[A-Z]\w*(?:Error|Exception|Response|Refused|Timeout\w*)?: ")
MAX_ERROR = 2_000  # characters of a job's error shown (its end: where a traceback says what went wrong)


@dataclass(frozen=True)
class DeliveryView:
    """A stored delivery as a person reads it."""
    id: str
    event: str
    action: str | None
    what: str                  # "Pull request opened"
    installation_id: int | None
    repository: str | None     # owner/repo, None for an installation-wide event
    repository_id: int | None
    pr_number: int | None
    state: str                 # HANDLED, FAILED, ...
    state_words: str           # "Handled"
    source: str
    source_words: str
    received_at: datetime
    job_id: int | None
    jobs: int                  # how many jobs handled it: 2 or more once replayed
    error: str | None          # the newest job's error (its end), redacted
    error_summary: str | None  # its last line

    @property
    def error_message(self) -> str | None:
        """The last line as a repository's admin reads it: "GET … answered without `head.sha`", not
        "bot.github.errors.UnexpectedResponse: …" (the operator's CLI shows the whole line and more)."""
        if not self.error_summary:
            return None
        return _EXCEPTION_NAME.sub("", self.error_summary) or self.error_summary

    @property
    def replayed(self) -> int:
        return max(self.jobs - 1, 0)


def delivery_state(job_status: str | None, attempts: int | None, error: str | None) -> str:
    """The state of a delivery by its newest job: handled, failed (dead-lettered), running, queued, retrying
    (queued again after a failed try), or unhandled (no job: nothing ever queued it)."""
    if job_status is None:
        return UNHANDLED
    if job_status == JOB_DONE:
        return HANDLED
    if job_status == JOB_DEAD:
        return FAILED
    if job_status == JOB_RUNNING:
        return RUNNING
    if job_status == JOB_QUEUED and (attempts or error):
        return RETRYING
    return QUEUED


def _number(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def pull_request_number(event: str, payload: dict[str, Any]) -> int | None:
    """The pull request a delivery is about, when it is about one: `number` / `pull_request.number`, an
    issue comment on a PR, a check run's or check suite's first PR."""
    def field(container: Any, key: str) -> Any:
        return container.get(key) if isinstance(container, dict) else None

    if event in ("pull_request", "pull_request_review", "pull_request_review_comment"):
        return _number(field(payload, "number")) or _number(field(field(payload, "pull_request"), "number"))
    if event == "issue_comment":
        issue = field(payload, "issue")
        return _number(field(issue, "number")) if field(issue, "pull_request") is not None else None
    if event in ("check_run", "check_suite"):
        pulls = field(field(payload, event), "pull_requests")
        return _number(field(pulls[0], "number")) if isinstance(pulls, list) and pulls else None
    return None


def _error_end(error: str | None, redact: Callable[[str], str]) -> tuple[str | None, str | None]:
    if not error or not error.strip():
        return None, None
    shown = redact(error.strip())[-MAX_ERROR:]
    lines = [line.strip() for line in shown.splitlines() if line.strip()]
    return shown, (lines[-1] if lines else None)


def view_of(row: ListedDelivery, *, redact: Callable[[str], str] = lambda text: text) -> DeliveryView:
    payload = row.data()
    repository = payload.get("repository")
    full_name = repository.get("full_name") if isinstance(repository, dict) else None
    repo_id = _number(repository.get("id")) if isinstance(repository, dict) else None
    state = delivery_state(row.job_status, row.attempts, row.error)
    error, summary = _error_end(row.error, redact) if state != HANDLED else (None, None)
    return DeliveryView(
        id=row.id, event=row.event, action=row.action, what=labels.delivery_event(row.event, row.action),
        installation_id=row.installation_id,
        repository=full_name if isinstance(full_name, str) else None, repository_id=repo_id,
        pr_number=pull_request_number(row.event, payload), state=state, state_words=labels.delivery_state(state),
        source=row.source, source_words=labels.delivery_source(row.source), received_at=row.received_at,
        job_id=row.job_id, jobs=row.jobs, error=error, error_summary=summary)


def refusal(view: DeliveryView) -> str | None:
    """Why the delivery cannot be replayed now (None: it can): one job at a time handles a delivery."""
    if view.state in PENDING:
        return f"it is being handled already ({labels.delivery_state(view.state).lower()}, job {view.job_id})"
    return None


class UnknownDelivery(LookupError):
    """No stored delivery has this id."""


class ReplayRefused(Exception):
    """The delivery cannot be replayed now (the reason)."""


@dataclass(frozen=True)
class Replayed:
    job_id: int
    delivery: DeliveryView
    project_id: str | None


class DeliveryReplay:
    """The shell: lists stored deliveries as `DeliveryView`s and queues replays. `wakeup`: this process's
    worker (None: the CLI, whose job a running worker finds at its next poll); `max_attempts`: a webhook
    job's (JOB_MAX_ATTEMPTS)."""

    def __init__(self, store: Store, wakeup: JobWakeup | None, *, max_attempts: int) -> None:
        self.store = store
        self.wakeup = wakeup
        self.max_attempts = max_attempts

    async def page(self, *, repository_id: int | None = None, failed: bool = False, limit: int = 50,
                   offset: int = 0) -> list[DeliveryView]:
        rows = await self.store.deliveries.listing(repository_id=repository_id, failed=failed, limit=limit,
                                                   offset=offset)
        return [view_of(row, redact=PROCESS_REDACTOR.redact) for row in rows]

    async def get(self, delivery_id: str) -> DeliveryView | None:
        row = await self.store.deliveries.listed(delivery_id)
        return view_of(row, redact=PROCESS_REDACTOR.redact) if row is not None else None

    async def replay(self, delivery_id: str, *, actor: str | None) -> Replayed:
        """Queue the delivery's handling again; audited with `actor` (a login, or "cli" for the operator).
        UnknownDelivery when it is not stored, ReplayRefused while one of its jobs is queued or running."""
        view = await self.get(delivery_id)
        if view is None:
            raise UnknownDelivery(f"no stored delivery {delivery_id}")
        if (reason := refusal(view)) is not None:
            raise ReplayRefused(f"delivery {delivery_id} was not replayed: {reason}")
        job_id, pending = await self.store.deliveries.queue_again(delivery_id, max_attempts=self.max_attempts)
        if job_id is None:
            if pending is None:
                raise UnknownDelivery(f"no stored delivery {delivery_id}")
            raise ReplayRefused(f"delivery {delivery_id} was not replayed: it is being handled already (job {pending})")
        if self.wakeup is not None:
            self.wakeup.wake(JOB_WEBHOOK)
        project = (await self.store.projects.get_project_by_repo_id(view.repository_id)
                   if view.repository_id is not None else None)
        details: dict[str, Any] = {"delivery_id": delivery_id, "event": view.what, "job_id": job_id}
        if view.pr_number is not None:
            details["pr"] = view.pr_number
        if view.repository is not None:
            details["repository"] = view.repository
        await self.store.audit.record("delivery.replayed", actor=actor, delivery_id=delivery_id,
                                      project_id=project.id if project else None,
                                      installation_id=project.installation_id if project else view.installation_id,
                                      details=details)
        return Replayed(job_id, view, project.id if project else None)
