"""Hypothesis fuzzes the HTTP edges for 500s: the webhook ingress (headers, signatures, bodies, content
types; many examples correctly signed, so that parsing and storing are reached) and the JSON API with
the login and page routes (methods, paths, ids, queries, credentials, CSRF tokens, bodies). Any answer
below 500 is fine, and every error under /api/v1 is JSON; a 5xx is a bug.

The app is served on 127.0.0.1 without a worker (stored deliveries and started runs stay queued) and
without rate limits; examples run from a thread (Hypothesis is synchronous) and send their requests
through the test's event loop, which serves them. Both runs are fixed sets (`derandomize`: CI sees the
same examples every time): 200 per test by default (a few seconds), 1000 in the slow-marked run."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from dataclasses import dataclass
from urllib.parse import quote, urlencode

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from yarl import URL

from bot.config import WEBHOOK_PATH
from tests.api_support import api_token_for
from tests.conftest import WEBHOOK_SECRET
from tests.dashboard_support import start_dashboard
from tests.pull_requests import open_pull_request, record_project, seed_validation

QUICK = settings(max_examples=200, deadline=None, database=None, derandomize=True,
                 suppress_health_check=list(HealthCheck))
AT_LENGTH = settings(QUICK, max_examples=1000)
BUDGETS = [pytest.param(QUICK, id="quick"), pytest.param(AT_LENGTH, id="at-length", marks=pytest.mark.slow)]

# What a client can put in a header: anything but control characters other than tab (RFC 9110; aiohttp's
# client and server refuse them), non-ASCII included.
HEADER_TEXT = st.text(st.characters(blacklist_characters="".join(map(chr, [*range(0x09), *range(0x0a, 0x20), 0x7f])),
                                    blacklist_categories=("Cs",)), max_size=80)
IDS = st.integers(min_value=-(2**64), max_value=2**64)
EDGE_IDS = st.sampled_from([0, -1, 1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1]) | IDS  # SQLite's INTEGER ends at 2^63-1
JSON = st.recursive(st.none() | st.booleans() | IDS | st.floats(allow_nan=False, allow_infinity=False)
                    | st.text(max_size=30),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
                    max_leaves=12)


@dataclass
class Served:
    url: str
    loop: asyncio.AbstractEventLoop
    session: aiohttp.ClientSession
    token: str
    cookie: str  # a session's, so that CSRF tokens are compared with its token
    ids: list[str]

    def send(self, method: str, target: str, *, headers: dict[str, str], body: bytes | None = None
             ) -> tuple[int, str]:
        """One request, from the Hypothesis thread through the test's loop: (status, content type)."""
        async def request() -> tuple[int, str]:
            async with self.session.request(method, URL(self.url + target, encoded=True), headers=headers,
                                            data=body, allow_redirects=False) as response:
                await response.read()
                return response.status, response.content_type
        return asyncio.run_coroutine_threadsafe(request(), self.loop).result(timeout=60)


@pytest.fixture
async def served(fake_github, aiohttp_server, make_settings):  # type: ignore[no-untyped-def]
    dash = await start_dashboard(fake_github, aiohttp_server, make_settings, with_worker=False,
                                 LOGIN_REQUESTS_PER_MINUTE="0", API_REQUESTS_PER_MINUTE="0",
                                 WEBHOOK_REFUSALS_PER_MINUTE="0", GITHUB_WRITES_PER_MINUTE="100000",
                                 GITHUB_WRITES_PER_HOUR="100000")
    store = dash.services.store
    scenario = open_pull_request(fake_github, config="validate:\n  - test -f app.py\n")
    project = await record_project(store, scenario)
    validation = await seed_validation(store, scenario, conclusion="success")
    token = await api_token_for(store, fake_github, "alice", role="admin")
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        async with session.get(f"{dash.url}/") as response:
            cookie = response.cookies["cga_session"].value
        yield Served(dash.url, asyncio.get_running_loop(), session, token, cookie,
                     [project.id, validation.id])
    fake_github.take_errors()  # what random retries asked of GitHub and it refused is not the point here


# ---------------------------------------------------------------- the webhook ingress

@st.composite
def deliveries(draw: st.DrawFn) -> tuple[dict[str, str], bytes]:
    payload = draw(st.fixed_dictionaries({}, optional={
        "action": st.text(max_size=80) | JSON,
        "installation": st.fixed_dictionaries({"id": EDGE_IDS}) | JSON,
        "repository": st.fixed_dictionaries({}, optional={"id": EDGE_IDS, "full_name": st.text(max_size=40)}),
        "zen": JSON, "hook_id": JSON}))
    text = json.dumps(payload)
    body = draw(st.sampled_from(["json", "form", "raw"]))
    if body == "json":
        raw, content_type = text.encode(), "application/json"
    elif body == "form":
        raw, content_type = ("payload=" + quote(text)).encode(), "application/x-www-form-urlencoded"
    else:
        raw, content_type = draw(st.binary(max_size=300)), draw(HEADER_TEXT)
    valid = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), raw, hashlib.sha256).hexdigest()
    signature = draw(st.sampled_from([valid, valid, valid.upper()]) | HEADER_TEXT.map("sha256={}".format)
                     | HEADER_TEXT)
    headers = {"X-Hub-Signature-256": signature,
               "X-GitHub-Event": draw(st.sampled_from(["issues", "pull_request", "ping", "installation"]) | HEADER_TEXT),
               "X-GitHub-Delivery": draw(st.uuids().map(str) | HEADER_TEXT),
               "Content-Type": draw(st.just(content_type) | HEADER_TEXT)}
    for name in draw(st.sets(st.sampled_from(sorted(headers)), max_size=2)):
        del headers[name]
    return headers, raw


def fuzz_ingress(served: Served, budget: settings) -> None:
    @budget
    @given(delivery=deliveries())
    def check(delivery: tuple[dict[str, str], bytes]) -> None:
        headers, body = delivery
        status, content_type = served.send("POST", WEBHOOK_PATH, headers=headers, body=body)
        assert status < 500, (status, headers, body)
        assert content_type == "application/json", (status, headers)

    check()


@pytest.mark.parametrize("budget", BUDGETS)
async def test_no_webhook_request_gets_a_500(served, budget) -> None:
    await asyncio.to_thread(fuzz_ingress, served, budget)


# ---------------------------------------------------------------- the API, the login, the pages

PATHS = ["/api/v1/projects", "/api/v1/projects/{id}", "/api/v1/projects/{id}/runs", "/api/v1/projects/{id}/agent-run",
         "/api/v1/projects/{id}/agent-settings", "/api/v1/runs/{id}", "/api/v1/runs/{id}/confirm",
         "/api/v1/runs/{id}/cancel", "/api/v1/validation/{id}", "/api/v1/validation/{id}/retry",
         "/api/v1/openapi.json", "/api/v1/ws", "/api/v1/{id}", "/auth/login", "/auth/callback", "/auth/logout",
         "/", "/account", "/account/tokens", "/projects/acme/widgets", "/projects/acme/widgets/settings",
         "/projects/acme/widgets/pin", "/projects/acme/widgets/runs", "/validations/{id}", "/setup/callback"]


@st.composite
def requests(draw: st.DrawFn, served: Served) -> tuple[str, str, dict[str, str], bytes | None]:
    identifier = draw(st.sampled_from(served.ids) | st.text("0123456789abcdef", min_size=32, max_size=32)
                      | st.text(max_size=40).map(lambda t: quote(t, safe="")))  # raw bytes: the HTTP parser's 400
    path = draw(st.sampled_from(PATHS)).replace("{id}", identifier)
    query = draw(st.dictionaries(st.sampled_from(["limit", "next", "state", "code", "setup_token", "project"]),
                                 st.text(max_size=30) | IDS.map(str), max_size=3))
    target = path + ("?" + urlencode(query) if query else "")
    who = draw(st.sampled_from(["token", "session", "nobody", "garbage"]))
    headers = {"token": {"Authorization": f"Bearer {served.token}"},
               "session": {"Cookie": f"cga_session={served.cookie}"}}.get(who, {})
    if who == "garbage":
        headers.update(draw(st.fixed_dictionaries({}, optional={
            "Authorization": HEADER_TEXT.map("Bearer {}".format) | HEADER_TEXT,
            "Cookie": HEADER_TEXT.map("cga_session={}".format) | HEADER_TEXT})))
    headers.update(draw(st.fixed_dictionaries({}, optional={
        "X-CSRF-Token": HEADER_TEXT, "Origin": st.just(served.url) | HEADER_TEXT,
        "Content-Type": st.sampled_from(["application/json", "application/x-www-form-urlencoded",
                                         "multipart/form-data"]) | HEADER_TEXT})))
    body = draw(st.none() | JSON.map(lambda v: json.dumps(v).encode()) | st.binary(max_size=200)
                | st.dictionaries(st.sampled_from(["csrf_token", "target_text", "pinned", "name", "value"]),
                                  st.text(max_size=30), max_size=3).map(lambda f: urlencode(f).encode()))
    method = draw(st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]))
    return method, target, headers, body


def fuzz_api(served: Served, budget: settings) -> None:
    @budget
    @given(request=requests(served))
    def check(request: tuple[str, str, dict[str, str], bytes | None]) -> None:
        method, target, headers, body = request
        status, content_type = served.send(method, target, headers=headers, body=body)
        assert status < 500, (status, method, target, headers, body)
        if target.startswith("/api/v1") and status >= 400 and method != "HEAD":
            assert content_type == "application/json", (status, method, target)

    check()


@pytest.mark.parametrize("budget", BUDGETS)
async def test_no_api_or_page_request_gets_a_500(served, budget) -> None:
    await asyncio.to_thread(fuzz_api, served, budget)
