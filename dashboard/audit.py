"""A project's audit log page."""

from __future__ import annotations

from aiohttp import web

from dashboard import auth
from dashboard.rendering import render, services_of


async def audit_page(request: web.Request) -> web.Response:
    project = await auth.require_project(request, request.match_info["owner"], request.match_info["repo"])
    events = await services_of(request).store.audit.list(project_id=project.id, limit=200)
    return await render(request, "audit.html", project=project, events=events)
