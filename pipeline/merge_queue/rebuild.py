"""What to build again when a queue candidate's commit is missing from this host's mirror. Pure.

A candidate's commit exists only in the mirror of the process that built it (candidates.py). With
workers on several hosts (one PostgreSQL), its validation may run where the mirror lacks it, and GitHub
never had it. The build is deterministic, so the commit is made again from its inputs as the queue's
stored document keeps them (the base sha, then each PR's head in queue order), and used only if it is
the very commit the validation is of.

The refs: a candidate's commit is kept under `candidate_ref`; one try of its validation is named
`candidate_ref(...)-try{n}` (`validation_ref`), which `candidate_of_validation_ref` reads back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pipeline.merge_queue.model import Candidate, Queue

QUEUE_REF_PREFIX = "refs/codegenapp/queue"
_VALIDATION_REF = re.compile(re.escape(QUEUE_REF_PREFIX) + r"/(?P<base>.+)/(?P<id>[0-9]+)-try[0-9]+")


def candidate_ref(base_ref: str, candidate_id: int) -> str:
    return f"{QUEUE_REF_PREFIX}/{base_ref}/{candidate_id}"


def landing_key(base_ref: str, candidate_id: int) -> str:
    """What a candidate's landings are recorded under (MergeQueueStore.claim_landing)."""
    return f"{base_ref}:{candidate_id}"


def validation_ref(base_ref: str, candidate: Candidate) -> str:
    """The `subject_ref` of one try of a candidate's validation (a retry is a new try)."""
    return f"{candidate_ref(base_ref, candidate.id)}-try{candidate.retries_used}"


def candidate_of_validation_ref(subject_ref: str | None) -> tuple[str, int] | None:
    """(base ref, candidate id) of one try of a candidate's validation; None: not such a ref."""
    found = _VALIDATION_REF.fullmatch(subject_ref or "")
    return None if found is None else (found["base"], int(found["id"]))


@dataclass(frozen=True)
class Rebuild:
    """The inputs of CandidateBuilder.build that made `expected_sha`."""
    base_ref: str
    candidate_id: int
    base_sha: str
    merges: tuple[tuple[int, str], ...]  # (PR, head): the PRs ahead, then the candidate's own batch
    ahead: int
    expected_sha: str

    @property
    def ref(self) -> str:
        return candidate_ref(self.base_ref, self.candidate_id)

    def describe(self) -> str:
        heads = ", ".join(f"#{pr} at {head[:7]}" for pr, head in self.merges)
        return f"candidate {self.candidate_id} of the merge queue of {self.base_ref} ({self.base_sha[:7]} + {heads})"


def rebuild_of(queue: Queue | None, base_ref: str, candidate_id: int, head_sha: str) -> Rebuild | str:
    """How to make candidate `candidate_id`'s commit `head_sha` again from `queue` (the stored queue of
    `base_ref`); or why it cannot be made (the validation then fails with it)."""
    what = f"candidate {candidate_id} of the merge queue of {base_ref}"
    if queue is None:
        return f"{head_sha[:7]} is not in this host's mirror and the merge queue of {base_ref} is gone: " \
               f"{what} cannot be rebuilt"
    candidate = queue.candidate(candidate_id)
    if candidate is None:
        return f"{head_sha[:7]} is not in this host's mirror and {what} is no longer queued: nothing to rebuild"
    if candidate.built_sha != head_sha:
        return (f"{head_sha[:7]} is not in this host's mirror and {what} is now "
                f"{(candidate.built_sha or 'unbuilt')[:7]}: not rebuilt")
    return Rebuild(base_ref, candidate_id, candidate.base_sha,
                   tuple(zip(candidate.ahead + candidate.prs, candidate.heads, strict=True)), len(candidate.ahead),
                   head_sha)


def rebuilt_mismatch(rebuild: Rebuild, rebuilt_sha: str | None, conflict_pr: int | None = None) -> str | None:
    """Why a rebuild's result must not be validated (None: it is the expected commit)."""
    if conflict_pr is not None:
        return f"rebuilding {rebuild.describe()} conflicted at #{conflict_pr}: not validated"
    if rebuilt_sha != rebuild.expected_sha:
        return (f"rebuilding {rebuild.describe()} made {(rebuilt_sha or '?')[:7]}, not {rebuild.expected_sha[:7]} "
                f"(the commit this validation is of): not validated")
    return None
