"""PR comments: replies, reactions, and comments the app finds again by a hidden marker.

A marked comment starts with `marker(kind, key)`: one comment of each kind on a PR (the validation's
sticky comment), or one of each kind per key (an agent run's plan, outcome and context, keyed by the
run's id). `upsert` edits it in place, so a comment is updated, never posted twice; only comments made
by this App count (`find`).

Every body is masked on its way out (`_masked`) by the process's redactor or the one given to
`masked` (which knows a project's secrets); a leading marker is left as it is, to be found again.
"""

from __future__ import annotations

from typing import Any

from gidgethub import BadRequest
from gidgethub.abc import GitHubAPI

from bot.github.errors import field
from bot.redact import PROCESS_REDACTOR, Redactor

BODY_LIMIT = 65_536  # characters GitHub takes in a comment


def marker(kind: str, key: str | None = None) -> str:
    """The hidden first line of the app's comment of `kind` (and `key`): `<!-- codegenapp:agent-plan:1f2e -->`."""
    if not kind.replace("-", "").isalnum() or (key is not None and not key.replace("-", "").isalnum()):
        raise ValueError(f"a marker's kind and key are letters, digits and dashes: {kind!r}, {key!r}")
    return f"<!-- codegenapp:{kind}{f':{key}' if key is not None else ''} -->"


class Comments:
    def __init__(self, gh: GitHubAPI, repository: str, *, app_id: str | None = None,
                 redactor: Redactor = PROCESS_REDACTOR) -> None:
        """`app_id`: this App's id; only comments it made count as its marked comments."""
        self.gh = gh
        self.repository = repository
        self.path = f"/repos/{repository}/issues"
        self.app_id = app_id
        self.redactor = redactor

    def masked(self, redactor: Redactor) -> Comments:
        """These comments, every body masked by `redactor` (e.g. the process's plus a project's secrets)."""
        return Comments(self.gh, self.repository, app_id=self.app_id, redactor=redactor)

    def _masked(self, body: str) -> str:
        end = body.find("-->") if body.startswith("<!--") else -1
        kept = end + len("-->") if end != -1 else 0  # the marker the comment is found again by
        return (body[:kept] + self.redactor.redact(body[kept:]))[:BODY_LIMIT]

    async def create(self, number: int, body: str) -> int:
        answer = await self.gh.post(f"{self.path}/{number}/comments", data={"body": self._masked(body)})
        return int(field(answer, "id", f"POST {self.path}/{number}/comments"))

    async def edit(self, comment_id: int, body: str) -> bool:
        """False when the comment is gone (someone deleted it)."""
        try:
            await self.gh.patch(f"{self.path}/comments/{comment_id}", data={"body": self._masked(body)})
        except BadRequest as exc:
            if exc.status_code != 404:
                raise
            return False
        return True

    async def body(self, number: int, comment_id: int) -> str | None:
        """The text of comment `comment_id` on the PR; None when it is gone."""
        async for comment in self.gh.getiter(f"{self.path}/{number}/comments"):
            if comment.get("id") == comment_id:
                return str(comment.get("body") or "")
        return None

    async def react(self, comment_id: int, content: str) -> None:
        await self.gh.post(f"{self.path}/comments/{comment_id}/reactions", data={"content": content})

    async def find(self, number: int, marker: str) -> int | None:
        """The first comment this App made on the PR whose body starts with `marker` (a person can post the
        marker too: editing their comment would fail, and it is not the app's to edit)."""
        async for comment in self.gh.getiter(f"{self.path}/{number}/comments"):
            if (comment.get("body") or "").startswith(marker) and self._ours(comment):
                return int(comment["id"])
        return None

    def _ours(self, comment: dict[str, Any]) -> bool:
        made_by = comment.get("performed_via_github_app")
        return self.app_id is None or (isinstance(made_by, dict) and str(made_by.get("id")) == str(self.app_id))

    async def post_once(self, number: int, marker: str, body: str) -> None:
        """Post `body` (which carries `marker`) unless a comment with the marker is there already, so a
        repeated step does not say it twice."""
        if await self.find(number, marker) is None:
            await self.create(number, body)

    async def upsert(self, number: int, marker: str, body: str, *, known_id: int | None = None) -> int:
        """The one comment with `marker` on the PR, edited in place or created; its id. `known_id`: where
        it was last seen (saves listing the PR's comments)."""
        comment_id = known_id if known_id is not None else await self.find(number, marker)
        if comment_id is not None and await self.edit(comment_id, body):
            return comment_id
        return await self.create(number, body)
