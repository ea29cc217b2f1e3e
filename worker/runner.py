"""The worker: claims jobs with a lease, runs them with bounded concurrency, heartbeats, and finishes
(done, retry with backoff, dead-letter). Jobs run at least once; handlers are written to be idempotent,
so a job repeated after a crash (its side effects happened, its completion did not) does no harm.

A job that met GitHub unavailable (`bot.errors.GitHubUnavailable`: failing, or rate limited) is not at
fault: it is postponed until GitHub may be asked again, without counting an attempt, for as long as its
outage budget lasts (`outage_budget_seconds` since its first failure).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import socket
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

from bot import metrics
from bot.errors import GitHubUnavailable, PermanentError
from bot.events import EventBus, JobWakeup
from bot.logs import job_context
from bot.models import utcnow
from bot.store import ClaimedJob, Store
from bot.store.batch import GroupCommit
from worker.policy import (background_may_start, background_wait, claim_retry_delay, exhausted_by_lease_expiry,
                           in_burst, lost_leases, outage_delay, retry_delay)

log = logging.getLogger(__name__)

JobHandler = Callable[[ClaimedJob], Awaitable[None]]
DeadJobHandler = Callable[[ClaimedJob, Exception], Awaitable[None]]  # the job, the error that ended it


@dataclass(frozen=True)
class Lane:
    """A share of the worker: which job kinds it runs, and how many at once."""

    name: str
    concurrency: int
    kinds: frozenset[str] | None = None  # None: every kind no other lane names
    urgent: bool = False  # the other lanes' jobs wait while this lane is busy (worker/policy.py)


class _LaneState:
    def __init__(self, lane: Lane, exclude: frozenset[str]) -> None:
        self.lane = lane
        self.exclude = exclude
        self.running: set[int] = set()
        self.reserved = 0
        # Whether jobs may be waiting in the database beyond what this lane holds: set when the
        # ingress could not hand a job over, or a claim filled every free slot. Finishing a job only
        # triggers a claim then, instead of an empty claim transaction after every job.
        self.backlog = True
        self.next_poll_at = 0.0
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def hand_over_slot(self) -> None:
        """A slot came free: the longest waiting ingress takes it, if any waits."""
        while self.waiters and self.free > 0:
            waiter = self.waiters.popleft()
            if not waiter.done():
                self.reserved += 1
                waiter.set_result(None)

    @property
    def free(self) -> int:
        return self.lane.concurrency - len(self.running) - self.reserved

    @property
    def busy(self) -> bool:
        return bool(self.running) or self.reserved > 0

    def takes(self, kind: str) -> bool:
        return kind in self.lane.kinds if self.lane.kinds is not None else kind not in self.exclude


class Worker:
    def __init__(self, store: Store, handlers: dict[str, JobHandler], *, bus: EventBus | None = None,
                 concurrency: int = 8, lanes: Sequence[Lane] | None = None, lease_seconds: float = 60.0,
                 poll_interval: float = 1.0, worker_id: str | None = None,
                 wakeup: JobWakeup | None = None, outage_budget_seconds: float = 6 * 3600.0,
                 on_dead: Mapping[str, DeadJobHandler] | None = None) -> None:
        """`wakeup`: where the features of this process say they queued a job. `outage_budget_seconds`: how
        long after its first failure a job keeps waiting out GitHub's unavailability for free. `on_dead`:
        per job kind, what to do once a job is given up (its tries or its outage budget spent, or an
        error no try can fix), so that what it worked on does not stay "running" forever."""
        self.store = store
        self.on_dead = dict(on_dead or {})
        self.outage_budget_seconds = outage_budget_seconds
        self.handlers = handlers
        self.bus = bus or EventBus()
        self.lease_seconds = lease_seconds
        self.poll_interval = poll_interval
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        lanes = list(lanes or [Lane("jobs", concurrency)])
        named = frozenset().union(*(lane.kinds for lane in lanes if lane.kinds is not None))
        self._lanes = [_LaneState(lane, named) for lane in lanes]
        self.concurrency = sum(lane.concurrency for lane in lanes)
        self._running: dict[int, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._last_urgent_at: float | None = None
        self._urgent_arrivals: collections.deque[float] = collections.deque(maxlen=2)
        self._deferred_since: float | None = None
        self._claim_failures = 0  # claims failed in a row (the database away): they back off
        self._stopping = False
        self._loop_task: asyncio.Task[None] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._started_at = utcnow()
        self._completions: GroupCommit[int, bool] = GroupCommit(self._complete_batch)
        if wakeup is not None:
            wakeup.listen(self.wake)

    def _lane_for(self, kind: str) -> _LaneState:
        for state in self._lanes:
            if state.takes(kind):
                return state
        return self._lanes[-1]

    # capacity shared with the ingress, which may hand jobs over already leased to this worker
    def try_reserve(self, kind: str) -> bool:
        lane = self._lane_for(kind)
        if self._stopping or lane.free <= 0 or lane.waiters:
            return False
        lane.reserved += 1
        self._touch(lane)
        return True

    async def reserve(self, kind: str, *, timeout: float) -> bool:
        """A slot for a job of `kind`, waiting up to `timeout` seconds for one to come free (the
        ingress's backpressure); False when none did (the job is then queued for any worker)."""
        if self.try_reserve(kind):
            return True
        lane = self._lane_for(kind)
        if self._stopping or timeout <= 0:
            return False
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        lane.waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except (TimeoutError, asyncio.CancelledError):
            if waiter.done() and not waiter.cancelled():  # the slot arrived as the wait ended
                lane.reserved -= 1
                lane.hand_over_slot()
            waiter.cancel()
            with contextlib.suppress(ValueError):
                lane.waiters.remove(waiter)
            if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                raise
            return False
        self._touch(lane)
        return True

    def cancel_reservation(self, kind: str) -> None:
        lane = self._lane_for(kind)
        lane.reserved -= 1
        lane.hand_over_slot()

    def run_reserved(self, job: ClaimedJob) -> None:
        self._lane_for(job.kind).reserved -= 1
        self._spawn(job)

    def wake(self, kind: str | None = None) -> None:
        """A job (of `kind`, or of any kind) was queued for any worker to claim."""
        for lane in self._lanes:
            if kind is None or lane.takes(kind):
                lane.backlog = True
        self._wake.set()

    @property
    def running_jobs(self) -> int:
        return len(self._running)

    async def start(self) -> None:
        self._started_at = utcnow()
        await self.store.heartbeats.beat(self.worker_id, running_jobs=0, started_at=self._started_at)
        self._loop_task = asyncio.create_task(self._claim_loop(), name="worker-claim-loop")
        self._heartbeat_task = asyncio.create_task(self._heartbeat_loop(), name="worker-heartbeat")
        log.info("worker %s started (%s)", self.worker_id,
                 ", ".join(f"{s.lane.name}: {s.lane.concurrency}" for s in self._lanes))

    async def stop(self, *, grace: float = 10.0) -> None:
        """Stop claiming; let running jobs finish within `grace` seconds, then give the rest back."""
        self._stopping = True
        for lane in self._lanes:
            while lane.waiters:
                lane.waiters.popleft().cancel()
        self._wake.set()
        if self._loop_task is not None:
            await self._loop_task
        if self._running:
            await asyncio.wait(list(self._running.values()), timeout=grace)
        for task in list(self._running.values()):
            task.cancel()
        if self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
            await asyncio.gather(self._heartbeat_task, return_exceptions=True)
        await self._completions.close()
        await self.store.heartbeats.remove(self.worker_id)
        log.info("worker %s stopped", self.worker_id)

    def _touch(self, lane: _LaneState) -> None:
        if lane.lane.urgent:
            self._last_urgent_at = time.monotonic()

    def _background_allowed(self, now: float) -> bool:
        if not any(state.lane.urgent for state in self._lanes):
            return True
        allowed = background_may_start(now=now, urgent_busy=any(s.busy for s in self._lanes if s.lane.urgent),
                                       last_urgent_at=self._last_urgent_at, deferred_since=self._deferred_since,
                                       burst=in_burst(self._urgent_arrivals))
        if allowed:
            self._deferred_since = None
        elif self._deferred_since is None:
            self._deferred_since = now
        return allowed

    async def _claim_loop(self) -> None:
        while not self._stopping:
            self._wake.clear()  # here, not before the wait: a wake-up while a claim is in flight is kept
            again = False
            wait = self.poll_interval
            for lane in self._lanes:
                now = time.monotonic()
                free = lane.free
                if free <= 0 or not (lane.backlog or now >= lane.next_poll_at):
                    continue
                if not lane.lane.urgent and not self._background_allowed(now):
                    wait = min(wait, max(0.01, background_wait(now=now, last_urgent_at=self._last_urgent_at,
                                                               deferred_since=self._deferred_since,
                                                               burst=in_burst(self._urgent_arrivals))))
                    continue
                claimed: list[ClaimedJob] = []
                lane.backlog = False  # a wake-up during the claim sets it again
                try:
                    claimed = await self.store.jobs.claim(
                        self.worker_id, limit=free, lease_seconds=self.lease_seconds,
                        kinds=lane.lane.kinds, exclude_kinds=lane.exclude if lane.lane.kinds is None else None)
                except Exception:  # the database may be briefly unavailable: try again soon, keeping the wake-up
                    log.exception("claiming jobs failed")
                    lane.backlog = True
                    wait = min(wait, claim_retry_delay(self._claim_failures))
                    self._claim_failures += 1
                    continue
                self._claim_failures = 0
                lane.next_poll_at = time.monotonic() + self.poll_interval
                for job in claimed:
                    self._spawn(job)
                lane.backlog = lane.backlog or len(claimed) == free
                again = again or lane.backlog
            if again:
                continue
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=wait)
            except TimeoutError:
                pass

    def _spawn(self, job: ClaimedJob) -> None:
        lane = self._lane_for(job.kind)
        lane.running.add(job.id)
        self._touch(lane)
        if lane.lane.urgent:
            self._urgent_arrivals.append(time.monotonic())
        task = asyncio.create_task(self._run(job), name=f"job-{job.id}")
        self._running[job.id] = task

    async def _run(self, job: ClaimedJob) -> None:
        started = time.monotonic()
        outcome = "done"
        with job_context(job.id, job.delivery_id):
            try:
                if exhausted_by_lease_expiry(job.attempts, job.max_attempts):
                    raise RuntimeError(f"lease expired {job.max_attempts} times (the worker running it died)")
                handler = self.handlers.get(job.kind)
                if handler is None:
                    raise LookupError(f"no handler for job kind {job.kind!r}")
                await handler(job)
            except asyncio.CancelledError:
                outcome = "released"
                await asyncio.shield(self.store.jobs.release(self.worker_id, job.id))
                raise
            except Exception as exc:
                outcome = await self._record_failure(job, exc)
                if outcome == "dead":
                    await self._given_up(job, exc)
            else:
                await self._completions.submit(job.id)
            finally:
                self._running.pop(job.id, None)
                lane = self._lane_for(job.kind)
                lane.running.discard(job.id)
                self._touch(lane)
                lane.hand_over_slot()
                if lane.lane.urgent and not lane.busy and self._deferred_since is not None:
                    self._wake.set()  # background work held back for this lane may start now
                metrics.JOB_OUTCOMES.labels(job.kind, outcome).inc()
                metrics.JOB_DURATION.labels(job.kind).observe(time.monotonic() - started)
                self.bus.publish("job.finished", job_id=job.id, kind=job.kind, outcome=outcome,
                                 delivery_id=job.delivery_id, attempts=job.attempts)
                if lane.backlog or outcome in ("retry", "postponed"):
                    self._wake.set()

    async def _record_failure(self, job: ClaimedJob, exc: Exception) -> str:
        now = utcnow()
        error = "".join(traceback.format_exception(exc))
        why = str(exc)
        if isinstance(exc, GitHubUnavailable):
            failing_for = (now - (job.first_failed_at or now)).total_seconds()
            wait = outage_delay(retry_after=exc.retry_after, failing_for=failing_for,
                                budget=self.outage_budget_seconds)
            if wait is not None:
                await self.store.jobs.postpone(self.worker_id, job.id, error=error,
                                               retry_at=now + timedelta(seconds=wait))
                self._wake_when_due(wait, job.kind)
                log.warning("job %s (%s) postponed %.0f s, no attempt counted (GitHub unavailable for %.0f s): %s",
                            job.id, job.kind, wait, failing_for, exc)
                return "postponed"
            why = (f"GitHub stayed unavailable beyond the job's outage budget ({self.outage_budget_seconds / 3600:g} h "
                   f"since its first failure; GITHUB_OUTAGE_BUDGET_HOURS): {exc}")
        # An error that trying again cannot fix (GitHub answered with a shape the app does not
        # understand, say) ends the job now, keeping the error.
        delay = None if isinstance(exc, PermanentError) else retry_delay(job.attempts, job.max_attempts)
        retry_at = None if delay is None else now + timedelta(seconds=delay)
        await self.store.jobs.fail(self.worker_id, job.id, error=f"{why}\n\n{error}", retry_at=retry_at)
        if delay is not None:
            self._wake_when_due(delay, job.kind)
        if delay is None:
            log.error("job %s (%s) dead after %d attempt(s): %s", job.id, job.kind, job.attempts, why)
            return "dead"
        log.warning("job %s (%s) attempt %d failed, retrying in %.0fs: %s", job.id, job.kind,
                    job.attempts, delay, why)
        return "retry"

    def _wake_when_due(self, delay: float, kind: str) -> None:
        """Claim a job this worker put back when it comes due, not at the next fallback poll."""
        asyncio.get_running_loop().call_later(delay + 0.05, self.wake, kind)

    async def _given_up(self, job: ClaimedJob, exc: Exception) -> None:
        handler = self.on_dead.get(job.kind)
        if handler is None:
            return
        try:
            await handler(job, exc)
        except Exception:  # noqa: BLE001 - the job is dead either way; its kind's own recovery may still settle it
            log.exception("job %s (%s): handling its death failed", job.id, job.kind)

    async def _complete_batch(self, job_ids: list[int]) -> list[bool]:
        finished = await self.store.jobs.complete_many(self.worker_id, job_ids)
        return [job_id in finished for job_id in job_ids]

    async def _heartbeat_loop(self) -> None:
        interval = max(0.5, self.lease_seconds / 3)
        while True:
            await asyncio.sleep(interval)
            try:
                running = list(self._running)
                held = await self.store.jobs.extend_leases(self.worker_id, running,
                                                           lease_seconds=self.lease_seconds)
                for job_id in lost_leases(running, held):
                    task = self._running.get(job_id)
                    if task is not None and not task.done():
                        log.warning("job %s: lease taken over by another worker; stopping it here", job_id)
                        task.cancel()
                await self.store.heartbeats.beat(self.worker_id, running_jobs=len(self._running),
                                                 started_at=self._started_at)
            except Exception:
                log.exception("worker heartbeat failed")
