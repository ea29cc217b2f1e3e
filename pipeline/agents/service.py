"""Agent runs: a goal becomes a validated PR. The I/O shell around the pure state machine
(pipeline/agents/machine.py).

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
event bus, `on_validation_completed` (for pipeline/validation/service.py) and a closed PR (handlers/agent_prs.py)
each nudge the run; the run's own polls look at the newest validation of the PR's head anyway, so a
missed nudge costs only time. With no validation of a head after `Timing.validation_start_grace`
(a lost webhook), the run starts one.

Every status change is published on the bus (`agent.run.started`, `agent.run.updated`,
`agent.run.completed`, `pr.created`) and written to the audit log.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import TYPE_CHECKING, Any

from gidgethub import BadRequest

from bot.models import (AGENT_AWAITING_CONFIRMATION, AGENT_CANCELLED, AGENT_COMPLETED, AGENT_FAILED, AGENT_FIXING,
                        AGENT_PENDING, AGENT_PLANNING, AGENT_PR_OPEN, AGENT_RUNNING, AGENT_TERMINAL,
                        AGENT_VALIDATING, AgentRun, Project, ValidationState, utcnow)
from bot.redact import PROCESS_REDACTOR, Redactor
from bot.store.agent_runs import JOB_AGENT_RUN, NewRun
from pipeline.agents.backend import (CODEGEN, LOCAL, AgentBackend, AgentError, AgentTarget, Mode, backend_problem,
                                     chosen_backend)
from pipeline.agents.machine import (DEFAULT_TIMING, OBSERVE_AGENT, OBSERVE_NOTHING, AgentObserved,
                                     AwaitValidation, CallFailed, Cancel, Confirm, Event, Finish, Idle,
                                     PullFacts, PullObserved, RecordPullRequest, Refuse, Reject, ResumeForFix,
                                     RunFacts, StartAgent, StartValidation, StorePlan, Tick, Timing, Transition,
                                     ValidationFacts, Wait, next_step, observation_needed)
from pipeline.agents.prompts import (MAX_GOAL_CHARS, FixContext, PromptContext, execute_prompt, fix_context,
                                     fix_prompt, plan_prompt, slug, title_of)

if TYPE_CHECKING:
    from gidgethub.abc import GitHubAPI

    from bot.services import Services
    from bot.store import ClaimedJob
    from pipeline.agents.codegen import CodegenClient

log = logging.getLogger(__name__)

SOURCES = ("api", "dashboard", "pr_comment", "fix_button")
MAX_STEPS = 12
WATCH_SECONDS = 2.0
FIX_GOAL = "Make the failing validation of this pull request pass."
PLAN_MARKER = "<!-- codegenapp:agent-plan:{run_id} -->"
ENDED_MARKER = "<!-- codegenapp:agent-run:{run_id}:ended -->"
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


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BadRequest):
        return f"GitHub answered {exc.status_code}: {exc}"
    return f"{type(exc).__name__}: {exc}"


def _pull_facts(pull: dict[str, Any]) -> PullFacts:
    state = "merged" if pull.get("merged") else str(pull.get("state") or "open")
    return PullFacts(state=state, head_sha=str(pull["head"]["sha"]))


def _validation_facts(state: ValidationState) -> ValidationFacts:
    return ValidationFacts(id=state.id, head_sha=state.head_sha, status=state.status, conclusion=state.conclusion,
                           title=state.title)


class AgentRunService:
    def __init__(self, services: "Services", *, timing: Timing = DEFAULT_TIMING) -> None:
        self.services = services
        self.timing = timing
        self.local_timeout_seconds = 60 * 60.0
        self.lease_seconds = max(10.0, services.settings.job_lease_seconds * 2)
        self._codegen: "CodegenClient | None" = None
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._ending: set[str] = set()  # runs a job of this process is ending itself (not to be stopped)
        self._timers: set[asyncio.TimerHandle] = set()
        self._listener: asyncio.Task[None] | None = None

    @property
    def store(self):  # type: ignore[no-untyped-def]
        return self.services.store.agent_runs

    # ---- configuration ---------------------------------------------------------------------------------

    def problem(self, project: Project) -> str | None:
        """Why no agent can run for this project, or None."""
        sandbox = self.services.sandbox
        return backend_problem(project, self.services.settings,
                               sandbox_ok=sandbox is not None and sandbox.capabilities.sandboxed,
                               github_ok=self.services.github is not None and self.services.validations is not None)

    def configured(self, project: Project) -> bool:
        return self.problem(project) is None

    def codegen_client(self) -> "CodegenClient":
        if self._codegen is None:
            from pipeline.agents.codegen import CodegenClient
            settings = self.services.settings
            if not settings.codegen_api_key or not settings.codegen_org_id:
                raise AgentError("the Codegen backend needs CODEGEN_API_KEY and CODEGEN_ORG_ID", terminal=True)
            self._codegen = CodegenClient(self.services.http, base_url=settings.codegen_api_url,
                                          api_key=settings.codegen_api_key, org_id=settings.codegen_org_id)
        return self._codegen

    def backend(self, run: AgentRun, project: Project) -> AgentBackend:
        if run.backend == CODEGEN:
            from pipeline.agents.codegen import CodegenBackend
            return CodegenBackend(self.codegen_client())
        if run.backend == LOCAL:
            from pipeline.agents.local_backend import LocalAgentBackend
            services = self.services
            command = (project.agent_command or "").strip()
            if not command:
                raise AgentError("the local agent backend needs a command in the project's settings", terminal=True)
            if services.sandbox is None or services.validations is None or services.github is None:
                raise AgentError("the local agent backend needs the GitHub App and the sandbox", terminal=True)
            return LocalAgentBackend(
                command=command, sandbox=services.sandbox, checkouts=services.validations.checkouts,
                github=services.github, github_url=services.settings.github_url,
                work_root=services.settings.data_dir / "agent-workspaces", redactor=PROCESS_REDACTOR,
                app_id=services.settings.app_id, timeout_seconds=self.local_timeout_seconds,
                on_started=lambda: services.bus.publish("agent.local.started", run_id=run.id,
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
            goal = FIX_GOAL
        if not goal:
            raise AgentRunRefused("the goal is empty: say what the agent should do")
        if len(goal) > MAX_GOAL_CHARS:
            raise AgentRunRefused(f"the goal is longer than {MAX_GOAL_CHARS} characters")
        if project.archived_at is not None:
            raise AgentRunRefused(f"{project.name} is archived (the app is not installed on it)")
        if (problem := self.problem(project)) is not None:
            raise AgentRunRefused(f"no agent run was started: {problem}")
        if pr_number is not None:
            busy = await self.store.active_for_pr(project.id, pr_number)
            if busy:
                raise AgentRunRefused(f"agent run `{busy[0].id}` is already working on this PR "
                                      f"({busy[0].status.replace('_', ' ')})")
        run = await self.store.create(NewRun(
            project_id=project.id, target_text=goal, source=source, requested_by=requested_by,
            backend=chosen_backend(project, self.services.settings), auto_confirm=project.auto_confirm_plans,
            max_fix_attempts=max(0, project.max_fix_attempts), origin_pr_number=pr_number))
        self.services.bus.publish("agent.run.started", run_id=run.id, project_id=project.id, status=run.status,
                                  source=source, pr_number=pr_number, backend=run.backend)
        await self.services.store.audit.record(
            "agent.run.started", actor=requested_by, project_id=project.id, installation_id=project.installation_id,
            details={"run_id": run.id, "source": source, "pr": pr_number, "backend": run.backend,
                     "auto_confirm": run.auto_confirm})
        self._wake()
        return run

    async def confirm(self, run_id: str, *, by: str) -> AgentRun:
        run = await self._get(run_id)
        action = next_step(self.facts(run), Confirm(by), self.timing)
        if isinstance(action, Refuse):
            raise AgentRunConflict(action.reason)
        assert isinstance(action, Transition)
        after = await self.store.transition(run_id, expect=(AGENT_AWAITING_CONFIRMATION,), values={
            "status": action.status, "plan_decided_by": by, "agent_handle": {}, "agent_started_at": None,
            "agent_seen_active": False, "agent_resumed": False, "polls": 0, "reason": action.reason})
        return await self._user_changed(run, after, action.reason, by, "agent.plan.confirmed")

    async def reject(self, run_id: str, *, by: str) -> AgentRun:
        run = await self._get(run_id)
        action = next_step(self.facts(run), Reject(by), self.timing)
        if isinstance(action, Refuse):
            raise AgentRunConflict(action.reason)
        assert isinstance(action, Finish)
        after = await self.store.transition(run_id, expect=(AGENT_AWAITING_CONFIRMATION,), values={
            "status": action.status, "plan_decided_by": by, "reason": action.reason, "completed_at": utcnow()})
        return await self._user_changed(run, after, action.reason, by, "agent.plan.rejected")

    async def cancel(self, run_id: str, *, by: str) -> AgentRun:
        run = await self._get(run_id)
        action = next_step(self.facts(run), Cancel(by), self.timing)
        if isinstance(action, Refuse):
            raise AgentRunConflict(action.reason)
        assert isinstance(action, Finish)
        after = await self.store.transition(run_id, expect=_NOT_ENDED, values={
            "status": action.status, "reason": action.reason, "completed_at": utcnow()})
        result = await self._user_changed(run, after, action.reason, by, "agent.run.cancelled")
        task = self._tasks.get(run_id)
        if task is not None and not task.done():
            task.cancel()  # a local agent running here; elsewhere the job's watch notices
        return result

    async def _user_changed(self, before: AgentRun, after: AgentRun | None, reason: str, actor: str,
                            audit_action: str) -> AgentRun:
        if after is None:
            current = await self._get(before.id)
            raise AgentRunConflict(f"the run changed meanwhile (it is {current.status.replace('_', ' ')})")
        project = await self.services.store.projects.get_project(after.project_id)
        await self.services.store.audit.record(
            audit_action, actor=actor, project_id=after.project_id,
            installation_id=project.installation_id if project else None, details={"run_id": after.id})
        await self._changed(project, before, after, reason, actor=actor)
        self._wake()
        return after

    async def _get(self, run_id: str) -> AgentRun:
        run = await self.store.get(run_id)
        if run is None:
            raise LookupError(f"no agent run {run_id}")
        return run

    # ---- seams for PR commands and buttons ---------------------------------------------------------------

    async def agent_command(self, project: Project, pr_number: int, goal: str, *, actor: str) -> tuple[bool, str]:
        """`/agent <goal>` on a PR: (started, the reply for the PR)."""
        try:
            run = await self.start(project, goal, pr_number=pr_number, source="pr_comment", requested_by=actor)
        except AgentRunRefused as exc:
            return False, f"No agent run was started: {str(exc).removeprefix('no agent run was started: ')}."
        return True, self._started_message(run)

    async def fix_button(self, project: Project, pr_number: int, *, actor: str) -> tuple[bool, str]:
        """The "Fix with agent" button of a failed check run: (started, the reply for the PR)."""
        try:
            run = await self.start(project, "", pr_number=pr_number, source="fix_button", requested_by=actor)
        except AgentRunRefused as exc:
            return False, f"No agent run was started: {str(exc).removeprefix('no agent run was started: ')}."
        return True, self._started_message(run)

    def _started_message(self, run: AgentRun) -> str:
        if run.auto_confirm:
            return f"Agent run `{run.id}` started: the agent is working on this PR."
        return (f"Agent run `{run.id}` started: the agent's plan will be posted here; confirm it with "
                "`/plan confirm` or drop it with `/plan reject`.")

    async def plan_command(self, project: Project, pr_number: int, verb: str, *, actor: str) -> tuple[bool, str]:
        """`/plan confirm` or `/plan reject` on a PR: (done, the reply for the PR)."""
        if verb not in ("confirm", "reject"):
            return False, "Usage: `/plan confirm` or `/plan reject`."
        waiting = [r for r in await self.store.active_for_pr(project.id, pr_number)
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

    async def on_validation_completed(self, state: ValidationState) -> None:
        await self.nudge_pr(state.project_id, state.pr_number, validation_id=state.id)

    async def nudge_pr(self, project_id: str, pr_number: int, *, validation_id: str | None = None) -> None:
        """Something happened to a PR (validation done, closed): the runs working on it look now."""
        for run in await self.store.active_for_pr(project_id, pr_number):
            if validation_id is not None and run.status in (AGENT_PR_OPEN, AGENT_VALIDATING, AGENT_FIXING):
                await self.store.link_validation(validation_id, run.id)
            await self.store.nudge(run.id)
            self._wake()

    def start_listening(self) -> None:
        """Follow `validation.completed` on the bus (works without the explicit hook)."""
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen(), name="agent-runs-listener")

    async def _listen(self) -> None:
        with self.services.bus.subscribe() as queue:
            while True:
                event = await queue.get()
                if event.name != "validation.completed":
                    continue
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

    def _wake(self, after: float = 0.0) -> None:
        worker = self.services.worker
        if worker is None:
            return
        if after <= 0:
            worker.wake(JOB_AGENT_RUN)
            return
        loop = asyncio.get_running_loop()
        timer: asyncio.TimerHandle | None = None

        def fire() -> None:
            self._timers.discard(timer)  # type: ignore[arg-type]
            worker.wake(JOB_AGENT_RUN)

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

    async def run_job(self, job: "ClaimedJob") -> None:
        run_id, token = job.args["run_id"], job.args.get("token")
        owner = f"{job.id}:{uuid.uuid4().hex[:12]}"
        run = await self.store.acquire(run_id, owner, seconds=self.lease_seconds)
        if run is None:
            current = await self.store.get(run_id)
            if current is None or current.status in AGENT_TERMINAL:
                return
            if token is None or token == current.poll_token:  # the holder may not see what this job brings
                expiry = await self.store.lease_expiry(run_id)
                delay = max(0.2, (expiry - utcnow()).total_seconds() + 0.1) if expiry else 0.2
                await self.store.nudge(run_id, after=min(delay, self.lease_seconds))
                self._wake(delay)
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
                self._ending.discard(run_id)
        finally:
            await asyncio.shield(self.store.release(run_id, owner))

    async def _watch(self, run_id: str, owner: str, inner: asyncio.Task[Any]) -> None:
        """Keep the run's lease while the step runs; stop the step when the run was cancelled elsewhere."""
        while not inner.done():
            await asyncio.sleep(min(WATCH_SECONDS, self.lease_seconds / 3))
            try:
                held = await self.store.extend(run_id, owner, seconds=self.lease_seconds)
                run = await self.store.get(run_id)
            except Exception:  # noqa: BLE001 - the database may be briefly unavailable
                log.exception("agent run %s: lease heartbeat failed", run_id)
                continue
            if not held or run is None or (run.status in AGENT_TERMINAL and run_id not in self._ending):
                inner.cancel()
                return

    async def _advance(self, run: AgentRun, owner: str) -> None:
        project = await self.services.store.projects.get_project(run.project_id)
        if project is None:
            return
        pending: Event | None = None
        for _ in range(MAX_STEPS):
            facts = self.facts(run)
            step = _Step(self, run, project, owner)
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
                pending = CallFailed(_describe(exc), terminal=isinstance(exc, BadRequest) and exc.status_code == 422)
                continue
            if after is None:
                return
            run = after
        await self.store.save(run.id, owner, expect=run.status, values={}, poll_after=self.timing.agent_poll)
        self._wake(self.timing.agent_poll)

    # ---- events ------------------------------------------------------------------------------------------

    async def _changed(self, project: Project | None, before: AgentRun, after: AgentRun, reason: str | None = None,
                       *, actor: str | None = None) -> None:
        if before.status == after.status:
            return
        bus, audit = self.services.bus, self.services.store.audit
        installation_id = project.installation_id if project else None
        bus.publish("agent.run.updated", run_id=after.id, project_id=after.project_id, status=after.status,
                    previous=before.status, reason=reason, pr_number=after.pr_number)
        await audit.record("agent.run.updated", actor=actor, project_id=after.project_id,
                           installation_id=installation_id,
                           details={"run_id": after.id, "from": before.status, "to": after.status, "reason": reason})
        if after.status in AGENT_TERMINAL:
            bus.publish("agent.run.completed", run_id=after.id, project_id=after.project_id, status=after.status,
                        reason=reason, pr_number=after.pr_number)
            await audit.record("agent.run.completed", actor=actor, project_id=after.project_id,
                               installation_id=installation_id,
                               details={"run_id": after.id, "status": after.status, "reason": reason,
                                        "pr": after.pr_number, "fix_attempts": after.fix_attempts})


class _Step:
    """One observe-decide-do step of one run (all the run's I/O is here)."""

    def __init__(self, service: AgentRunService, run: AgentRun, project: Project, owner: str) -> None:
        self.service = service
        self.services = service.services
        self.run = run
        self.project = project
        self.owner = owner
        self.pull: dict[str, Any] | None = None
        self.validation: ValidationState | None = None

    @property
    def gh(self) -> "GitHubAPI":
        github = self.services.github
        if github is None or self.project.installation_id is None:
            raise AgentError("the project has no GitHub installation the app can use", terminal=True)
        return github.installation(self.project.installation_id)

    async def get_pull(self, number: int) -> dict[str, Any]:
        try:
            pull: dict[str, Any] = await self.gh.getitem(f"/repos/{self.project.name}/pulls/{number}")
        except BadRequest as exc:
            if exc.status_code == 404:
                raise AgentError(f"pull request #{number} is gone (404)", terminal=True) from None
            raise
        self.pull = pull
        return pull

    # ---- observe ---------------------------------------------------------------------------------------

    async def observe(self, facts: RunFacts) -> Event:
        kind = observation_needed(facts)
        try:
            if kind == OBSERVE_NOTHING:
                return Tick()
            if kind == OBSERVE_AGENT:
                status = await self.service.backend(self.run, self.project).poll(self.run.agent_handle)
                pull = None
                if self.run.pr_number is not None:
                    pull = _pull_facts(await self.get_pull(self.run.pr_number))
                return AgentObserved(status, pull)
            assert self.run.pr_number is not None
            pull = _pull_facts(await self.get_pull(self.run.pr_number))
            found = await self.services.store.validations.latest_for_head(self.project.id, pull.head_sha)
            if found is not None and found.pr_number != self.run.pr_number:
                found = None
            if found is not None and self.run.status in (AGENT_PR_OPEN, AGENT_VALIDATING):
                self.validation = found
                if found.agent_run_id is None:
                    await self.service.store.link_validation(found.id, self.run.id)
            return PullObserved(pull, _validation_facts(found) if found is not None else None)
        except asyncio.CancelledError:
            raise
        except AgentError as exc:
            return CallFailed(exc.reason, terminal=exc.terminal, retry_after=exc.retry_after)
        except Exception as exc:  # noqa: BLE001
            log.warning("agent run %s: observing failed: %s", self.run.id, exc, exc_info=True)
            return CallFailed(_describe(exc))

    # ---- do ---------------------------------------------------------------------------------------------

    async def save(self, values: dict[str, Any], *, poll_after: float | None = None,
                   reason: str | None = None, announce: bool = True) -> AgentRun | None:
        """Store the step's result (fenced); `announce`: publish the status change now (else the caller
        does, once the change's effects - a PR comment - are done)."""
        if self.validation is not None:
            values.setdefault("validation_status", self.validation.conclusion or self.validation.status)
            values.setdefault("last_validation_id", self.validation.id)
        after = await self.service.store.save(self.run.id, self.owner, expect=self.run.status, values=values,
                                              poll_after=poll_after)
        if after is None:
            log.info("agent run %s changed meanwhile (a user's decision); this step stops", self.run.id)
            return None
        if announce:
            await self.service._changed(self.project, self.run, after, reason or after.reason)
        if poll_after is not None:
            self.service._wake(poll_after)
        return after

    async def perform(self, action: Any) -> AgentRun | None:
        run = self.run
        if isinstance(action, Idle | Refuse | Transition):
            return None
        if isinstance(action, Wait):
            changes_status = action.status is not None and action.status != run.status
            values: dict[str, Any] = {
                "polls": 0 if changes_status else run.polls + 1,
                "transient_errors": run.transient_errors + 1 if action.error else 0}
            if action.status is not None:
                values["status"] = action.status
            if action.seen_active:
                values["agent_seen_active"] = True
            if action.error:
                values["reason"] = f"retrying: {action.error}"[:2000]
            elif (run.reason or "").startswith("retrying: "):
                values["reason"] = None
            await self.save(values, poll_after=action.seconds)
            return None
        if isinstance(action, StartAgent):
            return await self.start_agent(action.mode)
        if isinstance(action, StorePlan):
            return await self.store_plan(action.text)
        if isinstance(action, RecordPullRequest):
            return await self.record_pull_request(action.number, action.url)
        if isinstance(action, AwaitValidation):
            return await self.save({"status": AGENT_PR_OPEN, "polls": 0, "transient_errors": 0,
                                    "reason": f"the agent pushed {action.head_sha[:7]}"})
        if isinstance(action, ResumeForFix):
            return await self.resume_for_fix(action)
        if isinstance(action, StartValidation):
            return await self.start_validation()
        if isinstance(action, Finish):
            await self.finish(action)
            return None
        raise AssertionError(f"unknown action {action!r}")

    async def redactor(self) -> Redactor:
        secrets = await self.services.store.projects.secret_values(self.project.id)
        return PROCESS_REDACTOR.child(list(secrets.values()))

    async def base_branch(self) -> str:
        if self.project.default_branch:
            return self.project.default_branch
        repo = await self.gh.getitem(f"/repos/{self.project.name}")
        return str(repo.get("default_branch") or "main")

    async def target(self, *, attempt: int = 0) -> AgentTarget:
        run = self.run
        if run.pr_number is not None:
            pull = self.pull or await self.get_pull(run.pr_number)
            head_repo = ((pull.get("head") or {}).get("repo") or {}).get("full_name") or ""
            if head_repo.lower() != self.project.name.lower():
                raise AgentError(f"pull request #{run.pr_number} comes from a fork ({head_repo or 'deleted'}): "
                                 "the agent cannot push to its branch", terminal=True)
            branch = str(pull["head"]["ref"])
        else:
            branch = run.branch or f"codegenapp/{run.id[:8]}-{slug(run.target_text)}"
        secrets = await self.services.store.projects.secret_values(self.project.id) if run.backend == LOCAL else {}
        return AgentTarget(run_id=run.id, project_id=self.project.id, repository=self.project.name,
                           installation_id=self.project.installation_id, base_branch=await self.base_branch(),
                           branch=branch, pr_number=run.pr_number, goal=run.target_text, attempt=attempt,
                           secrets=secrets)

    def prompt_context(self, target: AgentTarget, *, plan: str | None = None) -> PromptContext:
        return PromptContext(goal=self.run.target_text, repository=target.repository, base_branch=target.base_branch,
                             branch=target.branch, pr_number=target.pr_number,
                             repository_rules=self.project.repository_rules or "",
                             planning_statement=self.project.planning_statement or "", plan=plan)

    def metadata(self, target: AgentTarget, mode: Mode, *, plan: str | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {"codegenapp_run_id": self.run.id, "project_id": self.project.id,
                                "repository": target.repository, "mode": str(mode), "base_branch": target.base_branch,
                                "branch": target.branch, "pr_number": target.pr_number, "attempt": target.attempt}
        if plan and self.run.backend == LOCAL:
            data["plan"] = plan
        return data

    async def current_failure(self, head_sha: str, redactor: Redactor) -> FixContext | None:
        """On a PR whose head failed validation (the Fix button), the agent is told why."""
        latest = await self.services.store.validations.latest_for_head(self.project.id, head_sha)
        if latest is None or latest.pr_number != self.run.pr_number or latest.conclusion not in ("failure",
                                                                                                   "timed_out"):
            return None
        return fix_context(title=latest.title, head_sha=head_sha, results=latest.test_results, attempt=0,
                           max_attempts=self.run.max_fix_attempts, redact=redactor.redact)

    async def start_agent(self, mode: Mode) -> AgentRun | None:
        run = self.run
        target = await self.target()
        redactor = await self.redactor()
        failure, base_sha = None, None
        if run.pr_number is not None:
            base_sha = str((self.pull or await self.get_pull(run.pr_number))["head"]["sha"])
            failure = await self.current_failure(base_sha, redactor)
        plan = run.plan_text if mode == Mode.EXECUTE else None
        ctx = self.prompt_context(target, plan=plan)
        prompt = plan_prompt(ctx, failure=failure) if mode == Mode.PLAN else execute_prompt(ctx, failure=failure)
        backend = self.service.backend(run, self.project)
        handle, status = await backend.start(redactor.redact(prompt), mode, self.metadata(target, mode, plan=plan),
                                             target)
        return await self.save({
            "status": AGENT_PLANNING if mode == Mode.PLAN else AGENT_RUNNING, "agent_handle": handle,
            "agent_started_at": utcnow(), "agent_seen_active": status.state == "running" or backend.synchronous,
            "agent_resumed": False,
            "polls": 0, "transient_errors": 0, "fix_base_sha": base_sha, "branch": target.branch, "reason": None},
            reason=f"the agent is {'planning' if mode == Mode.PLAN else 'making the change'}")

    async def store_plan(self, text: str) -> AgentRun | None:
        redactor = await self.redactor()
        plan = redactor.redact(text)
        after = await self.save({"status": AGENT_AWAITING_CONFIRMATION, "plan_text": plan, "plan_generated": True,
                                 "polls": 0, "reason": "the plan waits for confirmation"}, announce=False)
        if after is None:
            return None
        if after.pr_number is not None:
            marker = PLAN_MARKER.format(run_id=after.id)
            body = (f"{marker}\n### Plan of agent run `{after.id}`\n\n**Goal:** {title_of(after.target_text, max_length=200)}"
                    f"\n\n{plan}\n\n---\nReply `/plan confirm` to let the agent make this change, or `/plan reject` "
                    "to drop it (the dashboard has the same buttons).")
            try:
                await self.comment_once(after.pr_number, marker, body)
            except Exception:  # noqa: BLE001 - the dashboard shows the plan either way
                log.exception("agent run %s: could not post the plan on #%s", after.id, after.pr_number)
        await self.service._changed(self.project, self.run, after, after.reason)
        return after

    async def record_pull_request(self, number: int, url: str | None) -> AgentRun | None:
        settings = self.services.settings
        url = url or f"{settings.github_url}/{self.project.name}/pull/{number}"
        after = await self.save({"status": AGENT_PR_OPEN, "pr_number": number, "pr_url": url, "pr_created": True,
                                 "polls": 0, "transient_errors": 0, "fix_base_sha": None,
                                 "reason": f"the agent opened #{number}"})
        if after is not None:
            self.services.bus.publish("pr.created", run_id=after.id, project_id=after.project_id, pr_number=number,
                                      pr_url=url)
            await self.services.store.audit.record(
                "pr.created", project_id=after.project_id, installation_id=self.project.installation_id,
                details={"run_id": after.id, "pr": number, "url": url})
        return after

    async def resume_for_fix(self, action: ResumeForFix) -> AgentRun | None:
        run = self.run
        validation_id = action.validation_id or run.handled_validation_id or run.last_validation_id
        failed = await self.services.store.validations.get(validation_id) if validation_id else None
        redactor = await self.redactor()
        head = failed.head_sha if failed is not None else (run.fix_base_sha or "")
        fix = fix_context(title=failed.title if failed else None, head_sha=head,
                          results=failed.test_results if failed else None, attempt=action.attempt,
                          max_attempts=run.max_fix_attempts, no_change=action.no_change, redact=redactor.redact)
        target = await self.target(attempt=action.attempt)
        prompt = redactor.redact(fix_prompt(self.prompt_context(target), fix))
        backend = self.service.backend(run, self.project)
        handle, status = await backend.resume(run.agent_handle, prompt, target)
        if failed is not None:
            self.validation = failed
        return await self.save({
            "status": AGENT_FIXING, "fix_attempts": action.attempt, "handled_validation_id": validation_id,
            "fix_base_sha": head or run.fix_base_sha, "agent_handle": handle, "agent_started_at": utcnow(),
            "agent_seen_active": status.state == "running" or backend.synchronous, "agent_resumed": True, "polls": 0,
            "transient_errors": 0},
            reason=f"fix attempt {action.attempt} of {run.max_fix_attempts}"
                   + (f": {fix.title}" if fix.title else ""))

    async def start_validation(self) -> AgentRun | None:
        from pipeline.validation.service import pull_request_ref

        validations = self.services.validations
        assert validations is not None and self.run.pr_number is not None
        pull = self.pull or await self.get_pull(self.run.pr_number)
        log.warning("agent run %s: no validation of #%s at %s arrived; starting one", self.run.id,
                    self.run.pr_number, pull["head"]["sha"][:7])
        await validations.start(self.gh, self.project, pull_request_ref(pull["base"]["repo"], pull),
                                trigger="agent_run")
        return self.run  # look again: the validation is there now

    async def finish(self, action: Finish) -> None:
        self.service._ending.add(self.run.id)  # its comment and events must not be stopped by the watch
        after = await self.save({"status": action.status, "reason": action.reason, "completed_at": utcnow()},
                                reason=action.reason, announce=False)
        if after is None:
            return
        if action.needs_human and after.pr_number is not None:
            await self.say_human_needed(after, action.reason)
        await self.service._changed(self.project, self.run, after, action.reason)

    async def say_human_needed(self, after: AgentRun, reason: str) -> None:
        marker = ENDED_MARKER.format(run_id=after.id)
        body = (f"{marker}\n### A human is needed\n\nAgent run `{after.id}` stopped: {reason}.\n\n"
                f"Goal: {title_of(after.target_text, max_length=200)}")
        try:
            await self.comment_once(after.pr_number, marker, (await self.redactor()).redact(body))
        except Exception:  # noqa: BLE001 - the run has ended either way
            log.exception("agent run %s: could not comment on #%s", after.id, after.pr_number)

    async def comment_once(self, number: int, marker: str, body: str) -> None:
        """A comment found again by its marker, so a repeated step does not post it twice."""
        path = f"/repos/{self.project.name}/issues/{number}/comments"
        async for comment in self.gh.getiter(path):
            if marker in (comment.get("body") or ""):
                return
        await self.gh.post(path, data={"body": body[:65_000]})


# ---- wiring ------------------------------------------------------------------------------------------------


def build_agent_runs(services: "Services") -> AgentRunService:
    return AgentRunService(services)


def agent_job_handlers(services: "Services") -> dict[str, Any]:
    """The worker's handlers for agent runs (merged into build_worker's table)."""

    async def run_agent_job(job: "ClaimedJob") -> None:
        service = services.agent_runs
        if service is None:
            raise RuntimeError("agent runs are not set up in this process")
        await service.run_job(job)

    return {JOB_AGENT_RUN: run_agent_job}


_UNAVAILABLE = (False, "Agent runs are not available on this app, so nothing was started.")


async def agent_command(services: "Services", project: Project, pr_number: int, goal: str, *,
                        actor: str) -> tuple[bool, str]:
    """For handlers/commands.py, `/agent <goal>`: (started, reply). The caller checks write access."""
    if services.agent_runs is None:
        return _UNAVAILABLE
    return await services.agent_runs.agent_command(project, pr_number, goal, actor=actor)


async def fix_with_agent(services: "Services", project: Project, pr_number: int, *, actor: str) -> tuple[bool, str]:
    """For handlers/commands.py, the "Fix with agent" button: (started, reply)."""
    if services.agent_runs is None:
        return _UNAVAILABLE
    return await services.agent_runs.fix_button(project, pr_number, actor=actor)


async def plan_command(services: "Services", project: Project, pr_number: int, verb: str, *,
                       actor: str) -> tuple[bool, str]:
    """For handlers/commands.py, `/plan confirm|reject`: (done, reply)."""
    if services.agent_runs is None:
        return False, "Agent runs are not available on this app, so there is no plan to decide on."
    return await services.agent_runs.plan_command(project, pr_number, verb, actor=actor)


async def on_validation_completed(services: "Services", validation_state: ValidationState) -> None:
    """For pipeline/validation/service.py's report step: the run working on this PR looks at the result now.
    (Optional: the service also follows `validation.completed` on the bus, and runs poll.)"""
    if services.agent_runs is not None:
        await services.agent_runs.on_validation_completed(validation_state)


__all__ = ["AgentRunService", "AgentRunRefused", "AgentRunConflict", "run_json", "build_agent_runs",
           "agent_job_handlers", "on_validation_completed", "agent_command", "fix_with_agent", "plan_command", "AGENT_COMPLETED", "AGENT_FAILED", "AGENT_CANCELLED"]
