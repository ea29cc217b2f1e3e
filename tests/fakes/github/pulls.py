"""``PullsMixin``: pull requests: ``add_pull``/``set_pull_files`` and the endpoints to get, list, create,
update them and update their branch. ``add_pull_from_repo`` (shas from real git repositories) is in
``git.py``; merging them in ``merges.py``, their reviews in ``reviews.py``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tests.fakes.github.common import _copy, _fake_sha, _iso, _node_id, _now
from tests.fakes.github.common import _GitHubError, _handles, _Reply, _RepoState, _Request
from tests.fakes.github.state import FakeState


class PullsMixin(FakeState):
    """Pull requests (see the module docstring)."""

    # ------------------------------------------------------------------ state helpers

    def add_pull(
        self,
        full_name: str,
        number: int,
        *,
        head_sha: str,
        base_sha: str,
        head_ref: str = "feature",
        base_ref: str = "main",
        head_full_name: str | None = None,
        user_login: str = "octocat",
        draft: bool = False,
        state: str = "open",
        mergeable: bool | None = True,
        title: str | None = None,
        body: str | None = None,
    ) -> dict[str, Any]:
        """Also points ``base_ref`` at ``base_sha`` and ``head_ref`` at ``head_sha`` (in the head repo,
        which is created, not installed, when it is a fork that does not exist yet)."""
        repo = self._repo_state(full_name)
        head_repo = repo
        if head_full_name is not None and head_full_name.lower() != full_name.lower():
            if head_full_name.lower() not in self._repos:
                self.add_repo(head_full_name, installation_id=None)
                self._repos[head_full_name.lower()].data["fork"] = True
            head_repo = self._repos[head_full_name.lower()]
        repo.branches[base_ref] = base_sha
        head_repo.branches[head_ref] = head_sha
        pull = self._pull_dict(
            repo,
            number,
            head_repo=head_repo,
            head_ref=head_ref,
            head_sha=head_sha,
            base_ref=base_ref,
            base_sha=base_sha,
            user_login=user_login,
            title=title,
            body=body,
        )
        pull.update(draft=draft, state=state, mergeable=mergeable, rebaseable=mergeable)
        pull["mergeable_state"] = "draft" if draft else {True: "clean", False: "dirty", None: "unknown"}[mergeable]
        if state == "closed":
            pull["closed_at"] = _iso(_now())
        if (repo.full_name, number) not in self.pulls:
            self._pull_numbers_by_repo.setdefault(repo.full_name, []).append(number)
        self.pulls[(repo.full_name, number)] = pull
        self._git_point_pull_ref(repo, number, head_repo, head_sha)
        return pull

    def set_pull_files(
        self, full_name: str, number: int, files: Iterable[str | dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Files served by GET .../pulls/{n}/files: file names or partial diff-entry dicts
        (``filename`` required; ``status``, ``additions``, ``deletions``, ``patch``... optional)."""
        repo = self._repo_state(full_name)
        entries = [self._diff_entry(repo, item if isinstance(item, dict) else {"filename": item}) for item in files]
        self.pull_files[(repo.full_name, number)] = entries
        pull = self.pulls.get((repo.full_name, number))
        if pull is not None:
            pull.update(
                changed_files=len(entries),
                additions=sum(e["additions"] for e in entries),
                deletions=sum(e["deletions"] for e in entries),
            )
        return entries

    # ------------------------------------------------------------------ builders

    def _pull_ref(self, repo: _RepoState, ref: str, sha: str) -> dict[str, Any]:
        owner = repo.data["owner"]
        return {
            "label": f"{owner['login']}:{ref}",
            "ref": ref,
            "sha": sha,
            "user": _copy(owner),
            "repo": _copy(repo.data),
        }

    def _pull_dict(
        self,
        repo: _RepoState,
        number: int,
        *,
        head_repo: _RepoState,
        head_ref: str,
        head_sha: str,
        base_ref: str,
        base_sha: str,
        user_login: str,
        title: str | None,
        body: str | None,
    ) -> dict[str, Any]:
        full, pid = repo.full_name, next(self._ids["pull"])
        api, html = f"{self.api_url}/repos/{full}", f"{self.base_url}/{full}"
        now = _iso(_now())
        pull = self._example("GET", "/repos/{owner}/{repo}/pulls/{pull_number}", 200)
        pull.update(
            url=f"{api}/pulls/{number}",
            id=pid,
            node_id=_node_id("PullRequest", pid),
            html_url=f"{html}/pull/{number}",
            diff_url=f"{html}/pull/{number}.diff",
            patch_url=f"{html}/pull/{number}.patch",
            issue_url=f"{api}/issues/{number}",
            commits_url=f"{api}/pulls/{number}/commits",
            review_comments_url=f"{api}/pulls/{number}/comments",
            review_comment_url=f"{api}/pulls/comments{{/number}}",
            comments_url=f"{api}/issues/{number}/comments",
            statuses_url=f"{api}/statuses/{head_sha}",
            number=number,
            state="open",
            locked=False,
            title=title or f"Pull request #{number}",
            user=self._user(user_login),
            body=body,
            labels=[],
            milestone=None,
            active_lock_reason=None,
            created_at=now,
            updated_at=now,
            closed_at=None,
            merged_at=None,
            merge_commit_sha=None,
            assignee=None,
            assignees=[],
            requested_reviewers=[],
            requested_teams=[],
            head=self._pull_ref(head_repo, head_ref, head_sha),
            base=self._pull_ref(repo, base_ref, base_sha),
            author_association="CONTRIBUTOR",
            auto_merge=None,
            merged=False,
            merged_by=None,
            comments=0,
            review_comments=0,
            maintainer_can_modify=False,
            commits=1,
            additions=0,
            deletions=0,
            changed_files=0,
        )
        pull["_links"] = {
            "self": {"href": pull["url"]},
            "html": {"href": pull["html_url"]},
            "issue": {"href": pull["issue_url"]},
            "comments": {"href": pull["comments_url"]},
            "review_comments": {"href": pull["review_comments_url"]},
            "review_comment": {"href": pull["review_comment_url"]},
            "commits": {"href": pull["commits_url"]},
            "statuses": {"href": pull["statuses_url"]},
        }
        return pull

    def _diff_entry(self, repo: _RepoState, given: dict[str, Any]) -> dict[str, Any]:
        filename = given["filename"]
        additions, deletions = int(given.get("additions", 1)), int(given.get("deletions", 0))
        sha = given.get("sha") or _fake_sha(repo.full_name, filename)
        entry: dict[str, Any] = {
            "sha": sha,
            "filename": filename,
            "status": "modified",
            "additions": additions,
            "deletions": deletions,
            "changes": additions + deletions,
            "blob_url": f"{self.base_url}/{repo.full_name}/blob/{sha}/{filename}",
            "raw_url": f"{self.base_url}/{repo.full_name}/raw/{sha}/{filename}",
            "contents_url": f"{self.api_url}/repos/{repo.full_name}/contents/{filename}?ref={sha}",
        }
        entry.update(given)
        return entry

    # ------------------------------------------------------------------ handlers: pull requests

    def _pull(self, request: _Request) -> dict[str, Any]:
        pull = self.pulls.get((request.repository.full_name, request.int_param("pull_number")))
        if pull is None:
            raise _GitHubError(404, "Not Found")
        return pull

    @_handles("GET /repos/{owner}/{repo}/pulls/{pull_number}")
    def _get_pull(self, request: _Request) -> _Reply:
        return _Reply(200, self._pull(request))

    @_handles("GET /repos/{owner}/{repo}/pulls")
    def _list_pulls(self, request: _Request) -> _Reply:
        repo, query = request.repository, request.query
        state, head, base = query.get("state", "open"), query.get("head"), query.get("base")
        found = [
            pull
            for (full, _), pull in self.pulls.items()
            if full == repo.full_name
            and state in ("all", pull["state"])
            and (head is None or head in (pull["head"]["label"], pull["head"]["ref"]))
            and base in (None, pull["base"]["ref"])
        ]
        found.sort(key=lambda p: p["number"], reverse=query.get("direction", "desc") == "desc")
        return self._paginate(request, found)

    @_handles("GET /repos/{owner}/{repo}/pulls/{pull_number}/files")
    def _list_pull_files(self, request: _Request) -> _Reply:
        pull = self._pull(request)
        return self._paginate(request, self.pull_files.get((request.repository.full_name, pull["number"]), []))

    @_handles("POST /repos/{owner}/{repo}/pulls")
    def _create_pull(self, request: _Request) -> _Reply:
        repo, body = request.repository, request.body
        head_owner, _, head_ref = body["head"].rpartition(":")
        head_repo = repo
        if head_owner and head_owner.lower() != repo.data["owner"]["login"].lower():
            head_repo = self._repos.get(f"{head_owner}/{repo.data['name']}".lower(), repo)
        if body["base"] not in repo.branches:
            raise _GitHubError(
                422, "Validation Failed", errors=[{"resource": "PullRequest", "field": "base", "code": "invalid"}]
            )
        if head_ref not in head_repo.branches:
            raise _GitHubError(
                422, "Validation Failed", errors=[{"resource": "PullRequest", "field": "head", "code": "invalid"}]
            )
        for (full, _), pull in self.pulls.items():
            if (
                full == repo.full_name
                and pull["state"] == "open"
                and pull["head"]["ref"] == head_ref
                and pull["base"]["ref"] == body["base"]
            ):
                message = f"A pull request already exists for {pull['head']['label']}."
                raise _GitHubError(
                    422, "Validation Failed", errors=[{"resource": "PullRequest", "code": "custom", "message": message}]
                )
        number = 1 + max((n for (full, n) in self.pulls if full == repo.full_name), default=0)
        pull = self.add_pull(
            repo.full_name,
            number,
            head_sha=head_repo.branches[head_ref],
            base_sha=repo.branches[body["base"]],
            head_ref=head_ref,
            base_ref=body["base"],
            head_full_name=head_repo.full_name,
            user_login=self._bot()["login"],
            draft=bool(body.get("draft", False)),
            mergeable=None,
            title=body.get("title"),
            body=body.get("body"),
        )
        pull["maintainer_can_modify"] = bool(body.get("maintainer_can_modify", False))
        self._recompute_mergeability(repo, pull)  # merges.py: at once, where GitHub takes a moment
        return _Reply(201, pull)

    @_handles("PATCH /repos/{owner}/{repo}/pulls/{pull_number}")
    def _update_pull(self, request: _Request) -> _Reply:
        pull, body, repo = self._pull(request), request.body, request.repository
        if "base" in body:
            if body["base"] not in repo.branches:
                raise _GitHubError(
                    422, "Validation Failed", errors=[{"resource": "PullRequest", "field": "base", "code": "invalid"}]
                )
            pull["base"] = self._pull_ref(repo, body["base"], repo.branches[body["base"]])
            self._recompute_mergeability(repo, pull)  # merges.py
        if body.get("state") == "open" and pull["merged"]:
            raise _GitHubError(
                422,
                "Validation Failed",
                errors=[
                    {
                        "resource": "PullRequest",
                        "code": "custom",
                        "message": "state cannot be changed. The pull request has been merged.",
                    }
                ],
            )
        for key in ("title", "body", "maintainer_can_modify"):
            if key in body:
                pull[key] = body[key]
        if "state" in body:
            pull["state"] = body["state"]
            pull["closed_at"] = _iso(_now()) if body["state"] == "closed" else None
        pull["updated_at"] = _iso(_now())
        return _Reply(200, pull)

    @_handles("PUT /repos/{owner}/{repo}/pulls/{pull_number}/update-branch")
    def _update_pull_branch(self, request: _Request) -> _Reply:
        pull = self._pull(request)
        body = request.body if isinstance(request.body, dict) else {}
        expected = body.get("expected_head_sha")
        if expected is not None and expected != pull["head"]["sha"]:
            raise _GitHubError(422, "expected head sha didn't match current head ref.")
        return _Reply(202, {"message": "Updating pull request branch.", "url": pull["html_url"]})
