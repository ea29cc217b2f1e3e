"""The delivery-log sweep's decisions, pure (no I/O): which listed entries to fetch, where to stop paging,
in which order to ingest, what a fetched delivery must look like, where the next sweep may stop, and how
long to wait after a failed sweep.

The log is listed newest first. A sweep stops paging at the first of:

- an entry older than GitHub's 3-day horizon (GitHub has forgotten everything older);
- an entry delivered before the recorded stop point (`SweepMark.floor`: every entry delivered at or
  before it was examined by an earlier sweep), less `LATE_MARGIN`, because a delivery can take a while
  to appear in the log and so may be listed after newer ones were already swept;
- with no stop point recorded (the first sweep of a database), a page that holds only known guids;
- with no stop point and no delivery stored or skipped at all (a new database), an entry older than
  the first sweep's look-back (SWEEP_FIRST_LOOKBACK): a new database against an App with history must
  not run its old commands (merges, agent runs) again.

Unknown guids are ingested oldest first (a PR's `opened` before its `synchronize`), and the stop point
moves forward as they are, so a sweep cut short (a crash, GitHub failing) resumes where it got to.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bot.github.hook_deliveries import DeliveryDetail, LoggedDelivery, RefusedDelivery, UnreadableEntry

HORIZON = timedelta(days=3)  # GitHub keeps deliveries this long
LATE_MARGIN = timedelta(minutes=2)  # how late an entry may appear in the log after newer ones
NOT_STORED_EVENTS = frozenset({"ping"})  # answered, never stored: nothing to recover
MAX_BACKOFF_SECONDS = 600.0
MAX_FETCH_FAILURES = 3  # sweeps in a row failed on fetching one delivery (5xx) before it is skipped

STOP_HORIZON = "the 3-day horizon"
STOP_MARK = "where the last sweep stopped"
STOP_KNOWN = "a page of known deliveries"
STOP_LOOKBACK = "the first sweep's look-back"
STOP_END = "the end of the log"


@dataclass(frozen=True)
class SweepMark:
    """Where sweeps got to: every entry delivered at or before `floor` has been examined."""

    floor: datetime | None = None

    @classmethod
    def from_state(cls, value: Mapping[str, Any] | None) -> SweepMark:
        raw = value.get("floor") if isinstance(value, Mapping) else None
        try:
            return cls(datetime.fromisoformat(raw) if isinstance(raw, str) else None)
        except ValueError:
            return cls()

    def to_state(self) -> dict[str, Any]:
        return {"floor": self.floor.isoformat() if self.floor is not None else None}

    def advanced_to(self, moment: datetime | None) -> SweepMark:
        """This mark, moved forward to `moment` (never back)."""
        if moment is None or (self.floor is not None and moment <= self.floor):
            return self
        return SweepMark(moment)


@dataclass(frozen=True)
class PageVerdict:
    fetch: tuple[LoggedDelivery, ...]  # unknown guids, one entry each
    unreadable: tuple[UnreadableEntry, ...]  # unknown entries that cannot be used (recorded as skipped)
    stop: str | None  # why paging ends after this page; None: go on to the next page
    newest: datetime | None  # the newest delivery time on the page


def first_sweep_since(mark: SweepMark, *, anything_known: bool, now: datetime, lookback: timedelta) -> datetime | None:
    """How far back a sweep looks besides the horizon: `now - lookback` for the first sweep of a new
    database (no stop point, no delivery stored or skipped), else None (the usual stops)."""
    return now - lookback if mark.floor is None and not anything_known else None


def judge_page(page: Sequence[LoggedDelivery | UnreadableEntry], known: Collection[str], *, mark: SweepMark,
               now: datetime, taken: Collection[str] = (), since: datetime | None = None) -> PageVerdict:
    """What to do with one listed page. `known`: the page's guids the app has (stored or skipped);
    `taken`: guids already picked from earlier pages of this sweep (a redelivery lists a guid again);
    `since`: nothing delivered before it is fetched (`first_sweep_since`)."""
    fetch: list[LoggedDelivery] = []
    unreadable: list[UnreadableEntry] = []
    picked: set[str] = set()
    stop: str | None = None
    newest: datetime | None = None
    floor = mark.floor - LATE_MARGIN if mark.floor is not None else None
    for entry in page:
        if isinstance(entry, UnreadableEntry):
            if entry.id is not None and entry.guid is not None and entry.guid not in known \
                    and entry.guid not in taken and entry.guid not in picked:
                unreadable.append(entry)
                picked.add(entry.guid)
            continue
        if entry.delivered_at < now - HORIZON:
            stop = STOP_HORIZON
            break
        if floor is not None and entry.delivered_at < floor:
            stop = STOP_MARK
            break
        if since is not None and entry.delivered_at < since:
            stop = STOP_LOOKBACK
            break
        seen_at = min(entry.delivered_at, now)  # a time ahead of the clock must not move the stop point past now
        newest = seen_at if newest is None else max(newest, seen_at)
        if entry.event in NOT_STORED_EVENTS or entry.guid in known or entry.guid in taken or entry.guid in picked:
            continue
        fetch.append(entry)
        picked.add(entry.guid)
    if stop is None and mark.floor is None and page and not fetch and not unreadable:
        stop = STOP_KNOWN
    return PageVerdict(tuple(fetch), tuple(unreadable), stop, newest)


def ingest_order(entries: Sequence[LoggedDelivery]) -> list[LoggedDelivery]:
    """Oldest first, as GitHub sent them."""
    return sorted(entries, key=lambda e: (e.delivered_at, e.id))


def payload_problem(entry: LoggedDelivery, detail: DeliveryDetail | RefusedDelivery | None) -> str | None:
    """Why a fetched delivery cannot be ingested as its log entry describes it, or None."""
    if detail is None:
        return "GitHub's delivery log no longer has it"
    if isinstance(detail, RefusedDelivery):
        return f"GitHub answered {detail.status} to fetching it: {detail.reason}" if detail.status else detail.reason
    if detail.payload is None:
        return "the delivery has no payload in GitHub's log"
    if not isinstance(detail.payload, Mapping):
        return f"the payload is {type(detail.payload).__name__}, not a JSON object"
    headers = {str(k).lower(): v for k, v in detail.headers.items()}
    guid, event = headers.get("x-github-delivery"), headers.get("x-github-event")
    if guid is not None and guid != entry.guid:
        return f"its X-GitHub-Delivery header ({str(guid)[:64]!r}) is not the log entry's guid"
    if event is not None and event != entry.event:
        return f"its X-GitHub-Event header ({str(event)[:64]!r}) is not the log entry's event ({entry.event!r})"
    action = detail.payload.get("action")
    if entry.action is not None and action != entry.action:
        return f"its payload's action ({str(action)[:64]!r}) is not the log entry's ({entry.action!r})"
    return None


def fetch_failures(state: Mapping[str, Any] | None, delivery_id: int) -> int:
    """How many sweeps in a row failed on fetching `delivery_id`, as the sweep's state records it."""
    failing = state.get("failing_fetch") if isinstance(state, Mapping) else None
    if not isinstance(failing, Mapping) or failing.get("id") != delivery_id:
        return 0
    count = failing.get("sweeps")
    return count if isinstance(count, int) and not isinstance(count, bool) and count > 0 else 0


def retry_delay(interval: float, failures: int, *, retry_after: float | None = None) -> float:
    """How long to wait after `failures` sweeps in a row failed: the interval doubling (at least 5 s),
    at most MAX_BACKOFF_SECONDS, and never before GitHub said to come back."""
    if failures <= 0:
        return interval
    delay = min(MAX_BACKOFF_SECONDS, max(interval, 5.0) * 2 ** (failures - 1))
    return max(delay, min(retry_after or 0.0, MAX_BACKOFF_SECONDS))
