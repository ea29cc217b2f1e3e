"""Abuse from outside (bot/guard/): per-client rate limits (a moved clock, never a sleep), the client's
address behind trusted proxies, GitHub's webhook addresses from `GET /meta`, and all of it at the HTTP
edges: the login and OAuth callbacks, /api/v1 and the webhook endpoint answer 429 with Retry-After,
validly signed deliveries are never limited, and the optional allowlist refuses other addresses."""

from __future__ import annotations

import logging
from ipaddress import ip_network

import aiohttp
import pytest

from bot.config import WEBHOOK_PATH
from bot.guard.client_address import client_address, rate_key
from bot.guard.hook_sources import HookSources
from bot.guard.ratelimit import RateLimiter
from bot.guard.request_guard import GUARD
from bot.services import SERVICES
from tests.api_support import api_token_for
from tests.conftest import WEBHOOK_SECRET
from tests.dashboard_support import start_dashboard
from tests.webhook_sender import WebhookSender, github_headers

NETS = lambda *values: tuple(ip_network(v) for v in values)  # noqa: E731


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ---------------------------------------------------------------- the limiter

def test_a_bucket_allows_a_minutes_burst_then_refills_evenly() -> None:
    clock = Clock()
    limiter = RateLimiter(6, clock=clock)  # one request every 10 s, bursts of 6
    assert all(limiter.take("a").allowed for _ in range(6))
    refused = limiter.take("a")
    assert not refused.allowed and refused.first_refusal and refused.retry_after == pytest.approx(10.0)
    assert refused.retry_seconds == 10
    again = limiter.take("a")
    assert not again.allowed and not again.first_refusal  # logged once, not per request
    assert limiter.take("b").allowed  # another client has its own bucket
    clock.now += 9.9
    assert not limiter.take("a").allowed
    clock.now += 0.1
    assert limiter.take("a").allowed
    assert not limiter.take("a").allowed
    clock.now += 3600
    assert sum(limiter.take("a").allowed for _ in range(10)) == 6  # never more than a minute's worth


def test_zero_limits_nothing_and_the_clients_are_bounded() -> None:
    assert all(RateLimiter(0).take("a").allowed for _ in range(1000))
    clock = Clock()
    limiter = RateLimiter(1, clock=clock, max_clients=2)
    assert limiter.take("a").allowed and not limiter.take("a").allowed
    limiter.take("b"), limiter.take("c")  # "a" is forgotten: it starts full again
    assert limiter.take("a").allowed
    assert RateLimiter(7, clock=clock).take("x").retry_seconds == 1


# ---------------------------------------------------------------- the client's address

@pytest.mark.parametrize("peer, forwarded, trusted, client", [
    ("203.0.113.9", [], (), "203.0.113.9"),
    ("203.0.113.9", ["198.51.100.1"], (), "203.0.113.9"),  # nobody is trusted: the header is anyone's
    ("10.0.0.2", ["198.51.100.1"], NETS("10.0.0.0/8"), "198.51.100.1"),
    ("10.0.0.2", ["1.1.1.1, 198.51.100.1"], NETS("10.0.0.0/8"), "198.51.100.1"),  # "1.1.1.1" is the client's lie
    ("10.0.0.2", ["198.51.100.1, 10.0.0.7"], NETS("10.0.0.0/8"), "198.51.100.1"),  # two proxies
    ("10.0.0.2", ["198.51.100.1", "10.0.0.7"], NETS("10.0.0.0/8"), "198.51.100.1"),  # two header lines
    ("10.0.0.2", ["unknown, 198.51.100.1"], NETS("10.0.0.0/8"), "198.51.100.1"),
    ("10.0.0.2", ["198.51.100.1, garbage"], NETS("10.0.0.0/8"), "10.0.0.2"),  # what the proxy saw is no address
    ("10.0.0.2", ["10.0.0.3"], NETS("10.0.0.0/8"), "10.0.0.3"),  # proxies all the way
    ("10.0.0.2", [], NETS("10.0.0.0/8"), "10.0.0.2"),
    ("203.0.113.9", ["198.51.100.1"], NETS("10.0.0.0/8"), "203.0.113.9"),  # not from the proxy
    ("::ffff:10.0.0.2", [" 2001:db8::1 "], NETS("10.0.0.0/8"), "2001:db8::1"),
    (None, ["198.51.100.1"], NETS("10.0.0.0/8"), "unknown"),
])
def test_the_client_is_found_behind_trusted_proxies_only(peer, forwarded, trusted, client) -> None:
    assert client_address(peer, forwarded, trusted) == client


def test_an_ipv6_client_counts_by_its_64() -> None:
    assert rate_key("2001:db8:1:2:3:4:5:6") == rate_key("2001:db8:1:2:ffff::1") == "2001:db8:1:2::/64"
    assert rate_key("203.0.113.9") == "203.0.113.9" and rate_key("unknown") == "unknown"


# ---------------------------------------------------------------- GitHub's webhook addresses

async def test_meta_reads_the_hook_ranges_of_github(make_settings, fake_github) -> None:
    from bot.github.github_app import GitHubApp

    fake_github.hook_ranges = ("192.30.252.0/22", "2a0a:a440::/29")
    async with aiohttp.ClientSession() as http:
        github = GitHubApp(http, make_settings(GITHUB_API_URL=fake_github.api_url))
        meta = await github.meta()
    assert meta.hooks == NETS("192.30.252.0/22", "2a0a:a440::/29")
    [call] = fake_github.calls_to("GET", "/meta")
    assert "authorization" not in call.headers  # anonymous, as GitHub allows


async def test_hook_sources_keep_the_last_list_when_a_refresh_fails() -> None:
    answers: list[object] = [NETS("192.0.2.0/24"), OSError("unreachable")]

    async def fetch():  # type: ignore[no-untyped-def]
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    sources = HookSources(fetch)
    assert sources.allows("192.0.2.7") is None  # not known yet
    await sources.refresh()
    assert sources.allows("192.0.2.7") and not sources.allows("198.51.100.1") and not sources.allows("junk")
    with pytest.raises(OSError):
        await sources.refresh()
    assert sources.allows("192.0.2.7")


# ---------------------------------------------------------------- at the HTTP edges

async def start(fake_github, aiohttp_server, make_settings, clock: Clock, **env: str):  # type: ignore[no-untyped-def]
    dash = await start_dashboard(fake_github, aiohttp_server, make_settings, with_worker=False, clock=clock, **env)
    return dash.url, dash.app


async def test_the_login_and_its_callbacks_are_limited_per_client(fake_github, aiohttp_server, make_settings) -> None:
    clock = Clock()
    url, _ = await start(fake_github, aiohttp_server, make_settings, clock, LOGIN_REQUESTS_PER_MINUTE="3")
    async with aiohttp.ClientSession() as http:
        for path in ("/auth/login", "/auth/callback?state=x", "/setup/callback?state=x"):
            async with http.get(url + path, allow_redirects=False) as response:
                assert response.status in (302, 400, 409), path
        async with http.get(url + "/auth/login", allow_redirects=False) as response:
            assert response.status == 429 and response.headers["Retry-After"] == "20"
            assert "try again in 20 s" in await response.text()
        async with http.get(url + "/", allow_redirects=False) as response:
            assert response.status == 200  # pages are not limited
        clock.now += 20
        async with http.get(url + "/auth/login", allow_redirects=False) as response:
            assert response.status == 302


async def test_the_api_is_limited_per_client(fake_github, aiohttp_server, make_settings) -> None:
    clock = Clock()
    url, app = await start(fake_github, aiohttp_server, make_settings, clock, API_REQUESTS_PER_MINUTE="2")
    fake_github.add_installation(1, "acme", repos=["widgets"])
    token = await api_token_for(app[SERVICES].store, fake_github, "alice")
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as http:
        for _ in range(2):
            async with http.get(url + "/api/v1/projects", headers=headers) as response:
                assert response.status == 200
        async with http.get(url + "/api/v1/projects", headers=headers) as response:
            assert response.status == 429 and response.headers["Retry-After"] == "30"
            assert "too many requests" in (await response.json())["error"]
        async with http.get(url + "/api/v1/ws") as response:
            assert response.status == 429  # the WebSocket is part of the API
        clock.now += 30
        async with http.get(url + "/api/v1/projects", headers=headers) as response:
            assert response.status == 200


async def test_refused_webhooks_are_limited_and_a_signed_delivery_never(
        fake_github, aiohttp_server, make_settings, caplog) -> None:
    clock = Clock()
    url, app = await start(fake_github, aiohttp_server, make_settings, clock, WEBHOOK_REFUSALS_PER_MINUTE="3")
    caplog.set_level(logging.WARNING, logger="bot.webhooks")
    async with aiohttp.ClientSession() as http:
        sender = WebhookSender(http, url, WEBHOOK_SECRET)
        assert (await sender.send("issues", {"action": "opened"}, secret=None)).status == 401
        assert (await sender.send("issues", {"action": "opened"}, tamper=True)).status == 401
        assert (await sender.send("issues", {"action": "opened"}, secret="wrong")).status == 401
        for _ in range(20):  # a flood: 429s, and one log line for all of them
            answer = await sender.send("issues", {"action": "opened"}, secret=None)
            assert answer.status == 429 and "too many refused" in answer.body["error"]
        assert (await sender.send("issues", {"action": "opened"}, tamper=True)).status == 429
        # The same address's validly signed deliveries go through all along, and do not count.
        for number in range(5):
            answer = await sender.send("issues", {"action": "opened", "n": number})
            assert answer.status == 202, answer
        async with http.post(url + WEBHOOK_PATH, data=b"{}", headers=github_headers("issues", b"{}", secret=None)
                             ) as response:
            assert response.status == 429 and response.headers["Retry-After"] == "20"
        clock.now += 20
        assert (await sender.send("issues", {"action": "opened"}, secret=None)).status == 401
    refusals = [r for r in caplog.records if r.name == "bot.webhooks"]
    assert len(refusals) == 3 + 1 + 1, [r.getMessage() for r in refusals]  # 3 refused, 1 "limited", 1 refused
    assert sum("refused too often" in r.getMessage() for r in refusals) == 1
    assert await app[SERVICES].store.deliveries.count() == 5


async def test_webhooks_only_from_githubs_addresses_when_asked(fake_github, aiohttp_server, make_settings) -> None:
    fake_github.hook_ranges = ("192.0.2.0/24",)
    clock = Clock()
    url, app = await start(fake_github, aiohttp_server, make_settings, clock, WEBHOOK_GITHUB_ADDRESSES_ONLY="true",
                           TRUSTED_PROXIES="127.0.0.1")
    sources = app[GUARD].hook_sources
    await sources.refresh()  # the app read them at start too; this waits for a read to have happened
    async with aiohttp.ClientSession() as http:
        sender = WebhookSender(http, url, WEBHOOK_SECRET)
        answer = await sender.send("issues", {"action": "opened"})
        assert answer.status == 403 and "127.0.0.1 is not one of GitHub's webhook addresses" in answer.body["error"]
        # A refused delivery is not stored: the same delivery id is taken later, through a trusted proxy
        # (127.0.0.1 here) that names the GitHub address it came from.
        refused = await sender.send("issues", {"action": "opened"}, delivery_id="via-proxy")
        assert refused.status == 403
        body = b'{"action": "opened"}'
        headers = github_headers("issues", body, secret=WEBHOOK_SECRET, delivery_id="via-proxy")
        async with http.post(url + WEBHOOK_PATH, data=body,
                             headers={**headers, "X-Forwarded-For": "198.51.100.1, 192.0.2.44"}) as response:
            assert response.status == 202
        async with http.post(url + WEBHOOK_PATH, data=body,  # a client naming GitHub's address itself
                             headers={**headers, "X-Forwarded-For": "192.0.2.44, 198.51.100.1"}) as response:
            assert response.status == 403
        # GitHub's list changes: read again (hourly in the app).
        fake_github.hook_ranges = ("127.0.0.0/8",)
        await sources.refresh()
        assert (await sender.send("issues", {"action": "opened"})).status == 202


async def test_until_githubs_addresses_are_known_webhooks_wait(fake_github, aiohttp_server, make_settings) -> None:
    fake_github.fail_next("GET", "/meta", status=500, times=50)
    url, app = await start(fake_github, aiohttp_server, make_settings, Clock(), WEBHOOK_GITHUB_ADDRESSES_ONLY="true")
    async with aiohttp.ClientSession() as http:
        answer = await WebhookSender(http, url, WEBHOOK_SECRET).send("issues", {"action": "opened"})
    assert answer.status == 503 and "not known yet" in answer.body["error"]
    assert app[GUARD].hook_sources.networks is None
    fake_github.take_errors()
