"""The JSON API of agent runs (the dashboard and scripts use it).

Every route needs `Authorization: Bearer <API_TOKEN>`; without API_TOKEN set the API answers 503
saying so (the dashboard's login replaces this later). Errors are `{"error": "..."}`.

| route | what |
| --- | --- |
| `POST /api/v1/projects/{id}/agent-run` `{"target_text": ...}` | start a run: 201 with the run |
| `GET /api/v1/projects/{id}/runs[?limit=N]` | the project's runs, newest first |
| `GET /api/v1/projects/{id}/agent-settings`, `PATCH` the same | the project's agent settings |
| `GET /api/v1/runs/{id}` | one run (its plan, PR, fix attempts, reason) |
| `POST /api/v1/runs/{id}/confirm`, `/reject`, `/cancel` | decide on the plan; stop the run (409 when it does not apply) |
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from bot.models import Project
from bot.services import SERVICES, Services
from pipeline.agent_runs import AgentRunConflict, AgentRunRefused, AgentRunService, run_json
from pipeline.agents.backend import BACKENDS, chosen_backend

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
API_ACTOR = "api"
MAX_LIST = 200
_ID = "{id:[0-9a-f]{32}}"


def add_routes(app: web.Application) -> None:
    app.router.add_post(f"/api/v1/projects/{_ID}/agent-run", _authorized(start_run))
    app.router.add_get(f"/api/v1/projects/{_ID}/runs", _authorized(list_runs))
    app.router.add_get(f"/api/v1/projects/{_ID}/agent-settings", _authorized(get_agent_settings))
    app.router.add_patch(f"/api/v1/projects/{_ID}/agent-settings", _authorized(patch_agent_settings))
    app.router.add_get(f"/api/v1/runs/{_ID}", _authorized(get_run))
    for verb in ("confirm", "reject", "cancel"):
        app.router.add_post(f"/api/v1/runs/{_ID}/{verb}", _authorized(decide(verb)))


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


def _authorized(handler: Handler) -> Handler:
    async def checked(request: web.Request) -> web.StreamResponse:
        services: Services = request.app[SERVICES]
        token = services.settings.api_token
        if not token:
            return _error(503, "the API is off: set API_TOKEN and send it as `Authorization: Bearer <API_TOKEN>`")
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            return _error(401, "missing or wrong bearer token", **{"WWW-Authenticate": 'Bearer realm="codegenapp"'})
        return await handler(request)

    return checked


def _service(request: web.Request) -> AgentRunService:
    services: Services = request.app[SERVICES]
    if services.agent_runs is None:
        raise web.HTTPServiceUnavailable(text=json.dumps({"error": "agent runs are not set up"}),
                                         content_type="application/json")
    return services.agent_runs


async def _project(request: web.Request) -> Project:
    project = await request.app[SERVICES].store.projects.get_project(request.match_info["id"])
    if project is None:
        raise web.HTTPNotFound(text=json.dumps({"error": "no such project"}), content_type="application/json")
    return project


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise web.HTTPBadRequest(text=json.dumps({"error": "the body must be a JSON object"}),
                                 content_type="application/json") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text=json.dumps({"error": "the body must be a JSON object"}),
                                 content_type="application/json")
    return body


async def start_run(request: web.Request) -> web.Response:
    service = _service(request)
    project = await _project(request)
    body = await _json_body(request)
    goal = body.get("target_text")
    if not isinstance(goal, str) or not goal.strip():
        return _error(400, "target_text must be a non-empty string: what the agent should do")
    try:
        run = await service.start(project, goal, source="api", requested_by=API_ACTOR)
    except AgentRunRefused as exc:
        return _error(409, str(exc))
    return web.json_response(run_json(run), status=201, headers={"Location": f"/api/v1/runs/{run.id}"})


async def list_runs(request: web.Request) -> web.Response:
    service = _service(request)
    project = await _project(request)
    try:
        limit = min(MAX_LIST, max(1, int(request.query.get("limit", "50"))))
    except ValueError:
        return _error(400, "limit must be a whole number")
    runs = await service.store.for_project(project.id, limit=limit)
    return web.json_response({"runs": [run_json(run) for run in runs]})


async def get_run(request: web.Request) -> web.Response:
    run = await _service(request).store.get(request.match_info["id"])
    if run is None:
        return _error(404, "no such agent run")
    return web.json_response(run_json(run))


def decide(verb: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        service = _service(request)
        action = {"confirm": service.confirm, "reject": service.reject, "cancel": service.cancel}[verb]
        try:
            run = await action(request.match_info["id"], by=API_ACTOR)
        except LookupError:
            return _error(404, "no such agent run")
        except AgentRunConflict as exc:
            return _error(409, str(exc))
        return web.json_response(run_json(run))

    handler.__name__ = f"{verb}_run"
    return handler


def _settings_json(request: web.Request, project: Project) -> dict[str, Any]:
    services: Services = request.app[SERVICES]
    service = services.agent_runs
    return {"project_id": project.id, "agent_backend": project.agent_backend,
            "effective_backend": chosen_backend(project, services.settings),
            "agent_command": project.agent_command, "max_fix_attempts": project.max_fix_attempts,
            "auto_confirm_plans": project.auto_confirm_plans, "repository_rules": project.repository_rules,
            "planning_statement": project.planning_statement,
            "problem": service.problem(project) if service is not None else "agent runs are not set up"}


async def get_agent_settings(request: web.Request) -> web.Response:
    return web.json_response(_settings_json(request, await _project(request)))


async def patch_agent_settings(request: web.Request) -> web.Response:
    project = await _project(request)
    body = await _json_body(request)
    values: dict[str, Any] = {}
    problems: list[str] = []
    for key, value in body.items():
        if key == "agent_backend":
            if value is not None and value not in BACKENDS:
                problems.append(f"agent_backend must be one of {', '.join(BACKENDS)} or null")
            values[key] = value
        elif key == "max_fix_attempts":
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 20:
                problems.append("max_fix_attempts must be a whole number from 0 to 20")
            values[key] = value
        elif key == "auto_confirm_plans":
            if not isinstance(value, bool):
                problems.append("auto_confirm_plans must be true or false")
            values[key] = value
        elif key in ("agent_command", "repository_rules", "planning_statement"):
            if not isinstance(value, str) or len(value) > 20_000:
                problems.append(f"{key} must be a string (at most 20000 characters)")
            values[key] = value
        else:
            problems.append(f"unknown setting {key!r}")
    if problems:
        return _error(400, "; ".join(problems))
    services: Services = request.app[SERVICES]
    updated = await services.store.agent_runs.update_project_settings(project.id, values)
    if updated is None:
        return _error(404, "no such project")
    await services.store.audit.record("project.agent_settings", actor=API_ACTOR, project_id=project.id,
                                      installation_id=project.installation_id,
                                      details={k: v for k, v in values.items() if k != "agent_command"}
                                      | ({"agent_command": "(changed)"} if "agent_command" in values else {}))
    return web.json_response(_settings_json(request, updated))
