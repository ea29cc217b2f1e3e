"""The dashboard's routes, one module a page: onboarding (App registration), projects (home, a project),
merge_queue (a project's merge queues), project_settings, audit, deliveries (replay), account (API tokens),
runs (agent runs), validation (a validation's page, linked from its check run), live (the WebSocket
`/api/v1/ws`), api (the JSON API, added by bot/app.py).

Server-rendered with Jinja2 (autoescape on); plain JS and CSS files in `static/`, no build step and no
inline script or style (the Content-Security-Policy of dashboard/security_headers.py allows none).
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from dashboard import (account, audit, auth, deliveries, limits, live, merge_queue, onboarding, project_settings,
                       projects, runs, security_headers, validation)

STATIC = Path(__file__).resolve().parent / "static"
_VALIDATION = "/validations/{validation_id:[0-9a-f]{32}}"


def setup(app: web.Application) -> None:
    auth.setup(app)
    limits.setup(app)
    security_headers.setup(app)
    app[live.WEBSOCKETS] = set()
    app[live.SHARED_STATUS] = live.SharedStatus()
    app.on_shutdown.append(live.close_websockets)
    app.router.add_get("/", projects.index)
    app.router.add_get("/setup/callback", onboarding.setup_callback)
    app.router.add_get("/projects/{owner}/{repo}", projects.project_page)
    app.router.add_post("/projects/{owner}/{repo}/pin", projects.pin)
    app.router.add_get("/projects/{owner}/{repo}/pulls", projects.pulls_table)
    app.router.add_get("/projects/{owner}/{repo}/queue", merge_queue.queue_page)
    app.router.add_get("/projects/{owner}/{repo}/queue/branches", merge_queue.queue_branches)
    app.router.add_post("/projects/{owner}/{repo}/queue/{number:[0-9]{1,9}}/dequeue", merge_queue.dequeue)
    app.router.add_get("/projects/{owner}/{repo}/settings", project_settings.settings_page)
    app.router.add_post("/projects/{owner}/{repo}/settings", project_settings.save_settings)
    app.router.add_post("/projects/{owner}/{repo}/secrets", project_settings.save_secret)
    app.router.add_get("/projects/{owner}/{repo}/secrets/{name}/delete", project_settings.confirm_delete_secret)
    app.router.add_post("/projects/{owner}/{repo}/secrets/{name}/delete", project_settings.delete_secret)
    app.router.add_get("/projects/{owner}/{repo}/audit", audit.audit_page)
    app.router.add_get("/projects/{owner}/{repo}/deliveries", deliveries.deliveries_page)
    app.router.add_post("/projects/{owner}/{repo}/deliveries/{delivery_id:[^/]{1,64}}/replay", deliveries.replay)
    app.router.add_get("/account", account.account_page)
    app.router.add_post("/account/tokens", account.create_token)
    app.router.add_post("/account/tokens/{token_id}/delete", account.delete_token)
    runs.setup(app)
    app.router.add_get(_VALIDATION, validation.validation_page)
    app.router.add_get(_VALIDATION + "/live", validation.validation_live)
    app.router.add_get(_VALIDATION + "/screenshots/{file}", validation.validation_screenshot)
    app.router.add_get("/api/v1/ws", live.websocket)
    app.router.add_static("/static/", STATIC, append_version=True)
