"""Server-rendered pages (Jinja2, autoescaped)."""

from __future__ import annotations

from aiohttp import web
from jinja2 import Environment, PackageLoader, select_autoescape

from bot.services import SERVICES

templates = Environment(loader=PackageLoader("dashboard", "templates"),
                        autoescape=select_autoescape(["html"]), enable_async=False)


async def validation_page(request: web.Request) -> web.Response:
    """The check run's details_url. Its address is an unguessable id (128 random bits), so GitHub can
    link it without a login, like the screenshots of the UI check."""
    services = request.app[SERVICES]
    validation = await services.store.validations.get(request.match_info["validation_id"])
    if validation is None:
        raise web.HTTPNotFound(text="no such validation")
    project = await services.store.projects.get_project(validation.project_id)
    results = validation.test_results or {}
    html = templates.get_template("validation.html").render(
        validation=validation, project=project, steps=results.get("steps", []), notes=results.get("notes", []),
        error=results.get("error") or results.get("config_error"))
    return web.Response(text=html, content_type="text/html",
                        headers={"Cache-Control": "no-store", "X-Robots-Tag": "noindex",
                                 "Referrer-Policy": "no-referrer"})
