"""The PR overview's decisions, pure functions of data (tested without I/O): a PR's state from what the
app knows of it, a project card's counts, and an age in words."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from bot import labels
from bot.models import (MERGE_MERGED, PR_CLOSED, PR_MERGED, VALIDATION_ACTIVE, VALIDATION_COMPLETED,
                        VALIDATION_WAITING, PullRequestMerge, TrackedPullRequest, ValidationState)

FAILING, RUNNING, WAITING, READY, UNVALIDATED, MERGED, CLOSED = (
    "failing", "running", "waiting", "ready", "unvalidated", "merged", "closed")
OPEN_STATES = (FAILING, RUNNING, WAITING, READY, UNVALIDATED)
# The overview's filters, in the order they are offered (bot/labels.py PR_STATES names them).
FILTERS = (FAILING, RUNNING, WAITING, READY, UNVALIDATED, MERGED, CLOSED)
_FAILED = ("failure", "timed_out")


def pull_state(pull: TrackedPullRequest, validation: ValidationState | None,
               merge: PullRequestMerge | None) -> str:
    """The PR's state, from the PR, the latest validation of its current head (None: none yet) and the
    app's merge of that head. Ready to merge only when that validation passed: an older head's result
    says nothing of what would be merged."""
    if pull.state == PR_MERGED or (merge is not None and merge.status == MERGE_MERGED):
        return MERGED
    if pull.state == PR_CLOSED:
        return CLOSED
    if validation is None or validation.head_sha != pull.head_sha:
        return UNVALIDATED
    if validation.status in VALIDATION_ACTIVE:
        return RUNNING
    if validation.status == VALIDATION_WAITING or validation.conclusion == "action_required":
        return WAITING
    if validation.status == VALIDATION_COMPLETED and validation.conclusion == "success":
        return READY
    if validation.status == VALIDATION_COMPLETED and validation.conclusion in _FAILED:
        return FAILING
    return UNVALIDATED  # neutral (nothing to validate), cancelled, superseded: no verdict on this head


@dataclass(frozen=True)
class CardSummary:
    """A project card: its newest validation of an open PR's current head, the validations of the open
    PRs whose current head fails (newest first), and how many open PRs are in each state (`validating`:
    queued or running only; a fork PR waiting for /ok-to-test is `waiting`)."""
    validation: ValidationState | None
    failing: int
    validating: int
    waiting: int
    ready: int
    open: int
    failing_validations: tuple[ValidationState, ...] = ()

    @property
    def named_failing(self) -> tuple[ValidationState, ...]:
        """The failing PRs' validations the headline names (the newest HEADLINE_PRS)."""
        return self.failing_validations[:HEADLINE_PRS]

    @property
    def headline(self) -> str:
        """What the card says first (`card_headline`)."""
        return card_headline(self)

    @property
    def headline_title(self) -> str:
        """The headline's label: "Needs a fix" while an open PR's current head fails, "Open pull requests"
        when none is open."""
        if self.failing_validations:
            return "Needs a fix"
        return "Open pull requests" if self.validation is None and self.open == 0 else "Last validation"


def card_summary(rows: list[tuple[TrackedPullRequest, ValidationState | None, PullRequestMerge | None]]
                 ) -> CardSummary:
    states = [(pull_state(pull, validation, merge),
               validation if validation is not None and validation.head_sha == pull.head_sha else None)
              for pull, validation, merge in rows]  # an older head's result says nothing of the PR now
    open_rows = [(state, validation) for state, validation in states if state in OPEN_STATES]
    newest = max((v for _, v in open_rows if v is not None), key=lambda v: v.created_at, default=None)
    failing = sorted((v for state, v in open_rows if state == FAILING and v is not None),
                     key=lambda v: v.created_at, reverse=True)

    def count(wanted: str) -> int:
        return sum(1 for state, _ in open_rows if state == wanted)

    return CardSummary(validation=newest, failing=count(FAILING), validating=count(RUNNING),
                       waiting=count(WAITING), ready=count(READY), open=len(open_rows),
                       failing_validations=tuple(failing))


# The failing PRs a card's headline names; "…" says there are more (the Failing count links to them all).
HEADLINE_PRS = 3


def card_headline(summary: CardSummary) -> str:
    """The worst of the open PRs first: "2 failing: #3, #5" when a current head fails, else the newest
    validation of an open PR's current head ("#4 Passed"), else "none" when no PR is open (the last one
    just merged, say: not "none yet", which would say nothing was ever validated), else "none yet". A
    passing #4 validated last never hides a failing #3."""
    if summary.failing_validations:
        named = ", ".join(f"#{v.pr_number}" for v in summary.named_failing)
        more = ", …" if summary.failing > len(summary.named_failing) else ""
        return f"{summary.failing} failing: {named}{more}"
    v = summary.validation
    if v is not None:
        return f"#{v.pr_number} {labels.validation_state(v.status, v.conclusion)}"
    return "none" if summary.open == 0 else "none yet"


def ago(then: datetime | None, now: datetime) -> str:
    """"just now", "5m ago", "3h ago", "2d ago"; "" when unknown."""
    if then is None:
        return ""
    seconds = max(0, int((now - then).total_seconds()))
    if seconds < 60:
        return "just now"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return "just now"
