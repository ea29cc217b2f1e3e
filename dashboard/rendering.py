"""What every dashboard page shares: the Jinja2 templates (autoescaped), the page renderer and the
request's Services."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from jinja2 import Environment, PackageLoader, select_autoescape

from bot.links import github_link
from bot.services import SERVICES, Services
from dashboard import auth

templates = Environment(loader=PackageLoader("dashboard", "templates"),
                        autoescape=select_autoescape(["html"]), enable_async=False)
# Every link to GitHub goes through it: `url|github_link(settings.github_url)` is None for anything else.
templates.filters["github_link"] = github_link


def services_of(request: web.Request) -> Services:
    return request.app[SERVICES]


async def render(request: web.Request, name: str, *, status: int = 200, **context: Any) -> web.Response:
    user = await auth.authenticate(request)
    page = templates.get_template(name).render(
        user=user, csrf_token=auth.csrf_token(request), settings=services_of(request).settings, **context)
    return web.Response(text=page, status=status, content_type="text/html",
                        headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY",
                                 "Referrer-Policy": "same-origin", "X-Content-Type-Options": "nosniff"})


