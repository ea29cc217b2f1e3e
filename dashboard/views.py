"""The dashboard's pages: setup (App registration), projects, a project, its settings and audit log, the
user's API tokens; and the live-update WebSocket `/api/v1/ws`.

Server-rendered with Jinja2 (autoescape on); plain JS and CSS files in `static/`, no build step and no
inline script or style (the Content-Security-Policy of dashboard/security_headers.py allows none).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import yaml
from aiohttp import web

from bot import registration
from bot.config import WEBHOOK_PATH, Settings
from bot.events import AppEvent
from bot.models import AGENT_TERMINAL, Project
from bot.github.github_app import ManifestRefused
from bot.services import SERVICES, Services
from bot.store import InvalidSecret
from bot.store.projects import MAX_SECRET_BYTES, SECRET_NAME
from dashboard import auth, limits, security_headers
from dashboard.pages import templates

log = logging.getLogger(__name__)

APP_YML = Path(__file__).resolve().parent.parent / "app.yml"
STATIC = Path(__file__).resolve().parent / "static"
MAX_TEXT = 20_000  # repository rules, planning statement, agent command (characters)
MAX_COMMANDS = 50
MAX_COMMAND = 2_000
MAX_FIX_ATTEMPTS = 20
BACKEND_CHOICES = ("", "codegen", "local", "none")  # "" = the default (Codegen when configured)
LOCAL_NEEDS_COMMAND = "Agent command is needed when the agent backend is local"
LIVE_EVENTS = ("project.status.updated", "agent.run.started", "agent.run.updated", "agent.run.completed",
               "pr.created", "pr.updated", "validation.started", "validation.completed", "notification.new",
               "merge.merged")
WEBSOCKETS = web.AppKey("dashboard_websockets", set)


def setup(app: web.Application) -> None:
    auth.setup(app)
    limits.setup(app)
    security_headers.setup(app)
    app[WEBSOCKETS] = set()
    app.on_shutdown.append(_close_websockets)
    app.router.add_get("/", index)
    app.router.add_get("/setup/callback", setup_callback)
    app.router.add_get("/projects/{owner}/{repo}", project_page)
    app.router.add_get("/projects/{owner}/{repo}/settings", settings_page)
    app.router.add_post("/projects/{owner}/{repo}/settings", save_settings)
    app.router.add_post("/projects/{owner}/{repo}/secrets", save_secret)
    app.router.add_post("/projects/{owner}/{repo}/secrets/{name}/delete", delete_secret)
    app.router.add_post("/projects/{owner}/{repo}/pin", pin)
    app.router.add_get("/projects/{owner}/{repo}/audit", audit_page)
    app.router.add_get("/account", account_page)
    app.router.add_post("/account/tokens", create_token)
    app.router.add_post("/account/tokens/{token_id}/delete", delete_token)
    app.router.add_get("/api/v1/ws", websocket)
    app.router.add_static("/static/", STATIC, append_version=True)


def _services(request: web.Request) -> Services:
    return request.app[SERVICES]


async def render(request: web.Request, name: str, *, status: int = 200, **context: Any) -> web.Response:
    user = await auth.authenticate(request)
    page = templates.get_template(name).render(
        user=user, csrf_token=auth.csrf_token(request), settings=_services(request).settings, **context)
    return web.Response(text=page, status=status, content_type="text/html",
                        headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY",
                                 "Referrer-Policy": "same-origin", "X-Content-Type-Options": "nosniff"})


# ---------------------------------------------------------------- setup mode

def manifest(settings: Settings) -> dict[str, Any]:
    """The App's manifest: app.yml's name, description, permissions and events, and this app's URLs."""
    spec = yaml.safe_load(APP_YML.read_text())
    base = settings.public_url.rstrip("/")
    return {
        "name": spec["name"],
        "description": spec.get("description", ""),
        "url": base,
        "hook_attributes": {"url": base + WEBHOOK_PATH, "active": True},
        "redirect_url": base + "/setup/callback",
        "callback_urls": [base + "/auth/callback"],
        "setup_url": base + "/",
        "public": False,
        "default_permissions": dict(spec["default_permissions"]),
        "default_events": list(spec["default_events"]),
    }


async def index(request: web.Request) -> web.Response:
    services = _services(request)
    settings = services.settings
    if not settings.app_configured:
        return await _setup_page(request)
    user = await auth.authenticate(request)
    if user is None:
        return await render(request, "login.html", login_ready=bool(settings.github_client_id))
    projects = await auth.visible_projects(request)
    selected = request.query.get("project")
    cards = [await _card(services, p) for p in projects if p.pinned or p.name == selected]
    return await render(request, "projects.html", projects=projects, cards=cards)


async def _setup_page(request: web.Request) -> web.Response:
    settings = _services(request).settings
    given = request.query.get("setup_token")
    if given is not None:
        if not registration.check_setup_token(settings, given):
            return await render(request, "setup.html", status=403, allowed=False,
                                problem="That setup link is not valid (any more). Use the link the server printed.")
        auth.update_session(request, setup=True)
        raise web.HTTPFound("/")  # the token leaves the address bar
    if not auth.session(request).get("setup"):
        return await render(request, "setup.html", allowed=False, problem=None)
    state = auth.new_state(request, "register")
    return await render(request, "setup.html", allowed=True, problem=None, state=state,
                        manifest_json=json.dumps(manifest(settings)), github_url=settings.github_url)


async def setup_callback(request: web.Request) -> web.Response:
    services = _services(request)
    settings = services.settings
    if settings.app_configured:
        raise web.HTTPConflict(text="a GitHub App is already configured")
    if not auth.session(request).get("setup") or auth.take_state(request, request.query.get("state"),
                                                                  "register") is None:
        raise web.HTTPBadRequest(text="this registration link is expired, used, or from another browser: "
                                      "start again from the setup link")
    code = request.query.get("code", "")
    if not code.replace("-", "").replace("_", "").isalnum():
        raise web.HTTPBadRequest(text="GitHub sent no usable code")
    try:
        body = await services.github.convert_manifest(code)
    except ManifestRefused as exc:
        raise web.HTTPBadGateway(text=f"GitHub refused the registration ({exc.status}): {exc.message}") from None
    except (aiohttp.ClientError, ValueError) as exc:
        raise web.HTTPBadGateway(text="GitHub could not be reached to finish the registration") from exc
    found = registration.Registration(
        app_id=str(body["id"]), slug=body.get("slug") or "", html_url=body.get("html_url") or "",
        client_id=body.get("client_id"), private_key=body["pem"], webhook_secret=body["webhook_secret"],
        client_secret=body.get("client_secret"), owner=(body.get("owner") or {}).get("login"))
    registration.save(settings, found)
    await services.activate(registration.apply(settings, found))
    registration.discard_setup_token(settings)
    auth.update_session(request, setup=False)
    await services.store.audit.record("app.registered", details={"app_id": found.app_id, "slug": found.slug})
    log.info("GitHub App %s (%s) registered from the dashboard", found.slug, found.app_id)
    return await render(request, "registered.html", registration=found)


# ---------------------------------------------------------------- projects

async def _card(services: Services, project: Project) -> dict[str, Any]:
    validations = await services.store.validations.for_project(project.id, limit=20)
    runs = await services.store.agent_runs.for_project(project.id, limit=50)
    open_prs = sorted({v.pr_number for v in validations if v.status in ("queued", "in_progress", "waiting")})
    return {"project": project, "validation": validations[0] if validations else None,
            "running_runs": sum(1 for r in runs if r.status not in AGENT_TERMINAL),
            "active_prs": open_prs}


async def project_page(request: web.Request, *, status: int = 200, problem: str | None = None,
                       goal: str = "") -> web.Response:
    services = _services(request)
    project = await auth.require_project(request, request.match_info["owner"], request.match_info["repo"])
    agent_problem = services.agent_runs.availability.problem(project)
    return await render(request, "project.html", status=status, card=await _card(services, project),
                        validations=await services.store.validations.for_project(project.id, limit=20),
                        runs=await services.store.agent_runs.for_project(project.id, limit=20),
                        manage=await auth.can_manage(request, project), write=await auth.can_write(request, project),
                        agent_problem=agent_problem, problem=problem, goal=goal)


async def pin(request: web.Request) -> web.Response:
    project = await auth.require_project(request, request.match_info["owner"], request.match_info["repo"])
    form = await request.post()
    pinned = form.get("pinned") == "1"
    await _services(request).store.projects.update_project(project.id, {"pinned": pinned})
    raise web.HTTPSeeOther("/")


async def audit_page(request: web.Request) -> web.Response:
    project = await auth.require_project(request, request.match_info["owner"], request.match_info["repo"])
    events = await _services(request).store.audit.list(project_id=project.id, limit=200)
    return await render(request, "audit.html", project=project, events=events)


# ---------------------------------------------------------------- settings

def _commands(raw: str, label: str, problems: list[str]) -> list[str]:
    commands = [line for line in raw.replace("\r\n", "\n").split("\n") if line.strip()]
    if len(commands) > MAX_COMMANDS:
        problems.append(f"{label}: at most {MAX_COMMANDS} commands, one a line")
    for command in commands:
        if len(command) > MAX_COMMAND:
            problems.append(f"{label}: a command is longer than {MAX_COMMAND} characters")
            break
    return commands


def parse_settings(form: Any) -> tuple[dict[str, Any], list[str]]:
    """The form's values, or the problems with them (a sentence each). Text is kept exactly as typed
    (browsers send a textarea's line breaks as CRLF; they are stored as LF)."""
    problems: list[str] = []
    values: dict[str, Any] = {}
    for key, label in (("repository_rules", "Repository rules"), ("planning_statement", "Planning statement"),
                       ("agent_command", "Agent command")):
        text = str(form.get(key, "")).replace("\r\n", "\n")
        if len(text) > MAX_TEXT:
            problems.append(f"{label} is {len(text)} characters long; the limit is {MAX_TEXT}")
        values[key] = text
    values["setup_commands"] = _commands(str(form.get("setup_commands", "")), "Setup commands", problems)
    values["validate_commands"] = _commands(str(form.get("validate_commands", "")), "Validate commands", problems)
    values["auto_merge_enabled"] = form.get("auto_merge_enabled") == "on"
    values["auto_confirm_plans"] = form.get("auto_confirm_plans") == "on"
    backend = str(form.get("agent_backend", ""))
    if backend not in BACKEND_CHOICES:
        problems.append("Agent backend must be one of: default, codegen, local, none")
    values["agent_backend"] = backend or None
    raw = str(form.get("max_fix_attempts", "3")).strip()
    if not raw.isdigit() or not 0 <= int(raw) <= MAX_FIX_ATTEMPTS:
        problems.append(f"Max fix attempts must be a whole number from 0 to {MAX_FIX_ATTEMPTS}, got {raw!r}")
    else:
        values["max_fix_attempts"] = int(raw)
    if values["agent_backend"] == "local" and not values["agent_command"].strip():
        problems.append(LOCAL_NEEDS_COMMAND)
    return values, problems


async def _settings_view(request: web.Request, project: Project, *, status: int = 200,
                         problems: list[str] | None = None, form: dict[str, Any] | None = None,
                         message: str | None = None) -> web.Response:
    secrets_ = await _services(request).store.projects.secret_names(project.id)
    return await render(request, "settings.html", status=status, project=project, problems=problems or [],
                        form=form, message=message, secrets=secrets_, limits={
                            "text": MAX_TEXT, "commands": MAX_COMMANDS, "command": MAX_COMMAND,
                            "fix": MAX_FIX_ATTEMPTS, "secret_kib": MAX_SECRET_BYTES // 1024},
                        backends=BACKEND_CHOICES)


async def settings_page(request: web.Request) -> web.Response:
    project = await auth.require_project(request, request.match_info["owner"], request.match_info["repo"],
                                         manage=True)
    return await _settings_view(request, project, message=request.query.get("saved") and "Settings saved.")


async def save_settings(request: web.Request) -> web.Response:
    services = _services(request)
    project = await auth.require_project(request, request.match_info["owner"], request.match_info["repo"],
                                         manage=True)
    form = await request.post()
    values, problems = parse_settings(form)
    if problems:
        shown = {k: str(form.get(k, "")).replace("\r\n", "\n") for k in form if k != "csrf_token"}
        return await _settings_view(request, project, status=400, problems=problems, form=shown)
    changed = sorted(k for k, v in values.items() if getattr(project, k) != v)
    await services.store.projects.update_project(project.id, values)
    user = await auth.authenticate(request)
    await services.store.audit.record("project.settings.updated", actor=user.login if user else None,
                                      project_id=project.id, installation_id=project.installation_id,
                                      details={"changed": changed})
    services.bus.publish("project.status.updated", project_id=project.id, change="settings")
    raise web.HTTPSeeOther(f"/projects/{project.name}/settings?saved=1")


async def save_secret(request: web.Request) -> web.Response:
    services = _services(request)
    project = await auth.require_project(request, request.match_info["owner"], request.match_info["repo"],
                                         manage=True)
    form = await request.post()
    name, value = str(form.get("name", "")).strip(), str(form.get("value", ""))
    problems = []
    if not SECRET_NAME.fullmatch(name):
        problems.append(f"Secret name {name!r} must be capital letters, digits and _, not starting with a digit")
    if len(value.encode()) > MAX_SECRET_BYTES:
        problems.append(f"Secret value is larger than {MAX_SECRET_BYTES // 1024} KiB")
    if not problems:
        try:
            replaced = name in {n for n, _ in await services.store.projects.secret_names(project.id)}
            await services.store.projects.set_secret(project.id, name, value)
        except InvalidSecret as exc:
            problems.append(str(exc))
    if problems:
        return await _settings_view(request, project, status=400, problems=problems)
    user = await auth.authenticate(request)
    await services.store.audit.record("project.secret.replaced" if replaced else "project.secret.added",
                                      actor=user.login if user else None, project_id=project.id,
                                      installation_id=project.installation_id, details={"name": name})
    raise web.HTTPSeeOther(f"/projects/{project.name}/settings?saved=1#secrets")


async def delete_secret(request: web.Request) -> web.Response:
    services = _services(request)
    project = await auth.require_project(request, request.match_info["owner"], request.match_info["repo"],
                                         manage=True)
    name = request.match_info["name"]
    if await services.store.projects.delete_secret(project.id, name):
        user = await auth.authenticate(request)
        await services.store.audit.record("project.secret.deleted", actor=user.login if user else None,
                                          project_id=project.id, installation_id=project.installation_id,
                                          details={"name": name})
    raise web.HTTPSeeOther(f"/projects/{project.name}/settings?saved=1#secrets")


# ---------------------------------------------------------------- personal API tokens

async def account_page(request: web.Request, *, new_token: str | None = None) -> web.Response:
    user = await auth.require_user(request)
    tokens = await _services(request).store.projects.api_tokens(user.id)
    return await render(request, "account.html", tokens=tokens, new_token=new_token)


async def create_token(request: web.Request) -> web.Response:
    user = await auth.require_user(request)
    form = await request.post()
    name = str(form.get("name", "")).strip()[:100] or "API token"
    token = auth.API_TOKEN_PREFIX + secrets.token_urlsafe(32)
    await _services(request).store.projects.create_api_token(user.id, name, token)
    await _services(request).store.audit.record("api_token.created", actor=user.login, details={"name": name})
    return await account_page(request, new_token=token)


async def delete_token(request: web.Request) -> web.Response:
    user = await auth.require_user(request)
    await _services(request).store.projects.delete_api_token(user.id, request.match_info["token_id"])
    raise web.HTTPSeeOther("/account")


# ---------------------------------------------------------------- live updates

async def websocket(request: web.Request) -> web.StreamResponse:
    """Pushes `{"event": name, "data": {...}}` for the bus's events about projects the user may see.
    A browser's handshake must come from the dashboard's own pages (`Origin` is PUBLIC_URL's, or the
    address the request itself was sent to, as when PUBLIC_URL is left to its default and the app is
    reached on another port or host name): the session cookie goes along from any site's page, so
    another site could otherwise listen in."""
    origin = request.headers.get("Origin")
    own = (_services(request).settings.public_url, f"{request.scheme}://{request.host}")
    if origin is not None and not any(same_origin(origin, url) for url in own):
        raise web.HTTPForbidden(text=f"live updates are only for this app's own pages, not {origin[:100]!r}")
    user = await auth.authenticate(request)
    if user is None:
        raise web.HTTPUnauthorized(text="log in first")
    visible = await auth.visible_project_ids(request)
    ws = web.WebSocketResponse(heartbeat=30)
    await ws.prepare(request)
    request.app[WEBSOCKETS].add(ws)
    services = _services(request)
    try:
        with services.bus.subscribe() as queue:
            reader = asyncio.ensure_future(ws.receive())
            while not ws.closed:
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({reader, getter}, return_when=asyncio.FIRST_COMPLETED)
                if reader in done:
                    getter.cancel()
                    message = reader.result()
                    if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                        break
                    reader = asyncio.ensure_future(ws.receive())
                    continue
                event: AppEvent = getter.result()
                if event.name not in LIVE_EVENTS or event.data.get("project_id") not in visible:
                    continue
                await ws.send_json({"event": event.name, "data": _jsonable(event.data)})
                if event.name.startswith("validation."):
                    await ws.send_json({"event": "project.status.updated",
                                        "data": await _status(services, event.data["project_id"])})
            reader.cancel()
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        request.app[WEBSOCKETS].discard(ws)
    return ws


def same_origin(origin: str, public_url: str) -> bool:
    """Whether an `Origin` header names PUBLIC_URL's origin (scheme, host, port; default ports alike)."""
    def key(url: str) -> tuple[str, str, int | None] | None:
        try:
            parts = urlsplit(url.strip())
            port = parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower())
        except ValueError:
            return None
        return (parts.scheme.lower(), (parts.hostname or "").lower(), port) if parts.hostname else None

    found = key(origin)
    return found is not None and found == key(public_url)


async def _status(services: Services, project_id: str) -> dict[str, Any]:
    project = await services.store.projects.get_project(project_id)
    card = await _card(services, project) if project else None
    validation = card["validation"] if card else None
    return {"project_id": project_id,
            "validation": None if validation is None else {
                "id": validation.id, "status": validation.status, "conclusion": validation.conclusion,
                "pr_number": validation.pr_number, "title": validation.title},
            "running_runs": card["running_runs"] if card else 0}


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(data, default=str))


async def _close_websockets(app: web.Application) -> None:
    for ws in list(app[WEBSOCKETS]):
        await ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"server shutdown")
