"""How a checkout fails: `CheckoutError` (with a `reason`), and `PullRequestMoved` when the PR's head is no
longer the event's. Raised by pipeline/workspace/checkout.py and the mirrors and git it drives."""

from __future__ import annotations


class CheckoutError(Exception):
    """The checkout failed; the message says why (git's output included, tokens masked).

    ``reason``: "invalid" (bad arguments), "auth", "not_found" (repository), "missing_ref",
    "missing_commit", "moved" (see PullRequestMoved), "timeout", "workspace" or "git"."""

    def __init__(self, message: str, *, reason: str = "git", git_output: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.git_output = git_output  # git's stderr (tokens masked), when git failed


class PullRequestMoved(CheckoutError):
    """refs/pull/<n>/head is no longer the event's head sha."""

    def __init__(self, *, ref: str, ref_sha: str, sha: str) -> None:
        super().__init__(
            f"{ref} is {ref_sha[:7]} but the event's head is {sha[:7]} (the PR moved); "
            "validating the event's head needs a new event",
            reason="moved",
        )
        self.ref, self.ref_sha, self.sha = ref, ref_sha, sha
