"""A project's settings page: the form (validation commands, rules, agents, merging) and its secrets."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bot.models import Project
from bot.store import InvalidSecret
from bot.store.projects import MAX_SECRET_BYTES, SECRET_NAME
from dashboard import auth
from dashboard.rendering import render, services_of

MAX_TEXT = 20_000  # repository rules, planning statement, agent command (characters)
MAX_COMMANDS = 50
MAX_COMMAND = 2_000
MAX_FIX_ATTEMPTS = 20
BACKEND_CHOICES = ("", "codegen", "local", "none")  # "" = the default (Codegen when configured)
LOCAL_NEEDS_COMMAND = "Agent command is needed when the agent backend is local"


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
    secrets_ = await services_of(request).store.projects.secret_names(project.id)
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
    services = services_of(request)
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
    services = services_of(request)
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
    services = services_of(request)
    project = await auth.require_project(request, request.match_info["owner"], request.match_info["repo"],
                                         manage=True)
    name = request.match_info["name"]
    if await services.store.projects.delete_secret(project.id, name):
        user = await auth.authenticate(request)
        await services.store.audit.record("project.secret.deleted", actor=user.login if user else None,
                                          project_id=project.id, installation_id=project.installation_id,
                                          details={"name": name})
    raise web.HTTPSeeOther(f"/projects/{project.name}/settings?saved=1#secrets")
