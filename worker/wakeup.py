"""How a feature that queued a job tells this process's worker to look now (a worker in another
process finds the job at its next poll)."""

from __future__ import annotations

from collections.abc import Callable


class JobWakeup:
    def __init__(self) -> None:
        self._listeners: list[Callable[[str], None]] = []

    def listen(self, callback: Callable[[str], None]) -> None:
        self._listeners.append(callback)

    def wake(self, kind: str) -> None:
        """A job of `kind` was queued."""
        for callback in self._listeners:
            callback(kind)
