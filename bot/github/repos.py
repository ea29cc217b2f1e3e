"""A repository: its settings, files at a commit, branches, and who may write to it."""

from __future__ import annotations

import base64
from collections.abc import Mapping, MutableMapping
from typing import Any, NamedTuple
from urllib.parse import quote

from gidgethub import BadRequest
from gidgethub.abc import GitHubAPI

from bot.github.errors import field


class NotAFile(Exception):
    """The path names a directory, a symlink or a submodule, not a file."""


def role_of(permission_response: Mapping[str, Any]) -> str:
    """The user's role from GET .../collaborators/{user}/permission (role_name knows 'maintain')."""
    return str(permission_response.get("role_name") or permission_response.get("permission") or "none")


def branch_path(branch: str) -> str:
    return quote(branch, safe="/")


# GitHub lists a comparison's commits a page at a time (at most 100 a page); a group past this many pages
# is read no further (its comparison is then incomplete).
COMPARE_PAGE_SIZE = 100
COMPARE_MAX_PAGES = 30


class ComparedCommit(NamedTuple):
    sha: str
    parents: tuple[str, ...]
    message: str


class Comparison(NamedTuple):
    """What GET .../compare/{base}...{head} says of the commits `head` adds to `base`."""
    files: list[dict[str, Any]]  # as the PR files API lists them (`filename`, `patch`, `status`)
    commits: list[ComparedCommit]
    complete: bool  # every commit was listed (GitHub's `total_commits` of them)


class Repos:
    def __init__(self, gh: GitHubAPI, repository: str, roles: MutableMapping[tuple[str, str], str]) -> None:
        """`roles`: (repository, login) in lower case -> role, shared by every Repos and kept briefly
        (who may run commands, press buttons, and whether a fork's author may run without /ok-to-test)."""
        self.gh = gh
        self.repository = repository
        self.path = f"/repos/{repository}"
        self.roles = roles

    async def get(self) -> dict[str, Any]:
        answer: dict[str, Any] = await self.gh.getitem(self.path)
        return answer

    async def default_branch(self) -> str:
        return str((await self.get()).get("default_branch") or "main")

    async def file_text(self, path: str, ref: str | None) -> str | None:
        """The file at `ref` as text (undecodable bytes replaced); None when there is none (404).
        `ref` None: at the head of the default branch."""
        try:
            content = await self.gh.getitem(f"{self.path}/contents/{path}{{?ref}}", {"ref": ref} if ref else {})
        except BadRequest as exc:
            if exc.status_code == 404:
                return None
            raise
        if not isinstance(content, dict) or content.get("type") != "file":
            raise NotAFile(f"{path} is not a file")
        return base64.b64decode(content.get("content") or "").decode("utf-8", "replace")

    async def role(self, login: str) -> str:
        """admin, maintain, write, triage, read or none (not a collaborator, or not a user GitHub knows)."""
        key = (self.repository.lower(), login.lower())
        role = self.roles.get(key)
        if role is None:
            try:
                answer = await self.gh.getitem(f"{self.path}/collaborators/{{username}}/permission",
                                               {"username": login})
                role = role_of(answer)
            except BadRequest as exc:
                if exc.status_code != 404:
                    raise
                role = "none"
            self.roles[key] = role
        return role

    async def branch(self, branch: str) -> dict[str, Any] | None:
        """The branch (its head commit, whether it is protected); None when there is none."""
        try:
            answer: dict[str, Any] = await self.gh.getitem(f"{self.path}/branches/{branch_path(branch)}")
        except BadRequest as exc:
            if exc.status_code == 404:
                return None
            raise
        return answer

    async def branch_sha(self, branch: str) -> str | None:
        found = await self.branch(branch)
        return None if found is None else str(field(found, "commit.sha", f"GET {self.path}/branches/{branch}"))

    async def protection(self, branch: str) -> dict[str, Any]:
        """The branch's protection; gidgethub's BadRequest for 404 (not protected) and 403 (no
        administration permission), which the caller tells apart."""
        answer: dict[str, Any] = await self.gh.getitem(f"{self.path}/branches/{branch_path(branch)}/protection")
        return answer

    async def delete_branch(self, branch: str) -> None:
        await self.gh.delete(f"{self.path}/git/refs/heads/{branch_path(branch)}")

    async def compare(self, base: str, head: str) -> Comparison:
        """The files and commits `head` adds to its merge base with `base` (the diff `base...head`),
        every page of the commits (up to COMPARE_MAX_PAGES). GitHub lists at most 300 files: a file past
        those is not in `files`. `complete` says whether the commits read are all of GitHub's
        `total_commits`."""
        source = f"GET {self.path}/compare/{base}...{head}"
        files: list[dict[str, Any]] = []
        commits: list[ComparedCommit] = []
        total = None
        for page in range(1, COMPARE_MAX_PAGES + 1):
            answer = await self.gh.getitem(f"{self.path}/compare/{{basehead}}{{?per_page,page}}",
                                           {"basehead": f"{base}...{head}", "per_page": COMPARE_PAGE_SIZE,
                                            "page": page})
            listed = field(answer, "commits", source)
            total = answer.get("total_commits")
            if page == 1:  # GitHub lists the files on the first page only
                files = list(answer.get("files") or [])
            commits += [ComparedCommit(str(field(c, "sha", source)),
                                       tuple(str(field(p, "sha", source)) for p in c.get("parents") or []),
                                       str(field(c, "commit.message", source))) for c in listed]
            if len(listed) < COMPARE_PAGE_SIZE or not isinstance(total, int) or len(commits) >= total:
                break
        return Comparison(files=files, commits=commits, complete=total == len(commits))

    async def commit_tree(self, sha: str) -> str:
        """The tree of commit `sha` (GET .../git/commits/{sha})."""
        source = f"GET {self.path}/git/commits/{sha}"
        return str(field(await self.gh.getitem(f"{self.path}/git/commits/{{sha}}", {"sha": sha}), "tree.sha", source))

    async def commit_parents(self, sha: str) -> tuple[str, ...]:
        """The parents of commit `sha`, first parent first (GET .../git/commits/{sha})."""
        source = f"GET {self.path}/git/commits/{sha}"
        answer = await self.gh.getitem(f"{self.path}/git/commits/{{sha}}", {"sha": sha})
        return tuple(str(field(p, "sha", source)) for p in answer.get("parents") or [])
