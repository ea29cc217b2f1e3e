"""Pull requests: the operations on them (what the app reads of one is `types.PullRequest`)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from typing import Any

from gidgethub import BadRequest
from gidgethub.abc import GitHubAPI

from bot.github.errors import describe
from bot.github.types import ListedPull, MergeResult, PullRequest

log = logging.getLogger(__name__)


def _time(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")) if isinstance(value, str) and value else None
    except ValueError:
        return None


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

    async def open_pulls(self) -> AsyncIterator[ListedPull]:
        """Every open PR of the repository, 100 a page (gidgethub follows the `Link` header)."""
        source = f"GET {self.path}?state=open"
        async for item in self.gh.getiter(f"{self.path}{{?state,per_page}}", {"state": "open", "per_page": "100"}):
            yield ListedPull(PullRequest.parse(item, source=source, repository=self.repository),
                             created_at=_time(item.get("created_at")), updated_at=_time(item.get("updated_at")))

    async def merge_commit(self, number: int) -> str | None:
        """The merge commit of a merged PR (None: it is not merged)."""
        answer = await self.gh.getitem(f"{self.path}/{number}")
        return answer.get("merge_commit_sha") if answer.get("merged") else None

    async def reviews(self, number: int) -> list[dict[str, Any]]:
        """The PR's reviews, oldest first (who approved, at which commit)."""
        return [r async for r in self.gh.getiter(f"{self.path}/{number}/reviews")]

    async def create(self, *, title: str, head: str, base: str, body: str) -> PullRequest:
        answer = await self.gh.post(self.path, data={"title": title, "head": head, "base": base, "body": body,
                                                     "maintainer_can_modify": True})
        return PullRequest.parse(answer, source=f"POST {self.path}", repository=self.repository)

    async def merge(self, number: int, *, sha: str, method: str) -> MergeResult:
        """Merge exactly `sha`; gidgethub's BadRequest carries GitHub's refusal (405, 409, 422)."""
        answer = await self.gh.put(f"{self.path}/{number}/merge", data={"sha": sha, "merge_method": method})
        if not isinstance(answer, Mapping):  # merged all the same: a body check must not undo a done write
            log.warning("PUT %s/%s/merge answered %s, not an object", self.path, number, describe(answer))
            return MergeResult(sha=None)
        return MergeResult(sha=answer.get("sha"))
