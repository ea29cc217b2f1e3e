"""The App's webhook delivery log (App JWT): list it newest first, read one delivery whole, ask for a
redelivery. The recovery sweep and polling mode (pipeline/deliveries) read it; what they read of an
entry is a `LoggedDelivery`, of a delivery a `DeliveryDetail`. Entries are read leniently: an entry
without what the sweep needs comes back as `UnreadableEntry` with the reason, never as an exception,
so that one bad entry does not stop a sweep.

Requests go through the App's client (`GitHubClients.app()`): paced, retried on 5xx, rate limits held.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gidgethub import BadRequest, RateLimitExceeded
from gidgethub.abc import GitHubAPI

from bot.errors import GitHubUnavailable
from bot.github.errors import describe

LIST = "/app/hook/deliveries"
MAX_PER_PAGE = 100


@dataclass(frozen=True)
class LoggedDelivery:
    """One attempt in the log (`id`); `guid` is the X-GitHub-Delivery value, shared by redeliveries."""

    id: int
    guid: str
    delivered_at: datetime
    event: str
    action: str | None
    redelivery: bool
    status: str
    installation_id: int | None
    repository_id: int | None


@dataclass(frozen=True)
class UnreadableEntry:
    """A listed entry without what the sweep needs; `id`/`guid` when it had them."""

    id: int | None
    guid: str | None
    event: str | None
    reason: str


@dataclass(frozen=True)
class RefusedDelivery:
    """GitHub refused this one delivery (a 4xx that is neither a rate limit nor the App's JWT refused):
    asking again will not help, so the sweep records it as skipped with `reason` and goes on."""

    id: int
    status: int
    reason: str


@dataclass(frozen=True)
class FailingDelivery:
    """GitHub failed on every try of fetching this delivery (5xx, or no answer): `error`, the client's
    `GitHubFailing`. Transient as a rule: the sweep fails, and skips it only when sweeps keep failing on it."""

    id: int
    error: GitHubUnavailable


# 4xx answers that say nothing against the delivery itself: the App's JWT refused (every request would
# fail alike), a timeout, a rate limit. These fail the sweep, which is tried again after a backoff.
NOT_THE_DELIVERYS_FAULT = frozenset({401, 408, 429})


@dataclass(frozen=True)
class DeliveryDetail:
    """A delivery as GitHub sent it (or tried to): `payload` is whatever the log holds (None: nothing)."""

    id: int
    headers: Mapping[str, Any]
    payload: Any


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def read_entry(item: Any) -> LoggedDelivery | UnreadableEntry:
    """A listed entry, or why it cannot be used."""
    if not isinstance(item, Mapping):
        return UnreadableEntry(None, None, None, f"the entry is {describe(item)}, not an object")
    entry_id, guid, event = _int(item.get("id")), item.get("guid"), item.get("event")
    guid = guid if isinstance(guid, str) and guid else None
    event = event if isinstance(event, str) and event else None
    delivered_at = _time(item.get("delivered_at"))
    missing = [name for name, value in (("id", entry_id), ("guid", guid), ("event", event),
                                        ("delivered_at", delivered_at)) if value is None]
    if missing:
        return UnreadableEntry(entry_id, guid, event, f"the log entry has no usable {', '.join(missing)}")
    action = item.get("action")
    return LoggedDelivery(id=entry_id, guid=guid, delivered_at=delivered_at, event=event,  # type: ignore[arg-type]
                          action=action if isinstance(action, str) else None,
                          redelivery=item.get("redelivery") is True, status=str(item.get("status") or ""),
                          installation_id=_int(item.get("installation_id")),
                          repository_id=_int(item.get("repository_id")))


class HookDeliveries:
    def __init__(self, gh: GitHubAPI) -> None:
        self.gh = gh  # authenticated as the App

    async def pages(self, *, per_page: int = MAX_PER_PAGE) -> AsyncIterator[list[LoggedDelivery | UnreadableEntry]]:
        """The log, newest first, a page at a time (gidgethub follows the cursor of the `Link` header). The
        next page is asked for only when the consumer wants it: stopping early costs nothing more."""
        page: list[LoggedDelivery | UnreadableEntry] = []
        async for item in self.gh.getiter(f"{LIST}{{?per_page}}", {"per_page": str(per_page)}):
            page.append(read_entry(item))
            if len(page) == per_page:
                yield page
                page = []
        if page:
            yield page

    async def get(self, delivery_id: int) -> DeliveryDetail | RefusedDelivery | FailingDelivery | None:
        """The whole delivery (`request.headers`, `request.payload`); None when the log no longer has it;
        `RefusedDelivery` when GitHub refuses this one (403, 422, ...); `FailingDelivery` when GitHub failed
        on it through the client's retries. Rate limits, a paused client and a refused JWT raise (the
        client's `GitHubUnavailable`, gidgethub's `BadRequest` 401): they are not this delivery's."""
        try:
            body = await self.gh.getitem(f"{LIST}/{{delivery_id}}", {"delivery_id": str(delivery_id)})
        except GitHubUnavailable as exc:
            # The client's GitHubFailing (its `cause`: the 5xx or lost answer) is news of this request; a
            # rate limit or a pause of the client's GitHub work (no `cause`) is not this delivery's.
            if getattr(exc, "cause", None) is None:
                raise
            return FailingDelivery(delivery_id, exc)
        except BadRequest as exc:
            status = int(exc.status_code)
            if status in (404, 410):
                return None
            if 400 <= status < 500 and status not in NOT_THE_DELIVERYS_FAULT \
                    and not isinstance(exc, RateLimitExceeded):
                return RefusedDelivery(delivery_id, status, str(exc)[:300] or exc.status_code.phrase)
            raise
        request = body.get("request") if isinstance(body, Mapping) else None
        if not isinstance(request, Mapping):
            return DeliveryDetail(delivery_id, {}, None)
        headers = request.get("headers")
        return DeliveryDetail(delivery_id, headers if isinstance(headers, Mapping) else {}, request.get("payload"))

    async def redeliver(self, delivery_id: int) -> None:
        """Ask GitHub to send the delivery again (`POST .../attempts`). The sweep never does: it ingests
        what it fetched."""
        await self.gh.post(f"{LIST}/{{delivery_id}}/attempts", {"delivery_id": str(delivery_id)}, data=b"")
