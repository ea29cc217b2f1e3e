"""The check run's buttons (GitHub's "requested actions"): which a completed check run shows, as a
pure function of its result. Pressing one arrives as `check_run.requested_action` (handlers/checks.py)."""

from __future__ import annotations

from bot.models import VALIDATION_SUPERSEDED

ACTION_RERUN = "rerun"
ACTION_MERGE = "merge"
ACTION_FIX = "fix"

# identifier -> (label <= 20, description <= 40): GitHub's limits for requested actions
ACTIONS: dict[str, tuple[str, str]] = {
    ACTION_RERUN: ("Re-run", "Validate this head again"),
    ACTION_MERGE: ("Merge", "Merge the PR at the validated head"),
    ACTION_FIX: ("Fix with agent", "Ask the coding agent to fix it"),
}
MAX_ACTIONS = 3


def check_run_actions(conclusion: str, *, merge_allowed: bool, agent_configured: bool) -> list[dict[str, str]]:
    """The buttons of a completed check run: Re-run always, Merge on a success that may be merged,
    Fix with agent on a failure when an agent backend is configured."""
    wanted = [ACTION_RERUN]
    if conclusion == "success" and merge_allowed:
        wanted.append(ACTION_MERGE)
    if conclusion in ("failure", "timed_out") and agent_configured:
        wanted.append(ACTION_FIX)
    return [{"label": ACTIONS[i][0], "description": ACTIONS[i][1], "identifier": i} for i in wanted[:MAX_ACTIONS]]


def recovered_actions(status: str, conclusion: str, *, agent_configured: bool) -> list[dict[str, str]] | None:
    """The buttons of a check run the recovery completes as its validation ended (`status`,
    `conclusion`): none (None: left unset) when a newer head superseded it, whose own check run has
    them; else those of its conclusion, without Merge."""
    if status == VALIDATION_SUPERSEDED:
        return None
    return check_run_actions(conclusion, merge_allowed=False, agent_configured=agent_configured)
