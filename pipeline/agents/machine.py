"""The agent run's state machine as one pure function: `next_step(run, event) -> Action` (the Kodiak
shape). The shell (pipeline/agents/service.py) observes what the run needs (the agent's status, the PR
and its newest validation), asks `next_step` what to do, does it, and stores the result; nothing here
does I/O, so every transition is tested without any.

States (AgentRun.status)::

    pending ─┬─ auto-confirm ───────────────────────────────┐
             └─ planning ── awaiting_confirmation ── confirm ┴─ running ── pr_open ── validating ─┬─ completed
                                      └── reject ── cancelled      ▲                    │ failure  │
                                                                   └──── fixing ◄───────┘          │
    any state ── cancel ── cancelled;  PR merged ── completed;  PR closed ── cancelled;  errors ── failed

`pr_open` waits for the validation of the PR's current head to start, `validating` for it to end. A
failed validation resumes the agent with the failure (`fixing`) until `max_fix_attempts` fixes have
been tried; then the run fails and the PR is told that a human is needed.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot import labels

from bot.models import (AGENT_AWAITING_CONFIRMATION, AGENT_CANCELLED, AGENT_COMPLETED, AGENT_FAILED, AGENT_FIXING,
                        AGENT_PENDING, AGENT_PLANNING, AGENT_PR_OPEN, AGENT_RUNNING, AGENT_TERMINAL,
                        AGENT_VALIDATING)
from pipeline.agents.backend import AgentStatus, Mode

ACTIVE_VALIDATION = ("queued", "in_progress")
FAILING_CONCLUSIONS = ("failure", "timed_out")
MERGED_REASON = "the pull request was merged"  # a completed run's reason when its PR was merged


@dataclass(frozen=True)
class Timing:
    """How long to wait (seconds). Polls back off by `factor` per poll in the same state."""

    agent_poll: float = 5.0
    agent_poll_max: float = 60.0
    validation_poll: float = 10.0
    validation_poll_max: float = 60.0
    error_backoff: float = 5.0
    error_backoff_max: float = 300.0
    factor: float = 1.5
    max_transient_errors: int = 8
    # After a resume, a "finished" status is believed only once the agent was seen working again, the
    # PR moved, or this long passed (the backend may still show the previous result for a moment).
    stale_grace: float = 30.0
    # No validation of the PR's head this long after it was pushed (a lost webhook): start one.
    validation_start_grace: float = 120.0


DEFAULT_TIMING = Timing()


def backoff(n: int, base: float, cap: float, factor: float) -> float:
    return min(cap, base * factor ** max(0, n))


# ---- what the run is ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunFacts:
    status: str
    auto_confirm: bool = False
    agent_started: bool = False  # an agent run for the current phase exists (a handle is stored)
    agent_seen_active: bool = False
    agent_resumed: bool = False
    seconds_since_agent_start: float = 0.0
    origin_pr: bool = False  # started on an existing PR: its changes go to that PR's branch
    pr_number: int | None = None
    fix_attempts: int = 0
    max_fix_attempts: int = 3
    fix_base_sha: str | None = None  # the PR head when the current agent phase began
    handled_validation_id: str | None = None  # the failed validation the last fix answered
    polls: int = 0  # polls in this status so far
    transient_errors: int = 0  # failed observations in a row
    seconds_in_status: float = 0.0


# ---- what was observed (events) -------------------------------------------------------------------------


@dataclass(frozen=True)
class PullFacts:
    state: str  # open | closed | merged
    head_sha: str


@dataclass(frozen=True)
class ValidationFacts:
    id: str
    head_sha: str
    status: str  # queued | in_progress | completed | superseded | waiting
    conclusion: str | None
    title: str | None = None


@dataclass(frozen=True)
class Tick:
    """Nothing to observe: decide from the run alone."""


@dataclass(frozen=True)
class AgentObserved:
    status: AgentStatus
    pull: PullFacts | None = None  # the run's PR, when it has one


@dataclass(frozen=True)
class PullObserved:
    pull: PullFacts
    validation: ValidationFacts | None  # the newest validation of the PR's current head


@dataclass(frozen=True)
class CallFailed:
    reason: str
    terminal: bool = False
    retry_after: float | None = None


@dataclass(frozen=True)
class Confirm:
    by: str


@dataclass(frozen=True)
class Reject:
    by: str


@dataclass(frozen=True)
class Cancel:
    by: str


Event = Tick | AgentObserved | PullObserved | CallFailed | Confirm | Reject | Cancel


# ---- what to do (actions) ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class StartAgent:
    mode: Mode


@dataclass(frozen=True)
class StorePlan:
    text: str


@dataclass(frozen=True)
class RecordPullRequest:
    number: int
    url: str | None


@dataclass(frozen=True)
class AwaitValidation:
    """The agent pushed `head_sha` to the run's PR: wait for its validation."""

    head_sha: str


@dataclass(frozen=True)
class ResumeForFix:
    validation_id: str
    attempt: int
    no_change: bool = False  # the previous attempt pushed nothing


@dataclass(frozen=True)
class StartValidation:
    head_sha: str


@dataclass(frozen=True)
class Wait:
    seconds: float
    status: str | None = None  # move to this status while waiting
    seen_active: bool = False
    error: str | None = None  # a failed observation (counts toward max_transient_errors)
    validation_id: str | None = None


@dataclass(frozen=True)
class Transition:
    """A user's decision that moves the run on (confirm)."""

    status: str
    reason: str


@dataclass(frozen=True)
class Finish:
    status: str  # completed | failed | cancelled
    reason: str
    needs_human: bool = False  # say on the PR that a human is needed


@dataclass(frozen=True)
class Idle:
    reason: str


@dataclass(frozen=True)
class Refuse:
    """A user's command that does not apply to the run as it is."""

    reason: str


Action = (StartAgent | StorePlan | RecordPullRequest | AwaitValidation | ResumeForFix | StartValidation | Wait
          | Transition | Finish | Idle | Refuse)

OBSERVE_NOTHING = "nothing"
OBSERVE_AGENT = "agent"
OBSERVE_PULL = "pull"


def observation_needed(run: RunFacts) -> str:
    """What the shell must look at before calling next_step for this run."""
    if run.status in (AGENT_PLANNING, AGENT_RUNNING, AGENT_FIXING) and run.agent_started:
        return OBSERVE_AGENT
    if run.status in (AGENT_PR_OPEN, AGENT_VALIDATING):
        return OBSERVE_PULL
    if run.status == AGENT_AWAITING_CONFIRMATION and run.pr_number is not None:
        return OBSERVE_PULL  # a plan shown on a PR that was closed meanwhile ends the run
    return OBSERVE_NOTHING


def next_step(run: RunFacts, event: Event, timing: Timing = DEFAULT_TIMING) -> Action:
    status = run.status
    # users' decisions
    if isinstance(event, Cancel):
        if status in AGENT_TERMINAL:
            return Refuse(f"the run has already ended ({labels.agent_status(status).lower()})")
        return Finish(AGENT_CANCELLED, f"cancelled by {event.by}")
    if isinstance(event, Confirm | Reject):
        if status != AGENT_AWAITING_CONFIRMATION:
            return Refuse(f"the run is not waiting for its plan to be confirmed (it is {labels.agent_status(status).lower()})")
        if isinstance(event, Confirm):
            return Transition(AGENT_RUNNING, f"plan confirmed by {event.by}")
        return Finish(AGENT_CANCELLED, f"plan rejected by {event.by}")

    if status in AGENT_TERMINAL:
        return Idle(f"the run has ended ({labels.agent_status(status).lower()})")
    if isinstance(event, CallFailed):
        return _after_failure(run, event, timing)
    if status == AGENT_PENDING:
        return StartAgent(Mode.EXECUTE if run.auto_confirm else Mode.PLAN)
    if status == AGENT_AWAITING_CONFIRMATION:
        if isinstance(event, PullObserved) and event.pull.state != "open":
            return _pull_ended(event.pull)
        return Idle("waiting for the plan to be confirmed or rejected")
    if status in (AGENT_PLANNING, AGENT_RUNNING) and not run.agent_started:
        return StartAgent(Mode.PLAN if status == AGENT_PLANNING else Mode.EXECUTE)
    if status == AGENT_FIXING and not run.agent_started:
        return Finish(AGENT_FAILED, "the fix was not handed to the agent (no agent run is known)", needs_human=True)
    if isinstance(event, AgentObserved):
        return _after_agent(run, event, timing)
    if isinstance(event, PullObserved):
        return _after_pull(run, event, timing)
    # nothing was observed although something should have been: look again soon
    return Wait(timing.agent_poll)


def _needs_human(run: RunFacts) -> bool:
    return run.pr_number is not None


def _after_failure(run: RunFacts, event: CallFailed, timing: Timing) -> Action:
    if event.terminal:
        return Finish(AGENT_FAILED, event.reason, needs_human=_needs_human(run))
    errors = run.transient_errors + 1
    if errors >= timing.max_transient_errors:
        return Finish(AGENT_FAILED, f"gave up after {errors} failed tries in a row: {event.reason}",
                      needs_human=_needs_human(run))
    delay = backoff(errors - 1, timing.error_backoff, timing.error_backoff_max, 2.0)
    if event.retry_after is not None:
        delay = max(delay, event.retry_after)
    return Wait(delay, error=event.reason)


def _pull_ended(pull: PullFacts) -> Finish:
    if pull.state == "merged":
        return Finish(AGENT_COMPLETED, MERGED_REASON)
    return Finish(AGENT_CANCELLED, "the pull request was closed")


def _fix_or_give_up(run: RunFacts, validation_id: str, *, no_change: bool = False,
                    title: str | None = None) -> Action:
    if run.fix_attempts < run.max_fix_attempts:
        return ResumeForFix(validation_id, run.fix_attempts + 1, no_change=no_change)
    failing = f" ({title})" if title else ""
    if run.max_fix_attempts == 0:
        return Finish(AGENT_FAILED, f"the validation failed{failing} and fixes are turned off "
                                    "(max_fix_attempts is 0): a human is needed", needs_human=True)
    return Finish(AGENT_FAILED, f"the validation still fails after {run.fix_attempts} fix attempt(s){failing}: "
                                "a human is needed", needs_human=True)


def _after_agent(run: RunFacts, event: AgentObserved, timing: Timing) -> Action:
    pull, agent = event.pull, event.status
    if pull is not None and pull.state != "open":
        return _pull_ended(pull)
    poll = backoff(run.polls, timing.agent_poll, timing.agent_poll_max, timing.factor)
    if agent.state == "running":
        return Wait(poll, seen_active=True)
    if agent.state == "failed":
        said = (agent.raw_status or "").replace("_", " ").lower()
        detail = agent.error or (f"the agent service reported it as {said}" if said else "no reason given")
        return Finish(AGENT_FAILED, f"the agent run failed: {detail}", needs_human=_needs_human(run))

    moved = pull is not None and run.fix_base_sha is not None and pull.head_sha != run.fix_base_sha
    if (run.agent_resumed and not run.agent_seen_active and not moved
            and run.seconds_since_agent_start < timing.stale_grace):
        return Wait(poll)  # possibly the previous result still: wait until it is certain
    if run.status == AGENT_PLANNING:
        text = (agent.plan_text or "").strip()
        if not text:
            return Finish(AGENT_FAILED, "the agent finished without a plan")
        return StorePlan(text)
    if run.status == AGENT_RUNNING and not run.origin_pr:
        if agent.pr_number is None:
            why = f" ({agent.summary})" if agent.summary else ""
            return Finish(AGENT_FAILED, f"the agent finished without opening a pull request{why}")
        return RecordPullRequest(agent.pr_number, agent.pr_url)
    # working on an existing PR (the one it was started on, or its own during a fix): a change is a new head
    if pull is not None and pull.head_sha != run.fix_base_sha:
        return AwaitValidation(pull.head_sha)
    if run.status == AGENT_RUNNING:
        return Finish(AGENT_FAILED, "the agent finished without pushing a change to the pull request",
                      needs_human=True)
    return _fix_or_give_up(run, run.handled_validation_id or "", no_change=True)


def _after_pull(run: RunFacts, event: PullObserved, timing: Timing) -> Action:
    pull, validation = event.pull, event.validation
    if pull.state != "open":
        return _pull_ended(pull)
    poll = backoff(run.polls, timing.validation_poll, timing.validation_poll_max, timing.factor)
    if validation is None:
        if run.status == AGENT_PR_OPEN and run.seconds_in_status >= timing.validation_start_grace:
            return StartValidation(pull.head_sha)
        return Wait(poll, status=AGENT_PR_OPEN)
    if validation.status in ACTIVE_VALIDATION:
        return Wait(poll, status=AGENT_VALIDATING, validation_id=validation.id)
    if validation.id == run.handled_validation_id:
        return Wait(poll, validation_id=validation.id)  # answered already; the fix's head comes next
    if validation.status == "waiting" or validation.conclusion == "action_required":
        return Finish(AGENT_FAILED, "the validation of the pull request waits for a maintainer "
                                    "(action required): a human is needed", needs_human=True)
    if validation.conclusion == "success":
        return Finish(AGENT_COMPLETED, "the validation passed")
    if validation.conclusion == "cancelled" or validation.status == "superseded":
        return Finish(AGENT_CANCELLED, "the validation of the pull request was cancelled")
    if validation.conclusion in FAILING_CONCLUSIONS or validation.conclusion is None:
        return _fix_or_give_up(run, validation.id, title=validation.title)
    # neutral, skipped, stale: nothing an agent can fix
    return Finish(AGENT_FAILED, "the validation ended without a verdict an agent can act on "
                                f"({labels.conclusion(validation.conclusion)}): a human is needed", needs_human=True)
