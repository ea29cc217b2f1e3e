"""Which pull request events start a validation, and whether a head may run (and with the project's
secrets): pure functions of data, tested without I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.github.types import can_write

VALIDATING_ACTIONS = frozenset({"opened", "synchronize", "reopened", "ready_for_review"})


def wants_validation(action: str | None, pull_request: dict[str, Any]) -> bool:
    """Open, non-draft PRs are validated when opened, pushed to, reopened or marked ready.

    Drafts wait for ready_for_review: a draft is work the author has not asked anyone to look at yet.
    """
    return (action in VALIDATING_ACTIONS and pull_request.get("state") == "open"
            and not pull_request.get("draft", False))


def head_moved_on(head_sha: str, recorded_head: str | None, recorded_open: bool) -> bool:
    """Whether what the app last recorded of the PR (a newer event's, or a listing's) says `head_sha`
    is no longer its head to validate: another head, or the PR closed. An event handled late (recovered
    from the delivery log, replayed, or simply overtaken by a newer one) must not validate a stale head:
    starting it would end the current head's run. Nothing recorded: nothing says so."""
    if recorded_head is None:
        return False
    return recorded_head != head_sha or not recorded_open


@dataclass(frozen=True)
class Gate:
    run: bool
    with_secrets: bool
    reason: str


def fork_gate(*, fork: bool, author_role: str | None, head_approved: bool) -> Gate:
    """Whether a head may run, and with the project's secrets.

    A fork's code never gets secrets. A fork PR from someone without write access waits until a
    maintainer comments /ok-to-test, which approves that head only: a new push waits again.
    """
    if not fork:
        return Gate(run=True, with_secrets=True, reason="same repository")
    if author_role is not None and can_write(author_role):
        return Gate(run=True, with_secrets=False, reason="fork of a collaborator with write access")
    if head_approved:
        return Gate(run=True, with_secrets=False, reason="approved with /ok-to-test")
    return Gate(run=False, with_secrets=False,
                reason="this PR comes from a fork and its author has no write access")
