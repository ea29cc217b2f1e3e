"""Whether a PR may enter the merge queue, from GitHub's own answers: the PR (open, not a draft, its
`mergeable_state`), the base branch's protection (required approving reviews, required checks, "up to
date before merging"), the head's reviews and checks, and the merge methods the repository allows. Pure.

The app's own check is not asked for: the queue validates the PR itself, merged with what is ahead of it.
Where the protection cannot be read (no administration permission), GitHub's `mergeable_state` is the
authority: "blocked" refuses, saying the rules could not be read to name which one blocks.
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


def protection_readable(status: int, message: str) -> bool:
    """Whether an error answer to GET branch protection still tells what it is: 404 "Branch not
    protected" does (no protection); a 403, or a 404 that hides a missing permission, does not."""
    return status == 404 and "not protected" in message.lower()


def strict(protection: Mapping[str, Any] | None) -> bool:
    """Branch protection requires a PR to be up to date with the base before it merges."""
    checks = (protection or {}).get("required_status_checks") or {}
    return bool(checks.get("strict")) if isinstance(checks, Mapping) else False


_METHOD_SETTINGS = {"merge": "allow_merge_commit", "squash": "allow_squash_merge", "rebase": "allow_rebase_merge"}
_METHOD_WORDS = {"merge": "merge commits", "squash": "squash merging", "rebase": "rebase merging"}


def method_refusal(method: str, repository: Mapping[str, Any]) -> str | None:
    """Why the repository's settings (GET repos: allow_merge_commit, ...) refuse the queue's merge
    method; None: allowed (a setting GitHub did not send counts as allowed, its default)."""
    setting = _METHOD_SETTINGS.get(method)
    if setting is None or repository.get(setting) is not False:
        return None
    return (f"the merge queue merges with the `{method}` method, but the repository does not allow "
            f"{_METHOD_WORDS[method]}; change `merge_queue: method` or the repository's merge settings")


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
              own_check: RequiredCheck | None = None, protection_read: bool = True, up_to_date: bool = False,
              method: str = "merge", method_refused: str | None = None) -> Admission:
    """`protection_read`: False when the branch protection could not be read (its approvals and
    `up_to_date` then unknown); `up_to_date`: the protection requires PRs up to date with the base;
    `method_refused`: `method_refusal`'s answer."""
    if (refusal := not_open(pull)) is not None:
        return Admission(False, refusal)
    if pull.mergeable is False or pull.mergeable_state == "dirty":
        return Admission(False, f"the PR has conflicts with {pull.base_ref}; resolve them and push")
    if method_refused:
        return Admission(False, method_refused)
    if method != "fast-forward" and (up_to_date or pull.mergeable_state == "behind"):
        return Admission(False, f"branch protection requires a PR to be up to date with {pull.base_ref} before it "
                                "merges, which a PR queued behind another is not once that one lands; use "
                                "`merge_queue: method: fast-forward`, or turn that rule off")
    if approved < approvals_needed:
        return Admission(False, f"it is not approved: branch protection requires {approvals_needed} approving "
                                f"review{'s' if approvals_needed != 1 else ''}, it has {approved}")
    # the app's own check is skipped: the queue runs the app's validation itself
    problems = required_check_problems(required, check_runs, statuses, own_check)
    if problems:
        return Admission(False, "; ".join(problems))
    if pull.mergeable_state == "blocked":
        unread = "" if protection_read else " (the app cannot read the branch protection to say which rule: " \
                                            "it needs the Administration read permission)"
        return Admission(False, f"GitHub says branch protection blocks merging it{unread}")
    return Admission(True)
