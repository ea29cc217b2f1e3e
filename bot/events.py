"""In-process publish/subscribe of what happens (job finished, validation started, ...), and the
wake-up a feature gives the worker when it queued a job.

Live dashboard updates and tests listen here instead of polling.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator


@dataclass(frozen=True)
class AppEvent:
    name: str
    data: dict[str, Any] = field(default_factory=dict)


class EventBus:
    def __init__(self, *, queue_size: int = 1000) -> None:
        self._subscribers: set[asyncio.Queue[AppEvent]] = set()
        self._queue_size = queue_size

    def publish(self, name: str, **data: Any) -> None:
        event = AppEvent(name, data)
        for queue in list(self._subscribers):
            if queue.full():  # a slow subscriber loses its oldest events, never blocks the app
                queue.get_nowait()
            queue.put_nowait(event)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    @contextmanager
    def subscribe(self) -> Iterator[asyncio.Queue[AppEvent]]:
        queue: asyncio.Queue[AppEvent] = asyncio.Queue(self._queue_size)
        self._subscribers.add(queue)
        try:
            yield queue
        finally:
            self._subscribers.discard(queue)


async def wait_for(queue: asyncio.Queue[AppEvent], name: str, *, timeout: float = 10.0,
                   **match: Any) -> AppEvent:
    """Next event called `name` whose data contains `match`; TimeoutError after `timeout` seconds."""
    async with asyncio.timeout(timeout):
        while True:
            event = await queue.get()
            if event.name == name and all(event.data.get(k) == v for k, v in match.items()):
                return event


class JobWakeup:
    """How a feature that queued a job tells this process's worker to look now (a worker in another
    process finds the job at its next poll)."""

    def __init__(self) -> None:
        self._listeners: list[Callable[[str], None]] = []

    def listen(self, callback: Callable[[str], None]) -> None:
        self._listeners.append(callback)

    def wake(self, kind: str) -> None:
        """A job of `kind` was queued."""
        for callback in self._listeners:
            callback(kind)
