"""A project's deliveries page (`/projects/{owner}/{repo}/deliveries`): the webhook deliveries of its
repository, newest first, 50 a page, each with its state in words (handled, failed, queued, ...), where it
came from and the error of a failed one, and a Replay button that handles it again
(pipeline/deliveries/replay.py; a POST with the CSRF token, audited as `delivery.replayed`). The page and
the button need admin on the repository (as issue 16 says: an admin of its repository, or the operator
with `codegenapp deliveries replay`): a delivery's payload and errors are the operator's business, and a
replay runs every handler of the delivery again, beyond what a maintainer's settings reach. `?failed=1`
lists only the failed ones, `?page=N` pages."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from bot.models import Project, utcnow
from dashboard import auth
from dashboard.pull_overview import ago
from dashboard.rendering import render, services_of
from pipeline.deliveries.replay import DeliveryReplay, DeliveryView, ReplayRefused, UnknownDelivery

PAGE_SIZE = 50
MAX_PAGE = 10_000


def _page_number(value: str | None) -> int:
    return int(value) if value and value.isdigit() and len(value) < 6 and 1 <= int(value) <= MAX_PAGE else 1


def page_link(*, failed: bool, page: int) -> str:
    """The address of a page of the listing, keeping the filter."""
    query = {key: value for key, value in (("failed", "1" if failed else ""), ("page", str(page) if page > 1 else ""))
             if value}
    return "?" + urlencode(query) if query else "?"


def _replays(request: web.Request) -> DeliveryReplay:
    replays = services_of(request).replays
    if replays is None:
        raise web.HTTPServiceUnavailable(text="replaying deliveries is not available on this app")
    return replays


async def _administered_project(request: web.Request) -> Project:
    """The project in the path: 404 when the user cannot see it, 403 without admin on its repository."""
    project = await auth.require_project(request, request.match_info["owner"], request.match_info["repo"])
    if not await auth.is_admin(request, project):
        raise web.HTTPForbidden(text=f"the deliveries of {project.name} need admin on the repository")
    return project


async def deliveries_page(request: web.Request) -> web.Response:
    project = await _administered_project(request)
    return await _show(request, project, failed=request.query.get("failed") == "1",
                       page=_page_number(request.query.get("page")), replayed=request.query.get("replayed"))


async def _show(request: web.Request, project: Project, *, failed: bool, page: int, replayed: str | None = None,
                problem: str | None = None, status: int = 200) -> web.Response:
    replays = _replays(request)
    views = await replays.page(repository_id=project.github_repo_id, failed=failed, limit=PAGE_SIZE + 1,
                               offset=(page - 1) * PAGE_SIZE)
    just_replayed = await replays.get(replayed[:64]) if replayed else None
    now = utcnow()
    context: dict[str, Any] = {
        "project": project, "deliveries": views[:PAGE_SIZE], "failed": failed, "page": page,
        "newer": page_link(failed=failed, page=page - 1) if page > 1 else None,
        "older": page_link(failed=failed, page=page + 1) if len(views) > PAGE_SIZE else None,
        "all_link": page_link(failed=False, page=1), "failed_link": page_link(failed=True, page=1),
        "age": lambda then: ago(then, now), "problem": problem,
        "replayed": just_replayed if just_replayed and just_replayed.repository_id == project.github_repo_id
        else None}
    return await render(request, "deliveries.html", status=status, **context)


async def _project_delivery(request: web.Request, project: Project) -> DeliveryView:
    """The delivery named in the path, if it is one of this project's repository (404 otherwise)."""
    view = await _replays(request).get(request.match_info["delivery_id"])
    if view is None or view.repository_id != project.github_repo_id:
        raise web.HTTPNotFound(text="no such delivery in this project")
    return view


async def replay(request: web.Request) -> web.Response:
    project = await _administered_project(request)
    view = await _project_delivery(request, project)
    user = await auth.authenticate(request)
    failed = request.query.get("failed") == "1"
    try:
        await _replays(request).replay(view.id, actor=user.login if user else None)
    except (ReplayRefused, UnknownDelivery) as exc:
        return await _show(request, project, failed=failed, page=1, problem=exc.args[0], status=409)
    query = {"replayed": view.id, **({"failed": "1"} if failed else {})}
    raise web.HTTPSeeOther(f"/projects/{project.name}/deliveries?{urlencode(query)}")
