"""``ReviewsMixin``: pull request reviews: ``add_review`` (a review as if a user had submitted it) and
``GET .../pulls/{n}/reviews`` (chronological, paginated). ``reviews`` is the live state, keyed by
(full name as given to ``add_repo``, number)."""

from __future__ import annotations

import itertools
from typing import Any

from tests.fakes.github.common import _GitHubError, _handles, _iso, _node_id, _now, _Reply, _Request
from tests.fakes.github.state import FakeState

REVIEW_STATES = ("APPROVED", "CHANGES_REQUESTED", "COMMENTED", "DISMISSED", "PENDING")


class ReviewsMixin(FakeState):
    """Pull request reviews (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.reviews: dict[tuple[str, int], list[dict[str, Any]]] = {}
        self._review_ids = itertools.count(80_000_001)

    def add_review(
        self,
        full_name: str,
        number: int,
        user: str,
        state: str = "APPROVED",
        *,
        body: str = "",
        commit_id: str | None = None,
        author_association: str = "COLLABORATOR",
    ) -> dict[str, Any]:
        """``commit_id`` defaults to the pull's current head."""
        if state not in REVIEW_STATES:
            raise ValueError(f"state must be one of {REVIEW_STATES}, not {state!r}")
        repo = self._repo_state(full_name)
        pull = self.pulls.get((repo.full_name, number))
        if pull is None:
            raise KeyError(f"no pull request {full_name}#{number}: add_pull() it first")
        review_id = next(self._review_ids)
        html = f"{pull['html_url']}#pullrequestreview-{review_id}"
        review = {
            "id": review_id,
            "node_id": _node_id("PullRequestReview", review_id),
            "user": self._user(user),
            "body": body,
            "state": state,
            "html_url": html,
            "pull_request_url": pull["url"],
            "_links": {"html": {"href": html}, "pull_request": {"href": pull["url"]}},
            "submitted_at": None if state == "PENDING" else _iso(_now()),
            "commit_id": commit_id or pull["head"]["sha"],
            "author_association": author_association,
        }
        self.reviews.setdefault((repo.full_name, number), []).append(review)
        return review

    @_handles("GET /repos/{owner}/{repo}/pulls/{pull_number}/reviews")
    def _list_reviews(self, request: _Request) -> _Reply:
        key = (request.repository.full_name, request.int_param("pull_number"))
        if key not in self.pulls:
            raise _GitHubError(404, "Not Found")
        return self._paginate(request, self.reviews.get(key, []))
