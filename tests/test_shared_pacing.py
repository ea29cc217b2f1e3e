"""GitHub write pacing across processes (bot/github/write_lanes.py, bot/store/write_lanes.py).

Two `GitHubClients`, each with its own HTTP session and its own `SharedWriteOwnership` holder, stand for two
processes on one PostgreSQL database, against the fake GitHub over real HTTP. The fake records the writes
each installation has in flight (tests/fakes/github/inflight.py); `write_delay` holds each write there so
that two sent at about the same time really overlap.

The pure rules are tested first, without I/O; then the single process's path, which must never ask its
ownership anything.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from datetime import UTC, datetime, timedelta
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from sqlalchemy import func, select, text

from bot import migrate
from bot.db import PG_POOL_OVERFLOW, PG_POOL_SIZE, Database
from bot.errors import GitHubUnavailable
from bot.github.client import LANE_LINGER, GitHubClientConfig, GitHubClients, GitHubRateLimited
from bot.github.pacing import (
    HOUR,
    LANE_FAIR_SHARE,
    LANE_RESERVED_WRITES,
    LANE_WANTED_FRESH,
    hand_over_lane,
    WINDOW_MARGIN,
    lane_poll_delay,
    lane_write_timeout,
    lease_allows_write,
    merge_sent_times,
    sent_times_from_epoch,
    sent_times_to_epoch,
)
from bot.events import AppEvent, wait_for
from bot.github.write_lanes import HOLD_EVENT, LocalOwnership
from bot.models import GitHubWriteLane
import bot.store.write_lanes as store_module
from bot.store.write_lanes import LaneClaim, SharedWriteOwnership, WriteLaneStore
from tests.fakes.github import FakeGitHub
from tests.github_client_support import APP_ID, Clock, until

COMMENTS = "/repos/{owner}/{repo}/issues/1/comments"
REPOS = {1: ("octo", "one"), 2: ("acme", "two")}


# --- the pure rules ---------------------------------------------------------------------------


def test_a_write_starts_only_while_the_lease_covers_its_whole_timeout_and_the_margin() -> None:
    assert lane_write_timeout(20.0) == 10.0
    assert lease_allows_write(lease_until=111.0, now=100.0, lease_seconds=20.0)  # 11 s left: 10 + 1
    assert not lease_allows_write(lease_until=110.9, now=100.0, lease_seconds=20.0)
    assert not lease_allows_write(lease_until=float("-inf"), now=100.0, lease_seconds=20.0)  # not held
    assert lease_allows_write(lease_until=101.3, now=100.0, lease_seconds=2.0)  # short: 1 + 0.25


def test_a_fresh_lease_renewed_every_quarter_always_allows_a_write() -> None:
    for ttl in (1.0, 2.0, 20.0, 120.0):
        assert lease_allows_write(lease_until=ttl * 3 / 4, now=0.0, lease_seconds=ttl)


def test_polling_for_a_lane_backs_off_from_50_ms_to_a_second() -> None:
    assert [lane_poll_delay(n) for n in range(1, 8)] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]


def test_send_times_travel_as_epoch_seconds_and_only_the_last_hour() -> None:
    mono_now, epoch_now = 5000.0, 1_700_000_000.0
    sent = deque([mono_now - HOUR - WINDOW_MARGIN - 1, mono_now - 30.5, mono_now - 0.25])
    stored = sent_times_to_epoch(sent, mono_now, epoch_now)
    assert stored == [epoch_now - 30.5, epoch_now - 0.25]
    # Another process, whose monotonic clock reads 10.0 at the same moment:
    assert sent_times_from_epoch(stored + [epoch_now - 2 * HOUR], 10.0, epoch_now) == deque([-20.5, 9.75])


def test_reserved_slots_stamped_at_a_lease_end_still_to_come_count_as_sent_now() -> None:
    assert sent_times_from_epoch([1_700_000_030.0, 1_700_000_000.0 - 5], 100.0, 1_700_000_000.0) == deque([95.0, 100.0])


def test_an_owner_hands_over_only_after_its_share_and_to_a_waiter_heard_of_lately() -> None:
    assert hand_over_lane(held_since=0.0, wanted_at=1.5, now=LANE_FAIR_SHARE)
    assert not hand_over_lane(held_since=0.0, wanted_at=1.5, now=LANE_FAIR_SHARE - 0.1)  # its share first
    assert not hand_over_lane(held_since=0.0, wanted_at=float("-inf"), now=10.0)  # nobody waits
    assert not hand_over_lane(held_since=0.0, wanted_at=1.0, now=1.0 + LANE_WANTED_FRESH + 0.1)  # gone since


def test_a_new_owner_counts_the_stored_times_and_its_own_newer_ones() -> None:
    stored = deque([1.0, 2.0, 3.0])
    assert merge_sent_times(stored, [2.0, 3.0005]) == deque([1.0, 2.0, 3.0])  # already stored (ms rounding)
    assert merge_sent_times(stored, [2.5, 4.0]) == deque([1.0, 2.0, 3.0, 4.0])
    assert merge_sent_times(deque(), [4.0]) == deque([4.0])


# --- the single process: no I/O ---------------------------------------------------------------


class RefusingOwnership(LocalOwnership):
    """A process alone whose ownership fails the test if it is ever asked anything."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def acquire(self, installation_id: int, reserved: Any = ()) -> Any:
        self.asked.append("acquire")
        raise AssertionError("the single process's path asked for a lane")

    async def renew(self, installation_id: int, sent_times: Any) -> bool:
        self.asked.append("renew")
        raise AssertionError("renewed")

    async def release(self, installation_id: int, sent_times: Any, hold_until: float | None) -> None:
        self.asked.append("release")
        raise AssertionError("released")

    async def share_hold(self, installation_id: int, until: float) -> None:
        self.asked.append("share_hold")
        raise AssertionError("shared a hold")


@pytest.fixture
def github(fake_github: FakeGitHub) -> FakeGitHub:
    for iid, (owner, repo) in REPOS.items():
        fake_github.add_installation(iid, owner, repos=[repo])
    return fake_github


def config(fake: FakeGitHub, key: str, **overrides: Any) -> GitHubClientConfig:
    return GitHubClientConfig(app_id=APP_ID, private_key=key, api_url=fake.api_url, **overrides)


async def comment(clients: GitHubClients, iid: int, body: str) -> Any:
    owner, repo = REPOS[iid]
    return await clients.installation(iid).post(COMMENTS.format(owner=owner, repo=repo), data={"body": body})


async def test_a_single_process_never_asks_its_ownership_anything(github: FakeGitHub, app_private_key: str) -> None:
    ownership = RefusingOwnership()
    clock = Clock()
    async with aiohttp.ClientSession() as session:
        clients = GitHubClients(session, config(github, app_private_key, writes_per_minute=3), ownership=ownership,
                                sleep=clock.sleep, clock=clock)
        github.rate_limit_next("POST", "/repos/octo/one/issues/1/comments", retry_after=3)
        await asyncio.gather(*(comment(clients, 1, f"c{i}") for i in range(5)))  # a hold and the window
        await clients.close()
    assert ownership.asked == []
    assert clients.status().get("write_lanes_owned") is None
    assert len(github.comments) == 5


class MemoryOwnership(LocalOwnership):
    """A shared ownership without a database: `grant` decides (True: the lane is taken, an exception: the
    database is away)."""

    shared = True

    def __init__(self, lease_seconds: float, grant: Callable[[], bool]) -> None:
        self.lease_seconds = lease_seconds
        self.grant = grant

    async def acquire(self, installation_id: int, reserved: Any = ()) -> Any:
        return LaneClaim([], None) if self.grant() else None


def database_away() -> bool:
    raise ConnectionRefusedError("the database is away")


async def test_a_lane_that_cannot_be_taken_fails_the_writes_as_github_unavailable(
        github: FakeGitHub, app_private_key: str) -> None:
    async with aiohttp.ClientSession() as session:
        clients = GitHubClients(session, config(github, app_private_key),
                                ownership=MemoryOwnership(0.3, database_away))
        started = time.monotonic()
        results = await asyncio.wait_for(asyncio.gather(
            *(comment(clients, 1, f"{i}") for i in range(3)), return_exceptions=True), 5)
        await clients.close()
    assert [type(r) for r in results] == [GitHubUnavailable] * 3
    assert time.monotonic() - started >= 0.3  # tried for the lease's time
    assert github.calls_to("POST", "/repos/octo/one/issues/*/comments") == []


async def test_a_write_is_cut_off_before_its_lease_could_run_out(github: FakeGitHub, app_private_key: str) -> None:
    """A stalled write (the fake holds it 3 s) under a 1 s lease gives up at half the lease: whoever takes
    the lane after the lease never overlaps it."""
    github.write_delay = 3.0
    async with aiohttp.ClientSession() as session:
        clients = GitHubClients(session, config(github, app_private_key), ownership=MemoryOwnership(1.0, lambda: True))
        await clients.installation_token(1)
        started = time.monotonic()
        with pytest.raises(GitHubUnavailable, match="no answer"):
            await comment(clients, 1, "stalled")
        took = time.monotonic() - started
        await clients.close()
    assert 0.4 <= took < 0.875  # the write's timeout: half the lease, within the lease less its margin
    github.take_errors()


# --- two processes on one PostgreSQL database --------------------------------------------------


@pytest.fixture
async def lanes(postgres_cluster) -> AsyncIterator[WriteLaneStore]:  # type: ignore[no-untyped-def]
    db = Database(postgres_cluster.create_database())
    await migrate.upgrade(db)
    yield WriteLaneStore(db)
    await db.dispose()


@pytest.fixture
async def process(github: FakeGitHub, app_private_key: str, lanes: WriteLaneStore
                  ) -> AsyncIterator[Callable[..., GitHubClients]]:
    """`process(name, lease_seconds=..., **config)`: the GitHub client of one more "process"."""
    sessions: list[aiohttp.ClientSession] = []
    made: list[GitHubClients] = []

    def start(name: str, *, lease_seconds: float = 20.0, clock: Clock | None = None,
              on_hold: Callable[[str, float], None] | None = None,
              on_lane_wanted: Callable[[int], None] | None = None, **overrides: Any) -> GitHubClients:
        session = aiohttp.ClientSession()
        sessions.append(session)
        timing: dict[str, Any] = {} if clock is None else {"sleep": clock.sleep, "clock": clock}
        clients = GitHubClients(session, config(github, app_private_key, **overrides), on_hold=on_hold,
                                on_lane_wanted=on_lane_wanted,
                                ownership=SharedWriteOwnership(lanes, lease_seconds=lease_seconds, holder=name),
                                **timing)
        if clock is not None:  # the wall clock moves with the fake one (send times are stored as epoch)
            offset = time.time() - clock.now
            clients._wall_clock = lambda: clock.now + offset
        made.append(clients)
        return clients

    yield start
    for clients in made:
        await clients.close()
    for session in sessions:
        await session.close()


async def lane_holder(lanes: WriteLaneStore, iid: int) -> str | None:
    return await lanes._db.read(lambda conn: conn.execute(
        select(GitHubWriteLane.holder).where(GitHubWriteLane.installation_id == iid)).scalar_one_or_none())


@pytest.mark.postgres
async def test_two_processes_hammering_the_same_installations_never_overlap_a_write(
        github: FakeGitHub, process: Callable[..., GitHubClients]) -> None:
    github.write_delay = 0.01
    one, two = process("one"), process("two")
    bursts = [comment(clients, iid, f"{name} {iid} {i}")
              for clients, name in ((one, "one"), (two, "two")) for iid in REPOS for i in range(10)]
    await asyncio.wait_for(asyncio.gather(*bursts), 30)
    recorder = github.writes_in_flight
    assert [o.describe() for o in recorder.overlaps] == []
    assert recorder.max_in_flight == 1
    assert len(github.comments) == 40
    assert one._lanes_taken >= 2 and two._lanes_taken >= 2  # both sent for both installations


@pytest.mark.postgres
async def test_without_shared_lanes_the_same_load_overlaps(github: FakeGitHub, app_private_key: str) -> None:
    """The control: two processes that each pace only themselves do overlap (the recorder can see it)."""
    github.write_delay = 0.01
    async with aiohttp.ClientSession() as s1, aiohttp.ClientSession() as s2:
        one, two = GitHubClients(s1, config(github, app_private_key)), GitHubClients(s2, config(github, app_private_key))
        await asyncio.gather(*(comment(c, 1, f"{i}") for c in (one, two) for i in range(10)))
        await one.close()
        await two.close()
    assert github.writes_in_flight.max_in_flight == 2


@pytest.mark.postgres
async def test_the_minute_window_holds_across_processes(
        github: FakeGitHub, process: Callable[..., GitHubClients], monkeypatch: pytest.MonkeyPatch) -> None:
    """3 writes a minute (a fake clock both share): the second process's first write waits for the first's."""
    clock = Clock()
    arrivals: list[float] = []
    original = github._process

    async def record(request, call, bucket):  # type: ignore[no-untyped-def]
        if call.method == "POST" and call.path.endswith("/comments"):
            arrivals.append(clock.now)
        return await original(request, call, bucket)

    monkeypatch.setattr(github, "_process", record)
    one, two = process("one", clock=clock, writes_per_minute=3), process("two", clock=clock, writes_per_minute=3)
    one._lane_linger = two._lane_linger = 0.02
    await asyncio.gather(*(comment(one, 1, f"one {i}") for i in range(3)))
    assert arrivals == [1000.0] * 3
    await asyncio.wait_for(asyncio.gather(*(comment(two, 1, f"two {i}") for i in range(4))), 10)
    # Stored as epoch seconds to the millisecond, hence approx:
    assert arrivals[3:] == pytest.approx([1000.0 + 60 + WINDOW_MARGIN] * 3 + [1000.0 + 2 * (60 + WINDOW_MARGIN)],
                                         abs=0.01)
    assert max(sum(1 for t in arrivals if start <= t < start + 60) for start in arrivals) == 3


@pytest.mark.postgres
async def test_a_holder_that_dies_is_taken_over_once_its_lease_ran_out(
        github: FakeGitHub, process: Callable[..., GitHubClients], lanes: WriteLaneStore) -> None:
    ttl = 1.0
    dead, alive = process("dead", lease_seconds=ttl), process("alive", lease_seconds=ttl)
    await comment(dead, 1, "before dying")
    pacer = dead._pacers[1]
    assert pacer.keeper is not None
    pacer.keeper.cancel()  # dies: no renewal, no release
    await asyncio.gather(pacer.keeper, return_exceptions=True)
    expired_by = pacer.lease_until  # its own conservative view: the row expires no earlier
    await asyncio.wait_for(comment(alive, 1, "after"), ttl + 2)
    assert time.monotonic() >= expired_by
    assert [c["body"] for c in github.comments.values()] == ["before dying", "after"]
    assert await lane_holder(lanes, 1) == "alive"


@pytest.mark.postgres
async def test_a_hold_met_by_one_process_holds_the_others(
        github: FakeGitHub, process: Callable[..., GitHubClients], lanes: WriteLaneStore) -> None:
    told: list[tuple[str, float]] = []
    listening = process("listening", max_retry_wait=10.0)  # hears of it as the event bus would tell it

    def on_hold(scope: str, until: float) -> None:
        told.append((scope, until))
        listening.apply_hold(scope, until)

    met = process("met", max_retry_wait=10.0, on_hold=on_hold)
    github.rate_limit_next("POST", "/repos/octo/one/issues/1/comments", retry_after=30)
    with pytest.raises(GitHubRateLimited):
        await comment(met, 1, "limited")
    assert [scope for scope, _ in told] == ["1"]
    assert told[0][1] == pytest.approx(time.time() + 30, abs=2)
    # The event: the other process's reads of the installation wait too (refused: 30 s > max_retry_wait).
    with pytest.raises(GitHubRateLimited):
        await listening.installation(1).getitem("/repos/octo/one")
    # The lane: a process that heard nothing takes the lane and finds the hold there.
    deaf = process("deaf", max_retry_wait=10.0)  # takes the lane once "met" has left it (its linger)
    with pytest.raises(GitHubUnavailable, match="rate limit"):
        await asyncio.wait_for(comment(deaf, 1, "held"), 5)
    assert len(github.calls_to("POST", "/repos/octo/one/issues/*/comments")) == 1  # only the limited one
    assert len(github.calls_to("GET", "/repos/octo/one")) == 0



# --- the app's wiring --------------------------------------------------------------------------


@pytest.mark.postgres
async def test_the_app_on_postgresql_writes_under_a_lane_and_follows_holds_from_the_bus(
        start_bot, github: FakeGitHub, postgres_cluster) -> None:  # type: ignore[no-untyped-def]
    url = postgres_cluster.create_database()
    db = Database(url)
    await migrate.upgrade(db)
    await db.dispose()
    bot = await start_bot(DATABASE_URL=url, GITHUB_WRITE_LEASE_SECONDS="5")
    github_app = bot.services.github
    await github_app.installation_api(1).post("/repos/octo/one/issues/1/comments", data={"body": "hi"})
    assert github_app.status()["write_lanes_owned"] == [1]
    assert github_app.clients._ownership.lease_seconds == 5.0
    with bot.services.bus.subscribe() as events:  # another process met a hold: the bridge delivers its event
        bot.services.bus.deliver(AppEvent(HOLD_EVENT, {"scope": "2", "until": time.time() + 30}))
        await wait_for(events, HOLD_EVENT)
        await until(lambda: "2" in github_app.clients._holds, 5)
    assert [h["scope"] for h in github_app.status()["rate_limited"]] == ["2"]


async def test_the_app_on_sqlite_has_no_shared_lanes(start_bot, github: FakeGitHub) -> None:  # type: ignore[no-untyped-def]
    bot = await start_bot()
    github_app = bot.services.github
    await github_app.installation_api(1).post("/repos/octo/one/issues/1/comments", data={"body": "hi"})
    assert not github_app.clients._ownership.shared
    assert "write_lanes_owned" not in github_app.status()


# --- review fixes: in-flight writes, handing over, reservations, the database's clock --------------


class RecordingOwnership(MemoryOwnership):
    """Grants `claim` (a fresh one each time it is set) and records when the lane was released."""

    def __init__(self, lease_seconds: float, claim: LaneClaim | None = None) -> None:
        super().__init__(lease_seconds, lambda: True)
        self.claim = claim or LaneClaim([], None)
        self.released_at: list[float] = []
        self.renewals = 0
        self.renew_ok = True
        self.stored_hold: float | None = None  # the hold in the row, as a renewal reads it

    async def acquire(self, installation_id: int, reserved: Any = ()) -> Any:
        return self.claim

    async def renew(self, installation_id: int, sent_times: Any) -> LaneClaim | None:
        self.renewals += 1
        return LaneClaim([], self.stored_hold) if self.renew_ok else None

    async def release(self, installation_id: int, sent_times: Any, hold_until: float | None) -> None:
        self.released_at.append(time.monotonic())


async def test_a_cancelled_write_keeps_the_lane_until_its_timeout_could_have_run_out(
        github: FakeGitHub, app_private_key: str) -> None:
    """Cancelling the caller aborts only our side: GitHub may still process the write, so the lane is not
    released (another process could write meanwhile) before its start + its timeout + the margin."""
    ownership = RecordingOwnership(2.0)  # a write's timeout: 1 s, the margin 0.25 s
    async with aiohttp.ClientSession() as session:
        clients = GitHubClients(session, config(github, app_private_key), ownership=ownership)
        await comment(clients, 1, "takes the lane")  # so that the next write takes the fast path
        github.write_delay = 3.0
        started = time.monotonic()
        write = asyncio.create_task(comment(clients, 1, "cut off"))  # the fast path: the caller's task
        await until(lambda: bool(github.writes_in_flight.in_flight.get(1)), 5)
        write.cancel()
        await asyncio.gather(write, return_exceptions=True)
        await until(lambda: bool(ownership.released_at), 5)
        pacer = clients._pacers[1]
        assert pacer.in_flight_until == float("-inf") or pacer.in_flight_until <= time.monotonic()
        await clients.close()
    assert ownership.released_at[0] - started >= 1.0 + 0.25 - 0.05, ownership.released_at[0] - started


async def test_a_lane_taken_back_by_hand_counts_what_the_grant_says(github: FakeGitHub, app_private_key: str) -> None:
    """The keeper's renewals failed (the lease ran short) while another process took the lane, wrote and
    released it: taking it back, the pacer counts those writes and honours the hold left there."""
    ownership = RecordingOwnership(20.0)
    async with aiohttp.ClientSession() as session:
        clients = GitHubClients(session, config(github, app_private_key, writes_per_minute=5), ownership=ownership)
        await comment(clients, 1, "first")
        pacer = clients._pacers[1]
        assert pacer.owns_lane
        others = [round(time.time() - 1, 3)] * 3
        ownership.claim = LaneClaim(others, time.time() + 0.5)
        pacer.lease_until = float("-inf")  # the renewals failed: still "owned", no longer writable
        started = time.monotonic()
        await asyncio.wait_for(comment(clients, 1, "second"), 5)
        took = time.monotonic() - started
        assert len(pacer.sent) == 5  # the other's three, its own two
        assert not await _done_within(comment(clients, 1, "third"), 0.5)  # 5 a minute: full
        await clients.close()
    assert took >= 0.4  # the hold found in the grant


async def _done_within(aw: Any, seconds: float) -> bool:
    try:
        await asyncio.wait_for(aw, seconds)
    except TimeoutError:
        return False
    return True


@pytest.mark.postgres
async def test_forgetting_an_installation_keeps_a_pacer_that_owns_its_lane(
        github: FakeGitHub, process: Callable[..., GitHubClients], lanes: WriteLaneStore) -> None:
    one = process("one")
    await comment(one, 1, "hi")
    pacer = one._pacers[1]
    one.forget_installation(1)
    assert one._pacers.get(1) is pacer  # else a new pacer "takes" the lane by renewal and the old keeper frees it
    await comment(one, 1, "again")
    assert one._lanes_taken == 1


@pytest.mark.postgres
async def test_a_dead_owners_unstored_writes_are_covered_by_its_reservation(
        github: FakeGitHub, process: Callable[..., GitHubClients], lanes: WriteLaneStore) -> None:
    """14 writes, then killed before a renewal stored them: the next owner counts at least those 14 in its
    minute (here 20 a minute: at most 6 more), thanks to the slots reserved in the row."""
    ttl = 2.0
    dead = process("dead", lease_seconds=ttl, writes_per_minute=20)
    alive = process("alive", lease_seconds=ttl, writes_per_minute=20)
    renewals = 0
    renew = dead._ownership.renew

    async def counting_renew(installation_id: int, sent_times: Any) -> bool:
        nonlocal renewals
        renewals += 1
        return await renew(installation_id, sent_times)

    dead._ownership.renew = counting_renew  # type: ignore[method-assign]
    for i in range(14):
        await comment(dead, 1, f"dead {i}")
    pacer = dead._pacers[1]
    pacer.keeper.cancel()  # dies: no renewal, no release
    await asyncio.gather(pacer.keeper, return_exceptions=True)
    assert renewals >= 1  # the reservation spent after 10 writes: renewed at once
    stored = await lanes._db.read(lambda conn: conn.execute(
        select(GitHubWriteLane.sent_times).where(GitHubWriteLane.installation_id == 1)).scalar_one())
    assert len(stored) >= 14
    writes = [asyncio.create_task(comment(alive, 1, f"alive {i}")) for i in range(8)]
    await asyncio.wait(writes, timeout=ttl + 3)
    assert sum(w.done() for w in writes) <= 20 - 14
    for w in writes:
        w.cancel()
    await asyncio.gather(*writes, return_exceptions=True)


@pytest.mark.postgres
async def test_an_owner_with_a_never_ending_backlog_hands_the_lane_over(
        github: FakeGitHub, process: Callable[..., GitHubClients]) -> None:
    github.write_delay = 0.02
    peers: dict[str, GitHubClients] = {}
    fast = {"writes_per_minute": 100_000, "writes_per_hour": 1_000_000}
    busy = process("busy", on_lane_wanted=lambda iid: peers["waiting"].lane_wanted(iid), **fast)
    waiting = process("waiting", on_lane_wanted=lambda iid: busy.lane_wanted(iid), **fast)
    peers["waiting"] = waiting
    backlog = [asyncio.create_task(comment(busy, 1, f"busy {i}")) for i in range(1000)]  # ~20 s of writes
    await until(lambda: busy.owned_lanes() == [1], 5)
    started = time.monotonic()
    await asyncio.wait_for(comment(waiting, 1, "my turn"), LANE_FAIR_SHARE + 3)
    waited = time.monotonic() - started
    done_then = sum(w.done() for w in backlog)
    await until(lambda: sum(w.done() for w in backlog) > done_then + 5, 5)  # busy goes on
    assert busy._lane_handovers >= 1
    assert waited < LANE_FAIR_SHARE + 3
    assert [o.describe() for o in github.writes_in_flight.overlaps] == []
    for w in backlog:
        w.cancel()
    await asyncio.gather(*backlog, return_exceptions=True)


@pytest.mark.postgres
async def test_lease_times_are_the_databases_clock_not_the_hosts(
        lanes: WriteLaneStore, monkeypatch: pytest.MonkeyPatch) -> None:
    assert await lanes.acquire(1, "one", ttl=20.0) is not None
    an_hour_ahead = lambda: datetime.now(UTC) + timedelta(hours=1)  # noqa: E731
    monkeypatch.setattr(store_module, "utcnow", an_hour_ahead)  # a host whose clock runs an hour ahead
    assert await lanes.acquire(1, "two", ttl=20.0) is None  # "one"'s lease has not run out
    assert await lanes.renew(1, "one", ttl=20.0, sent_times=[])
    expires_at, db_now = await lanes._db.read(lambda conn: conn.execute(
        select(GitHubWriteLane.expires_at, func.clock_timestamp()).where(GitHubWriteLane.installation_id == 1)).one())
    assert timedelta(seconds=19) <= expires_at - db_now <= timedelta(seconds=20)


@pytest.mark.postgres
async def test_a_refused_take_runs_alone_not_in_a_group_commit_batch(
        lanes: WriteLaneStore, postgres_cluster) -> None:  # type: ignore[no-untyped-def]
    """A waiter's refused upsert locks the row until its transaction ends: inside a batch with a slow unit
    it would keep the owner's renewal waiting for the whole batch."""
    db = lanes._db
    assert await lanes.acquire(1, "owner", ttl=20.0) is not None
    slow = asyncio.create_task(db.write(lambda conn: conn.execute(text("select pg_sleep(1.5)"))))
    refused = asyncio.create_task(lanes.acquire(1, "waiter", ttl=20.0))  # the same turn: the same batch, if batched
    started = time.monotonic()
    assert await refused is None
    other_process = WriteLaneStore(Database(db.url))
    try:
        assert await other_process.renew(1, "owner", ttl=20.0, sent_times=[])
        renewed_after = time.monotonic() - started
    finally:
        await other_process._db.dispose()
    await slow
    assert renewed_after < 1.0


@pytest.mark.postgres
async def test_many_installations_writing_at_once_never_run_out_of_database_connections(
        github: FakeGitHub, process: Callable[..., GitHubClients]) -> None:
    """Each installation's lane statements (take, renew, release) share one connection, one after the other:
    with more installations writing at once than the pool has connections, none waits for one (the pool's
    30 s timeout, met by the first bench of 200 installations)."""
    many = {5000 + i: (f"org{i}", f"repo{i}") for i in range(PG_POOL_SIZE + PG_POOL_OVERFLOW + 30)}
    for iid, (owner, repo) in many.items():
        github.add_installation(iid, owner, repos=[repo])
    clients = process("one")

    async def write(iid: int) -> Any:
        owner, repo = many[iid]
        return await clients.installation(iid).post(COMMENTS.format(owner=owner, repo=repo), data={"body": "hi"})

    await asyncio.wait_for(asyncio.gather(*(write(iid) for iid in many for _ in range(2))), 20)
    assert len(github.comments) == 2 * len(many)
    assert [o.describe() for o in github.writes_in_flight.overlaps] == []


@pytest.mark.postgres
async def test_an_idle_lane_is_kept_until_another_process_asks_for_it(
        github: FakeGitHub, lanes: WriteLaneStore, process: Callable[..., GitHubClients]) -> None:
    """A process that hears of waiters keeps its idle lane (its next burst costs no statement) and gives it
    up as soon as one asks, not a renewal interval later."""
    peers: dict[str, GitHubClients] = {}
    one = process("one", on_lane_wanted=lambda iid: peers["two"].lane_wanted(iid))
    two = process("two", on_lane_wanted=lambda iid: one.lane_wanted(iid))
    peers["two"] = two
    await comment(one, 1, "first")
    await asyncio.sleep(LANE_LINGER * 3)  # idle three times the linger of a lane someone waits for
    assert one.owned_lanes() == [1] and await lane_holder(lanes, 1) == "one"
    await comment(one, 1, "second burst")  # no take: still its own
    assert one._lanes_taken == 1

    await asyncio.wait_for(comment(two, 1, "my turn"), 3)  # kept idle, it would be freed 5 s after "second burst"
    assert await lane_holder(lanes, 1) == "two" and one.owned_lanes() == []
    assert [o.describe() for o in github.writes_in_flight.overlaps] == []


async def test_a_hold_another_process_stored_reaches_the_owner_at_its_next_renewal(
        github: FakeGitHub, app_private_key: str) -> None:
    """A hold met elsewhere while this process's bus listener was down (its event lost) still reaches the
    owner of the lane: each renewal reads the hold stored in the row."""
    ownership = RecordingOwnership(2.0)  # renewed every 0.5 s
    async with aiohttp.ClientSession() as session:
        clients = GitHubClients(session, config(github, app_private_key), ownership=ownership)
        clients._lane_linger = 30.0  # an idle lane is kept: its renewals go on
        try:
            await comment(clients, 1, "takes the lane")
            ownership.stored_hold = time.time() + 600  # recorded by another process meanwhile
            await until(lambda: "1" in {h["scope"] for h in clients.status()["rate_limited"]}, 5)
            with pytest.raises(GitHubRateLimited):
                await comment(clients, 1, "held, as the other process was")
        finally:
            await clients.close()
