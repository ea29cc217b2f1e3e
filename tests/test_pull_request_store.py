"""Per-PR settings, merge claims and the merge lock, on SQLite and PostgreSQL."""

import asyncio
from datetime import timedelta

from bot.store import InstallationRef, RepoRef, Store
from bot.store import pull_requests as module


async def project_id(store: Store) -> str:
    await store.projects.upsert_installation(InstallationRef(id=1, account_login="acme"))
    await store.projects.upsert_projects(1, [RepoRef(id=10, full_name="acme/widgets")])
    project = await store.projects.get_project_by_repo_id(10)
    assert project is not None
    return project.id


async def test_auto_merge_switch_per_pr(store: Store) -> None:
    pid = await project_id(store)
    prs = store.pull_requests
    assert await prs.auto_merge(pid, 1) is None
    await prs.set_auto_merge(pid, 1, True, set_by="alice")
    await prs.set_auto_merge(pid, 2, False, set_by="bob")
    assert (await prs.auto_merge(pid, 1), await prs.auto_merge(pid, 2)) == (True, False)
    await prs.set_auto_merge(pid, 1, False, set_by="carol")
    assert await prs.auto_merge(pid, 1) is False


async def claim(store: Store, pid: str, head: str = "a" * 40, by: str = "alice"):
    return await store.pull_requests.claim_merge(project_id=pid, pr_number=1, head_sha=head, base_ref="main",
                                                 method="merge", trigger="test", requested_by=by)


async def test_a_head_is_claimed_for_merging_once(store: Store) -> None:
    pid = await project_id(store)
    results = await asyncio.gather(*(claim(store, pid, by=f"user{n}") for n in range(5)))
    assert sum(r.claimed for r in results) == 1
    winner = next(r for r in results if r.claimed)
    assert all(r.merge.id == winner.merge.id for r in results)
    await store.pull_requests.finish_merge(winner.merge.id, merged=True, merge_commit_sha="m" * 40)
    again = await claim(store, pid)
    assert not again.claimed and again.merge.status == "merged" and again.merge.merge_commit_sha == "m" * 40
    assert (await claim(store, pid, head="b" * 40)).claimed  # another head is another merge


async def test_a_failed_merge_may_be_tried_again(store: Store) -> None:
    pid = await project_id(store)
    first = await claim(store, pid)
    await store.pull_requests.finish_merge(first.merge.id, merged=False, error="405: blocked")
    second = await claim(store, pid, by="bob")
    assert second.claimed and second.merge.id == first.merge.id
    assert (second.merge.status, second.merge.requested_by, second.merge.error) == ("merging", "bob", None)
    assert not (await claim(store, pid)).claimed
    [row] = await store.pull_requests.merges(pid, 1)
    assert row.status == "merging"


async def test_an_abandoned_claim_is_taken_over(store: Store, monkeypatch) -> None:
    pid = await project_id(store)
    await claim(store, pid)
    monkeypatch.setattr(module, "STALE_MERGE_CLAIM", timedelta(seconds=-1))
    assert (await claim(store, pid, by="bob")).claimed


async def test_the_merge_lock_has_one_holder_until_released_or_expired(store: Store) -> None:
    pid = await project_id(store)
    prs = store.pull_requests
    minute = timedelta(minutes=1)
    taken = await asyncio.gather(*(prs.acquire_merge_lock(pid, "main", f"h{n}", ttl=minute) for n in range(5)))
    assert sum(taken) == 1
    holder = f"h{taken.index(True)}"
    assert await prs.acquire_merge_lock(pid, "release/1.x", "other", ttl=minute)  # another branch
    await prs.release_merge_lock(pid, "main", "someone-else")  # only the holder releases
    assert not await prs.acquire_merge_lock(pid, "main", "late", ttl=minute)
    await prs.release_merge_lock(pid, "main", holder)
    assert await prs.acquire_merge_lock(pid, "main", "next", ttl=timedelta(seconds=-1))  # expires at once
    assert await prs.acquire_merge_lock(pid, "main", "after-expiry", ttl=minute)
