"""Merge queue benchmark: the real deciding code (pipeline/merge_queue) against a simulated repository.

A discrete-event simulation with a fake clock, no I/O: `--prs` PRs arrive (exponential gaps of mean
`--every` minutes); each is bad with probability `--bad` (any tree containing it fails), each
validation run fails spuriously with probability `--flaky`; a validation takes `--validation`
minutes, a retried step half of that, a build `--build` minutes, each merge through the API a few
seconds. Half the PRs were validated on the base tip they were queued at (so their verdict can be
reused). For batch sizes 1, 4, 8 with max_parallel 1 and 3, and a strictly serial queue (Kodiak's
model: test the head PR on the tip, land it, next; no retry of a failure), prints validation runs per
merged PR, p50/p95 minutes from `/queue` to merged, and the bad PRs that landed (asserted 0). Then the
culprit search of a failing batch: plain bisection (one probe per round) against probes in every free
slot. Seeded and deterministic; a few seconds.

    .venv/bin/python bench/merge_queue.py [--prs 200] [--every 6] [--validation 15] [--seed 1]
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.merge_queue.decide import acknowledgement, advance, apply, resume  # noqa: E402
from pipeline.merge_queue.model import (  # noqa: E402
    Action, BaseMoved, Build, Cancel, Candidate, CandidateBuilt, CandidateFailed, CandidatePassed,
    Dequeued, Eject, Enqueued, Event, HeadPushed, Land, LandDeferred, Landed, LandRefused, NoteFlaky, PullClosed,
    Queue, QueueConfig, Remove, RetryStep, ReuseVerdict, StepRetriedPassed, Validate,
)

API_MERGE_MINUTES = 0.05      # one PUT pulls/merge and reading the new tip's tree
WEBHOOK_DELAY_MINUTES = 0.02  # a push to the base reaches the app this long after it happened
LAND_AGAIN_MINUTES = 0.5      # a landing this host could not make is tried again by a later job


@dataclass(frozen=True)
class Workload:
    prs: int = 200
    every: float = 6.0          # mean minutes between two PRs entering the queue
    validation: float = 15.0    # minutes a validation run takes
    build: float = 0.5          # minutes to build a candidate (merges in the mirror)
    bad: float = 0.10
    flaky: float = 0.02
    up_to_date: float = 0.5     # share of PRs whose own validation ran on the tip they were queued at
    interacting: float = 0.0    # share of PRs that break only with the PR queued just before them
    foreign_push_every: float = 0.0  # mean minutes between pushes to the base by someone else; 0: none
    churn: float = 0.0          # share of PRs pushed to, closed or dequeued while queued
    land_elsewhere: float = 0.0  # chance that a landing's job runs where its commit cannot be made (`LandDeferred`)
    seed: int = 1


@dataclass(frozen=True)
class Pull:
    number: int
    arrives: float
    bad: bool
    up_to_date: bool
    breaks_with: int | None  # fails only in a tree that also has this PR


@dataclass(frozen=True)
class Landing:
    """One PR landed, and what the decider had said about it."""
    pr: int
    at: float
    candidate_status: str     # the candidate's status when `Land` was decided
    expected_tree: str        # the tree the candidate was built on top of
    tree_before: str          # the base's real tree when its landing began
    tree_after: str
    candidate_tree: str       # the tree the candidate tested
    last_of_candidate: bool


@dataclass
class Outcome:
    merged: dict[int, float] = field(default_factory=dict)  # pr -> minutes from its (last) /queue to merged
    landings: list[Landing] = field(default_factory=list)
    enqueue_order: list[int] = field(default_factory=list)
    runs: int = 0
    retries: int = 0
    reused: int = 0
    ejected: list[int] = field(default_factory=list)
    wrongly_ejected: list[int] = field(default_factory=list)  # blamed, yet not the PR that makes its tree fail
    removed: list[int] = field(default_factory=list)
    flaky_noted: int = 0
    bad_landed: list[int] = field(default_factory=list)
    end: float = 0.0
    final_queue: Queue | None = None

    def runs_per_merged(self) -> float:
        return (self.runs + self.retries) / max(len(self.merged), 1)

    def percentile(self, q: float) -> float:
        times = sorted(self.merged.values())
        return statistics.quantiles(times, n=100, method="inclusive")[int(q) - 1] if len(times) > 1 else 0.0


def tree_of(items: frozenset[str]) -> str:
    return "tree:" + ",".join(sorted(items))


def items_of(tree: str) -> frozenset[str]:
    body = tree.split(":", 1)[1]
    return frozenset(body.split(",")) if body else frozenset()


def make_pulls(work: Workload) -> list[Pull]:
    rng = random.Random(work.seed)
    t, pulls = 0.0, []
    for n in range(1, work.prs + 1):
        t += rng.expovariate(1 / work.every)
        bad = rng.random() < work.bad
        breaks_with = n - 1 if n > 1 and rng.random() < work.interacting else None
        pulls.append(Pull(n, t, bad, rng.random() < work.up_to_date, breaks_with))
    return pulls


def tree_fails(pulls: dict[int, Pull], items: frozenset[str]) -> bool:
    """Whether a validation of the tree fails every time: it has a bad PR, or two that break together."""
    for name in items:
        if name.startswith("p"):
            pull = pulls[int(name[1:])]
            if pull.bad or (pull.breaks_with is not None and f"p{pull.breaks_with}" in items):
                return True
    return False


class Simulation:
    """The shell around the decider: a fake clock, a repository of trees and the runner's verdicts."""

    def __init__(self, work: Workload, config: QueueConfig) -> None:
        self.work, self.config = work, config
        self.pulls = {p.number: p for p in make_pulls(work)}
        self.rng = random.Random(work.seed * 7919 + 1)
        self.now = 0.0
        self.heap: list[tuple[float, int, Callable[[], None]]] = []
        self.seq = itertools.count()
        self.tip_sha, self.tip_items = "base0", frozenset[str]()
        self.shas = itertools.count(1)
        self.heads = {n: f"head{n}.0" for n in self.pulls}
        self.queue = Queue("bench/repo", "main", self.tip_sha, tree_of(self.tip_items))
        self.jobs: dict[int, int] = {}  # candidate id -> token of its live job; a cancel drops it
        self.candidates: dict[int, Candidate] = {}
        self.failed_by_chance: set[int] = set()  # candidates a spurious failure failed
        self.tokens = itertools.count()
        self.queued_at: dict[int, float] = {}
        self.decided_as: dict[int, str] = {}  # candidate id -> its status when its `Land` was first decided
        self.out = Outcome()

    # -- the clock
    def at(self, when: float, what: Callable[[], None]) -> None:
        heapq.heappush(self.heap, (when, next(self.seq), what))

    def run(self) -> Outcome:
        for pull in self.pulls.values():
            self.at(pull.arrives, lambda p=pull: self.enqueue(p.number))
            if self.rng.random() < self.work.churn:
                self.at(pull.arrives + self.rng.uniform(0, 3 * self.work.validation), lambda p=pull: self.churn(p))
        if self.work.foreign_push_every:
            self.at(self.rng.expovariate(1 / self.work.foreign_push_every), self.foreign_push)
        while self.heap:
            self.now, _, what = heapq.heappop(self.heap)
            what()
        self.out.end = self.now
        self.out.final_queue = self.queue
        return self.out

    def deliver(self, event: Event) -> None:
        self.queue = apply(self.queue, event)
        self.queue, actions = advance(self.queue, self.config, self.now)
        for action in actions:
            self.perform(action)

    # -- the outside world
    def enqueue(self, pr: int) -> None:
        own_tree = self.tip_items | {f"p{pr}"} if self.pulls[pr].up_to_date else frozenset({"old", f"p{pr}"})
        validated = None if self.fails(own_tree) else tree_of(own_tree)  # the tree its own passing validation had
        self.queued_at[pr] = self.now
        self.out.enqueue_order.append(pr)
        self.deliver(Enqueued(pr, self.heads[pr], "alice", self.now, validated))

    def churn(self, pull: Pull) -> None:
        if pull.number in self.out.merged or self.queue.entry(pull.number) is None:
            return
        roll = self.rng.random()
        if roll < 0.5:
            version = int(self.heads[pull.number].rsplit(".", 1)[1]) + 1
            self.heads[pull.number] = f"head{pull.number}.{version}"
            self.deliver(HeadPushed(pull.number, self.heads[pull.number]))
            self.at(self.now + self.work.validation, lambda: self.enqueue(pull.number))
        elif roll < 0.8:
            self.deliver(PullClosed(pull.number))
        else:
            self.deliver(Dequeued(pull.number, "dequeued by @alice"))

    def foreign_push(self) -> None:
        self.move_tip(self.tip_items | {f"f{next(self.shas)}"})
        sha, tree = self.tip_sha, tree_of(self.tip_items)
        self.at(self.now + WEBHOOK_DELAY_MINUTES, lambda: self.deliver(BaseMoved(sha, tree)))
        if self.queue.entries or self.now < max(p.arrives for p in self.pulls.values()):
            self.at(self.now + self.rng.expovariate(1 / self.work.foreign_push_every), self.foreign_push)

    def move_tip(self, items: frozenset[str]) -> None:
        self.tip_sha, self.tip_items = f"sha{next(self.shas)}", items

    def fails(self, items: frozenset[str]) -> bool:
        return tree_fails(self.pulls, items)

    # -- performing the decider's actions
    def perform(self, action: Action) -> None:
        handler: dict[type, Callable[[Any], None]] = {
            Build: self.build, Validate: self.test, RetryStep: self.retry, Cancel: self.cancel, Land: self.land,
            ReuseVerdict: lambda a: self.count("reused"), NoteFlaky: lambda a: self.count("flaky_noted"),
            Eject: self.eject, Remove: lambda a: self.out.removed.append(a.pr),
        }
        handler[type(action)](action)
        done = acknowledgement(action)
        if done is not None:  # said done, as the shell does once it did it
            self.at(self.now, lambda: self.deliver(done))

    def eject(self, action: Eject) -> None:
        self.out.ejected.append(action.pr)
        c = self.candidates[action.candidate_id]
        merged = list(c.ahead + c.prs)
        before = items_of(c.base_tree) | {f"p{pr}" for pr in merged[:merged.index(action.pr)]}
        guilty = self.fails(before | {f"p{action.pr}"}) and not self.fails(before)
        if not guilty and action.candidate_id not in self.failed_by_chance:
            self.out.wrongly_ejected.append(action.pr)

    def count(self, name: str) -> None:
        setattr(self.out, name, getattr(self.out, name) + 1)

    def job(self, candidate_id: int, after: float, event: Callable[[], Event | None]) -> None:
        token = next(self.tokens)
        self.jobs[candidate_id] = token

        def finish() -> None:
            if self.jobs.get(candidate_id) == token:
                found = event()
                if found is not None:
                    self.deliver(found)
        self.at(self.now + after, finish)

    @staticmethod
    def contents(c: Candidate) -> tuple[frozenset[str], frozenset[str]]:
        base = items_of(c.base_tree) | {f"p{pr}" for pr in c.ahead}
        return base, base | {f"p{pr}" for pr in c.prs}

    def build(self, action: Build) -> None:
        c = action.candidate
        self.candidates[c.id] = c
        expected, built = self.contents(c)
        self.job(c.id, self.work.build, lambda: CandidateBuilt(c.id, f"built{c.id}", tree_of(built), tree_of(expected)))

    def verdict(self, c: Candidate, minutes: float, retry: bool) -> None:
        failing = self.fails(self.contents(c)[1])
        if not failing and self.rng.random() < self.work.flaky:
            failing = True
            self.failed_by_chance.add(c.id)
        if failing:
            self.job(c.id, minutes, lambda: CandidateFailed(c.id, "test", "1 failed"))
        elif retry:
            self.job(c.id, minutes, lambda: self.passed_after_retry(c))
        else:
            self.job(c.id, minutes, lambda: CandidatePassed(c.id))

    def passed_after_retry(self, c: Candidate) -> Event:
        self.deliver(StepRetriedPassed(c.id, "test"))
        return CandidatePassed(c.id)

    def test(self, action: Validate) -> None:
        self.out.runs += 1
        self.verdict(action.candidate, self.work.validation, retry=False)

    def retry(self, action: RetryStep) -> None:
        self.out.retries += 1
        self.verdict(action.candidate, self.work.validation / 2, retry=True)

    def cancel(self, action: Cancel) -> None:
        self.jobs.pop(action.candidate_id, None)

    def land(self, action: Land) -> None:
        c = action.candidate
        self.decided_as.setdefault(c.id, c.status)
        if self.rng.random() < self.work.land_elsewhere:  # a later job (on the host that built it) lands it
            self.at(self.now, lambda: self.deliver(LandDeferred(c.id, "not on this host", self.now * 60)))
            self.at(self.now + LAND_AGAIN_MINUTES, lambda: self.land_again(c.id))
            return
        token = next(self.tokens)
        self.jobs[c.id] = token
        expected_sha, start_tree = None, ""

        def merge(index: int) -> None:
            nonlocal expected_sha, start_tree
            if self.jobs.get(c.id) != token:
                return
            pr = action.prs[index]
            if not index:
                start_tree = tree_of(self.tip_items)
            moved = self.tip_sha != expected_sha if index else start_tree != action.expected_tree
            if moved or self.heads[pr] != action.heads[index]:
                self.jobs.pop(c.id, None)
                why = "the base moved" if moved else "the head changed"
                self.deliver(LandRefused(c.id, why, None if moved else pr))
                return
            self.move_tip(self.tip_items | {f"p{pr}"})
            expected_sha = self.tip_sha
            sha, tree = self.tip_sha, tree_of(self.tip_items)
            last = index == len(action.prs) - 1
            self.out.landings.append(Landing(pr, self.now, self.decided_as[c.id], action.expected_tree, start_tree,
                                             tree, c.built_tree or "", last))
            self.out.merged[pr] = self.now - self.queued_at[pr]
            if self.fails(frozenset({f"p{pr}"})) or self.fails(self.tip_items):
                self.out.bad_landed.append(pr)
            self.at(self.now + WEBHOOK_DELAY_MINUTES, lambda: self.deliver(BaseMoved(sha, tree)))
            if last:
                self.jobs.pop(c.id, None)
            else:
                self.at(self.now + API_MERGE_MINUTES, lambda: merge(index + 1))
            self.deliver(Landed(c.id, (pr,), sha, tree))

        self.at(self.now + API_MERGE_MINUTES, lambda: merge(0))

    def land_again(self, candidate_id: int) -> None:
        """What the next job does: `resume` the landings still under way (this one, unless given up on)."""
        for action in resume(self.queue, self.config):
            if isinstance(action, Land) and action.candidate.id == candidate_id:
                self.land(action)


def serial_queue(work: Workload) -> Outcome:
    """Kodiak's model: the head PR is tested on the tip (unless its own validation ran on that very
    tip), lands if it passes and is removed if it fails; then the next. No retry of a failure."""
    rng = random.Random(work.seed * 7919 + 1)
    out, now, tip = Outcome(), 0.0, frozenset[str]()
    pulls = make_pulls(work)
    by_number = {p.number: p for p in pulls}
    tip_at_arrival: dict[int, frozenset[str]] = {}

    def arrived_by(when: float) -> None:  # the tip each PR saw when it was queued
        for other in pulls:
            if other.arrives <= when and other.number not in tip_at_arrival:
                tip_at_arrival[other.number] = tip

    pending = list(pulls)
    while pending:
        pull = pending.pop(0)
        now = max(now, pull.arrives)
        arrived_by(now)
        tree = tip | {f"p{pull.number}"}
        if not (pull.up_to_date and tip_at_arrival[pull.number] == tip):
            out.runs += 1
            now += work.build + work.validation
            if tree_fails(by_number, tree) or rng.random() < work.flaky:
                out.ejected.append(pull.number)
                continue
        else:
            out.reused += 1
        now += API_MERGE_MINUTES
        arrived_by(now)
        tip = tree
        out.merged[pull.number] = now - pull.arrives
        if tree_fails(by_number, tree):
            out.bad_landed.append(pull.number)
    out.end = now
    return out


def simulate(work: Workload, config: QueueConfig) -> Outcome:
    return Simulation(work, config).run()


def row(name: str, pulls: list[Pull], out: Outcome) -> str:
    good_ejected = sum(1 for pr in out.ejected if not pulls[pr - 1].bad)
    return (f"| {name} | {out.runs_per_merged():.2f} | {out.percentile(50):.0f} | {out.percentile(95):.0f} | "
            f"{len(out.merged)} | {len(out.ejected)} ({good_ejected} good) | {out.reused} | {len(out.bad_landed)} |")


HEADER = ("| queue | runs / merged PR | p50 min | p95 min | merged | ejected | verdicts reused | bad landed |\n"
          "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prs", type=int, default=200)
    parser.add_argument("--every", type=float, default=6.0, help="mean minutes between PRs entering the queue")
    parser.add_argument("--validation", type=float, default=15.0, help="minutes a validation run takes (T)")
    parser.add_argument("--build", type=float, default=0.5, help="minutes to build a candidate")
    parser.add_argument("--bad", type=float, default=0.10)
    parser.add_argument("--flaky", type=float, default=0.02)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    work = Workload(prs=args.prs, every=args.every, validation=args.validation, build=args.build, bad=args.bad,
                    flaky=args.flaky, seed=args.seed)
    started = time.perf_counter()
    pulls = make_pulls(work)
    bad = sum(p.bad for p in pulls)
    print(f"{work.prs} PRs, one every {work.every:g} min on average, {bad} bad, flaky runs {work.flaky:.0%}, "
          f"validation {work.validation:g} min, seed {work.seed}\n")
    print(HEADER)
    serial = serial_queue(work)
    print(row("serial (Kodiak)", pulls, serial))
    assert not serial.bad_landed
    outcomes = {}
    for batch in (1, 4, 8):
        for parallel in (1, 3):
            out = simulate(work, QueueConfig(batch_size=batch, max_parallel=parallel))
            outcomes[batch, parallel] = out
            assert not out.bad_landed, f"bad PRs landed: {out.bad_landed}"
            print(row(f"batch {batch}, parallel {parallel}", pulls, out))
    print("\nCulprit search in a failing batch (parallel 3): bisection (one probe a round) against a probe in "
          "every free slot\n")
    print(HEADER)
    for batch in (4, 8):
        for probes, name in ((1, "bisection"), (0, "free slots")):
            out = simulate(work, QueueConfig(batch_size=batch, max_parallel=3, search_probes=probes))
            assert not out.bad_landed
            print(row(f"batch {batch}, {name}", pulls, out))
    base = serial.runs_per_merged()
    print("\nruns per merged PR against the serial queue: "
          + ", ".join(f"batch {b}/parallel {p} {o.runs_per_merged() / base - 1:+.0%}" for (b, p), o in outcomes.items())
          + f" (Trunk publishes about 75 % fewer test runs at batch 4); took {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
