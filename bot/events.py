"""Publish/subscribe of what happens (job finished, validation started, ...), and the wake-up a feature
gives the worker when it queued a job.

Live dashboard updates and tests listen here instead of polling. Both are in-process; on PostgreSQL the
event bridge (bot/event_bridge.py) carries them to the app's other processes: it is handed every local
publish and wake (`relay_to`) and hands back what another process sent (`deliver`, never relayed again).
On SQLite (one process) nothing is relayed and nothing is added to the path.
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
    remote: bool = False  # published in another process (the bridge delivered it): react to it there, once


# Delivered by the bridge after its listening connection came back: what was sent meanwhile is lost, so
# whoever keeps state from events reads it again (the worker claims; the dashboard re-reads its status).
RECONNECTED = "bus.reconnected"


class EventBus:
    def __init__(self, *, queue_size: int = 1000) -> None:
        self._subscribers: set[asyncio.Queue[AppEvent]] = set()
        self._queue_size = queue_size
        self._relays: list[Callable[[AppEvent], None]] = []

    def publish(self, name: str, **data: Any) -> None:
        event = AppEvent(name, data)
        self.deliver(event)
        for relay in self._relays:
            relay(event)

    def relay_to(self, callback: Callable[[AppEvent], None]) -> None:
        """`callback` is handed every event published here from now on (it must not block)."""
        self._relays.append(callback)

    def deliver(self, event: AppEvent) -> None:
        """Give `event` to this process's subscribers only: one another process published."""
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
    """How a feature that queued a job tells the workers to look now: this process's directly, the other
    processes' through the relay (on PostgreSQL, a NOTIFY); a worker that missed it finds the job at its
    next fallback poll (JOB_POLL_INTERVAL)."""

    def __init__(self) -> None:
        self._listeners: list[Callable[[str | None], None]] = []
        self._relays: list[Callable[[str], None]] = []

    def listen(self, callback: Callable[[str | None], None]) -> None:
        """`callback(kind)` on every wake-up; kind None: jobs of any kind may wait."""
        self._listeners.append(callback)

    def relay_to(self, callback: Callable[[str], None]) -> None:
        self._relays.append(callback)

    def wake(self, kind: str) -> None:
        """A job of `kind` was queued."""
        self.deliver(kind)
        for relay in self._relays:
            relay(kind)

    def deliver(self, kind: str | None) -> None:
        """Wake this process's listeners only (another process queued the job; None: any kind)."""
        for callback in self._listeners:
            callback(kind)
