"""What the app reads from GitHub, typed: plain data, no I/O (the deciding functions take these)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.github.errors import field


WRITE_ROLES = frozenset({"admin", "maintain", "write"})


def can_write(role: str) -> bool:
    """Whether a repository role (GitHub's role_name) may command the app: write, maintain or admin."""
    return role in WRITE_ROLES


def is_fork(pull_request: Mapping[str, Any]) -> bool:
    """A PR whose head lives in another repository (a deleted fork counts as one)."""
    head_repo = (pull_request.get("head") or {}).get("repo")
    base_repo = (pull_request.get("base") or {}).get("repo") or {}
    if not head_repo:
        return True
    return head_repo.get("id", head_repo.get("full_name")) != base_repo.get("id", base_repo.get("full_name"))


@dataclass(frozen=True)
class PullRequest:
    """A pull request as a webhook payload or `GET .../pulls/{n}` describes it."""

    repository: str              # the base repository's full name: where the PR lives
    number: int
    state: str                   # open, closed
    head_sha: str
    head_ref: str
    base_sha: str
    base_ref: str
    fork: bool
    head_repository: str | None = None  # the head's full name; None when the fork was deleted
    author: str | None = None
    draft: bool = False
    merged: bool = False
    mergeable: bool | None = None
    mergeable_state: str | None = None
    html_url: str | None = None
    title: str = ""

    @property
    def is_open(self) -> bool:
        return self.state == "open" and not self.merged

    @classmethod
    def parse(cls, data: Any, *, source: str, repository: str | None = None) -> PullRequest:
        """From a payload or an API answer; `source` names it in the error when a field is missing.
        `repository`: the base repository's full name when the caller knows it better (a webhook's
        `repository`); else the PR's own `base.repo.full_name`."""
        base_repo = repository or field(data, "base.repo.full_name", source)
        head_repo = (data.get("head") or {}).get("repo") if isinstance(data, Mapping) else None
        merged = data.get("merged")
        return cls(
            repository=str(base_repo), number=int(field(data, "number", source)),
            state=str(field(data, "state", source)),
            head_sha=str(field(data, "head.sha", source)), head_ref=str(field(data, "head.ref", source)),
            base_sha=str(field(data, "base.sha", source)), base_ref=str(field(data, "base.ref", source)),
            fork=is_fork(data),
            head_repository=head_repo.get("full_name") if isinstance(head_repo, Mapping) else None,
            author=(data.get("user") or {}).get("login"), draft=bool(data.get("draft")),
            merged=bool(merged) or (merged is None and data.get("merged_at") is not None),
            mergeable=data.get("mergeable"), mergeable_state=data.get("mergeable_state"),
            html_url=data.get("html_url"), title=str(data.get("title") or ""))


@dataclass(frozen=True)
class ListedPull:
    """A PR as the list of a repository's pull requests shows it, with GitHub's times of it."""
    pull: PullRequest
    created_at: datetime | None
    updated_at: datetime | None  # which of two descriptions of the PR is newer


@dataclass(frozen=True)
class MergeResult:
    sha: str | None  # the merge commit
