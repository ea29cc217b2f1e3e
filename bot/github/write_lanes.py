"""Who may send an installation's GitHub writes: this process alone (SQLite, the default), or, when several
processes share one PostgreSQL database, whichever holds the installation's write lane lease.

`bot.github.client` paces writes per installation (one in flight, 80 a minute, 500 an hour). Across
processes that only holds if one process at a time writes for an installation and knows what the others
sent: a `WriteOwnership` is how the client asks. `LocalOwnership` is the single process's: always owned,
no I/O at all. The shared one (`bot.store.write_lanes.SharedWriteOwnership`, wired by the composition root)
keeps a lease row per installation in the database, with the send times of its last hour and GitHub's hold;
it matches the protocols here structurally, so this package does not import the store.

Send times a crash would lose: the owner stores its send times only when it renews (every quarter of the
lease) and releases. So that a process killed in between never lets the next owner exceed the window, the
owner *reserves* write slots: each take and renewal stores, after the real send times, `LANE_RESERVED_WRITES`
(bot/github/pacing.py) reserved ones stamped at the end of the lease it holds (no write of its can be
later). Each write consumes a slot; when they are all spent the owner renews at once to reserve more (one
statement per that many writes). A release stores the real times only. A dead owner's reservations count
as sent for the next owner: conservative by at most that many writes, for a minute.

Fair handover: an owner whose queue never empties would keep the lane for ever (a waiter only polls). A
process refused a lane publishes "github.lane_wanted" (installation_id); an owner that has held the lane
for `LANE_FAIR_SHARE` and heard of a waiter recently releases it at its next write boundary and does not
ask again for `LANE_HANDOVER_BACKOFF` (bot/github/pacing.py `hand_over_lane`).

GitHub's rate-limit holds also travel as events ("github.hold") to the other processes at once:
`follow_holds` applies those published elsewhere (and the lane-wanted events).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Sequence
from typing import Protocol

from bot.events import EventBus

log = logging.getLogger(__name__)

HOLD_EVENT = "github.hold"  # data: scope ("app" or an installation id), until (epoch seconds)
LANE_WANTED_EVENT = "github.lane_wanted"  # data: installation_id (a process waits for its write lane)


class LaneGrant(Protocol):
    """What the process taking a lane learns of it."""

    @property
    def sent_times(self) -> Sequence[float]: ...  # epoch seconds of the installation's writes, the last hour

    @property
    def hold_until(self) -> float | None: ...  # epoch seconds: GitHub holds the installation until then


class WriteOwnership(Protocol):
    @property
    def shared(self) -> bool: ...  # False: this process is the only writer (nothing is ever asked)

    @property
    def lease_seconds(self) -> float: ...

    @property
    def holder(self) -> str: ...

    async def acquire(self, installation_id: int, reserved: Sequence[float] = ()) -> LaneGrant | None:
        """Take (or renew) the lane, storing the `reserved` send times (epoch) after those found (which the
        grant returns); None while another live process holds it."""

    async def renew(self, installation_id: int, sent_times: Sequence[float]) -> LaneGrant | None:
        """Extend the lease, storing the send times so far; the grant says GitHub's hold as stored now (another
        process may have met one while this one was not listening); None: the lane was lost (taken over)."""

    async def release(self, installation_id: int, sent_times: Sequence[float], hold_until: float | None) -> None:
        """Give the lane up, leaving the last hour's send times and the hold for the next owner."""

    async def share_hold(self, installation_id: int, until: float) -> None:
        """GitHub holds the installation until `until` (epoch): the next owner honours it."""


class _Granted:
    sent_times: Sequence[float] = ()
    hold_until: float | None = None


class LocalOwnership:
    """The only process: every lane is always this one's. Never called on the write path."""

    shared = False
    lease_seconds = math.inf
    holder = "local"

    async def acquire(self, installation_id: int, reserved: Sequence[float] = ()) -> LaneGrant | None:
        return _Granted()

    async def renew(self, installation_id: int, sent_times: Sequence[float]) -> LaneGrant | None:
        return _Granted()

    async def release(self, installation_id: int, sent_times: Sequence[float], hold_until: float | None) -> None:
        return None

    async def share_hold(self, installation_id: int, until: float) -> None:
        return None


OnHold = Callable[[str, float], None]  # (scope, until epoch): a hold this process met
OnLaneWanted = Callable[[int], None]  # (installation id): this process waits for that lane


def publish_holds(bus: EventBus) -> OnHold:
    """The `on_hold` of GitHubClients that tells the other processes (the bus carries it across)."""
    return lambda scope, until: bus.publish(HOLD_EVENT, scope=scope, until=until)


def publish_lane_wanted(bus: EventBus) -> OnLaneWanted:
    """The `on_lane_wanted` of GitHubClients: tells the lane's owner, wherever it runs."""
    return lambda installation_id: bus.publish(LANE_WANTED_EVENT, installation_id=installation_id)


async def follow_holds(bus: EventBus, apply_hold: Callable[[str, float], None],
                       lane_wanted: OnLaneWanted | None = None) -> None:
    """Until cancelled: apply every "github.hold" event (this process's own too: harmless, a hold is only
    ever extended), and pass on every "github.lane_wanted" to `lane_wanted` (its own too: harmless, a
    process never owns a lane it waits for)."""
    with bus.subscribe() as events:
        while True:
            event = await events.get()
            try:
                if event.name == HOLD_EVENT:
                    apply_hold(str(event.data["scope"]), float(event.data["until"]))
                elif event.name == LANE_WANTED_EVENT and lane_wanted is not None:
                    lane_wanted(int(event.data["installation_id"]))
            except (KeyError, TypeError, ValueError):
                log.warning("ignored a malformed %s event: %r", event.name, event.data)


def start_following_holds(bus: EventBus, apply_hold: Callable[[str, float], None],
                          lane_wanted: OnLaneWanted | None = None) -> asyncio.Task[None]:
    return asyncio.get_running_loop().create_task(follow_holds(bus, apply_hold, lane_wanted), name="github-holds")
