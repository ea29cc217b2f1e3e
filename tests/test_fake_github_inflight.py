"""The fake GitHub's record of writes in flight per installation (tests/fakes/github/inflight.py), which the
scale-out chaos test relies on to prove that no installation ever had two writes in flight at once."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from gidgethub.aiohttp import GitHubAPI
from gidgethub.apps import get_installation_access_token

from tests.fakes.fixtures import APP_ID
from tests.fakes.github import Call, FakeGitHub, WritesInFlight

HEAD = "c" * 40


def call(method: str, path: str) -> Call:
    return Call(method=method, path=path, query={}, headers={}, json=None)


def test_two_writes_of_one_installation_at_once_are_an_overlap() -> None:
    record = WritesInFlight()
    first, second = call("POST", "/repos/a/b/check-runs"), call("PATCH", "/repos/a/b/check-runs/1")
    record.enter(7, first)
    record.enter(7, second)
    record.leave(7, first)
    record.leave(7, second)
    assert record.max_in_flight == 2
    assert [(o.installation_id, o.first, o.second) for o in record.overlaps] == [(7, first, second)]
    assert record.in_flight == {}


def test_writes_one_after_another_or_of_other_installations_are_no_overlap() -> None:
    record = WritesInFlight()
    a, b, c = call("POST", "/x"), call("POST", "/y"), call("POST", "/z")
    record.enter(1, a)
    record.enter(2, b)  # another installation: allowed
    record.leave(1, a)
    record.enter(1, c)
    record.leave(1, c)
    record.leave(2, b)
    assert (record.max_in_flight, record.overlaps, record.writes) == (1, [], 3)


@pytest.fixture
def slow_writes(fake_github: FakeGitHub) -> FakeGitHub:
    fake_github.write_delay = 0.2
    return fake_github


async def installation_client(session: aiohttp.ClientSession, fake: FakeGitHub, key: str,
                              installation_id: int) -> GitHubAPI:
    app = GitHubAPI(session, "codegenapp-tests", base_url=fake.api_url)
    token = await get_installation_access_token(app, installation_id=str(installation_id), app_id=str(APP_ID),
                                                private_key=key)
    return GitHubAPI(session, "codegenapp-tests", base_url=fake.api_url, oauth_token=token["token"])


async def create_check_run(gh: GitHubAPI, repository: str) -> None:
    await gh.post(f"/repos/{repository}/check-runs", data={"name": "probe", "head_sha": HEAD})


async def test_concurrent_writes_over_http_are_recorded_per_installation(
        slow_writes: FakeGitHub, app_private_key: str) -> None:
    slow_writes.add_installation(1, "acme", repos=["widgets"])
    slow_writes.add_installation(2, "octo", repos=["gadgets"])
    async with aiohttp.ClientSession() as session:
        acme = await installation_client(session, slow_writes, app_private_key, 1)
        octo = await installation_client(session, slow_writes, app_private_key, 2)
        assert slow_writes.writes_in_flight.writes == 0  # the token requests (app JWT) are not counted

        await asyncio.gather(create_check_run(acme, "acme/widgets"), create_check_run(octo, "octo/gadgets"))
        assert (slow_writes.writes_in_flight.max_in_flight, slow_writes.writes_in_flight.overlaps) == (1, [])

        await create_check_run(acme, "acme/widgets")
        await create_check_run(acme, "acme/widgets")
        assert slow_writes.writes_in_flight.max_in_flight == 1

        await asyncio.gather(create_check_run(acme, "acme/widgets"), create_check_run(acme, "acme/widgets"))
    record = slow_writes.writes_in_flight
    assert record.max_in_flight == 2 and record.most == {1: 2, 2: 1}
    assert [o.installation_id for o in record.overlaps] == [1]
    assert "installation 1: POST /repos/acme/widgets/check-runs while POST" in record.overlaps[0].describe()
    assert record.writes == 6 and record.in_flight == {}
