"""The merge queue's pure deciding (pipeline/merge_queue): no I/O, events in, actions out.

Trees are modelled as in bench/merge_queue.py: the set of changes merged on an empty base, so a
candidate's trees follow from what it merges; the randomized test runs that bench's simulation."""

from __future__ import annotations

import dataclasses
import random

import pytest

from bench.merge_queue import Simulation, Workload, items_of, simulate, tree_of
from pipeline.merge_queue.decide import (ANNOUNCE_TRIES, LAND_DEFER_SECONDS, acknowledgement, advance,
                                         announcement_failed, answer_is_final, apply, decide, outbox_last, positions,
                                         resume, split_points, unacknowledged)
from pipeline.merge_queue.model import (
    CANCELLING, EJECTED, LANDING, PASSED, REMOVED, TESTING, Action, AnnounceFailed, BaseChanged, BaseMoved, Build,
    Cancel, CancelDone, Candidate, CandidateBuilt, CandidateConflicted, CandidateFailed, CandidatePassed,
    CouldNotTest, Dequeued, Eject, EjectDone, Enqueued, Event, HeadPushed, Land, LandDeferred, Landed, LandRefused,
    NoteFlaky, PullClosed, Queue, QueueConfig, Remove, RemoveDone, RetryStep, ReuseVerdict, StepRetriedPassed,
    Validate,
)

NOW = 1_000.0
SERIAL_BATCHES = QueueConfig(batch_size=1, max_parallel=3)
EMPTY = tree_of(frozenset())


def queue_of(*prs: int, validated: dict[int, str] | None = None) -> Queue:
    queue = Queue("octo/repo", "main", "base0", EMPTY)
    for pr in prs:
        queue = apply(queue, Enqueued(pr, f"head{pr}", "alice", NOW + pr, (validated or {}).get(pr)))
    return queue


def step(queue: Queue, event: Event | None, config: QueueConfig = SERIAL_BATCHES) -> tuple[Queue, list[Action]]:
    return advance(apply(queue, event) if event else queue, config, NOW)


def of(kind: type, actions: list[Action]) -> list:
    return [a for a in actions if isinstance(a, kind)]


def built(c: Candidate) -> CandidateBuilt:
    expected, tree = Simulation.contents(c)
    return CandidateBuilt(c.id, f"built{c.id}", tree_of(tree), tree_of(expected))


def build_and_test_all(queue: Queue, actions: list[Action], config: QueueConfig = SERIAL_BATCHES
                       ) -> tuple[Queue, list[Action]]:
    """Answer every `Build` with its trees; the `Validate`s (or reuses) it leads to are returned."""
    later: list[Action] = []
    for build in of(Build, actions):
        queue, more = step(queue, built(build.candidate), config)
        later += more
    return queue, later


def land(queue: Queue, action: Land, config: QueueConfig = SERIAL_BATCHES) -> tuple[Queue, list[Action]]:
    """Merge each PR as GitHub would: the base gets the tested tree, PR by PR."""
    items, done = items_of(queue.base_tree), []
    for n, pr in enumerate(action.prs):
        items |= {f"p{pr}"}
        queue, more = step(queue, Landed(action.candidate.id, (pr,), f"merge{action.candidate.id}.{n}",
                                         tree_of(items)), config)
        done += more
    return queue, done


def drive(queue: Queue, config: QueueConfig, fails: set[frozenset[str]] | set[str], *,
          first: list[Action] | None = None, limit: int = 500) -> tuple[Queue, list[Action]]:
    """Perform everything the decider asks until it is quiet: a candidate fails (every time) when its
    tree has a PR named in `fails`, or all of a set in `fails`. Returns every action, in order."""
    def failing(c: Candidate) -> bool:
        tree = Simulation.contents(c)[1]
        return any((f in tree) if isinstance(f, str) else f <= tree for f in fails)

    pending, log = list(first if first is not None else advance(queue, config, NOW)[1]), []
    if first is None:
        queue = advance(queue, config, NOW)[0]
    for _ in range(limit):
        if not pending:
            return queue, log
        action = pending.pop(0)
        log.append(action)
        if isinstance(action, Build):
            queue, more = step(queue, built(action.candidate), config)
        elif isinstance(action, (Validate, RetryStep)):
            c = action.candidate
            queue, more = step(queue, CandidateFailed(c.id, "pytest", "E assert") if failing(c)
                               else CandidatePassed(c.id), config)
        elif isinstance(action, Land):
            queue, more = land(queue, action, config)
        elif (done := acknowledgement(action)) is not None:
            queue, more = step(queue, done, config)
        else:
            more = []
        pending += more
    raise AssertionError("the queue did not settle")


# ---- speculative chain, parallel limit ----------------------------------------------------------------

def test_each_candidate_is_the_tip_merged_with_the_prs_ahead_then_its_own() -> None:
    queue, actions = step(queue_of(1, 2, 3), None)
    assert [(b.candidate.ahead, b.candidate.prs) for b in of(Build, actions)] == [
        ((), (1,)), ((1,), (2,)), ((1, 2), (3,))]
    assert {b.candidate.base_sha for b in of(Build, actions)} == {"base0"}
    assert [b.candidate.heads for b in of(Build, actions)][2] == ("head1", "head2", "head3")
    assert decide(queue, SERIAL_BATCHES, NOW) == []  # recorded: nothing left to decide


def test_no_more_than_max_parallel_candidates_run_at_once_and_a_passed_one_frees_its_slot() -> None:
    config = QueueConfig(max_parallel=2)
    queue, actions = step(queue_of(1, 2, 3, 4), None, config)
    assert [b.candidate.prs for b in of(Build, actions)] == [(1,), (2,)]
    queue, tests = build_and_test_all(queue, actions, config)
    assert not of(Build, tests)
    first, second = (t.candidate.id for t in of(Validate, tests))
    queue, actions = step(queue, CandidatePassed(first), config)
    assert [a.prs for a in of(Land, actions)] == [(1,)]
    assert [(b.candidate.ahead, b.candidate.prs) for b in of(Build, actions)] == [((1, 2), (3,))]
    queue, actions = land(queue, of(Land, actions)[0], config)
    assert actions == []  # #2 and #3 hold both slots
    queue, actions = step(queue, CandidatePassed(second), config)
    assert [(b.candidate.ahead, b.candidate.prs) for b in of(Build, actions)] == [((2, 3), (4,))]


def test_batches_take_batch_size_prs_each_on_top_of_the_batches_ahead() -> None:
    queue, actions = step(queue_of(*range(1, 11)), None, QueueConfig(batch_size=4))
    assert [(b.candidate.ahead, b.candidate.prs) for b in of(Build, actions)] == [
        ((), (1, 2, 3, 4)), ((1, 2, 3, 4), (5, 6, 7, 8)), ((1, 2, 3, 4, 5, 6, 7, 8), (9, 10))]


# ---- landing ------------------------------------------------------------------------------------------

def test_landing_is_in_queue_order_even_when_a_later_candidate_passes_first() -> None:
    queue, actions = build_and_test_all(*step(queue_of(1, 2), None))
    first, second = (t.candidate.id for t in of(Validate, actions))
    queue, actions = step(queue, CandidatePassed(second))
    assert not of(Land, actions)
    queue, actions = step(queue, CandidatePassed(first))
    assert [(a.candidate.id, a.prs, a.heads) for a in of(Land, actions)] == [(first, (1,), ("head1",))]
    assert of(Land, actions)[0].expected_tree == EMPTY
    queue, actions = land(queue, of(Land, actions)[0])
    assert [(a.candidate.id, a.prs) for a in of(Land, actions)] == [(second, (2,))]
    assert of(Land, actions)[0].expected_tree == tree_of(frozenset({"p1"}))


def test_nothing_lands_that_is_not_tested_or_that_failed() -> None:
    queue, actions = step(queue_of(1, 2), None)
    builds = of(Build, actions)
    queue, actions = step(queue, built(builds[0].candidate))
    assert of(Validate, actions) and not of(Land, actions)  # built is not tested
    queue, actions = step(queue, CandidateFailed(builds[0].candidate.id, "pytest"), QueueConfig(flaky_retries=0))
    assert not of(Land, actions)


def test_the_base_tree_not_the_sha_decides_whether_a_candidate_may_land() -> None:
    queue, actions = build_and_test_all(*step(queue_of(1), None))
    queue, actions = step(queue, BaseMoved("someone-elses-empty-commit", EMPTY))  # same tree
    assert not of(Cancel, actions)
    queue, actions = step(queue, CandidatePassed(queue.candidates[0].id))
    assert [a.base_sha for a in of(Land, actions)] == ["someone-elses-empty-commit"]


def test_a_landing_that_left_another_tree_than_the_tested_one_retests_what_was_built_on_it() -> None:
    queue, actions = build_and_test_all(*step(queue_of(1, 2), None))
    first, second = (t.candidate.id for t in of(Validate, actions))
    queue, _ = step(queue, CandidatePassed(second))
    queue, actions = step(queue, CandidatePassed(first))
    queue, actions = step(queue, Landed(first, (1,), "merge1", tree_of(frozenset({"p1", "surprise"}))))
    assert [c.candidate_id for c in of(Cancel, actions)] == [second]
    assert [(b.candidate.ahead, b.candidate.prs, b.candidate.base_sha, b.candidate.attempt)
            for b in of(Build, actions)] == [((), (2,), "merge1", 2)]


def test_landing_is_decided_once_per_candidate_and_resumed_after_a_restart() -> None:
    pairs = QueueConfig(batch_size=2)
    queue, actions = build_and_test_all(*step(queue_of(1, 2), None, pairs), pairs)
    queue, actions = step(queue, CandidatePassed(of(Validate, actions)[0].candidate.id), pairs)
    [landing] = of(Land, actions)
    assert landing.prs == (1, 2) and landing.method == "merge"
    assert decide(queue, pairs, NOW) == []
    queue, _ = step(queue, Landed(landing.candidate.id, (1,), "m1", tree_of(frozenset({"p1"}))))
    queue, again = step(queue, Landed(landing.candidate.id, (1,), "m1", tree_of(frozenset({"p1"}))))  # delivered twice
    assert again == [] and [c.status for c in queue.candidates] == [LANDING]
    [resumed] = resume(queue, QueueConfig(batch_size=2, method="squash"))
    assert isinstance(resumed, Land) and resumed.candidate.id == landing.candidate.id
    # the method it was decided with, though the settings changed since: #1 was merged, #2 must be too
    assert resumed.prs == (2,) and resumed.heads == ("head2",) and resumed.method == "merge"
    queue, actions = step(queue, Landed(landing.candidate.id, (2,), "m2", tree_of(frozenset({"p1", "p2"}))))
    assert actions == [] and queue.entries == () and queue.candidates == ()


def test_the_push_event_of_our_own_landing_arriving_late_changes_nothing() -> None:
    queue, actions = build_and_test_all(*step(queue_of(1, 2), None))
    first, second = (t.candidate.id for t in of(Validate, actions))
    queue, _ = step(queue, CandidatePassed(first))
    queue, _ = step(queue, Landed(first, (1,), "m1", tree_of(frozenset({"p1"}))))
    queue, actions = step(queue, BaseMoved("m1", tree_of(frozenset({"p1"}))))
    assert actions == [] and queue.candidate(second).status == TESTING


def test_a_refused_landing_retests_or_removes_the_pr_github_refused() -> None:
    queue, actions = build_and_test_all(*step(queue_of(1, 2), None))
    first = of(Validate, actions)[0].candidate.id
    queue, _ = step(queue, CandidatePassed(first))
    queue, actions = step(queue, LandRefused(first, "the base moved"))
    assert [b.candidate.prs for b in of(Build, actions)] == [(1,)] and not of(Remove, actions)
    queue, actions = build_and_test_all(queue, actions)
    retest = of(Validate, actions)[0].candidate.id
    queue, _ = step(queue, CandidatePassed(retest))
    queue, actions = step(queue, LandRefused(retest, "Review required", pr=1))
    assert [(r.pr, r.reason) for r in of(Remove, actions)] == [(1, "GitHub refused to merge it: Review required")]
    assert [(b.candidate.ahead, b.candidate.prs) for b in of(Build, actions)] == [((), (2,))]


def test_a_landing_no_host_could_make_is_tried_again_then_tested_again() -> None:
    queue, actions = build_and_test_all(*step(queue_of(1, 2), None))  # #2 is tested on top of #1
    first, second = (v.candidate.id for v in of(Validate, actions))
    queue, actions = step(queue, CandidatePassed(first))
    [landing] = of(Land, actions)
    why = "the rebuild gave another commit"
    for at in (NOW, NOW + 30, NOW + LAND_DEFER_SECONDS - 1):  # waits for a host that can: no new action meanwhile
        queue, actions = step(queue, LandDeferred(first, why, at))
        assert actions == [] and queue.candidate(first).status == LANDING
        assert queue.candidate(first).land_deferred_since == NOW
        [again] = of(Land, resume(queue, SERIAL_BATCHES))  # the next job lands it as decided
        assert (again.candidate.id, again.prs, again.heads, again.method) == \
            (landing.candidate.id, landing.prs, landing.heads, landing.method)
    begun, actions = step(queue, LandDeferred(first, why, NOW + 3 * LAND_DEFER_SECONDS, started=True))
    assert actions == [] and begun.candidate(first).status == LANDING  # a PR may be merged: never dropped

    queue, actions = step(queue, LandDeferred(first, why, NOW + LAND_DEFER_SECONDS))
    # built and tested again, and so is #2, whose verdict assumed #1 lands as tested
    assert [(b.candidate.ahead, b.candidate.prs) for b in of(Build, actions)] == [((), (1,)), ((1,), (2,))]
    assert [c.candidate_id for c in of(Cancel, actions)] == [first, second]
    assert {c.reason for c in of(Cancel, actions)} == {
        f"for 10 min no worker that took its landing could make its tested commit ({why}): testing again"}
    assert [e.pr for e in queue.entries] == [1, 2]  # still queued: nobody is failed for it
    assert step(queue, LandDeferred(first, why, NOW + 2 * LAND_DEFER_SECONDS))[0] == queue  # late: nothing


def test_fast_forward_lands_the_tested_commit() -> None:
    config = QueueConfig(method="fast-forward")
    queue, actions = build_and_test_all(*step(queue_of(1), None, config), config)
    queue, actions = step(queue, CandidatePassed(of(Validate, actions)[0].candidate.id), config)
    [landing] = of(Land, actions)
    assert landing.method == "fast-forward" and landing.candidate.built_sha == f"built{landing.candidate.id}"


# ---- verdict reuse ------------------------------------------------------------------------------------

def test_a_pr_up_to_date_and_alone_in_its_batch_is_not_tested_again() -> None:
    own_tree = tree_of(frozenset({"p1"}))
    queue, actions = build_and_test_all(*step(queue_of(1, validated={1: own_tree}), None))
    assert [type(a) for a in actions] == [ReuseVerdict, Land]
    assert queue.candidates[0].reused_verdict and queue.candidates[0].status == LANDING


def test_no_reuse_when_the_tree_differs_or_the_batch_has_other_prs() -> None:
    stale = tree_of(frozenset({"p1", "older-base"}))
    _, actions = build_and_test_all(*step(queue_of(1, validated={1: stale}), None))
    assert of(Validate, actions) and not of(ReuseVerdict, actions)
    config = QueueConfig(batch_size=2)
    _, actions = build_and_test_all(*step(queue_of(1, 2, validated={1: tree_of(frozenset({"p1"}))}), None, config),
                                    config)
    assert of(Validate, actions) and not of(ReuseVerdict, actions)


# ---- leaving the queue ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("event", "reason"), [
    (HeadPushed(2, "abcdef0123"), "a new commit (abcdef0) was pushed to it; `/queue` it again when it is ready"),
    (PullClosed(2), "it was closed"),
    (PullClosed(2, merged=True), "it was merged outside the queue"),
    (BaseChanged(2, "release"), "its base branch changed to `release`"),
    (Dequeued(2, "dequeued by @bob"), "dequeued by @bob"),
])
def test_a_push_close_base_change_or_dequeue_removes_the_pr_and_rebuilds_what_contained_it(
        event: Event, reason: str) -> None:
    queue, actions = build_and_test_all(*step(queue_of(1, 2, 3), None))
    ids = [t.candidate.id for t in of(Validate, actions)]
    queue, actions = step(queue, event)
    assert [(r.pr, r.reason) for r in of(Remove, actions)] == [(2, reason)]
    assert sorted(c.candidate_id for c in of(Cancel, actions)) == ids[1:]
    assert [(b.candidate.ahead, b.candidate.prs) for b in of(Build, actions)] == [((1,), (3,))]
    assert [e.pr for e in queue.queued()] == [1, 3]
    [removal] = of(Remove, actions)
    queue, actions = step(queue, RemoveDone(2, removal.seq))
    assert actions == [] and [e.pr for e in queue.entries] == [1, 3]


def test_a_push_of_the_queued_head_itself_or_to_an_unknown_pr_changes_nothing() -> None:
    queue, _ = step(queue_of(1), None)
    assert step(queue, HeadPushed(1, "head1"))[1] == [] and step(queue, HeadPushed(9, "x"))[1] == []


def test_a_base_moved_by_someone_else_rebuilds_every_candidate_on_the_new_tip() -> None:
    queue, actions = build_and_test_all(*step(queue_of(1, 2), None))
    queue, actions = step(queue, BaseMoved("pushed", tree_of(frozenset({"hotfix"}))))
    assert len(of(Cancel, actions)) == 2
    assert [(b.candidate.base_sha, b.candidate.ahead, b.candidate.prs, b.candidate.reason)
            for b in of(Build, actions)] == [("pushed", (), (1,), "testing again"),
                                             ("pushed", (1,), (2,), "testing again")]
    assert "main moved to pushed" in of(Cancel, actions)[0].reason


# ---- failures, flaky steps, culprits --------------------------------------------------------------------

def test_a_failing_step_is_retried_once_and_a_pass_is_noted_flaky_not_ejected() -> None:
    queue, actions = build_and_test_all(*step(queue_of(1), None))
    cid = of(Validate, actions)[0].candidate.id
    queue, actions = step(queue, CandidateFailed(cid, "pytest", "E flaky"))
    assert [(a.candidate.id, a.step) for a in of(RetryStep, actions)] == [(cid, "pytest")]
    queue, actions = step(queue, StepRetriedPassed(cid, "pytest"))
    assert actions == [NoteFlaky(cid, (1,), "pytest")]
    queue, actions = step(queue, CandidatePassed(cid))
    assert of(Land, actions) and not of(Eject, actions) and not of(NoteFlaky, actions)


def test_a_step_that_fails_its_retries_too_ejects_the_pr_with_the_failing_step() -> None:
    config = QueueConfig(flaky_retries=2)
    queue, actions = build_and_test_all(*step(queue_of(1, 2), None, config), config)
    first, second = (t.candidate.id for t in of(Validate, actions))
    for _ in range(2):
        queue, actions = step(queue, CandidateFailed(first, "pytest", "E assert 1 == 2"), config)
        assert of(RetryStep, actions) and not of(Eject, actions)
    queue, actions = step(queue, CandidateFailed(first, "pytest", "E assert 1 == 2"), config)
    [eject] = of(Eject, actions)
    assert (eject.pr, eject.failing_step, eject.output_tail, eject.reason) == (
        1, "pytest", "E assert 1 == 2", "`pytest` failed on main with it merged")
    assert sorted(c.candidate_id for c in of(Cancel, actions)) == [first, second]
    assert [(b.candidate.ahead, b.candidate.prs) for b in of(Build, actions)] == [((), (2,))]


def test_the_middle_pr_that_breaks_only_with_the_first_is_ejected_and_the_others_land() -> None:
    queue, log = drive(queue_of(1, 2, 3), SERIAL_BATCHES, {frozenset({"p1", "p2"})})
    [eject] = of(Eject, log)
    assert eject.pr == 2 and eject.reason == "`pytest` failed with #1 merged ahead of it"
    assert [pr for a in of(Land, log) for pr in a.prs] == [1, 3]
    assert queue.entries == () and queue.candidates == ()


def test_a_failure_behind_a_running_candidate_waits_for_it_before_blaming_anyone() -> None:
    config = QueueConfig(flaky_retries=0)
    queue, actions = build_and_test_all(*step(queue_of(1, 2, 3), None, config), config)
    first, second, third = (t.candidate.id for t in of(Validate, actions))
    queue, actions = step(queue, CandidateFailed(second, "pytest"), config)
    # #1 may be the cause: nothing is blamed yet; only what was built on #2 is dropped
    assert [(a.candidate_id, a.reason) for a in actions] == [(third, "built on #2, which failed")]
    queue, actions = step(queue, CandidateFailed(first, "pytest"), config)
    assert [e.pr for e in of(Eject, actions)] == [1]
    assert sorted(c.candidate_id for c in of(Cancel, actions)) == [first, second]
    assert [(b.candidate.ahead, b.candidate.prs) for b in of(Build, actions)] == [((), (2,)), ((2,), (3,))]


def test_a_passed_candidate_is_tested_again_if_the_base_tree_is_not_the_one_it_was_built_on() -> None:
    queue, actions = build_and_test_all(*step(queue_of(1), None))
    queue = apply(queue, CandidatePassed(of(Validate, actions)[0].candidate.id))
    stale = dataclasses.replace(queue, base_tree=tree_of(frozenset({"unseen"})))  # as stored, an event missed
    queue, actions = advance(stale, SERIAL_BATCHES, NOW)
    assert not of(Land, actions) and len(of(Cancel, actions)) == 1
    assert [(b.candidate.prs, b.candidate.base_tree, b.candidate.attempt) for b in of(Build, actions)] == [
        ((1,), stale.base_tree, 2)]


@pytest.mark.parametrize("culprit", range(1, 9))
def test_a_failing_batch_is_searched_until_its_culprit_is_ejected_and_the_others_land(culprit: int) -> None:
    config = QueueConfig(batch_size=8, max_parallel=3, flaky_retries=0)
    queue, log = drive(queue_of(*range(1, 9)), config, {f"p{culprit}"})
    assert [e.pr for e in of(Eject, log)] == [culprit]
    assert [pr for a in of(Land, log) for pr in a.prs] == [pr for pr in range(1, 9) if pr != culprit]
    assert len(of(Build, log)) <= 6


def test_the_search_probes_in_every_free_slot_and_bisection_probes_once_a_round() -> None:
    for probes, first_round in ((0, [2, 4, 6]), (1, [4])):
        config = QueueConfig(batch_size=8, max_parallel=3, flaky_retries=0, search_probes=probes)
        queue, actions = build_and_test_all(*step(queue_of(*range(1, 9)), None, config), config)
        queue, actions = step(queue, CandidateFailed(of(Validate, actions)[0].candidate.id, "pytest"), config)
        assert [len(b.candidate.prs) for b in of(Build, actions)] == first_round
        assert {b.candidate.ahead for b in of(Build, actions)} == {()}
        assert all(b.candidate.reason.startswith("searching #1, #2") for b in of(Build, actions))


def test_bisection_takes_three_probes_for_a_batch_of_8_and_the_spread_search_four_in_two_rounds() -> None:
    def probes(search_probes: int, culprit: int) -> int:
        config = QueueConfig(batch_size=8, max_parallel=3, flaky_retries=0, search_probes=search_probes)
        _, log = drive(queue_of(*range(1, 9)), config, {f"p{culprit}"})
        return sum(1 for b in of(Build, log) if b.candidate.reason.startswith("searching"))
    assert [probes(1, c) for c in range(1, 9)] == [3] * 8
    assert [probes(0, c) for c in range(1, 9)] == [4] * 8  # 2, 4, 6, then the one left between two


def test_split_points_cut_the_interval_evenly() -> None:
    assert split_points(0, 8, 3) == [2, 4, 6]
    assert split_points(0, 8, 1) == [4]
    assert split_points(2, 4, 3) == [3]
    assert split_points(0, 12, 2) == [4, 8]
    assert split_points(0, 1, 3) == []


def test_a_conflict_is_not_retried_and_blames_the_conflicting_pr() -> None:
    queue, actions = step(queue_of(1), None)
    queue, actions = step(queue, CandidateConflicted(of(Build, actions)[0].candidate.id, 1, "CONFLICT (content)"))
    [eject] = of(Eject, actions)
    assert (eject.pr, eject.failing_step, eject.reason) == (1, "merge", "it conflicts with main")
    config = QueueConfig(batch_size=4)
    queue, actions = step(queue_of(1, 2, 3, 4), None, config)
    queue, actions = step(queue, CandidateConflicted(of(Build, actions)[0].candidate.id, 3), config)
    assert [len(b.candidate.prs) for b in of(Build, actions)] == [1, 2]  # lo 0, hi 3: probe #1 and #1-#2
    queue, actions = build_and_test_all(queue, actions, config)
    for probe in of(Validate, actions):
        queue, actions = step(queue, CandidatePassed(probe.candidate.id), config)
    [eject] = of(Eject, actions)
    assert (eject.pr, eject.reason) == (3, "it conflicts with #1, #2, ahead of it")


def test_a_verdict_of_a_cancelled_candidate_is_ignored() -> None:
    queue, actions = build_and_test_all(*step(queue_of(1), None))
    cid = of(Validate, actions)[0].candidate.id
    queue, _ = step(queue, BaseMoved("pushed", tree_of(frozenset({"hotfix"}))))
    queue, actions = step(queue, CandidatePassed(cid))
    assert actions == [] and not of(Land, actions)


# ---- the outbox: ejections, removals and cancels kept until the shell says they were done -------------------

def test_an_ejection_not_acknowledged_is_issued_again_by_resume_and_gone_once_acknowledged() -> None:
    config = QueueConfig(flaky_retries=0)
    queue, actions = build_and_test_all(*step(queue_of(1, 2), None, config), config)
    first = of(Validate, actions)[0].candidate.id
    queue, actions = step(queue, CandidateFailed(first, "pytest", "E assert"), config)
    [eject] = of(Eject, actions)
    assert [e.pr for e in queue.queued()] == [2] and queue.entries[0].state == EJECTED
    assert 1 not in positions(queue) and positions(queue)[2].position == 1
    # a crash before the shell said it: the stored queue still has it to say
    assert of(Eject, resume(queue, config)) == [eject]
    assert decide(queue, config, NOW) == []  # not decided twice within a run
    queue, actions = step(queue, EjectDone(1, eject.seq), config)
    assert actions == [] and [e.pr for e in queue.entries] == [2]
    assert not of(Eject, resume(queue, config))


def test_a_removal_not_acknowledged_is_issued_again_by_resume() -> None:
    queue, _ = step(queue_of(1, 2), None)
    queue, actions = step(queue, PullClosed(1))
    [removal] = of(Remove, actions)
    assert queue.entries[0].state == REMOVED and queue.entry(1) is None
    assert of(Remove, resume(queue, SERIAL_BATCHES)) == [removal]
    queue, _ = step(queue, RemoveDone(1, removal.seq))
    assert [e.pr for e in queue.entries] == [2] and not of(Remove, resume(queue, SERIAL_BATCHES))


def test_a_cancel_not_acknowledged_is_issued_again_by_resume_and_its_verdict_ignored() -> None:
    queue, actions = build_and_test_all(*step(queue_of(1), None))
    cid = of(Validate, actions)[0].candidate.id
    queue, actions = step(queue, BaseMoved("pushed", tree_of(frozenset({"hotfix"}))))
    [cancel] = of(Cancel, actions)
    assert queue.candidate(cid).status == CANCELLING
    assert [b.candidate.prs for b in of(Build, actions)] == [(1,)]  # its slot is free already
    assert of(Cancel, resume(queue, SERIAL_BATCHES)) == [cancel]
    queue, actions = step(queue, CandidatePassed(cid))
    assert actions == [] and queue.candidate(cid).status == CANCELLING
    queue, actions = step(queue, CancelDone(cid))
    assert actions == [] and queue.candidate(cid) is None and not of(Cancel, resume(queue, SERIAL_BATCHES))


def test_a_pr_queued_again_before_its_ejection_was_said_keeps_both_and_the_acknowledgement_takes_the_old() -> None:
    config = QueueConfig(flaky_retries=0)
    queue, actions = build_and_test_all(*step(queue_of(1), None, config), config)
    queue, actions = step(queue, CandidateFailed(of(Validate, actions)[0].candidate.id, "pytest"), config)
    [eject] = of(Eject, actions)
    queue, actions = step(queue, Enqueued(1, "head1", "alice", NOW), config)
    assert [b.candidate.prs for b in of(Build, actions)] == [(1,)]
    assert of(Eject, resume(queue, config)) == [eject]
    queue, _ = step(queue, EjectDone(1, eject.seq), config)
    assert [(e.pr, e.state) for e in queue.entries] == [(1, "queued")]


def test_an_ejection_that_keeps_failing_is_done_after_the_builds_behind_it_and_given_up_on() -> None:
    config = QueueConfig(flaky_retries=0)
    queue, actions = build_and_test_all(*step(queue_of(1, 2), None, config), config)
    queue, actions = step(queue, CandidateFailed(of(Validate, actions)[0].candidate.id, "pytest"), config)
    [eject] = of(Eject, actions)
    ordered = outbox_last(resume(queue, config))
    outbox = [acknowledgement(a) is not None for a in ordered]
    assert eject in ordered and of(Build, ordered) and outbox == sorted(outbox)  # #2's build comes first
    now = NOW
    for backoff in (30, 60, 120, 240):  # doubling: a GitHub outage of minutes is waited out
        failed = announcement_failed(queue, eject, retryable=True, now=now)
        assert failed == AnnounceFailed(pr=1, seq=eject.seq, retry_at=now + backoff)
        queue, _ = step(queue, failed, config)
        assert eject not in unacknowledged(queue, now + backoff - 1)  # not tried again before its time
        now += backoff
        assert eject in unacknowledged(queue, now) and eject in resume(queue, config, now)
    assert queue.entries[0].announce_tries == ANNOUNCE_TRIES - 1
    assert announcement_failed(queue, eject, retryable=True, now=now) == EjectDone(1, eject.seq)  # given up
    queue, _ = step(queue, EjectDone(1, eject.seq), config)
    assert [e.pr for e in queue.entries] == [2]


def test_an_announcement_github_refuses_for_good_is_given_up_at_once() -> None:
    queue, _ = step(queue_of(1, 2), None)
    queue, actions = step(queue, PullClosed(1))
    [removal] = of(Remove, actions)
    assert announcement_failed(queue, removal, retryable=False, now=NOW) == RemoveDone(1, removal.seq)
    cid = queue.candidates[0].id
    queue, actions = step(queue, BaseMoved("pushed", tree_of(frozenset({"hotfix"}))))
    [cancel] = [a for a in of(Cancel, actions) if a.candidate_id != cid]
    queue, _ = step(queue, announcement_failed(queue, cancel, retryable=True, now=NOW))
    assert queue.candidate(cancel.candidate_id).announce_tries == 1
    assert cancel not in unacknowledged(queue, NOW + 29) and cancel in unacknowledged(queue, NOW + 30)


def test_a_candidate_that_could_not_be_tested_says_why_and_its_rebuild_carries_it() -> None:
    queue, actions = build_and_test_all(*step(queue_of(1), None))
    cid = of(Validate, actions)[0].candidate.id
    queue, actions = step(queue, CouldNotTest(cid, "the sandbox is not available", NOW + 15))
    assert actions == [] and queue.candidate(cid).status == TESTING
    assert queue.candidate(cid).reason == "could not be tested: the sandbox is not available; trying again"
    position = positions(queue)[1]
    assert (position.could_not_test, position.retry_at) == ("the sandbox is not available", NOW + 15)
    again, _ = step(queue, CouldNotTest(cid, "the sandbox is not available", NOW + 99))  # seen again: no change
    assert again == queue
    queue, actions = step(queue, Cancel(cid, "its validation could not run: building it again"))
    [rebuilt] = [b.candidate for b in of(Build, actions)]
    assert rebuilt.reason == "could not be tested: the sandbox is not available; testing again"
    assert (rebuilt.could_not_test, rebuilt.untested_tries, rebuilt.retry_at) == \
        ("the sandbox is not available", 1, None)


# ---- positions, config ------------------------------------------------------------------------------------

def test_positions_say_what_each_pr_is_tested_with() -> None:
    queue, _ = step(queue_of(1, 2, 3), None, QueueConfig(max_parallel=2))
    assert {pr: (p.position, p.tested_with, p.state) for pr, p in positions(queue).items()} == {
        1: (1, (), "building"), 2: (2, (1,), "building"), 3: (3, (), "waiting")}


def test_the_config_is_checked() -> None:
    with pytest.raises(ValueError, match="method"):
        QueueConfig(method="octopus")
    with pytest.raises(ValueError):
        QueueConfig(batch_size=0)


def test_enqueueing_twice_is_one_entry_and_a_new_head_replaces_it_at_the_end() -> None:
    queue = apply(queue_of(1, 2), Enqueued(1, "head1", "bob", NOW))
    assert [(e.pr, e.enqueued_by) for e in queue.entries] == [(1, "alice"), (2, "alice")]
    queue = apply(queue, Enqueued(1, "head1b", "bob", NOW))
    assert [(e.pr, e.head_sha) for e in queue.entries] == [(2, "head2"), (1, "head1b")]


# ---- invariants over random runs ---------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(40))
def test_random_queues_never_land_a_bad_or_untested_pr_and_keep_queue_order(seed: int) -> None:
    rng = random.Random(seed)
    work = Workload(prs=60, every=rng.choice([2.0, 6.0, 15.0]), validation=rng.choice([5.0, 15.0]), bad=0.15,
                    flaky=0.05, interacting=0.1, foreign_push_every=rng.choice([0.0, 30.0, 90.0]), churn=0.15,
                    land_elsewhere=rng.choice([0.0, 0.3, 0.9]), seed=seed)
    config = QueueConfig(batch_size=rng.choice([1, 2, 3, 4, 8]), max_parallel=rng.choice([1, 2, 3, 5]),
                         flaky_retries=rng.choice([0, 1, 2]), search_probes=rng.choice([0, 1]),
                         method=rng.choice(["merge", "fast-forward"]))
    out = simulate(work, config)
    assert out.bad_landed == []
    assert out.wrongly_ejected == []
    assert out.landings, "nothing landed: the run says nothing"
    for landing in out.landings:
        assert landing.candidate_status == PASSED
        assert landing.tree_before == landing.expected_tree  # the real base when its landing began
        if landing.last_of_candidate:
            assert landing.tree_after == landing.candidate_tree
    landed = [landing.pr for landing in out.landings]
    assert len(set(landed)) == len(landed), "a PR landed twice"
    last_entry = {pr: i for i, pr in enumerate(out.enqueue_order)}
    assert [last_entry[pr] for pr in landed] == sorted(last_entry[pr] for pr in landed), "queue order"
    final = out.final_queue
    assert final is not None and final.entries == () and final.candidates == ()


@pytest.mark.parametrize(("status", "message", "rate_limited", "final"), [
    (404, "Not Found", False, True),              # the PR or check run is gone
    (422, "Validation Failed", False, True),
    (410, "Gone", False, True),
    (403, "Resource not accessible by integration", False, True),
    (403, "Resource not accessible", True, False),  # gidgethub saw the rate-limit headers
    (403, "You have exceeded a secondary rate limit", False, False),  # GitHub said so, without the headers
    (502, "Bad Gateway", False, False),
    (500, "", False, False),
    (429, "Too Many Requests", True, False),
])
def test_an_announcement_is_given_up_only_on_an_answer_github_will_not_change(
        status: int, message: str, rate_limited: bool, final: bool) -> None:
    assert answer_is_final(status, message, rate_limited=rate_limited) is final
