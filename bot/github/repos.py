"""A repository: its settings, files at a commit, branches, and who may write to it."""

from __future__ import annotations

import base64
from collections.abc import Mapping, MutableMapping
from typing import Any
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
