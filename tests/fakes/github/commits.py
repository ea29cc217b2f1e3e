"""``CommitsMixin``: commits read from the real git repository of ``git_repo()``: ``GET .../git/commits/{sha}``
(404 for a sha that is no commit there, or in a repository without git) and the builders of GitHub's two
commit shapes, the git commit object and the "commit" of the commits API (``POST .../merges``,
``GET .../branches/{b}``). The commit's GitHub ``author``/``committer`` users are null: no email is
linked to an account here."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from tests.fakes.github.common import _GitHubError, _handles, _iso, _node_id, _Reply, _RepoState, _Request
from tests.fakes.github.state import FakeState
from tests.gitrepos import CommitInfo, GitRepo, Signature

_SHA = re.compile(r"[0-9a-f]{40}")


def _person(who: Signature) -> dict[str, str]:
    return {"name": who.name, "email": who.email, "date": _iso(datetime.fromtimestamp(who.when, UTC))}


_UNSIGNED = {"verified": False, "reason": "unsigned", "signature": None, "payload": None, "verified_at": None}


class CommitsMixin(FakeState):
    """Commits (see the module docstring)."""

    def _git_of(self, repo: _RepoState) -> GitRepo | None:
        """The real git repository of ``repo``, None when it has none (``git_repo()`` was not called)."""
        return self._git_repos.get(repo.full_name.lower())

    def _git_commit_dict(self, repo: _RepoState, info: CommitInfo) -> dict[str, Any]:
        """GitHub's git commit object (``GET .../git/commits/{sha}``)."""
        api, html = f"{self.api_url}/repos/{repo.full_name}", f"{self.base_url}/{repo.full_name}"
        return {
            "sha": info.sha,
            "node_id": _node_id("Commit", int(info.sha[:8], 16)),
            "url": f"{api}/git/commits/{info.sha}",
            "html_url": f"{html}/commit/{info.sha}",
            "author": _person(info.author),
            "committer": _person(info.committer),
            "message": info.message.removesuffix("\n"),
            "tree": {"sha": info.tree, "url": f"{api}/git/trees/{info.tree}"},
            "parents": [
                {"sha": sha, "url": f"{api}/git/commits/{sha}", "html_url": f"{html}/commit/{sha}"}
                for sha in info.parents
            ],
            "verification": dict(_UNSIGNED),
        }

    def _commit_dict(self, repo: _RepoState, info: CommitInfo) -> dict[str, Any]:
        """GitHub's "commit" of the commits API, without ``stats``/``files``."""
        api, html = f"{self.api_url}/repos/{repo.full_name}", f"{self.base_url}/{repo.full_name}"
        git_commit = self._git_commit_dict(repo, info)
        return {
            "url": f"{api}/commits/{info.sha}",
            "sha": info.sha,
            "node_id": git_commit["node_id"],
            "html_url": f"{html}/commit/{info.sha}",
            "comments_url": f"{api}/commits/{info.sha}/comments",
            "commit": {
                "url": git_commit["url"],
                "author": git_commit["author"],
                "committer": git_commit["committer"],
                "message": git_commit["message"],
                "tree": git_commit["tree"],
                "comment_count": 0,
                "verification": dict(_UNSIGNED),
            },
            "author": None,
            "committer": None,
            "parents": [{"sha": sha, "url": f"{api}/commits/{sha}", "html_url": f"{html}/commit/{sha}"}
                        for sha in info.parents],
        }

    @_handles("GET /repos/{owner}/{repo}/git/commits/{commit_sha}")
    def _get_git_commit(self, request: _Request) -> _Reply:
        repo, sha = request.repository, request.params["commit_sha"].lower()
        git = self._git_of(repo)
        if git is None or not _SHA.fullmatch(sha) or not git.has_commit(sha):
            raise _GitHubError(404, "Not Found")
        return _Reply(200, self._git_commit_dict(repo, git.commit_info(sha)))
