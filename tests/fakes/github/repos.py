"""``ReposMixin``: a repository and what hangs off it: collaborator permissions, contents, branches and
branch protection (the state helpers ``set_permission``, ``set_file``, ``set_branch``,
``set_branch_protection`` and their endpoints). Repositories themselves are created by
``FakeState.add_repo`` (``state.py``); git refs are in ``refs.py``. A branch of a repository with a real
git repository (``git_repo()``) is served with its commit read from git."""

from __future__ import annotations

from typing import Any

from tests.fakes.github.common import (
    _blob_sha,
    _copy,
    _fake_sha,
    _GitHubError,
    _github_base64,
    _handles,
    _Reply,
    _RepoState,
    _Request,
)
from tests.fakes.github.state import FakeState

ROLES = ("admin", "maintain", "write", "triage", "read", "none")
# The `permission` field keeps the legacy base roles; `role_name` has the real one.
LEGACY_PERMISSION = {
    "admin": "admin",
    "maintain": "write",
    "write": "write",
    "triage": "read",
    "read": "read",
    "none": "none",
}


class ReposMixin(FakeState):
    """Repository, permissions, contents, branches, protection, refs (see the module docstring)."""

    # ------------------------------------------------------------------ state helpers

    def set_permission(self, full_name: str, username: str, permission: str) -> None:
        if permission not in ROLES:
            raise ValueError(f"permission must be one of {ROLES}, not {permission!r}")
        self._user(username)
        self._repo_state(full_name).permissions[username.lower()] = permission

    def set_file(self, full_name: str, ref: str, path: str, content: bytes | str) -> None:
        """Served by the contents API at ``ref`` (a branch, or a sha: a branch pointing at it works too)."""
        data = content.encode() if isinstance(content, str) else content
        self._repo_state(full_name).files.setdefault(ref, {})[path.strip("/")] = data

    def set_branch(self, full_name: str, branch: str, sha: str) -> None:
        self._repo_state(full_name).branches[branch] = sha

    def set_branch_protection(self, full_name: str, branch: str, protection: dict[str, Any] | None) -> None:
        """``None`` unprotects; a dict (may be empty) overrides top-level keys of GitHub's example."""
        repo = self._repo_state(full_name)
        if protection is None:
            repo.protections.pop(branch, None)
        else:
            repo.protections[branch] = dict(protection)

    # ------------------------------------------------------------------ handlers: repository

    @_handles("GET /repos/{owner}/{repo}")
    def _get_repo(self, request: _Request) -> _Reply:
        return _Reply(200, request.repository.data)

    @_handles("GET /repos/{owner}/{repo}/collaborators/{username}/permission")
    def _get_permission(self, request: _Request) -> _Reply:
        username = request.params["username"]
        role = request.repository.permissions.get(username.lower())
        if role is None:
            if username.lower() not in self.users:
                raise _GitHubError(404, "Not Found")
            role = "none"
        user = self._user(username)
        user["permissions"] = {
            "admin": role == "admin",
            "maintain": role in ("admin", "maintain"),
            "push": role in ("admin", "maintain", "write"),
            "triage": role in ("admin", "maintain", "write", "triage"),
            "pull": role != "none",
        }
        user["role_name"] = role
        return _Reply(200, {"permission": LEGACY_PERMISSION[role], "role_name": role, "user": user})

    @_handles("GET /repos/{owner}/{repo}/contents/{path}")
    def _get_content(self, request: _Request) -> _Reply:
        repo = request.repository
        path = request.params["path"].strip("/")
        ref = request.query.get("ref") or repo.data["default_branch"]
        files = self._files_at(repo, ref)
        if path in files:
            if "raw" in request.call.headers.get("accept", ""):
                return _Reply(200, raw=files[path], content_type="application/vnd.github.raw")
            return _Reply(200, self._content_entry(repo, ref, path, files[path], with_content=True))
        prefix = f"{path}/" if path else ""
        children = sorted({p[len(prefix) :].split("/")[0] for p in files if p.startswith(prefix)})
        if not children:
            raise _GitHubError(404, "Not Found")
        listing = []
        for child in children:
            child_path = prefix + child
            if child_path in files:
                listing.append(self._content_entry(repo, ref, child_path, files[child_path], with_content=False))
            else:
                listing.append(self._content_entry(repo, ref, child_path, None, with_content=False))
        return _Reply(200, listing)

    def _files_at(self, repo: _RepoState, ref: str) -> dict[str, bytes]:
        sha = self._resolve_sha(repo, ref)
        names = [ref, sha, *(branch for branch, head in repo.branches.items() if head == sha)]
        merged: dict[str, bytes] = {}
        for name in names:
            for path, content in repo.files.get(name, {}).items():
                merged.setdefault(path, content)
        return merged

    def _content_entry(
        self, repo: _RepoState, ref: str, path: str, content: bytes | None, *, with_content: bool
    ) -> dict[str, Any]:
        api = f"{self.api_url}/repos/{repo.full_name}"
        is_file = content is not None
        sha = _blob_sha(content) if content is not None else _fake_sha(repo.full_name, ref, path)
        entry: dict[str, Any] = {
            "type": "file" if is_file else "dir",
            "size": len(content) if content is not None else 0,
            "name": path.rsplit("/", 1)[-1],
            "path": path,
            "sha": sha,
            "url": f"{api}/contents/{path}?ref={ref}",
            "git_url": f"{api}/git/{'blobs' if is_file else 'trees'}/{sha}",
            "html_url": f"{self.base_url}/{repo.full_name}/{'blob' if is_file else 'tree'}/{ref}/{path}",
            "download_url": f"{self.base_url}/{repo.full_name}/raw/{ref}/{path}" if is_file else None,
        }
        if with_content and content is not None:
            entry.update(encoding="base64", content=_github_base64(content))
        entry["_links"] = {"self": entry["url"], "git": entry["git_url"], "html": entry["html_url"]}
        return entry

    @_handles("GET /repos/{owner}/{repo}/branches/{branch}")
    def _get_branch(self, request: _Request) -> _Reply:
        repo, name = request.repository, request.params["branch"]
        if name not in repo.branches:
            raise _GitHubError(404, "Branch not found")
        sha = repo.branches[name]
        api = f"{self.api_url}/repos/{repo.full_name}"
        branch = self._example("GET", "/repos/{owner}/{repo}/branches/{branch}", 200)
        commit = branch.get("commit")
        if not isinstance(commit, dict):
            commit = {}
        commit.update(sha=sha, url=f"{api}/commits/{sha}", html_url=f"{self.base_url}/{repo.full_name}/commit/{sha}")
        git = self._git_of(repo)
        if git is not None and git.has_commit(sha):
            commit = self._commit_dict(repo, git.commit_info(sha))
        protected = name in repo.protections
        branch.update(
            name=name,
            commit=commit,
            protected=protected,
            protection_url=f"{api}/branches/{name}/protection",
            _links={"self": f"{api}/branches/{name}", "html": f"{self.base_url}/{repo.full_name}/tree/{name}"},
        )
        if not protected:
            branch["protection"] = {
                "enabled": False,
                "required_status_checks": {"enforcement_level": "off", "contexts": [], "checks": []},
            }
        return _Reply(200, branch)

    @_handles("GET /repos/{owner}/{repo}/branches/{branch}/protection")
    def _get_branch_protection(self, request: _Request) -> _Reply:
        repo, name = request.repository, request.params["branch"]
        if name not in repo.branches:
            raise _GitHubError(404, "Branch not found")
        if name not in repo.protections:
            raise _GitHubError(404, "Branch not protected")
        protection = self._example("GET", "/repos/{owner}/{repo}/branches/{branch}/protection", 200)
        protection["url"] = f"{self.api_url}/repos/{repo.full_name}/branches/{name}/protection"
        protection.update(_copy(repo.protections[name]))
        return _Reply(200, protection)
