"""``MergesMixin``: merging: ``PUT .../pulls/{n}/merge``, ``POST .../merges``, and the mergeability of
open pulls when a branch moves.

**Pull merges.** 405 "Pull Request is not mergeable" for a closed pull or one whose ``mergeable`` is
false, 409 when ``sha`` is not the head. With a real git repository (``git_repo()``) whose base branch
and head commit exist there, the merge is made in it (``git_merges.py``: a merge commit, a squash or a
rebase), 405 on a conflict, 405 "Base branch was modified..." when the base moved under it, and the
base branch moves (compare-and-swap). Otherwise (no git, or made-up shas) a made-up merge sha, as the
fake always did. Either way the pull is closed and merged, and the merge is appended to ``merges``.

**Branch merges** (``POST .../merges``): ``head`` (a branch or a sha) into the ``base`` branch: 201 and
the merge commit, 204 when the base already has the head, 409 "Merge conflict", 404 "Base does not
exist" / "Head does not exist"; 403 on a branch the App may not push to (``refs.py``).

**Mergeability.** When a branch of a repository with git moves (a merge, a ref update, a push, a commit
made through ``git_repo()``), every open pull with that base or head branch gets ``mergeable`` (and
``rebaseable``) recomputed right away with a real merge of its head into the base tip; ``mergeable_state``
becomes "dirty" on a conflict, else "clean" (a "blocked"/"unstable"/"has_hooks"/"behind" set by the
test is kept; "draft" stays). GitHub computes this lazily and may answer ``null`` first; here the value
is there at once. It is computed too when a pull is created through the API or its base is changed.
Pulls whose head is not a commit in the base repository are left alone, and so is a pull of
``add_pull``/``add_pull_from_repo`` until one of its branches moves (the ``mergeable`` given stands).
"""

from __future__ import annotations

from typing import Any

from tests.fakes.github.common import _fake_sha, _GitHubError, _handles, _iso, _now, _Reply, _RepoState, _Request
from tests.fakes.github.git_merges import PullToLand, land_pull, merge_commit, merges_cleanly
from tests.fakes.github.state import FakeState
from tests.gitrepos import GitRepo, RefMoved, Signature

_KEPT_STATES = ("blocked", "unstable", "has_hooks", "behind")


def mergeable_state(*, conflict: bool, draft: bool, previous: str) -> str:
    if draft:
        return "draft"
    if conflict:
        return "dirty"
    return previous if previous in _KEPT_STATES else "clean"


class MergesMixin(FakeState):
    """Merging pulls and branches, mergeability (see the module docstring)."""

    def _merger_signature(self) -> Signature:
        bot = self._bot()
        return Signature(bot["login"], f"{bot['id']}+{bot['login']}@users.noreply.github.com", int(_now().timestamp()))

    # ------------------------------------------------------------------ pull merges

    @_handles("PUT /repos/{owner}/{repo}/pulls/{pull_number}/merge")
    def _merge_pull(self, request: _Request) -> _Reply:
        pull, repo = self._pull(request), request.repository
        body = request.body if isinstance(request.body, dict) else {}
        if pull["state"] != "open" or pull["mergeable"] is False:
            raise _GitHubError(405, "Pull Request is not mergeable")
        if "sha" in body and body["sha"] != pull["head"]["sha"]:
            raise _GitHubError(409, "Head branch was modified. Review and try the merge again.")
        method = body.get("merge_method", "merge")
        sha = self._merge_pull_in_git(repo, pull, body, method)
        if sha is None:
            sha = _fake_sha("merge", repo.full_name, pull["number"], pull["head"]["sha"])
            repo.branches[pull["base"]["ref"]] = sha
        now = _iso(_now())
        pull.update(
            state="closed",
            merged=True,
            merged_at=now,
            closed_at=now,
            updated_at=now,
            merge_commit_sha=sha,
            merged_by=self._bot(),
            mergeable=None,
            mergeable_state="unknown",
        )
        self.merges.append(
            {
                "repository": repo.full_name,
                "number": pull["number"],
                "sha": sha,
                "head_sha": pull["head"]["sha"],
                "merge_method": method,
                "commit_title": body.get("commit_title"),
                "commit_message": body.get("commit_message"),
                "installation_id": request.principal.installation_id,
            }
        )
        return _Reply(200, {"sha": sha, "merged": True, "message": "Pull Request successfully merged"})

    def _merge_pull_in_git(self, repo: _RepoState, pull: dict[str, Any], body: dict[str, Any], method: str) -> str | None:
        """The base's new tip, made in git and the branch moved; None when the pull is not in git."""
        git = self._git_of(repo)
        if git is None:
            return None
        base_ref, head = pull["base"]["ref"], pull["head"]["sha"]
        tip = git.resolve(f"refs/heads/{base_ref}")
        if tip is None or not git.has_commit(head):
            return None
        head_repo = pull["head"]["repo"]
        landed = land_pull(
            git,
            method,
            tip,
            PullToLand(
                number=pull["number"],
                title=pull["title"],
                head_sha=head,
                head_label=f"{head_repo['owner']['login']}/{pull['head']['ref']}",
                commit_title=body.get("commit_title"),
                commit_message=body.get("commit_message"),
            ),
            self._merger_signature(),
        )
        if landed is None:
            pull.update(mergeable=False, rebaseable=False, mergeable_state="dirty")
            raise _GitHubError(405, "Pull Request is not mergeable")
        try:
            git.set_ref(f"refs/heads/{base_ref}", landed, expected=tip)
        except RefMoved:
            raise _GitHubError(405, "Base branch was modified. Review and try the merge again.") from None
        return landed

    # ------------------------------------------------------------------ branch merges

    @_handles("POST /repos/{owner}/{repo}/merges")
    def _merge_branches(self, request: _Request) -> _Reply:
        repo, base, head = request.repository, request.body["base"], request.body["head"]
        git = self._git_of(repo)
        tip = git.resolve(f"refs/heads/{base}") if git is not None else repo.branches.get(base)
        if tip is None:
            raise _GitHubError(404, "Base does not exist")
        head_sha = self._merge_head(repo, git, head)
        if head_sha is None:
            raise _GitHubError(404, "Head does not exist")
        ref = f"refs/heads/{base}"
        self._refuse_api_write(request, ref, f"Protected branch update failed for {ref}.", 403)  # refs.py
        message = request.body.get("commit_message") or f"Merge {head} into {base}"
        if git is None:
            if head_sha == tip:
                return _Reply(204)
            merged = _fake_sha("merges", repo.full_name, tip, head_sha)
            repo.branches[base] = merged
            commit = self._example("POST", "/repos/{owner}/{repo}/merges", 201)
            commit.update(sha=merged, parents=[{"sha": tip}, {"sha": head_sha}])
            commit.setdefault("commit", {})["message"] = message
            return _Reply(201, commit)
        if git.is_ancestor(head_sha, tip):
            return _Reply(204)
        merged = merge_commit(git, tip, head_sha, message, self._merger_signature())
        if merged is None:
            raise _GitHubError(409, "Merge conflict")
        try:
            git.set_ref(f"refs/heads/{base}", merged, expected=tip)
        except RefMoved:
            raise _GitHubError(409, "Merge conflict", detail="the base moved during the merge") from None
        return _Reply(201, self._commit_dict(repo, git.commit_info(merged)))

    @staticmethod
    def _merge_head(repo: _RepoState, git: GitRepo | None, head: str) -> str | None:
        if git is None:
            return repo.branches.get(head) or (head if len(head) == 40 else None)
        found = git.resolve(f"refs/heads/{head}")
        if found is None and len(head) == 40 and git.has_commit(head.lower()):
            found = head.lower()
        return found

    # ------------------------------------------------------------------ mergeability

    def _branches_moved(self, repo: _RepoState, branches: set[str]) -> None:
        """Recompute the mergeability of the open pulls based on or coming from ``branches`` of ``repo``."""
        if not branches:
            return
        key = repo.full_name.lower()
        for (full, _), pull in self.pulls.items():
            if pull["state"] != "open":
                continue
            based_here = full.lower() == key and pull["base"]["ref"] in branches
            from_here = pull["head"]["repo"]["full_name"].lower() == key and pull["head"]["ref"] in branches
            if based_here or from_here:
                self._recompute_mergeability(self._repo_state(full), pull)

    def _recompute_mergeability(self, base_repo: _RepoState, pull: dict[str, Any]) -> None:
        git = self._git_of(base_repo)
        if git is None:
            return
        tip, head = git.resolve(f"refs/heads/{pull['base']['ref']}"), pull["head"]["sha"]
        if tip is None or not git.has_commit(head):
            return
        clean = merges_cleanly(git, tip, head)
        pull.update(
            mergeable=clean,
            rebaseable=clean,
            mergeable_state=mergeable_state(conflict=not clean, draft=pull["draft"], previous=pull["mergeable_state"]),
        )
