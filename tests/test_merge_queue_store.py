"""The merge queues' documents and landings (bot/store/merge_queue.py), on SQLite and PostgreSQL: a queue
changes only by compare-and-swap, and a landing is claimed once."""

from __future__ import annotations

import asyncio

from bot.store import Store
from tests.check_run_support import project_id  # noqa: F401 (fixture)


async def test_a_queue_is_replaced_only_from_the_version_read(store: Store, project_id: str) -> None:
    assert await store.merge_queues.load(project_id, "main") is None
    assert await store.merge_queues.save(project_id, "main", {"entries": [1]}, version=0, active=True)
    assert not await store.merge_queues.save(project_id, "main", {"entries": [2]}, version=0, active=True)
    stored = await store.merge_queues.load(project_id, "main")
    assert stored is not None and (stored.state, stored.version) == ({"entries": [1]}, 1)
    assert await store.merge_queues.save(project_id, "main", {"entries": []}, version=1, active=False)
    assert not await store.merge_queues.save(project_id, "main", {"entries": [3]}, version=1, active=True)
    stored = await store.merge_queues.load(project_id, "main")
    assert stored is not None and (stored.state, stored.version) == ({"entries": []}, 2)


async def test_racing_saves_of_one_version_give_one_winner(store: Store, project_id: str) -> None:
    assert await store.merge_queues.save(project_id, "main", {"n": 0}, version=0, active=True)
    won = await asyncio.gather(*(store.merge_queues.save(project_id, "main", {"n": i}, version=1, active=True)
                                 for i in range(6)))
    assert sum(won) == 1


async def test_only_active_queues_are_resumed_and_a_project_lists_its_branches(store: Store, project_id: str) -> None:
    await store.merge_queues.save(project_id, "main", {}, version=0, active=True)
    await store.merge_queues.save(project_id, "release", {}, version=0, active=False)
    assert await store.merge_queues.active() == [(project_id, "main")]
    assert [q.base_ref for q in await store.merge_queues.of_project(project_id)] == ["main", "release"]


async def test_a_landing_is_claimed_once_and_remembers_its_merge(store: Store, project_id: str) -> None:
    assert await store.merge_queues.claim_landing(project_id, "main:7", 12)
    assert not await store.merge_queues.claim_landing(project_id, "main:7", 12)  # tried again after a kill
    assert await store.merge_queues.claim_landing(project_id, "main:7", 13)  # the batch's next PR
    found = await store.merge_queues.landing(project_id, "main:7", 12)
    assert found is not None and found.merged_sha is None
    await store.merge_queues.landed(project_id, "main:7", 12, "a" * 40)
    found = await store.merge_queues.landing(project_id, "main:7", 12)
    assert found is not None and found.merged_sha == "a" * 40
    assert await store.merge_queues.landing(project_id, "main:8", 12) is None


async def test_a_landing_of_a_long_branch_name_is_claimed_once(store: Store, project_id: str) -> None:
    # the key holds the branch name: PostgreSQL refuses a value longer than the 64-character column
    branch = "feature/" + "x" * 72
    key = f"{branch}:3"
    assert await store.merge_queues.claim_landing(project_id, key, 12)
    assert not await store.merge_queues.claim_landing(project_id, key, 12)
    assert await store.merge_queues.claim_landing(project_id, f"{branch}y:3", 12)  # a longer name: its own key
    await store.merge_queues.landed(project_id, key, 12, "a" * 40)
    found = await store.merge_queues.landing(project_id, key, 12)
    assert found is not None and found.merged_sha == "a" * 40
