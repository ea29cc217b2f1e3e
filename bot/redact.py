"""Masking of secret values in anything that leaves the process (logs, comments, check runs).

A known value is masked in its plain, base64 and URL-encoded forms. GitHub's own tokens (installation
tokens, user tokens, personal access tokens) are masked by their shape, whether or not the process
knows them: an installation token is renewed every hour, so matching by shape keeps the pattern from
growing, and a token that leaked into a PR's output is masked too.
"""

from __future__ import annotations

import base64
import re
import threading
from urllib.parse import quote, quote_plus

MASK = "***"
_MIN_SECRET_LENGTH = 4  # shorter values would mask ordinary words
GITHUB_TOKEN = re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{30,251}|github_pat_[A-Za-z0-9_]{22,247})\b")


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
    # Multi-line secrets (PEM keys) also leak line by line.
    forms |= {line.strip() for line in value.splitlines() if len(line.strip()) >= 16}
    return {f for f in forms if len(f) >= _MIN_SECRET_LENGTH}


class Redactor:
    """A set of secret values; `redact(text)` replaces every form of each by `***`."""

    def __init__(self, values: list[str] | tuple[str, ...] = ()) -> None:
        self._lock = threading.Lock()
        self._forms: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._stale = False
        for value in values:
            self.add(value)

    def add(self, value: str | None, *, ephemeral: bool = False) -> None:
        """Mask `value` from now on. `ephemeral` marks a short-lived credential: one shaped like a
        GitHub token is already masked by its shape and is not remembered."""
        if not value or len(value) < _MIN_SECRET_LENGTH:
            return
        if ephemeral and GITHUB_TOKEN.fullmatch(value):
            return
        forms = _forms(value)
        with self._lock:
            if not forms <= self._forms:
                self._forms |= forms
                self._stale = True  # rebuilt by the next redact(), not once per value added

    def _current_pattern(self) -> re.Pattern[str] | None:
        with self._lock:
            if self._stale:
                ordered = sorted(self._forms, key=len, reverse=True)
                self._pattern = re.compile("|".join(re.escape(f) for f in ordered)) if ordered else None
                self._stale = False
            return self._pattern

    def redact(self, text: str) -> str:
        if not text:
            return text
        pattern = self._current_pattern()
        if pattern is not None:
            text = pattern.sub(MASK, text)
        return GITHUB_TOKEN.sub(MASK, text)

    def child(self, values: list[str] | tuple[str, ...] = ()) -> "Redactor":
        """A redactor that masks this one's values plus `values` (e.g. one project's secrets)."""
        other = Redactor()
        with self._lock:
            other._forms = set(self._forms)
            other._pattern = self._pattern
            other._stale = self._stale
        for value in values:
            other.add(value)
        return other


# The process-wide redactor: app keys, webhook secrets and installation tokens are added as they load.
PROCESS_REDACTOR = Redactor()
