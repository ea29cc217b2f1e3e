"""A validation's page (its check run's details_url), its live tail and its UI-check screenshots."""

from __future__ import annotations

from aiohttp import web
from bot.models import VALIDATION_ACTIVE, utcnow
from bot.services import SERVICES
from dashboard.rendering import templates
from pipeline.ui_check.retention import screenshots_expired
from pipeline.ui_check.screenshots import screenshot_file, screenshot_url, screenshots_dir



async def validation_page(request: web.Request) -> web.Response:
    """The check run's details_url. Its address is an unguessable id (128 random bits), so GitHub can
    link it without a login, like the screenshots of the UI check."""
    services = request.app[SERVICES]
    validation = await services.store.validations.get(request.match_info["validation_id"])
    if validation is None:
        raise web.HTTPNotFound(text="no such validation")
    project = await services.store.projects.get_project(validation.project_id)
    results = validation.test_results or {}
    live = results.get("live") if validation.status in VALIDATION_ACTIVE else None
    screenshots = [{**shot, "url": screenshot_url("", validation.id, shot["file"])}
                   for shot in results.get("screenshots", [])]
    retention_days = services.settings.screenshot_retention_days
    # Past the retention they are deleted (or about to be, at the next hourly prune): say so, no broken images.
    expired = bool(screenshots) and (
        screenshots_expired(validation, now=utcnow(), retention_days=retention_days)
        or not screenshots_dir(services.settings.data_dir, validation.id).is_dir())
    html = templates.get_template("validation.html").render(
        validation=validation, project=project, steps=results.get("steps") or (live or {}).get("steps", []),
        notes=results.get("notes", []), error=results.get("error") or results.get("config_error"), live=live,
        running=validation.status in VALIDATION_ACTIVE, screenshots=[] if expired else screenshots,
        screenshots_expired=len(screenshots) if expired else 0, retention_days=retention_days,
        github_url=services.settings.github_url)
    return web.Response(text=html, content_type="text/html",
                        headers={"Cache-Control": "no-store", "X-Robots-Tag": "noindex",
                                 "Referrer-Policy": "no-referrer"})


async def validation_live(request: web.Request) -> web.Response:
    """The running step and its output tail, polled by the validation page while the run goes on."""
    services = request.app[SERVICES]
    validation = await services.store.validations.get(request.match_info["validation_id"])
    if validation is None:
        raise web.HTTPNotFound(text="no such validation")
    running = validation.status in VALIDATION_ACTIVE
    live = (validation.test_results or {}).get("live") if running else None
    return web.json_response({"status": validation.status, "conclusion": validation.conclusion, "running": running,
                              "current": (live or {}).get("current"), "stage": (live or {}).get("stage"),
                              "tail": (live or {}).get("tail", "")}, headers={"Cache-Control": "no-store"})


async def validation_screenshot(request: web.Request) -> web.FileResponse:
    """A UI-check screenshot: no login (GitHub fetches it for the check run); the address is the secret."""
    path = screenshot_file(request.app[SERVICES].settings.data_dir, request.match_info["validation_id"],
                           request.match_info["file"])
    if path is None:
        raise web.HTTPNotFound(text="no such screenshot")
    return web.FileResponse(path, headers={"Content-Type": "image/png", "Cache-Control": "private, max-age=86400",
                                           "X-Robots-Tag": "noindex", "X-Content-Type-Options": "nosniff"})
