"""The processes sharing one database, seen from any of them: which workers are alive (from their
heartbeats) and how the job queue stands. Pure: the rows and the clock in, plain data out, for /health,
/metrics and `codegenapp status` alike (bot/web.py reads the rows).

A worker beats every third of JOB_LEASE_SECONDS (worker/runner.py); it is alive while its latest beat is
younger than `stale_after_seconds`: two leases, i.e. six beats missed, at least a minute. A worker that
stopped cleanly removed its row; one that stopped beating without that (killed, its machine gone, its
database connection lost) is listed as `lost` for LOST_WINDOW after its last beat.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from bot.models import JOB_QUEUED, JOB_RUNNING

MIN_STALE_SECONDS = 60.0
LOST_WINDOW = timedelta(days=1)


class Beat(Protocol):
    """What is read of a worker's heartbeat row (bot.models.WorkerHeartbeat)."""

    @property
    def worker_id(self) -> str: ...
    @property
    def hostname(self) -> str: ...
    @property
    def pid(self) -> int: ...
    @property
    def started_at(self) -> datetime: ...
    @property
    def seen_at(self) -> datetime: ...
    @property
    def running_jobs(self) -> int: ...


class KindRow(Protocol):
    """Jobs of one kind in one state (bot.store.jobs.KindCount)."""

    @property
    def kind(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def count(self) -> int: ...
    @property
    def ready(self) -> int: ...
    @property
    def oldest_ready_at(self) -> datetime | None: ...


def stale_after_seconds(lease_seconds: float) -> float:
    return max(MIN_STALE_SECONDS, 2 * lease_seconds)


@dataclass(frozen=True)
class Workers:
    live: list[dict[str, Any]]
    lost: list[dict[str, Any]]
    stale_after_seconds: float

    def describe(self, *, this_process: str | None) -> dict[str, Any]:
        """/health's `workers`: `this_process` is the id of the worker this process runs (None: none)."""
        return {"alive": len(self.live), "stale_after_seconds": self.stale_after_seconds,
                "this_process": this_process, "live": self.live, "lost": self.lost}

    def includes(self, worker_id: str) -> bool:
        return any(worker["id"] == worker_id for worker in self.live)


def workers(beats: Iterable[Beat], *, now: datetime, stale_after: float) -> Workers:
    """The workers alive (latest beat within `stale_after` seconds) and those lost, each newest first."""
    live: list[dict[str, Any]] = []
    lost: list[dict[str, Any]] = []
    for beat in sorted(beats, key=lambda b: b.seen_at, reverse=True):
        age = max(0.0, (now - beat.seen_at).total_seconds())
        if age > LOST_WINDOW.total_seconds():
            continue
        (live if age <= stale_after else lost).append({
            "id": beat.worker_id, "host": beat.hostname, "pid": beat.pid, "started_at": beat.started_at.isoformat(),
            "last_heartbeat": beat.seen_at.isoformat(), "age_seconds": round(age, 1),
            "running_jobs": beat.running_jobs})
    return Workers(live, lost, stale_after)


def queue(rows: Iterable[KindRow], *, dead: int, now: datetime) -> dict[str, Any]:
    """The queue: totals by state (`queued` counts those waiting to retry later too), `ready_now` (queued
    and due: what a free worker would claim now), how long the oldest of those has been due, and the
    same per kind."""
    totals = {JOB_QUEUED: 0, JOB_RUNNING: 0, "dead": dead}
    by_kind: dict[str, dict[str, Any]] = {}
    oldest: datetime | None = None
    ready = 0
    for row in rows:
        kind = by_kind.setdefault(row.kind, {JOB_QUEUED: 0, JOB_RUNNING: 0, "ready_now": 0,
                                             "oldest_ready_age_seconds": None})
        if row.status not in (JOB_QUEUED, JOB_RUNNING):
            continue
        totals[row.status] += row.count
        kind[row.status] += row.count
        kind["ready_now"] += row.ready
        ready += row.ready
        if row.oldest_ready_at is not None:
            kind["oldest_ready_age_seconds"] = _age(row.oldest_ready_at, now)
            oldest = row.oldest_ready_at if oldest is None else min(oldest, row.oldest_ready_at)
    return {**totals, "ready_now": ready, "oldest_ready_age_seconds": None if oldest is None else _age(oldest, now),
            "by_kind": dict(sorted(by_kind.items()))}


def _age(since: datetime, now: datetime) -> float:
    return round(max(0.0, (now - since).total_seconds()), 1)
