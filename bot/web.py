"""The app's own routes: /health and /metrics (the dashboard's are in dashboard/; bot/app.py builds the
aiohttp application)."""

from __future__ import annotations

import logging

from aiohttp import web

from bot import metrics
from bot.config import Settings
from bot.models import utcnow
from bot.services import SERVICES, Services
from pipeline.deliveries.service import STATE_KEY as DELIVERY_LOG_STATE
from pipeline.resync.service import STATE_KEY as RESYNC_STATE
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
    report["resync"] = await resync_report(services)
    report["delivery_log"] = await delivery_log_report(services)
    report["disk"] = disk = disk_report(services.settings, services.volumes)
    healthy = healthy and bool(disk["ok"])
    # GitHub failing pauses the app's GitHub work (it resumes by itself): reported, not unhealthy.
    report["github"] = services.github.status()
    report["sandbox"] = services.sandbox.capabilities.describe()
    if services.browser is not None:
        report["browser"] = services.browser.describe()  # one real launch at start, or "checking"
    report["status"] = "ok" if healthy else "unavailable"
    return web.json_response(report, status=200 if healthy else 503)


async def resync_report(services: Services) -> dict[str, object]:
    """The last resync of open pull requests (pipeline/resync), whichever process ran it: when, how many
    validations it started, whether RESYNC_MAX_STARTS cut it short, whether a repository failed."""
    report: dict[str, object] = {"interval_seconds": services.settings.resync_interval,
                                 "max_starts": services.settings.resync_max_starts}
    try:
        last = await services.store.app_state.get(RESYNC_STATE)
    except Exception as exc:  # noqa: BLE001 - the database part of /health says what broke
        return {**report, "error": type(exc).__name__}
    if last is None:
        return {**report, "last_run": None}
    return {**report, "last_run": last.get("finished_at"), "started": last.get("started"),
            "cut_short": last.get("cut_short"), "left_over": last.get("left_over"), "failed": last.get("failed"),
            "failures": last.get("failures")}


async def delivery_log_report(services: Services) -> dict[str, object]:
    """How events arrive (WEBHOOK_MODE) and the last sweep of the App's delivery log (pipeline/deliveries),
    whichever process ran it: when, whether it failed and why, what it ingested."""
    settings = services.settings
    polling = settings.webhook_mode == "poll"
    report: dict[str, object] = {"mode": settings.webhook_mode,
                                 "interval_seconds": settings.poll_interval if polling else settings.sweep_interval}
    try:
        state = await services.store.app_state.get(DELIVERY_LOG_STATE) or {}
    except Exception as exc:  # noqa: BLE001 - the database part of /health says what broke
        return {**report, "error": type(exc).__name__}
    last = state.get("last_run") if isinstance(state.get("last_run"), dict) else None
    if last is None:
        return {**report, "last_run": None}
    return {**report, "last_run": last.get("finished_at"), "failed": not last.get("ok"), "error": last.get("error"),
            "ingested": last.get("ingested"), "skipped": last.get("skipped"), "stopped_at": last.get("stopped_at"),
            "pages": last.get("pages"), "seconds": last.get("seconds"), "stop_point": state.get("floor")}


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
