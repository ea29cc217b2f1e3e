"""The one GitHub client of the app.

`GitHubClients` hands out `gidgethub.aiohttp.GitHubAPI` objects:

- `app()` authenticates every request with the App JWT (RS256, iss = app id; gidgethub caches it).
- `installation(id)` puts `token ghs_...` from the token cache on every request, so a long-lived
  object keeps working after its token rotates. Tokens are cached (cachetools) until 5 minutes
  before their `expires_at`; concurrent callers share one fetch; every token is added to
  `bot.redact.PROCESS_REDACTOR` as soon as it arrives.

Both retry inside `_request` (before gidgethub deciphers and raises): 5xx and network errors with
exponential backoff and jitter, at most `max_attempts` tries (a POST that writes is not sent again
after a network error once it may have reached GitHub: `may_send_again`). A request that still meets GitHub
failing raises `bot.errors.GitHubUnavailable` (the worker tries its job again later without counting
an attempt) and pauses its installation's GitHub work, or the whole app's (`bot.github.outage`): while
paused, requests are refused at once, until one probe finds GitHub answering again.

Rate limits hold every request of the installation ("app" for the JWT), reads and writes alike: after
a 403/429 with `retry-after`, or any answer with `x-ratelimit-remaining: 0` (until
`x-ratelimit-reset`), nothing of that installation is sent until the wait is over; the limited request
is then tried again. A wait above `max_retry_wait` is not slept through: the installation's requests
raise `GitHubRateLimited` (a `GitHubUnavailable` saying when to come back) until it ends.

Writes of an installation (POST/PATCH/PUT/DELETE; GraphQL only for mutations) go through one
sender task per installation: one at a time, within `writes_per_minute` / `writes_per_hour`,
important ones first, progress PATCHes coalesced (see `bot.github.pacing`). Reads are never paced.

Several processes on one PostgreSQL database (`ownership`: `bot.github.write_lanes`): an installation's
writes are sent by one process at a time, the holder of its write lane lease, which carries the send times
of the last hour and GitHub's hold from owner to owner; holds met are also told to the other processes at
once (`on_hold` there, `apply_hold` here). A process alone (SQLite) does none of this: no I/O is added.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime
import json
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import cachetools
import gidgethub.aiohttp

from bot import metrics
from bot.errors import GitHubUnavailable
from bot.github.outage import WHOLE_APP, Admission, Outages, Verdict
from bot.github.pacing import (
    LANE_HANDOVER_BACKOFF,
    LANE_RESERVED_WRITES,
    LANE_WANTED_FRESH,
    RETRYABLE_STATUSES,
    hand_over_lane,
    lane_renew_interval,
    lane_poll_delay,
    lane_safety_margin,
    lane_write_timeout,
    lease_allows_write,
    merge_sent_times,
    sent_times_from_epoch,
    sent_times_to_epoch,
    WriteQueue,
    QueuedWrite,
    backoff_delay,
    is_write,
    HOUR,
    WINDOW_MARGIN,
    next_write_time,
    parse_json_body,
    primary_limit_wait,
    prune_sent_times,
    rate_limit_wait,
    url_path,
)
from bot.github.write_lanes import LaneGrant, LocalOwnership, OnHold, OnLaneWanted, WriteOwnership
from bot.redact import PROCESS_REDACTOR

log = logging.getLogger(__name__)

TOKEN_REFRESH_MARGIN = 5 * 60.0  # drop a cached installation token this long before it expires
DEFAULT_TOKEN_LIFETIME = 60 * 60.0  # if a token response has no usable expires_at
TOKEN_CACHE_SIZE = 10_000
LANE_LINGER = 0.25  # a shared write lane idle this long is released when another process waits for it

Response = tuple[int, Mapping[str, str], bytes]

# Set while a probe (bot.github.outage) is sent: what it needs on the way (its installation token) goes
# with it instead of waiting for the probe's own outcome.
_IN_PROBE: contextvars.ContextVar[bool] = contextvars.ContextVar("github_probe", default=False)


class GitHubClientClosed(RuntimeError):
    """The GitHubClients was closed: queued writes and new token fetches fail with this."""


class GitHubFailing(GitHubUnavailable):
    """GitHub answered 5xx, or not at all, to every try of a request."""

    def __init__(self, cause: str, method: str, url: str, tries: int) -> None:
        self.cause = cause  # what /health shows of the pause: no path, no repository names
        super().__init__(f"{cause} to {method} {url_path(url)} ({tries} {'try' if tries == 1 else 'tries'})")


class GitHubRateLimited(GitHubUnavailable):
    """GitHub asked this installation to wait longer than `max_retry_wait`: its requests are refused
    until then (GitHub answered: this says nothing about an outage)."""


class _HeldBack(GitHubRateLimited):
    """Refused here, during a rate limit GitHub asked for earlier: this request never left, so it is no
    news of GitHub either way (an outage's pause is neither ended nor extended by it)."""


def may_send_again(method: str, url: str, body: bytes, exc: BaseException) -> bool:
    """Whether a request that met the network error `exc` may be sent again: always when it never left
    (no connection was made); otherwise unless it is a POST that writes. GitHub may have done that
    one before its answer was lost, and sending it again would create a second check run or comment:
    its caller decides (bot.github.check_runs looks for what the first try made)."""
    if isinstance(exc, (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)):
        return True
    return not (method.upper() == "POST" and _is_write(method, url, body))


def _is_write(method: str, url: str, body: bytes) -> bool:
    """`is_write`, decoding the JSON body only where it decides: a POST to GraphQL (is it a mutation?).
    Without a body `is_write` says yes to every other write and no to such a POST."""
    return is_write(method, url) or (method.upper() == "POST" and is_write(method, url, parse_json_body(body)))


def _scope(iid: int | None) -> str:
    """The scope of an installation's requests (its id), or "app" for the App's own (JWT)."""
    return "app" if iid is None else str(iid)


def describe_scope(scope: str) -> str:
    if scope == WHOLE_APP:
        return "the whole app"
    return "the App's own requests" if scope == "app" else f"installation {scope}"


@dataclass(frozen=True)
class GitHubClientConfig:
    app_id: str
    private_key: str  # PEM
    api_url: str = "https://api.github.com"
    user_agent: str = "codegenapp"
    writes_per_minute: int = 80
    writes_per_hour: int = 500
    max_attempts: int = 4  # total tries for retryable failures
    max_retry_wait: float = 60.0  # longest single wait honoured (Retry-After/reset/backoff)
    outage_min_cooldown: float = 5.0  # a paused installation's first wait before its probe
    outage_max_cooldown: float = 60.0  # ... doubling after each failed probe up to this

    def __repr__(self) -> str:  # never print the key
        return (
            f"GitHubClientConfig(app_id={self.app_id!r}, api_url={self.api_url!r}, "
            f"writes_per_minute={self.writes_per_minute}, writes_per_hour={self.writes_per_hour}, "
            f"max_attempts={self.max_attempts}, max_retry_wait={self.max_retry_wait})"
        )


class _AppAPI(gidgethub.aiohttp.GitHubAPI):
    """Authenticated as the App (JWT built and cached by gidgethub)."""

    def __init__(self, clients: GitHubClients) -> None:
        cfg = clients.config
        super().__init__(
            clients._session,
            cfg.user_agent,
            app_id=cfg.app_id,
            private_key=cfg.private_key,
            base_url=cfg.api_url,
        )
        self._clients = clients

    async def _request(self, method: str, url: str, headers: Mapping[str, str], body: bytes = b"") -> Response:
        return await self._clients._execute(None, method, url, headers, body)

    async def sleep(self, seconds: float) -> None:
        await self._clients._sleep(seconds)


class _InstallationAPI(gidgethub.aiohttp.GitHubAPI):
    """Authenticated as one installation; the token is looked up per request."""

    def __init__(self, clients: GitHubClients, installation_id: int) -> None:
        cfg = clients.config
        super().__init__(clients._session, cfg.user_agent, base_url=cfg.api_url)
        self._clients = clients
        self.installation_id = installation_id

    async def _request(self, method: str, url: str, headers: Mapping[str, str], body: bytes = b"") -> Response:
        return await self._clients._installation_request(self.installation_id, method, url, headers, body)

    async def sleep(self, seconds: float) -> None:
        await self._clients._sleep(seconds)


@dataclass(eq=False)
class _Waiter:
    headers: Mapping[str, str]
    body: bytes
    future: asyncio.Future[Response]


def _consume_exception(fut: asyncio.Future[Any]) -> None:
    # A caller may have stopped waiting (cancelled); don't warn "exception never retrieved".
    if not fut.cancelled():
        fut.exception()


class _Pacer:
    """The write lane of one installation: a queue and at most one sender task.

    With a shared `WriteOwnership` (several processes on PostgreSQL) the lane is also a lease: before its
    first write the pacer takes it (waiting while another process holds it), seeding the send times and
    GitHub's hold from what the last owner stored; a keeper task renews it every quarter of its time and
    releases it once no write of its may still be out and the lane has been idle for `LANE_LINGER` while
    another process waits, or for a renewal interval otherwise (`_keep_lane`). A write
    starts only while the lease leaves room for its whole HTTP timeout (`bot.github.pacing.lease_allows_write`)
    and consumes one of the write slots reserved in the row (bot/github/write_lanes.py); a waiter heard of
    makes the owner hand the lane over at a write boundary once it held it `LANE_FAIR_SHARE`."""

    def __init__(self, clients: GitHubClients, installation_id: int) -> None:
        self.clients = clients
        self.installation_id = installation_id
        self.queue: WriteQueue[_Waiter] = WriteQueue()
        self.sent: deque[float] = deque()
        self.task: asyncio.Task[None] | None = None
        self.holding = False  # the sender is sleeping for the rate window
        # Shared lanes only (lease clock: the real monotonic one, whatever clock paces the windows):
        self.lease_until = float("-inf")  # this process's conservative view of its lease
        self.keeper: asyncio.Task[None] | None = None
        self.last_write_end = float("-inf")
        # A write cancelled on our side may still be processed by GitHub: until its start + its timeout
        # (+ the margin) the lane is neither released nor idle.
        self.in_flight_until = float("-inf")
        self.writes_started = 0
        self.reserved_left = 0  # write slots still reserved in the row
        self.held_since = float("-inf")  # when this process took the lane
        self.wanted_at = float("-inf")  # when it last heard of another process waiting for it
        self.wanted = asyncio.Event()  # set when it hears of one: the keeper looks at once
        self.backoff_until = float("-inf")  # after a handover: not asked for again before then
        self.lease_statements = asyncio.Lock()  # take/release never cross (a release must not undo a take)

    @property
    def owns_lane(self) -> bool:
        return self.keeper is not None and not self.keeper.done()

    async def submit(self, method: str, url: str, headers: Mapping[str, str], body: bytes) -> Response:
        if self.clients._closed:
            raise GitHubClientClosed("GitHub client is closed")
        loop = asyncio.get_running_loop()
        if self._idle() and self._lane_ready() and self._window_open():
            return await self._send_now(method, url, headers, body)
        fut: asyncio.Future[Response] = loop.create_future()
        fut.add_done_callback(_consume_exception)
        entry, coalesced = self.queue.push(method, url, parse_json_body(body), _Waiter(headers, body, fut))
        if coalesced:
            metrics.GITHUB_WRITES_COALESCED.inc()
        if self.holding:
            self._mark_deferred(entry)
        if self.task is None or self.task.done():
            self.task = loop.create_task(self._run(), name=f"github-writes-{self.installation_id}")
        # Shielded: one caller giving up must not cancel a write other callers share.
        return await asyncio.shield(fut)

    def _window_open(self) -> bool:
        c = self.clients
        now = c._clock()
        prune_sent_times(self.sent, now, horizon=HOUR + WINDOW_MARGIN)
        return next_write_time(self.sent, now, c.config.writes_per_minute, c.config.writes_per_hour,
                               margin=WINDOW_MARGIN) <= now

    async def _send_now(self, method: str, url: str, headers: Mapping[str, str], body: bytes) -> Response:
        """Nothing queued and the window open: send from the caller's task, which holds the lane
        meanwhile (writes that arrive queue behind it), instead of handing the write to a sender task
        and waiting two turns of the loop for it. Still the lane's only write in flight."""
        self.task = asyncio.current_task()
        try:
            return await self._write(method.upper(), url, headers, body)
        finally:
            self.task = None
            if self.queue:
                self.task = asyncio.get_running_loop().create_task(
                    self._run(), name=f"github-writes-{self.installation_id}")

    @staticmethod
    def _mark_deferred(entry: QueuedWrite[_Waiter]) -> None:
        if not entry.deferred:
            entry.deferred = True
            metrics.GITHUB_WRITES_DEFERRED.inc()

    async def _wait_for_window(self) -> None:
        c = self.clients
        now = c._clock()
        prune_sent_times(self.sent, now, horizon=HOUR + WINDOW_MARGIN)
        t = next_write_time(self.sent, now, c.config.writes_per_minute, c.config.writes_per_hour,
                            margin=WINDOW_MARGIN)
        if t > now:
            self.holding = True
            for entry in self.queue:
                self._mark_deferred(entry)
            try:
                await c._sleep(t - now)
            finally:
                self.holding = False

    async def _run(self) -> None:
        while self.queue:
            try:
                await self._own_lane()
            except GitHubUnavailable as exc:  # the database away: every queued write is told so
                for entry in self.queue.drain():
                    for w in entry.payloads:
                        if not w.future.done():
                            w.future.set_exception(exc)
                return
            await self._wait_for_window()
            # Pop only now: whatever arrived while we slept competes on priority and coalesces.
            entry = self.queue.pop()
            if entry is None:
                break
            await self._send(entry)

    async def _send(self, entry: QueuedWrite[_Waiter]) -> None:
        waiters = entry.payloads
        if len(waiters) == 1:
            headers, body = waiters[0].headers, waiters[0].body
        else:
            body = json.dumps(entry.body).encode("utf-8")
            headers = {k: v for k, v in waiters[-1].headers.items() if k.lower() != "content-length"}
            headers["content-length"] = str(len(body))
        try:
            result = await self._write(entry.method, entry.path, headers, body)
        except asyncio.CancelledError:
            for w in waiters:
                if not w.future.done():
                    w.future.set_exception(GitHubClientClosed("GitHub client closed while sending"))
            raise
        except Exception as exc:  # handed to every caller; the sender lives on
            for w in waiters:
                if not w.future.done():
                    w.future.set_exception(exc)
        else:
            for w in waiters:
                if not w.future.done():
                    w.future.set_result(result)

    async def _write(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Response:
        c = self.clients
        scope = _scope(self.installation_id)
        shared = c._ownership.shared

        async def before_attempt(attempt: int) -> float | None:
            if not shared:
                if attempt > 1:  # a retry is one more write for the window
                    await self._wait_for_window()
                await c._wait_for_hold(scope)  # after the window: a rate limit met meanwhile still counts
                self.sent.append(c._clock())
                return None
            while True:  # the lease, the window and the hold, until all three allow the write at once
                if self._hand_over_now():
                    await self._hand_over()
                await self._own_lane()
                await self._wait_for_window()
                await c._wait_for_hold(scope)
                if not c._closed:  # the token now, so that its fetch never eats into the write's time
                    await c.installation_token(self.installation_id)
                if self._lane_ready() and self.reserved_left <= 0:  # one statement every so many writes
                    if await self._renew() is None:
                        await asyncio.sleep(lane_poll_delay(1))
                    continue
                if self._lane_ready():
                    break
            started = c._lease_clock()
            self.sent.append(c._clock())
            self.writes_started += 1
            self.reserved_left -= 1
            lease = c._ownership.lease_seconds
            timeout = min(lane_write_timeout(lease), self.lease_until - lane_safety_margin(lease) - started)
            self.in_flight_until = max(self.in_flight_until, started + timeout + lane_safety_margin(lease))
            return timeout

        try:
            result = await c._execute(self.installation_id, method, path, headers, body,
                                      before_attempt=before_attempt)
        except asyncio.CancelledError:
            raise  # it may still reach GitHub: `in_flight_until` stands
        except BaseException:
            self.in_flight_until = float("-inf")  # answered, or given up after its timeout
            raise
        else:
            self.in_flight_until = float("-inf")
            return result
        finally:
            self.last_write_end = c._lease_clock()

    # --- the shared lane's lease -------------------------------------------------------------------

    def _lane_ready(self) -> bool:
        """Whether a write may start now as far as the lease goes (always, for a process alone)."""
        c = self.clients
        ownership = c._ownership
        return not ownership.shared or lease_allows_write(self.lease_until, c._lease_clock(), ownership.lease_seconds)

    async def _own_lane(self) -> None:
        """Shared lanes: until this process holds the lease with room for a write; polls while another
        live process holds it (a dead one's lease runs out), telling the owner it waits."""
        c = self.clients
        ownership = c._ownership
        tries = 0
        failing_since: float | None = None
        while not self._lane_ready():
            if c._closed:
                raise GitHubClientClosed("GitHub client is closed")
            now = c._lease_clock()
            if now < self.backoff_until:  # just handed over: the waiter's turn
                await asyncio.sleep(self.backoff_until - now)
                continue
            try:
                async with self.lease_statements:
                    started, taken_at = c._lease_clock(), self.writes_started
                    grant = await ownership.acquire(self.installation_id, self._reservations())
            except Exception as exc:  # noqa: BLE001 - the database away: tried again for a lease's time
                now = c._lease_clock()
                failing_since = now if failing_since is None else failing_since
                if now - failing_since >= ownership.lease_seconds:
                    raise GitHubUnavailable(f"the write lane of installation {self.installation_id} could not "
                                            f"be taken: {exc}", retry_after=ownership.lease_seconds) from exc
                log.warning("installation %s: taking the write lane failed: %s", self.installation_id, exc)
                grant = None
            else:
                if grant is None and c._on_lane_wanted is not None:
                    c._on_lane_wanted(self.installation_id)
            if grant is not None:
                self._took(grant, started, taken_at)
                continue
            tries += 1
            await asyncio.sleep(lane_poll_delay(tries))

    def _took(self, grant: LaneGrant, started: float, taken_at: int) -> None:
        """The lane is this process's from `started` (before the statement; `taken_at`: the writes
        started by then). What the grant says always counts: even when this process thought it still
        held the lane (its renewals failed), another may have taken it, written and released it."""
        c = self.clients
        self.lease_until = started + c._ownership.lease_seconds
        self.reserved_left = LANE_RESERVED_WRITES - (self.writes_started - taken_at)
        now, wall = c._clock(), c._wall_clock()
        self.sent = merge_sent_times(sent_times_from_epoch(grant.sent_times, now, wall), self.sent)
        if grant.hold_until is not None:
            c.apply_hold(_scope(self.installation_id), grant.hold_until)
        if self.owns_lane:  # a renewal by hand (the keeper's failed): the keeper goes on
            return
        self.held_since, self.wanted_at = started, float("-inf")
        self.keeper = asyncio.get_running_loop().create_task(
            self._keep_lane(), name=f"github-write-lane-{self.installation_id}")
        c._lanes_taken += 1

    def _reservations(self) -> list[float]:
        """The write slots reserved at a take or renewal, stamped at the end of the lease it gives (no
        write under it can be later)."""
        c = self.clients
        return [round(c._wall_clock() + c._ownership.lease_seconds, 3)] * LANE_RESERVED_WRITES

    def _idle(self) -> bool:
        return not self.queue and (self.task is None or self.task.done())

    def _stored_sent_times(self) -> list[float]:
        c = self.clients
        return sent_times_to_epoch(self.sent, c._clock(), c._wall_clock())

    def _hold_epoch(self) -> float | None:
        c = self.clients
        until = c._holds.get(_scope(self.installation_id))
        now = c._clock()
        return None if until is None or until <= now else c._wall_clock() + (until - now)

    def _hand_over_now(self) -> bool:
        now = self.clients._lease_clock()
        return (self.owns_lane and now >= self.in_flight_until
                and hand_over_lane(self.held_since, self.wanted_at, now))

    async def _hand_over(self) -> None:
        """Another process waits for the lane and this one held it its share: give it up (no write of ours
        is out: a write boundary) and leave it to the waiter for a moment."""
        await self._stop_keeper()
        await self._release()
        self.backoff_until = self.clients._lease_clock() + LANE_HANDOVER_BACKOFF
        self.clients._lane_handovers += 1

    async def _keep_lane(self) -> None:
        """While this process owns the lane: renew it every quarter of its time; release it once no write of
        ours may still be out, after `LANE_LINGER` idle when another process waits for it, or else after a
        renewal interval idle (a process that hears of waiters, `on_lane_wanted`, keeps an idle lane that
        long: the next burst of writes costs no statement, and a waiter still gets it within its next poll).
        A renewal refused means the lane was taken over: nothing more is sent under it (the next write
        takes it again)."""
        c = self.clients
        every = lane_renew_interval(c._ownership.lease_seconds)
        keep_idle = every if c._on_lane_wanted is not None else c._lane_linger
        next_renewal = c._lease_clock() + every
        while True:
            now = c._lease_clock()
            idle = self._idle()
            linger = c._lane_linger if now - self.wanted_at <= LANE_WANTED_FRESH else keep_idle
            free_at = max((self.last_write_end if idle else now) + linger, self.in_flight_until)
            if idle and now >= free_at:
                await self._release()
                return
            wake = min(next_renewal, free_at)
            if wake > now:
                self.wanted.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wanted.wait(), wake - now)
                continue
            started = c._lease_clock()
            renewed = await self._renew()
            if renewed is None:  # tried again; writes stop when the lease runs short
                next_renewal = c._lease_clock() + every / 4
            elif not renewed:
                return
            else:
                next_renewal = started + every

    async def _renew(self) -> bool | None:
        """Extend the lease, storing the send times so far and a fresh reservation of write slots; False:
        the lane was taken over; None: the statement failed."""
        c = self.clients
        ownership = c._ownership
        try:
            async with self.lease_statements:
                started, renewed_at = c._lease_clock(), self.writes_started
                renewed = await ownership.renew(self.installation_id,
                                                self._stored_sent_times() + self._reservations())
        except Exception as exc:  # noqa: BLE001
            log.warning("installation %s: renewing the write lane failed: %s", self.installation_id, exc)
            return None
        if renewed is None:
            log.warning("installation %s: the write lane was taken over", self.installation_id)
            self.lease_until = float("-inf")
            return False
        self.lease_until = started + ownership.lease_seconds
        self.reserved_left = LANE_RESERVED_WRITES - (self.writes_started - renewed_at)
        if renewed.hold_until is not None:  # met by another process, maybe while this one was not listening
            c.apply_hold(_scope(self.installation_id), renewed.hold_until)
        return True

    async def _release(self) -> None:
        """Mark the lane not this process's (no write may start under it), then store what the next owner
        needs: the real send times, no reservation. If the release fails, the lease simply runs out."""
        c = self.clients
        self.lease_until = float("-inf")
        self.reserved_left = 0
        try:
            async with self.lease_statements:
                await c._ownership.release(self.installation_id, self._stored_sent_times(), self._hold_epoch())
        except Exception as exc:  # noqa: BLE001
            log.warning("installation %s: releasing the write lane failed (it runs out): %s", self.installation_id, exc)

    async def stop(self) -> None:
        """At close (its writes already cancelled): stop the keeper; release the lane unless a write of
        ours may still be out (then its lease runs out)."""
        if self.keeper is None or self.keeper.done():
            return
        await self._stop_keeper()
        if self.clients._lease_clock() >= self.in_flight_until:
            await self._release()

    async def _stop_keeper(self) -> None:
        keeper, self.keeper = self.keeper, None
        if keeper is not None:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)


class GitHubClients:
    """Factory of GitHub API clients sharing one token cache, retry policy and write pacing."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        config: GitHubClientConfig,
        *,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        ownership: WriteOwnership | None = None,
        on_hold: OnHold | None = None,
        on_lane_wanted: OnLaneWanted | None = None,
    ) -> None:
        """`ownership`: who may send an installation's writes (default: this process alone, no I/O);
        `on_hold(scope, until_epoch)`: told of every rate-limit hold GitHub asks of a scope (the composition
        root passes it to the other processes, which `apply_hold` it); `on_lane_wanted(installation_id)`:
        told when this process waits for a lane another owns (passed on to the owner's `lane_wanted`)."""
        if config.writes_per_minute <= 0 or config.writes_per_hour <= 0 or config.max_attempts < 1:
            raise ValueError("writes_per_minute, writes_per_hour and max_attempts must be positive")
        self._session = session
        self.config = config
        self._sleep = sleep
        self._clock = clock
        self._wall_clock: Callable[[], float] = time.time  # for x-ratelimit-reset / expires_at
        self._random: Callable[[], float] = random.random  # backoff jitter
        PROCESS_REDACTOR.add(config.private_key)
        # installation id -> (token, clock time at which to stop using it)
        self._tokens: cachetools.TLRUCache[int, tuple[str, float]] = cachetools.TLRUCache(
            maxsize=TOKEN_CACHE_SIZE, ttu=lambda _key, value, _now: value[1], timer=clock
        )
        self._token_fetches: dict[int, asyncio.Task[str]] = {}
        self._token_generation: dict[int, int] = {}
        self._pacers: dict[int, _Pacer] = {}
        self._app_api: _AppAPI | None = None
        self._closed = False
        self._outages = Outages(min_cooldown=config.outage_min_cooldown, max_cooldown=config.outage_max_cooldown)
        self._probe_settled = asyncio.Event()  # replaced by a fresh one each time a probe ends
        self._paused_scopes: set[str] = set()  # as last reported to metrics
        self._holds: dict[str, float] = {}  # scope -> clock time until which it is rate limited
        self._ownership: WriteOwnership = ownership or LocalOwnership()
        self._on_hold = on_hold
        self._on_lane_wanted = on_lane_wanted
        # The lease of a shared write lane is timed on the real monotonic clock (the database's expiry is
        # real time), whatever `clock` paces the windows with.
        self._lease_clock: Callable[[], float] = time.monotonic
        self._lane_linger = LANE_LINGER
        self._lanes_taken = 0  # for tests and measurements: how often a lane was taken ...
        self._lane_handovers = 0  # ... and handed over to a waiting process
        self._background: set[asyncio.Task[Any]] = set()  # holds being stored for the next owners

    # --- public API ------------------------------------------------------------------------

    def app(self) -> gidgethub.aiohttp.GitHubAPI:
        if self._app_api is None:
            self._app_api = _AppAPI(self)
        return self._app_api

    def installation(self, installation_id: int) -> gidgethub.aiohttp.GitHubAPI:
        return _InstallationAPI(self, int(installation_id))

    async def installation_token(self, installation_id: int) -> str:
        if self._closed:
            raise GitHubClientClosed("GitHub client is closed")
        iid = int(installation_id)
        cached = self._tokens.get(iid)
        if cached is not None:
            return cached[0]
        task = self._token_fetches.get(iid)
        if task is None:
            generation = self._token_generation.get(iid, 0)
            task = asyncio.get_running_loop().create_task(
                self._fetch_token(iid, generation), name=f"github-token-{iid}"
            )
            self._token_fetches[iid] = task
            task.add_done_callback(lambda t, iid=iid: self._token_fetch_done(iid, t))
        return await asyncio.shield(task)

    def status(self) -> dict[str, Any]:
        """For /health: the paused scopes (GitHub failing) and the rate-limited ones."""
        now, wall = self._clock(), self._wall_clock()
        paused = [{"scope": pause.scope, "what": describe_scope(pause.scope),
                   "since": datetime.datetime.fromtimestamp(wall - (now - pause.since), datetime.UTC).isoformat(),
                   "next_probe_in_seconds": round(pause.retry_in, 1), "probing": pause.probing,
                   "reason": pause.reason}
                  for pause in self._outages.pauses(now)]
        held = [{"scope": scope, "what": describe_scope(scope), "for_seconds": round(until - now, 1)}
                for scope, until in sorted(self._holds.items()) if until > now]
        status: dict[str, Any] = {"ok": not paused, "paused": paused, "rate_limited": held}
        if self._ownership.shared:  # several processes: the installations whose writes this one sends now
            status["write_lanes_owned"] = self.owned_lanes()
        return status

    def owned_lanes(self) -> list[int]:
        return sorted(iid for iid, pacer in self._pacers.items() if pacer.owns_lane)

    def apply_hold(self, scope: str, until_epoch: float) -> None:
        """A rate-limit hold another process met (`on_hold` there): `scope` makes no request until
        `until_epoch` (wall clock) here either."""
        seconds = until_epoch - self._wall_clock()
        if seconds > 0:
            self._hold(scope, seconds, met_here=False)

    def lane_wanted(self, installation_id: int) -> None:
        """Another process waits for this installation's write lane (`on_lane_wanted` there)."""
        pacer = self._pacers.get(int(installation_id))
        if pacer is not None and pacer.owns_lane:
            pacer.wanted_at = self._lease_clock()
            pacer.wanted.set()

    def forget_installation(self, installation_id: int) -> None:
        iid = int(installation_id)
        self._tokens.pop(iid, None)
        # A fetch already under way still answers its waiters but is not cached.
        self._token_generation[iid] = self._token_generation.get(iid, 0) + 1
        self._token_fetches.pop(iid, None)
        pacer = self._pacers.get(iid)
        # Not while it owns the lane: its keeper would release it under a new pacer that took it over.
        if pacer is not None and pacer._idle() and not pacer.owns_lane:
            del self._pacers[iid]

    async def close(self) -> None:
        self._closed = True
        tasks: list[asyncio.Task[Any]] = [
            p.task for p in self._pacers.values() if p.task is not None and not p.task.done()
        ]
        tasks += [t for t in self._token_fetches.values() if not t.done()]
        tasks += list(self._background)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._ownership.shared:
            await asyncio.gather(*(p.stop() for p in self._pacers.values()), return_exceptions=True)
        for pacer in self._pacers.values():
            for entry in pacer.queue.drain():
                for w in entry.payloads:
                    if not w.future.done():
                        w.future.set_exception(GitHubClientClosed("GitHub client closed before sending"))
        self._token_fetches.clear()

    # --- tokens ----------------------------------------------------------------------------

    def _token_fetch_done(self, iid: int, task: asyncio.Task[str]) -> None:
        if self._token_fetches.get(iid) is task:
            del self._token_fetches[iid]
        if not task.cancelled():
            task.exception()  # retrieved: waiters may all have gone

    async def _fetch_token(self, iid: int, generation: int) -> str:
        data = await self.app().post(
            "/app/installations/{installation_id}/access_tokens",
            {"installation_id": iid},
            data=b"",
        )
        token = data["token"]
        PROCESS_REDACTOR.add(token, ephemeral=True)
        lifetime = DEFAULT_TOKEN_LIFETIME
        expires_at = data.get("expires_at")
        if isinstance(expires_at, str):
            try:
                when = datetime.datetime.fromisoformat(expires_at.replace("Z", "+00:00"))
                if when.tzinfo is None:
                    when = when.replace(tzinfo=datetime.timezone.utc)
                lifetime = when.timestamp() - self._wall_clock()
            except ValueError:
                log.warning("installation %s: unparseable token expires_at; assuming one hour", iid)
        if self._token_generation.get(iid, 0) == generation and not self._closed:
            # Not stored at all if it is already within the margin (TLRUCache drops it).
            self._tokens[iid] = (token, self._clock() + lifetime - TOKEN_REFRESH_MARGIN)
        log.info("installation %s: new access token (valid %.0f s)", iid, lifetime)
        return token

    def _drop_token(self, iid: int, token: str) -> None:
        cached = self._tokens.get(iid)
        if cached is not None and cached[0] == token:
            self._tokens.pop(iid, None)

    # --- requests --------------------------------------------------------------------------

    def _pacer(self, iid: int) -> _Pacer:
        pacer = self._pacers.get(iid)
        if pacer is None:
            pacer = self._pacers[iid] = _Pacer(self, iid)
        return pacer

    async def _installation_request(
        self, iid: int, method: str, url: str, headers: Mapping[str, str], body: bytes
    ) -> Response:
        if _is_write(method, url, body):
            return await self._pacer(iid).submit(method.upper(), url, headers, body)
        return await self._execute(iid, method, url, headers, body)

    async def _execute(
        self,
        iid: int | None,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        before_attempt: Callable[[int], Awaitable[float | None]] | None = None,
    ) -> Response:
        """Send one request of installation `iid` (None: the App's own, scope "app"): refused while GitHub
        is failing for it, held while it is rate limited, retried; returns the answer for gidgethub to
        decipher, or raises GitHubUnavailable.

        With `iid`, requests without an authorization header get the installation token.
        """
        label = _scope(iid)
        if before_attempt is None:  # a write waits for its hold in its lane (before_attempt)
            await self._wait_for_hold(label)
        admission = await self._admit(label)
        probe = admission.verdict is Verdict.PROBE or _IN_PROBE.get()
        in_probe = _IN_PROBE.set(True) if probe else None
        started = self._clock()
        try:
            response = await self._attempts(iid, method, url, headers, body, before_attempt=before_attempt,
                                            max_attempts=1 if probe else self.config.max_attempts)
        except _HeldBack:  # never sent (this or its token): no news of GitHub
            self._outages.abandoned(admission)
            raise
        except GitHubRateLimited:
            self._outages.answered(label, self._clock())
            raise
        except GitHubFailing as exc:
            now = self._clock()
            self._outages.failed(label, now, admission, started=started, reason=exc.cause)
            exc.retry_after = self._outages.paused_for(label, now)  # the worker comes back for the probe
            raise
        except BaseException:  # cancelled, or refused on the way (its token): no news of GitHub
            self._outages.abandoned(admission)
            raise
        else:
            self._outages.answered(label, self._clock())
            return response
        finally:
            if in_probe is not None:
                _IN_PROBE.reset(in_probe)
            if admission.verdict is Verdict.PROBE:
                settled_event, self._probe_settled = self._probe_settled, asyncio.Event()
                settled_event.set()
            self._report_pauses()

    async def _admit(self, scope: str) -> Admission:
        """Whether a request may go (bot.github.outage): refused with GitHubUnavailable while GitHub work
        of its scope (or the whole app) is paused; waits while a probe is out."""
        if _IN_PROBE.get():  # on the way of a probe: goes with it
            return Admission(Verdict.SEND, scope)
        while True:
            admission = self._outages.admit(scope, self._clock())
            if admission.verdict is Verdict.WAIT:
                try:  # bounded: a probe stuck behind this very request must not hold it for ever
                    await asyncio.wait_for(self._probe_settled.wait(), self.config.max_retry_wait)
                except TimeoutError:
                    raise GitHubUnavailable(f"GitHub work of {describe_scope(admission.scope)} is paused while "
                                            "GitHub is failing; its probe did not finish",
                                            retry_after=self.config.outage_min_cooldown) from None
                continue
            if admission.verdict is Verdict.REFUSE:
                metrics.GITHUB_REQUESTS_REFUSED.labels("outage").inc()
                raise GitHubUnavailable(
                    f"GitHub work of {describe_scope(admission.scope)} is paused while GitHub is failing "
                    f"({admission.reason}); next try in {admission.retry_after:.0f} s",
                    retry_after=admission.retry_after)
            return admission

    def _report_pauses(self) -> None:
        paused = set(self._outages.circuits)
        for scope in paused - self._paused_scopes:
            log.warning("GitHub work of %s paused: %s", describe_scope(scope), self._outages.circuits[scope].reason)
            metrics.GITHUB_PAUSED.labels(scope).set(1)
        for scope in self._paused_scopes - paused:
            log.info("GitHub work of %s resumed", describe_scope(scope))
            metrics.GITHUB_PAUSED.labels(scope).set(0)
        self._paused_scopes = paused

    def _hold(self, scope: str, seconds: float, *, met_here: bool = True) -> None:
        """GitHub asked `scope` to make no requests for `seconds` (of this process, or of another one:
        not `met_here`, not passed on again)."""
        now = self._clock()
        until = now + seconds
        before = self._holds.get(scope, float("-inf"))
        if until <= before:
            return
        self._holds[scope] = until
        if not met_here:
            return
        metrics.GITHUB_RATE_LIMIT_HOLDS.inc()
        if until - max(before, now) < 1.0:  # the same hold seen again (each answer of a spent limit says it)
            return
        until_epoch = self._wall_clock() + seconds
        if self._on_hold is not None:
            self._on_hold(scope, until_epoch)
        if self._ownership.shared and scope != "app":
            task = asyncio.get_running_loop().create_task(self._share_hold(int(scope), until_epoch))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _share_hold(self, iid: int, until_epoch: float) -> None:
        try:
            await self._ownership.share_hold(iid, until_epoch)
        except Exception as exc:  # noqa: BLE001 - the owner stores it again at release; the event went too
            log.warning("installation %s: storing GitHub's hold failed: %s", iid, exc)

    async def _wait_for_hold(self, scope: str) -> None:
        """Until `scope`'s rate limit is over; GitHubRateLimited if that is more than `max_retry_wait`."""
        while (until := self._holds.get(scope)) is not None:
            wait = until - self._clock()
            if wait <= 0:
                if self._holds.get(scope) == until:
                    del self._holds[scope]
                return
            if wait > self.config.max_retry_wait:
                metrics.GITHUB_REQUESTS_REFUSED.labels("rate_limit").inc()
                raise _HeldBack(f"GitHub's rate limit holds {describe_scope(scope)} for {wait:.0f} s more",
                                retry_after=wait)
            await self._sleep(wait)

    async def _attempts(
        self,
        iid: int | None,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        max_attempts: int,
        before_attempt: Callable[[int], Awaitable[float | None]] | None,
    ) -> Response:
        """The tries of one request: 5xx and network errors back off and retry, rate limits hold the scope
        and retry, a rotated token is replaced once."""
        cfg = self.config
        label = _scope(iid)
        inject_token = iid is not None and not any(k.lower() == "authorization" for k in headers)
        token_renewed = False
        attempt = 0
        while True:
            attempt += 1
            timeout = None  # a shared write lane's: the request must end while its lease runs
            if before_attempt is not None:
                timeout = await before_attempt(attempt)
            else:
                await self._wait_for_hold(label)
            send_headers = dict(headers)
            token = None
            if inject_token:
                assert iid is not None
                token = await self.installation_token(iid)
                send_headers["authorization"] = f"token {token}"
            try:
                extra: dict[str, Any] = {} if timeout is None else {
                    "timeout": aiohttp.ClientTimeout(total=max(timeout, 0.001), connect=self._session.timeout.connect)}
                async with self._session.request(method, url, headers=send_headers, data=body, **extra) as resp:
                    status, resp_headers, data = resp.status, resp.headers, await resp.read()
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                metrics.GITHUB_REQUESTS.labels(method, "error").inc()
                cause = f"no answer ({type(exc).__name__})"
                if attempt >= max_attempts or not may_send_again(method, url, body, exc):
                    raise GitHubFailing(cause, method, url, attempt) from exc
                delay = backoff_delay(attempt, self._random(), cap=cfg.max_retry_wait)
                log.warning("GitHub %s %s failed (%s); retry %d in %.1f s",
                            method, url_path(url), type(exc).__name__, attempt, delay)
                await self._sleep(delay)
                continue
            metrics.GITHUB_REQUESTS.labels(method, str(status)).inc()
            remaining = resp_headers.get("x-ratelimit-remaining")
            if remaining is not None:
                try:
                    metrics.GITHUB_RATE_LIMIT_REMAINING.labels(label).set(float(remaining))
                except ValueError:
                    pass
            exhausted = primary_limit_wait(resp_headers, self._wall_clock())
            if exhausted is not None:
                self._hold(label, exhausted)
            if status == 401 and token is not None and not token_renewed and attempt < max_attempts:
                # Revoked or rotated under us: fetch a new token once.
                assert iid is not None
                self._drop_token(iid, token)
                token_renewed = True
                continue
            if status in RETRYABLE_STATUSES:
                if attempt >= max_attempts:
                    raise GitHubFailing(f"GitHub answered {status}", method, url, attempt)
                delay = backoff_delay(attempt, self._random(), cap=cfg.max_retry_wait)
                log.warning("GitHub %s %s: %d; retry %d in %.1f s", method, url_path(url), status, attempt, delay)
                await self._sleep(delay)
                continue
            wait = rate_limit_wait(status, resp_headers, data, self._wall_clock())
            if wait is None:
                return status, resp_headers, data
            self._hold(label, wait)
            if wait > cfg.max_retry_wait or attempt >= max_attempts:
                metrics.GITHUB_REQUESTS_REFUSED.labels("rate_limit").inc()
                raise GitHubRateLimited(
                    f"GitHub's rate limit: {status} to {method} {url_path(url)} asks {describe_scope(label)} "
                    f"to wait {wait:.0f} s", retry_after=wait)
            log.warning("GitHub %s %s: %d (rate limit); %s waits %.1f s, then retry %d",
                        method, url_path(url), status, describe_scope(label), wait, attempt)
            # The next turn's hold waits it out, as every other request of the scope does.
