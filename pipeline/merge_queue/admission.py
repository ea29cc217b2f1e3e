"""Whether a PR may enter the merge queue, from GitHub's own answers: the PR (open, not a draft, its
`mergeable_state`), the base branch's protection (required approving reviews, required checks) and the
head's reviews and checks. Pure.

The app's own check is not asked for: the queue validates the PR itself, merged with what is ahead of it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from bot.github.types import PullRequest
from pipeline.merge.decision import RequiredCheck, RequiredChecks, not_open, required_check_problems


@dataclass(frozen=True)
class Admission:
    allowed: bool
    reason: str = ""  # why not, a sentence fragment: "Not queued: {reason}."


def required_approvals(protection: Mapping[str, Any] | None) -> int:
    """The approving reviews the branch protection requires (0: none, or not readable)."""
    reviews = (protection or {}).get("required_pull_request_reviews") or {}
    count = reviews.get("required_approving_review_count") if isinstance(reviews, Mapping) else None
    return count if isinstance(count, int) and count > 0 else (1 if reviews else 0)


def approvals(reviews: Iterable[Mapping[str, Any]], head_sha: str, *, dismiss_stale: bool = False) -> int:
    """Reviewers whose latest deciding review approves (of `head_sha` only, when stale ones are dismissed)."""
    latest: dict[str, Mapping[str, Any]] = {}
    for review in reviews:
        if review.get("state") in ("APPROVED", "CHANGES_REQUESTED", "DISMISSED"):
            latest[str((review.get("user") or {}).get("login"))] = review
    return sum(1 for r in latest.values() if r.get("state") == "APPROVED"
               and (not dismiss_stale or r.get("commit_id") in (None, head_sha)))


def admission(pull: PullRequest, *, required: RequiredChecks, approvals_needed: int, approved: int,
              check_runs: Iterable[Mapping[str, Any]] = (), statuses: Iterable[Mapping[str, Any]] = (),
              own_check: RequiredCheck | None = None) -> Admission:
    if (refusal := not_open(pull)) is not None:
        return Admission(False, refusal)
    if pull.mergeable is False or pull.mergeable_state == "dirty":
        return Admission(False, f"the PR has conflicts with {pull.base_ref}; resolve them and push")
    if approved < approvals_needed:
        return Admission(False, f"it is not approved: branch protection requires {approvals_needed} approving "
                                f"review{'s' if approvals_needed != 1 else ''}, it has {approved}")
    # the app's own check is skipped: the queue runs the app's validation itself
    problems = required_check_problems(required, check_runs, statuses, own_check)
    if problems:
        return Admission(False, "; ".join(problems))
    return Admission(True)
