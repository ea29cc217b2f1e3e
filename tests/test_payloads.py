"""A delivery without a field its handler reads is dead at once, naming the field (not retried as
`KeyError: 'sha'`); handlers/payloads.py reads payloads."""

from __future__ import annotations

import copy

import pytest
from gidgethub import sansio

from bot.errors import PermanentError
from bot.models import JOB_DEAD
from handlers.payloads import MalformedDelivery, pull_request_of, repo_refs, required
from tests.pull_requests import open_pull_request


def event(name: str = "pull_request", **data: object) -> sansio.Event:
    return sansio.Event({"action": "opened", **data}, event=name, delivery_id="d-1")


def test_required_walks_objects_and_lists_and_names_what_is_missing() -> None:
    e = event(pull_request={"head": {"ref": "feature", "repo": {}}, "number": 7},
              repositories=[{"id": 1, "full_name": "o/a"}, {"id": True}])
    assert required(e, "pull_request.number", int) == 7
    assert required(e, "repositories.0.full_name", str) == "o/a"
    with pytest.raises(MalformedDelivery) as missing:
        required(e, "pull_request.head.sha")
    assert isinstance(missing.value, PermanentError) and missing.value.path == "pull_request.head.sha"
    assert str(missing.value).startswith(
        "pull_request.opened delivery d-1 has no `pull_request.head.sha` (`pull_request.head` is an object with "
        "keys [ref, repo]). GitHub sends it in every such delivery, so this one is not handled and not retried")
    with pytest.raises(MalformedDelivery, match=r"has `repositories.1.id` as bool, not int"):
        required(e, "repositories.1.id", int)
    with pytest.raises(MalformedDelivery, match=r"has no `repositories.2.id` \(`repositories` is a list of 2\)"):
        required(e, "repositories.2.id")
    with pytest.raises(MalformedDelivery, match=r"has `pull_request.number` as int, not str"):
        required(e, "pull_request.number", str)
    with pytest.raises(MalformedDelivery, match=r"^installation_repositories.opened delivery d-1 has no "
                                                r"`repositories_added.0.full_name`"):
        repo_refs(event("installation_repositories", repositories_added=[{"id": 5}]), "repositories_added")


def test_a_pull_request_lacking_what_the_app_reads_is_named_by_its_place_in_the_delivery() -> None:
    e = event(pull_request={"number": 1, "state": "open", "head": {"ref": "f"}, "base": {"sha": "b", "ref": "main"}},
              repository={"full_name": "o/r"})
    with pytest.raises(MalformedDelivery, match=r"has no `pull_request.head.sha` \(`pull_request.head` is an object "
                                                r"with keys \[ref\]\)"):
        pull_request_of(e)


def without(payload: dict, path: str) -> dict:
    payload = copy.deepcopy(payload)
    *parents, last = path.split(".")
    holder = payload
    for part in parents:
        holder = holder[part]
    del holder[last]
    return payload


@pytest.mark.parametrize("name, removed, named, shown", [
    ("pull_request", "pull_request.head.sha", "pull_request.head.sha", "`pull_request.head` is an object with keys ["),
    ("issue_comment", "comment.user", "comment.user.login", "`comment` is an object with keys ["),
])
async def test_a_poison_delivery_is_dead_at_its_first_attempt_saying_which_field(
    bot, fake_github, name: str, removed: str, named: str, shown: str
) -> None:
    scenario = open_pull_request(fake_github, config="validate:\n  - 'true'\n")
    payload = scenario.payload("opened") if name == "pull_request" else scenario.comment_payload("/help")
    answer, finished = await bot.deliver(name, without(payload, removed))
    assert (finished.data["outcome"], finished.data["attempts"]) == ("dead", 1)
    [job] = await bot.store.jobs.for_delivery(answer.body["delivery"])
    assert job.status == JOB_DEAD
    assert job.last_error.startswith(f"{name}.{payload['action']} delivery {answer.body['delivery']} has no "
                                     f"`{named}` ({shown}")
    assert "KeyError" not in job.last_error
    assert fake_github.calls_to("POST", "/repos/*/*/check-runs") == []
    assert fake_github.calls_to("POST", "/repos/*/*/issues/*/comments") == []
