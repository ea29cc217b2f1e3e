"""The merge queue's deciding, pure: `apply` folds an event (or a recorded action) into the state,
`decide` says what to do next, `advance` does both until nothing is left to decide.

The shell's loop, per project and base branch, in one transaction per event:

    queue = apply(queue, event)                  # a webhook, a runner's verdict, a landing's result
    queue, actions = advance(queue, config, now)  # each action already recorded in `queue`
    save(queue); perform(actions)                 # perform: build, test, cancel, land, comment

After a restart, `resume(queue)` gives the actions that were under way (builds, validations,
landings) and those not acknowledged done (ejections, removals, cancels: `EjectDone`, `RemoveDone`,
`CancelDone`) to perform again; their events are idempotent here, and landing is keyed by the candidate.
The shell performs those outbox actions after the others (`outbox_last`), and one that keeps failing is
acknowledged all the same after `ANNOUNCE_TRIES` (`announcement_failed`): it must not stall the queue.

The model (Zuul's and Mergify's, with trees as the truth):
- **Speculative chain.** The queued PRs, in order, are cut into batches of `batch_size`. Each
  candidate is the base tip merged with every PR ahead of its batch, then its batch. Up to
  `max_parallel` candidates build or run at once, from the head of the queue; the ones behind assume
  the ones ahead pass.
- **Landing** only at the head of the queue, only a `PASSED` candidate, and only while the base
  tip's *tree* is the candidate's `expected_base_tree` (the tree after the PRs ahead of it, which
  have landed by then). `PUT pulls/merge` (merge, squash, rebase) makes new commits whose tree is the
  tested tree, so trees are compared, never commit shas. Otherwise the candidate is tested again on
  the current tip. A fast-forward lands the tested commit (`built_sha`) itself.
- **A failing batch** is searched for its culprit: the first PR whose addition makes the prefix fail
  (in queue order, so an interaction with a PR ahead blames the later PR, as a serial queue would).
  Prefixes of the batch are tested, each on the same PRs ahead; `lo` is the longest that passed
  (0: the PRs ahead, known good), `hi` the shortest that failed. Each round starts probes that split
  (lo, hi) evenly, as many as there are free slots (`search_probes` bounds them; 1 is bisection), and
  the next round starts when they have all answered. For a batch of 8 and 3 slots: 2 rounds (cuts
  2, 4, 6, then one), against bisection's 3 rounds of one probe; the bench has the figures.
  `hi - lo == 1` names the culprit: it is ejected with the failing step of the `hi` prefix; the
  passing prefix lands; the rest of the batch goes on in new batches. A build conflict is a failure
  of the prefix ending at the conflicting PR. The search starts only once every candidate ahead
  passed: a failure may be the fault of a PR ahead.
- **Flaky steps.** A failed step is run again up to `flaky_retries` times; a candidate that then
  passes is noted flaky (`NoteFlaky`), not failed.
- **Reuse of verdicts.** A one-PR candidate whose built tree is the tree the PR's own validation
  passed on (the PR is up to date with the base and alone in its batch) passes without a test.
- **Invalidation.** A PR that leaves (push, close, base change, `/dequeue`, ejection) cancels every
  candidate that contains it. The base moving to a tree nobody here made (someone else pushed)
  cancels every candidate; they are rebuilt on the new tip. A candidate built on top of a batch that
  failed for good is cancelled. Our own landings move the base to the trees the chain expected.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.merge_queue.model import (
    BUILDING, BUILT, CANCELLING, DROPPED, EJECTED, FAILED, GONE, LANDING, LEAVING, MERGE_STEP, OBSOLETE, PASSED,
    QUEUED, REMOVED, RETRYING, RUNNING, TESTING, Action, AnnounceFailed, BaseChanged, BaseMoved, Build, Cancel,
    CancelDone, Candidate, CandidateBuilt, CandidateConflicted, CandidateFailed, CandidatePassed, CouldNotTest,
    Dequeued, Eject, EjectDone, Enqueued, Entry, Event, HeadPushed, Land, LandDeferred, Landed, LandRefused, NoteFlaky,
    PullClosed, Queue, QueueConfig, Remove, RemoveDone, RetryStep, ReuseVerdict, StepRetriedPassed, Validate,
)

OWN_TIPS_KEPT = 64
# An outbox action (`Eject`, `Remove`, `Cancel`) that failed this often is acknowledged all the same: one PR
# GitHub will not let us comment on must not stop the queue behind it.
ANNOUNCE_TRIES = 5
# ... tried again after a backoff that doubles (30 s, 1, 2, 4 min): a GitHub outage of a few minutes is waited out,
# where tries one after the other would all fail within a second.
ANNOUNCE_BACKOFF_SECONDS = 30.0
ADVANCE_ROUNDS = 1000
# A landing that no host which took it could make (`LandDeferred`) for this long: the host that built the
# candidate is gone, say. It is built and tested again, unless it may have merged a PR already (`started`).
LAND_DEFER_SECONDS = 600.0


def short(sha: str) -> str:
    return sha[:7]


def prs_named(prs: Sequence[int]) -> str:
    return ", ".join(f"#{pr}" for pr in prs)


# ---- apply: events and recorded actions -------------------------------------------------------------

def apply(queue: Queue, item: Event | Action) -> Queue:
    """The queue after `item`: an event that happened, or an action the shell is about to perform.
    Events that no longer concern anything (a verdict of a cancelled candidate, a push webhook of
    our own landing) change nothing."""
    return _APPLY[type(item)](queue, item)


def _with_candidate(queue: Queue, candidate: Candidate) -> Queue:
    return dataclasses.replace(queue, candidates=tuple(
        candidate if c.id == candidate.id else c for c in queue.candidates))


def _without_candidate(queue: Queue, candidate_id: int) -> Queue:
    return dataclasses.replace(queue, candidates=tuple(c for c in queue.candidates if c.id != candidate_id))


def _obsolete(queue: Queue, reason: str, *, containing: int | None = None, in_batch: int | None = None,
              sparing: int | None = None) -> Queue:
    """Mark candidates obsolete (`decide` cancels them): those with PR `containing` anywhere in them,
    those with PR `in_batch` in their own batch, or (neither given) all."""
    def hit(c: Candidate) -> bool:
        if c.status in DROPPED or c.id == sparing:
            return False
        if in_batch is not None:
            return in_batch in c.prs
        return containing is None or containing in c.ahead or containing in c.prs
    return dataclasses.replace(queue, candidates=tuple(
        dataclasses.replace(c, status=OBSOLETE, obsolete_reason=reason) if hit(c) else c
        for c in queue.candidates))


def _forget_builds(queue: Queue, pr: int) -> Queue:
    return dataclasses.replace(queue, builds_by_pr=tuple(b for b in queue.builds_by_pr if b[0] != pr))


def _forget_entry(queue: Queue, pr: int) -> Queue:
    """The PR is out of the queue and nothing is left to say about it (landed, queued again)."""
    entry = queue.entry(pr)
    if entry is None:
        return queue
    return _forget_builds(dataclasses.replace(queue, entries=tuple(e for e in queue.entries if e is not entry)), pr)


def _with_entry(queue: Queue, entry: Entry, **changes: object) -> Queue:
    return dataclasses.replace(queue, entries=tuple(
        dataclasses.replace(e, **changes) if e.seq == entry.seq else e for e in queue.entries))


def _leave(queue: Queue, pr: int, reason: str) -> Queue:
    """The PR leaves the queue for `reason` (the `Remove` action announces it)."""
    entry = queue.entry(pr)
    if entry is None or entry.state != QUEUED:
        return queue
    queue = _obsolete(queue, f"#{pr} left the queue", containing=pr)
    return _with_entry(queue, entry, state=LEAVING, leave_reason=reason)


def _landing_candidate_of(queue: Queue, pr: int) -> Candidate | None:
    return next((c for c in queue.candidates if c.status == LANDING and pr in c.prs), None)


def _enqueued(queue: Queue, event: Enqueued) -> Queue:
    existing = queue.entry(event.pr)
    if existing is not None:
        if existing.state == QUEUED and existing.head_sha == event.head_sha:
            return queue
        queue = _forget_entry(_obsolete(queue, f"#{event.pr} entered the queue again", containing=event.pr),
                              event.pr)
    entry = Entry(pr=event.pr, head_sha=event.head_sha, seq=queue.next_seq, enqueued_at=event.at,
                  enqueued_by=event.by, validated_tree=event.validated_tree)
    return dataclasses.replace(queue, entries=queue.entries + (entry,), next_seq=queue.next_seq + 1)


def _dequeued(queue: Queue, event: Dequeued) -> Queue:
    return _leave(queue, event.pr, event.reason)


def _head_pushed(queue: Queue, event: HeadPushed) -> Queue:
    entry = queue.entry(event.pr)
    if entry is None or entry.head_sha == event.head_sha:
        return queue
    return _leave(queue, event.pr, f"a new commit ({short(event.head_sha)}) was pushed to it; "
                                   "`/queue` it again when it is ready")


def _pull_closed(queue: Queue, event: PullClosed) -> Queue:
    if event.merged and _landing_candidate_of(queue, event.pr) is not None:
        return queue  # our own landing; `Landed` records it
    return _leave(queue, event.pr, "it was merged outside the queue" if event.merged else "it was closed")


def _base_changed(queue: Queue, event: BaseChanged) -> Queue:
    return _leave(queue, event.pr, f"its base branch changed to `{event.new_base}`")


def _base_moved(queue: Queue, event: BaseMoved) -> Queue:
    if event.sha == queue.base_sha or event.sha in queue.own_tips:
        return queue  # known, or the push event of one of our own landings, arriving late
    moved = dataclasses.replace(queue, base_sha=event.sha, base_tree=event.tree)
    if event.tree == queue.base_tree:
        return moved  # same tree (an empty commit, a re-merge): what was tested still holds
    return _obsolete(moved, f"{queue.base_ref} moved to {short(event.sha)}: rebuilding on the new tip")


def _candidate_in(queue: Queue, candidate_id: int, *statuses: str) -> Candidate | None:
    candidate = queue.candidate(candidate_id)
    return candidate if candidate is not None and candidate.status in statuses else None


def _candidate_built(queue: Queue, event: CandidateBuilt) -> Queue:
    c = _candidate_in(queue, event.candidate_id, BUILDING)
    if c is None:
        return queue
    return _with_candidate(queue, dataclasses.replace(c, status=BUILT, built_sha=event.sha, built_tree=event.tree,
                                                      expected_base_tree=event.expected_base_tree))


def _candidate_conflicted(queue: Queue, event: CandidateConflicted) -> Queue:
    c = _candidate_in(queue, event.candidate_id, BUILDING)
    if c is None:
        return queue
    return _with_candidate(queue, dataclasses.replace(c, status=FAILED, conflict_pr=event.pr,
                                                      failing_step=MERGE_STEP, output_tail=event.output_tail))


def _candidate_passed(queue: Queue, event: CandidatePassed) -> Queue:
    c = _candidate_in(queue, event.candidate_id, TESTING, RETRYING)
    if c is None:
        return queue
    flaky = c.flaky_steps + ((c.failing_step or "",) if c.status == RETRYING else ())
    return _with_candidate(queue, dataclasses.replace(c, status=PASSED, flaky_steps=flaky))


def _candidate_failed(queue: Queue, event: CandidateFailed) -> Queue:
    c = _candidate_in(queue, event.candidate_id, TESTING, RETRYING)
    if c is None:
        return queue
    return _with_candidate(queue, dataclasses.replace(c, status=FAILED, failing_step=event.step,
                                                      output_tail=event.output_tail))


def _step_retried_passed(queue: Queue, event: StepRetriedPassed) -> Queue:
    c = _candidate_in(queue, event.candidate_id, RETRYING)
    if c is None:
        return queue
    return _with_candidate(queue, dataclasses.replace(c, status=TESTING, flaky_steps=c.flaky_steps + (event.step,)))


def _landed(queue: Queue, event: Landed) -> Queue:
    c = queue.candidate(event.candidate_id)
    for pr in event.prs:
        queue = _forget_entry(queue, pr)
    queue = dataclasses.replace(queue, base_sha=event.tip_sha, base_tree=event.tip_tree,
                                own_tips=(queue.own_tips + (event.tip_sha,))[-OWN_TIPS_KEPT:])
    if c is None or c.status != LANDING:
        return _obsolete(queue, f"{prs_named(event.prs)} landed outside a landing: rebuilding on the new tip")
    for pr in event.prs:  # another candidate that would merge a landed PR again
        queue = _obsolete(queue, f"#{pr} landed", in_batch=pr, sparing=c.id)
    c = dataclasses.replace(c, landed=c.landed + tuple(p for p in event.prs if p not in c.landed))
    if set(c.landed) < set(c.prs):
        return _with_candidate(queue, c)
    queue = _without_candidate(queue, c.id)
    if event.tip_tree != c.built_tree:
        return _obsolete(queue, f"the tree {queue.base_ref} got differs from the tested one: rebuilding")
    return queue


def _land_refused(queue: Queue, event: LandRefused) -> Queue:
    c = _candidate_in(queue, event.candidate_id, LANDING)
    if c is None:
        return queue
    refused = f"landing refused ({event.reason}): testing again"
    queue = _with_candidate(queue, dataclasses.replace(c, status=OBSOLETE, obsolete_reason=refused))
    if event.pr is not None:
        queue = _leave(queue, event.pr, f"GitHub refused to merge it: {event.reason}")
    return queue


def _land_deferred(queue: Queue, event: LandDeferred) -> Queue:
    c = _candidate_in(queue, event.candidate_id, LANDING)
    if c is None:
        return queue
    since = event.at if c.land_deferred_since is None else c.land_deferred_since
    if event.started or event.at - since < LAND_DEFER_SECONDS:
        return _with_candidate(queue, dataclasses.replace(c, land_deferred_since=since))
    # Nothing of it was merged (what `Landed` recorded stays landed): its PRs are built again, and so is every
    # candidate built on top of it, whose verdict assumed they land as it tested them.
    reason = (f"for {(event.at - since) / 60:.0f} min no worker that took its landing could make its tested "
              f"commit ({event.reason}): testing again")
    for pr in c.prs:
        if pr not in c.landed:
            queue = _obsolete(queue, reason, containing=pr)
    return queue


def _build(queue: Queue, action: Build) -> Queue:
    first = action.candidate.prs[0]
    builds = dict(queue.builds_by_pr)
    builds[first] = builds.get(first, 0) + 1
    return dataclasses.replace(queue, candidates=queue.candidates + (action.candidate,),
                               next_candidate_id=max(queue.next_candidate_id, action.candidate.id + 1),
                               builds_by_pr=tuple(builds.items()))


def _set_status(status: str, **changes: object):
    def record(queue: Queue, action: Validate | ReuseVerdict | Land) -> Queue:
        c = queue.candidate(action.candidate.id)
        return queue if c is None else _with_candidate(queue, dataclasses.replace(c, status=status, **changes))
    return record


def _retry_step(queue: Queue, action: RetryStep) -> Queue:
    c = queue.candidate(action.candidate.id)
    if c is None:
        return queue
    return _with_candidate(queue, dataclasses.replace(c, status=RETRYING, retries_used=c.retries_used + 1))


def _cancel(queue: Queue, action: Cancel) -> Queue:
    c = queue.candidate(action.candidate_id)
    if c is None or c.status == CANCELLING:
        return queue
    return _with_candidate(queue, dataclasses.replace(c, status=CANCELLING, obsolete_reason=action.reason))


def _cancel_done(queue: Queue, event: CancelDone) -> Queue:
    if _candidate_in(queue, event.candidate_id, CANCELLING) is None:
        return queue
    return _without_candidate(queue, event.candidate_id)


def _entry_numbered(queue: Queue, pr: int, seq: int, state: str) -> Entry | None:
    return next((e for e in queue.entries if e.pr == pr and e.seq == seq and e.state == state), None)


def _eject(queue: Queue, action: Eject) -> Queue:
    entry = _entry_numbered(queue, action.pr, action.seq, QUEUED)
    if entry is None:
        return queue
    queue = _forget_builds(_obsolete(queue, f"#{action.pr} was ejected", containing=action.pr), action.pr)
    return _with_entry(queue, entry, state=EJECTED, leave_reason=action.reason, failing_step=action.failing_step,
                       output_tail=action.output_tail, ejected_by=action.candidate_id)


def _remove(queue: Queue, action: Remove) -> Queue:
    entry = _entry_numbered(queue, action.pr, action.seq, LEAVING)
    return queue if entry is None else _forget_builds(_with_entry(queue, entry, state=REMOVED), action.pr)


def _announced(state: str):
    def acknowledge(queue: Queue, event: EjectDone | RemoveDone) -> Queue:
        return dataclasses.replace(queue, entries=tuple(
            e for e in queue.entries if not (e.pr == event.pr and e.seq == event.seq and e.state == state)))
    return acknowledge


def _announce_failed(queue: Queue, event: AnnounceFailed) -> Queue:
    if event.candidate_id is not None:
        c = _candidate_in(queue, event.candidate_id, CANCELLING)
        return queue if c is None else _with_candidate(queue, dataclasses.replace(
            c, announce_tries=c.announce_tries + 1, announce_after=event.retry_at))
    entry = next((e for e in queue.entries if e.pr == event.pr and e.seq == event.seq and e.state in GONE), None)
    return queue if entry is None else _with_entry(queue, entry, announce_tries=entry.announce_tries + 1,
                                                   announce_after=event.retry_at)


def _could_not_test(queue: Queue, event: CouldNotTest) -> Queue:
    c = _candidate_in(queue, event.candidate_id, TESTING, RETRYING)
    if c is None or c.retry_at is not None:
        return queue
    return _with_candidate(queue, dataclasses.replace(
        c, could_not_test=event.reason, retry_at=event.retry_at, untested_tries=c.untested_tries + 1,
        reason=f"could not be tested: {event.reason}; trying again"))


def _note_flaky(queue: Queue, action: NoteFlaky) -> Queue:
    c = queue.candidate(action.candidate_id)
    return queue if c is None else _with_candidate(queue, dataclasses.replace(c, flaky_noted=c.flaky_noted + 1))


def _land_decided(queue: Queue, action: Land) -> Queue:
    return _set_status(LANDING, land_method=action.method)(queue, action)


_APPLY = {
    Enqueued: _enqueued, Dequeued: _dequeued, HeadPushed: _head_pushed, PullClosed: _pull_closed,
    BaseChanged: _base_changed, BaseMoved: _base_moved, CandidateBuilt: _candidate_built,
    CandidateConflicted: _candidate_conflicted, CandidatePassed: _candidate_passed,
    CandidateFailed: _candidate_failed, StepRetriedPassed: _step_retried_passed, Landed: _landed,
    LandRefused: _land_refused, LandDeferred: _land_deferred, EjectDone: _announced(EJECTED),
    RemoveDone: _announced(REMOVED),
    CancelDone: _cancel_done, AnnounceFailed: _announce_failed, CouldNotTest: _could_not_test,
    Build: _build, Validate: _set_status(TESTING), ReuseVerdict: _set_status(PASSED, reused_verdict=True),
    RetryStep: _retry_step, Cancel: _cancel, Land: _land_decided, Eject: _eject, Remove: _remove,
    NoteFlaky: _note_flaky,
}


# ---- decide -------------------------------------------------------------------------------------------

def failed_for_good(c: Candidate, config: QueueConfig) -> bool:
    return c.status == FAILED and (c.failing_step == MERGE_STEP or c.retries_used >= config.flaky_retries)


def pending(prs: Sequence[int], queued_at: dict[int, int]) -> tuple[int, ...]:
    return tuple(pr for pr in prs if pr in queued_at)


def failing_length(c: Candidate, own: tuple[int, ...]) -> int:
    """The shortest prefix of the candidate's pending PRs known to fail: a conflict blames the prefix
    ending at the conflicting PR (0: a PR ahead conflicts), a failed step the whole batch."""
    if c.conflict_pr is not None:
        return own.index(c.conflict_pr) + 1 if c.conflict_pr in own else 0
    return len(own)


def decide(queue: Queue, config: QueueConfig, now: float) -> list[Action]:
    """What to do next. Record each action with `apply` before deciding again (`advance` does)."""
    actions: list[Action] = [Remove(e.pr, e.head_sha, e.leave_reason or "it left the queue", e.seq)
                             for e in queue.entries if e.state == LEAVING]
    live: list[Candidate] = []
    for c in queue.candidates:
        if c.status == OBSOLETE:
            actions.append(Cancel(c.id, c.obsolete_reason or "obsolete"))
        elif c.status != CANCELLING:
            live.append(c)
    for failed in [c for c in live if failed_for_good(c, config)]:
        built_on = set(failed.ahead + failed.prs)
        for c in list(live):
            if c is not failed and built_on <= set(c.ahead):
                actions.append(Cancel(c.id, f"built on {prs_named(failed.prs)}, which failed"))
                live.remove(c)
    for c in live:
        if c.status == BUILT:
            actions.append(ReuseVerdict(c) if _verdict_reusable(queue, c) else Validate(c))
        elif c.status == FAILED and not failed_for_good(c, config):
            actions.append(RetryStep(c, c.failing_step or ""))
        actions += [NoteFlaky(c.id, c.prs, step) for step in c.flaky_steps[c.flaky_noted:]]
    actions += _ChainWalk(queue, config, now, live).walk()
    return actions


def _verdict_reusable(queue: Queue, c: Candidate) -> bool:
    entry = queue.entry(c.prs[0]) if len(c.prs) == 1 else None
    return entry is not None and entry.validated_tree is not None and entry.validated_tree == c.built_tree


class _ChainWalk:
    """Walks the queue from its head, batch by batch, along the candidates that cover it."""

    def __init__(self, queue: Queue, config: QueueConfig, now: float, live: list[Candidate]) -> None:
        self.queue, self.config, self.now = queue, config, now
        self.order = [e for e in queue.entries if e.state == QUEUED]
        self.queued_at = {e.pr: i for i, e in enumerate(self.order)}
        self.actions: list[Action] = []
        self.next_id = queue.next_candidate_id
        self.builds = dict(queue.builds_by_pr)
        self.slots = config.max_parallel - sum(
            1 for c in live if c.status in RUNNING and not failed_for_good(c, config))
        # the live candidates by the queue position their batch starts at (each a prefix of the rest
        # of the queue), with their own PRs not landed yet
        self.families: dict[int, list[tuple[tuple[int, ...], Candidate]]] = {}
        for c in live:
            self._place(c)

    def _place(self, c: Candidate) -> None:
        own = pending(c.prs, self.queued_at)
        if not own:
            return
        start = self.queued_at[own[0]]
        prs = [e.pr for e in self.order]
        if pending(c.ahead, self.queued_at) != tuple(prs[:start]) or own != tuple(prs[start:start + len(own)]):
            self.actions.append(Cancel(c.id, "the queue changed under it"))  # a safety net: events cancel these first
            return
        self.families.setdefault(start, []).append((own, c))

    def walk(self) -> list[Action]:
        pos, all_passed_ahead = 0, True
        while pos < len(self.order):
            family = self.families.get(pos)
            if family is None:
                if self.slots <= 0:
                    break
                batch = self.order[pos:pos + self.config.batch_size]
                self._build(pos, len(batch), None)
                pos, all_passed_ahead = pos + len(batch), False
                continue
            failures = [(failing_length(c, own), c) for own, c in family if failed_for_good(c, self.config)]
            if failures:
                if all_passed_ahead:
                    self._search(pos, family, failures)
                break
            own, best = max(family, key=lambda pair: len(pair[0]))
            for _, other in family:
                if other is not best:
                    self.actions.append(Cancel(other.id, f"superseded by candidate {best.id}"))
            if best.status == PASSED and pos == 0:
                if not self._land(own, best):
                    break
            elif best.status not in (PASSED, LANDING):
                all_passed_ahead = False
            pos += len(own)
        return self.actions

    def _land(self, own: tuple[int, ...], c: Candidate) -> bool:
        if self.queue.base_tree != c.expected_base_tree:
            self.actions.append(Cancel(c.id, f"{self.queue.base_ref} is no longer the tree it was tested on: "
                                             "testing again"))
            return False
        self.actions.append(Land(c, own, tuple(c.head_of(pr) for pr in own), self.config.method,
                                 self.queue.base_sha, self.queue.base_tree))
        return True

    def _search(self, pos: int, family: list[tuple[tuple[int, ...], Candidate]],
                failures: list[tuple[int, Candidate]]) -> None:
        hi, failed = min(failures, key=lambda pair: pair[0])
        if hi == 0:  # a PR ahead conflicts although every candidate ahead passed: build it again
            self.actions.append(Cancel(failed.id, "a PR ahead of it conflicted: building again"))
            return
        lo = max((len(own) for own, c in family if c.status == PASSED and len(own) < hi), default=0)
        probing = False
        for own, c in family:
            if c is failed or (c.status == PASSED and len(own) == lo):
                continue
            if lo < len(own) < hi and not failed_for_good(c, self.config):
                probing = True
            else:
                self.actions.append(Cancel(c.id, "no longer needed by the search for the failing PR"))
        if hi - lo == 1:
            self._eject(pos, hi, failed)
            return
        if probing:
            return  # rounds: a probe started while others run is often made moot by their answers
        for cut in split_points(lo, hi, min(self.slots, self.config.search_probes or self.slots)):
            self._build(pos, cut, f"searching {prs_named(self._prs(pos, hi))} for the PR that fails")

    def _eject(self, pos: int, hi: int, failed: Candidate) -> None:
        culprit = self.order[pos + hi - 1]
        tested = failed.ahead + failed.prs  # what failed: the PRs merged before the culprit, landed since or not
        before = list(tested[:tested.index(culprit.pr)])
        step = failed.failing_step or "validation"
        if step == MERGE_STEP:
            reason = "it conflicts with " + (f"{prs_named(before)}, ahead of it" if before else self.queue.base_ref)
        else:
            reason = f"`{step}` failed " + (f"with {prs_named(before)} merged ahead of it" if before
                                            else f"on {self.queue.base_ref} with it merged")
        self.actions.append(Eject(culprit.pr, culprit.head_sha, reason, step, failed.output_tail, failed.id,
                                  culprit.seq))

    def _prs(self, pos: int, length: int) -> list[int]:
        return [e.pr for e in self.order[pos:pos + length]]

    def _build(self, pos: int, length: int, reason: str | None) -> None:
        ahead, own = self.order[:pos], self.order[pos:pos + length]
        runs = self.builds.get(own[0].pr, 0)
        self.builds[own[0].pr] = runs + 1
        # built again after its validation could not run: it says why until it is tested
        untested = next((c for c in self.queue.candidates
                         if c.status in DROPPED and c.could_not_test and c.prs[:1] == (own[0].pr,)), None)
        if untested is not None and reason is None:
            reason = f"could not be tested: {untested.could_not_test}; testing again"
        candidate = Candidate(
            id=self.next_id, prs=tuple(e.pr for e in own), ahead=tuple(e.pr for e in ahead),
            heads=tuple(e.head_sha for e in ahead + own), base_sha=self.queue.base_sha,
            base_tree=self.queue.base_tree, created_at=self.now, attempt=runs + 1,
            reason=reason or ("queued" if runs == 0 else "testing again"),
            could_not_test=untested.could_not_test if untested else None,
            untested_tries=untested.untested_tries if untested else 0)
        self.actions.append(Build(candidate))
        self.next_id += 1
        self.slots -= 1


def split_points(lo: int, hi: int, count: int) -> list[int]:
    """Up to `count` prefix lengths strictly between lo and hi, cutting the interval evenly."""
    count = min(count, hi - lo - 1)
    return [lo + i * (hi - lo) // (count + 1) for i in range(1, count + 1)] if count > 0 else []


# ---- driving ------------------------------------------------------------------------------------------

def advance(queue: Queue, config: QueueConfig, now: float) -> tuple[Queue, list[Action]]:
    """Decide and record until nothing is left to decide: the new state and every action to perform."""
    performed: list[Action] = []
    for _ in range(ADVANCE_ROUNDS):
        actions = decide(queue, config, now)
        if not actions:
            return queue, performed
        for action in actions:
            queue = apply(queue, action)
        performed += actions
    raise RuntimeError("merge queue: the deciding does not settle")  # a bug: each round must make progress


def unacknowledged(queue: Queue, now: float | None = None) -> list[Action]:
    """The ejections, removals and cancels recorded but not acknowledged done (`acknowledgement`); given
    `now`, not those whose last try failed and whose backoff has not passed (`AnnounceFailed`)."""
    def due(announce_after: float | None) -> bool:
        return now is None or announce_after is None or announce_after <= now

    actions: list[Action] = []
    for e in queue.entries:
        if not due(e.announce_after):
            continue
        if e.state == EJECTED:
            actions.append(Eject(e.pr, e.head_sha, e.leave_reason or "it failed", e.failing_step or "validation",
                                 e.output_tail, e.ejected_by or 0, e.seq))
        elif e.state == REMOVED:
            actions.append(Remove(e.pr, e.head_sha, e.leave_reason or "it left the queue", e.seq))
    actions += [Cancel(c.id, c.obsolete_reason or "obsolete") for c in queue.candidates
                if c.status == CANCELLING and due(c.announce_after)]
    return actions


def resume(queue: Queue, config: QueueConfig, now: float | None = None) -> list[Action]:
    """The work under way in a stored queue, to start again after a restart (builds, validations and
    landings; each is idempotent, keyed by its candidate), and the ejections, removals and cancels not
    acknowledged done (the shell makes each harmless to do twice; given `now`, those due: `unacknowledged`).
    Everything else `advance` decides."""
    actions = unacknowledged(queue, now)
    queued = {e.pr for e in queue.entries if e.state == QUEUED}
    for c in queue.candidates:
        if c.status == BUILDING:
            actions.append(Build(c))
        elif c.status == TESTING:
            actions.append(Validate(c))
        elif c.status == RETRYING:
            actions.append(RetryStep(c, c.failing_step or ""))
        elif c.status == LANDING:
            own = tuple(pr for pr in c.prs if pr in queued and pr not in c.landed)
            expected = queue.base_tree if c.landed else (c.expected_base_tree or "")
            actions.append(Land(c, own, tuple(c.head_of(pr) for pr in own), c.land_method or config.method,
                                queue.base_sha, expected))
    return actions


def outbox_last(actions: Sequence[Action]) -> list[Action]:
    """`actions` in the order to perform them: the outbox's (ejections, removals, cancels) after the rest, so
    one that keeps failing does not hold up the builds and landings of the PRs behind it."""
    return sorted(actions, key=lambda action: acknowledgement(action) is not None)


def announce_tries(queue: Queue, action: Action) -> int:
    """How often the outbox action failed before."""
    if isinstance(action, Cancel):
        c = queue.candidate(action.candidate_id)
        return c.announce_tries if c is not None else 0
    if isinstance(action, (Eject, Remove)):
        entry = next((e for e in queue.entries if e.pr == action.pr and e.seq == action.seq and e.state in GONE), None)
        return entry.announce_tries if entry is not None else 0
    return 0


def announce_backoff(tries: int) -> float:
    """Seconds before an outbox action that failed `tries` times before this failure is tried again."""
    return ANNOUNCE_BACKOFF_SECONDS * 2 ** tries


# GitHub's answers to an announcement that trying again will not change (a locked PR, an archived repository,
# a check run gone)
FINAL_ANNOUNCE_STATUSES = frozenset({403, 404, 410, 422})


def answer_is_final(status: int, message: str, *, rate_limited: bool) -> bool:
    """Whether GitHub's refusal of an announcement (`status`, saying `message`) stays the same if asked again:
    not while it is a rate limit, which GitHub answers with 403 too, saying so or not."""
    return status in FINAL_ANNOUNCE_STATUSES and not rate_limited and "rate limit" not in message.lower()


def announcement_failed(queue: Queue, action: Action, *, retryable: bool, now: float) -> Event:
    """The event for an outbox action that failed: tried again after a backoff (`AnnounceFailed`), or,
    failed for good or `ANNOUNCE_TRIES` times, acknowledged all the same."""
    done = acknowledgement(action)
    assert done is not None, action
    tries = announce_tries(queue, action)
    if not retryable or tries + 1 >= ANNOUNCE_TRIES:
        return done
    retry_at = now + announce_backoff(tries)
    if isinstance(action, Cancel):
        return AnnounceFailed(candidate_id=action.candidate_id, retry_at=retry_at)
    assert isinstance(action, (Eject, Remove))
    return AnnounceFailed(pr=action.pr, seq=action.seq, retry_at=retry_at)


def acknowledgement(action: Action) -> Event | None:
    """The event the shell applies once it did `action`, for those kept until done (None: the others)."""
    if isinstance(action, Eject):
        return EjectDone(action.pr, action.seq)
    if isinstance(action, Remove):
        return RemoveDone(action.pr, action.seq)
    if isinstance(action, Cancel):
        return CancelDone(action.candidate_id)
    return None


@dataclass(frozen=True)
class Position:
    """What the "Merge queue" check run and the sticky comment say about one queued PR."""
    position: int                   # 1 = next to land
    candidate_id: int | None        # the candidate that tests it, if any
    tested_with: tuple[int, ...]    # the other PRs in that candidate (ahead of it, and its batch)
    state: str                      # "waiting", or the candidate's status
    could_not_test: str | None = None  # why its candidate's validation (or the one before) could not run
    retry_at: float | None = None      # when that candidate is built again (None: it was)
    land_deferred: bool = False        # landing, but the hosts that took it could not make its tested commit


def positions(queue: Queue) -> dict[int, Position]:
    order = [e.pr for e in queue.entries if e.state == QUEUED]
    queued_at = {pr: i for i, pr in enumerate(order)}
    covering: dict[int, Candidate] = {}
    for c in queue.candidates:
        if c.status in DROPPED:
            continue
        for pr in pending(c.prs, queued_at):
            if pr not in covering or len(c.prs) > len(covering[pr].prs):
                covering[pr] = c
    result = {}
    for i, pr in enumerate(order):
        c = covering.get(pr)
        others = tuple(p for p in pending(c.ahead + c.prs, queued_at) if p != pr) if c else ()
        result[pr] = Position(i + 1, c.id if c else None, others, c.status if c else "waiting",
                              c.could_not_test if c else None, c.retry_at if c else None,
                              land_deferred=c is not None and c.land_deferred_since is not None)
    return result
