"""`codegenapp status`: how the processes on the database stand, read from the database itself (no running
server needed): the workers alive and lost, the job queue, the last sweep of the App's delivery log and the
last resync. The same facts as /health's (bot/web.py and bot/fleet.py build both); for a terminal, or
`--json` for scripts. Exit code 0 healthy (the database answers and a worker is alive), 1 unhealthy (no
worker alive), 2 the database cannot be read."""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from bot.config import Settings
from bot.models import utcnow
from bot.store import Store
from bot.web import delivery_log_report, fleet_report, resync_report

EXAMPLES = """\
exit codes:
  0  healthy: the database answers and at least one worker is alive
  1  unhealthy: the database answers but no worker is alive (queued jobs wait)
  2  the database cannot be read (unreachable, missing, or its schema unreadable)

examples:
  codegenapp status
  codegenapp status --json | jq '.queue.oldest_ready_age_seconds'
"""


def add_command(commands: Any) -> None:
    status = commands.add_parser("status", help="the workers alive, the job queue, the last delivery-log sweep "
                                                "and resync, from the database",
                                 epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    status.add_argument("--json", action="store_true", help="one JSON document instead of the text for a terminal")


async def gather(settings: Settings, open_store: Callable[[], Awaitable[Store]]) -> dict[str, Any]:
    """The status document; a database that cannot be opened or read is reported in it, not raised."""
    report: dict[str, Any] = {"checked_at": utcnow().isoformat()}
    try:
        store = await open_store()
    except Exception as exc:  # noqa: BLE001 - the report says what broke
        return {**report, "healthy": False, "database": {"ok": False, "error": _error(exc)}}
    try:
        found, queue = await fleet_report(store, settings)
        report["database"] = {"ok": True, "dialect": store.db.dialect_name}
        report["workers"] = {key: value for key, value in found.describe(this_process=None).items()
                             if key != "this_process"}
        report["queue"] = queue
        report["delivery_log"] = await delivery_log_report(store, settings)
        report["resync"] = await resync_report(store, settings)
    except Exception as exc:  # noqa: BLE001 - the report says what broke
        return {**report, "healthy": False, "database": {"ok": False, "error": _error(exc)}}
    finally:
        await store.close()
    report["healthy"] = bool(found.live)
    return report


def _error(exc: Exception) -> str:
    return (str(exc) or type(exc).__name__).splitlines()[0][:1000]


async def run(settings: Settings, args: argparse.Namespace, open_store: Callable[[], Awaitable[Store]]) -> int:
    report = await gather(settings, open_store)
    print(json.dumps(report, indent=2) if args.json else text(report, now=utcnow()))
    if not report["database"]["ok"]:
        return 2
    return 0 if report["healthy"] else 1


def text(report: dict[str, Any], *, now: datetime) -> str:
    """The report for a person at a terminal."""
    database = report["database"]
    if not database["ok"]:
        return f"NOT HEALTHY: the database cannot be read ({database['error']})"
    workers, queue = report["workers"], report["queue"]
    live, lost = workers["live"], workers["lost"]
    if live:
        headline = f"healthy: {_count(len(live), 'worker')} alive"
    else:
        headline = "NOT HEALTHY: no worker is alive (start one: `codegenapp worker`, or `codegenapp serve`)"
    lines = [headline, f"database: {database['dialect']}; a worker is alive while it beat in the last "
                       f"{workers['stale_after_seconds']:g} s"]
    if live or lost:
        lines.append("")
    if live:
        lines += _table([("WORKER", "HOST", "PID", "STARTED (UTC)", "LAST BEAT", "JOBS")]
                        + [(w["id"], w["host"], str(w["pid"]), _when(w["started_at"]), f"{_ago(w['age_seconds'])} ago",
                            str(w["running_jobs"])) for w in live])
    for worker in lost:
        lines.append(f"lost: {worker['id']} on {worker['host']} stopped beating {_ago(worker['age_seconds'])} ago "
                     "without stopping cleanly (its jobs are claimed again once their leases expire)")
    lines.append("")
    oldest = queue["oldest_ready_age_seconds"]
    lines.append(f"queue: {queue['ready_now']} ready now"
                 + (f", the oldest waiting {_ago(oldest)}" if oldest is not None else "")
                 + f"; {queue['queued']} queued in all, {queue['running']} running, {queue['dead']} dead-lettered"
                 + (" (`codegenapp deliveries list --failed`)" if queue["dead"] else ""))
    if queue["by_kind"]:
        lines += _table([("KIND", "QUEUED", "READY", "RUNNING", "OLDEST READY")]
                        + [(kind, str(c["queued"]), str(c["ready_now"]), str(c["running"]),
                            "-" if c["oldest_ready_age_seconds"] is None else _ago(c["oldest_ready_age_seconds"]))
                           for kind, c in queue["by_kind"].items()])
    lines += ["", _delivery_log(report["delivery_log"], now), _resync(report["resync"], now)]
    return "\n".join(lines)


def _delivery_log(log: dict[str, Any], now: datetime) -> str:
    every = f"mode {log['mode']}, every {log['interval_seconds']:g} s"
    if "error" in log and "last_run" not in log:
        return f"delivery log: unknown ({log['error']})"
    if not log.get("last_run"):
        return f"delivery log: never swept yet ({every})"
    outcome = f"failed: {log.get('error')}" if log.get("failed") else f"{log.get('ingested') or 0} ingested"
    return f"delivery log: last swept {_since(log['last_run'], now)}, {outcome} ({every})"


def _resync(resync: dict[str, Any], now: datetime) -> str:
    every = (f"every {resync['interval_seconds']:g} s" if resync["interval_seconds"] else "off (RESYNC_INTERVAL=0)")
    if "error" in resync and "last_run" not in resync:
        return f"resync: unknown ({resync['error']})"
    if not resync.get("last_run"):
        return f"resync: never run yet ({every})"
    details = f"{resync.get('started') or 0} validations started"
    if resync.get("cut_short"):
        details += f", cut short by RESYNC_MAX_STARTS ({resync.get('left_over')} left for the next run)"
    if resync.get("failed"):
        details += ", a repository failed"
    return f"resync: last run {_since(resync['last_run'], now)}, {details} ({every})"


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _when(iso: str) -> str:
    return f"{datetime.fromisoformat(iso):%Y-%m-%d %H:%M:%S}"


def _since(iso: str, now: datetime) -> str:
    try:
        return f"{_ago((now - datetime.fromisoformat(iso)).total_seconds())} ago"
    except (TypeError, ValueError):
        return str(iso)


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
