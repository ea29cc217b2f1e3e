"""The GitHub operations layer's own decisions, over a stub gidgethub client (no HTTP)."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import pytest
from gidgethub import BadRequest

from bot.github.errors import UnexpectedResponse
from bot.github.pulls import Pulls
from pipeline.agents.step import is_terminal


class _Answers:
    """A gidgethub client that answers every request with the same body."""

    def __init__(self, body: Any) -> None:
        self.body = body

    async def getitem(self, url: str, *args: Any, **kwargs: Any) -> Any:
        return self.body

    async def put(self, url: str, *args: Any, **kwargs: Any) -> Any:
        return self.body


async def test_an_answer_without_what_the_app_reads_names_the_endpoint_and_is_permanent() -> None:
    pulls = Pulls(_Answers({"number": 1, "state": "open", "title": "x"}), "octo/app")  # type: ignore[arg-type]
    with pytest.raises(UnexpectedResponse) as raised:
        await pulls.get(1)
    assert str(raised.value) == ("GET /repos/octo/app/pulls/1 answered without `head.sha`: "
                                 "got an object with keys [number, state, title]")


async def test_a_merge_github_did_is_not_undone_by_an_odd_answer_body() -> None:
    pulls = Pulls(_Answers(None), "octo/app")  # type: ignore[arg-type]
    assert (await pulls.merge(1, sha="a" * 40, method="squash")).sha is None


def test_an_agent_run_ends_on_errors_no_retry_can_fix() -> None:
    assert is_terminal(UnexpectedResponse("GET /repos/o/r/pulls/1", "`head.sha`", {}))
    assert is_terminal(BadRequest(HTTPStatus.UNPROCESSABLE_ENTITY, "Validation Failed"))
    assert not is_terminal(BadRequest(HTTPStatus.NOT_FOUND, "Not Found"))
    assert not is_terminal(TimeoutError())
