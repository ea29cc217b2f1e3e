"""Masking of secret values in anything that leaves the process (logs, comments, check runs).

A value is masked in its plain, base64 and URL-encoded forms.
"""

from __future__ import annotations

import base64
import re
import threading
from collections import OrderedDict
from urllib.parse import quote, quote_plus

MASK = "***"
_MIN_SECRET_LENGTH = 4  # shorter values would mask ordinary words


def _forms(value: str) -> set[str]:
    raw = value.encode()
    forms = {
        value,
        base64.b64encode(raw).decode(),
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
        quote(value, safe=""),
        quote_plus(value),
    }
    return {f for f in forms if len(f) >= _MIN_SECRET_LENGTH}


class Redactor:
    """A set of secret values; `redact(text)` replaces every form of each by `***`."""

    def __init__(self, values: list[str] | tuple[str, ...] = (), *, max_ephemeral: int = 1000) -> None:
        self._lock = threading.Lock()
        self._forms: set[str] = set()
        # Short-lived values (installation tokens, renewed hourly) are kept for the newest
        # `max_ephemeral` only, so a long-running process does not grow without bound.
        self._ephemeral: OrderedDict[str, set[str]] = OrderedDict()
        self._max_ephemeral = max_ephemeral
        self._pattern: re.Pattern[str] | None = None
        for value in values:
            self.add(value)

    def add(self, value: str | None, *, ephemeral: bool = False) -> None:
        if not value or len(value) < _MIN_SECRET_LENGTH:
            return
        forms = _forms(value)
        # Multi-line secrets (PEM keys) also leak line by line.
        for line in value.splitlines():
            if len(line.strip()) >= 16:
                forms.add(line.strip())
        with self._lock:
            if ephemeral:
                if value in self._ephemeral:
                    self._ephemeral.move_to_end(value)
                    return
                self._ephemeral[value] = forms
                while len(self._ephemeral) > self._max_ephemeral:
                    self._ephemeral.popitem(last=False)
            elif forms <= self._forms:
                return
            else:
                self._forms |= forms
            self._rebuild()

    def _rebuild(self) -> None:
        every = set(self._forms)
        for forms in self._ephemeral.values():
            every |= forms
        ordered = sorted(every, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(f) for f in ordered)) if ordered else None

    def redact(self, text: str) -> str:
        pattern = self._pattern
        if pattern is None or not text:
            return text
        return pattern.sub(MASK, text)

    def child(self, values: list[str] | tuple[str, ...] = ()) -> "Redactor":
        """A redactor that masks this one's values plus `values` (e.g. one project's secrets)."""
        other = Redactor()
        with self._lock:
            other._forms = set(self._forms)
            for forms in self._ephemeral.values():
                other._forms |= forms
            other._pattern = self._pattern
        for value in values:
            other.add(value)
        return other


# The process-wide redactor: app keys, webhook secrets and installation tokens are added as they load.
PROCESS_REDACTOR = Redactor()
