"""Leases for run-once work and the app's named state (bot/store/leases.py), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import update

from bot.models import Lease, utcnow
from bot.store import Store
from bot.store.leases import LeaseLost, held


async def test_one_holder_at_a_time_until_it_expires_or_is_released(store: Store) -> None:
    minute = timedelta(minutes=1)
    assert await store.leases.acquire("sweep", "a", ttl=minute)
    assert not await store.leases.acquire("sweep", "b", ttl=minute)
    assert await store.leases.acquire("sweep", "a", ttl=minute)  # the holder renews
    assert await store.leases.holder("sweep") == "a"
    await store.leases.release("sweep", "b")  # not b's to release
    assert await store.leases.holder("sweep") == "a"
    await store.leases.release("sweep", "a")
    assert await store.leases.acquire("sweep", "b", ttl=timedelta(seconds=-1))  # already expired
    assert await store.leases.holder("sweep") is None
    assert await store.leases.acquire("sweep", "c", ttl=minute)  # an expired holder is taken over
    assert await store.leases.acquire("resync", "b", ttl=minute)  # another lease is another row


async def test_racing_claims_give_one_holder(store: Store) -> None:
    won = await asyncio.gather(*(store.leases.acquire("prune", f"w{i}", ttl=timedelta(minutes=1))
                                 for i in range(8)))
    assert sum(won) == 1


async def test_app_state_keeps_a_value_and_replaces_it(store: Store) -> None:
    assert await store.app_state.get("sweep") is None
    await store.app_state.put("sweep", {"newest_log_id": 7, "guid": "a"})
    await store.app_state.put("sweep", {"newest_log_id": 9})
    assert await store.app_state.get("sweep") == {"newest_log_id": 9}


async def test_a_held_lease_is_renewed_while_its_body_waits_longer_than_its_time(store: Store) -> None:
    """One GitHub call can outlast the lease's time (retries, a rate limit's wait): `held` renews it from a
    task of its own, so another holder cannot take it meanwhile; it is released on exit."""
    ttl = timedelta(seconds=0.3)
    async with held(store.leases, "sweep", "a", ttl=ttl) as mine:
        assert mine
        async with held(store.leases, "sweep", "b", ttl=ttl) as theirs:
            assert not theirs
        await asyncio.sleep(1.2)  # the body's one long call: four times the lease's time
        assert not await store.leases.acquire("sweep", "b", ttl=ttl)
        assert await store.leases.holder("sweep") == "a"
    assert await store.leases.holder("sweep") is None


async def test_a_lease_taken_over_while_held_cancels_its_body(store: Store) -> None:
    ttl = timedelta(seconds=0.3)
    cancelled = asyncio.Event()

    async def work() -> None:
        async with held(store.leases, "sweep", "a", ttl=ttl):
            await store.db.write(lambda conn: conn.execute(  # another process took it over (say, after a pause)
                update(Lease).where(Lease.name == "sweep").values(holder="thief",
                                                                  expires_at=utcnow() + timedelta(minutes=5))))
            try:
                await asyncio.sleep(30)  # the body's long call, which must not run on without the lease
            except asyncio.CancelledError:
                cancelled.set()
                raise

    with pytest.raises(LeaseLost, match="thief"):
        await asyncio.wait_for(work(), 10)
    assert cancelled.is_set()
    assert await store.leases.holder("sweep") == "thief"  # not released: it is not "a"'s any more
