"""The app's own routes: /health and /metrics (the dashboard's are in dashboard/; bot/app.py builds the
aiohttp application)."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from bot import fleet, metrics
from bot.config import Settings
from bot.models import utcnow
from bot.services import SERVICES, Services
from bot.store import Store
from pipeline.deliveries.service import STATE_KEY as DELIVERY_LOG_STATE
from pipeline.resync.service import STATE_KEY as RESYNC_STATE
from pipeline.workspace.volumes import RunVolumes, free_bytes, gib

log = logging.getLogger(__name__)

async def health(request: web.Request) -> web.Response:
    """200 with "status": "ok", or 503 "unavailable" for what is wrong with this process: its database,
    DATA_DIR's free space, or (where it runs a worker) its own worker not beating. No live worker anywhere
    is reported under `workers` but is not a 503: a `serve --no-worker` behind a load balancer still takes
    webhooks in (they wait in the queue), and taking it out would lose them instead."""
    services: Services = request.app[SERVICES]
    report: dict[str, object] = {"app_configured": services.settings.app_configured}
    healthy = True
    own = services.worker.worker_id if services.worker is not None else None
    try:
        await services.store.ping()
        report["database"] = {"ok": True, "dialect": services.store.db.dialect_name}
        found, report["queue"] = await fleet_report(services.store, services.settings)
        report["workers"] = described = found.describe(this_process=own)
        if own is not None and not found.includes(own):
            healthy = False
            described["reason"] = (f"this process's worker has not beaten for over {found.stale_after_seconds:g} s "
                                   "(its event loop or its database writes are stuck)")
        elif not found.live:
            described["reason"] = "no worker is alive: queued jobs wait until one starts"
    except Exception as exc:  # noqa: BLE001 - health must answer whatever broke
        healthy = False
        report["database"] = {"ok": False, "error": type(exc).__name__}
    if services.event_bridge is not None:  # PostgreSQL: reconnecting is degraded (events wait), not a 503
        report["event_bridge"] = services.event_bridge.status()
    report["resync"] = await resync_report(services.store, services.settings)
    report["delivery_log"] = await delivery_log_report(services.store, services.settings)
    report["disk"] = disk = disk_report(services.settings, services.volumes)
    healthy = healthy and bool(disk["ok"])
    # GitHub failing pauses the app's GitHub work (it resumes by itself): reported, not unhealthy.
    report["github"] = services.github.status()
    report["sandbox"] = services.sandbox.capabilities.describe()
    if services.browser is not None:
        report["browser"] = services.browser.describe()  # one real launch at start, or "checking"
    report["status"] = "ok" if healthy else "unavailable"
    return web.json_response(report, status=200 if healthy else 503)


async def fleet_report(store: Store, settings: Settings) -> tuple[fleet.Workers, dict[str, Any]]:
    """The workers alive (and lost) across every process on the database, and the queue (bot/fleet.py):
    two cheap reads, the heartbeats of the last day and the queue's counts."""
    now = utcnow()
    beats = await store.heartbeats.since(now - fleet.LOST_WINDOW)
    summary = await store.jobs.queue_summary()
    found = fleet.workers(beats, now=now, stale_after=fleet.stale_after_seconds(settings.job_lease_seconds))
    return found, fleet.queue(summary.rows, dead=summary.dead, now=summary.read_at)


async def resync_report(store: Store, settings: Settings) -> dict[str, object]:
    """The last resync of open pull requests (pipeline/resync), whichever process ran it: when, how many
    validations it started, whether RESYNC_MAX_STARTS cut it short, whether a repository failed."""
    report: dict[str, object] = {"interval_seconds": settings.resync_interval, "max_starts": settings.resync_max_starts}
    try:
        last = await store.app_state.get(RESYNC_STATE)
    except Exception as exc:  # noqa: BLE001 - the database part of /health says what broke
        return {**report, "error": type(exc).__name__}
    if last is None:
        return {**report, "last_run": None}
    return {**report, "last_run": last.get("finished_at"), "started": last.get("started"),
            "cut_short": last.get("cut_short"), "left_over": last.get("left_over"), "failed": last.get("failed"),
            "failures": last.get("failures")}


async def delivery_log_report(store: Store, settings: Settings) -> dict[str, object]:
    """How events arrive (WEBHOOK_MODE) and the last sweep of the App's delivery log (pipeline/deliveries),
    whichever process ran it: when, whether it failed and why, what it ingested."""
    polling = settings.webhook_mode == "poll"
    report: dict[str, object] = {"mode": settings.webhook_mode,
                                 "interval_seconds": settings.poll_interval if polling else settings.sweep_interval}
    try:
        state = await store.app_state.get(DELIVERY_LOG_STATE) or {}
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
        found, queue = await fleet_report(services.store, services.settings)
        metrics.refresh_fleet(live_workers=len(found.live), queue=queue)
    except Exception:  # noqa: BLE001 - metrics stay available when the database is not
        log.exception("could not refresh the workers and the queue depth")
    return web.Response(body=metrics.render(), content_type="text/plain", charset="utf-8",
                        headers={"Cache-Control": "no-store"})
