"""Tests of FakeGitHub itself, over real HTTP with gidgethub."""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import gidgethub
import jwt
import pytest
from gidgethub.aiohttp import GitHubAPI
from gidgethub.apps import get_installation_access_token, get_jwt

from tests import ghfixtures
from tests.fakes import github as fake_module
from tests.fakes.fixtures import APP_ID, generate_private_key_pem
from tests.fakes.github import FakeGitHub

HEAD = "a" * 40
BASE = "b" * 40


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def client(session: aiohttp.ClientSession, fake: FakeGitHub, token: str | None = None) -> GitHubAPI:
    return GitHubAPI(session, "codegenapp-tests", base_url=fake.api_url, oauth_token=token)


async def installation_token(
    session: aiohttp.ClientSession, fake: FakeGitHub, key: str, installation_id: int = 1
) -> str:
    response = await get_installation_access_token(
        client(session, fake), installation_id=str(installation_id), app_id=str(APP_ID), private_key=key
    )
    return str(response["token"])


@pytest.fixture
async def gh(fake_github: FakeGitHub, session: aiohttp.ClientSession, app_private_key: str) -> GitHubAPI:
    """A client holding an installation token for installation 1 (acme/widgets)."""
    fake_github.add_installation(1, "acme", repos=["widgets"])
    return client(session, fake_github, await installation_token(session, fake_github, app_private_key))


def manual_jwt(key: str, *, iss: Any = str(APP_ID), lifetime: int = 600) -> str:
    now = int(time.time()) - 30
    payload = json.dumps({"iat": now, "exp": now + lifetime, "iss": iss}).encode()
    return jwt.api_jws.encode(payload, key, algorithm="RS256")


# ----------------------------------------------------------------------------- app authentication


async def test_jwt_accepted_and_installation_token_issued(
    fake_github: FakeGitHub, session: aiohttp.ClientSession, app_private_key: str
) -> None:
    fake_github.add_installation(1, "acme", repos=["widgets"])
    response = await get_installation_access_token(
        client(session, fake_github), installation_id="1", app_id=str(APP_ID), private_key=app_private_key
    )
    assert response["token"].startswith("ghs_")
    assert response["repository_selection"] == "selected"
    expires = datetime.fromisoformat(response["expires_at"].replace("Z", "+00:00"))
    assert 3500 < (expires - datetime.now(UTC)).total_seconds() <= 3600
    assert fake_github.tokens[response["token"]]["installation_id"] == 1
    call = await fake_github.wait_for_call("POST", "/app/installations/*/access_tokens")
    assert call.status == 201 and call.installation_id == 1
    assert call.headers["authorization"].lower().startswith("bearer ")

    app = await client(session, fake_github).getitem(
        "/app", jwt=get_jwt(app_id=str(APP_ID), private_key=app_private_key)
    )
    assert (app["id"], app["slug"]) == (APP_ID, fake_github.app_slug)


@pytest.mark.parametrize(
    ("iss", "lifetime", "accepted"),
    [(APP_ID, 600, True), (str(APP_ID), 601, False), ("999", 600, False)],
    ids=["int-iss", "lifetime-over-600s", "other-app"],
)
async def test_jwt_claims_checked(
    fake_github: FakeGitHub,
    session: aiohttp.ClientSession,
    app_private_key: str,
    iss: Any,
    lifetime: int,
    accepted: bool,
) -> None:
    token = manual_jwt(app_private_key, iss=iss, lifetime=lifetime)
    if accepted:
        assert (await client(session, fake_github).getitem("/app", jwt=token))["id"] == APP_ID
        return
    with pytest.raises(gidgethub.BadRequest) as raised:
        await client(session, fake_github).getitem("/app", jwt=token)
    assert raised.value.status_code == 401
    assert len(fake_github.take_errors()) == 1


async def test_jwt_signed_with_another_key_is_refused(fake_github: FakeGitHub, session: aiohttp.ClientSession) -> None:
    fake_github.add_installation(1, "acme")
    with pytest.raises(gidgethub.BadRequest) as raised:
        await installation_token(session, fake_github, generate_private_key_pem("another app"))
    assert raised.value.status_code == 401
    assert "could not be decoded" in str(raised.value)
    assert fake_github.tokens == {}
    [error] = fake_github.take_errors()
    assert "JWT rejected" in error


async def test_installation_token_required_and_scoped(
    fake_github: FakeGitHub, session: aiohttp.ClientSession, app_private_key: str, gh: GitHubAPI
) -> None:
    assert (await gh.getitem("/repos/acme/widgets"))["full_name"] == "acme/widgets"
    assert fake_github.calls[-1].installation_id == 1

    fake_github.add_installation(2, "other", repos=["thing"])
    other = client(session, fake_github, await installation_token(session, fake_github, app_private_key, 2))
    app_jwt = get_jwt(app_id=str(APP_ID), private_key=app_private_key)
    attempts = [
        (client(session, fake_github).getitem("/repos/acme/widgets"), 401),  # no token
        (client(session, fake_github, "ghs_unknown").getitem("/repos/acme/widgets"), 401),
        (client(session, fake_github).getitem("/repos/acme/widgets", jwt=app_jwt), 403),
        (other.getitem("/repos/acme/widgets"), 404),  # another installation's repository
        (gh.getitem("/app"), 401),  # installation token where the JWT is needed
    ]
    for request, status in attempts:
        with pytest.raises(gidgethub.BadRequest) as raised:
            await request
        assert raised.value.status_code == status
    fake_github.expire_tokens(1)
    with pytest.raises(gidgethub.BadRequest, match="Bad credentials"):
        await gh.getitem("/repos/acme/widgets")
    errors = fake_github.take_errors()
    assert len(errors) == 6 and "expired" in errors[-1]
    fake_github.assert_clean()


# ----------------------------------------------------------------------------- validation


async def test_invalid_check_run_body_is_422_and_reported(fake_github: FakeGitHub, gh: GitHubAPI) -> None:
    ghfixtures.require_fixtures()  # bodies are checked against GitHub's REST description
    url = "/repos/acme/widgets/check-runs"
    with pytest.raises(gidgethub.BadRequest) as raised:
        await gh.post(url, data={"name": "validate", "head_sha": HEAD, "status": "bogus"})
    assert raised.value.status_code == 422
    assert "bogus" in str(raised.value)
    with pytest.raises(gidgethub.BadRequest) as raised:
        await gh.post(url, data={"name": "validate", "head_sha": HEAD, "status": "completed"})
    assert raised.value.status_code == 422
    errors = fake_github.take_errors()
    assert len(errors) == 2 and "'bogus' is not one of" in errors[0] and "conclusion" in errors[1]
    assert fake_github.check_runs == {}


async def test_odd_requests_never_500(fake_github: FakeGitHub, session: aiohttp.ClientSession, gh: GitHubAPI) -> None:
    ghfixtures.require_fixtures()  # answers are shaped from GitHub's REST description
    headers = {"Authorization": f"token {gh.oauth_token}", "User-Agent": "tests"}
    samples = {"owner": "acme", "repo": "widgets", "path": "a/b.txt", "ref": "heads/main", "branch": "main"}
    for operation in ghfixtures.REST_OPERATIONS:
        method, template = operation.split(" ", 1)
        path = template
        for name in [part[1:-1] for part in template.split("/") if part.startswith("{")]:
            path = path.replace(f"{{{name}}}", samples.get(name, "7" if name.endswith(("_id", "_number")) else "x"))
        for data in (None, b"{}", b"not json", b"[1, 2]"):
            async with session.request(method, fake_github.api_url + path, headers=headers, data=data) as response:
                assert response.status != 500, (operation, data, await response.text())
    async with session.get(fake_github.api_url + "/repos/acme/widgets/pulls/abc", headers=headers) as response:
        assert response.status == 404
    assert not [c for c in fake_github.calls if c.status == 500]
    fake_github.take_errors()


async def test_unknown_operation_is_404_and_reported(fake_github: FakeGitHub, gh: GitHubAPI) -> None:
    with pytest.raises(gidgethub.BadRequest) as raised:
        await gh.getitem("/repos/acme/widgets/frobnicate")
    assert raised.value.status_code == 404
    with pytest.raises(AssertionError, match="no operation"):
        fake_github.assert_clean()
    fake_github.take_errors()


async def test_handler_crash_is_500_and_reported(
    fake_github: FakeGitHub, gh: GitHubAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(request: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(fake_github, "_get_repo", crash)
    with pytest.raises(gidgethub.GitHubBroken):
        await gh.getitem("/repos/acme/widgets")
    [error] = fake_github.take_errors()
    assert "RuntimeError('boom')" in error


# ----------------------------------------------------------------------------- faults, waiting, rate limits


async def test_fail_next_takes_precedence_then_recovers(fake_github: FakeGitHub, gh: GitHubAPI) -> None:
    fake_github.fail_next("POST", "/repos/*/*/check-runs", status=502, times=2)
    body = {"name": "validate", "head_sha": HEAD}
    for _ in range(2):
        with pytest.raises(gidgethub.GitHubBroken) as raised:
            await gh.post("/repos/acme/widgets/check-runs", data=body)
        assert raised.value.status_code == 502
    created = await gh.post("/repos/acme/widgets/check-runs", data=body)
    assert [c.injected for c in fake_github.calls_to("POST", "/repos/*/*/check-runs")] == [True, True, False]
    assert list(fake_github.check_runs) == [created["id"]]


async def test_rate_limit_next_is_a_secondary_rate_limit(fake_github: FakeGitHub, gh: GitHubAPI) -> None:
    fake_github.rate_limit_next("GET", "/repos/*/*", retry_after=7)
    with pytest.raises(gidgethub.BadRequest) as raised:
        await gh.getitem("/repos/acme/widgets")
    assert not isinstance(raised.value, gidgethub.RateLimitExceeded)
    assert raised.value.status_code == 403
    assert "secondary rate limit" in str(raised.value)
    assert raised.value.headers["retry-after"] == "7"
    assert (await gh.getitem("/repos/acme/widgets"))["name"] == "widgets"


async def test_wait_for_call(fake_github: FakeGitHub, gh: GitHubAPI) -> None:
    async def comment_twice() -> None:
        for text in ("one", "two"):
            await gh.post("/repos/acme/widgets/issues/3/comments", data={"body": text})

    task = asyncio.create_task(comment_twice())
    second = await fake_github.wait_for_call("POST", "/repos/*/*/issues/*/comments", count=2)
    assert (second.json, second.status) == ({"body": "two"}, 201)
    await task
    with pytest.raises(TimeoutError, match="calls seen:\n  POST /app/installations/1/access_tokens -> 201"):
        await fake_github.wait_for_call("DELETE", "/**", timeout=0.05)


async def test_rate_limit_headers(fake_github: FakeGitHub, session: aiohttp.ClientSession, gh: GitHubAPI) -> None:
    await gh.getitem("/repos/acme/widgets")
    assert gh.rate_limit is not None
    first = gh.rate_limit.remaining
    await gh.getitem("/repos/acme/widgets")
    assert gh.rate_limit.remaining == first - 1
    headers = {"Authorization": f"token {gh.oauth_token}", "User-Agent": "tests"}
    async with session.get(fake_github.api_url + "/repos/acme/widgets", headers=headers) as response:
        assert response.headers["x-ratelimit-limit"] == "5000"
        assert response.headers["x-ratelimit-remaining"] == str(first - 2)
        assert response.headers["x-ratelimit-used"] == str(5000 - first + 2)
        assert response.headers["x-ratelimit-resource"] == "core"
        assert int(response.headers["x-ratelimit-reset"]) > time.time()
    assert (await gh.getitem("/rate_limit"))["resources"]["core"]["remaining"] == first - 2
    fake_github.rate_limits[str(gh.oauth_token)].remaining = 0
    with pytest.raises(gidgethub.RateLimitExceeded):
        await gh.getitem("/repos/acme/widgets")


# ----------------------------------------------------------------------------- stateful endpoints


async def test_check_run_lifecycle(fake_github: FakeGitHub, gh: GitHubAPI) -> None:
    fake_github.add_pull("acme/widgets", 5, head_sha=HEAD, base_sha=BASE)
    note = {"path": "a.py", "start_line": 1, "end_line": 1, "annotation_level": "warning", "message": "m"}
    created = await gh.post(
        "/repos/acme/widgets/check-runs",
        data={
            "name": "validate",
            "head_sha": HEAD,
            "status": "in_progress",
            "output": {"title": "t", "summary": "s", "annotations": [note, note]},
        },
    )
    assert (created["status"], created["conclusion"], created["app"]["id"]) == ("in_progress", None, APP_ID)
    assert [p["number"] for p in created["pull_requests"]] == [5]
    updated = await gh.patch(
        f"/repos/acme/widgets/check-runs/{created['id']}",
        data={"conclusion": "success", "output": {"title": "done", "summary": "ok", "annotations": [note]}},
    )
    assert (updated["status"], updated["conclusion"], updated["output"]["title"]) == ("completed", "success", "done")
    assert updated["completed_at"] and updated["output"]["annotations_count"] == 3 and "annotations" not in updated
    assert len(fake_github.check_runs[created["id"]]["annotations"]) == 3
    again = await gh.post("/repos/acme/widgets/check-runs", data={"name": "validate", "head_sha": HEAD})
    assert again["id"] > created["id"]
    latest = await gh.getitem("/repos/acme/widgets/commits/feature/check-runs")
    assert [r["id"] for r in latest["check_runs"]] == [again["id"]]
    every = await gh.getitem("/repos/acme/widgets/commits/{ref}/check-runs?filter=all", url_vars={"ref": HEAD})
    assert every["total_count"] == 2
    assert (await gh.getitem(f"/repos/acme/widgets/check-runs/{created['id']}"))["conclusion"] == "success"


async def test_comments_reactions_and_pagination(fake_github: FakeGitHub, gh: GitHubAPI) -> None:
    for n in range(34):
        fake_github.add_comment("acme/widgets", 9, f"user comment {n}")
    mine = await gh.post("/repos/acme/widgets/issues/9/comments", data={"body": "bot"})
    assert mine["user"]["type"] == "Bot" and mine["performed_via_github_app"]["id"] == APP_ID
    listed = [c async for c in gh.getiter("/repos/acme/widgets/issues/9/comments")]
    assert len(listed) == 35 and listed[-1]["id"] == mine["id"]
    assert len(fake_github.calls_to("GET", "/repos/*/*/issues/9/comments")) == 2
    edited = await gh.patch(f"/repos/acme/widgets/issues/comments/{mine['id']}", data={"body": "edited"})
    assert fake_github.comments[mine["id"]]["body"] == edited["body"] == "edited"
    reaction_url = f"/repos/acme/widgets/issues/comments/{listed[0]['id']}/reactions"
    reaction = await gh.post(reaction_url, data={"content": "eyes"})
    assert reaction["content"] == "eyes"
    assert (await gh.post(reaction_url, data={"content": "eyes"}))["id"] == reaction["id"]
    assert [(r["comment_id"], r["content"]) for r in fake_github.reactions] == [(listed[0]["id"], "eyes")]
    await gh.delete(f"/repos/acme/widgets/issues/comments/{mine['id']}")
    assert mine["id"] not in fake_github.comments


async def test_merge(fake_github: FakeGitHub, gh: GitHubAPI) -> None:
    pull = fake_github.add_pull("acme/widgets", 7, head_sha=HEAD, base_sha=BASE, mergeable=False)
    url = "/repos/acme/widgets/pulls/7/merge"
    with pytest.raises(gidgethub.BadRequest) as raised:
        await gh.put(url, data={"sha": HEAD})
    assert raised.value.status_code == 405
    pull["mergeable"] = True
    with pytest.raises(gidgethub.BadRequest, match="Head branch was modified") as raised:
        await gh.put(url, data={"sha": BASE})
    assert raised.value.status_code == 409
    merged = await gh.put(url, data={"sha": HEAD, "merge_method": "squash"})
    assert merged["merged"] is True and len(merged["sha"]) == 40
    got = await gh.getitem("/repos/acme/widgets/pulls/7")
    assert (got["state"], got["merged"], got["merge_commit_sha"]) == ("closed", True, merged["sha"])
    assert [(m["number"], m["merge_method"], m["sha"]) for m in fake_github.merges] == [(7, "squash", merged["sha"])]
    assert [p["number"] async for p in gh.getiter("/repos/acme/widgets/pulls?state=closed")] == [7]


async def test_pull_files_and_create(fake_github: FakeGitHub, gh: GitHubAPI) -> None:
    fake_github.add_pull("acme/widgets", 1, head_sha=HEAD, base_sha=BASE, head_ref="topic")
    fake_github.set_pull_files("acme/widgets", 1, ["a.py", {"filename": "b.md", "status": "added", "additions": 3}])
    files = await gh.getitem("/repos/acme/widgets/pulls/1/files")
    assert [(f["filename"], f["status"], f["changes"]) for f in files] == [
        ("a.py", "modified", 1),
        ("b.md", "added", 3),
    ]
    fake_github.set_branch("acme/widgets", "fix", "c" * 40)
    created = await gh.post("/repos/acme/widgets/pulls", data={"title": "Fix", "head": "fix", "base": "main"})
    assert (created["number"], created["head"]["sha"], created["user"]["type"]) == (2, "c" * 40, "Bot")


async def test_contents_permissions_and_branches(fake_github: FakeGitHub, gh: GitHubAPI) -> None:
    fake_github.set_file("acme/widgets", "main", ".codegen/config.yml", b"checks: [lint]\n" * 10)
    fake_github.set_permission("acme/widgets", "alice", "maintain")
    fake_github.add_repo("acme/other", installation_id=1)
    fake_github.set_permission("acme/other", "bob", "write")

    got = await gh.getitem("/repos/acme/widgets/contents/{+path}", url_vars={"path": ".codegen/config.yml"})
    assert got["encoding"] == "base64" and "\n" in got["content"]
    assert base64.b64decode(got["content"]) == b"checks: [lint]\n" * 10
    raw = await gh.getitem("/repos/acme/widgets/contents/.codegen/config.yml", accept="application/vnd.github.raw")
    assert raw == "checks: [lint]\n" * 10
    listing = await gh.getitem("/repos/acme/widgets/contents/.codegen?ref=main")
    assert [(e["name"], e["type"]) for e in listing] == [("config.yml", "file")]
    with pytest.raises(gidgethub.BadRequest) as raised:
        await gh.getitem("/repos/acme/widgets/contents/missing.txt")
    assert raised.value.status_code == 404

    alice = await gh.getitem("/repos/acme/widgets/collaborators/alice/permission")
    assert (alice["permission"], alice["role_name"]) == ("write", "maintain")
    bob = await gh.getitem("/repos/acme/widgets/collaborators/bob/permission")
    assert bob["permission"] == "none"
    with pytest.raises(gidgethub.BadRequest) as raised:
        await gh.getitem("/repos/acme/widgets/collaborators/nobody/permission")
    assert raised.value.status_code == 404

    with pytest.raises(gidgethub.BadRequest, match="Branch not protected"):
        await gh.getitem("/repos/acme/widgets/branches/main/protection")
    fake_github.set_branch_protection("acme/widgets", "main", {})
    assert "url" in await gh.getitem("/repos/acme/widgets/branches/main/protection")
    assert (await gh.getitem("/repos/acme/widgets/branches/main"))["protected"] is True
    assert fake_github.take_errors() == []


async def test_works_without_rest_description(
    session: aiohttp.ClientSession, app_private_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fake_module, "find_rest_spec", lambda: None)
    async with FakeGitHub(app_id=APP_ID, private_key_pem=app_private_key) as fake:
        assert fake.spec is None
        fake.add_installation(1, "acme", repos=["widgets"])
        gh = client(session, fake, await installation_token(session, fake, app_private_key))
        run = await gh.post("/repos/acme/widgets/check-runs", data={"name": "validate", "head_sha": HEAD})
        assert run["id"] in fake.check_runs
        fake.assert_clean()


# ----------------------------------------------------------------------------- fixture data and tooling


def load_fetch_tool() -> Any:
    path = ghfixtures.PROJECT_ROOT / "tools" / "fetch_github_fixtures.py"
    spec = importlib.util.spec_from_file_location("fetch_github_fixtures", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_operation_list_is_the_subsets() -> None:
    spec = json.loads(ghfixtures.rest_spec_path().read_text(encoding="utf-8"))
    assert tuple(spec["info"]["x-subset"]["operations"]) == ghfixtures.REST_OPERATIONS


def test_webhook_fixtures() -> None:
    root = ghfixtures.require_fixtures()
    examples = ghfixtures.webhook_examples()
    assert ("pull_request", "opened", root / "webhooks/pull_request/opened.json") in examples
    assert ghfixtures.load_webhook("pull_request", "opened")["action"] == "opened"
    assert "zen" in ghfixtures.load_webhook("ping")
    assert ("check_run", "completed") in {(e, n) for e, n, _ in ghfixtures.form_encoded_examples()}


def test_fetch_tool_without_npm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tool = load_fetch_tool()
    monkeypatch.setattr(tool.shutil, "which", lambda name: None)
    assert tool.main(["--dest", str(tmp_path / "cache")]) == 0
    assert "npm is not installed" in capsys.readouterr().out
    assert not (tmp_path / "cache").exists()
