"""The merge queue's state, the events that change it and the actions it decides: plain frozen data.

One `Queue` per project and base branch. Its rows:

- `Entry`: a queued PR (one row per PR in the queue), in queue order by `seq`.
- `Candidate`: one speculative build: the base tip it was built on (`base_sha`/`base_tree`), the
  queued PRs merged first (`ahead`), then its own batch (`prs`); what the build made (`built_sha`,
  `built_tree`, and `expected_base_tree`, the tree after `ahead` alone: what the base must be when it
  lands); its status, attempt and failing step.

Events say what happened (webhooks, the runner's verdicts, the landing's results); actions say what
the shell must do, and are recorded in the state with `decide.apply` before they are performed, so a
stored queue knows what is under way. An ejected or removed entry and a cancelled candidate stay (an
outbox: `EJECTED`, `REMOVED`, `CANCELLING`) until the shell acknowledges the action was done
(`EjectDone`, `RemoveDone`, `CancelDone`), so a crash in between does not lose it. A retest is a
`Cancel` of the stale candidate plus a `Build` of a new one (its `attempt` counts up, its `reason` says
why). A build conflict is its own event (`CandidateConflicted`), not a `CandidateBuilt`.

Times are POSIX seconds passed in by the caller; nothing here reads a clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

METHODS = ("merge", "squash", "rebase", "fast-forward")

# Entry states
QUEUED = "queued"
LEAVING = "leaving"  # removed by an event (push, close, base change, /dequeue); the `Remove` action announces it
# Out of the queue, kept (an outbox) until the shell acknowledges it said so (`RemoveDone`, `EjectDone`);
# `resume` issues the action again after a crash.
REMOVED = "removed"  # `Remove` issued
EJECTED = "ejected"  # `Eject` issued; the entry keeps what the `Eject` says
GONE = frozenset({REMOVED, EJECTED})

# Candidate statuses
BUILDING = "building"      # `Build` issued: the shell merges base + ahead + prs in its scratch workspace
BUILT = "built"            # built; the decider says `Validate` or `ReuseVerdict`
TESTING = "testing"        # `Validate` issued: the validation pipeline runs on the built tree
FAILED = "failed"          # a step failed (or the merge conflicted); retried or final, by the config
RETRYING = "retrying"      # `RetryStep` issued: the failing step runs again, then the rest
PASSED = "passed"          # every step passed (or the PR's own verdict was reused)
LANDING = "landing"        # `Land` issued
OBSOLETE = "obsolete"      # invalidated by an event; decided: `Cancel` it
CANCELLING = "cancelling"  # `Cancel` issued; kept until the shell acknowledges it (`CancelDone`)
DROPPED = frozenset({OBSOLETE, CANCELLING})

RUNNING = frozenset({BUILDING, BUILT, TESTING, FAILED, RETRYING})  # hold a slot of max_parallel
MERGE_STEP = "merge"  # the failing step of a candidate whose build conflicted (never retried)


@dataclass(frozen=True)
class QueueConfig:
    method: str = "merge"
    batch_size: int = 1
    max_parallel: int = 3
    flaky_retries: int = 1
    # Candidates started per round of the search for a failing batch's culprit; 0: every free slot.
    # 1 is plain bisection (test the first half: it passing puts the culprit in the second).
    search_probes: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"merge_queue.method must be one of {', '.join(METHODS)}, not {self.method!r}")
        if self.batch_size < 1 or self.max_parallel < 1 or self.flaky_retries < 0 or self.search_probes < 0:
            raise ValueError("merge_queue: batch_size and max_parallel must be at least 1, "
                             "flaky_retries and search_probes at least 0")


@dataclass(frozen=True)
class Entry:
    pr: int
    head_sha: str
    seq: int  # queue order: assigned on entry, increasing
    enqueued_at: float
    enqueued_by: str
    validated_tree: str | None = None  # the tree the PR's own passing validation ran on, if known
    state: str = QUEUED
    leave_reason: str | None = None
    # EJECTED: what its `Eject` says
    failing_step: str | None = None
    output_tail: str = ""
    ejected_by: int | None = None  # the candidate that failed
    announce_tries: int = 0  # EJECTED, REMOVED: its announcement failed this many times (`AnnounceFailed`)
    announce_after: float | None = None  # ... and is not tried again before this time


@dataclass(frozen=True)
class Candidate:
    id: int
    prs: tuple[int, ...]            # its own batch, in queue order
    ahead: tuple[int, ...]          # the queued PRs ahead of it, merged first, in queue order
    heads: tuple[str, ...]          # the head sha merged for each of ahead + prs
    base_sha: str
    base_tree: str
    created_at: float
    reason: str = "queued"          # why it was built (a retest says what changed)
    attempt: int = 1                # 1 + the builds its first PR had before
    status: str = BUILDING
    built_sha: str | None = None
    built_tree: str | None = None
    expected_base_tree: str | None = None
    conflict_pr: int | None = None
    failing_step: str | None = None
    output_tail: str = ""
    retries_used: int = 0
    flaky_steps: tuple[str, ...] = ()
    flaky_noted: int = 0            # how many of flaky_steps a `NoteFlaky` announced
    reused_verdict: bool = False
    landed: tuple[int, ...] = ()    # its PRs landed so far
    obsolete_reason: str | None = None
    land_method: str | None = None  # the method its `Land` was decided with: resumed with it, not the config's
    could_not_test: str | None = None  # why its validation (or its predecessor's, rebuilt) could not run
    untested_tries: int = 0         # validations of it and the candidates it was rebuilt from that could not run
    retry_at: float | None = None   # its validation could not run: it is built again at this time
    land_deferred_since: float | None = None  # LANDING: when a host first could not make its commit (`LandDeferred`)
    announce_tries: int = 0         # CANCELLING: its cancel failed this many times (`AnnounceFailed`)
    announce_after: float | None = None  # ... and is not tried again before this time

    def head_of(self, pr: int) -> str:
        return self.heads[(self.ahead + self.prs).index(pr)]


@dataclass(frozen=True)
class Queue:
    repo: str
    base_ref: str
    base_sha: str
    base_tree: str
    entries: tuple[Entry, ...] = ()
    candidates: tuple[Candidate, ...] = ()
    next_seq: int = 1
    next_candidate_id: int = 1
    own_tips: tuple[str, ...] = ()  # base tips our landings made: their push events are not someone else's
    builds_by_pr: tuple[tuple[int, int], ...] = field(default=())  # (pr, candidates it headed) for `attempt`

    def queued(self) -> tuple[Entry, ...]:
        return tuple(e for e in self.entries if e.state == QUEUED)

    def entry(self, pr: int) -> Entry | None:
        """The PR's entry in the queue (queued or leaving), not one whose leaving is being announced."""
        return next((e for e in self.entries if e.pr == pr and e.state not in GONE), None)

    def candidate(self, candidate_id: int) -> Candidate | None:
        return next((c for c in self.candidates if c.id == candidate_id), None)


# ---- events: what happened (from webhooks, the runner, the landing) --------------------------------

@dataclass(frozen=True)
class Enqueued:
    pr: int
    head_sha: str
    by: str
    at: float
    validated_tree: str | None = None


@dataclass(frozen=True)
class Dequeued:
    pr: int
    reason: str  # "dequeued by @alice", "dequeued from the dashboard by @bob"


@dataclass(frozen=True)
class HeadPushed:
    pr: int
    head_sha: str


@dataclass(frozen=True)
class PullClosed:
    pr: int
    merged: bool = False


@dataclass(frozen=True)
class BaseChanged:
    pr: int
    new_base: str


@dataclass(frozen=True)
class BaseMoved:
    sha: str
    tree: str


@dataclass(frozen=True)
class EjectDone:
    """The shell announced an `Eject` (check run completed, comment posted)."""
    pr: int
    seq: int


@dataclass(frozen=True)
class RemoveDone:
    pr: int
    seq: int


@dataclass(frozen=True)
class CancelDone:
    """The shell stopped the candidate's build or validation (or found none running)."""
    candidate_id: int


@dataclass(frozen=True)
class AnnounceFailed:
    """The shell could not do an outbox action (`Eject`, `Remove`, `Cancel`): it is tried again at
    `retry_at`, up to a limit (decide.ANNOUNCE_TRIES)."""
    retry_at: float
    pr: int | None = None            # an `Eject` or `Remove`: its entry
    seq: int | None = None
    candidate_id: int | None = None  # a `Cancel`


@dataclass(frozen=True)
class CouldNotTest:
    """The candidate's validation ended without saying anything of its tree (the sandbox away, say): it is
    built again at `retry_at`."""
    candidate_id: int
    reason: str
    retry_at: float


@dataclass(frozen=True)
class CandidateBuilt:
    candidate_id: int
    sha: str
    tree: str
    expected_base_tree: str  # the tree after merging `ahead` only


@dataclass(frozen=True)
class CandidateConflicted:
    candidate_id: int
    pr: int  # the PR whose merge conflicted
    output_tail: str = ""


@dataclass(frozen=True)
class CandidatePassed:
    candidate_id: int


@dataclass(frozen=True)
class CandidateFailed:
    candidate_id: int
    step: str
    output_tail: str = ""


@dataclass(frozen=True)
class StepRetriedPassed:
    candidate_id: int
    step: str


@dataclass(frozen=True)
class Landed:
    candidate_id: int
    prs: tuple[int, ...]  # one PR per `PUT pulls/merge`; all of them for a fast-forward push
    tip_sha: str
    tip_tree: str


@dataclass(frozen=True)
class LandRefused:
    candidate_id: int
    reason: str
    pr: int | None = None  # a PR GitHub will not merge (it is removed); None: retest the candidate


@dataclass(frozen=True)
class LandDeferred:
    """The host that took the landing could not make the candidate's tested commit (its builder's mirror
    has it; the rebuild here did not give the same commit): a later job, maybe on that host, tries again."""
    candidate_id: int
    reason: str
    at: float
    started: bool = False  # it may have merged a PR already (the shell's `_landing_started`): never given up on


Event = (Enqueued | Dequeued | HeadPushed | PullClosed | BaseChanged | BaseMoved | CandidateBuilt
         | CandidateConflicted | CandidatePassed | CandidateFailed | StepRetriedPassed | Landed | LandRefused
         | LandDeferred | EjectDone | RemoveDone | CancelDone | AnnounceFailed | CouldNotTest)


# ---- actions: what the shell must do; `apply` records each one it is given ---------------------------

@dataclass(frozen=True)
class Build:
    candidate: Candidate  # merge candidate.ahead then candidate.prs (their heads) onto candidate.base_sha


@dataclass(frozen=True)
class Validate:
    candidate: Candidate


@dataclass(frozen=True)
class ReuseVerdict:
    candidate: Candidate  # its built tree is the one the PR's own validation passed on: not tested again


@dataclass(frozen=True)
class RetryStep:
    candidate: Candidate
    step: str  # run it again, then the steps after it


@dataclass(frozen=True)
class Cancel:
    candidate_id: int
    reason: str  # stop its build or validation if one runs; `CancelDone` drops it either way


@dataclass(frozen=True)
class Land:
    candidate: Candidate
    prs: tuple[int, ...]    # in queue order; those not landed yet
    heads: tuple[str, ...]  # pin each merge to the tested head
    method: str
    base_sha: str           # the tip the decider saw; the shell checks the real tip's tree is expected_tree
    expected_tree: str


@dataclass(frozen=True)
class Eject:
    pr: int
    head_sha: str
    reason: str
    failing_step: str
    output_tail: str
    candidate_id: int
    seq: int  # of its entry: `EjectDone(pr, seq)` acknowledges it


@dataclass(frozen=True)
class Remove:
    pr: int
    head_sha: str
    reason: str  # for the comment on the PR
    seq: int     # of its entry: `RemoveDone(pr, seq)` acknowledges it


@dataclass(frozen=True)
class NoteFlaky:
    candidate_id: int
    prs: tuple[int, ...]
    step: str


Action = Build | Validate | ReuseVerdict | RetryStep | Cancel | Land | Eject | Remove | NoteFlaky
