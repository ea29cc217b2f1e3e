"""The Codegen API client against the fake Codegen over real HTTP: auth, start/poll/resume, the PR from
github_pull_requests, terminal errors with reasons, 429 backoff and the GET rate limit."""

import aiohttp
import pytest

from pipeline.agents.backend import AgentError, AgentTarget, Mode
from pipeline.agents.codegen import (CodegenBackend, CodegenClient, SlidingWindowLimiter, pick_pull_request,
                                     status_from_response)
from tests.fakes.codegen import API_KEY, ORG_ID, FakeCodegen, ScriptedAgent

TARGET = AgentTarget(run_id="r" * 32, project_id="p" * 32, repository="acme/widgets", installation_id=1,
                     base_branch="main", branch="codegenapp/x", pr_number=None, goal="greet")


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


GITHUB = "https://github.com"


def client(http, fake: FakeCodegen, *, key: str = API_KEY, org: str = ORG_ID, sleeps: list | None = None):
    async def sleep(seconds: float) -> None:
        if sleeps is not None:
            sleeps.append(seconds)

    return CodegenClient(http, base_url=fake.url, api_key=key, org_id=org, sleep=sleep)


async def test_start_poll_resume_with_the_bearer_key_and_the_org(http, fake_codegen, fake_github) -> None:
    fake_github.add_installation(7, "acme", repos=["acme/widgets"])
    fake_github.git_repo("acme/widgets").commit({"a.txt": "1"}, branch="main")
    fake_codegen.script = ScriptedAgent(fake_github, change={"a.txt": "2"}, fixes=[{"a.txt": "3"}], polls=2)
    backend = CodegenBackend(client(http, fake_codegen), github_url=fake_github.base_url)
    handle, status = await backend.start("do it", Mode.EXECUTE, {"mode": "execute", "repository": "acme/widgets",
                                                                  "base_branch": "main"}, TARGET)
    assert status.state == "running" and handle["id"] == 1001 and handle["web_url"].endswith("/agent/trace/1001")
    call = fake_codegen.calls[0]
    assert (call.method, call.path) == ("POST", f"/v1/organizations/{ORG_ID}/agent/run")
    assert call.headers["authorization"] == f"Bearer {API_KEY}"
    assert call.json == {"prompt": "do it", "metadata": {"mode": "execute", "repository": "acme/widgets",
                                                          "base_branch": "main"}}
    assert (await backend.poll(handle)).state == "running"
    done = await backend.poll(handle)
    assert done.state == "finished" and done.pr_number == 1 and done.pr_url.endswith("/acme/widgets/pull/1")
    handle, resumed = await backend.resume(handle, "fix it", TARGET)
    assert resumed.state == "running"
    assert fake_codegen.calls_to("POST", "**/agent/run/resume")[0].json == {"agent_run_id": 1001, "prompt": "fix it"}


@pytest.mark.parametrize("status,words", [
    (401, "rejected the API key (401)"), (402, "requires payment (402)"), (403, "refused access (403)"),
    (404, "found nothing (404)"), (422, "rejected the request (422)")])
async def test_client_errors_end_the_run_with_a_clear_reason(http, fake_codegen, status, words) -> None:
    fake_codegen.fail_next("POST", "**", status=status, body={"detail": "because of reasons"})
    with pytest.raises(AgentError) as raised:
        await client(http, fake_codegen).create_run("x", {})
    assert raised.value.terminal and raised.value.status == status
    assert words in raised.value.reason and "because of reasons" in raised.value.reason


async def test_a_wrong_key_or_org_is_refused(http, fake_codegen) -> None:
    with pytest.raises(AgentError) as wrong_key:
        await client(http, fake_codegen, key="nope").create_run("x", {})
    assert wrong_key.value.status == 401 and wrong_key.value.terminal
    with pytest.raises(AgentError) as wrong_org:
        await client(http, fake_codegen, org="999").get_run(1)
    assert wrong_org.value.status == 404 and "CODEGEN_ORG_ID (999)" in wrong_org.value.reason


async def test_5xx_and_network_errors_are_retried_by_the_run(http, fake_codegen) -> None:
    fake_codegen.fail_next("GET", "**", status=503)
    with pytest.raises(AgentError) as raised:
        await client(http, fake_codegen).get_run(1)
    assert not raised.value.terminal
    gone = CodegenClient(http, base_url="http://127.0.0.1:9", api_key="k", org_id="1")
    with pytest.raises(AgentError) as unreachable:
        await gone.get_run(1)
    assert not unreachable.value.terminal and "could not be reached" in unreachable.value.reason


async def test_429_waits_for_retry_after_then_hands_long_waits_back(http, fake_codegen) -> None:
    fake_codegen.script = None
    sleeps: list[float] = []
    codegen = client(http, fake_codegen, sleeps=sleeps)
    fake_codegen.fail_next("POST", "**", status=429, headers={"Retry-After": "2"})
    created = await codegen.create_run("x", {})
    assert created["id"] and sleeps == [2.0]
    fake_codegen.fail_next("GET", "**", status=429, headers={"Retry-After": "120"})
    with pytest.raises(AgentError) as raised:
        await codegen.get_run(created["id"])
    assert not raised.value.terminal and raised.value.retry_after == 120.0 and raised.value.status == 429


async def test_the_sliding_window_allows_60_gets_per_30_seconds() -> None:
    now = [0.0]
    waited: list[float] = []

    async def sleep(seconds: float) -> None:
        waited.append(seconds)
        now[0] += seconds

    limiter = SlidingWindowLimiter(60, 30.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(60):
        await limiter.acquire()
        now[0] += 0.1
    assert waited == []
    await limiter.acquire()  # the 61st waits until the first leaves the window
    assert waited == [pytest.approx(30.0 - 6.0)]
    assert limiter.wait_needed() > 0


def test_the_pr_is_found_in_github_pull_requests() -> None:
    pulls = [{"id": 1, "url": "https://github.com/other/repo/pull/3"},
             {"id": 2, "url": "https://github.com/acme/widgets/pull/12", "head_branch_name": "b"},
             {"id": 3, "title": "no url"}]
    assert pick_pull_request(pulls, "acme/widgets", GITHUB)["id"] == 2
    assert pick_pull_request(pulls, "someone/else", GITHUB) is None  # never a PR of another repository
    assert pick_pull_request(pulls, None, GITHUB)["id"] == 2
    assert pick_pull_request(None, "acme/widgets", GITHUB) is None
    status = status_from_response({"id": 1, "status": "complete", "result": "the plan", "github_pull_requests": pulls,
                                   "new_field": {"x": 1}}, mode="plan", repository="acme/widgets", github_url=GITHUB)
    assert (status.state, status.plan_text, status.pr_number) == ("finished", "the plan", 12)
    minimal = status_from_response({"id": 1, "status": "SOMETHING_NEW"}, mode="execute", repository=None,
                                   github_url=GITHUB)
    assert minimal.state == "running" and minimal.pr_number is None
    errored = status_from_response({"id": 1, "status": "ERROR", "summary": "out of credits"}, mode="execute",
                                   repository=None, github_url=GITHUB)
    assert errored.state == "failed"
    assert errored.error == "Codegen reports that the run ended with an error: out of credits"
    failed = status_from_response({"id": 1, "status": "FAILED"}, mode="execute", repository=None, github_url=GITHUB)
    assert failed.error == "Codegen reports that the run failed"  # in words, not its raw status


@pytest.mark.parametrize("url", [
    "javascript:alert(document.cookie)//github.com/acme/widgets/pull/7",
    "JavaScript:alert(1)",
    "data:text/html,<script>alert(1)</script>/acme/widgets/pull/7",
    "https://evil.example/acme/widgets/pull/7",
    "https://github.com.evil.example/acme/widgets/pull/7",
    "https://user@evil.example@github.com/acme/widgets/pull/7",
    "//evil.example/acme/widgets/pull/7",
    "https://github.com/acme/widgets/pull/7\n<script>",
    "java\tscript:alert(1)//https://github.com/acme/widgets/pull/7",
])
def test_a_hostile_pr_url_is_never_taken(url: str) -> None:
    """A Codegen answer naming a PR by a URL off the configured GitHub: the run takes no PR and keeps no
    link (it would be a link on the run and project pages)."""
    answer = {"id": 1, "status": "complete", "web_url": "javascript:alert(2)",
              "github_pull_requests": [{"id": 9, "number": 7, "url": url}]}
    for repository in ("acme/widgets", None):
        status = status_from_response(answer, mode="execute", repository=repository, github_url=GITHUB)
        assert (status.pr_number, status.pr_url, status.web_url) == (None, None, None), (url, repository)


def test_a_pr_url_on_a_github_enterprise_host_is_taken() -> None:
    pulls = [{"id": 9, "url": "https://ghe.example.com/acme/widgets/pull/7"}]
    status = status_from_response({"id": 1, "status": "complete", "github_pull_requests": pulls,
                                   "web_url": "https://codegen.example/trace/1"},
                                  mode="execute", repository="acme/widgets", github_url="https://ghe.example.com")
    assert (status.pr_number, status.pr_url, status.web_url) == (7, pulls[0]["url"], "https://codegen.example/trace/1")
    assert status_from_response({"id": 1, "status": "complete", "github_pull_requests": pulls}, mode="execute",
                                repository="acme/widgets", github_url=GITHUB).pr_url is None
