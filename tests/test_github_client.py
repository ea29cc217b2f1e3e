"""bot.github.client over real HTTP on 127.0.0.1 against FakeGitHub.

Time is injected: `Clock.sleep` records each wait, advances the fake clock by it and returns at
once (or, when gated, blocks until the test opens the gate), so pacing for a minute takes no time.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from bot import metrics
from bot.errors import GitHubUnavailable
from bot.github.client import GitHubClientClosed, GitHubClientConfig, GitHubClients, GitHubRateLimited
from bot.github.pacing import WINDOW_MARGIN
from bot.redact import PROCESS_REDACTOR
from tests.fakes.github import FakeGitHub
from tests.github_client_support import APP_ID, Clock, until

TOKENS = "/app/installations/*/access_tokens"


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def make_clients(
    session: aiohttp.ClientSession, fake_github: FakeGitHub, app_private_key: str, clock: Clock
) -> AsyncIterator[Callable[..., GitHubClients]]:
    made: list[GitHubClients] = []

    def make(**overrides: Any) -> GitHubClients:
        config = GitHubClientConfig(app_id=APP_ID, private_key=app_private_key, api_url=fake_github.api_url, **overrides)
        clients = GitHubClients(session, config, sleep=clock.sleep, clock=clock)
        clients._random = lambda: 0.5  # deterministic jitter
        made.append(clients)
        return clients

    yield make
    for clients in made:
        await clients.close()


@pytest.fixture
def github(fake_github: FakeGitHub) -> FakeGitHub:
    fake_github.add_installation(1, "octo", repos=["one"])
    fake_github.add_installation(2, "acme", repos=["two"])
    return fake_github


def tokens_used(fake: FakeGitHub, method: str, glob: str) -> list[str]:
    return [c.headers["authorization"] for c in fake.calls_to(method, glob)]


# --- authentication and tokens ----------------------------------------------------------------


async def test_app_client_uses_the_jwt(github: FakeGitHub, make_clients) -> None:
    clients = make_clients()
    app = await clients.app().getitem("/app")
    assert app["id"] == 12345
    assert tokens_used(github, "GET", "/app")[0].startswith("bearer ")
    assert sample("codegenapp_github_rate_limit_remaining", installation="app") > 0


async def test_token_fetched_once_shared_and_reused(github: FakeGitHub, make_clients) -> None:
    clients = make_clients()
    gh = clients.installation(1)
    repos = await asyncio.gather(*[gh.getitem("/repos/octo/one") for _ in range(10)])
    assert {r["full_name"] for r in repos} == {"octo/one"}
    # A fresh client object for the same installation reuses the cached token too.
    await clients.installation(1).getitem("/repos/octo/one")
    token = await clients.installation_token(1)

    assert len(github.calls_to("POST", TOKENS)) == 1
    assert github.calls_to("POST", TOKENS)[0].headers["authorization"].startswith("bearer ")
    assert set(tokens_used(github, "GET", "/repos/octo/one")) == {f"token {token}"}
    assert token.startswith("ghs_") and PROCESS_REDACTOR.redact(f"x {token} y") == "x *** y"
    assert sample("codegenapp_github_rate_limit_remaining", installation="1") > 0


async def test_long_lived_client_follows_token_refresh_near_expiry(github: FakeGitHub, make_clients, clock: Clock) -> None:
    clients = make_clients()
    gh = clients.installation(1)
    await gh.getitem("/repos/octo/one")
    first = await clients.installation_token(1)
    clock.now += 3200  # the token (1 h) is still more than 5 min from expiry
    await gh.getitem("/repos/octo/one")
    assert len(github.calls_to("POST", TOKENS)) == 1
    clock.now += 200  # now within 5 min of expiry: the same object gets a new token
    await gh.getitem("/repos/octo/one")
    assert len(github.calls_to("POST", TOKENS)) == 2
    second = await clients.installation_token(1)
    assert second != first
    assert tokens_used(github, "GET", "/repos/octo/one") == [f"token {first}"] * 2 + [f"token {second}"]


async def test_rejected_token_is_replaced_once(github: FakeGitHub, make_clients) -> None:
    clients = make_clients()
    gh = clients.installation(1)
    await gh.getitem("/repos/octo/one")
    github.expire_tokens(1)  # GitHub now answers 401 to the cached token
    assert (await gh.getitem("/repos/octo/one"))["full_name"] == "octo/one"
    assert [c.status for c in github.calls_to("GET", "/repos/octo/one")] == [200, 401, 200]
    assert len(github.calls_to("POST", TOKENS)) == 2
    assert len(github.take_errors()) == 1  # the 401, provoked on purpose


async def test_forget_installation_drops_the_token(github: FakeGitHub, make_clients) -> None:
    clients = make_clients()
    first = await clients.installation_token(1)
    clients.forget_installation(1)
    assert await clients.installation_token(1) != first
    assert len(github.calls_to("POST", TOKENS)) == 2


# --- retries ----------------------------------------------------------------------------------


async def test_502_is_retried_with_backoff_then_succeeds(github: FakeGitHub, make_clients, clock: Clock) -> None:
    clients = make_clients()
    gh = clients.installation(1)
    await clients.installation_token(1)
    before = sample("codegenapp_github_requests_total", method="GET", status="502")
    github.fail_next("GET", "/repos/octo/one", status=502, times=2)
    assert (await gh.getitem("/repos/octo/one"))["full_name"] == "octo/one"
    assert [c.status for c in github.calls_to("GET", "/repos/octo/one")] == [502, 502, 200]
    assert clock.sleeps == [0.75, 1.5]  # exponential, jitter 0.5 of the upper half
    assert sample("codegenapp_github_requests_total", method="GET", status="502") == before + 2


async def test_502_on_a_write_is_retried(github: FakeGitHub, make_clients) -> None:
    gh = make_clients().installation(1)
    github.fail_next("POST", "/repos/octo/one/issues/1/comments", status=502)
    comment = await gh.post("/repos/octo/one/issues/1/comments", data={"body": "hello"})
    assert comment["body"] == "hello"
    assert [c.status for c in github.calls_to("POST", "/repos/octo/one/issues/*/comments")] == [502, 201]


async def test_gives_up_after_max_attempts_saying_github_is_unavailable(
    github: FakeGitHub, make_clients, clock: Clock
) -> None:
    gh = make_clients(max_attempts=3).installation(1)
    await gh.getitem("/repos/octo/one")
    github.fail_next("GET", "/repos/octo/one", status=503, times=3)
    with pytest.raises(GitHubUnavailable) as caught:
        await gh.getitem("/repos/octo/one")
    assert str(caught.value) == "GitHub answered 503 to GET /api/v3/repos/octo/one (3 tries)"
    assert len(github.calls_to("GET", "/repos/octo/one")) == 4
    assert len(clock.sleeps) == 2


async def test_network_errors_are_retried(github: FakeGitHub, make_clients, monkeypatch, clock: Clock) -> None:
    gh = make_clients().installation(1)
    await gh.getitem("/repos/octo/one")
    real = aiohttp.ClientSession.request
    failures = [aiohttp.ClientConnectionError("reset by peer"), asyncio.TimeoutError()]

    class Failing:
        def __init__(self, exc: BaseException) -> None:
            self.exc = exc

        async def __aenter__(self) -> None:
            raise self.exc

        async def __aexit__(self, *args: object) -> None:
            return None

    def flaky(self: aiohttp.ClientSession, *args: Any, **kwargs: Any) -> Any:
        return Failing(failures.pop(0)) if failures else real(self, *args, **kwargs)

    monkeypatch.setattr(aiohttp.ClientSession, "request", flaky)
    errors_before = sample("codegenapp_github_requests_total", method="GET", status="error")
    assert (await gh.getitem("/repos/octo/one"))["full_name"] == "octo/one"
    assert len(clock.sleeps) == 2
    assert sample("codegenapp_github_requests_total", method="GET", status="error") == errors_before + 2


async def test_retry_after_is_honoured(github: FakeGitHub, make_clients, clock: Clock) -> None:
    gh = make_clients().installation(1)
    github.rate_limit_next("POST", "/repos/octo/one/issues/1/comments", retry_after=3)
    comment = await gh.post("/repos/octo/one/issues/1/comments", data={"body": "after the limit"})
    assert comment["body"] == "after the limit"
    assert [c.status for c in github.calls_to("POST", "/repos/octo/one/issues/*/comments")] == [403, 201]
    assert clock.sleeps == [3.0]
    assert len(github.comments) == 1


async def test_wait_beyond_the_maximum_refuses_the_installation_until_it_ends(
    github: FakeGitHub, make_clients, clock: Clock
) -> None:
    clients = make_clients(max_retry_wait=2.0)
    gh = clients.installation(1)
    github.rate_limit_next("GET", "/repos/octo/one", retry_after=30)
    with pytest.raises(GitHubRateLimited) as caught:
        await gh.getitem("/repos/octo/one")
    assert caught.value.retry_after == 30.0
    # The installation's other requests are refused without asking GitHub; another installation is not held.
    with pytest.raises(GitHubRateLimited):
        await gh.post("/repos/octo/one/issues/1/comments", data={"body": "held"})
    assert (await clients.installation(2).getitem("/repos/acme/two"))["full_name"] == "acme/two"
    assert clients.status()["rate_limited"] == [{"scope": "1", "what": "installation 1", "for_seconds": 30.0}]
    assert clients.status()["ok"]  # a rate limit is not an outage
    clock.now += 30
    assert (await gh.getitem("/repos/octo/one"))["full_name"] == "octo/one"
    assert clock.sleeps == []
    assert len(github.calls_to("GET", "/repos/octo/one")) == 2
    assert github.calls_to("POST", "/repos/octo/one/issues/*/comments") == []


def record_arrivals(github: FakeGitHub, clock: Clock, monkeypatch) -> list[tuple[Any, str, str, float]]:
    """(installation, method, path, fake clock time) of each request as the fake receives it."""
    arrivals: list[tuple[Any, str, str, float]] = []
    original = github._process

    async def record(request, call, bucket):  # type: ignore[no-untyped-def]
        credential = call.headers.get("authorization", "").partition(" ")[2]
        arrivals.append((github.tokens.get(credential, {}).get("installation_id", "app"), call.method, call.path,
                         clock.now))
        return await original(request, call, bucket)

    monkeypatch.setattr(github, "_process", record)
    return arrivals


async def test_a_secondary_limit_holds_every_request_of_the_installation(
    github: FakeGitHub, make_clients, clock: Clock, monkeypatch
) -> None:
    """GitHub: after a secondary rate limit, make no requests until the wait is over. Reads and writes of
    the limited installation wait; another installation does not."""
    github.set_permission("octo/one", "octocat", "write")
    clients = make_clients()
    one, two = clients.installation(1), clients.installation(2)
    run = await one.post("/repos/octo/one/check-runs", data={"name": "ci", "head_sha": "c" * 40})
    await clients.installation_token(2)
    arrivals = record_arrivals(github, clock, monkeypatch)
    github.rate_limit_next("POST", "/repos/octo/one/issues/1/comments", retry_after=2)
    clock.gate = gate = asyncio.Event()
    limited = asyncio.create_task(one.post("/repos/octo/one/issues/1/comments", data={"body": "limited"}))
    await asyncio.wait_for(clock.waiting.wait(), 2)  # it waits out its Retry-After
    limited_at = clock.now

    assert (await two.getitem("/repos/acme/two"))["full_name"] == "acme/two"  # not held
    held = asyncio.gather(
        one.getitem("/repos/octo/one/collaborators/octocat/permission"),
        one.post("/repos/octo/one/issues/1/comments", data={"body": "second"}),
        one.post("/repos/octo/one/issues/1/comments", data={"body": "third"}),
        one.patch(f"/repos/octo/one/check-runs/{run['id']}", data={"output": {"title": "t", "summary": "s"}}),
        *[one.getitem("/repos/octo/one") for _ in range(3)],
    )
    await until(lambda: len([a for a in arrivals if a[0] == 1]) >= 4)  # the reads, once their wait is over
    gate.set()
    await asyncio.wait_for(asyncio.gather(limited, held), 2)

    first, *later = arrivals
    assert first[:3] == (1, "POST", "/repos/octo/one/issues/1/comments") and first[3] < limited_at + 2
    assert later[0] == (2, "GET", "/repos/acme/two", limited_at)
    after_limit = [(method, path, at) for iid, method, path, at in later if iid == 1]
    assert len(after_limit) == 8  # 4 reads, the limited comment again, 2 comments, the PATCH
    assert all(at >= limited_at + 2 for _, _, at in after_limit), after_limit
    assert [c["body"] for c in github.comments.values()] == ["limited", "second", "third"]


async def test_a_spent_primary_limit_holds_the_installation_until_its_reset(
    github: FakeGitHub, make_clients, clock: Clock, monkeypatch
) -> None:
    github.set_permission("octo/one", "octocat", "write")
    clients = make_clients()
    wall = float(int(time.time()))  # x-ratelimit-reset is in seconds since the epoch
    clients._wall_clock = lambda: wall + (clock.now - 1000.0)
    gh = clients.installation(1)
    await clients.installation_token(1)
    arrivals = record_arrivals(github, clock, monkeypatch)
    spent = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(wall) + 20)}
    # A successful answer that used the last request of the hour: the next ones wait for the reset.
    github.fail_next("GET", "/repos/octo/one", status=200, headers=spent, body={"full_name": "octo/one"})
    assert (await gh.getitem("/repos/octo/one"))["full_name"] == "octo/one"
    start = clock.now
    assert (await gh.getitem("/repos/octo/one/collaborators/octocat/permission"))["permission"]
    await gh.post("/repos/octo/one/issues/1/comments", data={"body": "after the reset"})
    assert clock.sleeps == [21.0]  # until x-ratelimit-reset, +1 s for its rounding
    assert [at - start for *_, at in arrivals] == [0.0, 21.0, 21.0]
    # And a 403 for the primary limit holds the others too, then is tried again.
    github.fail_next("GET", "/repos/octo/one", status=403, headers={**spent, "x-ratelimit-reset": str(int(wall) + 50)},
                     body={"message": "API rate limit exceeded for installation ID 1."})
    assert (await gh.getitem("/repos/octo/one"))["full_name"] == "octo/one"
    assert clock.sleeps == [21.0, 30.0]  # the reset is 50 s after the first answer


# --- GitHub failing: pauses and probes --------------------------------------------------------


async def test_an_installation_github_fails_for_is_paused_until_a_probe_gets_an_answer(
    github: FakeGitHub, make_clients, clock: Clock
) -> None:
    clients = make_clients(max_attempts=2)
    one, two = clients.installation(1), clients.installation(2)
    await asyncio.gather(clients.installation_token(1), clients.installation_token(2))
    github.fail_next("GET", "/repos/octo/one", status=502, times=3)
    clock.gate = gate = asyncio.Event()
    failing = asyncio.create_task(one.getitem("/repos/octo/one"))
    await asyncio.wait_for(clock.waiting.wait(), 2)  # between its two tries
    clock.now += 0.5
    assert (await two.getitem("/repos/acme/two"))["full_name"] == "acme/two"  # GitHub answers the other one
    gate.set()
    with pytest.raises(GitHubUnavailable) as failed:
        await failing
    assert failed.value.retry_after == 5.0  # when its job may come back: the probe

    [pause] = clients.status()["paused"]
    assert (pause["scope"], pause["what"], pause["reason"]) == ("1", "installation 1", "GitHub answered 502")
    assert pause["next_probe_in_seconds"] == 5.0 and not clients.status()["ok"]
    assert sample("codegenapp_github_paused", scope="1") == 1
    sent = len(github.calls_to("GET", "/repos/octo/one"))
    with pytest.raises(GitHubUnavailable) as refused:  # refused without asking GitHub
        await one.post("/repos/octo/one/issues/1/comments", data={"body": "not now"})
    assert str(refused.value) == ("GitHub work of installation 1 is paused while GitHub is failing "
                                  "(GitHub answered 502); next try in 5 s")
    assert refused.value.retry_after == 5.0
    assert (await two.getitem("/repos/acme/two"))["full_name"] == "acme/two"  # only installation 1 is paused

    clock.now += 5  # the probe: one try, and GitHub still fails: paused twice as long
    with pytest.raises(GitHubUnavailable):
        await one.getitem("/repos/octo/one")
    assert len(github.calls_to("GET", "/repos/octo/one")) == sent + 1
    assert clients.status()["paused"][0]["next_probe_in_seconds"] == 10.0
    clock.now += 10  # GitHub is back: the probe gets its answer, and the installation's work resumes
    assert (await one.getitem("/repos/octo/one"))["full_name"] == "octo/one"
    assert (await one.post("/repos/octo/one/issues/1/comments", data={"body": "now"}))["body"] == "now"
    assert clients.status() == {"ok": True, "paused": [], "rate_limited": []}
    assert sample("codegenapp_github_paused", scope="1") == 0
    assert github.calls_to("POST", "/repos/octo/one/issues/*/comments")[0].json == {"body": "now"}


async def test_when_github_fails_for_everything_the_whole_app_pauses_and_one_probe_resumes_it(
    github: FakeGitHub, make_clients, clock: Clock, monkeypatch
) -> None:
    clients = make_clients(max_attempts=1)
    one, two = clients.installation(1), clients.installation(2)
    await clients.installation_token(1)
    github.fail_next("*", "**", status=502)
    with pytest.raises(GitHubUnavailable):
        await one.getitem("/repos/octo/one")
    assert [p["scope"] for p in clients.status()["paused"]] == ["all", "1"]
    assert sample("codegenapp_github_paused", scope="all") == 1
    # An installation that never failed waits too, without a request (not even for its token).
    with pytest.raises(GitHubUnavailable, match="GitHub work of the whole app is paused"):
        await two.getitem("/repos/acme/two")
    assert github.calls_to("POST", "/app/installations/2/access_tokens") == []

    answer = asyncio.Event()
    arrived = asyncio.Event()
    original = github._process

    async def held(request, call, bucket):  # type: ignore[no-untyped-def]
        if call.path == "/app/installations/2/access_tokens":
            arrived.set()
            await answer.wait()
        return await original(request, call, bucket)

    monkeypatch.setattr(github, "_process", held)
    clock.now += 5
    probe = asyncio.create_task(two.getitem("/repos/acme/two"))  # its token is fetched on the way, held
    await asyncio.wait_for(arrived.wait(), 2)
    waiting = asyncio.create_task(one.getitem("/repos/octo/one"))
    with pytest.raises(TimeoutError):  # it waits for the probe
        await github.wait_for_call("GET", "/repos/octo/one", count=2, timeout=0.2)
    assert not waiting.done()
    answer.set()
    results = await asyncio.wait_for(asyncio.gather(probe, waiting), 2)
    assert [r["full_name"] for r in results] == ["acme/two", "octo/one"]
    assert clients.status()["ok"] and sample("codegenapp_github_paused", scope="all") == 0


async def test_a_request_held_back_by_a_rate_limit_is_no_news_of_github(
    github: FakeGitHub, make_clients, clock: Clock
) -> None:
    """A write of a rate-limited installation refused here, never sent, must not end a pause as if
    GitHub had answered it."""
    clients = make_clients(max_attempts=1, max_retry_wait=2.0)
    one, two = clients.installation(1), clients.installation(2)
    await asyncio.gather(clients.installation_token(1), clients.installation_token(2))
    github.rate_limit_next("GET", "/repos/octo/one", retry_after=30)
    with pytest.raises(GitHubRateLimited):
        await one.getitem("/repos/octo/one")  # installation 1 is held for 30 s
    github.fail_next("*", "**", status=502)
    with pytest.raises(GitHubUnavailable):
        await two.getitem("/repos/acme/two")
    assert [p["scope"] for p in clients.status()["paused"]] == ["all", "2"]
    clock.now += 6  # past the pause's first wait: the next request may go as its probe
    with pytest.raises(GitHubRateLimited):
        await one.patch("/repos/octo/one/check-runs/1", data={"output": {"title": "t", "summary": "s"}})
    assert github.calls_to("PATCH", "/repos/octo/one/check-runs/*") == []
    assert [p["scope"] for p in clients.status()["paused"]] == ["all", "2"]  # still: GitHub said nothing


# --- write pacing -----------------------------------------------------------------------------


async def test_installations_interleave_but_one_installation_never_overlaps(
    github: FakeGitHub, make_clients, monkeypatch
) -> None:
    """A slow fake (20 ms a request) shows what is in flight at once."""
    clients = make_clients()
    await asyncio.gather(clients.installation_token(1), clients.installation_token(2))
    in_flight: dict[Any, int] = defaultdict(int)
    peak: dict[Any, int] = defaultdict(int)
    original = github._process

    async def slow(request, call, bucket):  # type: ignore[no-untyped-def]
        credential = call.headers.get("authorization", "").partition(" ")[2]
        iid = github.tokens[credential]["installation_id"]
        keys = [(call.method == "GET", iid), (call.method == "GET", "all")]
        for key in keys:
            in_flight[key] += 1
            peak[key] = max(peak[key], in_flight[key])
        try:
            await asyncio.sleep(0.02)
            return await original(request, call, bucket)
        finally:
            for key in keys:
                in_flight[key] -= 1

    monkeypatch.setattr(github, "_process", slow)
    one, two = clients.installation(1), clients.installation(2)
    results = await asyncio.gather(
        *[one.post("/repos/octo/one/issues/1/comments", data={"body": f"one {i}"}) for i in range(4)],
        *[two.post("/repos/acme/two/issues/1/comments", data={"body": f"two {i}"}) for i in range(4)],
        *[one.getitem("/repos/octo/one") for _ in range(3)],
    )
    assert [r["body"] for r in results[:8]] == [f"one {i}" for i in range(4)] + [f"two {i}" for i in range(4)]
    writes = (False, 1), (False, 2), (False, "all")
    assert [peak[key] for key in writes] == [1, 1, 2]  # one at a time per installation, both at once
    assert peak[(True, 1)] == 3  # reads are not paced (nor held behind the writes)
    assert len(github.calls_to("POST", "/repos/*/*/issues/*/comments")) == 8


async def test_held_back_writes_go_by_priority_and_progress_coalesces(
    github: FakeGitHub, make_clients, clock: Clock
) -> None:
    clients = make_clients(writes_per_minute=1)
    gh = clients.installation(1)
    sha = "a" * 40
    run = await gh.post("/repos/octo/one/check-runs", data={"name": "ci", "head_sha": sha, "status": "in_progress"})
    deferred, coalesced = sample("codegenapp_github_writes_deferred_total"), sample("codegenapp_github_writes_coalesced_total")

    gate = clock.gate = asyncio.Event()
    comment = asyncio.create_task(gh.post("/repos/octo/one/issues/1/comments", data={"body": "queued"}))
    await asyncio.wait_for(clock.waiting.wait(), 2)  # the sender waits for the minute to pass
    assert clock.sleeps == [60.0 + WINDOW_MARGIN]
    progress = [
        asyncio.create_task(
            clients.installation(1).patch(
                f"/repos/octo/one/check-runs/{run['id']}",
                data={"output": {"title": f"step {i}", "summary": f"{i * 25}%"}},
            )
        )
        for i in range(1, 4)
    ]
    create = asyncio.create_task(gh.post("/repos/octo/one/check-runs", data={"name": "lint", "head_sha": sha}))
    queue = clients._pacers[1].queue
    await until(lambda: len(queue) == 3 and queue.peek().coalesced == 0 and sum(e.coalesced for e in queue) == 2)

    # Reads are never paced: this goes out while the writes wait.
    assert (await gh.getitem("/repos/octo/one"))["full_name"] == "octo/one"
    assert not comment.done()

    gate.set()
    created, posted, *updates = await asyncio.wait_for(asyncio.gather(create, comment, *progress), 2)
    assert created["name"] == "lint" and posted["body"] == "queued"
    # Every caller of a coalesced update got the response of the one PATCH that was sent.
    assert [u["output"]["title"] for u in updates] == ["step 3"] * 3

    writes = [c for c in github.calls if c.method in ("POST", "PATCH") and "/access_tokens" not in c.path]
    assert [(c.method, c.path.rsplit("/", 1)[-1]) for c in writes] == [
        ("POST", "check-runs"),  # the first, sent at once
        ("POST", "check-runs"),  # creating a check run jumps the queue
        ("POST", "comments"),
        ("PATCH", str(run["id"])),  # three progress updates, one request: the latest
    ]
    assert writes[-1].json == {"output": {"title": "step 3", "summary": "75%"}}
    assert github.check_runs[run["id"]]["output"]["summary"] == "75%"
    assert clock.sleeps == [60.0 + WINDOW_MARGIN] * 3  # one write a minute
    assert sample("codegenapp_github_writes_deferred_total") == deferred + 3
    assert sample("codegenapp_github_writes_coalesced_total") == coalesced + 2


async def test_hourly_limit_holds_writes(github: FakeGitHub, make_clients, clock: Clock) -> None:
    gh = make_clients(writes_per_minute=80, writes_per_hour=2).installation(1)
    for i in range(3):
        await gh.post("/repos/octo/one/issues/1/comments", data={"body": str(i)})
    assert clock.sleeps == [3600.0 + WINDOW_MARGIN]
    assert len(github.comments) == 3


async def test_completion_goes_before_earlier_queued_writes(github: FakeGitHub, make_clients, clock: Clock) -> None:
    clients = make_clients(writes_per_minute=1)
    gh = clients.installation(1)
    run = await gh.post("/repos/octo/one/check-runs", data={"name": "ci", "head_sha": "b" * 40, "status": "in_progress"})
    gate = clock.gate = asyncio.Event()
    comment = asyncio.create_task(gh.post("/repos/octo/one/issues/1/comments", data={"body": "c"}))
    await asyncio.wait_for(clock.waiting.wait(), 2)
    done = asyncio.create_task(gh.patch(f"/repos/octo/one/check-runs/{run['id']}", data={"conclusion": "success"}))
    await until(lambda: len(clients._pacers[1].queue) == 2)
    gate.set()
    completed, _ = await asyncio.wait_for(asyncio.gather(done, comment), 2)
    assert completed["status"] == "completed" and completed["conclusion"] == "success"
    later = [c.method for c in github.calls if c.method in ("POST", "PATCH") and "/access_tokens" not in c.path][1:]
    assert later == ["PATCH", "POST"]


async def test_close_fails_queued_writes(github: FakeGitHub, make_clients, clock: Clock) -> None:
    clients = make_clients(writes_per_minute=1)
    gh = clients.installation(1)
    await gh.post("/repos/octo/one/issues/1/comments", data={"body": "sent"})
    clock.gate = asyncio.Event()  # never opened: close() comes first
    queued = asyncio.create_task(gh.post("/repos/octo/one/issues/1/comments", data={"body": "never"}))
    await asyncio.wait_for(clock.waiting.wait(), 2)
    await clients.close()
    with pytest.raises(GitHubClientClosed):
        await asyncio.wait_for(queued, 2)
    with pytest.raises(GitHubClientClosed):
        await gh.post("/repos/octo/one/issues/1/comments", data={"body": "after close"})
    assert [c["body"] for c in github.comments.values()] == ["sent"]
