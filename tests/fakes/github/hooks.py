"""``HooksMixin``: the App's webhook and its delivery log, as GitHub keeps them.

``deliver(event, payload)`` is GitHub sending a webhook: it records a delivery-log entry (``id`` of this
attempt, increasing; ``guid``, the ``X-GitHub-Delivery`` value; ``delivered_at``; ``redelivery``; ``event``,
``action``, ``installation_id``, ``repository_id`` from the payload) and POSTs the payload, signed with
``webhook_secret`` and GitHub's headers (``tests/webhook_sender.py``), to ``to_url`` or the App's
``webhook_url``. The entry's ``status`` says how that went, in GitHub's words: "OK" (a 2xx answer),
"Invalid HTTP Response: 503", or "failed to connect to host" (no answer, or no webhook URL set:
``status_code`` 0). It returns the entry: a live dict, as the fake's other state is (a test may break
its ``request.payload`` on purpose).

The REST side (App JWT, like every ``/app/...`` route): ``GET /app/hook/deliveries`` lists entries newest
first, ``per_page`` (30 by default; outside 1..100, or not a number: 422 as on GitHub) at a time, the
next page named by a ``cursor`` in the ``Link`` header (``rel="next"``; a cursor it never gave: 400);
``status=success`` keeps the entries whose ``status_code`` is in 200-399, ``status=failure`` the others
(a 4xx or 5xx answer, and no answer at all: ``status_code`` 0), anything else is 422.
``GET /app/hook/deliveries/{id}`` returns the whole entry with ``request`` (``headers``, ``payload``) and ``response``. ``POST .../attempts`` sends the
entry again as a new entry with ``redelivery: true`` and the same guid; each such request is recorded in
``redelivery_requests`` (the ids asked for). A new entry appears in the list only ``log_delay`` seconds
after it was delivered (GitHub's log lags; 0 by default).
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from typing import Any

import aiohttp
import orjson

from tests.fakes.github.common import _GitHubError, _handles, _iso, _now, _Reply, _Request
from tests.fakes.github.state import FakeState
from tests.webhook_sender import github_headers

_LIST_KEYS = ("id", "guid", "delivered_at", "redelivery", "duration", "status", "status_code", "event", "action",
              "installation_id", "repository_id", "throttled_at")
_FIRST_DELIVERY_ID = 90_000_000_001
_DEFAULT_PER_PAGE, _MAX_PER_PAGE = 30, 100
SEND_TIMEOUT_S = 10.0  # GitHub gives a receiver 10 s


def _succeeded(entry: dict[str, Any]) -> bool:
    """GitHub's `status=success` class: a `status_code` in 200-399 (its REST description)."""
    code = entry.get("status_code")
    return isinstance(code, int) and 200 <= code <= 399


def _invalid(field: str, value: str, message: str) -> _GitHubError:
    return _GitHubError(422, "Validation Failed", record=True, detail=f"{field}={value!r}",
                        errors=[{"resource": "HookDelivery", "field": field, "code": "invalid", "value": value,
                                 "message": message}])


def _per_page(query: dict[str, str]) -> int:
    raw = query.get("per_page")
    if raw is None:
        return _DEFAULT_PER_PAGE
    if not raw.strip().isdigit() or not 1 <= int(raw) <= _MAX_PER_PAGE:
        raise _invalid("per_page", raw, f"per_page must be between 1 and {_MAX_PER_PAGE}")
    return int(raw)


def _id_of(payload: Any, key: str) -> int | None:
    part = payload.get(key) if isinstance(payload, dict) else None
    value = part.get("id") if isinstance(part, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class HooksMixin(FakeState):
    """The App's webhook URL and delivery log (see the module docstring)."""

    webhook_url: str | None = None  # where deliveries are POSTed; None: nowhere GitHub can reach
    webhook_secret: str | None = None  # signs them (X-Hub-Signature-256)
    log_delay: float = 0.0  # seconds before a new entry is listed

    def __init__(self) -> None:
        super().__init__()
        self.hook_deliveries: list[dict[str, Any]] = []  # every attempt, oldest first
        self.redelivery_requests: list[int] = []  # ids POSTed to .../attempts
        self._hook_ids = itertools.count(_FIRST_DELIVERY_ID)
        self._listed_from: list[float] = []  # by position in hook_deliveries: monotonic time it is listed from
        self._sends: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------ GitHub sending a webhook

    async def deliver(self, event: str, payload: dict[str, Any], *, to_url: str | None = None,
                      guid: str | None = None, redelivery: bool = False) -> dict[str, Any]:
        """Send `payload` as GitHub would (see the module docstring) and return its log entry."""
        body = orjson.dumps(payload)
        headers = github_headers(event, body, secret=self.webhook_secret, delivery_id=guid or str(uuid.uuid4()),
                                 payload=payload)
        entry_id = next(self._hook_ids)
        entry: dict[str, Any] = {
            "id": entry_id, "guid": headers["X-GitHub-Delivery"], "delivered_at": _iso(_now()),
            "redelivery": redelivery, "duration": 0.0, "status": "", "status_code": 0, "event": event,
            "action": payload.get("action") if isinstance(payload.get("action"), str) else None,
            "installation_id": _id_of(payload, "installation"), "repository_id": _id_of(payload, "repository"),
            "throttled_at": None, "url": to_url or self.webhook_url or "",
            "request": {"headers": dict(headers), "payload": payload},
            "response": {"headers": {}, "payload": None},
        }
        started = time.monotonic()
        await self._send(entry, body, headers)
        entry["duration"] = round(time.monotonic() - started, 3)
        self.hook_deliveries.append(entry)
        self._listed_from.append(time.monotonic() + self.log_delay)
        return entry

    async def _send(self, entry: dict[str, Any], body: bytes, headers: dict[str, str]) -> None:
        if not entry["url"]:
            entry["status"], entry["status_code"] = "failed to connect to host", 0
            return
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=SEND_TIMEOUT_S)) as session:
                async with session.post(entry["url"], data=body, headers=headers) as response:
                    text = await response.text()
                    entry["response"] = {"headers": dict(response.headers), "payload": text}
                    entry["status_code"] = response.status
                    entry["status"] = "OK" if 200 <= response.status < 300 else \
                        f"Invalid HTTP Response: {response.status}"
        except (aiohttp.ClientError, TimeoutError):
            entry["status"], entry["status_code"] = "failed to connect to host", 0

    def listed_deliveries(self) -> list[dict[str, Any]]:
        """The entries ``GET /app/hook/deliveries`` shows now, newest first."""
        return [entry for _, entry in self._listed()]

    def _listed(self) -> list[tuple[int, dict[str, Any]]]:
        """(position, entry) of the listed entries, newest first (by position: a test may break ids)."""
        now = time.monotonic()
        return [(i, e) for i, e in reversed(list(enumerate(self.hook_deliveries))) if self._listed_from[i] <= now]

    # ------------------------------------------------------------------ handlers

    @_handles("GET /app/hook/deliveries")
    def _list_hook_deliveries(self, request: _Request) -> _Reply:
        per_page = _per_page(request.query)
        entries = self._listed()
        status = request.query.get("status")
        if status == "success":
            entries = [(i, e) for i, e in entries if _succeeded(e)]
        elif status == "failure":
            entries = [(i, e) for i, e in entries if not _succeeded(e)]
        elif status is not None:
            raise _invalid("status", status, "status must be one of: success, failure")
        cursor = request.query.get("cursor")
        if cursor:
            if not cursor.startswith("v1_") or not cursor[3:].isdigit():
                raise _GitHubError(400, "Bad Request", record=True, detail=f"cursor {cursor!r} is not one we gave")
            below = int(cursor[3:])
            entries = [(i, e) for i, e in entries if i < below]
        page = entries[:per_page]
        headers = {}
        if len(entries) > per_page:
            after = request.http.url.update_query(per_page=per_page, cursor=f"v1_{page[-1][0]}")
            headers["Link"] = f'<{after}>; rel="next"'
        return _Reply(200, [{key: e.get(key) for key in _LIST_KEYS} for _, e in page], headers)

    def _hook_delivery(self, request: _Request) -> dict[str, Any]:
        wanted = request.int_param("delivery_id")
        for entry in self.hook_deliveries:
            if type(entry["id"]) is int and entry["id"] == wanted:
                return entry
        raise _GitHubError(404, "Not Found")

    @_handles("GET /app/hook/deliveries/{delivery_id}")
    def _get_hook_delivery(self, request: _Request) -> _Reply:
        return _Reply(200, self._hook_delivery(request))

    @_handles("POST /app/hook/deliveries/{delivery_id}/attempts")
    def _redeliver_hook_delivery(self, request: _Request) -> _Reply:
        entry = self._hook_delivery(request)
        self.redelivery_requests.append(entry["id"])
        payload = entry["request"]["payload"]
        if isinstance(payload, dict):
            task = asyncio.get_running_loop().create_task(
                self.deliver(entry["event"], payload, guid=entry["guid"], redelivery=True))
            self._sends.add(task)
            task.add_done_callback(self._sends.discard)
        return _Reply(202, {})
