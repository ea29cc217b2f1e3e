"""``RefsMixin``: git references through the REST API (``GET .../git/ref/{ref}``, ``POST .../git/refs``,
``PATCH``/``DELETE .../git/refs/{ref}``) and branches the App may not write to.

With a real git repository (``git_repo()``) the refs are the repository's: any ``refs/...`` can be read,
created, updated or deleted; a sha must be a commit there (else 422 "Object does not exist"); an update
must be a fast-forward unless ``force`` (else 422 "Update is not a fast forward"); moving a branch
moves the fake's branch state and the mergeability of the pulls on it (``merges.py``). Without one,
only branches exist (``refs/heads/...`` against ``set_branch`` state) and any sha is taken.

``block_app_pushes(full_name, branch)`` makes the branch one the App may not push to, as a protection
rule that restricts who can push does on GitHub: with an installation token, a push over smart HTTP is
declined ("protected branch hook declined", GH006 on the side band; every ref of that push is
refused) and so are ref writes through the API (422). Merging a pull request into it is still allowed.
Refusals are recorded in ``refused_ref_updates`` (repository, ref, via "push"/"api", installation_id).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tests.fakes.github.common import Call, _fake_sha, _GitHubError, _handles, _node_id, _Reply, _RepoState, _Request
from tests.fakes.github.receive_pack import read_commands, refusal
from tests.fakes.github.state import FakeState
from tests.gitrepos import ZERO_SHA, RefMoved

_PROTECTED_REFUSAL = "protected branch hook declined"


class RefsMixin(FakeState):
    """Git references and push restrictions (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self._app_push_blocked: set[tuple[str, str]] = set()  # (lower-case full name, branch)
        self.refused_ref_updates: list[dict[str, Any]] = []

    def block_app_pushes(self, full_name: str, branch: str, *, blocked: bool = True) -> None:
        key = (self._repo_state(full_name).full_name.lower(), branch)
        if blocked:
            self._app_push_blocked.add(key)
        else:
            self._app_push_blocked.discard(key)

    def _app_may_not_write(self, repo: _RepoState, ref: str, installation_id: int | None) -> bool:
        branch = ref.removeprefix("refs/heads/")
        return (
            installation_id is not None
            and ref.startswith("refs/heads/")
            and (repo.full_name.lower(), branch) in self._app_push_blocked
        )

    def _refuse_api_write(self, request: _Request, ref: str, message: str, status: int = 422) -> None:
        """Raise GitHub's refusal when the App may not write ``ref`` (full name) through the API."""
        repo = request.repository
        if self._app_may_not_write(repo, ref, request.principal.installation_id):
            self.refused_ref_updates.append(
                {"repository": repo.full_name, "ref": ref, "via": "api",
                 "installation_id": request.principal.installation_id}
            )
            raise _GitHubError(status, message)

    def _declined_push(self, call: Call, repo: _RepoState, body: bytes) -> web.Response | None:
        """GitHub's answer to a push that touches a branch the App may not push to; None to let it go on."""
        updates, capabilities = read_commands(body)
        blocked = [u.ref for u in updates if self._app_may_not_write(repo, u.ref, call.installation_id)]
        if not blocked:
            return None
        for ref in blocked:
            self.refused_ref_updates.append(
                {"repository": repo.full_name, "ref": ref, "via": "push", "installation_id": call.installation_id}
            )
        messages = [f"error: GH006: Protected branch update failed for {ref}." for ref in blocked]
        messages.append("error: You're not authorized to push to this branch.")
        payload = refusal(updates, capabilities, dict.fromkeys(blocked, _PROTECTED_REFUSAL), messages)
        return web.Response(
            status=200, body=payload, headers={"Content-Type": "application/x-git-receive-pack-result"}
        )

    # ------------------------------------------------------------------ builders

    def _ref_dict(self, repo: _RepoState, ref: str, sha: str) -> dict[str, Any]:
        api = f"{self.api_url}/repos/{repo.full_name}"
        return {
            "ref": ref,
            "node_id": _node_id("Ref", int(_fake_sha(repo.full_name, ref)[:8], 16)),
            "url": f"{api}/git/{ref}",
            "object": {"type": "commit", "sha": sha, "url": f"{api}/git/commits/{sha}"},
        }

    def _ref_sha(self, repo: _RepoState, ref: str) -> str | None:
        """Where ``ref`` (full name) points: in the git repository when there is one, else (a branch set
        with ``set_branch``/``add_pull`` and a made-up sha) the branch state."""
        git = self._git_of(repo)
        found = git.refs(ref).get(ref) if git is not None else None
        if found is None and ref.startswith("refs/heads/"):
            found = repo.branches.get(ref.removeprefix("refs/heads/"))
        return found

    def _require_commit(self, repo: _RepoState, sha: str) -> None:
        git = self._git_of(repo)
        if git is not None and not git.has_commit(sha):
            raise _GitHubError(422, "Object does not exist")

    # ------------------------------------------------------------------ handlers

    @_handles("GET /repos/{owner}/{repo}/git/ref/{ref}")
    def _get_ref(self, request: _Request) -> _Reply:
        repo, ref = request.repository, f"refs/{request.params['ref']}"
        sha = self._ref_sha(repo, ref)
        if sha is None:
            raise _GitHubError(404, "Not Found")
        return _Reply(200, self._ref_dict(repo, ref, sha))

    @_handles("POST /repos/{owner}/{repo}/git/refs")
    def _create_ref(self, request: _Request) -> _Reply:
        repo, ref, sha = request.repository, request.body["ref"], request.body["sha"]
        if not ref.startswith("refs/") or ref.count("/") < 2:
            raise _GitHubError(422, f"{ref} is not a valid ref name.")
        if self._ref_sha(repo, ref) is not None:
            raise _GitHubError(422, "Reference already exists")
        self._require_commit(repo, sha)
        self._refuse_api_write(request, ref, "Reference update failed")
        git = self._git_of(repo)
        if git is not None:
            try:
                git.set_ref(ref, sha, expected=ZERO_SHA)
            except RefMoved:
                raise _GitHubError(422, "Reference already exists") from None
        elif ref.startswith("refs/heads/"):
            repo.branches[ref.removeprefix("refs/heads/")] = sha
        else:
            raise _GitHubError(422, "Reference update failed", detail="only branches without git_repo()")
        return _Reply(201, self._ref_dict(repo, ref, sha))

    @_handles("PATCH /repos/{owner}/{repo}/git/refs/{ref}")
    def _update_ref(self, request: _Request) -> _Reply:
        repo, ref = request.repository, f"refs/{request.params['ref']}"
        sha, force = request.body["sha"], bool(request.body.get("force", False))
        old = self._ref_sha(repo, ref)
        if old is None:
            raise _GitHubError(422, "Reference does not exist")
        self._require_commit(repo, sha)
        self._refuse_api_write(request, ref, f"Protected branch update failed for {ref}.")
        git = self._git_of(repo)
        if git is None:
            repo.branches[ref.removeprefix("refs/heads/")] = sha
            return _Reply(200, self._ref_dict(repo, ref, sha))
        in_git = ref in git.refs(ref)  # else a branch of made-up shas: nothing to fast-forward from
        if in_git and not force and not git.is_ancestor(old, sha):
            raise _GitHubError(422, "Update is not a fast forward")
        try:
            git.set_ref(ref, sha, expected=old if in_git else None)
        except RefMoved:
            raise _GitHubError(422, "Reference cannot be updated") from None
        return _Reply(200, self._ref_dict(repo, ref, sha))

    @_handles("DELETE /repos/{owner}/{repo}/git/refs/{ref}")
    def _delete_ref(self, request: _Request) -> _Reply:
        repo, ref = request.repository, f"refs/{request.params['ref']}"
        if self._ref_sha(repo, ref) is None:
            raise _GitHubError(422, "Reference does not exist")
        self._refuse_api_write(request, ref, f"Protected branch update failed for {ref}.")
        git = self._git_of(repo)
        if git is not None and ref in git.refs(ref):
            git.delete_ref(ref)
        repo.branches.pop(ref.removeprefix("refs/heads/"), None)
        self.deleted_refs.append({"repository": repo.full_name, "ref": ref})
        return _Reply(204)
