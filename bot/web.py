"""The aiohttp application: thin routes over the services."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from bot import metrics
from bot import registration
from bot import webhooks
from bot.config import WEBHOOK_PATH, Settings
from bot.models import utcnow
from bot.services import SERVICES, SETTINGS, Services, start_services
from dashboard.api import add_routes as add_api_routes
from dashboard import views as dashboard_views
from dashboard.pages import validation_live, validation_page, validation_screenshot
from dashboard.runs import setup as setup_run_pages
from pipeline.ui_check.check import describe_browser

log = logging.getLogger(__name__)

HEARTBEAT_STALE_SECONDS = 120


def create_app(settings: Settings, *, with_worker: bool = True) -> web.Application:
    app = web.Application(client_max_size=settings.max_webhook_bytes)
    app[SETTINGS] = settings

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        services = await start_services(settings, with_worker=with_worker)
        app[SERVICES] = services
        if not services.settings.app_configured:
            # Setup mode: only who holds the one-time token (DATA_DIR/setup-token, 0600) may register the App.
            token = registration.ensure_setup_token(services.settings)
            log.warning("no GitHub App configured: register it at %s/?setup_token=%s",
                        services.settings.public_url, token)
        yield
        await services.close()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_post(WEBHOOK_PATH, webhooks.receive)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics_page)
    dashboard_views.setup(app)  # /, setup, login, projects, settings, /api/v1/ws (dashboard/views.py)
    app.router.add_get("/validations/{validation_id:[0-9a-f]{32}}", validation_page)
    app.router.add_get("/validations/{validation_id:[0-9a-f]{32}}/live", validation_live)
    app.router.add_get("/validations/{validation_id:[0-9a-f]{32}}/screenshots/{file}", validation_screenshot)
    add_api_routes(app)
    setup_run_pages(app)  # agent-run pages (dashboard/runs.py)
    return app


async def health(request: web.Request) -> web.Response:
    services: Services = request.app[SERVICES]
    report: dict[str, object] = {"app_configured": services.settings.app_configured}
    healthy = True
    try:
        await services.store.ping()
        report["database"] = {"ok": True, "dialect": "sqlite" if services.store.db.is_sqlite else "postgresql"}
        report["queue"] = await services.store.jobs.counts()
        beat = await services.store.heartbeats.latest()
        if beat is None:
            report["worker"] = {"ok": False, "reason": "no worker has reported"}
        else:
            age = (utcnow() - beat.seen_at).total_seconds()
            report["worker"] = {"ok": age < HEARTBEAT_STALE_SECONDS, "last_heartbeat": beat.seen_at.isoformat(),
                                "age_seconds": round(age, 1), "running_jobs": beat.running_jobs,
                                "worker_id": beat.worker_id}
    except Exception as exc:  # noqa: BLE001 - health must answer whatever broke
        healthy = False
        report["database"] = {"ok": False, "error": type(exc).__name__}
    if services.sandbox is not None:
        report["sandbox"] = services.sandbox.capabilities.describe()
        report["browser"] = describe_browser(services.settings.chromium_path, services.sandbox.capabilities)
    report["status"] = "ok" if healthy else "unavailable"
    return web.json_response(report, status=200 if healthy else 503)


async def metrics_page(request: web.Request) -> web.Response:
    services: Services = request.app[SERVICES]
    try:
        for state, count in (await services.store.jobs.counts()).items():
            metrics.QUEUE_DEPTH.labels(state).set(count)
    except Exception:  # noqa: BLE001 - metrics stay available when the database is not
        log.exception("could not refresh queue depth")
    return web.Response(body=metrics.render(), content_type="text/plain", charset="utf-8",
                        headers={"Cache-Control": "no-store"})
