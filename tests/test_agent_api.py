"""The agent-run API over real HTTP: personal API tokens and who may do what, validation of what is
sent, and the project's agent settings (no agent runs to completion here: see test_agent_runs_e2e.py)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.agent_support import make_repository, record_project
from tests.api_support import api_token_for


async def call(bot, method: str, path: str, body: Any = None, *, token: str | None = None) -> tuple[int, Any]:
    token = token or getattr(bot, "token", None)
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with bot.webhooks.session.request(method, bot.url + path, json=body, headers=headers) as response:
        return response.status, await response.json()


@pytest.fixture
async def api_bot(start_bot, fake_github):
    make_repository(fake_github, config="validate: []\n")
    bot = await start_bot()
    bot.project = await record_project(bot, fake_github)
    bot.token = await api_token_for(bot.store, fake_github, "alice", role="admin")
    return bot


async def test_a_missing_or_wrong_token_is_refused(api_bot) -> None:
    async with api_bot.webhooks.session.get(f"{api_bot.url}/api/v1/projects/{api_bot.project.id}/runs") as response:
        assert response.status == 401 and "personal API token" in (await response.json())["error"]
    for token in ("wrong", "cga_wrong", api_bot.token + "x"):
        status, body = await call(api_bot, "GET", f"/api/v1/projects/{api_bot.project.id}/runs", token=token)
        assert status == 401 and "personal API token" in body["error"]
    async with api_bot.webhooks.session.get(f"{api_bot.url}/api/v1/runs/{'0' * 32}",
                                            headers={"Authorization": f"Basic {api_bot.token}"}) as response:
        assert response.status == 401 and response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_who_may_do_what(api_bot, fake_github) -> None:
    project = api_bot.project
    await api_bot.store.agent_runs.update_project_settings(project.id, {"agent_backend": "local",
                                                                        "agent_command": "false"})
    await api_bot.services.worker.stop()  # keep runs pending
    reader = await api_token_for(api_bot.store, fake_github, "rita", role="read")
    writer = await api_token_for(api_bot.store, fake_github, "wes", role="write")
    outsider = await api_token_for(api_bot.store, fake_github, "otto", role="admin", installation_ids=[])
    settings = f"/api/v1/projects/{project.id}/agent-settings"
    start = f"/api/v1/projects/{project.id}/agent-run"
    # someone who cannot see the project: as if it did not exist
    for method, path in (("GET", settings), ("POST", start), ("GET", f"/api/v1/projects/{project.id}")):
        status, body = await call(api_bot, method, path, {"target_text": "x"}, token=outsider)
        assert status == 404 and body["error"] == "no such project", (method, path)
    # read access: read, not act
    assert (await call(api_bot, "GET", settings, token=reader))[0] == 200
    status, body = await call(api_bot, "POST", start, {"target_text": "x"}, token=reader)
    assert status == 403 and "write access" in body["error"]
    # write access: start and decide runs, not change settings
    status, run = await call(api_bot, "POST", start, {"target_text": "Do it"}, token=writer)
    assert status == 201 and run["requested_by"] == "wes"
    assert (await call(api_bot, "GET", f"/api/v1/runs/{run['id']}", token=reader))[0] == 200
    assert (await call(api_bot, "GET", f"/api/v1/runs/{run['id']}", token=outsider))[0] == 404
    assert (await call(api_bot, "POST", f"/api/v1/runs/{run['id']}/cancel", token=reader))[0] == 403
    status, body = await call(api_bot, "PATCH", settings, {"max_fix_attempts": 1}, token=writer)
    assert status == 403 and "admin or maintain" in body["error"]
    status, cancelled = await call(api_bot, "POST", f"/api/v1/runs/{run['id']}/cancel", token=writer)
    assert status == 200 and cancelled["reason"] == "cancelled by wes"


async def test_unknown_projects_and_runs_are_404(api_bot) -> None:
    assert (await call(api_bot, "GET", f"/api/v1/runs/{'a' * 32}"))[0] == 404
    assert (await call(api_bot, "POST", f"/api/v1/runs/{'a' * 32}/cancel"))[0] == 404
    status, body = await call(api_bot, "POST", f"/api/v1/projects/{'b' * 32}/agent-run", {"target_text": "x"})
    assert status == 404 and body["error"] == "no such project"


async def test_what_is_sent_is_checked(api_bot) -> None:
    path = f"/api/v1/projects/{api_bot.project.id}/agent-run"
    for body in ({}, {"target_text": "  "}, {"target_text": 3}, ["x"]):
        status, answer = await call(api_bot, "POST", path, body)
        assert status == 400, body
    async with api_bot.webhooks.session.post(api_bot.url + path, data=b"{nope",
                                             headers={"Authorization": f"Bearer {api_bot.token}"}) as response:
        assert response.status == 400
    status, answer = await call(api_bot, "GET", f"/api/v1/projects/{api_bot.project.id}/runs?limit=x")
    assert status == 400


async def test_no_backend_no_run_and_the_settings_say_why(api_bot) -> None:
    project = api_bot.project
    status, body = await call(api_bot, "POST", f"/api/v1/projects/{project.id}/agent-run", {"target_text": "Do it"})
    assert status == 409 and "no agent backend is configured" in body["error"]
    assert not await api_bot.store.agent_runs.for_project(project.id)

    settings_path = f"/api/v1/projects/{project.id}/agent-settings"
    status, settings = await call(api_bot, "GET", settings_path)
    assert status == 200 and settings["effective_backend"] == "none" and settings["max_fix_attempts"] == 3
    status, problem = await call(api_bot, "PATCH", settings_path, {"agent_backend": "local", "max_fix_attempts": -1,
                                                                   "colour": "blue"})
    assert status == 400 and "max_fix_attempts" in problem["error"] and "'colour'" in problem["error"]
    status, settings = await call(api_bot, "PATCH", settings_path, {"agent_backend": "local"})
    assert settings["problem"] == "the local agent backend needs a command in the project's settings"
    status, settings = await call(api_bot, "PATCH", settings_path, {
        "agent_command": "agent --yes", "max_fix_attempts": 5, "auto_confirm_plans": True,
        "repository_rules": "No new dependencies."})
    assert status == 200 and settings["problem"] is None and settings["agent_command"] == "agent --yes"
    stored = await api_bot.store.projects.get_project(project.id)
    assert (stored.agent_backend, stored.max_fix_attempts, stored.auto_confirm_plans) == ("local", 5, True)
    assert api_bot.services.agent_runs.availability.configured(stored)


async def test_a_new_run_is_201_and_decisions_must_fit_its_status(api_bot, fake_github) -> None:
    project = api_bot.project
    await api_bot.store.agent_runs.update_project_settings(project.id, {"agent_backend": "local",
                                                                        "agent_command": "false"})
    worker = api_bot.services.worker
    await worker.stop()  # keep the run pending: nothing advances it in this test
    status, run = await call(api_bot, "POST", f"/api/v1/projects/{project.id}/agent-run",
                             {"target_text": "Add a health endpoint"})
    assert status == 201 and run["status"] == "pending" and run["backend"] == "local"
    assert run["max_fix_attempts"] == 3 and run["source"] == "api" and run["requested_by"] == "alice"
    status, answer = await call(api_bot, "POST", f"/api/v1/runs/{run['id']}/confirm")
    assert status == 409 and "not waiting for its plan" in answer["error"]
    status, listing = await call(api_bot, "GET", f"/api/v1/projects/{project.id}/runs")
    assert [r["id"] for r in listing["runs"]] == [run["id"]]
    status, cancelled = await call(api_bot, "POST", f"/api/v1/runs/{run['id']}/cancel")
    assert status == 200 and cancelled["status"] == "cancelled" and cancelled["reason"] == "cancelled by alice"
    audit = [(e.action, e.actor) for e in await api_bot.store.audit.list(project_id=project.id)]
    assert ("agent.run.started", "alice") in audit and ("agent.run.cancelled", "alice") in audit
