"""What a validation validates besides a PR's own head: a group of GitHub's merge queue (and, later, the
candidates of the app's own queue). Pure: what a group's head ref says, which PRs a group carries, whether
it runs with the project's secrets, and how a validation is named to a person."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from bot.models import SUBJECT_MERGE_GROUP, SUBJECT_QUEUE_CANDIDATE
from pipeline.validation.gate import Gate

# refs/heads/gh-readonly-queue/<base branch>/pr-<number>-<sha>: the base may hold slashes.
_GROUP_REF = re.compile(r"refs/heads/gh-readonly-queue/(?P<base>.+)/pr-(?P<number>[1-9][0-9]*)-(?P<sha>[0-9a-f]{40})")
# The first line of the commit a queue's `merge` method writes for each PR: "Merge pull request #12 from
# acme/feature" (GitHub's queue) or "… from the merge queue" (the app's own).
_MERGED_PR = re.compile(r"Merge pull request #(?P<number>[1-9][0-9]*) from ")
UNTRACEABLE = ("its commits could not all be traced to this repository's pull requests "
               "(squash and rebase queues cannot be)")
INCOMPLETE = ("GitHub did not list all of its commits, so they could not all be traced to this repository's "
              "pull requests")
_KIND = {SUBJECT_MERGE_GROUP: "merge queue group", SUBJECT_QUEUE_CANDIDATE: "merge queue candidate"}
_DESTROYED = {"merged": "the merge group was merged",
              "invalidated": "the merge group was invalidated (a PR ahead of it left the queue or the base moved)",
              "dequeued": "the merge group was removed from the queue"}


@dataclass(frozen=True)
class MergeGroupRef:
    """What a merge group's head ref names: the base branch and the PR the group was made for (the
    last of the PRs it merges)."""
    base: str
    pr_number: int
    sha: str


def parse_group_ref(head_ref: str) -> MergeGroupRef | None:
    """`refs/heads/gh-readonly-queue/main/pr-104-<sha>` → (main, 104, sha); None for any other ref."""
    found = _GROUP_REF.fullmatch(head_ref)
    if found is None:
        return None
    return MergeGroupRef(found["base"], int(found["number"]), found["sha"])


class Commit(Protocol):
    """A commit a comparison lists (bot.github.repos.ComparedCommit)."""
    @property
    def sha(self) -> str: ...
    @property
    def parents(self) -> tuple[str, ...]: ...
    @property
    def message(self) -> str: ...


@dataclass(frozen=True)
class MergedPull:
    """A first-parent commit of a group that merges PR `number`: `head` is the commit it merged."""
    number: int
    head: str


@dataclass(frozen=True)
class PullHead:
    """What is known of a PR now: its head, and whether that head is a branch of this repository."""
    head_sha: str
    same_repository: bool


def merged_pulls(head_sha: str, commits: Sequence[Commit]) -> list[MergedPull] | None:
    """The PRs a group's commits merge, from its head down its first parents (while they are among
    `commits`, what the group adds to its base): each must be a two-parent "Merge pull request #n from …"
    commit, whose second parent is the PR's head. None when one is not: a squash or rebase queue's
    single-parent commits, or any other merge, cannot be traced to a PR."""
    merged: list[MergedPull] = []
    for commit in _first_parent_chain(head_sha, {commit.sha: commit for commit in commits}):
        found = _MERGED_PR.match(commit.message.split("\n", 1)[0].strip())
        if found is None or len(commit.parents) != 2:
            return None
        merged.append(MergedPull(int(found["number"]), commit.parents[1]))
    return merged


def group_gate(head_sha: str, commits: Sequence[Commit], *, complete: bool,
               pulls: Mapping[int, PullHead | None]) -> Gate:
    """Whether a merge queue's commit `head_sha` runs with the project's secrets: only when every commit it
    adds to its base (`commits`, all of them: `complete`) is proven to come from this repository's own
    PRs. Its first parents must each merge (`merged_pulls`) the current head of a known PR (`pulls`: its
    number → what is known of it now, None: no such PR) whose head is a branch of this repository; every
    other commit must be reachable from one of those heads. A group always runs: somebody with write
    access queued it."""
    if not complete:
        return _untrusted(INCOMPLETE)
    merged = merged_pulls(head_sha, commits)
    if merged is None:
        return _untrusted(UNTRACEABLE)
    refused = [_refusal(m, pulls.get(m.number)) for m in merged]
    if any(refused):
        return _untrusted("; ".join(dict.fromkeys(reason for reason in refused if reason)))
    by_sha = {commit.sha: commit for commit in commits}
    merges = {commit.sha for commit in _first_parent_chain(head_sha, by_sha)}
    if set(by_sha) - merges - _reachable([m.head for m in merged], by_sha):
        return _untrusted(UNTRACEABLE)  # a commit neither the queue's merges nor the PRs' heads hold
    return Gate(run=True, with_secrets=True, reason="every commit comes from this repository's pull requests")


def without_secrets_note(subject: str, gate: Gate) -> str:
    """The run's note when a merge queue's commit ran without the project's secrets."""
    return f"{_KIND.get(subject, 'merge queue group')}: run without the project's secrets: {gate.reason}"


def destroyed_reason(reason: str | None) -> str:
    """Why a merge group's validation was cancelled, in words, from `merge_group.destroyed`'s `reason`."""
    return _DESTROYED.get(reason or "", "the merge group was destroyed")


def describe(subject: str, pr_number: int) -> str:
    """What a validation validated, for a person: "pull request #12", "merge queue group for #12"."""
    return f"{subject_lead(subject)} #{pr_number}"


def subject_lead(subject: str) -> str:
    """What `describe` says before the PR's number."""
    return {SUBJECT_MERGE_GROUP: "merge queue group for",
            SUBJECT_QUEUE_CANDIDATE: "merge queue candidate for"}.get(subject, "pull request")


def _untrusted(reason: str) -> Gate:
    return Gate(run=True, with_secrets=False, reason=reason)


def _refusal(merged: MergedPull, pull: PullHead | None) -> str | None:
    """Why the PR a group's commit merges does not make it trusted; None: it does."""
    if pull is None:
        return f"#{merged.number} is not a known pull request of this repository"
    if not pull.same_repository:
        return f"#{merged.number} comes from a fork"
    if pull.head_sha != merged.head:
        return f"the commit merged as #{merged.number} is not that pull request's head"
    return None


def _reachable(starts: list[str], by_sha: Mapping[str, Commit]) -> set[str]:
    """The commits among `by_sha` that `starts` reach through any of their parents (themselves included)."""
    seen: set[str] = set()
    todo = [sha for sha in starts if sha in by_sha]
    while todo:
        sha = todo.pop()
        if sha not in seen:
            seen.add(sha)
            todo += [parent for parent in by_sha[sha].parents if parent in by_sha]
    return seen


def _first_parent_chain(head_sha: str, by_sha: Mapping[str, Commit]) -> list[Commit]:
    """`head_sha` and its first parents, while they are among `by_sha`."""
    chain: list[Commit] = []
    current = by_sha.get(head_sha)
    while current is not None:
        chain.append(current)
        current = by_sha.get(current.parents[0]) if current.parents else None
    return chain
