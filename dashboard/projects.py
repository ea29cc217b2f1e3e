"""The home page (setup mode, the login, or the pinned projects' cards), a project's page and its pin."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bot.models import AGENT_TERMINAL, Project
from bot.services import Services
from dashboard import auth
from dashboard.onboarding import setup_page
from dashboard.rendering import render, services_of


async def index(request: web.Request) -> web.Response:
    services = services_of(request)
    settings = services.settings
    if not settings.app_configured:
        return await setup_page(request)
    user = await auth.authenticate(request)
    if user is None:
        return await render(request, "login.html", login_ready=bool(settings.github_client_id))
    projects = await auth.visible_projects(request)
    selected = request.query.get("project")
    cards = [await _card(services, p) for p in projects if p.pinned or p.name == selected]
    return await render(request, "projects.html", projects=projects, cards=cards)


async def _card(services: Services, project: Project) -> dict[str, Any]:
    validations = await services.store.validations.for_project(project.id, limit=20)
    runs = await services.store.agent_runs.for_project(project.id, limit=50)
    open_prs = sorted({v.pr_number for v in validations if v.status in ("queued", "in_progress", "waiting")})
    return {"project": project, "validation": validations[0] if validations else None,
            "running_runs": sum(1 for r in runs if r.status not in AGENT_TERMINAL),
            "active_prs": open_prs}


async def project_page(request: web.Request, *, status: int = 200, problem: str | None = None,
                       goal: str = "") -> web.Response:
    services = services_of(request)
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
    await services_of(request).store.projects.update_project(project.id, {"pinned": pinned})
    raise web.HTTPSeeOther("/")


async def live_status(services: Services, project_id: str) -> dict[str, Any]:
    project = await services.store.projects.get_project(project_id)
    card = await _card(services, project) if project else None
    validation = card["validation"] if card else None
    return {"project_id": project_id,
            "validation": None if validation is None else {
                "id": validation.id, "status": validation.status, "conclusion": validation.conclusion,
                "pr_number": validation.pr_number, "title": validation.title},
            "running_runs": card["running_runs"] if card else 0}
