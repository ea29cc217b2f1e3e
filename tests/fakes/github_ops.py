"""A small in-memory GitHub for unit tests of handlers and services: it implements the GitHub
operations layer (bot.github: `GitHubApp.repo()` and the pulls, check runs, comments and repos of a
repository) and records every call, in the shape of bedevere's FakeGH and Kodiak's MockPrApi.

The end-to-end tests use the HTTP fake instead (tests/fakes/github/), which speaks GitHub's wire
format and checks every request against GitHub's REST description.
"""

from __future__ import annotations

import itertools
from http import HTTPStatus
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gidgethub import BadRequest

from bot.github.check_runs import CHECK_NAME, CheckRuns, FoundRun
from bot.github.comments import Comments
from bot.github.github_app import AppNotConfigured, RepoGitHub
from bot.github.repos import Comparison, Repos
from bot.github.types import ListedPull, MergeResult, PullRequest


def pull_request(number: int = 1, *, repository: str = "octo/app", head_sha: str = "a" * 40,
                 state: str = "open", fork: bool = False, **fields: Any) -> PullRequest:
    """A PullRequest with sensible defaults; `fields` override any attribute."""
    values: dict[str, Any] = dict(repository=repository, number=number, state=state, head_sha=head_sha,
                                  head_ref="feature", base_sha="b" * 40, base_ref="main", fork=fork,
                                  head_repository=None if fork else repository, author="alice")
    values.update(fields)
    return PullRequest(**values)


def not_found() -> BadRequest:
    """What gidgethub raises for GitHub's 404."""
    return BadRequest(HTTPStatus.NOT_FOUND, "Not Found")


@dataclass
class Call:
    operation: str  # e.g. "check_runs.complete"
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)


class RecordingGitHub:
    """Stands in for the part of bot.github.github_app.GitHubApp that handlers and services use: `repo()`
    (whose Pulls, CheckRuns, Comments and Repos work on the dicts below), `installation_token`,
    `forget_installation` and `close`. Not the App's own endpoints (manifest, OAuth, /meta) nor `status`."""

    def __init__(self, *, app_id: str = "12345", pulls: Sequence[PullRequest] = (),
                 roles: Mapping[str, str] | None = None, files: Mapping[str, str] | None = None) -> None:
        self.app_id = app_id
        self.configured = True
        self.pulls: dict[int, PullRequest] = {p.number: p for p in pulls}
        self.roles = dict(roles or {})       # login -> role; "none" for anyone else
        self.files = dict(files or {})       # path -> text, at any ref
        self.calls: list[Call] = []
        self.comments: dict[int, tuple[int, str]] = {}  # id -> (PR number, body)
        self.check_runs: dict[int, dict[str, Any]] = {}
        self.merged: list[tuple[int, str, str]] = []
        self.forgotten: list[int] = []
        self._ids = itertools.count(1000)

    def record(self, operation: str, *args: Any, **kwargs: Any) -> None:
        self.calls.append(Call(operation, args, kwargs))

    def operations(self) -> list[str]:
        return [call.operation for call in self.calls]

    def next_id(self) -> int:
        return next(self._ids)

    def replies(self, number: int) -> list[str]:
        return [body for pr, body in self.comments.values() if pr == number]

    def check_run(self, check_run_id: int) -> dict[str, Any]:
        """The check run, or the 404 GitHub answers for one it does not know."""
        if check_run_id not in self.check_runs:
            raise not_found()
        return self.check_runs[check_run_id]

    # ---- GitHubApp -------------------------------------------------------------------------------

    def repo(self, installation_id: int | None, repository: str) -> RepoGitHub:
        if installation_id is None:
            raise AppNotConfigured(f"{repository} has no installation of the app")
        return RepoGitHub(repository, installation_id, _Pulls(self), _CheckRuns(self),  # type: ignore[arg-type]
                          _Comments(self), _Repos(self))

    async def installation_token(self, installation_id: int) -> str:
        self.record("installation_token", installation_id)
        return "ghs_recording-fake-token"

    def forget_installation(self, installation_id: int) -> None:
        self.forgotten.append(installation_id)

    async def close(self) -> None:
        pass


class _Part:
    def __init__(self, github: RecordingGitHub) -> None:
        self.github = github


class _Pulls(_Part):
    async def get(self, number: int) -> PullRequest:
        self.github.record("pulls.get", number)
        if number not in self.github.pulls:
            raise not_found()
        return self.github.pulls[number]

    async def find(self, number: int) -> PullRequest | None:
        self.github.record("pulls.find", number)
        return self.github.pulls.get(number)

    async def files(self, number: int) -> list[dict[str, Any]]:
        self.github.record("pulls.files", number)
        return []

    async def open_from(self, branch: str) -> list[PullRequest]:
        self.github.record("pulls.open_from", branch)
        return [p for p in self.github.pulls.values() if p.head_ref == branch and p.is_open]

    async def open_pulls(self) -> AsyncIterator[ListedPull]:
        self.github.record("pulls.open_pulls")
        for pull in [p for p in self.github.pulls.values() if p.is_open]:
            yield ListedPull(pull, created_at=None, updated_at=None)

    async def create(self, *, title: str, head: str, base: str, body: str) -> PullRequest:
        self.github.record("pulls.create", title=title, head=head, base=base)
        created = pull_request(max(self.github.pulls, default=0) + 1, head_ref=head, base_ref=base, title=title)
        self.github.pulls[created.number] = created
        return created

    async def merge(self, number: int, *, sha: str, method: str) -> MergeResult:
        self.github.record("pulls.merge", number, sha=sha, method=method)
        self.github.merged.append((number, sha, method))
        return MergeResult(sha="m" * 40)

    async def merge_commit(self, number: int) -> str | None:
        self.github.record("pulls.merge_commit", number)
        return "m" * 40 if any(merged == number for merged, _, _ in self.github.merged) else None

    async def reviews(self, number: int) -> list[dict[str, Any]]:
        self.github.record("pulls.reviews", number)
        return []


class _CheckRuns(_Part):
    def masked(self, redactor: Any) -> _CheckRuns:
        return self

    create_once = CheckRuns.create_once
    cancel = CheckRuns.cancel

    async def of(self, head_sha: str, external_id: str) -> list[FoundRun]:
        self.github.record("check_runs.of", head_sha, external_id)
        return [FoundRun(check_run_id, run["status"] == "completed")
                for check_run_id, run in sorted(self.github.check_runs.items())
                if run["head_sha"] == head_sha and run["external_id"] == external_id]

    async def get(self, check_run_id: int) -> FoundRun:
        self.github.record("check_runs.get", check_run_id)
        return FoundRun(check_run_id, self.github.check_run(check_run_id)["status"] == "completed")

    async def create(self, *, head_sha: str, details_url: str, external_id: str, title: str, summary: str,
                     name: str = CHECK_NAME, actions: Sequence[Mapping[str, str]] | None = None) -> int:
        check_run_id = self.github.next_id()
        self.github.record("check_runs.create", head_sha=head_sha, external_id=external_id, title=title)
        self.github.check_runs[check_run_id] = {"head_sha": head_sha, "status": "in_progress", "title": title,
                                                "external_id": external_id, "name": name, "actions": actions}
        return check_run_id

    async def update(self, check_run_id: int, output: Mapping[str, Any],
                     actions: Sequence[Mapping[str, str]] | None = None) -> None:
        self.github.record("check_runs.update", check_run_id)
        self.github.check_run(check_run_id)["title"] = output.get("title")
        if actions is not None:
            self.github.check_run(check_run_id)["actions"] = actions

    async def complete(self, check_run_id: int, *, conclusion: str, output: Mapping[str, Any],
                       actions: Sequence[Mapping[str, str]] | None = None) -> None:
        self.github.record("check_runs.complete", check_run_id, conclusion=conclusion)
        self.github.check_run(check_run_id).update(status="completed", conclusion=conclusion,
                                                   title=output.get("title"), actions=actions)

    async def add_annotations(self, check_run_id: int, *, title: str, summary: str,
                              annotations: Sequence[Mapping[str, Any]]) -> None:
        self.github.record("check_runs.add_annotations", check_run_id, len(annotations))

    async def for_ref(self, ref: str) -> list[dict[str, Any]]:
        self.github.record("check_runs.for_ref", ref)
        return []

    async def statuses(self, ref: str) -> list[dict[str, Any]]:
        self.github.record("check_runs.statuses", ref)
        return []


class _Comments(_Part):
    def masked(self, redactor: Any) -> _Comments:
        return self

    async def create(self, number: int, body: str) -> int:
        comment_id = self.github.next_id()
        self.github.record("comments.create", number)
        self.github.comments[comment_id] = (number, body)
        return comment_id

    async def edit(self, comment_id: int, body: str) -> bool:
        self.github.record("comments.edit", comment_id)
        if comment_id not in self.github.comments:
            return False
        self.github.comments[comment_id] = (self.github.comments[comment_id][0], body)
        return True

    async def react(self, comment_id: int, content: str) -> None:
        self.github.record("comments.react", comment_id, content)

    async def body(self, number: int, comment_id: int) -> str | None:
        self.github.record("comments.body", number, comment_id)
        found = self.github.comments.get(comment_id)
        return found[1] if found is not None and found[0] == number else None

    async def find(self, number: int, marker: str) -> int | None:
        self.github.record("comments.find", number)
        return next((cid for cid, (pr, body) in self.github.comments.items()
                     if pr == number and body.startswith(marker)), None)

    post_once = Comments.post_once
    upsert = Comments.upsert


class _Repos(_Part):
    async def get(self) -> dict[str, Any]:
        self.github.record("repos.get")
        return {"default_branch": "main"}

    default_branch = Repos.default_branch

    async def file_text(self, path: str, ref: str) -> str | None:
        self.github.record("repos.file_text", path, ref)
        return self.github.files.get(path)

    async def role(self, login: str) -> str:
        self.github.record("repos.role", login)
        return self.github.roles.get(login, "none")

    async def branch(self, branch: str) -> dict[str, Any] | None:
        self.github.record("repos.branch", branch)
        return {"name": branch, "protected": False, "commit": {"sha": "b" * 40}}

    async def branch_sha(self, branch: str) -> str | None:
        found = await self.branch(branch)
        return None if found is None else found["commit"]["sha"]

    async def protection(self, branch: str) -> dict[str, Any]:
        self.github.record("repos.protection", branch)
        raise BadRequest(HTTPStatus.NOT_FOUND, "Branch not protected")

    async def delete_branch(self, branch: str) -> None:
        self.github.record("repos.delete_branch", branch)

    async def compare(self, base: str, head: str) -> Comparison:
        self.github.record("repos.compare", base, head)
        return Comparison(files=[], commits=[], complete=True)

    async def commit_tree(self, sha: str) -> str:
        self.github.record("repos.commit_tree", sha)
        return "t" * 40

    async def commit_parents(self, sha: str) -> tuple[str, ...]:
        self.github.record("repos.commit_parents", sha)
        return ()
