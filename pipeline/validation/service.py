"""The GitHub shell around the pipeline: a PR head becomes a validation, a Check Run and one sticky
PR comment.

`start` runs in the webhook's job and does only what must be immediate: end older heads' runs, record
the validation, create its check run `in_progress`, queue the validation job. `run_job` does the work.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gidgethub import BadRequest
from gidgethub.abc import GitHubAPI

from bot.models import Project, ValidationState, new_id
from bot.redact import PROCESS_REDACTOR, Redactor
from pipeline.report import render as report
from pipeline.workspace.checkout import CheckoutError, Checkouts
from pipeline.commands.parse import check_run_actions
from pipeline.decisions import fork_gate, is_fork
from pipeline.commands.permissions import repository_role
from pipeline.repo_config.parse import ConfigFileError, ProjectSettings, RepoConfig, effective_config, parse_repo_config
from pipeline.validation.stages import PipelineRunner, RunOutcome, RunPlan
from pipeline.sandbox.sandbox import SandboxUnavailable
from pipeline.ui_check.check import BrowserSetup
from pipeline.ui_check.screenshots import publicly_reachable, screenshot_url, screenshots_dir

if TYPE_CHECKING:
    from bot.services import Services
    from bot.store import ClaimedJob

log = logging.getLogger(__name__)

CHECK_NAME = "CodegenApp"
CONFIG_PATH = ".github/codegenapp.yml"
JOB_VALIDATE = "validate"
CANCEL_POLL_SECONDS = 5.0
NOTHING_TO_VALIDATE = (f"No setup, validate or analysis steps are configured: add `validate:` steps to "
                       f"{CONFIG_PATH} on the base branch, or set the project's commands in the dashboard.")


@dataclass(frozen=True)
class PullRequestRef:
    full_name: str
    number: int
    head_sha: str
    base_sha: str
    fork: bool
    author: str | None

    @property
    def owner(self) -> str:
        return self.full_name.split("/", 1)[0]

    @property
    def repo(self) -> str:
        return self.full_name.split("/", 1)[1]


def pull_request_ref(repository: dict[str, Any], pull_request: dict[str, Any]) -> PullRequestRef:
    return PullRequestRef(full_name=repository["full_name"], number=pull_request["number"],
                          head_sha=pull_request["head"]["sha"], base_sha=pull_request["base"]["sha"],
                          fork=is_fork(pull_request), author=(pull_request.get("user") or {}).get("login"))


async def fetch_repo_config(gh: GitHubAPI, full_name: str, ref: str) -> RepoConfig | None:
    """The repository's config file at `ref` (None when there is none); ConfigFileError when invalid."""
    try:
        content = await gh.getitem(f"/repos/{full_name}/contents/{CONFIG_PATH}{{?ref}}", {"ref": ref})
    except BadRequest as exc:
        if exc.status_code == 404:
            return None
        raise
    if not isinstance(content, dict) or content.get("type") != "file":
        raise ConfigFileError(f"{CONFIG_PATH} is not a file", None, None)
    text = base64.b64decode(content.get("content") or "").decode("utf-8", "replace")
    return parse_repo_config(text, path=CONFIG_PATH)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def project_settings(project: Project) -> ProjectSettings:
    return ProjectSettings(setup_commands=tuple(project.setup_commands or ()),
                           validate_commands=tuple(project.validate_commands or ()),
                           auto_merge_enabled=project.auto_merge_enabled)


class ValidationService:
    def __init__(self, services: "Services", runner: PipelineRunner, checkouts: Checkouts) -> None:
        self.services = services
        self.runner = runner
        self.checkouts = checkouts
        self._running: dict[str, asyncio.Task[Any]] = {}
        self._pr_locks: weakref.WeakValueDictionary[tuple[str, int], asyncio.Lock] = weakref.WeakValueDictionary()

    @property
    def store(self):  # type: ignore[no-untyped-def]
        return self.services.store.validations

    def details_url(self, validation_id: str) -> str:
        return f"{self.services.settings.public_url}/validations/{validation_id}"

    # ---- start (webhook path) ----------------------------------------------------------------------

    async def start(self, gh: GitHubAPI, project: Project, pr: PullRequestRef, *, trigger: str,
                    restart: bool = False, claimer: str | None = None) -> ValidationState:
        """`claimer`: who asks, for the claim on creating the check run (ValidationStore.begin): the
        delivery id of a webhook-driven start, so that a retried job of that delivery may create it at
        once; None (other callers) draws a fresh id."""
        # One start at a time per PR in this process (a new head's start then finds the check run of
        # the head it supersedes to cancel); across processes, only the holder of the claim taken in
        # `begin` creates the check run.
        lock = self._pr_locks.setdefault((project.id, pr.number), asyncio.Lock())
        async with lock:
            return await self._start(gh, project, pr, trigger=trigger, restart=restart, claimer=claimer or new_id())

    async def _start(self, gh: GitHubAPI, project: Project, pr: PullRequestRef, *, trigger: str,
                     restart: bool, claimer: str) -> ValidationState:
        # The same head again (a retried job, an event GitHub sent twice) joins the validation under way.
        ended, state, claimed = await self.store.begin(
            project_id=project.id, pr_number=pr.number, head_sha=pr.head_sha, restart=restart, base_sha=pr.base_sha,
            is_fork=pr.fork, author=pr.author, trigger=trigger, claimer=claimer)
        await self.end_superseded(gh, project, pr, ended, restart=restart)
        if state.check_run_id is not None or not claimed:
            return state  # recorded already, or another start (perhaps in another process) is creating it
        check_run = await gh.post(f"/repos/{pr.full_name}/check-runs", data={
            "name": CHECK_NAME, "head_sha": pr.head_sha, "status": "in_progress", "started_at": _now(),
            "details_url": self.details_url(state.id), "external_id": state.id,
            "output": {"title": "Validation queued", "summary": f"Validating {pr.head_sha[:7]}."}})
        ended_as = await self.store.set_check_run(state.id, check_run["id"], then_queue=JOB_VALIDATE,
                                                  max_attempts=3)
        if ended_as is not None:  # ended meanwhile by another process's start or a close: say so
            await gh.patch(f"/repos/{pr.full_name}/check-runs/{check_run['id']}", data={
                "status": "completed", "conclusion": "cancelled", "completed_at": _now(),
                "output": {"title": ended_as, "summary": f"{ended_as}."}})
            return state
        if self.services.worker is not None:
            self.services.worker.wake(JOB_VALIDATE)
        self.services.bus.publish("validation.started", project_id=project.id, validation_id=state.id,
                                  pr_number=pr.number, head_sha=pr.head_sha)
        return state

    async def end_superseded(self, gh: GitHubAPI, project: Project, pr: PullRequestRef,
                             ended: list[ValidationState], *, restart: bool) -> None:
        """Stop the runs `begin` ended and say so on their check runs."""
        def reason(old: ValidationState) -> str:
            return "re-run requested" if restart and old.head_sha == pr.head_sha \
                else report.superseded_reason(pr.head_sha)

        await self._end(gh, project, pr.number, ended, reason, by=pr.head_sha)

    async def pull_request_closed(self, gh: GitHubAPI, project: Project, number: int) -> None:
        """A closed PR needs no validation: end what is still running for it."""
        ended = await self.store.supersede(project.id, number, new_head_sha="closed")
        await self._end(gh, project, number, ended, lambda old: "the PR was closed", by=None)

    async def _end(self, gh: GitHubAPI, project: Project, number: int, ended: list[ValidationState],
                   reason_of: Callable[[ValidationState], str], *, by: str | None) -> None:
        for old in ended:
            self.cancel_running(old.id)
            reason = reason_of(old)
            if old.check_run_id is not None:
                await gh.patch(f"/repos/{project.name}/check-runs/{old.check_run_id}", data={
                    "status": "completed", "conclusion": "cancelled", "completed_at": _now(),
                    "output": {"title": f"Cancelled: {reason}", "summary": f"Cancelled: {reason}."}})
            await self.services.store.audit.record(
                "validation.superseded", project_id=project.id, installation_id=project.installation_id,
                details={"pr": number, "head_sha": old.head_sha, "by": by, "reason": reason})

    async def cancel(self, gh: GitHubAPI, project: Project, state: ValidationState, *, reason: str,
                     actor: str | None = None) -> bool:
        """End a queued or running validation (`/cancel`); False when it was not active any more."""
        title = f"Cancelled: {reason}"
        if not await self.store.cancel(state.id, title=title):
            return False
        self.cancel_running(state.id)  # another worker's run notices within CANCEL_POLL_SECONDS
        if state.check_run_id is not None:
            await gh.patch(f"/repos/{project.name}/check-runs/{state.check_run_id}", data={
                "status": "completed", "conclusion": "cancelled", "completed_at": _now(),
                "output": {"title": title, "summary": f"{title}."},
                "actions": check_run_actions("cancelled", merge_allowed=False,
                                             agent_configured=self.services.agent_backend_configured_for(project))})
        await self.services.store.audit.record(
            "validation.cancelled", actor=actor, project_id=project.id, installation_id=project.installation_id,
            details={"pr": state.pr_number, "head_sha": state.head_sha, "reason": reason})
        self.services.bus.publish("validation.completed", project_id=project.id, validation_id=state.id,
                                  pr_number=state.pr_number, head_sha=state.head_sha, conclusion="cancelled")
        return True

    def cancel_running(self, validation_id: str) -> None:
        task = self._running.get(validation_id)
        if task is not None and not task.done():
            task.cancel()

    # ---- the job -----------------------------------------------------------------------------------

    async def run_job(self, job: "ClaimedJob") -> None:
        validation_id = job.args["validation_id"]
        state = await self.store.get(validation_id)
        if state is None or not await self.store.start(validation_id):
            return  # superseded or cancelled before it began
        project = await self.services.store.projects.get_project(state.project_id)
        assert project is not None and project.installation_id is not None
        github = self.services.github
        assert github is not None
        gh = github.installation(project.installation_id)
        task = asyncio.current_task()
        assert task is not None
        self._running[validation_id] = task
        watchdog = asyncio.create_task(self._cancel_when_ended_elsewhere(validation_id, task))
        workspace = self.services.settings.data_dir / "workspaces" / validation_id
        try:
            await _Validation(self, gh, project, state, workspace).run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if job.attempts < job.max_attempts and not isinstance(exc, SandboxUnavailable):
                raise  # the queue tries again with backoff
            log.exception("validation %s failed for good", validation_id)
            await _Validation(self, gh, project, state, workspace).finish_broken(exc)
        finally:
            watchdog.cancel()
            self._running.pop(validation_id, None)
            await self.checkouts.remove(workspace)

    async def _cancel_when_ended_elsewhere(self, validation_id: str, task: asyncio.Task[Any]) -> None:
        """Another worker process may supersede this run: notice it within a few seconds."""
        while True:
            await asyncio.sleep(CANCEL_POLL_SECONDS)
            if not await self.store.is_active(validation_id):
                task.cancel()
                return


class _Validation:
    """One run of the job for one validation (all the GitHub I/O of the pipeline is here)."""

    def __init__(self, service: ValidationService, gh: GitHubAPI, project: Project, state: ValidationState,
                 workspace: Path) -> None:
        self.service = service
        self.gh = gh
        self.project = project
        self.state = state
        self.workspace = workspace
        self.repo_url = f"/repos/{project.name}"
        self.last_progress = 0.0
        self.repo_config: RepoConfig | None = None

    async def run(self) -> None:
        pull = await self.gh.getitem(f"{self.repo_url}/pulls/{self.state.pr_number}")
        if pull["head"]["sha"] != self.state.head_sha:
            await self.complete_without_run("cancelled", report.superseded_reason(pull["head"]["sha"]))
            return
        try:
            repo_config = self.repo_config = await self.read_repo_config(pull["base"]["sha"])
        except ConfigFileError as exc:
            await self.report_config_error(exc)
            return
        config = effective_config(repo_config, project_settings(self.project))
        if not (config.setup or config.validate or config.analysis or config.ui):
            await self.complete_without_run("neutral", "Nothing to validate", summary=NOTHING_TO_VALIDATE)
            return

        gate = fork_gate(fork=self.state.is_fork, author_role=await self.author_role(),
                         head_approved=await self.service.store.is_head_approved(
                             self.project.id, self.state.pr_number, self.state.head_sha))
        if not gate.run:
            await self.wait_for_approval(gate.reason)
            return
        secrets = await self.service.services.store.projects.secret_values(self.project.id) \
            if gate.with_secrets else {}
        redactor = PROCESS_REDACTOR.child(list(secrets.values()))

        checkout_step, checkout = await self.checkout()
        if checkout is None:
            await self.report(RunOutcome([checkout_step], [], "failure", []), redactor)
            return
        changed = report.changed_lines([f async for f in self.gh.getiter(
            f"{self.repo_url}/pulls/{self.state.pr_number}/files")])
        scope = f"{self.project.id}:{'trusted' if gate.with_secrets else 'fork'}"
        settings = self.service.services.settings
        plan = RunPlan(workspace=self.workspace, config=config, tracked_files=checkout.tracked_files,
                       secrets=secrets, snapshot_scope=scope, changed_lines=changed,
                       browser=BrowserSetup(chromium_path=settings.chromium_path,
                                            screenshots_dir=screenshots_dir(settings.data_dir, self.state.id)))
        outcome = await self.service.runner.run(plan, redactor=redactor, on_progress=self.progress,
                                                leading_steps=[checkout_step])
        if gate.with_secrets is False and self.state.is_fork:
            outcome.notes.append("fork PR: run without the project's secrets")
        await self.report(outcome, redactor, timeout_minutes=config.timeout_minutes)

    async def read_repo_config(self, base_sha: str) -> RepoConfig | None:
        """The repository's config at the PR's BASE: a PR cannot change what runs on it."""
        return await fetch_repo_config(self.gh, self.project.name, base_sha)

    async def author_role(self) -> str | None:
        if not self.state.is_fork or not self.state.author:
            return None
        return await repository_role(self.gh, self.service.services.permission_cache, self.project.name,
                                     self.state.author)

    async def checkout(self):  # type: ignore[no-untyped-def]
        github = self.service.services.github
        assert github is not None and self.project.installation_id is not None
        token = await github.installation_token(self.project.installation_id)
        started = time.monotonic()
        try:
            result = await self.service.checkouts.checkout(self.project.name, sha=self.state.head_sha, token=token,
                                                           dest=self.workspace, pr_number=self.state.pr_number)
        except CheckoutError as exc:
            return report.StepResult("checkout", "checkout", "failed", time.monotonic() - started,
                                     detail=str(exc), output_tail=str(exc)), None
        return report.StepResult("checkout", "checkout", "passed", time.monotonic() - started,
                                 detail=self.state.head_sha[:7]), result

    async def progress(self, steps, current: str | None, stage: str | None, tail: str) -> None:  # type: ignore[no-untyped-def]
        """Called at most every few seconds while a step runs (the tail is masked already)."""
        output = report.in_progress_output(steps, current, tail, current_stage=stage)
        await self.patch_check_run({"output": output})
        await self.service.store.set_progress(self.state.id, {
            "steps": [step.__dict__ for step in steps], "current": current, "stage": stage,
            "tail": tail[-report.LIVE_TAIL_CHARS:]})
        self.service.services.bus.publish("validation.progress", project_id=self.project.id,
                                          validation_id=self.state.id, step=current, stage=stage,
                                          has_output=bool(tail.strip()))

    async def patch_check_run(self, data: dict[str, Any]) -> None:
        if self.state.check_run_id is not None:
            await self.gh.patch(f"{self.repo_url}/check-runs/{self.state.check_run_id}", data=data)

    async def report(self, outcome: RunOutcome, redactor: Redactor, *, timeout_minutes: int | None = None) -> None:
        details_url = self.service.details_url(self.state.id)
        public_url = self.service.services.settings.public_url
        shots = [(s.path, screenshot_url(public_url, self.state.id, s.file)) for s in outcome.screenshots]
        results = {"steps": [step.__dict__ for step in outcome.steps], "notes": outcome.notes,
                   "annotations": len(outcome.annotations),
                   "screenshots": [shot.__dict__ for shot in outcome.screenshots]}
        output = report.check_run_output(outcome.steps, head_sha=self.state.head_sha,
                                         conclusion=outcome.conclusion, details_url=details_url,
                                         notes=outcome.notes, timeout_minutes=timeout_minutes, screenshots=shots)
        output = {k: redactor.redact(v) for k, v in output.items()}
        images = report.check_run_images(shots) if publicly_reachable(public_url) else []
        if not await self.service.store.complete(self.state.id, conclusion=outcome.conclusion,
                                                 title=output["title"], results=results,
                                                 snapshot_id=outcome.snapshot_key):
            return  # superseded while finishing: the newer run reports
        auto_merge, merge_button = await self.merge_plan(outcome.conclusion)
        batches = report.annotation_batches(outcome.annotations) or [[]]
        final_output: dict[str, Any] = {**output, "annotations": batches[0]}
        if images:
            final_output["images"] = images
        await self.patch_check_run({"status": "completed", "conclusion": outcome.conclusion,
                                    "completed_at": _now(), "output": final_output,
                                    "actions": self.actions(outcome.conclusion, merge_allowed=merge_button)})
        for batch in batches[1:]:
            await self.patch_check_run({"output": {"title": output["title"], "summary": output["summary"],
                                                   "annotations": batch}})
        body = report.render_comment(outcome.steps, head_sha=self.state.head_sha, conclusion=outcome.conclusion,
                                     check_run_url=None, details_url=details_url, notes=outcome.notes,
                                     timeout_minutes=timeout_minutes, screenshots=shots)
        await self.upsert_comment(redactor.redact(body))
        await self.finished(outcome.conclusion, output["title"])
        if auto_merge:
            await self.auto_merge()

    def actions(self, conclusion: str, *, merge_allowed: bool = False) -> list[dict[str, str]]:
        """The completed check run's buttons (handled by handlers/checks.py)."""
        return check_run_actions(conclusion, merge_allowed=merge_allowed,
                                 agent_configured=self.service.services.agent_backend_configured_for(self.project))

    async def merge_plan(self, conclusion: str) -> tuple[bool, bool]:
        """(auto-merge now, show the Merge button) for a completed validation. With auto-merge on
        there is no button: the merge follows at once. A failure to read what decides the button
        costs the button, never the report."""
        merges = self.service.services.merges
        if conclusion != "success" or merges is None:
            return False, False
        settings = await merges.settings(self.project, self.state.pr_number, self.repo_config)
        if settings.auto_merge:
            return True, False
        try:
            return False, await merges.merge_button(self.gh, self.project, await self.service.store.get(self.state.id))
        except Exception:
            log.exception("validation %s: could not decide about the Merge button", self.state.id)
            return False, False

    async def auto_merge(self) -> None:
        merges = self.service.services.merges
        assert merges is not None
        try:
            await merges.auto_merge(self.gh, self.project, await self.service.store.get(self.state.id))
        except Exception:  # the validation is reported; its job must not run again for this
            log.exception("validation %s: auto-merge failed", self.state.id)

    async def finished(self, conclusion: str, title: str) -> None:
        services = self.service.services
        await services.store.audit.record("validation.completed", project_id=self.project.id,
                                          installation_id=self.project.installation_id,
                                          details={"pr": self.state.pr_number, "head_sha": self.state.head_sha,
                                                   "conclusion": conclusion, "title": title})
        services.bus.publish("validation.completed", project_id=self.project.id, validation_id=self.state.id,
                             pr_number=self.state.pr_number, head_sha=self.state.head_sha, conclusion=conclusion)

    async def complete_without_run(self, conclusion: str, reason: str, *, summary: str | None = None) -> None:
        title = f"Cancelled: {reason}" if conclusion == "cancelled" else reason
        if await self.service.store.complete(self.state.id, conclusion=conclusion, title=title, results={}):
            await self.patch_check_run({"status": "completed", "conclusion": conclusion, "completed_at": _now(),
                                        "output": {"title": title, "summary": summary or title + "."}})
            await self.finished(conclusion, title)

    async def report_config_error(self, exc: ConfigFileError) -> None:
        title = f"Invalid {CONFIG_PATH}"
        summary = f"{exc}\n\nThe file is read from the PR's base branch; fix it there."
        if not await self.service.store.complete(self.state.id, conclusion="failure", title=title,
                                                 results={"config_error": str(exc)}):
            return
        annotations = []
        if exc.line is not None:
            annotations.append({"path": CONFIG_PATH, "start_line": exc.line, "end_line": exc.line,
                                "annotation_level": "failure", "message": str(exc)})
        await self.patch_check_run({"status": "completed", "conclusion": "failure", "completed_at": _now(),
                                    "output": {"title": title, "summary": summary, "annotations": annotations},
                                    "actions": self.actions("failure")})
        await self.upsert_comment(f"{report.COMMENT_MARKER}\n### Validation could not start\n\n{summary}")
        await self.finished("failure", title)

    async def wait_for_approval(self, reason: str) -> None:
        title = "Waiting for a maintainer: /ok-to-test"
        summary = (f"{reason}, so its code does not run until a maintainer with write access comments "
                   f"`/ok-to-test` on the PR. The approval holds for {self.state.head_sha[:7]} only.")
        if not await self.service.store.wait_for_approval(self.state.id, title=title):
            return
        await self.patch_check_run({"status": "completed", "conclusion": "action_required", "completed_at": _now(),
                                    "output": {"title": title, "summary": summary},
                                    "actions": self.actions("action_required")})
        await self.upsert_comment(f"{report.COMMENT_MARKER}\n### {title}\n\n{summary}")
        await self.finished("action_required", title)

    async def finish_broken(self, exc: Exception) -> None:
        title = "CodegenApp could not validate this head"
        reason = "the sandbox is not available on the app's host" if isinstance(exc, SandboxUnavailable) \
            else f"{type(exc).__name__}: {exc}"
        # The error may quote anything the run saw: mask it before it reaches the database, the
        # details page or the check run.
        secrets = await self.service.services.store.projects.secret_values(self.project.id)
        reason = PROCESS_REDACTOR.child(list(secrets.values())).redact(reason)
        if await self.service.store.complete(self.state.id, conclusion="failure", title=title,
                                             results={"error": reason}):
            await self.patch_check_run({"status": "completed", "conclusion": "failure", "completed_at": _now(),
                                        "output": {"title": title, "summary": f"{title}: {reason}"},
                                        "actions": self.actions("failure")})
            await self.finished("failure", title)

    async def upsert_comment(self, body: str) -> None:
        """The one comment of the app on this PR, edited in place (found again by its marker)."""
        store = self.service.store
        parts = report.split_comment(body)
        comment_id = await store.comment_id(self.project.id, self.state.pr_number)
        if comment_id is None:
            comment_id = await self.find_comment()
        if comment_id is not None:
            try:
                await self.gh.patch(f"{self.repo_url}/issues/comments/{comment_id}", data={"body": parts[0]})
            except BadRequest as exc:
                if exc.status_code != 404:
                    raise
                comment_id = None  # someone deleted it
        if comment_id is None:
            created = await self.gh.post(f"{self.repo_url}/issues/{self.state.pr_number}/comments",
                                         data={"body": parts[0]})
            comment_id = created["id"]
        await store.set_comment_id(self.project.id, self.state.pr_number, comment_id)

    async def find_comment(self) -> int | None:
        async for comment in self.gh.getiter(f"{self.repo_url}/issues/{self.state.pr_number}/comments"):
            if (comment.get("body") or "").startswith(report.COMMENT_MARKER):
                return int(comment["id"])
        return None
