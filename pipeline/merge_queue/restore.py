"""Before a queue candidate's validation checks out its commit: make sure this host's mirror has it.

The candidate was built by whichever process ran its queue's job; its validation's job may be claimed by
a worker on another host, whose mirror lacks the commit (GitHub never had it). Then the commit is made
again from the inputs the queue's stored document keeps (rebuild.py decides what; candidates.py does the
git) and validated only if it is the same commit. The validation service calls this through its
`restore_candidate` hook (the composition root sets it: the merge queue depends on validations, not the
other way round).
"""

from __future__ import annotations

import logging

from bot.models import Project, ValidationState
from bot.store.merge_queue import MergeQueueStore
from pipeline.merge_queue.candidates import CandidateBuilder
from pipeline.merge_queue.codec import queue_from_document
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
        plan = rebuild_of(None if stored is None else queue_from_document(stored.state), base_ref, candidate_id,
                          state.head_sha)
        if isinstance(plan, str):
            raise CheckoutError(plan, reason="missing_commit")
        mismatch = await self.builder.rebuild(project.name, token=token, plan=plan)
        if mismatch is not None:
            raise CheckoutError(mismatch, reason="missing_commit")
        log.info("rebuilt %s in this host's mirror: %s", plan.describe(), plan.expected_sha[:12])
