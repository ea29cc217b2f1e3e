"""The fake GitHub's delivery log (tests/fakes/github/hooks.py) behaves as GitHub's, over real HTTP with the
App's JWT: cursor paging by the `Link` header to the end, the `status` filter by `status_code` range,
GitHub's answers to a bad cursor, a bad filter, a `per_page` out of range and a missing JWT, and a
redelivery asked for (`POST .../attempts`: 202) appearing in the list with the same guid."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from gidgethub.apps import get_jwt

from tests.fakes.fixtures import APP_ID
from tests.fakes.github import FakeGitHub

LOG = "/app/hook/deliveries"
_NEXT = re.compile(r'<([^>]+)>;\s*rel="next"')


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
def headers(app_private_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {get_jwt(app_id=str(APP_ID), private_key=app_private_key)}",
            "Accept": "application/vnd.github+json"}


async def _get(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> tuple[int, Any, str | None]:
    async with session.get(url, headers=headers) as response:
        return response.status, await response.json(), response.headers.get("Link")


async def _deliveries(fake: FakeGitHub, count: int) -> list[dict[str, Any]]:
    """`count` deliveries GitHub failed to make (no webhook URL: nothing listens), oldest first."""
    return [await fake.deliver("ping", {"zen": f"number {n}", "hook_id": n}) for n in range(count)]


async def test_the_log_pages_newest_first_by_the_link_cursor_to_the_end(fake_github, session, headers) -> None:  # type: ignore[no-untyped-def]
    sent = await _deliveries(fake_github, 7)
    url: str | None = f"{fake_github.api_url}{LOG}?per_page=3"
    pages: list[list[int]] = []
    while url is not None:
        status, page, link = await _get(session, url, headers)
        assert status == 200
        pages.append([entry["id"] for entry in page])
        found = _NEXT.search(link or "")
        url = found.group(1) if found else None
    assert [len(page) for page in pages] == [3, 3, 1]
    assert [entry_id for page in pages for entry_id in page] == [entry["id"] for entry in reversed(sent)]
    status, page, link = await _get(session, f"{fake_github.api_url}{LOG}", headers)
    assert status == 200 and len(page) == 7 and link is None  # 30 a page by default: one page
    assert set(page[0]) == {"id", "guid", "delivered_at", "redelivery", "duration", "status", "status_code",
                            "event", "action", "installation_id", "repository_id", "throttled_at"}


async def test_the_status_filter_goes_by_status_code_range(fake_github, session, headers) -> None:  # type: ignore[no-untyped-def]
    codes = [200, 202, 302, 399, 400, 404, 502, 0]  # 0: no answer at all
    sent = await _deliveries(fake_github, len(codes))
    for entry, code in zip(sent, codes):
        entry["status_code"], entry["status"] = code, "OK" if code in (200, 202) else f"Invalid HTTP Response: {code}"
    by_code = {entry["id"]: entry["status_code"] for entry in sent}
    _, succeeded, _ = await _get(session, f"{fake_github.api_url}{LOG}?status=success", headers)
    _, failed, _ = await _get(session, f"{fake_github.api_url}{LOG}?status=failure", headers)
    assert sorted(by_code[e["id"]] for e in succeeded) == [200, 202, 302, 399]
    assert sorted(by_code[e["id"]] for e in failed) == [0, 400, 404, 502]


@pytest.mark.parametrize(("query", "status", "message"), [
    ("cursor=not-one-we-gave", 400, "Bad Request"), ("cursor=v1_x", 400, "Bad Request"),
    ("status=failed", 422, "Validation Failed"), ("status=OK", 422, "Validation Failed"),
    ("per_page=0", 422, "Validation Failed"), ("per_page=101", 422, "Validation Failed"),
    ("per_page=-5", 422, "Validation Failed"), ("per_page=many", 422, "Validation Failed"),
])
async def test_what_github_refuses(fake_github, session, headers, query, status, message) -> None:  # type: ignore[no-untyped-def]
    await _deliveries(fake_github, 2)
    answer_status, answer, _ = await _get(session, f"{fake_github.api_url}{LOG}?{query}", headers)
    assert (answer_status, answer["message"]) == (status, message)
    [refused] = fake_github.take_errors()
    assert f"-> {status}" in refused


async def test_per_page_at_its_bounds_is_fine(fake_github, session, headers) -> None:  # type: ignore[no-untyped-def]
    await _deliveries(fake_github, 2)
    for per_page, size in ((1, 1), (100, 2)):
        status, page, _ = await _get(session, f"{fake_github.api_url}{LOG}?per_page={per_page}", headers)
        assert (status, len(page)) == (200, size)


async def test_without_the_apps_jwt_the_log_is_401(fake_github, session) -> None:  # type: ignore[no-untyped-def]
    [entry] = await _deliveries(fake_github, 1)
    for path in (LOG, f"{LOG}/{entry['id']}"):
        async with session.get(f"{fake_github.api_url}{path}") as response:
            assert response.status == 401, path
    fake_github.take_errors()


async def test_a_redelivery_asked_for_is_accepted_and_listed_with_the_same_guid(fake_github, session, headers) -> None:  # type: ignore[no-untyped-def]
    [entry] = await _deliveries(fake_github, 1)
    async with session.post(f"{fake_github.api_url}{LOG}/{entry['id']}/attempts", headers=headers) as response:
        assert response.status == 202
    assert fake_github.redelivery_requests == [entry["id"]]
    await fake_github.wait_until(lambda: len(fake_github.hook_deliveries) == 2, timeout=10)
    _, page, _ = await _get(session, f"{fake_github.api_url}{LOG}", headers)
    again, first = page
    assert (again["guid"], again["redelivery"], first["redelivery"]) == (entry["guid"], True, False)
    assert again["id"] > first["id"] == entry["id"]
    status, detail, _ = await _get(session, f"{fake_github.api_url}{LOG}/{again['id']}", headers)
    assert status == 200 and detail["request"]["payload"] == entry["request"]["payload"]
    async with session.post(f"{fake_github.api_url}{LOG}/999/attempts", headers=headers) as response:
        assert response.status == 404
