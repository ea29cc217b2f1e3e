"""The JSON API under `/api/v1` (the dashboard's own pages, scripts and CI use it); described by the
OpenAPI 3.0 document served at `GET /api/v1/openapi.json` (dashboard/openapi.py).

**Authentication** is the dashboard's (dashboard/auth.py): the session cookie (state-changing requests
then carry the session's CSRF token as `X-CSRF-Token`), or `Authorization: Bearer cga_...`, a personal API
token created on the account page (no CSRF token needed). Without either: 401.

**Who may do what**, by the user's permissions on the repository as GitHub lists them for the user:
seeing a project (anything they can see) lets them read it, its runs and validations (404 otherwise, as
for a project that does not exist); starting, confirming, rejecting and cancelling agent runs and
re-running validations need write access (`push`, `maintain` or `admin`; 403 otherwise); changing
settings needs `admin` or `maintain`, like the settings page; replaying a delivery needs `admin`. The audit
log's actor is the user's login.

Projects come from the App's installations: `POST /api/v1/projects` and `DELETE /api/v1/projects/{id}`
are no operations and answer 405 saying so (install the App on, or remove it from, the repository on
GitHub; an uninstalled repository's project is archived). Every
error under /api/v1 is `{"error": "..."}` (`api_errors`: the router's 404 and 405 too), and a client past
API_REQUESTS_PER_MINUTE gets 429 with `Retry-After` (dashboard/limits.py).

| route | what |
| --- | --- |
| `GET /api/v1/projects` | the projects the user can see |
| `GET /api/v1/projects/{id}`, `PUT` the same | a project and its settings; PUT changes the settings sent |
| `POST /api/v1/projects/{id}/agent-run` `{"target_text": ...}` | start a run: 201 with the run |
| `GET /api/v1/projects/{id}/runs[?limit=N]` | the project's runs, newest first (N from 1 to 200, default 50) |
| `GET /api/v1/projects/{id}/agent-settings`, `PATCH` the same | the project's agent settings |
| `GET /api/v1/projects/{id}/queue` | each base branch's merge queue: its PRs in order, the candidates under test |
| `POST /api/v1/projects/{id}/queue/{number}/dequeue` | take PR `number` out of its merge queue, as `/dequeue` does |
| `GET /api/v1/runs/{id}` | one run (its plan, PR, fix attempts, reason) |
| `POST /api/v1/runs/{id}/confirm`, `/reject`, `/cancel` | decide on the plan; stop the run (409 when it does not apply) |
| `GET /api/v1/validation/{id}` | one validation: status, conclusion, steps |
| `POST /api/v1/validation/{id}/retry` | validate the PR's current head again: 202 with the new validation |
| `POST /api/v1/deliveries/{id}/replay` | handle a stored delivery again (admin of its repository): 202 with the new job |
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

from aiohttp import web

from bot.models import SUBJECT_PULL_REQUEST, AgentRun, Project, ValidationState
from bot.services import SERVICES, Services
from dashboard import auth
from dashboard.merge_queue import branch_queues, dequeue_pr, queue_settings
from dashboard.openapi import document
from dashboard.project_settings import LOCAL_NEEDS_COMMAND, parse_settings, refuse_file_keys, with_queue_object
from dashboard.queue_view import branch_json
from pipeline.agents.service import AgentRunConflict, AgentRunRefused, AgentRunService, run_json
from pipeline.agents.backend import BACKENDS, chosen_backend
from pipeline.deliveries.replay import ReplayRefused, UnknownDelivery
from pipeline.repo_config.settings_sources import queue_keys_of
from pipeline.validation.service import NotRevalidated

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_LIST = 200
STEP_FIELDS = ("stage", "name", "status", "exit_code", "detail", "duration_seconds", "output_tail")
_ID = "{id:[0-9a-f]{32}}"
_DELIVERY_ID = "{id:[0-9A-Za-z._-]+}"  # an X-GitHub-Delivery (a GUID); at most 64 characters (openapi.DELIVERY_ID)
_PROJECTS = re.compile(r"/api/v1/projects(/[0-9a-f]{32})?")
# The project settings PUT /api/v1/projects/{id} takes: name -> JSON type(s)
PROJECT_SETTINGS: dict[str, tuple[type, ...]] = {
    "repository_rules": (str,), "planning_statement": (str,), "agent_command": (str,),
    "setup_commands": (list,), "validate_commands": (list,), "auto_merge_enabled": (bool,),
    "auto_confirm_plans": (bool,), "agent_backend": (str, type(None)), "max_fix_attempts": (int,),
    "merge_queue": (dict,)}
# The sub-keys of `merge_queue` it takes (each may be null: not set, the default applies)
QUEUE_SETTINGS: dict[str, tuple[type, ...]] = {"enabled": (bool,), "method": (str,), "batch_size": (int,),
                                               "max_parallel": (int,), "flaky_retries": (int,)}


def add_routes(app: web.Application) -> None:
    app.middlewares.insert(0, api_errors)  # outermost: it sees the other middlewares' refusals too
    app.router.add_get("/api/v1/openapi.json", openapi_json)
    app.router.add_get("/api/v1/projects", _api(list_projects))
    app.router.add_get(f"/api/v1/projects/{_ID}", _api(get_project))
    app.router.add_put(f"/api/v1/projects/{_ID}", _api(put_project))
    app.router.add_post(f"/api/v1/projects/{_ID}/agent-run", _api(start_run))
    app.router.add_get(f"/api/v1/projects/{_ID}/runs", _api(list_runs))
    app.router.add_get(f"/api/v1/projects/{_ID}/queue", _api(get_queue))
    app.router.add_post(f"/api/v1/projects/{_ID}/queue/{{number:[0-9]{{1,9}}}}/dequeue", _api(dequeue))
    app.router.add_get(f"/api/v1/projects/{_ID}/agent-settings", _api(get_agent_settings))
    app.router.add_patch(f"/api/v1/projects/{_ID}/agent-settings", _api(patch_agent_settings))
    app.router.add_get(f"/api/v1/runs/{_ID}", _api(get_run))
    for verb in ("confirm", "reject", "cancel"):
        app.router.add_post(f"/api/v1/runs/{_ID}/{verb}", _api(decide(verb)))
    app.router.add_get(f"/api/v1/validation/{_ID}", _api(get_validation))
    app.router.add_post(f"/api/v1/validation/{_ID}/retry", _api(retry_validation))
    app.router.add_post(f"/api/v1/deliveries/{_DELIVERY_ID}/replay", _api(replay_delivery))


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


def _api(handler: Handler) -> Handler:
    """Log-in required (401 otherwise, made JSON by `api_errors`)."""
    async def checked(request: web.Request) -> web.StreamResponse:
        await auth.require_user(request)
        return await handler(request)

    checked.__name__ = handler.__name__
    return checked


def _as_json_error(request: web.Request, answer: web.Response) -> web.Response:
    """A plain-text error (the router's 404 and 405, dashboard.auth's 403 and 404, the CSRF check) as
    `{"error": ...}`, keeping its headers (Allow, Retry-After) and cookies (a new session)."""
    if answer.status == 401:
        converted = _error(401, "log in, or send a personal API token as `Authorization: Bearer cga_...`",
                           **{"WWW-Authenticate": 'Bearer realm="codegenapp"'})
    elif answer.status == 405:
        allowed = answer.headers.get("Allow", "")
        message = f"{request.method} is not a method of {request.path} (it has {allowed or 'none'})"
        if _PROJECTS.fullmatch(request.path):
            message += ("; projects come from the GitHub App's installations: install the App on a repository "
                        "(or remove it) on GitHub, and a removed repository's project is archived")
        converted = _error(405, message, Allow=allowed)
    else:
        message = answer.text if answer.text and answer.content_type != "application/json" else None
        if message is None:
            try:
                message = json.loads(answer.text or "{}").get("error")
            except (ValueError, AttributeError):
                message = None
        message = (message or answer.reason).removeprefix(f"{answer.status}: ")
        kept = {k: v for k, v in answer.headers.items() if k.lower() in ("allow", "retry-after")}
        converted = _error(answer.status, message, **kept)
    for name, morsel in answer.cookies.items():
        converted.cookies[name] = morsel
    return converted


@web.middleware
async def api_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error under /api/v1 is JSON, as the OpenAPI document says, whoever answered it."""
    if request.path != "/api/v1" and not request.path.startswith("/api/v1/"):
        return await handler(request)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _as_json_error(request, exc)
    if response.status >= 400 and isinstance(response, web.Response) and not response.prepared \
            and response.content_type != "application/json":
        return _as_json_error(request, response)
    return response


async def _user(request: web.Request) -> auth.DashboardUser:
    return await auth.require_user(request)


def _service(request: web.Request) -> AgentRunService:
    services: Services = request.app[SERVICES]
    return services.agent_runs


async def _project(request: web.Request, *, manage: bool = False, write: bool = False) -> Project:
    return await auth.require_project_id(request, request.match_info["id"], manage=manage, write=write)


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise web.HTTPBadRequest(text="the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="the body must be a JSON object")
    return body


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(document(request.app[SERVICES].settings.public_url))


# ---------------------------------------------------------------- projects

def _when(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


async def project_json(request: web.Request, project: Project) -> dict[str, Any]:
    access = await auth.project_access(request, project)
    return {"id": project.id, "name": project.name, "github_url": project.github_url,
            "default_branch": project.default_branch, "private": project.private,
            "installation_id": project.installation_id, "pinned": project.pinned,
            "can_write": bool(access and access.can_write), "can_manage": bool(access and access.can_manage),
            "settings": {**{key: getattr(project, key) for key in PROJECT_SETTINGS if key != "merge_queue"},
                         "merge_queue": asdict(queue_keys_of(project.merge_queue))},
            "created_at": _when(project.created_at), "updated_at": _when(project.updated_at)}


async def list_projects(request: web.Request) -> web.Response:
    projects = await auth.visible_projects(request)
    return web.json_response({"projects": [await project_json(request, p) for p in projects]})


async def get_project(request: web.Request) -> web.Response:
    return web.json_response(await project_json(request, await _project(request)))


def _wrong_type(value: Any, types: tuple[type, ...]) -> bool:
    return not isinstance(value, types) or (bool not in types and isinstance(value, bool))


def _queue_problems(queue: dict[str, Any]) -> list[str]:
    problems = []
    for name, value in queue.items():
        types = QUEUE_SETTINGS.get(name)
        if types is None:
            problems.append(f"unknown setting merge_queue.{name!r}")
        elif value is not None and _wrong_type(value, types):
            problems.append(f"merge_queue.{name} has the wrong type")
    return problems


def _as_form(project: Project, body: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    """The JSON settings as the settings page's form would send them (over the current values), so that
    `project_settings.parse_settings` checks them; or the problems with their JSON types."""
    problems: list[str] = []
    for key, value in body.items():
        types = PROJECT_SETTINGS.get(key)
        if types is None:
            problems.append(f"unknown setting {key!r}")
        elif _wrong_type(value, types):
            problems.append(f"{key} has the wrong type")
        elif key == "merge_queue":
            problems += _queue_problems(value)
        elif types == (list,) and not all(isinstance(c, str) and "\n" not in c and "\r" not in c for c in value):
            problems.append(f"{key} must be a list of one-line strings")
        elif key == "agent_backend" and value is not None and value not in BACKENDS:
            problems.append(f"agent_backend must be one of {', '.join(BACKENDS)} or null")
    if problems:
        return {}, problems
    merged = {key: getattr(project, key) for key in PROJECT_SETTINGS} | body
    form = {key: merged[key] for key in ("repository_rules", "planning_statement", "agent_command")}
    form.update(setup_commands="\n".join(merged["setup_commands"]),
                validate_commands="\n".join(merged["validate_commands"]),
                agent_backend=merged["agent_backend"] or "", max_fix_attempts=str(merged["max_fix_attempts"]))
    form.update({key: "on" for key in ("auto_merge_enabled", "auto_confirm_plans") if merged[key]})
    queue = {**asdict(queue_keys_of(project.merge_queue)), **body.get("merge_queue", {})}
    form.update({f"merge_queue.{name}": "" if value is None else str(value)
                 for name, value in queue.items() if name != "enabled"})
    form.update({"merge_queue.enabled": "on"} if queue["enabled"] else {})
    return form, []


async def put_project(request: web.Request) -> web.Response:
    services: Services = request.app[SERVICES]
    project = await _project(request, manage=True)
    body = await _json_body(request)
    if not body:
        return _error(400, "name at least one setting to change")
    form, problems = _as_form(project, body)
    values, more = parse_settings(form) if not problems else ({}, [])
    if more == [LOCAL_NEEDS_COMMAND]:  # each value is fine; together with the project's they are not
        return _error(409, LOCAL_NEEDS_COMMAND)
    if problems or more:
        return _error(400, "; ".join(problems + more))
    submitted = {**body, **{f"merge_queue.{name}": value for name, value in body.get("merge_queue", {}).items()}}
    _, refused = await refuse_file_keys(services, project, values, submitted)
    if refused:
        return _error(409, "; ".join(refused))
    values = with_queue_object(values, project.merge_queue)
    changed = sorted(k for k, v in values.items() if getattr(project, k) != v)
    updated = await services.store.projects.update_project(project.id, values)
    if updated is None:
        return _error(404, "no such project")
    user = await _user(request)
    await services.store.audit.record("project.settings.updated", actor=user.login, project_id=project.id,
                                      installation_id=project.installation_id, details={"changed": changed})
    services.bus.publish("project.status.updated", project_id=project.id, change="settings")
    return web.json_response(await project_json(request, updated))


async def get_queue(request: web.Request) -> web.Response:
    """Each base branch's merge queue (dashboard/queue_view.py), and whether the queue is on for the project."""
    services: Services = request.app[SERVICES]
    project = await _project(request)
    settings = await queue_settings(services, project)
    return web.json_response({"project_id": project.id, "enabled": settings.enabled,
                              "queues": [branch_json(b) for b in await branch_queues(services, project)]})


async def dequeue(request: web.Request) -> web.Response:
    """Take a PR out of its merge queue (needs write access), as `/dequeue` and the page's button do."""
    services: Services = request.app[SERVICES]
    project = await _project(request, write=True)
    number = int(request.match_info["number"])
    user = await _user(request)
    if services.merge_queues is None:
        return _error(503, "the merge queue does not run in this app")
    if not await dequeue_pr(services, project, number, actor=user.login, source="api"):
        return _error(404, f"#{number} is not in a merge queue")
    return web.json_response({"project_id": project.id, "pr_number": number, "status": "dequeued"}, status=202)


# ---------------------------------------------------------------- agent runs

async def start_run(request: web.Request) -> web.Response:
    service = _service(request)
    project = await _project(request, write=True)
    body = await _json_body(request)
    goal = body.get("target_text")
    if not isinstance(goal, str) or not goal.strip():
        return _error(400, "target_text must be a non-empty string: what the agent should do")
    user = await _user(request)
    try:
        run = await service.start(project, goal, source="api", requested_by=user.login)
    except AgentRunRefused as exc:
        return _error(409, str(exc))
    return web.json_response(run_json(run), status=201, headers={"Location": f"/api/v1/runs/{run.id}"})


async def list_runs(request: web.Request) -> web.Response:
    service = _service(request)
    project = await _project(request)
    raw = request.query.get("limit", "50")
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_LIST:
        return _error(400, f"limit must be a whole number from 1 to {MAX_LIST}, got {raw[:20]!r}")
    limit = int(raw)
    runs = await service.runs.for_project(project.id, limit=limit)
    return web.json_response({"runs": [run_json(run) for run in runs]})


async def visible_run(request: web.Request, run_id: str, *, write: bool = False) -> AgentRun:
    """The run, when the user can see its project (404 otherwise; 403 when `write` is missing)."""
    run = await request.app[SERVICES].store.agent_runs.get(run_id)
    if run is None:
        raise web.HTTPNotFound(text="no such agent run")
    try:
        await auth.require_project_id(request, run.project_id, write=write)
    except web.HTTPNotFound:
        raise web.HTTPNotFound(text="no such agent run") from None
    return run


async def get_run(request: web.Request) -> web.Response:
    return web.json_response(run_json(await visible_run(request, request.match_info["id"])))


async def decide_run(request: web.Request, run_id: str, verb: str) -> AgentRun:
    """Confirm, reject or cancel the run as the requesting user (404, 403, or 409 as web.HTTPConflict)."""
    service = _service(request)
    await visible_run(request, run_id, write=True)
    user = await _user(request)
    action = {"confirm": service.confirm, "reject": service.reject, "cancel": service.cancel}[verb]
    try:
        return await action(run_id, by=user.login)
    except LookupError:
        raise web.HTTPNotFound(text="no such agent run") from None
    except AgentRunConflict as exc:
        raise web.HTTPConflict(text=str(exc)) from None


def decide(verb: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response(run_json(await decide_run(request, request.match_info["id"], verb)))

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
            "problem": service.availability.problem(project)}


async def get_agent_settings(request: web.Request) -> web.Response:
    return web.json_response(_settings_json(request, await _project(request)))


async def patch_agent_settings(request: web.Request) -> web.Response:
    project = await _project(request, manage=True)
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
    user = await _user(request)
    await services.store.audit.record("project.agent_settings", actor=user.login, project_id=project.id,
                                      installation_id=project.installation_id,
                                      details={k: v for k, v in values.items() if k != "agent_command"}
                                      | ({"agent_command": "(changed)"} if "agent_command" in values else {}))
    return web.json_response(_settings_json(request, updated))


# ---------------------------------------------------------------- validations

def validation_json(request: web.Request, state: ValidationState) -> dict[str, Any]:
    results = state.test_results or {}
    return {"id": state.id, "project_id": state.project_id, "pr_number": state.pr_number,
            "subject": state.subject, "subject_ref": state.subject_ref, "head_sha": state.head_sha,
            "base_sha": state.base_sha, "status": state.status,
            "conclusion": state.conclusion, "title": state.title, "trigger": state.trigger,
            "is_fork": state.is_fork, "author": state.author, "agent_run_id": state.agent_run_id,
            "superseded_by": state.superseded_by, "auto_merge_eligible": state.auto_merge_eligible,
            "steps": [{key: step.get(key) for key in STEP_FIELDS} for step in results.get("steps", [])
                      if isinstance(step, dict)],
            "error": results.get("error") or results.get("config_error"),
            "details_url": f"{request.app[SERVICES].settings.public_url}/validations/{state.id}",
            "created_at": _when(state.created_at), "started_at": _when(state.started_at),
            "completed_at": _when(state.completed_at)}


async def visible_validation(request: web.Request, validation_id: str, *,
                             write: bool = False) -> tuple[ValidationState, Project]:
    state = await request.app[SERVICES].store.validations.get(validation_id)
    if state is None:
        raise web.HTTPNotFound(text="no such validation")
    try:
        project = await auth.require_project_id(request, state.project_id, write=write)
    except web.HTTPNotFound:
        raise web.HTTPNotFound(text="no such validation") from None
    return state, project


async def get_validation(request: web.Request) -> web.Response:
    state, _ = await visible_validation(request, request.match_info["id"])
    return web.json_response(validation_json(request, state))


async def retry_validation(request: web.Request) -> web.Response:
    """Validate the PR's current head again (a new check run), as `/validate` on the PR does."""
    services: Services = request.app[SERVICES]
    state, project = await visible_validation(request, request.match_info["id"], write=True)
    if not services.github.configured or project.installation_id is None:
        return _error(503, "validation is not available on this app")
    if state.subject != SUBJECT_PULL_REQUEST:  # a merge queue's run: its queue decides when to test again
        return _error(409, "only a pull request's validation can be retried; this one is a merge queue's")
    user = await _user(request)
    try:
        new = await services.validations.revalidate(project, state.pr_number, trigger="api.retry", actor=user.login)
    except NotRevalidated as exc:
        return _error(409, str(exc))
    assert new is not None
    await services.store.audit.record("validation.retried", actor=user.login, project_id=project.id,
                                      installation_id=project.installation_id,
                                      details={"pr": state.pr_number, "validation_id": new.id, "from": state.id})
    return web.json_response(validation_json(request, new), status=202,
                             headers={"Location": f"/api/v1/validation/{new.id}"})


async def replay_delivery(request: web.Request) -> web.Response:
    """Handle a stored delivery again (pipeline/deliveries/replay.py), for an admin of its
    repository: 202 with the job queued for it. A delivery of no repository the user can see (or of
    none: installation events are the operator's, `codegenapp deliveries replay`) is 404."""
    services: Services = request.app[SERVICES]
    if services.replays is None:
        return _error(503, "replaying deliveries is not available on this app")
    delivery_id = request.match_info["id"]
    view = await services.replays.get(delivery_id) if len(delivery_id) <= 64 else None
    project = (await services.store.projects.get_project_by_repo_id(view.repository_id)
               if view is not None and view.repository_id is not None else None)
    if view is None or project is None:
        return _error(404, "no such delivery")
    try:
        await auth.require_project_id(request, project.id)
    except web.HTTPNotFound:
        return _error(404, "no such delivery")
    if not await auth.is_admin(request, project):
        return _error(403, f"replaying a delivery of {project.name} needs admin on the repository")
    user = await _user(request)
    try:
        replayed = await services.replays.replay(view.id, actor=user.login)
    except UnknownDelivery:
        return _error(404, "no such delivery")
    except ReplayRefused as exc:
        return _error(409, str(exc))
    return web.json_response({"delivery_id": view.id, "job_id": replayed.job_id, "status": "queued",
                              "event": view.event, "action": view.action, "repository": view.repository,
                              "pr_number": view.pr_number}, status=202)
