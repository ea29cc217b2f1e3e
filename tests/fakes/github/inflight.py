"""``WritesInFlight``: which writes (POST/PATCH/PUT/DELETE made with an installation token) each
installation has in flight at once, the most it ever had, and every overlap: the proof that the app's
per-installation write pacing holds across processes (GitHub's secondary rate limits punish concurrent
writes by one installation).

The server (``server.py``) calls ``enter`` when such a write has been authenticated and ``leave`` once it
is answered; ``FakeGitHub(write_delay=...)`` holds each write that long in between, so that two writes
sent at about the same time really overlap here (the fake's handlers are synchronous: without a delay,
two writes could never be seen in flight together).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tests.fakes.github.common import Call

WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})


@dataclass
class Overlap:
    """`second` arrived while `first` was still in flight, both for `installation_id`."""

    installation_id: int
    first: Call
    second: Call

    def describe(self) -> str:
        return (f"installation {self.installation_id}: {self.second.method} {self.second.path} "
                f"while {self.first.method} {self.first.path} was in flight")


@dataclass
class WritesInFlight:
    in_flight: dict[int, list[Call]] = field(default_factory=dict)
    most: dict[int, int] = field(default_factory=dict)  # installation -> the most writes it had in flight
    overlaps: list[Overlap] = field(default_factory=list)
    writes: int = 0  # every write entered, for a test to see that writes were observed at all

    def enter(self, installation_id: int, call: Call) -> None:
        open_now = self.in_flight.setdefault(installation_id, [])
        self.overlaps.extend(Overlap(installation_id, earlier, call) for earlier in open_now)
        open_now.append(call)
        self.most[installation_id] = max(self.most.get(installation_id, 0), len(open_now))
        self.writes += 1

    def leave(self, installation_id: int, call: Call) -> None:
        open_now = self.in_flight[installation_id]
        open_now[:] = [other for other in open_now if other is not call]
        if not open_now:
            del self.in_flight[installation_id]

    @property
    def max_in_flight(self) -> int:
        """The most writes any one installation had in flight at once (0 before any write)."""
        return max(self.most.values(), default=0)
