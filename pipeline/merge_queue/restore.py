"""Before a queue candidate's validation checks out its commit: make sure this host's mirror has it.

The candidate was built by whichever process ran its queue's job; its validation's job may be claimed by
a worker on another host, whose mirror lacks the commit (GitHub never had it). Then the commit is made
again from the inputs the queue's stored document keeps (rebuild.py decides what; candidates.py does the
git) and validated only if it is the same commit. The validation service calls this through its
`restore_candidate` hook (the composition root sets it: the merge queue depends on validations, not the
other way round). Landing needs the commit too (the fast-forward pushes it, a merge compares each merge's
tree with it): the merge queue's service calls `restore` with the queue in hand before it lands.
"""

from __future__ import annotations

import logging

from bot.models import Project, ValidationState
from bot.store.merge_queue import MergeQueueStore
from pipeline.merge_queue.candidates import CandidateBuilder
from pipeline.merge_queue.codec import queue_from_document
from pipeline.merge_queue.model import Queue
from pipeline.merge_queue.rebuild import candidate_of_validation_ref, rebuild_of
from pipeline.workspace.errors import CheckoutError

log = logging.getLogger(__name__)


class CandidateRestorer:
    def __init__(self, queues: MergeQueueStore, builder: CandidateBuilder) -> None:
        self.queues = queues
        self.builder = builder

    async def __call__(self, project: Project, state: ValidationState, token: str | None) -> None:
        """Return once the mirror has `state.head_sha`; CheckoutError (reason "missing_commit") says why not."""
        if await self.builder.has_commit(project.name, state.head_sha):
            return
        named = candidate_of_validation_ref(state.subject_ref)
        if named is None:
            raise CheckoutError(f"{state.head_sha[:7]} is not in this host's mirror and {state.subject_ref!r} "
                                "names no merge queue candidate", reason="missing_commit")
        base_ref, candidate_id = named
        stored = await self.queues.load(project.id, base_ref)
        queue = None if stored is None else queue_from_document(stored.state)
        why = await self.restore(project.name, queue, base_ref, candidate_id, state.head_sha, token)
        if why is not None:
            raise CheckoutError(why, reason="missing_commit")

    async def restore(self, full_name: str, queue: Queue | None, base_ref: str, candidate_id: int, sha: str,
                      token: str | None) -> str | None:
        """Make candidate `candidate_id`'s commit `sha` in this host's mirror from `queue` (the queue of
        `base_ref`) if it lacks it. None: the mirror has it; else why not (a fetch failing raises
        CheckoutError)."""
        if await self.builder.has_commit(full_name, sha):
            return None
        plan = rebuild_of(queue, base_ref, candidate_id, sha)
        if isinstance(plan, str):
            return plan
        mismatch = await self.builder.rebuild(full_name, token=token, plan=plan)
        if mismatch is None:
            log.info("rebuilt %s in this host's mirror: %s", plan.describe(), plan.expected_sha[:12])
        return mismatch
