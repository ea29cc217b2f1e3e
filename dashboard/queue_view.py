"""The merge queue's page and API answer, pure functions of a stored queue (pipeline/merge_queue/model.py's
`Queue`) and what the app knows of its PRs: each queued PR's position and state in words, the candidates
under test, and the same as JSON. No I/O; dashboard/merge_queue.py reads what they need.

The state keeps no history: a PR that landed or was ejected leaves it (its check run and comment say
so), so a queue shows the PRs in it, those leaving right now, and what its candidates landed so far."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pipeline.merge_queue.decide import positions, prs_named, short
from pipeline.merge_queue.model import (BUILDING, BUILT, DROPPED, FAILED, LANDING, LEAVING, MERGE_STEP, OBSOLETE,
                                        PASSED, QUEUED, RETRYING, TESTING, Candidate, Queue)

WAITING = "waiting"  # decide.positions: queued, no candidate tests it yet
# Entry and candidate states as the page and the API name them (css classes, the API's `state`)
STATES = (WAITING, BUILDING, BUILT, TESTING, FAILED, RETRYING, PASSED, LANDING, OBSOLETE, LEAVING)
_WORDS = {WAITING: "Waiting for a free slot", BUILDING: "Building", BUILT: "Built, tests start next",
          TESTING: "Testing", PASSED: "Passed", LANDING: "Landing", OBSOLETE: "Being cancelled",
          LEAVING: "Leaving the queue"}


@dataclass(frozen=True)
class PullInfo:
    """What the app knows of a PR (its tracked row): shown beside its number."""
    title: str
    author: str | None


@dataclass(frozen=True)
class EntryView:
    position: int | None      # 1 = next to land; None: leaving
    pr: int
    title: str
    author: str | None
    head_sha: str
    enqueued_at: datetime
    enqueued_by: str
    state: str                # one of STATES
    words: str                # the state in words
    candidate_id: int | None
    tested_with: tuple[int, ...]

    @property
    def head(self) -> str:
        return short(self.head_sha)


@dataclass(frozen=True)
class CandidateView:
    id: int
    prs: tuple[int, ...]
    ahead: tuple[int, ...]
    ahead_queued: tuple[int, ...]  # of `ahead`, those still in the queue (the others landed)
    base_sha: str
    created_at: datetime
    state: str
    words: str
    attempt: int
    reason: str
    failing_step: str | None
    flaky_steps: tuple[str, ...]
    landed: tuple[int, ...]
    reused_verdict: bool

    @property
    def base(self) -> str:
        return short(self.base_sha)


@dataclass(frozen=True)
class BranchQueue:
    base_ref: str
    base_sha: str
    entries: tuple[EntryView, ...]       # queued in order, then those leaving
    candidates: tuple[CandidateView, ...]  # from the head of the queue

    @property
    def base(self) -> str:
        return short(self.base_sha)

    @property
    def empty(self) -> bool:
        return not self.entries and not self.candidates


def when(seconds: float) -> datetime:
    """A queue's time (POSIX seconds) as an aware datetime."""
    return datetime.fromtimestamp(seconds, UTC)


def plain(text: str) -> str:
    """A reason written for a PR comment (Markdown: `dev`) as page text."""
    return text.replace("`", "")


def candidate_words(c: Candidate) -> str:
    """"Testing", "Failed at step “pytest”", "Retrying flaky step “pytest”", "Passed (its own validation reused)"…"""
    if c.status == FAILED:
        if c.failing_step == MERGE_STEP:
            return f"Merge conflict at #{c.conflict_pr}" if c.conflict_pr is not None else "Merge conflict"
        return f"Failed at step “{c.failing_step or 'validation'}”"
    if c.status == RETRYING:
        return f"Retrying flaky step “{c.failing_step or 'validation'}”"
    if c.status == PASSED and c.reused_verdict:
        return "Passed (its own validation reused)"
    if c.status == LANDING and c.landed:
        return f"Landing ({prs_named(c.landed)} landed)"
    if c.status == LANDING and c.land_deferred_since is not None:
        return "Landing: waiting for a worker that has the tested commit"
    if c.status in DROPPED:
        return f"Being cancelled: {plain(c.obsolete_reason)}" if c.obsolete_reason else _WORDS[OBSOLETE]
    return _WORDS.get(c.status, c.status.replace("_", " ").capitalize())


def _candidate_view(c: Candidate, queued: set[int]) -> CandidateView:
    return CandidateView(id=c.id, prs=c.prs, ahead=c.ahead, ahead_queued=tuple(p for p in c.ahead if p in queued),
                         base_sha=c.base_sha, created_at=when(c.created_at),
                         state=OBSOLETE if c.status in DROPPED else c.status, words=candidate_words(c),
                         attempt=c.attempt, reason=plain(c.reason),
                         failing_step=c.failing_step, flaky_steps=c.flaky_steps, landed=c.landed,
                         reused_verdict=c.reused_verdict)


def branch_queue(queue: Queue, pulls: Mapping[int, PullInfo]) -> BranchQueue:
    """One base branch's queue as the page shows it: the queued PRs in order with their positions (the
    candidate that covers each, as decide.positions says), then the PRs leaving; the candidates from the
    head of the queue (fewest PRs ahead first)."""
    placed = positions(queue)
    by_id = {c.id: c for c in queue.candidates}
    entries: list[EntryView] = []
    for entry in sorted(queue.entries, key=lambda e: (e.state != QUEUED, e.seq)):
        pull = pulls.get(entry.pr)
        at = placed.get(entry.pr) if entry.state == QUEUED else None  # (queued again: its new entry's)
        covering = by_id.get(at.candidate_id) if at is not None and at.candidate_id is not None else None
        if entry.state != QUEUED:  # leaving, or ejected or removed and being said so
            state, words = LEAVING, f"Leaving: {plain(entry.leave_reason)}" if entry.leave_reason else _WORDS[LEAVING]
        else:
            state = at.state if at is not None else WAITING
            words = candidate_words(covering) if covering is not None else _WORDS[WAITING]
        entries.append(EntryView(
            position=at.position if at is not None else None, pr=entry.pr,
            title=pull.title if pull else "", author=pull.author if pull else None, head_sha=entry.head_sha,
            enqueued_at=when(entry.enqueued_at), enqueued_by=entry.enqueued_by, state=state, words=words,
            candidate_id=at.candidate_id if at is not None else None,
            tested_with=at.tested_with if at is not None else ()))
    candidates = sorted(queue.candidates, key=lambda c: (len(c.ahead), c.id))
    return BranchQueue(queue.base_ref, queue.base_sha, tuple(entries),
                       tuple(_candidate_view(c, {e.pr for e in queue.queued()}) for c in candidates))


def _iso(moment: datetime) -> str:
    return moment.isoformat()


def branch_json(branch: BranchQueue) -> dict[str, Any]:
    """A branch's queue as `GET /api/v1/projects/{id}/queue` answers it (dashboard/openapi.py `BranchQueue`)."""
    return {
        "base_ref": branch.base_ref, "base_sha": branch.base_sha,
        "entries": [{"position": e.position, "pr_number": e.pr, "title": e.title or None, "author": e.author,
                     "head_sha": e.head_sha, "enqueued_at": _iso(e.enqueued_at), "enqueued_by": e.enqueued_by,
                     "state": e.state, "label": e.words, "candidate_id": e.candidate_id,
                     "tested_with": list(e.tested_with)} for e in branch.entries],
        "candidates": [{"id": c.id, "prs": list(c.prs), "ahead": list(c.ahead), "base_sha": c.base_sha,
                        "state": c.state, "label": c.words, "attempt": c.attempt, "reason": c.reason,
                        "failing_step": c.failing_step, "flaky_steps": list(c.flaky_steps),
                        "landed": list(c.landed), "reused_verdict": c.reused_verdict,
                        "created_at": _iso(c.created_at)} for c in branch.candidates],
    }


def queued_prs(queues: Sequence[Queue]) -> set[int]:
    """Every PR in one of the queues (the page looks up their titles and authors)."""
    return {e.pr for q in queues for e in q.entries}
