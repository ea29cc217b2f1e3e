"""Leases for run-once work and the app's named state (bot/store/leases.py), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from bot.store import Store


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
