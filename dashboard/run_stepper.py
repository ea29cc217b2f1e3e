"""Where an agent run is, as the run page's stepper shows it: plan → confirm → working → PR →
validating → done. Pure: from the run's stored data (and, for a run that ended, the status it ended
from, which the run page reads from the run's audit events).

Each step is done, current, upcoming, skipped (plan and confirm when plans are confirmed by themselves),
or the step a failed or cancelled run stopped at. The last step says how the run ended: merged or
passed, failed or cancelled."""

from __future__ import annotations

from dataclasses import dataclass

from bot import labels
from bot.models import (AGENT_AWAITING_CONFIRMATION, AGENT_CANCELLED, AGENT_COMPLETED, AGENT_FAILED, AGENT_FIXING,
                        AGENT_PENDING, AGENT_PLANNING, AGENT_PR_OPEN, AGENT_RUNNING, AGENT_VALIDATING)

PLAN, CONFIRM, WORKING, PR, VALIDATING, DONE = "plan", "confirm", "working", "pr", "validating", "done"
ORDER = (PLAN, CONFIRM, WORKING, PR, VALIDATING, DONE)
TITLES = {PLAN: "Plan", CONFIRM: "Confirm", WORKING: "Working", PR: "Pull request", VALIDATING: "Validating",
          DONE: "Done"}

# step states
STEP_DONE, STEP_CURRENT, STEP_UPCOMING, STEP_SKIPPED = "done", "current", "upcoming", "skipped"
STEP_FAILED, STEP_CANCELLED = "failed", "cancelled"

_STEP_OF_STATUS = {AGENT_PENDING: PLAN, AGENT_PLANNING: PLAN, AGENT_AWAITING_CONFIRMATION: CONFIRM,
                   AGENT_RUNNING: WORKING, AGENT_PR_OPEN: PR, AGENT_VALIDATING: VALIDATING,
                   AGENT_FIXING: VALIDATING}


@dataclass(frozen=True)
class RunSnapshot:
    """What the stepper needs of a run."""

    status: str
    auto_confirm: bool = False
    has_plan: bool = False
    pr_number: int | None = None
    fix_attempts: int = 0
    max_fix_attempts: int = 0
    pr_merged: bool = False
    ended_from: str | None = None  # a run that ended: the status it was in before (None: not known)


@dataclass(frozen=True)
class Step:
    key: str
    title: str
    state: str
    note: str = ""


def _stopped_at(run: RunSnapshot) -> str:
    """The step a failed or cancelled run stopped at: the one of the status it ended from, else a guess
    from what it had got to."""
    if run.ended_from in _STEP_OF_STATUS:
        return _STEP_OF_STATUS[run.ended_from]
    if run.pr_number is not None:
        return VALIDATING
    return CONFIRM if run.has_plan else PLAN


def _current_note(key: str, run: RunSnapshot) -> str:
    if run.status == AGENT_PENDING:
        return "Starting"
    if key == PLAN:
        return "The agent is writing a plan"
    if key == CONFIRM:
        return "Waiting for a maintainer to confirm or reject the plan"
    if key == WORKING:
        return "The agent is making the change"
    if key == PR:
        return "Waiting for the validation to start"
    if run.status == AGENT_FIXING:
        return f"The agent is fixing a failure (attempt {run.fix_attempts} of {run.max_fix_attempts})"
    if run.fix_attempts:
        return f"Validating fix attempt {run.fix_attempts} of {run.max_fix_attempts}"
    return "The pull request is being validated"


def position(run: RunSnapshot) -> str:
    """The step the run is at (or stopped at)."""
    if run.status == AGENT_COMPLETED:
        return DONE
    if run.status in (AGENT_FAILED, AGENT_CANCELLED):
        step = _stopped_at(run)
    else:
        step = _STEP_OF_STATUS.get(run.status, PLAN)
    if run.auto_confirm and step in (PLAN, CONFIRM):
        step = WORKING  # no plan to confirm: the agent starts working at once
    return step


def steps(run: RunSnapshot) -> list[Step]:
    """The stepper of `run`, in ORDER."""
    ended = run.status in (AGENT_FAILED, AGENT_CANCELLED)
    here = ORDER.index(position(run))
    shown: list[Step] = []
    for index, key in enumerate(ORDER):
        title, note = TITLES[key], ""
        if key in (PLAN, CONFIRM) and run.auto_confirm:
            state, note = STEP_SKIPPED, "Skipped: plans are confirmed by themselves"
        elif index < here:
            state = STEP_DONE
            if key == PR and run.pr_number is not None:
                note = f"#{run.pr_number}"
        elif index > here:
            state = STEP_UPCOMING
        elif ended:
            state = STEP_FAILED if run.status == AGENT_FAILED else STEP_CANCELLED
            note = f"{labels.agent_status(run.status)} here"
        elif key == DONE:
            state, title = STEP_DONE, "Merged" if run.pr_merged else "Passed"
        else:
            state, note = STEP_CURRENT, _current_note(key, run)
        shown.append(Step(key, title, state, note))
    return shown
