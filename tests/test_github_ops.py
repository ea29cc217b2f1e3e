"""The GitHub operations layer's own decisions, over a stub gidgethub client (no HTTP)."""

from __future__ import annotations

import inspect
from http import HTTPStatus
from typing import Any

import pytest
from gidgethub import BadRequest

from bot.github.check_runs import CheckRuns
from bot.github.comments import Comments
from bot.github.errors import UnexpectedResponse
from bot.github.pulls import Pulls
from bot.github.repos import Repos
from pipeline.agents.step import is_terminal
from tests.fakes.github_ops import _CheckRuns, _Comments, _Pulls, _Repos


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


def public_methods(cls: type) -> dict[str, tuple[bool, list[tuple[str, inspect._ParameterKind]]]]:
    """Each public method: whether it is async, and its parameters' names and kinds."""
    return {name: (inspect.iscoroutinefunction(method),
                   [(p.name, p.kind) for p in inspect.signature(method).parameters.values()])
            for name, method in inspect.getmembers(cls, inspect.isfunction) if not name.startswith("_")}


@pytest.mark.parametrize(("real", "fake"), [(Pulls, _Pulls), (CheckRuns, _CheckRuns), (Comments, _Comments),
                                            (Repos, _Repos)])
def test_the_recording_fake_offers_what_the_operations_layer_offers(real: type, fake: type) -> None:
    assert public_methods(fake) == public_methods(real)
