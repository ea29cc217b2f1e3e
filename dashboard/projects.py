"""The home page (setup mode, the login, or the pinned projects' cards), a project's page with its PR
overview, the overview's table alone (`/projects/{owner}/{repo}/pulls`, what live.js reloads) and the pin."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from aiohttp import web

from bot import labels
from bot.models import Project, utcnow
from bot.services import Services
from bot.store.tracked_pulls import OverviewRow
from bot.startup_report import oauth_ready
from dashboard import auth
from dashboard.onboarding import setup_page
from dashboard.pull_overview import FILTERS, OPEN_STATES, ago, card_summary, pull_state
from dashboard.rendering import render, services_of
from pipeline.validation.subjects import describe

# Merged and closed PRs stay in the overview this long after their last event.
RECENTLY_CLOSED = timedelta(days=7)


async def index(request: web.Request) -> web.Response:
    services = services_of(request)
    settings = services.settings
    if not settings.app_configured:
        return await setup_page(request)
    user = await auth.authenticate(request)
    if user is None:
        return await render(request, "login.html", login_ready=oauth_ready(settings))
    projects = await auth.visible_projects(request)
    selected = request.query.get("project")
    cards = await _cards(services, [p for p in projects if p.pinned or p.name == selected])
    return await render(request, "projects.html", projects=projects, cards=cards, labels=labels)


async def _overview(services: Services, project: Project) -> list[OverviewRow]:
    return await services.store.tracked_pulls.overview(project.id, closed_since=utcnow() - RECENTLY_CLOSED)


async def _cards(services: Services, projects: list[Project],
                 overviews: dict[str, list[OverviewRow]] | None = None) -> list[dict[str, Any]]:
    """The projects' cards, in a fixed number of statements however many they are: their overviews
    (unless given) and their running agent runs, each read for all of them at once."""
    ids = [p.id for p in projects]
    if overviews is None:
        overviews = await services.store.tracked_pulls.overviews(ids, closed_since=utcnow() - RECENTLY_CLOSED)
    running = await services.store.agent_runs.running_counts(ids)
    return [{"project": p, "summary": card_summary(overviews[p.id]), "running_runs": running[p.id]}
            for p in projects]


def _pull_rows(overview: list[OverviewRow]) -> list[dict[str, Any]]:
    """The overview's rows for the page: open PRs first, each with its state."""
    rows = [{"pull": row.pull, "validation": row.validation, "state": pull_state(*row),
             "opened": row.pull.opened_at or row.pull.updated_at} for row in overview]
    return sorted(rows, key=lambda r: r["state"] not in OPEN_STATES)  # stable: newest first within each part


def _pulls_context(request: web.Request, project: Project, overview: list[OverviewRow]) -> dict[str, Any]:
    rows, now = _pull_rows(overview), utcnow()
    wanted = request.query.get("state", "")
    shown = wanted if wanted in FILTERS else ""
    counts = {state: sum(1 for r in rows if r["state"] == state) for state in FILTERS}
    return {"pulls": [r for r in rows if not shown or r["state"] == shown], "pull_filter": shown,
            "pull_counts": counts, "pull_total": len(rows), "filters": FILTERS, "labels": labels,
            "project": project, "age": lambda then: ago(then, now)}


async def project_page(request: web.Request, *, status: int = 200, problem: str | None = None,
                       goal: str = "") -> web.Response:
    services = services_of(request)
    project = await auth.require_project(request, request.match_info["owner"], request.match_info["repo"])
    agent_problem = services.agent_runs.availability.problem(project)
    overview = await _overview(services, project)
    [card] = await _cards(services, [project], {project.id: overview})
    return await render(request, "project.html", status=status, card=card,
                        validations=await services.store.validations.for_project(project.id, limit=20),
                        describe=describe,  # what a merge queue's validation validated
                        runs=await services.store.agent_runs.for_project(project.id, limit=20),
                        manage=await auth.can_manage(request, project), write=await auth.can_write(request, project),
                        admin=await auth.is_admin(request, project),  # the Deliveries link (admins only)
                        agent_problem=agent_problem, problem=problem, goal=goal,
                        **_pulls_context(request, project, overview))


async def pulls_table(request: web.Request) -> web.Response:
    """The overview's table alone (honouring `?state=`): what live.js puts in place of the page's."""
    services = services_of(request)
    project = await auth.require_project(request, request.match_info["owner"], request.match_info["repo"])
    return await render(request, "_pulls.html", **_pulls_context(request, project, await _overview(services, project)))


async def pin(request: web.Request) -> web.Response:
    project = await auth.require_project(request, request.match_info["owner"], request.match_info["repo"])
    form = await request.post()
    pinned = form.get("pinned") == "1"
    await services_of(request).store.projects.update_project(project.id, {"pinned": pinned})
    raise web.HTTPSeeOther("/")


async def live_status(services: Services, project_id: str) -> dict[str, Any]:
    """A card's fields as live.js sets them (`project.status.updated`)."""
    project = await services.store.projects.get_project(project_id)
    if project is None:
        return {"project_id": project_id, "validation": None, "running_runs": 0}
    [card] = await _cards(services, [project])
    summary = card["summary"]
    validation = summary.validation
    return {"project_id": project_id, "repository": project.name,
            "validation": None if validation is None else {
                "id": validation.id, "pr_number": validation.pr_number,
                "css": validation.conclusion or validation.status,
                "label": labels.validation_state(validation.status, validation.conclusion)},
            # the headline's failing PRs (pull_overview.card_headline), newest first: shown before `validation`
            "failing_prs": [{"id": v.id, "pr_number": v.pr_number} for v in summary.named_failing],
            "headline": summary.headline, "headline_title": summary.headline_title,
            "counts": {"failing": summary.failing, "validating": summary.validating, "waiting": summary.waiting,
                       "ready": summary.ready},
            "running_runs": card["running_runs"]}
