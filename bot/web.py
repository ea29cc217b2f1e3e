"""The app's own routes: /health and /metrics (the dashboard's are in dashboard/; bot/app.py builds the
aiohttp application)."""

from __future__ import annotations

import logging

from aiohttp import web

from bot import metrics
from bot.config import Settings
from bot.models import utcnow
from bot.services import SERVICES, Services
from pipeline.workspace.volumes import RunVolumes, free_bytes, gib

log = logging.getLogger(__name__)

HEARTBEAT_STALE_SECONDS = 120


async def health(request: web.Request) -> web.Response:
    services: Services = request.app[SERVICES]
    report: dict[str, object] = {"app_configured": services.settings.app_configured}
    healthy = True
    try:
        await services.store.ping()
        report["database"] = {"ok": True, "dialect": services.store.db.dialect_name}
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
    report["disk"] = disk = disk_report(services.settings, services.volumes)
    healthy = healthy and bool(disk["ok"])
    # GitHub failing pauses the app's GitHub work (it resumes by itself): reported, not unhealthy.
    report["github"] = services.github.status()
    report["sandbox"] = services.sandbox.capabilities.describe()
    if services.browser is not None:
        report["browser"] = services.browser.describe()  # one real launch at start, or "checking"
    report["status"] = "ok" if healthy else "unavailable"
    return web.json_response(report, status=200 if healthy else 503)


def disk_report(settings: Settings, volumes: RunVolumes | None) -> dict[str, object]:
    """Free space on DATA_DIR (the database, the ingress and every run's workspace live there): not ok
    below MIN_FREE_DISK_GIB. `runs`: how each run's own disk use is bounded."""
    try:
        free, total = free_bytes(settings.data_dir)
    except OSError as exc:
        return {"ok": False, "reason": f"DATA_DIR cannot be examined: {exc.strerror}"}
    report: dict[str, object] = {"ok": free >= settings.min_free_disk_bytes, "free_bytes": free,
                                 "total_bytes": total, "min_free_bytes": settings.min_free_disk_bytes}
    if not report["ok"]:
        report["reason"] = (f"{gib(free)} GiB free on DATA_DIR, below MIN_FREE_DISK_GIB "
                            f"({gib(settings.min_free_disk_bytes)} GiB)")
    if volumes is not None:
        report["runs"] = volumes.describe()
    return report


async def metrics_page(request: web.Request) -> web.Response:
    services: Services = request.app[SERVICES]
    try:
        for state, count in (await services.store.jobs.counts()).items():
            metrics.QUEUE_DEPTH.labels(state).set(count)
    except Exception:  # noqa: BLE001 - metrics stay available when the database is not
        log.exception("could not refresh queue depth")
    return web.Response(body=metrics.render(), content_type="text/plain", charset="utf-8",
                        headers={"Cache-Control": "no-store"})
