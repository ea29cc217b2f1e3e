"""A validation's page (its check run's details_url), its live tail and its UI-check screenshots."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web

from bot import labels
from bot.models import SUBJECT_PULL_REQUEST, VALIDATION_ACTIVE, ValidationState, utcnow
from bot.services import SERVICES
from dashboard.rendering import templates
from dashboard.validation_view import FAILED_STATES, elapsed_seconds, notice_for, step_rows, with_code
from pipeline.ui_check.retention import screenshots_expired
from pipeline.ui_check.screenshots import screenshot_file, screenshot_url, screenshots_dir
from pipeline.validation.subjects import subject_lead


def _page_model(validation: ValidationState, *, now: datetime, full_logs: bool = False) -> dict[str, Any]:
    """The steps and the state of a validation as its page and its live poll show them."""
    results = validation.test_results or {}
    running = validation.status in VALIDATION_ACTIVE
    live = results.get("live") or {}
    if results.get("steps"):
        rows = step_rows(results["steps"], full_logs=full_logs, findings=results.get("findings") or [])
    else:  # running, or ended before it reported (cancelled, superseded): as far as it got
        rows = step_rows(live.get("steps") or [], planned=live.get("planned") or [], current=live.get("current"),
                         current_stage=live.get("stage"), current_tail=live.get("tail") or "", running=running,
                         current_elapsed=elapsed_seconds(live.get("current_started_at"), now))
    ended_at = validation.completed_at if not running else now
    took = elapsed_seconds(validation.started_at, ended_at) if validation.started_at and ended_at else None
    return {"rows": rows, "running": running, "took": labels.duration(took) if took is not None else "",
            "first_failed": next((row for row in rows if row.state in FAILED_STATES), None),
            "state_label": labels.validation_state(validation.status, validation.conclusion),
            "state_class": _state_class(validation.status, validation.conclusion)}


def _state_class(status: str, conclusion: str | None) -> str:
    """The page's colour of a validation's state."""
    if status in VALIDATION_ACTIVE:
        return "running"
    if status == "waiting":
        return "waiting"
    return {"success": "passed", "failure": "failed", "timed_out": "failed"}.get(conclusion or "", "neutral")


async def validation_page(request: web.Request) -> web.Response:
    """The check run's details_url. Its address is an unguessable id (128 random bits), so GitHub can
    link it without a login, like the screenshots of the UI check."""
    services = request.app[SERVICES]
    validation = await services.store.validations.get(request.match_info["validation_id"])
    if validation is None:
        raise web.HTTPNotFound(text="no such validation")
    project = await services.store.projects.get_project(validation.project_id)
    results = validation.test_results or {}
    screenshots = [{**shot, "url": screenshot_url("", validation.id, shot["file"])}
                   for shot in results.get("screenshots", [])]
    retention_days = services.settings.screenshot_retention_days
    # Past the retention they are deleted (or about to be, at the next hourly prune): say so, no broken images.
    expired = bool(screenshots) and (
        screenshots_expired(validation, now=utcnow(), retention_days=retention_days)
        or not screenshots_dir(services.settings.data_dir, validation.id).is_dir())
    model = _page_model(validation, now=utcnow(), full_logs=request.query.get("full") == "1")
    repository = project.name if project is not None else "this repository"
    notice = notice_for(status=validation.status, conclusion=validation.conclusion, title=validation.title,
                        has_steps=bool(model["rows"]), author=validation.author, repository=repository,
                        head_sha=validation.head_sha, error=results.get("error") or results.get("config_error"),
                        of_pull_request=validation.subject == SUBJECT_PULL_REQUEST)
    html = templates.get_template("validation.html").render(
        validation=validation, project=project, **model, notice=notice, with_code=with_code,
        notes=results.get("notes", []),
        triggered=labels.triggered(validation.trigger, validation.triggered_by),
        subject_lead=subject_lead(validation.subject),
        screenshots=[] if expired else screenshots, screenshots_expired=len(screenshots) if expired else 0,
        retention_days=retention_days, github_url=services.settings.github_url)
    return web.Response(text=html, content_type="text/html",
                        headers={"Cache-Control": "no-store", "X-Robots-Tag": "noindex",
                                 "Referrer-Policy": "no-referrer"})


async def validation_live(request: web.Request) -> web.Response:
    """Every step's state and the running step's numbered log, polled by the validation page
    (static/validation-live.js) while the run goes on."""
    services = request.app[SERVICES]
    validation = await services.store.validations.get(request.match_info["validation_id"])
    if validation is None:
        raise web.HTTPNotFound(text="no such validation")
    model = _page_model(validation, now=utcnow())
    running = model["running"]
    live = (validation.test_results or {}).get("live") if running else None
    current = next((row for row in model["rows"] if row.state == "running"), None)
    return web.json_response({"status": validation.status, "conclusion": validation.conclusion, "running": running,
                              "state_label": model["state_label"], "took": model["took"],
                              "current": (live or {}).get("current"), "stage": (live or {}).get("stage"),
                              "steps": [row.as_json() for row in model["rows"]],
                              "current_key": current.key if current else None,
                              "log": current.log if current else [],
                              "log_lines": current.log_lines if current else 0},
                             headers={"Cache-Control": "no-store"})


async def validation_screenshot(request: web.Request) -> web.FileResponse:
    """A UI-check screenshot: no login (GitHub fetches it for the check run); the address is the secret."""
    path = screenshot_file(request.app[SERVICES].settings.data_dir, request.match_info["validation_id"],
                           request.match_info["file"])
    if path is None:
        raise web.HTTPNotFound(text="no such screenshot")
    return web.FileResponse(path, headers={"Content-Type": "image/png", "Cache-Control": "private, max-age=86400",
                                           "X-Robots-Tag": "noindex", "X-Content-Type-Options": "nosniff"})
