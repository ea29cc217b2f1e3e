"""Pull requests: what the app reads of one (typed), and the operations on them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field as dataclass_field
from typing import Any

from gidgethub import BadRequest
from gidgethub.abc import GitHubAPI

from bot.github.errors import UnexpectedResponse, field


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
    raw: Mapping[str, Any] = dataclass_field(default_factory=dict, repr=False, compare=False)

    @property
    def is_open(self) -> bool:
        return self.state == "open" and not self.merged

    @property
    def owner(self) -> str:
        return self.repository.split("/", 1)[0]

    @property
    def repo(self) -> str:
        return self.repository.split("/", 1)[1]

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
            html_url=data.get("html_url"), title=str(data.get("title") or ""), raw=data)


@dataclass(frozen=True)
class MergeResult:
    sha: str | None  # the merge commit


class Pulls:
    def __init__(self, gh: GitHubAPI, repository: str) -> None:
        self.gh = gh
        self.repository = repository
        self.path = f"/repos/{repository}/pulls"

    async def get(self, number: int) -> PullRequest:
        endpoint = f"GET {self.path}/{number}"
        return PullRequest.parse(await self.gh.getitem(f"{self.path}/{number}"), source=endpoint,
                                 repository=self.repository)

    async def find(self, number: int) -> PullRequest | None:
        """`get`, or None when GitHub says there is no such PR (404)."""
        try:
            return await self.get(number)
        except BadRequest as exc:
            if exc.status_code == 404:
                return None
            raise

    async def files(self, number: int) -> list[dict[str, Any]]:
        """The PR's changed files with their patches (for changed lines)."""
        return [f async for f in self.gh.getiter(f"{self.path}/{number}/files")]

    async def open_from(self, branch: str) -> list[PullRequest]:
        """Open PRs whose head is `branch` of this repository."""
        owner = self.repository.split("/", 1)[0]
        source = f"GET {self.path}?head={owner}:{branch}"
        return [PullRequest.parse(item, source=source, repository=self.repository)
                async for item in self.gh.getiter(f"{self.path}{{?head,state}}",
                                                  {"head": f"{owner}:{branch}", "state": "open"})]

    async def create(self, *, title: str, head: str, base: str, body: str) -> PullRequest:
        answer = await self.gh.post(self.path, data={"title": title, "head": head, "base": base, "body": body,
                                                     "maintainer_can_modify": True})
        return PullRequest.parse(answer, source=f"POST {self.path}", repository=self.repository)

    async def merge(self, number: int, *, sha: str, method: str) -> MergeResult:
        """Merge exactly `sha`; gidgethub's BadRequest carries GitHub's refusal (405, 409, 422)."""
        answer = await self.gh.put(f"{self.path}/{number}/merge", data={"sha": sha, "merge_method": method})
        if not isinstance(answer, Mapping):
            raise UnexpectedResponse(f"PUT {self.path}/{number}/merge", "a JSON object", answer)
        return MergeResult(sha=answer.get("sha"))
