"""What the event bus sends to the app's other processes as a PostgreSQL NOTIFY payload, and reads back
(pure: no I/O; bot/event_bridge.py sends and listens).

A message is JSON: {"o": origin, "n": sequence, "e": name, "d": data}. The origin (one per process) lets a
process skip its own messages; the sequence keeps two equal events of one batch apart (PostgreSQL folds
identical notifications of one transaction into one). A message too large for a notification is stored
(table event_payloads) and {"o", "n", "ref": its id} is sent instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, time
from typing import Any

import orjson

NOTIFY_MAX_BYTES = 7999  # PostgreSQL refuses a payload of 8000 bytes or more
WAKE = "job.queued"  # a message of this name wakes the receiving process's workers (data: {"kind"})


@dataclass(frozen=True)
class Received:
    origin: str
    name: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    ref: int | None = None  # the event_payloads row holding the whole message


def encode(origin: str, sequence: int, name: str, data: dict[str, Any]) -> str:
    """The message as JSON text. Values JSON has no type for (a datetime, a path, an enum...) travel as
    their text (datetimes in ISO 8601): a subscriber in another process sees those as strings."""
    message = {"o": origin, "n": sequence, "e": name, "d": data}
    try:
        return orjson.dumps(message, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # an integer beyond 64 bits, a lone surrogate...: the slower, more lenient encoder
        return json.dumps(message, default=_as_text, ensure_ascii=True, separators=(",", ":"))


def _as_text(value: object) -> str:
    return value.isoformat() if isinstance(value, date | time) else str(value)


def reference(origin: str, sequence: int, payload_id: int) -> str:
    return json.dumps({"o": origin, "n": sequence, "ref": payload_id}, separators=(",", ":"))


def own_prefix(origin: str) -> str:
    """How every message `origin` sends begins (`encode` and `reference` write the origin first, compactly):
    a process skips its own without decoding them."""
    return json.dumps({"o": origin}, separators=(",", ":"))[:-1] + ","


def fits(text: str) -> bool:
    """Whether `text` may be sent as a notification's payload itself."""
    return len(text) * 4 <= NOTIFY_MAX_BYTES or len(text.encode()) <= NOTIFY_MAX_BYTES


def decode(text: str) -> Received:
    """A notification's payload or a stored message; ValueError when it is neither."""
    try:
        message = json.loads(text)  # not orjson: an integer beyond 64 bits comes back as that integer
    except ValueError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("o"), str):
        raise ValueError("not an event message (no origin)")
    ref = message.get("ref")
    if ref is not None:
        if not isinstance(ref, int) or isinstance(ref, bool):
            raise ValueError(f"bad payload reference {ref!r}")
        return Received(message["o"], ref=ref)
    name, data = message.get("e"), message.get("d", {})
    if not isinstance(name, str) or not name or not isinstance(data, dict):
        raise ValueError("not an event message (no name or data)")
    return Received(message["o"], name, data)
