"""The merge queue's I/O shell around the pure decider (decide.py): one queue per project and base branch,
stored as one document (bot/store/merge_queue.py), advanced by `JOB_MERGE_QUEUE` jobs.

Events (a `/queue`, a push to a queued PR, its close, ...) are applied and saved at once (`submit`), then
a job is queued. A job run (`run`), under a lock per queue in this process and compare-and-swap on the
document across processes, repeats: load; observe what changed outside (the base tip, the verdicts of
the candidates being tested); apply; `resume` (what was under way: after a kill it is done again) and
`advance`; SAVE; then perform the actions, whose results are the next round's events. Every action is
idempotent: a build makes the same commit from the same inputs, a validation of one try of a candidate is
joined (its `subject_ref`), and a landing is claimed per candidate and PR before its merge request, a claim
found again looking the merge up instead of sending it twice. So a SIGKILL anywhere resumes, and nothing
lands twice; nothing lands untested because the decider lands only a passed candidate and this shell
merges only when the base's real tree is the one the candidate was tested on, pinned to the tested heads.

A candidate's validation has no GitHub check run (its commit exists only in the mirror); the queue
reports on the PRs instead: a "Merge queue" check run on each queued head (with a Dequeue button) and
one line in the sticky comment.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from gidgethub import BadRequest, RateLimitExceeded

from bot.events import EventBus, JobWakeup
from bot.github.comments import marker
from bot.github.github_app import GitHubApp, RepoGitHub
from bot.github.types import PullRequest
from bot.models import (JOB_MERGE_QUEUE, SUBJECT_QUEUE_CANDIDATE, VALIDATION_ACTIVE, Project, ValidationState, new_id,
                        utcnow)
from bot.store import ClaimedJob, Store
from bot.store.leases import held, run_once
from bot.store.merge_queue import fitting_key
from pipeline.merge.service import MergeService
from pipeline.merge_queue.admission import (Admission, admission, approvals, method_refusal, protection_readable,
                                            required_approvals, strict)
from pipeline.merge_queue.candidates import Built, CandidateBuilder
from pipeline.merge_queue.codec import queue_from_document, queue_to_document
from pipeline.merge_queue.decide import (LAND_DEFER_SECONDS, acknowledgement, advance, announcement_failed,
                                         answer_is_final, apply, outbox_last, positions, resume, unacknowledged)
from pipeline.merge_queue.model import (
    LANDING, RETRYING, TESTING, Action, AnnounceFailed, BaseChanged, BaseMoved, Build, Cancel, Candidate,
    CandidateBuilt, CandidateConflicted, CandidateFailed, CandidatePassed, CouldNotTest, Dequeued, Eject, Enqueued,
    Event, HeadPushed, Land, LandDeferred, Landed, LandRefused, NoteFlaky, PullClosed, Queue, QueueConfig, Remove,
    RetryStep, Validate,
)
from pipeline.merge_queue.rebuild import candidate_of_validation_ref, candidate_ref, landing_key, validation_ref
from pipeline.merge_queue.report import (DEQUEUE_BUTTON, QUEUE_CHECK_NAME, ejected_comment, ejected_output,
                                         finished_line, landed_output, landed_untested_output, merge_refused, not_enabled, position_text,
                                         queue_comment_line, queue_external_id, queued_output, removed_comment,
                                         removed_output)
from pipeline.merge_queue.restore import CandidateRestorer
from pipeline.repo_config.effective import effective_config
from pipeline.repo_config.merge_queue_block import MergeQueueSettings
from pipeline.repo_config.nodes import CONFIG_PATH
from pipeline.repo_config.parse import ConfigFileError
from pipeline.repo_config.reading import project_settings, read_repo_config
from pipeline.report.comment import with_queue_line
from pipeline.validation.buttons import ACTION_FIX, ACTIONS
from pipeline.validation.service import ValidationService
from pipeline.workspace.errors import CheckoutError

log = logging.getLogger(__name__)

MAX_ROUNDS = 200
TAIL_CHARS = 3000
# One process at a time advances a queue (the in-process lock is per process): a job that finds the lease
# taken is queued again this much later, for what the holder may have read before it was saved.
QUEUE_LEASE_TTL = timedelta(seconds=15)  # a killed holder delays the next process this long at most
BUSY_RETRY_SECONDS = 5.0
SWEEP_LEASE = "merge-queue-sweep"
SWEEP_LEASE_TTL = timedelta(seconds=60)
BROKEN_BACKOFF_SECONDS = 15.0
BROKEN_BACKOFF_MAX_SECONDS = 600.0
# A candidate this host's mirror lacks and cannot make now (GitHub away, say): its landing is tried again then.
LAND_ELSEWHERE_RETRY_SECONDS = 30.0
UNTESTED_WARN_EVERY = 5  # a candidate that could not be tested: a warning the first time and every so many


def queue_lease(project_id: str, base_ref: str) -> str:
    return fitting_key(f"merge-queue:{project_id}:{base_ref}")


def left_marker(base_ref: str, seq: int) -> str:
    """The hidden marker of the comment saying why a queue entry left: said once, however often it is tried."""
    return marker("merge-queue-left", f"{hashlib.sha256(base_ref.encode()).hexdigest()[:12]}-{seq}")


def queue_config(settings: MergeQueueSettings) -> QueueConfig:
    return QueueConfig(method=settings.method, batch_size=settings.batch_size, max_parallel=settings.max_parallel,
                       flaky_retries=settings.flaky_retries)


def could_not_run(state: ValidationState) -> str | None:
    """Why a candidate's validation that ended says nothing of its tree (the sandbox away, the job died,
    the checkout failed, someone else cancelled it); None: it ran, its verdict stands."""
    if state.conclusion in ("success", "neutral"):
        return None
    if state.conclusion == "cancelled":
        return state.title or "it was cancelled"
    results = state.test_results or {}
    if results.get("config_error"):  # read from the base: every PR would fail on it
        return f"{CONFIG_PATH} on the base is invalid: {results['config_error']}"
    if results.get("error"):
        return str(results["error"])
    steps = results.get("steps") or []
    failed = next((s for s in steps if s.get("status") not in ("passed", "skipped", "restored")), None)
    if failed is not None and failed.get("stage") == "checkout":
        return f"the checkout failed: {str(failed.get('output_tail') or failed.get('detail') or '').strip()[-300:]}"
    return None


def broken_backoff(c: Candidate) -> float:
    """Seconds to wait, after its validation could not run, before a candidate is built and tried again."""
    return min(BROKEN_BACKOFF_SECONDS * 2 ** (c.attempt - 1), BROKEN_BACKOFF_MAX_SECONDS)


def verdict_of(candidate: Candidate, state: ValidationState) -> Event | None:
    """The event of a candidate's validation that ended (None: still running, or a validation of another
    commit, as of an older queue's candidate of the same id). "Nothing to validate" (no steps configured)
    passes: the queue then only serialises the merges."""
    if state.status in VALIDATION_ACTIVE or state.head_sha != candidate.built_sha:
        return None
    candidate_id = candidate.id
    if state.conclusion in ("success", "neutral"):
        return CandidatePassed(candidate_id)
    steps = (state.test_results or {}).get("steps") or []
    failed = next((s for s in steps if s.get("status") not in ("passed", "skipped")), None)
    if failed is not None:
        return CandidateFailed(candidate_id, str(failed.get("name") or "validation"),
                               str(failed.get("output_tail") or "")[-TAIL_CHARS:])
    reason = (state.test_results or {}).get("error") or state.title or state.conclusion or "failed"
    return CandidateFailed(candidate_id, "validation", str(reason)[-TAIL_CHARS:])


class MergeQueueService:
    def __init__(self, store: Store, github: GitHubApp, bus: EventBus, wakeup: JobWakeup,
                 validations: ValidationService, merges: MergeService, builder: CandidateBuilder, *,
                 agent_configured: Callable[[Project], bool], public_url: str,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.github = github
        self.bus = bus
        self.wakeup = wakeup
        self.validations = validations
        self.merges = merges
        self.builder = builder
        self.agent_configured = agent_configured
        self.public_url = public_url
        self.clock = clock
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._shown: dict[tuple[str, int, str], tuple[int, str]] = {}  # (project, pr, head) -> (check run, text)
        self._listener: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.restorer = CandidateRestorer(store.merge_queues, builder)
        # of the queues' leases; the unique part first: a long hostname is what the cut to 64 drops
        self.holder = f"{new_id()[:8]}:{os.getpid()}:{socket.gethostname()}"[:64]

    def queue_url(self, project: Project) -> str:
        """The dashboard's page of the project's queues (a "Merge queue" check run's details link)."""
        return f"{self.public_url.rstrip('/')}/projects/{project.name}/queue"

    def repo(self, project: Project) -> RepoGitHub:
        return self.github.repo(project.installation_id, project.name)

    async def settings_at(self, project: Project, repo: RepoGitHub, sha: str | None) -> MergeQueueSettings:
        """The queue's settings as the base's config file (at `sha`) and the project's settings make them."""
        try:
            file = await read_repo_config(repo, sha)
        except ConfigFileError:
            file = None
        return effective_config(file, project_settings(project)).merge_queue

    # ---- entering and leaving ------------------------------------------------------------------

    async def enqueue(self, project: Project, number: int, *, by: str, pull: PullRequest | None = None) -> str | None:
        """Put the PR in its base's queue; None when it is (or was already) queued, else why not."""
        repo = self.repo(project)
        pull = pull or await repo.pulls.get(number)
        tip = await repo.repos.branch_sha(pull.base_ref)
        settings = await self.settings_at(project, repo, tip)
        if not settings.enabled:
            return not_enabled(pull.base_ref)
        verdict = await self.admission(repo, pull, method=settings.method)
        if not verdict.allowed:
            return verdict.reason
        validated_tree = await self._own_verdict_tree(project, repo, pull)
        await self.submit(project, pull.base_ref, Enqueued(pull.number, pull.head_sha, by, self.clock(),
                                                           validated_tree))
        return None

    async def admission(self, repo: RepoGitHub, pull: PullRequest, *, method: str) -> Admission:
        """GitHub's own answers on whether branch protection and the repository's merge settings would let
        the PR merge with `method`."""
        required = await self.merges.required_checks(repo, pull.base_ref)
        readable = True
        try:
            protection: dict[str, Any] | None = await repo.repos.protection(pull.base_ref)
        except BadRequest as exc:
            if exc.status_code not in (403, 404):
                raise
            protection = None
            readable = protection_readable(exc.status_code, str(exc.args[0]) if exc.args else "")
        needed = required_approvals(protection)
        approved = 0
        if needed:
            dismiss = bool(((protection or {}).get("required_pull_request_reviews") or {}).get("dismiss_stale_reviews"))
            approved = approvals(await repo.pulls.reviews(pull.number), pull.head_sha, dismiss_stale=dismiss)
        own = self.merges.own_check()
        others = [c for c in required.checks if not (c.context == own.context and c.app_id in (None, own.app_id))]
        check_runs = await repo.check_runs.for_ref(pull.head_sha) if others else []
        statuses = await repo.check_runs.statuses(pull.head_sha) if others else []
        return admission(pull, required=required, approvals_needed=needed, approved=approved,
                         check_runs=check_runs, statuses=statuses, own_check=own, protection_read=readable,
                         up_to_date=strict(protection), method=method,
                         method_refused=method_refusal(method, await repo.repos.get()))

    async def _own_verdict_tree(self, project: Project, repo: RepoGitHub, pull: PullRequest) -> str | None:
        """The tree of the PR's head when its own validation passed: the decider reuses that verdict for a
        candidate of the same tree (the PR is up to date with the base and alone in its batch)."""
        own = await self.store.validations.latest_for_head(project.id, pull.head_sha, pr_number=pull.number)
        if own is None or own.conclusion != "success":
            return None
        return await repo.repos.commit_tree(pull.head_sha)

    async def enter_after_validation(self, project: Project, state: ValidationState, repo_config: Any) -> bool:
        """Auto-merge of a green head with the queue enabled: the PR enters the queue instead of merging."""
        if not effective_config(repo_config, project_settings(project)).merge_queue.enabled:
            return False
        refusal = await self.enqueue(project, state.pr_number, by="auto-merge")
        if refusal is not None:
            await self.repo(project).comments.create(
                state.pr_number, f"Auto-merge is on, but the PR was not queued: {refusal}.")
        return True

    async def submit(self, project: Project, base_ref: str, *events: Event) -> None:
        """Apply `events` to the queue of `base_ref` and save it, then queue a job to advance it."""
        while True:
            stored = await self.store.merge_queues.load(project.id, base_ref)
            if stored is None:
                if not any(isinstance(e, Enqueued) for e in events):
                    return  # no queue: nothing to leave
                queue, version = await self._new_queue(project, base_ref), 0
            else:
                queue, version = queue_from_document(stored.state), stored.version
            for event in events:
                queue = apply(queue, event)
            if await self.store.merge_queues.save(project.id, base_ref, queue_to_document(queue), version=version,
                                                  active=True):
                self._saved(project, queue, active=True)
                await self.kick(project.id, base_ref, f"v{version + 1}")
                return

    async def leave(self, project: Project, base_ref: str, event: HeadPushed | PullClosed | BaseChanged) -> None:
        """An event that takes a PR out (a push, a close, a base change), if it is queued."""
        stored = await self.store.merge_queues.load(project.id, base_ref)
        if stored is None:
            return
        if queue_from_document(stored.state).entry(event.pr) is not None:
            await self.submit(project, base_ref, event)

    async def dequeue(self, project: Project, number: int, *, reason: str) -> bool:
        """`/dequeue` (or the Dequeue button): False when the PR is in no queue."""
        for stored in await self.store.merge_queues.of_project(project.id):
            if queue_from_document(stored.state).entry(number) is not None:
                await self.submit(project, stored.base_ref, Dequeued(number, reason))
                return True
        return False

    def _saved(self, project: Project, queue: Queue, *, active: bool) -> None:
        self.bus.publish("merge_queue.updated", project_id=project.id, base_ref=queue.base_ref, active=active,
                         queued=[e.pr for e in queue.queued()], base_sha=queue.base_sha)

    async def _new_queue(self, project: Project, base_ref: str) -> Queue:
        repo = self.repo(project)
        tip = await repo.repos.branch_sha(base_ref)
        if tip is None:
            raise LookupError(f"{project.name} has no branch {base_ref}")
        return Queue(repo=project.name, base_ref=base_ref, base_sha=tip, base_tree=await repo.repos.commit_tree(tip))

    # ---- the job -------------------------------------------------------------------------------

    async def kick(self, project_id: str, base_ref: str, why: str, *, after: float = 0.0) -> None:
        """Queue a job to advance the queue, `after` seconds from now (`why` deduplicates it: the same reason
        queues one job)."""
        await self.store.jobs.enqueue(JOB_MERGE_QUEUE, args={"project_id": project_id, "base_ref": base_ref},
                                      dedupe_key=f"{JOB_MERGE_QUEUE}:{project_id}:{base_ref}:{why}"[:255],
                                      run_after=utcnow() + timedelta(seconds=after) if after else None,
                                      max_attempts=10)
        self.wakeup.wake(JOB_MERGE_QUEUE)

    async def run_job(self, job: ClaimedJob) -> None:
        await self.run(job.args["project_id"], job.args["base_ref"])

    async def resume_all(self) -> None:
        """At start: every queue with something under way goes on (what a killed process left)."""
        started = new_id()[:8]
        for project_id, base_ref in await self.store.merge_queues.active():
            await self.kick(project_id, base_ref, f"start-{started}")

    async def run(self, project_id: str, base_ref: str) -> None:
        lock = self._locks.setdefault((project_id, base_ref), asyncio.Lock())
        async with lock:
            project = await self.store.projects.get_project(project_id)
            if project is None or project.installation_id is None:
                return
            # Under the queue's lease only: another process's run would resume (send again) what this one does.
            async with held(self.store.leases, queue_lease(project_id, base_ref), self.holder,
                            ttl=QUEUE_LEASE_TTL) as mine:
                if mine:
                    await self._run(project, base_ref)
                    return
            bucket = int(self.clock() // BUSY_RETRY_SECONDS)
            await self.kick(project_id, base_ref, f"busy-{bucket}", after=BUSY_RETRY_SECONDS)

    def start_sweeping(self, interval: float) -> None:
        """Every `interval` seconds (0: never), a job for each active queue: a queue whose wake-up was lost
        (an event of another process, a failed kick, a job out of attempts) goes on all the same."""
        if interval > 0 and self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_every(interval), name="merge-queue-sweep")

    async def _sweep_every(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)  # at start, `resume_all` did it
            try:
                await run_once(self.store.leases, SWEEP_LEASE, self.holder, ttl=SWEEP_LEASE_TTL,
                               work=lambda: self.sweep(interval), doing="merge queue sweep", level=logging.DEBUG)
            except Exception:  # noqa: BLE001 - the database is away, say: the next round tries again
                log.exception("merge queue sweep failed")

    async def sweep(self, interval: float) -> int:
        """A job for each active queue, once per `interval` (the dedupe key's time bucket); how many."""
        active = await self.store.merge_queues.active()
        bucket = int(self.clock() // interval)
        for project_id, base_ref in active:
            await self.kick(project_id, base_ref, f"sweep-{bucket}")
        return len(active)

    async def _run(self, project: Project, base_ref: str) -> None:
        repo = self.repo(project)
        pending: list[Event] = []
        first = True
        settings: MergeQueueSettings | None = None
        for _ in range(MAX_ROUNDS):
            stored = await self.store.merge_queues.load(project.id, base_ref)
            if stored is None:
                return
            queue = queue_from_document(stored.state)
            if settings is None:
                settings = await self.settings_at(project, repo, queue.base_sha)
            config = queue_config(settings)
            loaded, observed = queue, await self._observe(project, repo, queue)
            for event in pending + observed:
                queue = apply(queue, event)
            before = queue
            # what was recorded but not done: after a kill (`resume`), or applied from outside (`_observe`)
            now = self.clock()
            actions: list[Action] = list(resume(queue, config, now) if first else unacknowledged(queue, now))
            queue, decided = advance(queue, config, now)
            actions += decided
            active = bool(queue.entries or queue.candidates)
            if not await self.store.merge_queues.save(project.id, base_ref, queue_to_document(queue),
                                                      version=stored.version, active=active):
                continue  # another process saved first: read again, apply the same events again
            first, pending = False, []
            for event in observed:  # said once: by the round whose save recorded it
                if isinstance(event, CouldNotTest) and (c := loaded.candidate(event.candidate_id)) is not None:
                    await self._could_not_test(project, base_ref, c, event.reason)
            await self._show(project, repo, queue)
            if actions:
                pending = await self._perform(project, repo, before, queue, config, actions)
            self._saved(project, queue, active=active)  # once what it decided is done
            if not pending:
                return
        log.error("merge queue of %s %s: still busy after %d rounds; a later job goes on", project.name, base_ref,
                  MAX_ROUNDS)

    async def _observe(self, project: Project, repo: RepoGitHub, queue: Queue) -> list[Event | Cancel]:
        """What changed outside the queue: the base tip, and the candidates' validations that ended. A
        validation that could not run fails nobody: its candidate is dropped (and so built again) once its
        backoff has passed."""
        events: list[Event | Cancel] = []
        # While a landing is under way (resumed after a kill, say) the tip it made is ours: `Landed` records it.
        landing = any(c.status == LANDING for c in queue.candidates)
        tip = None if landing else await repo.repos.branch_sha(queue.base_ref)
        if tip is not None and tip != queue.base_sha and tip not in queue.own_tips:
            events.append(BaseMoved(tip, await repo.repos.commit_tree(tip)))
        for c in queue.candidates:
            if c.status in (TESTING, RETRYING):
                state = await self.store.validations.of_subject_ref(project.id, SUBJECT_QUEUE_CANDIDATE,
                                                                    validation_ref(queue.base_ref, c))
                if state is None or (verdict := verdict_of(c, state)) is None:
                    continue
                broken = could_not_run(state)
                if broken is None:
                    events.append(verdict)
                    continue
                if c.retry_at is None:
                    retry_at = (state.completed_at or utcnow()).timestamp() + broken_backoff(c)
                    events.append(CouldNotTest(c.id, broken, retry_at))  # reported once saved
                wait = broken_backoff(c) - (self.clock() - (state.completed_at or utcnow()).timestamp())
                if wait <= 0:
                    events.append(Cancel(c.id, f"its validation could not run ({broken}): building it again"))
                else:
                    await self.kick(project.id, queue.base_ref, f"broken-{c.id}-{c.retries_used}", after=wait)
        return events

    async def _could_not_test(self, project: Project, base_ref: str, c: Candidate, reason: str) -> None:
        tries = c.untested_tries + 1
        if tries == 1 or tries % UNTESTED_WARN_EVERY == 0:
            log.warning("merge queue of %s %s: candidate %d (%s) could not be tested (%d times): %s", project.name,
                        base_ref, c.id, ", ".join(f"#{pr}" for pr in c.prs), tries, reason)
        if tries == 1:
            await self.store.audit.record("merge_queue.could_not_test", actor="merge-queue",
                                          installation_id=project.installation_id, project_id=project.id,
                                          details={"pr": c.prs[0], "prs": list(c.prs), "base_ref": base_ref,
                                                   "why": reason[:500]})

    # ---- performing the actions ------------------------------------------------------------------

    async def _perform(self, project: Project, repo: RepoGitHub, before: Queue, queue: Queue, config: QueueConfig,
                       actions: list[Action]) -> list[Event]:
        events: list[Event] = []
        for action in outbox_last(actions):
            if acknowledgement(action) is not None:
                try:
                    await self._perform_outbox(project, repo, before, queue, action)
                except Exception as exc:  # noqa: BLE001 - tried again, or given up on: the queue goes on
                    events.append(await self._announce_failed(project, queue, action, exc))
                    continue
            elif isinstance(action, Build):
                events.append(await self._build(project, queue.base_ref, action.candidate))
            elif isinstance(action, (Validate, RetryStep)):
                c = queue.candidate(action.candidate.id) or action.candidate
                await self._validate(project, queue.base_ref, c)
            elif isinstance(action, Land):
                events += await self._land(project, repo, queue, action)
            elif isinstance(action, NoteFlaky):
                for pr in action.prs:
                    await repo.comments.create(pr, f"Merge queue: `{action.step}` failed, then passed when run "
                                                   "again: noted as flaky, not ejected.")
            if (done := acknowledgement(action)) is not None:
                events.append(done)  # kept in the queue until now: after a crash `resume` does it again
        return events

    async def _perform_outbox(self, project: Project, repo: RepoGitHub, before: Queue, queue: Queue,
                              action: Action) -> None:
        if isinstance(action, Cancel):
            await self._cancel(project, before, action)
        elif isinstance(action, Eject):
            await self._ejected(project, repo, queue.base_ref, action)
        elif isinstance(action, Remove):
            await self._finish_pr(project, repo, queue.base_ref, action.pr, action.head_sha, "neutral",
                                  removed_output(action.reason), comment=removed_comment(action.reason),
                                  comment_marker=left_marker(queue.base_ref, action.seq))

    async def _announce_failed(self, project: Project, queue: Queue, action: Action, exc: Exception) -> Event:
        """An outbox action failed: tried again once its backoff has passed (a job wakes the queue then), or
        (GitHub will not change its answer, or it failed too often) given up on, with a warning and an audit
        record."""
        final = isinstance(exc, BadRequest) and answer_is_final(
            exc.status_code, str(exc), rate_limited=isinstance(exc, RateLimitExceeded))
        now = self.clock()
        event = announcement_failed(queue, action, retryable=not final, now=now)
        if isinstance(event, AnnounceFailed):
            wait = event.retry_at - now
            log.info("merge queue of %s %s: %s failed, trying again in %.0f s: %r", project.name, queue.base_ref,
                     type(action).__name__, wait, exc)
            # one job wakes the queue then (announcements failing in the same second share it)
            await self.kick(project.id, queue.base_ref, f"announce-{event.retry_at:.0f}", after=wait)
            return event
        pr = action.pr if isinstance(action, (Eject, Remove)) else None
        log.warning("merge queue of %s %s: gave up on the %s of %s: %r", project.name, queue.base_ref,
                    type(action).__name__, f"#{pr}" if pr else "a candidate", exc)
        await self.store.audit.record("merge_queue.announce_failed", actor="merge-queue",
                                      installation_id=project.installation_id, project_id=project.id,
                                      details={"pr": pr, "base_ref": queue.base_ref,
                                               "what": type(action).__name__.lower(), "why": str(exc)[:500]})
        return event

    async def _build(self, project: Project, base_ref: str, c: Candidate) -> Event:
        token = await self.github.installation_token(project.installation_id)  # type: ignore[arg-type]
        merges = list(zip(c.ahead + c.prs, c.heads, strict=True))
        result = await self.builder.build(project.name, token=token, base_ref=base_ref, base_sha=c.base_sha,
                                          merges=merges, ahead=len(c.ahead), ref=candidate_ref(base_ref, c.id))
        if isinstance(result, Built):
            return CandidateBuilt(c.id, result.sha, result.tree, result.expected_base_tree)
        return CandidateConflicted(c.id, result.pr, result.output_tail)

    async def _validate(self, project: Project, base_ref: str, c: Candidate) -> None:
        assert c.built_sha is not None
        await self.validations.start_candidate(project, subject_ref=validation_ref(base_ref, c), pr_number=c.prs[-1],
                                               head_sha=c.built_sha, base_sha=c.base_sha, trigger="merge_queue")

    async def _cancel(self, project: Project, before: Queue, action: Cancel) -> None:
        c = before.candidate(action.candidate_id)
        if c is None or c.built_sha is None:
            return  # never validated
        state = await self.store.validations.of_subject_ref(project.id, SUBJECT_QUEUE_CANDIDATE,
                                                            validation_ref(before.base_ref, c))
        if state is not None and state.status in VALIDATION_ACTIVE:
            await self.validations.cancel(project, state, reason=action.reason)

    async def _land(self, project: Project, repo: RepoGitHub, queue: Queue, land: Land) -> list[Event]:
        c = land.candidate
        if not land.prs:
            return []
        if (missing := await self._candidate_here(project, queue, c)) is not None:
            # no verdict on the PRs: this host cannot make the tested commit now; a later job (maybe on the
            # host that built it) lands it
            started = await self._landing_started(project, repo, queue.base_ref, land)
            then = ("it may have begun landing: only a worker that can make it lands it" if started else
                    f"built and tested again if no worker can within {LAND_DEFER_SECONDS / 60:g} min")
            log.warning("merge queue of %s %s: candidate %d not landed from this host for now (%s): %s", project.name,
                        queue.base_ref, c.id, then, missing)
            bucket = int(self.clock() // LAND_ELSEWHERE_RETRY_SECONDS)
            await self.kick(project.id, queue.base_ref, f"land-{c.id}-{bucket}", after=LAND_ELSEWHERE_RETRY_SECONDS)
            return [LandDeferred(c.id, missing, self.clock(), started)]
        if land.method == "fast-forward":
            refused = await self._fast_forward(project, repo, queue.base_ref, land)
            if refused is None:
                assert c.built_sha is not None and c.built_tree is not None
                for pr, head in zip(land.prs, land.heads, strict=True):
                    await self._finish_pr(project, repo, queue.base_ref, pr, head, "success",
                                          landed_output(queue.base_ref, c.built_sha, pr, c.ahead + c.prs),
                                          comment=None)
                return [Landed(c.id, land.prs, c.built_sha, c.built_tree)]
            tip = await repo.repos.branch_sha(queue.base_ref)
            if "[rejected]" in refused or (tip and await repo.repos.commit_tree(tip)) != land.expected_tree:
                # not a fast-forward of the tip (the base moved, or our push landed before a kill and the base
                # moved since): merged already, or tested again on the new tip; merging would not help
                if merged := await self._merged_already(project, repo, queue.base_ref, land):
                    return merged
                return [LandRefused(c.id, f"{queue.base_ref} moved to {str(tip)[:7]}: {refused}")]
            for pr in land.prs:
                await repo.comments.create(pr, f"Merge queue: {refused}; merging it with the `merge` method instead.")
        method = "merge" if land.method == "fast-forward" else land.method
        return await self._merge_each(project, repo, queue.base_ref, land, method)

    async def _landing_started(self, project: Project, repo: RepoGitHub, base_ref: str, land: Land) -> bool:
        """Whether this landing may have merged one of its PRs already: the base's tip is the tested commit
        (a fast-forward pushed before a kill; its PRs are recorded after the push), or a PR whose landing
        was recorded (before its merge) is merged. A recorded landing whose merge never happened (a kill
        or an error before the PUT) does not count, nor does a PR someone merged by hand."""
        built = land.candidate.built_sha
        if built is not None and await repo.repos.branch_sha(base_ref) == built:
            return True
        key = landing_key(base_ref, land.candidate.id)
        for pr in land.prs:
            recorded = await self.store.merge_queues.landing(project.id, key, pr)
            if recorded is not None and (recorded.merged_sha or await repo.pulls.merge_commit(pr) is not None):
                return True
        return False

    async def _candidate_here(self, project: Project, queue: Queue, c: Candidate) -> str | None:
        """Make sure this host's mirror has the candidate's commit (the push and the trees need it), made again
        as it was built if not; None: it has, else why not."""
        assert c.built_sha is not None
        token = await self.github.installation_token(project.installation_id)  # type: ignore[arg-type]
        try:
            return await self.restorer.restore(project.name, queue, queue.base_ref, c.id, c.built_sha, token)
        except CheckoutError as exc:
            return str(exc)

    async def _merged_already(self, project: Project, repo: RepoGitHub, base_ref: str, land: Land) -> list[Event]:
        """A fast-forward that reached GitHub before a kill: every PR is merged (GitHub says so once its head
        is in the base). Empty when one is not."""
        c = land.candidate
        assert c.built_sha is not None and c.built_tree is not None
        merges = [await repo.pulls.merge_commit(pr) for pr in land.prs]
        if not land.prs or None in merges:
            return []
        for pr, head in zip(land.prs, land.heads, strict=True):
            await self._finish_pr(project, repo, base_ref, pr, head, "success",
                                  landed_output(base_ref, c.built_sha, pr, c.ahead + c.prs), comment=None)
        return [Landed(c.id, land.prs, c.built_sha, c.built_tree)]

    async def _fast_forward(self, project: Project, repo: RepoGitHub, base_ref: str, land: Land) -> str | None:
        c = land.candidate
        assert c.built_sha is not None
        if await repo.repos.branch_sha(base_ref) == c.built_sha:
            return None  # pushed before a kill
        token = await self.github.installation_token(project.installation_id)  # type: ignore[arg-type]
        refused = await self.builder.push_fast_forward(project.name, token=token, sha=c.built_sha, base_ref=base_ref)
        if refused is None:
            for pr in land.prs:
                await self.store.merge_queues.claim_landing(project.id, landing_key(base_ref, c.id), pr)
                await self.store.merge_queues.landed(project.id, landing_key(base_ref, c.id), pr, c.built_sha)
        return refused

    async def _merge_each(self, project: Project, repo: RepoGitHub, base_ref: str, land: Land,
                          method: str) -> list[Event]:
        """`PUT pulls/{n}/merge` of each PR, pinned to its tested head, in order; each only while the base's
        tree is the one the candidate expects there."""
        c = land.candidate
        key = landing_key(base_ref, c.id)
        assert c.built_sha is not None
        trees = await self.builder.merge_trees(project.name, c.built_sha, len(c.ahead + c.prs))
        order = c.ahead + c.prs
        expected = land.expected_tree
        events: list[Event] = []
        for pr, head in zip(land.prs, land.heads, strict=True):
            merged: str | None = None
            checked_tip: str | None = None  # the tip whose tree was checked before this process's PUT
            if not await self.store.merge_queues.claim_landing(project.id, key, pr):
                known = await self.store.merge_queues.landing(project.id, key, pr)
                merged = (known.merged_sha if known is not None else None) or await repo.pulls.merge_commit(pr)
            if merged is None:
                tip = await repo.repos.branch_sha(base_ref)
                tip_tree = await repo.repos.commit_tree(tip) if tip else None
                if tip_tree != expected:
                    events.append(LandRefused(c.id, f"{base_ref} moved to {str(tip)[:7]}, not the tree tested"))
                    return events
                checked_tip = tip
                try:
                    result = await repo.pulls.merge(pr, sha=head, method=method)
                except BadRequest as exc:
                    message = str(exc.args[0]) if exc.args else str(exc.status_code)
                    events.append(LandRefused(c.id, merge_refused(exc.status_code, message), pr=pr))
                    return events
                merged = result.sha or await repo.pulls.merge_commit(pr)
                if merged is None:
                    raise RuntimeError(f"#{pr} was merged but GitHub named no merge commit")
                await self.store.merge_queues.landed(project.id, key, pr, merged)
            tree = await repo.repos.commit_tree(merged)
            events.append(Landed(c.id, (pr,), merged, tree))
            expected = trees[order.index(pr)]
            untested = await self._untested_landing(repo, merged, tree, expected, checked_tip, method)
            if untested is not None:
                await self._landed_untested(project, repo, base_ref, pr, head, merged, untested)
                continue
            await self._finish_pr(project, repo, base_ref, pr, head, "success",
                                  landed_output(base_ref, merged, pr, c.ahead + c.prs), comment=None)
        return events

    @staticmethod
    async def _untested_landing(repo: RepoGitHub, merged: str, tree: str, expected: str, checked_tip: str | None,
                                method: str) -> str | None:
        """Why what a merge made is not what the candidate tested (the PUT has no precondition on the base:
        a push between the check and the merge lands under it); None: it is."""
        if checked_tip is not None and method != "rebase":  # a rebase's last commit has the PR's own as parent
            parents = await repo.repos.commit_parents(merged)
            if parents[:1] != (checked_tip,):
                return f"GitHub merged it onto {parents[0][:7] if parents else 'nothing'}, not onto {checked_tip[:7]}"
        if tree != expected:
            return "its tree differs from the one tested"
        return None

    async def _landed_untested(self, project: Project, repo: RepoGitHub, base_ref: str, pr: int, head: str,
                               merged: str, why: str) -> None:
        log.warning("merge queue of %s %s: #%d landed as %s, but %s", project.name, base_ref, pr, merged[:7], why)
        await self.store.audit.record("merge_queue.landed_untested", actor="merge-queue",
                                      installation_id=project.installation_id, project_id=project.id,
                                      details={"pr": pr, "base_ref": base_ref, "merged_sha": merged, "why": why})
        output = landed_untested_output(base_ref, merged, why)
        await self._finish_pr(project, repo, base_ref, pr, head, "neutral", output,
                              comment=f"Merge queue: {output['summary']}",
                              comment_marker=marker("merge-queue-landed-untested", merged))

    # ---- what the PRs show -------------------------------------------------------------------------

    async def _ejected(self, project: Project, repo: RepoGitHub, base_ref: str, eject: Eject) -> None:
        actions = [{"label": ACTIONS[ACTION_FIX][0], "description": ACTIONS[ACTION_FIX][1],
                    "identifier": ACTION_FIX}] if self.agent_configured(project) else []
        comment = ejected_comment(base_ref, eject.reason, eject.failing_step, eject.output_tail)
        await self._finish_pr(project, repo, base_ref, eject.pr, eject.head_sha, "failure",
                              ejected_output(eject.reason, eject.failing_step, eject.output_tail),
                              comment=comment, actions=actions, comment_marker=left_marker(base_ref, eject.seq))

    async def _check_run(self, repo: RepoGitHub, project: Project, base_ref: str, pr: int, head: str,
                         output: dict[str, str], *, finished_too: bool = False) -> int:
        """The PR's "Merge queue" check run: the one running, else (`finished_too`: to complete it again, as
        after a crash) the last completed one, else a new one."""
        known = self._shown.get((project.id, pr, head))
        if known is not None:
            return known[0]
        external_id = queue_external_id(base_ref, pr)
        ours = [run for run in await repo.check_runs.for_ref(head)
                if run.get("name") == QUEUE_CHECK_NAME and run.get("external_id") == external_id]
        for run in ours:
            if run.get("status") != "completed":  # made before a restart: it says what it said then
                await repo.check_runs.update(int(run["id"]), output, actions=[DEQUEUE_BUTTON])
                return int(run["id"])
        if finished_too and ours:
            return max(int(run["id"]) for run in ours)
        return await repo.check_runs.create(head_sha=head, details_url=self.queue_url(project),
                                            external_id=external_id, title=output["title"],
                                            summary=output["summary"], name=QUEUE_CHECK_NAME,
                                            actions=[DEQUEUE_BUTTON])

    async def _show(self, project: Project, repo: RepoGitHub, queue: Queue) -> None:
        """Each queued PR's check run and comment line say where it is, when that changed."""
        for pr, position in positions(queue).items():
            entry = queue.entry(pr)
            assert entry is not None
            text = position_text(position, queue.base_ref, self.clock())
            key = (project.id, pr, entry.head_sha)
            if self._shown.get(key, (0, ""))[1] == text:
                continue
            output = queued_output(position, queue.base_ref, self.clock())
            run_id = await self._check_run(repo, project, queue.base_ref, pr, entry.head_sha, output)
            if key in self._shown:
                await repo.check_runs.update(run_id, output, actions=[DEQUEUE_BUTTON])
            self._shown[key] = (run_id, text)
            await self._comment_line(project, repo, pr, queue_comment_line(text))

    async def _finish_pr(self, project: Project, repo: RepoGitHub, base_ref: str, pr: int, head: str,
                         conclusion: str, output: dict[str, str], *, comment: str | None,
                         actions: list[dict[str, str]] | None = None, comment_marker: str | None = None) -> None:
        """The PR left the queue (landed, ejected, removed): its check run completes, its line says so, and
        `comment` (once, by `comment_marker`) says why. Done again after a crash, it adds nothing."""
        run_id = await self._check_run(repo, project, base_ref, pr, head, output, finished_too=True)
        await repo.check_runs.complete(run_id, conclusion=conclusion, output=output, actions=actions or [])
        self._shown.pop((project.id, pr, head), None)
        await self._comment_line(project, repo, pr, finished_line(output["title"]))
        if comment and comment_marker:  # done again after a crash: said once
            await repo.comments.post_once(pr, comment_marker, f"{comment_marker}\n{comment}")
        elif comment:
            await repo.comments.create(pr, comment)

    async def _comment_line(self, project: Project, repo: RepoGitHub, pr: int, line: str) -> None:
        comment_id = await self.store.validations.comment_id(project.id, pr)
        if comment_id is None:
            return  # no sticky comment yet: the check run says it
        body = await repo.comments.body(pr, comment_id)
        if body is not None and (new := with_queue_line(body, line)) != body:
            await repo.comments.edit(comment_id, new)

    # ---- listening ---------------------------------------------------------------------------------

    def start_listening(self) -> None:
        """A candidate's validation that ends advances its queue."""
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen(), name="merge-queue-listener")

    async def _listen(self) -> None:
        with self.bus.subscribe() as events:
            while True:
                event = await events.get()
                if event.name != "validation.completed" or event.remote or event.data.get("pr_number") is not None:
                    continue
                try:
                    state = await self.store.validations.get(event.data["validation_id"])
                    named = candidate_of_validation_ref(state.subject_ref if state else None)
                    if state is not None and state.subject == SUBJECT_QUEUE_CANDIDATE and named is not None:
                        await self.kick(state.project_id, named[0], f"validation-{state.id}")
                except Exception:  # noqa: BLE001 - the next job of the queue reads the verdict all the same
                    log.exception("merge queue: could not follow %s", event.data)

    async def close(self) -> None:
        for task in (self._listener, self._sweeper):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

