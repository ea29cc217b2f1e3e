"""``IssuesMixin``: issue comments (``add_comment`` for someone else's, the API for the bot's),
reactions to comments, and labels."""

from __future__ import annotations

from typing import Any

from tests.fakes.github.common import _copy, _fake_sha, _iso, _node_id, _now
from tests.fakes.github.common import _GitHubError, _handles, _Reply, _RepoState, _Request
from tests.fakes.github.state import _ID_STARTS, FakeState


class IssuesMixin(FakeState):
    """Comments, reactions, labels (see the module docstring)."""

    # ------------------------------------------------------------------ state helpers

    def add_comment(
        self,
        full_name: str,
        issue_number: int,
        body: str,
        *,
        user_login: str = "octocat",
        author_association: str = "CONTRIBUTOR",
    ) -> dict[str, Any]:
        """A comment someone else wrote (the bot's own come in through the API)."""
        repo = self._repo_state(full_name)
        comment = self._comment_dict(repo, issue_number, body, self._user(user_login), author_association)
        comment["performed_via_github_app"] = None
        return comment

    # ------------------------------------------------------------------ handlers: comments, reactions, labels

    @_handles("POST /repos/{owner}/{repo}/issues/{issue_number}/comments")
    def _create_comment(self, request: _Request) -> _Reply:
        comment = self._comment_dict(
            request.repository, request.int_param("issue_number"), request.body["body"], self._bot(), "NONE"
        )
        return _Reply(201, comment)

    @_handles("GET /repos/{owner}/{repo}/issues/{issue_number}/comments")
    def _list_comments(self, request: _Request) -> _Reply:
        key = (request.repository.full_name, request.int_param("issue_number"))
        found = [self.comments[n] for n in sorted(self.comments) if self._comment_issue[n] == key]
        return self._paginate(request, found)

    @_handles("PATCH /repos/{owner}/{repo}/issues/comments/{comment_id}")
    def _update_comment(self, request: _Request) -> _Reply:
        comment = self._comment(request)
        comment.update(body=request.body["body"], updated_at=_iso(_now()))
        return _Reply(200, comment)

    @_handles("DELETE /repos/{owner}/{repo}/issues/comments/{comment_id}")
    def _delete_comment(self, request: _Request) -> _Reply:
        comment = self._comment(request)
        del self.comments[comment["id"]]
        return _Reply(204)

    def _comment(self, request: _Request) -> dict[str, Any]:
        number = request.int_param("comment_id")
        if number not in self.comments or self._comment_issue[number][0] != request.repository.full_name:
            raise _GitHubError(404, "Not Found")
        return self.comments[number]

    @_handles("POST /repos/{owner}/{repo}/issues/comments/{comment_id}/reactions")
    def _create_reaction(self, request: _Request) -> _Reply:
        """Any comment id is accepted: comments from webhook payloads are not in the fake's state."""
        comment_id, content = request.int_param("comment_id"), request.body["content"]
        bot = self._bot()
        for existing in self.reactions:
            if (existing["comment_id"], existing["content"], existing["user"]["login"]) == (
                comment_id,
                content,
                bot["login"],
            ):
                return _Reply(200, {k: v for k, v in existing.items() if k not in ("comment_id", "repository")})
        number = next(self._ids["reaction"])
        reaction = self._example("POST", "/repos/{owner}/{repo}/issues/comments/{comment_id}/reactions", 201)
        reaction.update(
            id=number, node_id=_node_id("Reaction", number), user=bot, content=content, created_at=_iso(_now())
        )
        self.reactions.append({**reaction, "comment_id": comment_id, "repository": request.repository.full_name})
        return _Reply(201, reaction)

    @_handles("POST /repos/{owner}/{repo}/issues/{issue_number}/labels")
    def _add_labels(self, request: _Request) -> _Reply:
        key = (request.repository.full_name, request.int_param("issue_number"))
        body = request.body
        given = body.get("labels", []) if isinstance(body, dict) else body
        names = self.labels.setdefault(key, [])
        for label in given if isinstance(given, list) else []:
            name = label.get("name") if isinstance(label, dict) else str(label)
            if name and name not in names:
                names.append(name)
        return _Reply(200, self._label_list(request.repository, key))

    @_handles("DELETE /repos/{owner}/{repo}/issues/{issue_number}/labels/{name}")
    def _remove_label(self, request: _Request) -> _Reply:
        key = (request.repository.full_name, request.int_param("issue_number"))
        names = self.labels.get(key, [])
        if request.params["name"] not in names:
            raise _GitHubError(404, "Label does not exist")
        names.remove(request.params["name"])
        return _Reply(200, self._label_list(request.repository, key))

    def _label_list(self, repo: _RepoState, key: tuple[str, int]) -> list[dict[str, Any]]:
        labels = [
            {
                "id": _ID_STARTS["label"] + int(_fake_sha(name)[:6], 16),
                "node_id": _node_id("Label", len(name)),
                "url": f"{self.api_url}/repos/{repo.full_name}/labels/{name}",
                "name": name,
                "description": None,
                "color": "ededed",
                "default": False,
            }
            for name in self.labels.get(key, [])
        ]
        if key in self.pulls:
            self.pulls[key]["labels"] = _copy(labels)
        return labels

    # ------------------------------------------------------------------ builders

    def _comment_dict(
        self, repo: _RepoState, issue_number: int, body: str, user: dict[str, Any], author_association: str
    ) -> dict[str, Any]:
        number = next(self._ids["comment"])
        api, now = f"{self.api_url}/repos/{repo.full_name}", _iso(_now())
        kind = "pull" if (repo.full_name, issue_number) in self.pulls else "issues"
        comment = self._example("POST", "/repos/{owner}/{repo}/issues/{issue_number}/comments", 201)
        comment.update(
            id=number,
            node_id=_node_id("IssueComment", number),
            url=f"{api}/issues/comments/{number}",
            html_url=f"{self.base_url}/{repo.full_name}/{kind}/{issue_number}#issuecomment-{number}",
            body=body,
            user=user,
            created_at=now,
            updated_at=now,
            issue_url=f"{api}/issues/{issue_number}",
            author_association=author_association,
            performed_via_github_app=self._app_dict(),
        )
        self.comments[number] = comment
        self._comment_issue[number] = (repo.full_name, issue_number)
        return comment
