"""Validations of merge queue groups beside those of PR heads, on SQLite and PostgreSQL: a group's head
is begun once however often it is asked for, and neither kind ends or shows up as the other."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from bot.models import PR_OPEN, SUBJECT_MERGE_GROUP, SUBJECT_PULL_REQUEST, ValidationState, utcnow
from bot.store import Store
from bot.store.tracked_pulls import PullSnapshot
from bot.store.validations import Begun
from tests.check_run_support import begin_validation, other_store, project_id  # noqa: F401 (fixtures)

GROUP_A, GROUP_B = "1" * 40, "2" * 40


async def begin_group(store: Store, project_id: str, claimer: str, head_sha: str = GROUP_A) -> Begun:
    """`begin_subject` as a merge_group.checks_requested delivery (`claimer`) for PR 1's group."""
    return await store.validations.begin_subject(
        project_id=project_id, subject=SUBJECT_MERGE_GROUP, subject_ref=f"refs/heads/gh-readonly-queue/main/pr-1-{head_sha}",
        pr_number=1, head_sha=head_sha, base_sha="b" * 40, trigger="merge_group.checks_requested", claimer=claimer)


async def test_a_groups_head_is_begun_once_and_claimed_by_one_delivery(store: Store, project_id: str) -> None:
    first = await begin_group(store, project_id, "d1")
    assert (first.claimed, first.recorded, first.ended) == (True, True, [])
    assert (first.validation.subject, first.validation.pr_number) == (SUBJECT_MERGE_GROUP, 1)
    again = await begin_group(store, project_id, "d2")  # redelivered, as another delivery
    assert (again.validation.id, again.claimed, again.recorded) == (first.validation.id, False, False)
    retried = await begin_group(store, project_id, "d1")  # the first delivery's job run again
    assert (retried.validation.id, retried.claimed) == (first.validation.id, True)
    await store.validations.set_check_run(first.validation.id, 7)
    assert await store.validations.start(first.validation.id)
    assert await store.validations.complete(first.validation.id, conclusion="success", title="ok", results={})
    finished = await begin_group(store, project_id, "d3")  # after it finished: still nothing new
    assert (finished.validation.id, finished.validation.status, finished.claimed) == (
        first.validation.id, "completed", False)
    found = await store.validations.latest_of_subject(project_id, SUBJECT_MERGE_GROUP, GROUP_A)
    assert found is not None and found.id == first.validation.id
    assert await store.validations.latest_of_subject(project_id, SUBJECT_MERGE_GROUP, GROUP_B) is None


async def test_groups_and_pr_heads_end_none_of_each_other(store: Store, project_id: str) -> None:
    pr_head = await begin_validation(store, project_id, "p1", head_sha="a" * 40)
    group_a = await begin_group(store, project_id, "g1", GROUP_A)
    group_b = await begin_group(store, project_id, "g2", GROUP_B)  # GitHub tests several groups at once
    assert group_a.ended == group_b.ended == []
    new_head = await begin_validation(store, project_id, "p2", head_sha="c" * 40)  # a push to PR 1
    assert [v.id for v in new_head.ended] == [pr_head.validation.id]
    closed = await store.validations.supersede(project_id, 1, new_head_sha="closed")
    assert [v.id for v in closed] == [new_head.validation.id]
    for group in (group_a, group_b):
        assert (await store.validations.get(group.validation.id)).status == "queued"


async def test_what_is_about_a_pr_reads_its_own_heads_only(store: Store, project_id: str) -> None:
    own = await begin_validation(store, project_id, "p1", head_sha="a" * 40)
    group = await begin_group(store, project_id, "g1")
    assert (await store.validations.latest_for_pr(project_id, 1)).id == own.validation.id
    assert [v.id for v in await store.validations.for_pr(project_id, 1)] == [own.validation.id]
    assert await store.validations.latest_for_head(project_id, GROUP_A) is None
    assert await store.validations.validated_heads(project_id, [GROUP_A, "a" * 40]) == {(1, "a" * 40)}
    assert {v.id for v in await store.validations.for_project(project_id)} == {own.validation.id,
                                                                                group.validation.id}
    assert own.validation.subject == SUBJECT_PULL_REQUEST


async def test_two_processes_beginning_the_same_group_at_once_record_one_validation(
        store: Store, other_store: Store, project_id: str) -> None:
    begun = await asyncio.gather(*(begin_group(s, project_id, claimer)
                                   for s, claimer in [(store, "d1"), (other_store, "d2"), (store, "d3"),
                                                      (other_store, "d4")]))
    assert len({b.validation.id for b in begun}) == 1
    assert sum(b.claimed for b in begun) == 1


async def test_a_group_destroyed_before_its_checks_requested_is_recorded_ended(store: Store, project_id: str) -> None:
    ended, recorded = await end_group(store, project_id, GROUP_A)
    assert recorded and (ended.status, ended.conclusion, ended.title, ended.check_run_settled) == (
        "completed", "cancelled", "Cancelled: gone", True)
    late = await begin_group(store, project_id, "d1", GROUP_A)  # the late checks_requested begins nothing
    assert (late.validation.id, late.claimed) == (ended.id, False)
    again, recorded = await end_group(store, project_id, GROUP_A)  # destroyed delivered twice
    assert (again.id, recorded) == (ended.id, False)
    running = await begin_group(store, project_id, "d2", GROUP_B)
    joined, recorded = await end_group(store, project_id, GROUP_B)  # begun first: the caller cancels it
    assert (joined.id, joined.status, recorded) == (running.validation.id, "queued", False)


async def test_the_pr_overview_shows_the_prs_own_validation_not_a_groups_of_the_same_commit(
        store: Store, project_id: str) -> None:
    now = utcnow()
    await store.tracked_pulls.record(project_id, PullSnapshot(
        number=1, title="Change", author="dev", head_sha=GROUP_A, head_ref="feature", base_ref="main", is_fork=False,
        draft=False, state=PR_OPEN, opened_at=now, updated_at=now, closed_at=None))
    own = await begin_validation(store, project_id, "p1", head_sha=GROUP_A)
    await begin_group(store, project_id, "g1", GROUP_A)  # newer, on the same commit
    [row] = await store.tracked_pulls.overview(project_id, closed_since=now - timedelta(days=1))
    assert row.validation is not None and row.validation.id == own.validation.id


async def end_group(store: Store, project_id: str, head_sha: str) -> tuple[ValidationState, bool]:
    return await store.validations.end_unbegun_subject(
        project_id=project_id, subject=SUBJECT_MERGE_GROUP,
        subject_ref=f"refs/heads/gh-readonly-queue/main/pr-1-{head_sha}", pr_number=1, head_sha=head_sha, base_sha="b" * 40, trigger="merge_group.destroyed", title="Cancelled: gone")
