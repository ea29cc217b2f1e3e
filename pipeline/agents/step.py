"""One observe-decide-do step of an agent run: all of the run's I/O (the agent backend, GitHub, the
store) for the pure state machine (pipeline/agents/machine.py). The service (service.py) runs the
steps of a job; a step reaches it only through `RunService`."""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from typing import Any, Protocol

from gidgethub import BadRequest

from bot.config import Settings
from bot.errors import PermanentError
from bot.events import EventBus
from bot.github.github_app import GitHubApp, RepoGitHub
from bot.github.types import PullRequest
from bot.models import (AGENT_AWAITING_CONFIRMATION, AGENT_FIXING, AGENT_PLANNING, AGENT_PR_OPEN, AGENT_RUNNING,
                        AGENT_VALIDATING, AgentRun, Project, ValidationState, utcnow)
from bot.redact import PROCESS_REDACTOR, Redactor
from bot.store import Store
from bot.store.agent_runs import AgentRunStore
from pipeline.agents.backend import LOCAL, AgentBackend, AgentError, AgentTarget, Mode
from pipeline.agents.comments import PrComment, context_comment, outcome_comment, plan_comment
from pipeline.agents.machine import (OBSERVE_AGENT, OBSERVE_NOTHING, AgentObserved, AwaitValidation, CallFailed,
                                     Event, Finish, Idle, PullFacts, PullObserved, RecordPullRequest, Refuse,
                                     ResumeForFix, RunFacts, StartAgent, StartValidation, StorePlan, Tick,
                                     Transition, ValidationFacts, Wait, observation_needed)
from pipeline.agents.prompts import (FixContext, PromptContext, execute_prompt, fix_context, fix_prompt, plan_prompt,
                                     slug)
from pipeline.validation.service import ValidationService

log = logging.getLogger(__name__)


class RunService(Protocol):
    """What a step uses of the service that runs it."""

    runs: AgentRunStore
    store: Store
    github: GitHubApp
    bus: EventBus
    settings: Settings
    validations: ValidationService
    ending: set[str]  # runs a job of this process is ending itself (not to be stopped)

    def backend(self, run: AgentRun, project: Project) -> AgentBackend: ...

    async def changed(self, project: Project | None, before: AgentRun, after: AgentRun, reason: str | None = None,
                      *, actor: str | None = None) -> None: ...

    def wake(self, after: float = 0.0) -> None: ...

    async def say_on_pr(self, run: AgentRun, comment: PrComment) -> None: ...


def is_terminal(exc: BaseException) -> bool:
    """An error no retry can fix ends the run: a permanent one (GitHub answered with a shape the app
    does not understand), or GitHub refusing the request as unprocessable (422)."""
    return isinstance(exc, PermanentError) or (isinstance(exc, BadRequest) and exc.status_code == 422)


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, BadRequest):
        return f"GitHub answered {exc.status_code}: {exc}"
    return f"{type(exc).__name__}: {exc}"


def pull_facts(pull: PullRequest) -> PullFacts:
    return PullFacts(state="merged" if pull.merged else pull.state, head_sha=pull.head_sha)


def validation_facts(state: ValidationState) -> ValidationFacts:
    return ValidationFacts(id=state.id, head_sha=state.head_sha, status=state.status, conclusion=state.conclusion,
                           title=state.title)




class RunStep:
    """One observe-decide-do step of one run (all the run's I/O is here)."""

    def __init__(self, service: RunService, run: AgentRun, project: Project, owner: str) -> None:
        self.service = service
        self.run = run
        self.project = project
        self.owner = owner
        self.pull: PullRequest | None = None
        self.validation: ValidationState | None = None
        self._secrets: dict[str, str] | None = None  # the project's secret values, read once a step

    @property
    def repo(self) -> RepoGitHub:
        if not self.service.github.configured or self.project.installation_id is None:
            raise AgentError("the project has no GitHub installation the app can use", terminal=True)
        return self.service.github.repo(self.project.installation_id, self.project.name)

    async def get_pull(self, number: int) -> PullRequest:
        pull = await self.repo.pulls.find(number)
        if pull is None:
            raise AgentError(f"pull request #{number} is gone (404)", terminal=True)
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
                    pull = pull_facts(await self.get_pull(self.run.pr_number))
                return AgentObserved(status, pull)
            assert self.run.pr_number is not None
            pull = pull_facts(await self.get_pull(self.run.pr_number))
            found = await self.service.store.validations.latest_for_head(self.project.id, pull.head_sha)
            if found is not None and found.pr_number != self.run.pr_number:
                found = None
            if found is not None and self.run.status in (AGENT_PR_OPEN, AGENT_VALIDATING):
                self.validation = found
                if found.agent_run_id is None:
                    await self.service.runs.link_validation(found.id, self.run.id)
            return PullObserved(pull, validation_facts(found) if found is not None else None)
        except asyncio.CancelledError:
            raise
        except AgentError as exc:
            return CallFailed(exc.reason, terminal=exc.terminal, retry_after=exc.retry_after)
        except Exception as exc:  # noqa: BLE001
            log.warning("agent run %s: observing failed: %s", self.run.id, exc, exc_info=True)
            return CallFailed(describe_error(exc), terminal=is_terminal(exc))

    # ---- do ---------------------------------------------------------------------------------------------

    async def save(self, values: dict[str, Any], *, poll_after: float | None = None,
                   reason: str | None = None, announce: bool = True) -> AgentRun | None:
        """Store the step's result (fenced); `announce`: publish the status change now (else the caller
        does, once the change's effects - a PR comment - are done)."""
        if self.validation is not None:
            values.setdefault("validation_status", self.validation.conclusion or self.validation.status)
            values.setdefault("last_validation_id", self.validation.id)
        after = await self.service.runs.save(self.run.id, self.owner, expect=self.run.status, values=values,
                                              poll_after=poll_after)
        if after is None:
            log.info("agent run %s changed meanwhile (a user's decision); this step stops", self.run.id)
            return None
        if announce:
            await self.service.changed(self.project, self.run, after, reason or after.reason)
        if poll_after is not None:
            self.service.wake(poll_after)
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

    async def secrets(self) -> dict[str, str]:
        if self._secrets is None:
            self._secrets = await self.service.store.projects.secret_values(self.project.id)
        return self._secrets

    async def redactor(self) -> Redactor:
        return PROCESS_REDACTOR.child(list((await self.secrets()).values()))

    async def base_branch(self) -> str:
        if self.project.default_branch:
            return self.project.default_branch
        return await self.repo.repos.default_branch()

    async def target(self, *, attempt: int = 0) -> AgentTarget:
        run = self.run
        if run.pr_number is not None:
            pull = self.pull or await self.get_pull(run.pr_number)
            head_repo = pull.head_repository or ""
            if head_repo.lower() != self.project.name.lower():
                raise AgentError(f"pull request #{run.pr_number} comes from a fork ({head_repo or 'deleted'}): "
                                 "the agent cannot push to its branch", terminal=True)
            branch = pull.head_ref
        else:
            branch = run.branch or f"codegenapp/{run.id[:8]}-{slug(run.target_text)}"
        secrets = await self.secrets() if run.backend == LOCAL else {}
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
        latest = await self.service.store.validations.latest_for_head(self.project.id, head_sha)
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
            base_sha = (self.pull or await self.get_pull(run.pr_number)).head_sha
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
        await self.service.say_on_pr(after, plan_comment)  # on the PR the run was started on, if any
        await self.service.changed(self.project, self.run, after, after.reason)
        return after

    async def record_pull_request(self, number: int, url: str | None) -> AgentRun | None:
        settings = self.service.settings
        url = url or f"{settings.github_url}/{self.project.name}/pull/{number}"
        after = await self.save({"status": AGENT_PR_OPEN, "pr_number": number, "pr_url": url, "pr_created": True,
                                 "polls": 0, "transient_errors": 0, "fix_base_sha": None,
                                 "reason": f"the agent opened #{number}"})
        if after is not None:
            await self.service.say_on_pr(after, context_comment)
            self.service.bus.publish("pr.created", run_id=after.id, project_id=after.project_id, pr_number=number,
                                      pr_url=url)
            await self.service.store.audit.record(
                "pr.created", project_id=after.project_id, installation_id=self.project.installation_id,
                details={"run_id": after.id, "pr": number, "url": url})
        return after

    async def resume_for_fix(self, action: ResumeForFix) -> AgentRun | None:
        run = self.run
        validation_id = action.validation_id or run.handled_validation_id or run.last_validation_id
        failed = await self.service.store.validations.get(validation_id) if validation_id else None
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
        assert self.run.pr_number is not None
        pull = self.pull or await self.get_pull(self.run.pr_number)
        log.warning("agent run %s: no validation of #%s at %s arrived; starting one", self.run.id,
                    self.run.pr_number, pull.head_sha[:7])
        await self.service.validations.start(self.project, pull, trigger="agent_run")
        return self.run  # look again: the validation is there now

    async def finish(self, action: Finish) -> None:
        self.service.ending.add(self.run.id)  # its comment and events must not be stopped by the watch
        # the agent's or GitHub's words may quote a secret: stored (and so shown on the run page) masked
        reason = (await self.redactor()).redact(action.reason) if action.reason else action.reason
        after = await self.save({"status": action.status, "reason": reason, "completed_at": utcnow()},
                                reason=reason, announce=False)
        if after is None:
            return
        await self.service.say_on_pr(after, partial(outcome_comment, needs_human=action.needs_human))
        await self.service.changed(self.project, self.run, after, reason)


