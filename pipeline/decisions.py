"""What the pipeline decides, as pure functions of data (tested without I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

VALIDATING_ACTIONS = frozenset({"opened", "synchronize", "reopened", "ready_for_review"})
WRITE_ROLES = frozenset({"admin", "maintain", "write"})


def wants_validation(action: str | None, pull_request: dict[str, Any]) -> bool:
    """Open, non-draft PRs are validated when opened, pushed to, reopened or marked ready.

    Drafts wait for ready_for_review: a draft is work the author has not asked anyone to look at yet.
    """
    return (action in VALIDATING_ACTIONS and pull_request.get("state") == "open"
            and not pull_request.get("draft", False))


def is_fork(pull_request: dict[str, Any]) -> bool:
    """A PR whose head lives in another repository (a deleted fork counts as one)."""
    head_repo = (pull_request.get("head") or {}).get("repo")
    base_repo = (pull_request.get("base") or {}).get("repo") or {}
    if not head_repo:
        return True
    return head_repo.get("id", head_repo.get("full_name")) != base_repo.get("id", base_repo.get("full_name"))


def role_of(permission_response: dict[str, Any]) -> str:
    """The user's role from GET .../collaborators/{user}/permission (role_name knows 'maintain')."""
    return str(permission_response.get("role_name") or permission_response.get("permission") or "none")


def can_write(role: str) -> bool:
    return role in WRITE_ROLES


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
