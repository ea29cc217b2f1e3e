"""Agent runs: a goal becomes a validated PR. The I/O shell around the pure state machine
(pipeline/agents/machine.py); one step of a run, with all its I/O, is pipeline/agents/step.py.

**Starting.** `AgentRunService.start` (the API, `/agent <goal>` on a PR, the "Fix with agent" button)
records the run and its first job in one transaction. Everything else happens in `agent_run` jobs:
a job takes the run's lease, looks at what the run is waiting for (the agent, or the PR and its newest
validation), asks `next_step` what to do, does it, stores the result fenced by the lease and the status
it read, and repeats until the run must wait. Waiting is a delayed job (`run_after`), so a run survives
restarts: a new app on the same database picks the next poll up and the run goes on.

**Users.** Confirm, reject and cancel are fenced changes of the status (a concurrent job's write then
fails its fence and stops); each queues a job that takes it from there. Cancelling also stops a local
agent that is running (in this process at once, elsewhere within a few seconds).

**Validation.** The agent's PR is validated like any PR (its webhooks). `validation.completed` on the
event bus and a closed PR (handlers/agent_prs.py) each nudge the run; the run's own polls look at the
newest validation of the PR's head anyway, so a missed nudge costs only time. With no validation of a head after `Timing.validation_start_grace`
(a lost webhook), the run starts one.

Every status change is published on the bus (`agent.run.started`, `agent.run.updated`,
`agent.run.completed`, `pr.created`) and written to the audit log; how a run ended is logged at INFO.

**The PR.** A run with a PR says where it stands there (comments.py): its plan (updated when a
maintainer decides), the context of a PR the agent opened, and its outcome. A run started by a PR
command or the Fix button has that PR from the start; a run started elsewhere has one once the agent
opened it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import aiohttp

from bot import labels
from bot.config import Settings
from bot.events import AppEvent, EventBus, JobWakeup
from bot.github.github_app import GitHubApp
from bot.models import (AGENT_AWAITING_CONFIRMATION, AGENT_FIXING, AGENT_PENDING, AGENT_PLANNING, AGENT_PR_OPEN,
                        AGENT_RUNNING, AGENT_TERMINAL, AGENT_VALIDATING, JOB_AGENT_RUN, AgentRun, Project, utcnow)
from bot.redact import PROCESS_REDACTOR, Redactor
from bot.store import ClaimedJob, Store
from bot.store.agent_runs import NewRun
from pipeline.agents.availability import AgentAvailability
from pipeline.agents.backend import CODEGEN, LOCAL, AgentBackend, AgentError, chosen_backend
from pipeline.agents.codegen import CodegenBackend, CodegenClient
from pipeline.agents.comments import PrComment, outcome_comment, plan_comment
from pipeline.agents.local_backend import LocalAgentBackend
from pipeline.agents.machine import (DEFAULT_TIMING, CallFailed, Cancel, Confirm, Event, Finish, Refuse, Reject,
                                     RunFacts, Timing, Transition, next_step)
from pipeline.agents.prompts import MAX_GOAL_CHARS, fix_goal
from pipeline.agents.step import RunStep, describe_error, is_terminal
from pipeline.sandbox.sandbox import Sandbox
from pipeline.validation.service import ValidationService
from pipeline.workspace.checkout import Checkouts

log = logging.getLogger(__name__)

SOURCES = ("api", "dashboard", "pr_comment", "fix_button")
MAX_STEPS = 12
WATCH_SECONDS = 2.0
_NOT_ENDED = tuple(s for s in (AGENT_PENDING, AGENT_PLANNING, AGENT_AWAITING_CONFIRMATION, AGENT_RUNNING,
                               AGENT_PR_OPEN, AGENT_VALIDATING, AGENT_FIXING))


class AgentRunRefused(Exception):
    """The run cannot be started; the message says why (for the user)."""


class AgentRunConflict(Exception):
    """The run is not in a status where this applies; the message says why."""


def run_json(run: AgentRun) -> dict[str, Any]:
    """The run as the API and the dashboard show it."""
    def when(value: Any) -> str | None:
        return value.isoformat() if value is not None else None

    handle = run.agent_handle or {}
    return {
        "id": run.id, "project_id": run.project_id, "target_text": run.target_text, "status": run.status,
        "source": run.source, "requested_by": run.requested_by, "backend": run.backend,
        "auto_confirm": run.auto_confirm, "plan": run.plan_text, "plan_generated": run.plan_generated,
        "plan_decided_by": run.plan_decided_by, "origin_pr_number": run.origin_pr_number,
        "pr_number": run.pr_number, "pr_url": run.pr_url, "pr_created": run.pr_created, "branch": run.branch,
        "fix_attempts": run.fix_attempts, "max_fix_attempts": run.max_fix_attempts,
        "validation_status": run.validation_status, "last_validation_id": run.last_validation_id,
        "reason": run.reason, "agent_url": handle.get("web_url"), "created_at": when(run.created_at),
        "updated_at": when(run.updated_at), "completed_at": when(run.completed_at),
    }


def completions_by_pr(events: list[AppEvent]) -> dict[tuple[str, int], list[AppEvent]]:
    """The `validation.completed` events this process nudges agent runs after, by (project, PR). Not
    another process's (it nudges them itself) nor a merge queue's commit's: it is no PR's (its
    `pr_number` is None, which would select every run without a PR)."""
    by_pr: dict[tuple[str, int], list[AppEvent]] = {}
    for event in events:
        if event.name == "validation.completed" and not event.remote and event.data.get("pr_number") is not None:
            by_pr.setdefault((event.data["project_id"], event.data["pr_number"]), []).append(event)
    return by_pr


class AgentRunService:
    def __init__(self, store: Store, github: GitHubApp, bus: EventBus, wakeup: JobWakeup,
                 http: aiohttp.ClientSession, settings: Settings, *, sandbox: Sandbox, checkouts: Checkouts,
                 validations: ValidationService, availability: AgentAvailability,
                 timing: Timing = DEFAULT_TIMING) -> None:
        self.store = store
        self.runs = store.agent_runs
        self.github = github
        self.bus = bus
        self.wakeup = wakeup
        self.http = http
        self.settings = settings  # read for Codegen, paths and leases only: the App's own values come from `github`
        self.sandbox = sandbox
        self.checkouts = checkouts
        self.validations = validations
        self.availability = availability
        self.timing = timing
        self.local_timeout_seconds = 60 * 60.0
        self.lease_seconds = max(10.0, settings.job_lease_seconds * 2)
        self._codegen: CodegenClient | None = None
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self.ending: set[str] = set()  # runs a job of this process is ending itself (not to be stopped)
        self._timers: set[asyncio.TimerHandle] = set()
        self._listener: asyncio.Task[None] | None = None

    # ---- configuration ---------------------------------------------------------------------------------

    def codegen_client(self) -> CodegenClient:
        if self._codegen is None:
            settings = self.settings
            if not settings.codegen_api_key or not settings.codegen_org_id:
                raise AgentError("the Codegen backend needs CODEGEN_API_KEY and CODEGEN_ORG_ID", terminal=True)
            self._codegen = CodegenClient(self.http, base_url=settings.codegen_api_url,
                                          api_key=settings.codegen_api_key, org_id=settings.codegen_org_id)
        return self._codegen

    def backend(self, run: AgentRun, project: Project) -> AgentBackend:
        if run.backend == CODEGEN:
            return CodegenBackend(self.codegen_client(), github_url=self.settings.github_url)
        if run.backend == LOCAL:
            command = (project.agent_command or "").strip()
            if not command:
                raise AgentError("the local agent backend needs a command in the project's settings", terminal=True)
            if not self.github.configured:
                raise AgentError("the local agent backend needs the GitHub App", terminal=True)
            return LocalAgentBackend(
                command=command, sandbox=self.sandbox, checkouts=self.checkouts, github=self.github,
                github_url=self.settings.github_url, work_root=self.settings.data_dir / "agent-workspaces",
                redactor=PROCESS_REDACTOR, timeout_seconds=self.local_timeout_seconds,
                on_started=lambda: self.bus.publish("agent.local.started", run_id=run.id,
                                                    project_id=run.project_id))
        raise AgentError(f"no agent backend {run.backend!r}", terminal=True)

    # ---- what users do ---------------------------------------------------------------------------------

    async def start(self, project: Project, goal: str, *, pr_number: int | None = None, source: str,
                    requested_by: str | None) -> AgentRun:
        """Start a run for `goal` (on PR `pr_number`: the agent works on that PR's branch)."""
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}")
        goal = (goal or "").strip()
        if not goal and source == "fix_button":
            goal = fix_goal()
        if not goal:
            raise AgentRunRefused("the goal is empty: say what the agent should do")
        if len(goal) > MAX_GOAL_CHARS:
            raise AgentRunRefused(f"the goal is longer than {MAX_GOAL_CHARS} characters")
        if project.archived_at is not None:
            raise AgentRunRefused(f"{project.name} is archived (the app is not installed on it)")
        if (problem := self.availability.problem(project)) is not None:
            raise AgentRunRefused(f"no agent run was started: {problem}")
        if pr_number is not None:
            busy = await self.runs.active_for_pr(project.id, pr_number)
            if busy:
                raise AgentRunRefused(f"agent run `{busy[0].id}` is already working on this PR "
                                      f"({labels.agent_status(busy[0].status).lower()})")
        run = await self.runs.create(NewRun(
            project_id=project.id, target_text=goal, source=source, requested_by=requested_by,
            backend=chosen_backend(project, self.settings), auto_confirm=project.auto_confirm_plans,
            max_fix_attempts=max(0, project.max_fix_attempts), origin_pr_number=pr_number))
        self.bus.publish("agent.run.started", run_id=run.id, project_id=project.id, status=run.status,
                                  source=source, pr_number=pr_number, backend=run.backend)
        await self.store.audit.record(
            "agent.run.started", actor=requested_by, project_id=project.id, installation_id=project.installation_id,
            details={"run_id": run.id, "source": source, "pr": pr_number, "backend": run.backend,
                     "auto_confirm": run.auto_confirm})
        self.wake()
        return run

    async def confirm(self, run_id: str, *, by: str) -> AgentRun:
        run = await self._get(run_id)
        action = next_step(self.facts(run), Confirm(by), self.timing)
        if isinstance(action, Refuse):
            raise AgentRunConflict(action.reason)
        assert isinstance(action, Transition)
        after = await self.runs.transition(run_id, expect=(AGENT_AWAITING_CONFIRMATION,), values={
            "status": action.status, "plan_decided_by": by, "agent_handle": {}, "agent_started_at": None,
            "agent_seen_active": False, "agent_resumed": False, "polls": 0, "reason": action.reason})
        after = await self._user_changed(run, after, action.reason, by, "agent.plan.confirmed")
        await self.say_on_pr(after, plan_comment)
        return after

    async def reject(self, run_id: str, *, by: str) -> AgentRun:
        run = await self._get(run_id)
        action = next_step(self.facts(run), Reject(by), self.timing)
        if isinstance(action, Refuse):
            raise AgentRunConflict(action.reason)
        assert isinstance(action, Finish)
        after = await self.runs.transition(run_id, expect=(AGENT_AWAITING_CONFIRMATION,), values={
            "status": action.status, "plan_decided_by": by, "reason": action.reason, "completed_at": utcnow()})
        after = await self._user_changed(run, after, action.reason, by, "agent.plan.rejected")
        await self.say_on_pr(after, plan_comment)  # it says the run ended, too
        return after

    async def cancel(self, run_id: str, *, by: str) -> AgentRun:
        run = await self._get(run_id)
        action = next_step(self.facts(run), Cancel(by), self.timing)
        if isinstance(action, Refuse):
            raise AgentRunConflict(action.reason)
        assert isinstance(action, Finish)
        after = await self.runs.transition(run_id, expect=_NOT_ENDED, values={
            "status": action.status, "reason": action.reason, "completed_at": utcnow()})
        result = await self._user_changed(run, after, action.reason, by, "agent.run.cancelled")
        await self.say_on_pr(result, outcome_comment)
        task = self._tasks.get(run_id)
        if task is not None and not task.done():
            task.cancel()  # a local agent running here; elsewhere the job's watch notices
        return result

    async def _user_changed(self, before: AgentRun, after: AgentRun | None, reason: str, actor: str,
                            audit_action: str) -> AgentRun:
        if after is None:
            current = await self._get(before.id)
            raise AgentRunConflict(f"the run changed meanwhile (it is {labels.agent_status(current.status).lower()})")
        project = await self.store.projects.get_project(after.project_id)
        await self.store.audit.record(
            audit_action, actor=actor, project_id=after.project_id,
            installation_id=project.installation_id if project else None, details={"run_id": after.id})
        await self.changed(project, before, after, reason, actor=actor)
        self.wake()
        return after

    async def _get(self, run_id: str) -> AgentRun:
        run = await self.runs.get(run_id)
        if run is None:
            raise LookupError(f"no agent run {run_id}")
        return run

    # ---- what the run says on its PR ------------------------------------------------------------------

    async def redactor(self, project_id: str) -> Redactor:
        """Masks the project's secrets and the process's own: whatever the run says anywhere passes it."""
        secrets = await self.store.projects.secret_values(project_id)
        return PROCESS_REDACTOR.child(list(secrets.values()))

    def run_url(self, run: AgentRun, project: Project) -> str:
        """The run's page on the dashboard."""
        return f"{self.settings.public_url}/projects/{project.name}/runs/{run.id}"

    async def say_on_pr(self, run: AgentRun, comment: PrComment) -> None:
        """Post or update the run's `comment` (comments.py: its marker and body, from the run and the
        URL of its page) on its PR (none without a PR), masked of the project's secrets. The run goes
        on either way: a failure is only logged."""
        if run.pr_number is None or not self.github.configured:
            return
        project = await self.store.projects.get_project(run.project_id)
        if project is None or project.installation_id is None:
            return
        marker, body = comment(run, self.run_url(run, project))
        try:
            repo = self.github.repo(project.installation_id, project.name)
            comments = repo.comments.masked(await self.redactor(project.id))
            await comments.upsert(run.pr_number, marker, body)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the run's page shows it either way
            log.exception("agent run %s: could not comment on #%s", run.id, run.pr_number)

    # ---- seams for PR commands and buttons ---------------------------------------------------------------

    async def agent_command(self, project: Project, pr_number: int, goal: str, *, actor: str) -> tuple[bool, str]:
        """`/agent <goal>` on a PR: (started, the reply for the PR)."""
        try:
            run = await self.start(project, goal, pr_number=pr_number, source="pr_comment", requested_by=actor)
        except AgentRunRefused as exc:
            return False, f"No agent run was started: {str(exc).removeprefix('no agent run was started: ')}."
        return True, self._started_message(run, project)

    async def fix_button(self, project: Project, pr_number: int, *, actor: str,
                         queue_report: str | None = None) -> tuple[bool, str]:
        """The "Fix with agent" button of a failed check run: (started, the reply for the PR). On the "Merge
        queue" check run of an ejected PR, `queue_report` is what that run says (prompts.fix_goal)."""
        try:
            run = await self.start(project, fix_goal(queue_report), pr_number=pr_number, source="fix_button",
                                   requested_by=actor)
        except AgentRunRefused as exc:
            return False, f"No agent run was started: {str(exc).removeprefix('no agent run was started: ')}."
        return True, self._started_message(run, project)

    def _started_message(self, run: AgentRun, project: Project) -> str:
        started = f"[Agent run `{run.id[:8]}`]({self.run_url(run, project)}) started"
        if run.auto_confirm:
            return f"{started}: the agent is working on this PR."
        return (f"{started}: the agent's plan will be posted here; confirm it with `/plan confirm` or drop it "
                "with `/plan reject`.")

    async def plan_command(self, project: Project, pr_number: int, verb: str, *, actor: str) -> tuple[bool, str]:
        """`/plan confirm` or `/plan reject` on a PR: (done, the reply for the PR)."""
        if verb not in ("confirm", "reject"):
            return False, "Usage: `/plan confirm` or `/plan reject`."
        waiting = [r for r in await self.runs.active_for_pr(project.id, pr_number)
                   if r.status == AGENT_AWAITING_CONFIRMATION]
        if not waiting:
            return False, "No plan of an agent run is waiting for confirmation on this PR."
        try:
            if verb == "confirm":
                run = await self.confirm(waiting[0].id, by=actor)
                return True, f"Plan confirmed: the agent is making the change (run `{run.id}`)."
            run = await self.reject(waiting[0].id, by=actor)
            return True, f"Plan rejected: agent run `{run.id}` is cancelled."
        except AgentRunConflict as exc:
            return False, f"Nothing was done: {exc}."

    # ---- nudges ---------------------------------------------------------------------------------------

    async def nudge_pr(self, project_id: str, pr_number: int, *, validation_id: str | None = None) -> None:
        """Something happened to a PR (validation done, closed): the runs working on it look now."""
        for run in await self.runs.active_for_pr(project_id, pr_number):
            if validation_id is not None and run.status in (AGENT_PR_OPEN, AGENT_VALIDATING, AGENT_FIXING):
                await self.runs.link_validation(validation_id, run.id)
            await self.runs.nudge(run.id)
            self.wake()

    def start_listening(self) -> None:
        """Follow `validation.completed` on the bus (works without the explicit hook)."""
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen(), name="agent-runs-listener")

    async def _listen(self) -> None:
        with self.bus.subscribe() as queue:
            while True:
                events = [await queue.get()]
                while not queue.empty():  # what came meanwhile: their PRs' runs are read together (one round
                    events.append(queue.get_nowait())  # trip on PostgreSQL: AgentRunStore.active_for_pr)
                by_pr = completions_by_pr(events)
                await asyncio.gather(*(self._nudge_after(completed) for completed in by_pr.values()))

    async def _nudge_after(self, completed: list[AppEvent]) -> None:
        """Nudge the runs of one PR after each of its validations that completed, in their order."""
        for event in completed:
            try:
                await self.nudge_pr(event.data["project_id"], event.data["pr_number"],
                                    validation_id=event.data.get("validation_id"))
            except Exception:  # noqa: BLE001 - the runs' own polls still look
                log.exception("could not nudge agent runs after %s", event.data)

    async def close(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
            self._listener = None

    def wake(self, after: float = 0.0) -> None:
        if after <= 0:
            self.wakeup.wake(JOB_AGENT_RUN)
            return
        loop = asyncio.get_running_loop()
        timer: asyncio.TimerHandle | None = None

        def fire() -> None:
            self._timers.discard(timer)  # type: ignore[arg-type]
            self.wakeup.wake(JOB_AGENT_RUN)

        timer = loop.call_later(after + 0.02, fire)
        self._timers.add(timer)

    # ---- the job ----------------------------------------------------------------------------------------

    def facts(self, run: AgentRun) -> RunFacts:
        now = utcnow()
        return RunFacts(
            status=run.status, auto_confirm=run.auto_confirm, agent_started=bool(run.agent_handle),
            agent_seen_active=run.agent_seen_active, agent_resumed=run.agent_resumed,
            seconds_since_agent_start=(now - run.agent_started_at).total_seconds() if run.agent_started_at else 0.0,
            origin_pr=run.origin_pr_number is not None, pr_number=run.pr_number, fix_attempts=run.fix_attempts,
            max_fix_attempts=run.max_fix_attempts, fix_base_sha=run.fix_base_sha,
            handled_validation_id=run.handled_validation_id, polls=run.polls, transient_errors=run.transient_errors,
            seconds_in_status=(now - (run.status_changed_at or run.created_at)).total_seconds())

    async def run_job(self, job: ClaimedJob) -> None:
        run_id, token = job.args["run_id"], job.args.get("token")
        owner = f"{job.id}:{uuid.uuid4().hex[:12]}"
        run = await self.runs.acquire(run_id, owner, seconds=self.lease_seconds)
        if run is None:
            current = await self.runs.get(run_id)
            if current is None or current.status in AGENT_TERMINAL:
                return
            if token is None or token == current.poll_token:  # the holder may not see what this job brings
                expiry = await self.runs.lease_expiry(run_id)
                delay = max(0.2, (expiry - utcnow()).total_seconds() + 0.1) if expiry else 0.2
                await self.runs.nudge(run_id, after=min(delay, self.lease_seconds))
                self.wake(delay)
            return
        try:
            if token is not None and token != run.poll_token:
                return  # an older poll: a newer job owns the polling now
            inner = asyncio.create_task(self._advance(run, owner), name=f"agent-run-{run_id}")
            self._tasks[run_id] = inner
            watch = asyncio.create_task(self._watch(run_id, owner, inner))
            try:
                await inner
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # the worker is stopping: the job goes back to the queue
                log.info("agent run %s: stopped (cancelled)", run_id)
            finally:
                watch.cancel()
                if self._tasks.get(run_id) is inner:
                    del self._tasks[run_id]
                self.ending.discard(run_id)
        finally:
            await asyncio.shield(self.runs.release(run_id, owner))

    async def _watch(self, run_id: str, owner: str, inner: asyncio.Task[Any]) -> None:
        """Keep the run's lease while the step runs; stop the step when the run was cancelled elsewhere."""
        while not inner.done():
            await asyncio.sleep(min(WATCH_SECONDS, self.lease_seconds / 3))
            try:
                held = await self.runs.extend(run_id, owner, seconds=self.lease_seconds)
                run = await self.runs.get(run_id)
            except Exception:  # noqa: BLE001 - the database may be briefly unavailable
                log.exception("agent run %s: lease heartbeat failed", run_id)
                continue
            if not held or run is None or (run.status in AGENT_TERMINAL and run_id not in self.ending):
                inner.cancel()
                return

    async def _advance(self, run: AgentRun, owner: str) -> None:
        project = await self.store.projects.get_project(run.project_id)
        if project is None:
            return
        pending: Event | None = None
        for _ in range(MAX_STEPS):
            facts = self.facts(run)
            step = RunStep(self, run, project, owner)
            event = pending if pending is not None else await step.observe(facts)
            pending = None
            action = next_step(facts, event, self.timing)
            log.debug("agent run %s (%s): %s -> %s", run.id, run.status, type(event).__name__, action)
            try:
                after = await step.perform(action)
            except asyncio.CancelledError:
                raise
            except AgentError as exc:
                pending = CallFailed(exc.reason, terminal=exc.terminal, retry_after=exc.retry_after)
                continue
            except Exception as exc:  # noqa: BLE001 - the run retries with backoff, then fails saying why
                log.warning("agent run %s: %s failed: %s", run.id, type(action).__name__, exc, exc_info=True)
                pending = CallFailed(describe_error(exc), terminal=is_terminal(exc))
                continue
            if after is None:
                return
            run = after
        await self.runs.save(run.id, owner, expect=run.status, values={}, poll_after=self.timing.agent_poll)
        self.wake(self.timing.agent_poll)

    # ---- events ------------------------------------------------------------------------------------------

    async def changed(self, project: Project | None, before: AgentRun, after: AgentRun, reason: str | None = None,
                       *, actor: str | None = None) -> None:
        if before.status == after.status:
            return
        if reason:  # the agent's or GitHub's words may quote a secret: masked for the log, events and audit
            reason = (await self.redactor(after.project_id)).redact(reason)
        bus, audit = self.bus, self.store.audit
        installation_id = project.installation_id if project else None
        bus.publish("agent.run.updated", run_id=after.id, project_id=after.project_id, status=after.status,
                    previous=before.status, reason=reason, pr_number=after.pr_number)
        await audit.record("agent.run.updated", actor=actor, project_id=after.project_id,
                           installation_id=installation_id,
                           details={"run_id": after.id, "from": before.status, "to": after.status, "reason": reason})
        if after.status in AGENT_TERMINAL:
            log.info("agent run %s on %s: %s (%s)%s", after.id, project.name if project else after.project_id,
                     labels.agent_status(after.status), reason or "no reason given",
                     f", PR #{after.pr_number}" if after.pr_number is not None else "")
            bus.publish("agent.run.completed", run_id=after.id, project_id=after.project_id, status=after.status,
                        reason=reason, pr_number=after.pr_number)
            await audit.record("agent.run.completed", actor=actor, project_id=after.project_id,
                               installation_id=installation_id,
                               details={"run_id": after.id, "status": after.status, "reason": reason,
                                        "pr": after.pr_number, "fix_attempts": after.fix_attempts})
