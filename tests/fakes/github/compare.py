"""``CompareMixin``: ``GET /repos/{owner}/{repo}/compare/{base}...{head}`` from the repository's real git
repository (``git_repo()``): the commits ``head`` adds to its merge base with ``base``, oldest first, and
the files of the diff ``base...head`` with their patches, as GitHub lists them. Without ``page`` or
``per_page`` at most the first 250 commits are listed; with them a page of commits (``per_page`` at most
100), the files on the first page only; ``total_commits`` always counts them all."""

from __future__ import annotations

from typing import Any

from tests.fakes.github.common import _GitHubError, _handles, _int_query, _Reply, _Request
from tests.fakes.github.state import FakeState

UNPAGED_COMMITS = 250
_FILE_STATUS = {"A": "added", "M": "modified", "D": "removed", "R": "renamed", "C": "copied", "T": "changed"}


class CompareMixin(FakeState):
    """Comparing two commits (see the module docstring)."""

    @_handles("GET /repos/{owner}/{repo}/compare/{basehead}")
    def _compare(self, request: _Request) -> _Reply:
        repo = request.repository
        git = self._git_repos.get(repo.full_name.lower())
        base, dots, head = request.params["basehead"].partition("...")
        if git is None or not dots:
            raise _GitHubError(404, "Not Found")
        base_sha, head_sha = git.resolve(self._resolve_sha(repo, base)), git.resolve(self._resolve_sha(repo, head))
        if base_sha is None or head_sha is None:
            raise _GitHubError(404, "Not Found")
        merge_base = git.git("merge-base", base_sha, head_sha).strip()
        shas = git.git("rev-list", "--reverse", f"{merge_base}..{head_sha}").split()
        behind = len(git.git("rev-list", f"{merge_base}..{base_sha}").split())
        listed, page = shas[:UNPAGED_COMMITS], 1
        if "page" in request.query or "per_page" in request.query:
            per_page = _int_query(request.query, "per_page", 30, low=1, high=100)
            page = _int_query(request.query, "page", 1, low=1)
            listed = shas[(page - 1) * per_page:page * per_page]
        answer = self._example("GET", "/repos/{owner}/{repo}/compare/{basehead}", 200)
        answer.update(
            status="identical" if not shas and not behind else "ahead" if not behind
            else "behind" if not shas else "diverged",
            ahead_by=len(shas), behind_by=behind, total_commits=len(shas),
            commits=[self._compared_commit(git, repo.full_name, sha) for sha in listed],
            files=self._compared_files(git, merge_base, head_sha) if page == 1 else [],
        )
        return _Reply(200, answer)

    def _compared_commit(self, git: Any, full_name: str, sha: str) -> dict[str, Any]:
        tree, parents, message = git.git("show", "-s", "--format=%T%x00%P%x00%B", sha).split("\0", 2)
        return {"sha": sha, "url": f"{self.api_url}/repos/{full_name}/commits/{sha}",
                "html_url": f"{self.base_url}/{full_name}/commit/{sha}",
                "commit": {"message": message.rstrip("\n"), "tree": {"sha": tree}},
                "parents": [{"sha": parent} for parent in parents.split()]}

    def _compared_files(self, git: Any, merge_base: str, head_sha: str) -> list[dict[str, Any]]:
        files = []
        for line in git.git("diff", "--numstat", "--no-renames", merge_base, head_sha).splitlines():
            added, removed, path = line.split("\t", 2)
            status = git.git("diff", "--name-status", "--no-renames", merge_base, head_sha, "--", path).split()[0]
            diff = git.git("diff", "--no-color", "--no-renames", merge_base, head_sha, "--", path)
            entry: dict[str, Any] = {"filename": path, "status": _FILE_STATUS.get(status[0], "modified")}
            if added != "-":  # a binary file has neither counts nor patch
                entry.update(additions=int(added), deletions=int(removed), changes=int(added) + int(removed),
                             patch=diff[diff.index("@@"):] if "@@" in diff else "")
            files.append(entry)
        return files
