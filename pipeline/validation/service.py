"""The GitHub shell around the pipeline: a PR head becomes a validation, a Check Run and one sticky
PR comment.

`start` runs in the webhook's job and does only what must be immediate: end older heads' runs, record
the validation, create its check run `in_progress`, queue the validation job. `run_job` does the work.
`revalidate` is what a command, a button and the dashboard share: validate a PR's current head again.
`start_subject` does what `start` does for a commit a merge queue made to merge PRs (a group of
GitHub's queue): the same pipeline, sandbox and check run, without the PR's comment, buttons or merging.

One head, one check run: its creation is claimed in the database (ValidationStore.begin), made at most
once on GitHub where an earlier try may have made it (CheckRuns.create_once adopts that one), and what
a killed process left half done is settled by `recover_check_runs`, at start and every minute, in one process
at a time (the database lease RECOVERY_LEASE).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import weakref
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from gidgethub import BadRequest

from bot import labels
from bot.events import EventBus, JobWakeup
from bot.github.check_runs import CheckRuns, Output
from bot.github.github_app import GitHubApp, RepoGitHub
from bot.github.repos import Comparison
from bot.github.types import PullRequest
from bot.models import (JOB_QUEUED, JOB_RUNNING, JOB_VALIDATE, SUBJECT_PULL_REQUEST, SUBJECT_QUEUE_CANDIDATE,
                        VALIDATION_ACTIVE, Project, ValidationState, new_id, seconds_between, utcnow)
from bot.redact import PROCESS_REDACTOR, Redactor
from bot.store import ClaimedJob, Store
from bot.store.leases import run_once
from bot.store.tracked_pulls import PullRecorder
from bot.store.validations import CHECK_RUN_CLAIM_STALE
from pipeline.report.annotations import annotation_batches, changed_lines
from pipeline.report.check_run import (LIVE_TAIL_CHARS, check_run_images, check_run_output, in_progress_output,
                                       superseded_reason, waiting_output)
from pipeline.report.comment import (COMMENT_MARKER, PreviousResult, comment_heading, fit_comment, render_comment,
                                     render_not_run_comment, render_running_comment)
from pipeline.report.local import finding_json, findings_by_step
from pipeline.report.text import short_sha
from pipeline.results import RunOutcome, StepResult
from pipeline.workspace.checkout import CheckoutResult, Checkouts
from pipeline.workspace.errors import CheckoutError
from pipeline.workspace.mirror_compare import mirror_comparison
from pipeline.workspace.volumes import RunVolumes, Volume, VolumeUnavailable
from pipeline.merge.service import MergeService
from pipeline.repo_config.effective import effective_config
from pipeline.repo_config.parse import ConfigFileError, RepoConfig
from pipeline.repo_config.reading import CONFIG_PATH, project_settings, read_repo_config
from pipeline.sandbox.sandbox import SandboxUnavailable
from pipeline.ui_check.check import BrowserSetup
from pipeline.ui_check.screenshots import publicly_reachable, screenshot_url, screenshots_dir
from pipeline.validation.buttons import check_run_actions, recovered_actions
from pipeline.validation.gate import Gate, fork_gate
from pipeline.validation.subjects import PullHead, describe, group_gate, merged_pulls, without_secrets_note
from pipeline.validation.stages import PipelineRunner, RunPlan, planned_steps

log = logging.getLogger(__name__)

CANCEL_POLL_SECONDS = 5.0
RECOVERY_INTERVAL_SECONDS = CHECK_RUN_CLAIM_STALE.total_seconds()
# One process at a time recovers, across processes (two would race to adopt or create the same check run).
RECOVERY_LEASE = "check-run-recovery"
# A validation whose end was recorded this long ago without its check run settled: the one who recorded it is
# not telling GitHub any more (a job run again after a kill settles it then: `_settle_if_interrupted`).
INTERRUPTED_AFTER = timedelta(seconds=2)
RECOVERY_LEASE_TTL = timedelta(seconds=RECOVERY_INTERVAL_SECONDS)
NOTHING_TO_VALIDATE = (f"No setup, validate or analysis steps are configured: add `validate:` steps to "
                       f"{CONFIG_PATH} on the base branch, or set the project's commands in the dashboard.")


def recovered_output(state: ValidationState, details_url: str) -> tuple[str, dict[str, str]]:
    """(conclusion, output) of the check run of a validation that ended while no process reported it
    (the recovery completes it): as the validation ended, cancelled where nothing was recorded."""
    title = state.title or "Cancelled"
    summary = (f"{title}.\n\nCodegenApp was interrupted before it updated this check run: "
               f"[the validation's page]({details_url}) shows what it recorded.")
    return state.conclusion or "cancelled", {"title": title, "summary": summary}


def _saying(title: str) -> dict[str, str]:
    """A check run's output that only says `title` (its summary repeats it)."""
    return {"title": title, "summary": f"{title}."}


def previous_result(state: ValidationState | None) -> PreviousResult | None:
    """How an earlier validation of the PR ended, for its comment's "Previous:" line."""
    if state is None or state.conclusion is None:
        return None
    return PreviousResult(state.conclusion, state.head_sha, state.title)


def outcome_line(project: str, state: ValidationState, conclusion: str, title: str, seconds: float | None) -> str:
    """The one INFO line of how a validation ended: "acme/widgets#12 at abc1234: Failed in 1m 12s (...)"."""
    took = f" in {labels.duration(seconds)}" if seconds is not None else ""
    what = f"#{state.pr_number}" if of_pr_head(state) else f" {describe(state.subject, state.pr_number)}"
    return (f"validation {project}{what} at {short_sha(state.head_sha)}: "
            f"{labels.conclusion(conclusion)}{took} ({title})")


def of_pr_head(state: ValidationState) -> bool:
    """Whether the validation is of its PR's own head: only such a one has the PR's comment, its buttons
    and a merge (a merge queue's commit is none of the PR's heads)."""
    return state.subject == SUBJECT_PULL_REQUEST


def pr_of(state: ValidationState) -> int | None:
    """The PR the validation's events are about (what follows a PR, an agent run say, reads them); None
    for a merge queue's commit."""
    return state.pr_number if of_pr_head(state) else None


def running_seconds(state: ValidationState) -> float | None:
    """How long the validation has been running, from when it started (None: it never started)."""
    return None if state.started_at is None else seconds_between(state.started_at, utcnow())


def failed_checkout(exc: Exception, started: float) -> StepResult:
    """The checkout step that failed with `exc` (`started`: its time.monotonic() start)."""
    return StepResult("checkout", "checkout", "failed", time.monotonic() - started, detail=str(exc),
                      output_tail=str(exc))


class NotRevalidated(Exception):
    """Why a PR's head was not validated again (the PR is gone or closed), in words for its user."""

    def __init__(self, message: str, *, closed: bool) -> None:
        super().__init__(message)
        self.closed = closed


class ValidationService:
    def __init__(self, store: Store, github: GitHubApp, bus: EventBus, wakeup: JobWakeup, runner: PipelineRunner,
                 checkouts: Checkouts, merges: MergeService, *, volumes: RunVolumes,
                 agent_configured: Callable[[Project], bool], public_url: str, data_dir: Path,
                 chromium_path: str) -> None:
        """`volumes`: each run's workspace, a filesystem of its own. `agent_configured`: whether an agent run
        can start for a project (the "Fix with agent" button)."""
        self.store = store
        self.github = github
        self.bus = bus
        self.wakeup = wakeup
        self.runner = runner
        self.checkouts = checkouts
        self.volumes = volumes
        self.merges = merges
        self.agent_configured = agent_configured
        self.public_url = public_url
        self.data_dir = data_dir
        self.chromium_path = chromium_path
        self._running: dict[str, asyncio.Task[Any]] = {}
        self._recovery: asyncio.Task[None] | None = None
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{new_id()[:8]}"[:64]  # of the recovery's lease
        self._pr_locks: weakref.WeakValueDictionary[tuple[str, int], asyncio.Lock] = weakref.WeakValueDictionary()
        # Set by the composition root when the merge queue runs: auto-merge of a green head asks it first
        # (True: the PR entered the queue instead of being merged at once).
        self.enter_queue: Callable[[Project, ValidationState, RepoConfig | None], Awaitable[bool]] | None = None
        # Set likewise: before a queue candidate's run reads the mirror, make sure this host's mirror has its
        # commit (built by whichever process ran the queue; made again here, or CheckoutError says why not).
        self.restore_candidate: Callable[[Project, ValidationState, str | None], Awaitable[None]] | None = None

    def details_url(self, validation_id: str) -> str:
        return f"{self.public_url}/validations/{validation_id}"

    def repo(self, project: Project) -> RepoGitHub:
        return self.github.repo(project.installation_id, project.name)

    # ---- start (webhook path) ----------------------------------------------------------------------

    async def start(self, project: Project, pr: PullRequest, *, trigger: str, restart: bool = False,
                    claimer: str | None = None, actor: str | None = None,
                    record_pull: PullRecorder | None = None) -> ValidationState | None:
        """`claimer`: who asks, for the claim on creating the check run (ValidationStore.begin): the
        delivery id of a webhook-driven start, so that a retried job of that delivery may create it at
        once; None (other callers) draws a fresh id. `actor`: the login of the person who asked, if any.
        `record_pull` (PostgreSQL): the event's record of the PR, written with `begin`'s lock; None is
        returned when a newer event is recorded (nothing begun)."""
        # One start at a time per PR in this process (a new head's start then finds the check run of
        # the head it supersedes to cancel); across processes, only the holder of the claim taken in
        # `begin` creates the check run.
        lock = self._pr_locks.setdefault((project.id, pr.number), asyncio.Lock())
        async with lock:
            return await self._start(project, pr, trigger=trigger, restart=restart, claimer=claimer or new_id(),
                                     actor=actor, record_pull=record_pull)

    async def revalidate(self, project: Project, number: int, *, trigger: str,
                         only_head: str | None = None, actor: str | None = None) -> ValidationState | None:
        """Validate the PR's current head again, with a new check run. NotRevalidated when the PR is
        gone or closed; None when `only_head` is given and the PR has moved on from it (its newer
        head has its own run)."""
        pull = await self.repo(project).pulls.find(number)
        if pull is None:
            raise NotRevalidated(f"pull request #{number} is gone", closed=False)
        if not pull.is_open:
            raise NotRevalidated(f"pull request #{number} is closed: nothing to validate", closed=True)
        if only_head is not None and pull.head_sha != only_head:
            return None
        return await self.start(project, pull, trigger=trigger, restart=True, actor=actor)

    async def _start(self, project: Project, pr: PullRequest, *, trigger: str, restart: bool,
                     claimer: str, actor: str | None = None,
                     record_pull: PullRecorder | None = None) -> ValidationState | None:
        # The same head again (a retried job, an event GitHub sent twice) joins the validation under way.
        begun = await self.store.validations.begin(
            project_id=project.id, pr_number=pr.number, head_sha=pr.head_sha, restart=restart, base_sha=pr.base_sha,
            is_fork=pr.fork, author=pr.author, trigger=trigger, claimer=claimer, triggered_by=actor,
            record_pull=record_pull)
        if begun is None:
            return None  # `record_pull` found a newer event recorded: the caller decides (handlers/pull_request.py)
        await self.end_superseded(project, pr, begun.ended, restart=restart)
        state = begun.validation
        if state.check_run_id is not None or not begun.claimed:
            return state  # recorded already, or another start (perhaps in another process) is creating it
        # A validation `begin` joined may have had its check run created by an earlier try that never
        # recorded it (killed, or GitHub's answer lost): look for that one first.
        await self._open_check_run(project, state, look_first=not begun.recorded)
        return state

    async def start_subject(self, project: Project, *, subject: str, subject_ref: str, pr_number: int, head_sha: str,
                            base_sha: str, trigger: str, claimer: str | None = None) -> ValidationState:
        """Validate `head_sha`, a commit a merge queue made (`subject`) to merge PRs into `base_sha`, the
        last of them `pr_number`: a check run on that commit under the app's check name, the same
        pipeline and sandbox as a PR's, the config read at `base_sha`. The same head again (an event
        GitHub sent twice) joins its validation, whatever its state (ValidationStore.begin_subject);
        nothing else ends. `claimer`: as `start`'s."""
        begun = await self.store.validations.begin_subject(
            project_id=project.id, subject=subject, subject_ref=subject_ref, pr_number=pr_number, head_sha=head_sha,
            base_sha=base_sha, trigger=trigger, claimer=claimer or new_id())
        state = begun.validation
        if state.check_run_id is None and begun.claimed:
            await self._open_check_run(project, state, look_first=not begun.recorded)
        return state

    async def start_candidate(self, project: Project, *, subject_ref: str, pr_number: int, head_sha: str,
                              base_sha: str, trigger: str) -> ValidationState:
        """Validate a candidate of the app's own merge queue: `start_subject` without a check run (the
        commit exists only in the mirror, where the checkout finds it); the queue reports on the PRs.
        The same `subject_ref` again joins its validation."""
        state = await self.store.validations.begin_candidate(
            project_id=project.id, subject=SUBJECT_QUEUE_CANDIDATE, subject_ref=subject_ref, pr_number=pr_number,
            head_sha=head_sha, base_sha=base_sha, trigger=trigger, then_queue=JOB_VALIDATE)
        self.wakeup.wake(JOB_VALIDATE)
        self.bus.publish("validation.started", project_id=project.id, validation_id=state.id, pr_number=None,
                         head_sha=state.head_sha)
        return state

    async def _open_check_run(self, project: Project, state: ValidationState, *, look_first: bool) -> None:
        """Create (or adopt: CheckRuns.create_once) the check run of a validation whose creation this
        process claimed, record it and queue the validation's job."""
        check_runs = self.repo(project).check_runs
        check_run_id = await check_runs.create_once(
            head_sha=state.head_sha, details_url=self.details_url(state.id), external_id=state.id,
            title="Validation queued", summary=f"Validating {short_sha(state.head_sha)}.", look_first=look_first)
        ended_as = await self.store.validations.set_check_run(state.id, check_run_id, then_queue=JOB_VALIDATE,
                                                              max_attempts=3)
        if ended_as is not None:  # ended meanwhile by another process's start or a close: say so
            await self.complete_check_run(check_runs, state.id, check_run_id, "cancelled", _saying(ended_as))
            return
        self.wakeup.wake(JOB_VALIDATE)
        self.bus.publish("validation.started", project_id=project.id, validation_id=state.id,
                         pr_number=pr_of(state), head_sha=state.head_sha)

    async def end_superseded(self, project: Project, pr: PullRequest, ended: list[ValidationState], *,
                             restart: bool) -> None:
        """Stop the runs `begin` ended and say so on their check runs."""
        def reason(old: ValidationState) -> str:
            return "re-run requested" if restart and old.head_sha == pr.head_sha \
                else superseded_reason(pr.head_sha)

        await self._end(project, pr.number, ended, reason, by=pr.head_sha)

    async def pull_request_closed(self, project: Project, number: int) -> None:
        """A closed PR needs no validation: end what is still running for it."""
        ended = await self.store.validations.supersede(project.id, number, new_head_sha="closed")
        await self._end(project, number, ended, lambda old: "the PR was closed", by=None)
        if started := [old for old in ended if old.started_at is not None]:
            await self.comment_ended(project, started[-1], "Cancelled: the PR was closed")

    async def _end(self, project: Project, number: int, ended: list[ValidationState],
                   reason_of: Callable[[ValidationState], str], *, by: str | None) -> None:
        for old in ended:
            self.cancel_running(old.id)
            reason = reason_of(old)
            if old.check_run_id is not None:
                await self.complete_check_run(self.repo(project).check_runs, old.id, old.check_run_id, "cancelled",
                                              _saying(f"Cancelled: {reason}"))
            await self.store.audit.record(
                "validation.superseded", project_id=project.id, installation_id=project.installation_id,
                details={"pr": number, "head_sha": old.head_sha, "by": by, "reason": reason, "validation_id": old.id})
            log.info("%s", outcome_line(project.name, old, "cancelled", f"Cancelled: {reason}", running_seconds(old)))

    async def cancel(self, project: Project, state: ValidationState, *, reason: str,
                     actor: str | None = None) -> bool:
        """End a queued or running validation (`/cancel`); False when it was not active any more."""
        title = f"Cancelled: {reason}"
        if not await self.store.validations.cancel(state.id, title=title):
            return False
        self.cancel_running(state.id)  # another worker's run notices within CANCEL_POLL_SECONDS
        if state.check_run_id is not None:
            actions = check_run_actions("cancelled", merge_allowed=False,
                                        agent_configured=self.agent_configured(project)) if of_pr_head(state) else []
            # the reason is a person's words (`/cancel because …`): masked like every other free text
            await self.complete_check_run((await self.masked_repo(project)).check_runs, state.id, state.check_run_id,
                                          "cancelled", _saying(title), actions=actions)
        await self.store.audit.record(
            "validation.cancelled", actor=actor, project_id=project.id, installation_id=project.installation_id,
            details={"pr": state.pr_number, "subject": state.subject, "head_sha": state.head_sha, "reason": reason,
                     "validation_id": state.id})
        log.info("%s", outcome_line(project.name, state, "cancelled", title, running_seconds(state)))
        if state.started_at is not None:
            await self.comment_ended(project, state, title)
        self.bus.publish("validation.completed", project_id=project.id, validation_id=state.id,
                         pr_number=pr_of(state), head_sha=state.head_sha, conclusion="cancelled")
        return True

    async def complete_check_run(self, check_runs: CheckRuns, validation_id: str, check_run_id: int, conclusion: str,
                                 output: Output, *, actions: list[dict[str, str]] | None = None) -> None:
        """Complete a validation's check run, then settle it (ValidationStore.settle_check_run): GitHub
        knows how the validation ended, nothing is left for the recovery."""
        await check_runs.complete(check_run_id, conclusion=conclusion, output=output, actions=actions)
        await self.store.validations.settle_check_run(validation_id)

    # ---- the sticky comment ------------------------------------------------------------------------

    async def write_comment(self, repo: RepoGitHub, project_id: str, pr_number: int,
                            body: str | Callable[[], Awaitable[str]], *, only_existing: bool = False) -> None:
        """The one comment of the app on this PR, edited in place (found again by its marker);
        `only_existing`: only when the PR has it already (news that need not start one). A `body` that
        is a function (one that reads the database) is built only once the comment is to be written."""
        validations = self.store.validations
        known = await validations.comment_id(project_id, pr_number)
        if known is None and only_existing:
            return
        text = body if isinstance(body, str) else await body()
        comment_id = await repo.comments.upsert(pr_number, COMMENT_MARKER, fit_comment(text), known_id=known)
        await validations.set_comment_id(project_id, pr_number, comment_id)

    async def comment_ended(self, project: Project, state: ValidationState, title: str, *,
                            conclusion: str = "cancelled") -> None:
        """A run that ended without its report (cancelled, its PR closed, found ended by the recovery):
        its comment, which says "Validating…", says so instead. The check run has it already: a failure
        here is only logged. A merge queue's commit has no comment."""
        if not of_pr_head(state):
            return
        lead = f"{title} · commit `{short_sha(state.head_sha)}` · [details]({self.details_url(state.id)})"
        body = render_not_run_comment(comment_heading(conclusion), lead)
        try:
            await self.write_comment(await self.masked_repo(project), project.id, state.pr_number, body,
                                     only_existing=True)  # masked like every comment: a reason may quote a secret
        except Exception:  # noqa: BLE001
            log.exception("validation %s: could not update the PR comment", state.id)

    def cancel_running(self, validation_id: str) -> None:
        task = self._running.get(validation_id)
        if task is not None and not task.done():
            task.cancel()

    # ---- recovery ----------------------------------------------------------------------------------

    def start_recovery(self) -> None:
        """`recover_check_runs` now, then every minute until `close`."""
        self._recovery = asyncio.create_task(self._recover_every(RECOVERY_INTERVAL_SECONDS))

    async def _recover_every(self, seconds: float) -> None:
        while True:
            try:
                await self.recover_under_lease()
            except Exception:  # the database is away, say: the next round tries again
                log.exception("could not look for check runs to recover")
            await asyncio.sleep(seconds)

    async def close(self) -> None:
        if self._recovery is not None:
            self._recovery.cancel()
            await asyncio.gather(self._recovery, return_exceptions=True)

    async def recover_under_lease(self) -> int | None:
        """`recover_check_runs` under the database lease RECOVERY_LEASE; None when another process holds it
        (it is recovering now)."""
        return await run_once(self.store.leases, RECOVERY_LEASE, self.holder, ttl=RECOVERY_LEASE_TTL,
                              work=self.recover_check_runs, doing="check-run recovery", level=logging.DEBUG)

    async def recover_check_runs(self) -> int:
        """Settle what a process killed halfway left (ValidationStore.unsettled): a validation recorded
        without a check run whose claim is stale gets one (the one an earlier try made, or a new one)
        and its job; a check run whose validation ended is completed as it ended. Returns how many
        validations it settled."""
        settled = 0
        for state in await self.store.validations.unsettled():
            try:
                settled += await self._recover(state)
            except BadRequest as exc:  # the repository or its check run is gone, or the app lost access
                log.warning("validation %s: its check run cannot be settled (GitHub answered %s): given up",
                            state.id, exc.status_code)
                await self.store.validations.settle_check_run(state.id)
            except Exception:  # GitHub is failing, say: the next round tries again
                log.exception("validation %s: could not settle its check run", state.id)
        return settled

    async def _recover(self, state: ValidationState) -> bool:
        project = await self.store.projects.get_project(state.project_id)
        if project is None or project.installation_id is None:
            await self.store.validations.settle_check_run(state.id)  # nothing on GitHub can be reached
            return True
        if state.status in VALIDATION_ACTIVE:
            if await self._begun_by_unfinished_delivery(state):
                return False  # that delivery's job runs again and creates or adopts the check run itself
            if not await self.store.validations.claim_check_run(state.id, new_id()):
                return False  # another process took it over meanwhile
            log.info("validation %s: recovering its check run", state.id)
            await self._open_check_run(project, state, look_first=True)
            return True
        check_runs = (await self.masked_repo(project)).check_runs
        runs = ([await check_runs.get(state.check_run_id)] if state.check_run_id is not None
                else await check_runs.of(state.head_sha, state.id))
        conclusion, output = recovered_output(state, self.details_url(state.id))
        actions = recovered_actions(state.status, conclusion, agent_configured=self.agent_configured(project)) \
            if of_pr_head(state) else []
        for run in runs:
            if not run.completed:
                log.info("validation %s ended: completing its check run %d", state.id, run.id)
                await check_runs.complete(run.id, conclusion=conclusion, output=output, actions=actions)
        await self.store.validations.settle_check_run(state.id)
        latest = await self.store.validations.latest_for_pr(state.project_id, state.pr_number)
        if state.started_at is not None and latest is not None and latest.id == state.id:
            await self.comment_ended(project, state, output["title"], conclusion=conclusion)
        return True

    async def _begun_by_unfinished_delivery(self, state: ValidationState) -> bool:
        """Whether the webhook delivery that began this validation (its claimer) still has a job to run.
        Left to that job: were the check run made here, the validation could end before the job runs
        again, and the job's `begin` would then record a second validation (and check run) of the head."""
        claimer = state.check_run_claimed_by
        if claimer is None:
            return False
        return any(job.status in (JOB_QUEUED, JOB_RUNNING) for job in await self.store.jobs.for_delivery(claimer))

    # ---- the job -----------------------------------------------------------------------------------

    async def run_job(self, job: ClaimedJob) -> None:
        validation_id = job.args["validation_id"]
        state, started = await self.store.validations.read_then_start(validation_id)
        if state is None:
            return
        if not started:
            if job.attempts > 1:  # ended, maybe by this job's earlier try (else: superseded or cancelled)
                await self._settle_if_interrupted(validation_id)
            return
        validation = await self._validation(state)
        task = asyncio.current_task()
        assert task is not None
        self._running[validation_id] = task
        watchdog = asyncio.create_task(self._cancel_when_ended_elsewhere(validation_id, task))
        try:
            await validation.run()  # an error goes to the worker: it tries again, or gives up (job_died)
        finally:
            watchdog.cancel()
            self._running.pop(validation_id, None)
            await self.volumes.remove(validation_id)

    async def _settle_if_interrupted(self, validation_id: str) -> None:
        """Run again after an earlier try: an ended validation whose check run was never settled, its end
        recorded a while ago (INTERRUPTED_AFTER), was ended by that try, killed before it told GitHub. Settled
        now rather than at the recovery's next round, up to a minute later, so that the check run does not stay
        `in_progress` meanwhile. An end recorded just now is left to whoever recorded it (a cancel whose
        PATCH is still on its way), as the recovery leaves it."""
        state = await self.store.validations.get(validation_id)
        if state is None or state.status in VALIDATION_ACTIVE or state.check_run_settled:
            return
        if state.completed_at is None or utcnow() - state.completed_at < INTERRUPTED_AFTER:
            return
        log.info("validation %s ended before its job was interrupted: settling its check run", validation_id)
        await self._recover(state)

    async def job_died(self, job: ClaimedJob, exc: Exception) -> None:
        """The worker gave up the validation's job (its tries or its GitHub outage budget spent, or an
        error no try can fix): the validation ends failed, saying why. Recorded first; a check run GitHub
        cannot be told of now is completed by `recover_check_runs` once it can."""
        state = await self.store.validations.get(job.args["validation_id"])
        if state is None or state.status not in VALIDATION_ACTIVE:
            return  # ended meanwhile: nothing is left running
        log.error("validation %s failed for good: %s", state.id, type(exc).__name__)
        await (await self._validation(state)).finish_broken(exc)

    async def masked_repo(self, project: Project) -> RepoGitHub:
        """The project's repository, what is written to it masked of the project's secrets (and the process's)."""
        secrets = await self.store.projects.secret_values(project.id)
        return self.repo(project).masked(PROCESS_REDACTOR.child(list(secrets.values())))

    async def _validation(self, state: ValidationState) -> _Validation:
        project, secrets = await self.store.projects.project_with_secrets(state.project_id)
        assert project is not None and project.installation_id is not None
        # Whatever the run sends to GitHub is masked with the project's secrets too, however it came to
        # hold one (a SARIF message, an error, a page's path): the masking is in the GitHub layer.
        redactor = PROCESS_REDACTOR.child(list(secrets.values()))
        return _Validation(self, self.repo(project).masked(redactor), project, state, secrets, redactor)

    async def _cancel_when_ended_elsewhere(self, validation_id: str, task: asyncio.Task[Any]) -> None:
        """Another worker process may supersede this run: notice it within a few seconds."""
        while True:
            await asyncio.sleep(CANCEL_POLL_SECONDS)
            if not await self.store.validations.is_active(validation_id):
                task.cancel()
                return


class _Validation:
    """One run of the job for one validation (all the GitHub I/O of the pipeline is here)."""

    def __init__(self, service: ValidationService, repo: RepoGitHub, project: Project, state: ValidationState,
                 secrets: dict[str, str], redactor: Redactor) -> None:
        """`secrets`: the project's, decrypted; `redactor` masks them (and the process's own), as `repo` does."""
        self.service = service
        self.repo = repo
        self.project = project
        self.state = state
        self.secrets = secrets
        self.redactor = redactor
        self.volume: Volume | None = None  # the workspace, once the checkout made it
        self.store = service.store
        self.repo_config: RepoConfig | None = None
        self.started = time.monotonic()  # the run's start, for "Running for …" while it goes on
        self._comparison: Comparison | None = None

    async def run(self) -> None:
        if of_pr_head(self.state):
            pull = await self.repo.pulls.get(self.state.pr_number)
            if pull.head_sha != self.state.head_sha:
                await self.complete_without_run("cancelled", superseded_reason(pull.head_sha))
                return
            config_sha = pull.base_sha
        else:  # a merge queue's commit: its base is what the PRs are merged into
            assert self.state.base_sha is not None
            config_sha = self.state.base_sha
        try:
            # The repository's config at the BASE: a PR cannot change what runs on it.
            repo_config = self.repo_config = await read_repo_config(self.repo, config_sha)
        except ConfigFileError as exc:
            await self.report_config_error(exc)
            return
        config = effective_config(repo_config, project_settings(self.project))
        if not (config.setup or config.validate or config.analysis or config.ui):
            await self.complete_without_run("neutral", "Nothing to validate", summary=NOTHING_TO_VALIDATE)
            return

        if not await self.candidate_in_mirror():
            return
        gate = await self.gate()
        if not gate.run:
            await self.wait_for_approval(gate.reason)
            return
        # A fork's run is given none of the project's secrets: its results are masked of the process's own.
        secrets, redactor = (self.secrets, self.redactor) if gate.with_secrets else ({}, PROCESS_REDACTOR)

        await self.store.validations.set_plan(self.state.id, planned_steps(config))  # the page lists them all
        await self.announce_running()
        checkout_step, checkout = await self.checkout()
        if checkout is None:
            await self.report(RunOutcome([checkout_step], [], "failure", []), redactor)
            return
        changed = await self.changed_lines()
        scope = f"{self.project.id}:{'trusted' if gate.with_secrets else 'fork'}"
        service = self.service
        plan = RunPlan(workspace=checkout.workspace, volume=self.volume, config=config,
                       tracked_files=checkout.tracked_files, secrets=secrets, snapshot_scope=scope,
                       changed_lines=changed,
                       browser=BrowserSetup(chromium_path=service.chromium_path,
                                            screenshots_dir=screenshots_dir(service.data_dir, self.state.id)))
        outcome = await service.runner.run(plan, redactor=redactor, on_progress=self.progress,
                                           leading_steps=[checkout_step])
        if gate.with_secrets is False and self.state.is_fork:
            outcome.notes.append("fork PR: run without the project's secrets")
        elif not gate.with_secrets:
            outcome.notes.append(without_secrets_note(self.state.subject, gate))
        await self.report(outcome, redactor, timeout_minutes=config.timeout_minutes)

    async def gate(self) -> Gate:
        """Whether the head may run, and with the project's secrets: a PR's by the fork gate, a merge
        queue's commit by whether all its commits are proven to come from this repository's PRs
        (`group_gate`)."""
        if of_pr_head(self.state):
            return fork_gate(fork=self.state.is_fork, author_role=await self.author_role(),
                             head_approved=await self.head_approved())
        comparison = await self.comparison()
        merged = merged_pulls(self.state.head_sha, comparison.commits) or []
        pulls = {m.number: await self.pull_head(m.number, m.head) for m in merged}
        return group_gate(self.state.head_sha, comparison.commits, complete=comparison.complete, pulls=pulls)

    async def pull_head(self, number: int, merged_head: str) -> PullHead | None:
        """PR `number`'s head now and whether it is a branch of this repository (None: no PR the app
        recorded or GitHub knows). The app's record answers when it holds `merged_head` as the PR's head;
        GitHub otherwise."""
        recorded = await self.store.tracked_pulls.get(self.project.id, number)
        if recorded is not None and recorded.head_sha == merged_head:
            return PullHead(recorded.head_sha, same_repository=not recorded.is_fork)
        pull = await self.repo.pulls.find(number)
        return None if pull is None else PullHead(pull.head_sha, same_repository=not pull.fork)

    async def comparison(self) -> Comparison:
        """What a merge queue's commit adds to its base (read once a run)."""
        if self._comparison is None:
            assert self.state.base_sha is not None
            if self.state.subject == SUBJECT_QUEUE_CANDIDATE:  # GitHub has not got the commit: the mirror has
                self._comparison = await mirror_comparison(self.service.checkouts, self.project.name,
                                                           self.state.base_sha, self.state.head_sha)
            else:
                self._comparison = await self.repo.repos.compare(self.state.base_sha, self.state.head_sha)
        return self._comparison

    async def changed_lines(self) -> dict[str, set[int]]:
        """The lines the analysis annotates: the PR's changes, or all that a merge queue's commit adds to
        its base."""
        if of_pr_head(self.state):
            return changed_lines(await self.repo.pulls.files(self.state.pr_number))
        return changed_lines((await self.comparison()).files)

    async def author_role(self) -> str | None:
        if not self.state.is_fork or not self.state.author:
            return None
        return await self.repo.repos.role(self.state.author)

    async def head_approved(self) -> bool:
        """Whether a maintainer approved this head with /ok-to-test (asked of a fork's head only)."""
        return self.state.is_fork and await self.store.validations.is_head_approved(
            self.project.id, self.state.pr_number, self.state.head_sha)

    async def candidate_in_mirror(self) -> bool:
        """A queue candidate's commit in this host's mirror before anything reads it there (its gate, its
        checkout): built here, or made again (`restore_candidate`). False: it cannot be, and the failed
        checkout step is reported."""
        restore = self.service.restore_candidate
        if self.state.subject != SUBJECT_QUEUE_CANDIDATE or restore is None:
            return True
        started = time.monotonic()
        try:
            await restore(self.project, self.state,
                          await self.service.github.installation_token(self.repo.installation_id))
        except CheckoutError as exc:
            await self.report(RunOutcome([failed_checkout(exc, started)], [], "failure", []), PROCESS_REDACTOR)
            return False
        return True

    async def checkout(self) -> tuple[StepResult, CheckoutResult | None]:
        token = await self.service.github.installation_token(self.repo.installation_id)
        started = time.monotonic()
        try:
            self.volume = await self.service.volumes.create(self.state.id)
            # a merge queue's commit is on its own ref (`subject_ref`), fetched as the hint
            on = {"pr_number": self.state.pr_number} if of_pr_head(self.state) else {"ref": self.state.subject_ref}
            result = await self.service.checkouts.checkout(self.project.name, sha=self.state.head_sha, token=token,
                                                           dest=self.volume.path, **on)
        except (CheckoutError, VolumeUnavailable) as exc:
            return failed_checkout(exc, started), None
        return StepResult("checkout", "checkout", "passed", time.monotonic() - started,
                          detail=short_sha(self.state.head_sha)), result

    async def progress(self, steps: list[StepResult], current: str | None, stage: str | None, tail: str) -> None:
        """Called at most every few seconds while a step runs (the tail is masked already)."""
        output = in_progress_output(steps, current, tail, current_stage=stage,
                                    elapsed=time.monotonic() - self.started)
        if self.state.check_run_id is not None:
            await self.repo.check_runs.update(self.state.check_run_id, output)
        await self.store.validations.set_progress(self.state.id, {
            "steps": [step.__dict__ for step in steps], "current": current, "stage": stage,
            "tail": tail[-LIVE_TAIL_CHARS:]})
        self.service.bus.publish("validation.progress", project_id=self.project.id,
                                 validation_id=self.state.id, step=current, stage=stage,
                                 has_output=bool(tail.strip()))

    async def complete_check_run(self, conclusion: str, output: dict[str, Any], *,
                                 actions: list[dict[str, str]] | None = None) -> None:
        if self.state.check_run_id is not None:
            await self.service.complete_check_run(self.repo.check_runs, self.state.id, self.state.check_run_id,
                                                  conclusion, output, actions=actions)

    async def report(self, outcome: RunOutcome, redactor: Redactor, *, timeout_minutes: int | None = None) -> None:
        details_url = self.service.details_url(self.state.id)
        public_url = self.service.public_url
        shots = [(s.path, screenshot_url(public_url, self.state.id, s.file)) for s in outcome.screenshots]
        results = {"steps": [step.__dict__ for step in outcome.steps], "notes": outcome.notes,
                   "annotations": len(outcome.annotations),
                   "findings": [{**finding_json(f), "step": step or None}  # the validation page lists them
                                for step, found in findings_by_step(outcome.steps, outcome.annotations).items()
                                for f in found],
                   "screenshots": [shot.__dict__ for shot in outcome.screenshots]}
        output = check_run_output(outcome.steps, head_sha=self.state.head_sha,
                                  conclusion=outcome.conclusion, details_url=details_url,
                                  notes=outcome.notes, timeout_minutes=timeout_minutes, screenshots=shots,
                                  findings=outcome.annotations)
        output = {k: redactor.redact(v) for k, v in output.items()}
        images = check_run_images(shots) if publicly_reachable(public_url) else []
        if not await self.store.validations.complete(self.state.id, conclusion=outcome.conclusion,
                                                     title=output["title"], results=results,
                                                     snapshot_id=outcome.snapshot_key):
            return  # superseded while finishing: the newer run reports
        auto_merge, merge_button = await self.merge_plan(outcome.conclusion)
        batches = annotation_batches(outcome.annotations) or [[]]
        final_output: dict[str, Any] = {**output, "annotations": batches[0]}
        if images:
            final_output["images"] = images
        await self.complete_check_run(outcome.conclusion, final_output,
                                      actions=self.actions(outcome.conclusion, merge_allowed=merge_button))
        if self.state.check_run_id is not None:
            for batch in batches[1:]:
                await self.repo.check_runs.add_annotations(self.state.check_run_id, title=output["title"],
                                                           summary=output["summary"], annotations=batch)
        body = render_comment(outcome.steps, head_sha=self.state.head_sha, conclusion=outcome.conclusion,
                              check_run_url=None, details_url=details_url, notes=outcome.notes,
                              timeout_minutes=timeout_minutes, screenshots=shots, findings=outcome.annotations,
                              previous=await self.previous())
        await self.upsert_comment(body)  # masked on its way (RepoGitHub.masked)
        await self.finished(outcome.conclusion, output["title"])
        if auto_merge:
            await self.auto_merge()

    def actions(self, conclusion: str, *, merge_allowed: bool = False) -> list[dict[str, str]]:
        """The completed check run's buttons (handled by handlers/checks.py); none on a merge queue's
        commit (its queue runs it again)."""
        if not of_pr_head(self.state):
            return []
        return check_run_actions(conclusion, merge_allowed=merge_allowed,
                                 agent_configured=self.service.agent_configured(self.project))

    async def merge_plan(self, conclusion: str) -> tuple[bool, bool]:
        """(auto-merge now, show the Merge button) for a completed validation. With auto-merge on
        there is no button: the merge follows at once. A failure to read what decides the button
        costs the button, never the report."""
        if conclusion != "success" or not of_pr_head(self.state):
            return False, False
        merges = self.service.merges
        settings = await merges.settings(self.project, self.state.pr_number, self.repo_config)
        if settings.auto_merge:
            return True, False
        try:
            # As stored now: the decision reads the conclusion and title `report` just recorded.
            return False, await merges.merge_button(self.project, await self.store.validations.get(self.state.id))
        except Exception:
            log.exception("validation %s: could not decide about the Merge button", self.state.id)
            return False, False

    async def auto_merge(self) -> None:
        try:
            enter = self.service.enter_queue
            if enter is not None and await enter(self.project, self.state, self.repo_config):
                return  # the queue merges it, tested with what is ahead of it
            await self.service.merges.auto_merge(self.project, self.state)  # its PR and head: never changed
        except Exception:  # the validation is reported; its job must not run again for this
            log.exception("validation %s: auto-merge failed", self.state.id)

    async def finished(self, conclusion: str, title: str) -> None:
        seconds = running_seconds(self.state) if self.state.started_at else time.monotonic() - self.started
        log.info("%s", outcome_line(self.project.name, self.state, conclusion, title, seconds))
        await self.store.audit.record("validation.completed", project_id=self.project.id,
                                      installation_id=self.project.installation_id,
                                      details={"pr": self.state.pr_number, "subject": self.state.subject,
                                               "head_sha": self.state.head_sha, "conclusion": conclusion,
                                               "title": title, "validation_id": self.state.id})
        self.service.bus.publish("validation.completed", project_id=self.project.id, validation_id=self.state.id,
                                 pr_number=pr_of(self.state), head_sha=self.state.head_sha,
                                 conclusion=conclusion)

    async def complete_without_run(self, conclusion: str, reason: str, *, summary: str | None = None) -> None:
        title = f"Cancelled: {reason}" if conclusion == "cancelled" else reason
        if await self.store.validations.complete(self.state.id, conclusion=conclusion, title=title, results={}):
            await self.complete_check_run(conclusion, {"title": title, "summary": summary or title + "."})
            if conclusion == "neutral":  # a comment showing an earlier result would mislead; none is started
                async def body() -> str:  # the previous result is read only when there is a comment to edit
                    return render_not_run_comment("Nothing was validated", summary or title,
                                                  previous=await self.previous())

                await self.upsert_comment(body, only_existing=True)
            await self.finished(conclusion, title)

    async def report_config_error(self, exc: ConfigFileError) -> None:
        title = f"Invalid {CONFIG_PATH}"
        summary = f"{exc}\n\nThe file is read from the PR's base branch; fix it there."
        annotations = []
        if exc.line is not None:
            annotations.append({"path": CONFIG_PATH, "start_line": exc.line, "end_line": exc.line,
                                "annotation_level": "failure", "message": str(exc)})
        if await self.store.validations.complete(self.state.id, conclusion="failure", title=title,
                                                 results={"config_error": str(exc)}):
            await self.tell_not_run("failure", {"title": title, "summary": summary, "annotations": annotations},
                                    heading="Validation could not start")

    async def wait_for_approval(self, reason: str) -> None:
        output = waiting_output(reason, self.state.head_sha)
        if await self.store.validations.wait_for_approval(self.state.id, title=output["title"]):
            await self.tell_not_run("action_required", output, heading=output["title"])

    async def tell_not_run(self, conclusion: str, output: dict[str, Any], *, heading: str) -> None:
        """Say why the head's code did not run (recorded already): on the check run, with its buttons, and
        in the PR's comment under `heading`."""
        await self.complete_check_run(conclusion, output, actions=self.actions(conclusion))
        await self.upsert_comment(render_not_run_comment(heading, output["summary"], previous=await self.previous()))
        await self.finished(conclusion, output["title"])

    async def finish_broken(self, exc: Exception) -> None:
        title = "CodegenApp could not validate this head"
        reason = "the sandbox is not available on the app's host" if isinstance(exc, SandboxUnavailable) \
            else f"{type(exc).__name__}: {exc}"
        # The error may quote anything the run saw: mask it before it reaches the database, the
        # details page or the check run.
        reason = self.redactor.redact(reason)
        if await self.store.validations.complete(self.state.id, conclusion="failure", title=title,
                                                 results={"error": reason}):
            try:  # GitHub may be why the job died: then the recovery completes the check run later
                await self.complete_check_run("failure", {"title": title, "summary": f"{title}: {reason}"},
                                              actions=self.actions("failure"))
                details = self.service.details_url(self.state.id)
                await self.upsert_comment(render_not_run_comment(
                    comment_heading("failure"), f"{title}: {reason} · [details]({details})"), only_existing=True)
            finally:
                await self.finished("failure", title)

    async def upsert_comment(self, body: str | Callable[[], Awaitable[str]], *, only_existing: bool = False) -> None:
        """The one comment of the app on this PR (ValidationService.write_comment), masked on its way. A
        merge queue's commit has none: it is no PR's head."""
        if not of_pr_head(self.state):
            return
        await self.service.write_comment(self.repo, self.project.id, self.state.pr_number, body,
                                         only_existing=only_existing)

    async def previous(self) -> PreviousResult | None:
        if not of_pr_head(self.state):
            return None  # what the PR's comment shows: a merge queue's commit has none
        return previous_result(await self.store.validations.previous_completed(self.state))

    async def announce_running(self) -> None:
        """The sticky comment says this head is being validated, with the previous result in one line:
        the run's one write besides its report. Only a courtesy: a failure is logged, the run goes on."""
        body = render_running_comment(head_sha=self.state.head_sha, details_url=self.service.details_url(self.state.id),
                                      previous=await self.previous())
        try:
            await self.upsert_comment(body)
        except Exception:  # noqa: BLE001
            log.warning("validation %s: could not say on the PR that it runs", self.state.id, exc_info=True)
