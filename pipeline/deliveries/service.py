"""The delivery-log sweep, the thin shell around `sweep.py`'s decisions: page the App's delivery log
(bot/github/hook_deliveries.py), fetch each delivery the app has not stored, and ingest it through the
webhook ingress's own path (`ingest`, given by the composition root: bot/webhooks.py `ingest_logged`), with
the same dedupe by X-GitHub-Delivery. What cannot be ingested is recorded in skipped_deliveries with the
reason and skipped; it never stops the sweep.

It runs as a task of its own, at start and then every `interval` seconds (the recovery sweep in webhook
mode, SWEEP_INTERVAL; in polling mode, POLL_INTERVAL: the primary way events arrive). A database lease
keeps it to one process at a time; a failed sweep (GitHub failing, a rate limit, a JWT GitHub refuses)
is reported in /health and tried again after a backoff. It never asks GitHub to redeliver.

It never holds up live deliveries: before storing each one it waits while `max_queued` webhook jobs or
more are queued (due, not yet claimed), re-checking as each job finishes (the bus's "job.finished") and
at least every RECHECK_SECONDS. Jobs are claimed oldest first, so a live delivery queued meanwhile waits
behind at most `max_queued` recovered ones, not behind the whole backlog of an outage.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bot import metrics
from bot.errors import GitHubUnavailable
from bot.events import EventBus
from bot.github.hook_deliveries import (DeliveryDetail, FailingDelivery, HookDeliveries, LoggedDelivery,
                                         RefusedDelivery, UnreadableEntry)
from bot.models import JOB_WEBHOOK, utcnow
from bot.store import Store
from bot.redact import PROCESS_REDACTOR
from bot.store.leases import held
from pipeline.deliveries.sweep import (MAX_FETCH_FAILURES, STOP_END, SweepMark, fetch_failures,
                                       first_sweep_since, ingest_order, judge_page, payload_problem, retry_delay)

log = logging.getLogger(__name__)

LEASE = "delivery-log-sweep"
STATE_KEY = "delivery_log_sweep"
LEASE_TTL = timedelta(seconds=60)
MARK_EVERY = 50  # ingested deliveries between two saves of the stop point
PREFETCH = 8  # deliveries fetched ahead of the one being ingested (ingested in order, oldest first)
RECHECK_SECONDS = 0.5  # while waiting for the webhook queue to shrink: re-counted at least this often


@dataclass(frozen=True)
class Ingested:
    """What the ingress made of a delivery: stored now (`accepted`), already stored (a duplicate), or
    refused as malformed (`rejected`: the reason)."""

    accepted: bool
    rejected: str | None = None


# (guid, event, payload, source) -> the outcome; bot/webhooks.py `ingest_logged`
Ingest = Callable[[str, str, dict[str, Any], str], Awaitable[Ingested]]
# (event, guid, payload) -> why the payload is not the shape its event promises (handlers/payloads.py), or None
ShapeCheck = Callable[[str, str, Mapping[str, Any]], str | None]


@dataclass
class SweepReport:
    started_at: datetime
    pages: int = 0
    ingested: int = 0
    duplicates: int = 0
    skipped: int = 0
    stopped_at: str = STOP_END
    seconds: float = 0.0


class DeliveryLogSweep:
    def __init__(self, store: Store, delivery_log: Callable[[], HookDeliveries], *, ingest: Ingest,
                 shape_problem: ShapeCheck, source: str, interval: float, bus: EventBus | None = None,
                 configured: Callable[[], bool] = lambda: True, holder: str | None = None,
                 per_page: int = 100, first_lookback: float = 3600.0, max_queued: int = 32) -> None:
        """`delivery_log`: the App's log (GitHubApp.hook_deliveries). `source`: what the deliveries it
        stores are (DELIVERY_RECOVERED, or DELIVERY_POLLED in polling mode). `interval`: seconds between
        sweeps (0: only `sweep()` when called). `configured`: whether the App is configured (no sweep before).
        `first_lookback`: seconds the first sweep of a new database looks back (SWEEP_FIRST_LOOKBACK).
        `max_queued`: queued webhook jobs at or above which it waits before storing another (0: never waits)."""
        self.store = store
        self._delivery_log = delivery_log
        self._ingest = ingest
        self._shape_problem = shape_problem
        self.source = source
        self.interval = interval
        self.bus = bus or EventBus()
        self._configured = configured
        self.holder = (holder or f"{os.getpid()}:{uuid.uuid4().hex[:8]}:{socket.gethostname()}")[:64]
        self.per_page = per_page
        self.first_lookback = timedelta(seconds=first_lookback)
        self.max_queued = max_queued
        self.failures = 0  # sweeps failed in a row (the backoff)
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Sweep now, then every `interval` seconds, in a task of its own."""
        if self._task is None and self.interval > 0:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="delivery-log-sweep")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _loop(self) -> None:
        while True:
            delay = self.interval
            if self._configured():
                try:
                    await self.sweep()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - reported in /health, tried again after a backoff
                    retry_after = exc.retry_after if isinstance(exc, GitHubUnavailable) else None
                    delay = retry_delay(self.interval, self.failures, retry_after=retry_after)
            await asyncio.sleep(delay)

    # ------------------------------------------------------------------ one sweep

    async def sweep(self) -> SweepReport | None:
        """One sweep under the lease; None when another process holds it (it is sweeping). Its outcome is
        kept in app_state with the stop point, for /health in any process (`last_run`). The lease is renewed
        in the background (`held`) however long one GitHub call takes; if it is lost, the sweep is cancelled
        and `LeaseLost` raised. Whatever fails, taking the lease included (the database away), counts as a
        failed sweep: it backs off and is reported."""
        started = utcnow()
        try:
            async with held(self.store.leases, LEASE, self.holder, ttl=LEASE_TTL) as mine:
                if not mine:
                    log.debug("delivery log: %s is sweeping it", await self.store.leases.holder(LEASE))
                    return None
                started = utcnow()
                report = await self._sweep(started)
        except Exception as exc:
            await self._failed(started, exc)
            raise
        self.failures = 0
        metrics.DELIVERY_SWEEPS.labels("ok").inc()
        if report.ingested or report.skipped:
            log.info("delivery log: %d deliveries ingested (%s), %d skipped, %d already stored; stopped at %s",
                     report.ingested, self.source, report.skipped, report.duplicates, report.stopped_at)
        self.bus.publish("delivery_log.swept", holder=self.holder, source=self.source, ingested=report.ingested,
                         skipped=report.skipped, duplicates=report.duplicates, stopped_at=report.stopped_at)
        return report

    async def _failed(self, started: datetime, exc: Exception) -> None:
        self.failures += 1
        status = getattr(exc, "status_code", None)  # gidgethub's: what GitHub answered
        # Kept for /health and `codegenapp status`, and sent to the other processes: masked first.
        error = PROCESS_REDACTOR.redact(f"{type(exc).__name__}{f' {int(status)}' if status else ''}: {exc}")
        metrics.DELIVERY_SWEEPS.labels("failed").inc()
        log.warning("delivery log sweep failed (%d in a row): %s", self.failures, error)
        await self._record_run(started, ok=False, error=error)
        self.bus.publish("delivery_log.failed", holder=self.holder, error=error)

    async def _record_run(self, started: datetime, *, ok: bool, error: str | None = None,
                          report: SweepReport | None = None, mark: SweepMark | None = None) -> None:
        """The stop point (`floor`) and what the last sweep did, in one app_state record."""
        try:
            state = dict(await self.store.app_state.get(STATE_KEY) or {})
            if mark is not None:
                state.update(mark.to_state())
            last: dict[str, Any] = {"started_at": started.isoformat(), "finished_at": utcnow().isoformat(),
                                    "ok": ok, "error": error, "source": self.source, "holder": self.holder}
            if report is not None:
                last.update(pages=report.pages, ingested=report.ingested, duplicates=report.duplicates,
                            skipped=report.skipped, stopped_at=report.stopped_at, seconds=round(report.seconds, 3))
            state["last_run"] = last
            await self.store.app_state.put(STATE_KEY, state)
        except Exception:  # noqa: BLE001 - a sweep that failed on the database may fail to say so too
            if ok:
                raise
            log.exception("recording the failed delivery log sweep failed")

    async def _sweep(self, started: datetime) -> SweepReport:
        report = SweepReport(started)
        clock = time.monotonic()
        state = await self.store.app_state.get(STATE_KEY)
        mark = SweepMark.from_state(state)
        since = first_sweep_since(mark, anything_known=await self.store.delivery_log.anything_known(), now=started,
                                  lookback=self.first_lookback) if mark.floor is None else None
        delivery_log = self._delivery_log()
        fetch: list[LoggedDelivery] = []
        unreadable: list[UnreadableEntry] = []
        taken: set[str] = set()
        newest: datetime | None = None
        async for page in delivery_log.pages(per_page=self.per_page):
            report.pages += 1
            known = await self.store.delivery_log.known([e.guid for e in page if e.guid is not None])
            verdict = judge_page(page, known, mark=mark, now=started, taken=taken, since=since)
            fetch += verdict.fetch
            unreadable += verdict.unreadable
            taken.update([e.guid for e in verdict.fetch] + [e.guid for e in verdict.unreadable if e.guid])
            if verdict.newest is not None:
                newest = verdict.newest if newest is None else max(newest, verdict.newest)
            if verdict.stop is not None:
                report.stopped_at = verdict.stop
                break
        for bad in unreadable:
            await self._skip(bad.guid, bad.id, bad.event, bad.reason, report)  # type: ignore[arg-type]
        fetched = _Prefetch(delivery_log, ingest_order(fetch))
        try:
            async for entry, detail in fetched:
                if isinstance(detail, FailingDelivery):
                    detail = await self._failed_fetch(entry, detail)  # raises but the third time in a row
                elif fetch_failures(state, entry.id):
                    await self._note_failing_fetch(None)  # it answered this time
                await self._take(entry, detail, report)
                mark = mark.advanced_to(min(entry.delivered_at, started))
                if (report.ingested + report.skipped + report.duplicates) % MARK_EVERY == 0:
                    await self._save_mark(mark)
        except Exception:
            await self._save_mark(mark)  # how far it got: the next sweep goes on from there
            raise
        finally:
            await fetched.cancel()
        report.seconds = time.monotonic() - clock
        await self._record_run(started, ok=True, report=report, mark=mark.advanced_to(newest))
        return report

    async def _save_mark(self, mark: SweepMark) -> None:
        state = dict(await self.store.app_state.get(STATE_KEY) or {})
        state.update(mark.to_state())
        await self.store.app_state.put(STATE_KEY, state)

    async def _failed_fetch(self, entry: LoggedDelivery, failing: FailingDelivery) -> RefusedDelivery:
        """A delivery GitHub kept failing on (5xx, no answer) through the client's retries fails this sweep:
        it is transient, as a rule. The MAX_FETCH_FAILURES-th sweep in a row that fails on the same one skips
        it instead (returned as refused), so that one delivery cannot stop every later sweep."""
        exc = failing.error
        failures = fetch_failures(await self.store.app_state.get(STATE_KEY), entry.id) + 1
        if failures < MAX_FETCH_FAILURES:
            await self._note_failing_fetch({"id": entry.id, "guid": entry.guid, "sweeps": failures,
                                            "error": str(exc)[:300]})
            raise exc
        await self._note_failing_fetch(None)
        return RefusedDelivery(entry.id, 0, f"{failures} sweeps in a row failed on it ({exc})")

    async def _note_failing_fetch(self, failing: dict[str, Any] | None) -> None:
        state = dict(await self.store.app_state.get(STATE_KEY) or {})
        state["failing_fetch"] = failing
        await self.store.app_state.put(STATE_KEY, state)

    async def _take(self, entry: LoggedDelivery, detail: DeliveryDetail | RefusedDelivery | None,
                    report: SweepReport) -> None:
        problem = payload_problem(entry, detail)
        if problem is None:
            assert detail is not None
            try:
                problem = self._shape_problem(entry.event, entry.guid, detail.payload)
            except Exception as exc:  # noqa: BLE001 - a payload the handlers' readers choke on is not their shape
                problem = f"the payload cannot be read as a {entry.event} delivery ({type(exc).__name__}: {exc})"
        if problem is not None:
            await self._skip(entry.guid, entry.id, entry.event, problem, report)
            return
        assert detail is not None
        await self._room_in_queue(report)
        outcome = await self._ingest(entry.guid, entry.event, dict(detail.payload), self.source)
        if outcome.rejected is not None:
            await self._skip(entry.guid, entry.id, entry.event, outcome.rejected, report)
        elif outcome.accepted:
            report.ingested += 1
            metrics.DELIVERIES_RECOVERED.labels(self.source).inc()
        else:
            report.duplicates += 1  # it arrived by webhook meanwhile

    async def _room_in_queue(self, report: SweepReport) -> None:
        """Wait while `max_queued` webhook jobs or more are queued: each finished job may make room."""
        if self.max_queued <= 0:
            return
        with self.bus.subscribe() as events:  # before counting: a job finishing meanwhile is not missed
            waiting = False
            while (queued := await self.store.jobs.queued(JOB_WEBHOOK)) >= self.max_queued:
                if not waiting:
                    waiting = True
                    self.bus.publish("delivery_log.waiting", holder=self.holder, queued=queued,
                                     ingested=report.ingested)
                try:
                    async with asyncio.timeout(RECHECK_SECONDS):  # a worker in another process publishes nothing here
                        while (await events.get()).name != "job.finished":
                            pass
                except TimeoutError:
                    pass
                while not events.empty():  # what piled up meanwhile: one count covers it
                    events.get_nowait()

    async def _skip(self, guid: str, log_id: int, event: str | None, reason: str, report: SweepReport) -> None:
        log.warning("delivery log entry %s (%s, %s) skipped: %s", log_id, guid, event or "no event", reason)
        await self.store.delivery_log.skip(guid[:64], log_id=log_id, event=(event or None) and event[:64],
                                           reason=reason)
        report.skipped += 1
        metrics.DELIVERIES_SKIPPED.inc()


class _Prefetch:
    """The deliveries of `entries`, fetched up to PREFETCH ahead, handed out in order."""

    def __init__(self, delivery_log: HookDeliveries, entries: list[LoggedDelivery]) -> None:
        self._log = delivery_log
        self._entries = iter(entries)
        self._pending: collections.deque[tuple[
            LoggedDelivery, asyncio.Future[DeliveryDetail | RefusedDelivery | FailingDelivery | None]]] = \
            collections.deque()

    def _launch(self) -> None:
        entry = next(self._entries, None)
        if entry is not None:
            self._pending.append((entry, asyncio.ensure_future(self._log.get(entry.id))))

    def __aiter__(self) -> _Prefetch:
        for _ in range(PREFETCH):
            self._launch()
        return self

    async def __anext__(self) -> tuple[LoggedDelivery, DeliveryDetail | RefusedDelivery | FailingDelivery | None]:
        if not self._pending:
            raise StopAsyncIteration
        entry, fetching = self._pending.popleft()
        self._launch()
        return entry, await fetching

    async def cancel(self) -> None:
        for _, fetching in self._pending:
            fetching.cancel()
        await asyncio.gather(*(fetching for _, fetching in self._pending), return_exceptions=True)
        self._pending.clear()
