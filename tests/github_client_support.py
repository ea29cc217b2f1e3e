"""What tests of bot.github's client share: the App's id, a clock that moves only when the code under
test sleeps, and a bounded wait for a condition (tests/test_github_client.py, tests/test_shared_pacing.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

APP_ID = "12345"


class Clock:
    """A monotonic clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self.gate: asyncio.Event | None = None  # when set up, the next sleep blocks until it is set
        self.waiting = asyncio.Event()  # a sleep is blocked on the gate

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        gate, self.gate = self.gate, None
        if gate is not None:
            self.waiting.set()
            await gate.wait()
        self.now += seconds
        await asyncio.sleep(0)


async def until(predicate: Callable[[], bool], timeout: float = 2.0) -> None:
    """Let other tasks run until `predicate` holds (no timed sleeps), failing after `timeout`."""

    async def spin() -> None:
        while not predicate():
            await asyncio.sleep(0)

    await asyncio.wait_for(spin(), timeout)
