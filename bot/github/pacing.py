"""Pure decisions for talking to GitHub politely: write pacing, priorities, coalescing, retries.

Nothing here does I/O, sleeps or reads a clock: every function takes `now` (and randomness) as
arguments, so it can be tested exactly. `bot.github.client` is the thin async shell around it.

GitHub's secondary rate limits allow at most 80 content-creating requests a minute and 500 an
hour; `next_write_time` keeps one installation within such a window. When writes are held back,
`WriteQueue` sends the important ones first (creating and completing check runs), keeps FIFO
order within a priority, never reorders two writes to the same resource, and coalesces plain
progress updates (PATCH of a check run or issue comment) to the latest one.
"""

from __future__ import annotations

import heapq
import json
import re
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})

# Priorities: lower is sent first.
PRIORITY_CHECK_RUN = 0  # creating a check run, completing one
PRIORITY_NORMAL = 1  # every other write
PRIORITY_PROGRESS = 2  # PATCH of a check run or issue comment that does not complete anything

MINUTE = 60.0
HOUR = 3600.0

_CHECK_RUNS = re.compile(r"/repos/[^/]+/[^/]+/check-runs/?$")
_CHECK_RUN = re.compile(r"/repos/[^/]+/[^/]+/check-runs/\d+/?$")
_ISSUE_COMMENT = re.compile(r"/repos/[^/]+/[^/]+/issues/comments/\d+/?$")
_GRAPHQL = re.compile(r"/graphql/?$")


def url_path(url: str) -> str:
    """The path of `url` (absolute or not), without query or fragment."""
    return urlsplit(url).path or "/"


def parse_json_body(body: bytes | str | None) -> Any:
    """The JSON value of a request body, or None if it is empty or not JSON."""
    if not body:
        return None
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


def is_write(method: str, path: str, body: Any = None) -> bool:
    """Whether a request counts as a write for pacing (GraphQL: only mutations)."""
    method = method.upper()
    if method not in WRITE_METHODS:
        return False
    if method == "POST" and _GRAPHQL.search(url_path(path)):
        query = body.get("query") if isinstance(body, dict) else None
        return isinstance(query, str) and query.lstrip().startswith("mutation")
    return True


def _completes_check_run(body: Any) -> bool:
    return isinstance(body, dict) and ("conclusion" in body or body.get("status") == "completed")


def write_priority(method: str, path: str, body: Any = None) -> int:
    """PRIORITY_CHECK_RUN for creating/completing a check run, PRIORITY_PROGRESS for a plain
    progress update (PATCH of a check run or an issue comment), PRIORITY_NORMAL otherwise."""
    method = method.upper()
    p = url_path(path)
    if method == "POST" and _CHECK_RUNS.search(p):
        return PRIORITY_CHECK_RUN
    if method == "PATCH" and _CHECK_RUN.search(p):
        return PRIORITY_CHECK_RUN if _completes_check_run(body) else PRIORITY_PROGRESS
    if method == "PATCH" and _ISSUE_COMMENT.search(p):
        return PRIORITY_PROGRESS
    return PRIORITY_NORMAL


def coalesce_key(method: str, path: str, body: Any = None) -> str | None:
    """A key shared by writes that may be folded into one, or None.

    Only PATCHes of a check run or an issue comment with a JSON object body qualify. A check-run
    update carrying annotations or images never does: GitHub appends those on every update, so
    dropping one would lose them.
    """
    if method.upper() != "PATCH" or not isinstance(body, dict):
        return None
    p = url_path(path).rstrip("/")
    if not (_CHECK_RUN.search(p) or _ISSUE_COMMENT.search(p)):
        return None
    output = body.get("output")
    if isinstance(output, dict) and (output.get("annotations") or output.get("images")):
        return None
    return f"PATCH {p}"


WINDOW_MARGIN = 1.0  # seconds added to each window: a safety margin for network delay


def next_write_time(sent_times: deque[float], now: float, per_minute: int, per_hour: int, *,
                    margin: float = 0.0) -> float:
    """The earliest time >= now at which one more write keeps every window within its limit.

    `sent_times` holds the send times of earlier writes in ascending order (older than an hour
    may be present or pruned). After a write at time t, the writes in (t-60, t] must number at
    most `per_minute` and those in (t-3600, t] at most `per_hour`.
    """
    t = now
    for limit, window in ((per_minute, MINUTE), (per_hour, HOUR)):
        if limit <= 0:
            raise ValueError("write limits must be positive")
        if len(sent_times) >= limit:
            # The limit-th most recent write must have left the window, as GitHub counts it: from
            # when a write arrives, which can be later than we sent it (hence `margin`).
            t = max(t, sent_times[-limit] + window + margin)
    return t


def prune_sent_times(sent_times: deque[float], now: float, horizon: float = HOUR) -> None:
    """Drop send times that no window can see any more (older than `horizon`)."""
    while sent_times and sent_times[0] <= now - horizon:
        sent_times.popleft()


# --- retries ---------------------------------------------------------------------------------

RETRYABLE_STATUSES = frozenset({500, 502, 503, 504})
SECONDARY_LIMIT_DEFAULT_WAIT = 60.0  # GitHub: "wait at least one minute" when no header says


def backoff_delay(attempt: int, rand: float, *, base: float = 1.0, cap: float = 60.0) -> float:
    """Exponential backoff with jitter after failed attempt number `attempt` (1-based).

    The delay lies in [d/2, d) with d = min(cap, base * 2**(attempt-1)); `rand` is in [0, 1).
    """
    d = min(cap, base * (2 ** max(0, attempt - 1)))
    return d / 2 + (d / 2) * rand


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        value = headers.get(name.title())
    return value


def primary_limit_wait(headers: Mapping[str, str], now_epoch: float) -> float | None:
    """Seconds until the primary rate limit resets when a response says none is left
    (`x-ratelimit-remaining: 0`), +1 s for the integer rounding of `x-ratelimit-reset`; else None.
    Any response can say so, a successful one included."""
    remaining = _header(headers, "x-ratelimit-remaining")
    reset = _header(headers, "x-ratelimit-reset")
    if remaining is None or remaining.strip() != "0" or reset is None:
        return None
    try:
        return max(0.0, float(reset) - now_epoch) + 1.0
    except ValueError:
        return None


def rate_limit_wait(status: int, headers: Mapping[str, str], body: bytes | None, now_epoch: float) -> float | None:
    """Seconds to wait before retrying a rate-limited response (403/429), or None if it is not one.

    `retry-after` wins; then `x-ratelimit-remaining: 0` waits until `x-ratelimit-reset` (+1 s for
    the integer rounding); then a 429, or a 403 whose message says "rate limit", waits a minute.
    """
    if status not in (403, 429):
        return None
    retry_after = _header(headers, "retry-after")
    if retry_after is not None:
        try:
            return max(0.0, float(retry_after))
        except ValueError:
            pass
    exhausted = primary_limit_wait(headers, now_epoch)
    if exhausted is not None:
        return exhausted
    if status == 429:
        return SECONDARY_LIMIT_DEFAULT_WAIT
    if body and b"rate limit" in body.lower():
        return SECONDARY_LIMIT_DEFAULT_WAIT
    return None


# --- the write queue -------------------------------------------------------------------------

T = TypeVar("T")


@dataclass(eq=False)
class QueuedWrite(Generic[T]):
    """One write to send. `payloads` holds one item per caller (more than one once coalesced)."""

    method: str
    path: str
    body: Any
    priority: int
    key: str | None
    seq: int
    payloads: list[T] = field(default_factory=list)
    coalesced: int = 0  # how many newer writes were folded into this one
    deferred: bool = False  # for the shell: already counted as held back

    @property
    def resource(self) -> str:
        return url_path(self.path).rstrip("/")


class WriteQueue(Generic[T]):
    """Pending writes of one installation: priority order, FIFO within a priority, coalescing.

    Rules:
    - `pop` returns the lowest priority number, and the oldest among equals.
    - Writes to the same resource (URL path) are never reordered: a write pushed with a more
      important priority promotes the earlier queued writes to that resource to its priority.
    - A PATCH with a `coalesce_key` is folded into the newest queued write to the same resource
      if that has the same key and is not more important than the new one (a queued completion
      is never overwritten by a later progress update). The merged body is the old one updated
      by the new one (what sending both in order would leave), it keeps the older place in line
      and takes the new priority; all their payloads ride on it.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, QueuedWrite[T]]] = []
        self._queued: set[int] = set()  # seqs of entries still queued
        self._by_resource: dict[str, list[QueuedWrite[T]]] = {}
        self._seq = 0
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def __bool__(self) -> bool:
        return self._len > 0

    def __iter__(self) -> Iterator[QueuedWrite[T]]:
        """Queued entries in the order `pop` would return them (if nothing else is pushed)."""
        entries = [e for items in self._by_resource.values() for e in items]
        return iter(sorted(entries, key=lambda e: (e.priority, e.seq)))

    def push(self, method: str, path: str, body: Any, payload: T) -> tuple[QueuedWrite[T], bool]:
        """Queue a write; returns the entry that carries `payload` and whether it was coalesced."""
        method = method.upper()
        priority = write_priority(method, path, body)
        key = coalesce_key(method, path, body)
        resource = url_path(path).rstrip("/")
        same = self._by_resource.setdefault(resource, [])
        last = same[-1] if same else None
        if key is not None and last is not None and last.key == key and priority <= last.priority:
            last.body = {**last.body, **body}
            last.payloads.append(payload)
            last.coalesced += 1
            self._promote(same, priority)
            return last, True
        self._promote(same, priority)
        self._seq += 1
        entry: QueuedWrite[T] = QueuedWrite(method, path, body, priority, key, self._seq, [payload])
        same.append(entry)
        self._queued.add(entry.seq)
        heapq.heappush(self._heap, (priority, entry.seq, entry))
        self._len += 1
        return entry, False

    def _promote(self, entries: list[QueuedWrite[T]], priority: int) -> None:
        for entry in entries:
            if entry.priority > priority:
                entry.priority = priority
                heapq.heappush(self._heap, (priority, entry.seq, entry))

    def peek(self) -> QueuedWrite[T] | None:
        self._drop_stale()
        return self._heap[0][2] if self._heap else None

    def pop(self) -> QueuedWrite[T] | None:
        self._drop_stale()
        if not self._heap:
            return None
        _, _, entry = heapq.heappop(self._heap)
        self._queued.discard(entry.seq)
        same = self._by_resource[entry.resource]
        same.remove(entry)
        if not same:
            del self._by_resource[entry.resource]
        self._len -= 1
        return entry

    def drain(self) -> list[QueuedWrite[T]]:
        """Remove and return every queued entry, in pop order."""
        out = []
        while (entry := self.pop()) is not None:
            out.append(entry)
        return out

    def _drop_stale(self) -> None:
        heap = self._heap
        while heap:
            priority, seq, entry = heap[0]
            if seq in self._queued and entry.priority == priority:
                return
            heapq.heappop(heap)


# --- shared write lanes (PostgreSQL: one process at a time writes for an installation) ---------
#
# A process owns an installation's writes under a lease of `lease_seconds` (bot/github/write_lanes.py).
# Its own view of the lease is conservative: it runs from before the statement that took or renewed it
# was sent, on the monotonic clock. A write starts only while that view leaves room for the write's whole
# HTTP timeout plus a safety margin, so a stalled owner's last write has ended (or been given up) before
# anyone else may take the lane.

LANE_FIRST_POLL = 0.05  # a process waiting for a lane another one owns asks again after this ...
LANE_MAX_POLL = 1.0  # ... doubling up to this (a long-held lane costs a waiter one statement a second)
LANE_RESERVED_WRITES = 10  # write slots an owner reserves in the row at each take and renewal
LANE_FAIR_SHARE = 2.0  # an owner someone waits for hands the lane over after holding it this long ...
LANE_WANTED_FRESH = 2 * LANE_MAX_POLL  # ... if it heard of the waiter this recently (a waiter asks that often)
LANE_HANDOVER_BACKOFF = LANE_MAX_POLL + 0.25  # and does not ask for it again before a waiter polled


def lane_write_timeout(lease_seconds: float) -> float:
    """The HTTP timeout of one write under a lease of `lease_seconds`: half of it. Renewed every quarter,
    a live lease always has three quarters left, so writes never wait for a renewal."""
    return lease_seconds / 2


def lane_safety_margin(lease_seconds: float) -> float:
    """Time kept between the end of an owner's last possible write and its lease's end (timer latency,
    clock skew between hosts): a second, less for a short lease."""
    return min(1.0, lease_seconds / 8)


def lane_renew_interval(lease_seconds: float) -> float:
    return lease_seconds / 4


def lease_allows_write(lease_until: float, now: float, lease_seconds: float) -> bool:
    """Whether a write may start at `now` under a lease this process holds until `lease_until` (its own
    conservative view; -inf when it holds none): its whole timeout and the margin must fit."""
    return lease_until - now >= lane_write_timeout(lease_seconds) + lane_safety_margin(lease_seconds)


def hand_over_lane(held_since: float, wanted_at: float, now: float) -> bool:
    """Whether an owner that took its lane at `held_since`, and last heard of a process waiting for it at
    `wanted_at` (-inf: never), gives it up at this write boundary."""
    return now - held_since >= LANE_FAIR_SHARE and now - wanted_at <= LANE_WANTED_FRESH


def lane_poll_delay(tries: int) -> float:
    """The wait before asking again for a lane after `tries` (>= 1) refusals."""
    return min(LANE_MAX_POLL, LANE_FIRST_POLL * 2 ** max(0, tries - 1))


def sent_times_to_epoch(sent_times: Iterable[float], now: float, now_epoch: float) -> list[float]:
    """Send times on a monotonic clock (reading `now`) as epoch seconds (`now_epoch` at the same moment),
    those the hourly window can still see, to the millisecond: what is stored for the next owner."""
    offset = now_epoch - now
    return [round(t + offset, 3) for t in sent_times if t > now - HOUR - WINDOW_MARGIN]


def sent_times_from_epoch(stored: Iterable[float], now: float, now_epoch: float) -> deque[float]:
    """Stored epoch send times on this process's monotonic clock, ascending, as old as the hour's window.
    A time still to come (write slots reserved up to the end of a lease) counts as sent now."""
    offset = now - now_epoch
    return deque(sorted(min(t + offset, now) for t in stored if t + offset > now - HOUR - WINDOW_MARGIN))


def merge_sent_times(stored: deque[float], local: Iterable[float]) -> deque[float]:
    """What a process taking a lane counts: the stored times, plus its own that are newer than all of
    them (writes it made but could not store, e.g. a release that failed)."""
    newest = stored[-1] if stored else float("-inf")
    merged = deque(stored)
    merged.extend(t for t in local if t > newest + 0.002)  # stored times are rounded to the millisecond
    return merged
