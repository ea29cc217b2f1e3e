"""The words a person reads for the app's stored values: a validation's state, an agent run's status,
what triggered a run, a duration. Pages, reports, the CLI and logs use these; none shows a raw value
such as `in_progress` or `check_run.requested_action`."""

from __future__ import annotations

import math

VALIDATION_STATES = {
    # (status, conclusion) → label; a completed run is labelled by its conclusion
    "queued": "Queued",
    "in_progress": "Running",
    "waiting": "Waiting for approval",
    "superseded": "Superseded",
}
CONCLUSIONS = {
    "success": "Passed",
    "failure": "Failed",
    "neutral": "Neutral",
    "cancelled": "Cancelled",
    "timed_out": "Timed out",
    "action_required": "Action required",
    "skipped": "Skipped",
    "stale": "Stale",
}
AGENT_STATUSES = {
    "pending": "Starting",
    "planning": "Planning",
    "awaiting_confirmation": "Waiting for confirmation",
    "running": "Working",
    "pr_open": "PR opened",
    "validating": "Validating",
    "fixing": "Fixing",
    "completed": "Done",
    "failed": "Failed",
    "cancelled": "Cancelled",
}
MERGE_STATUSES = {"merging": "Merging", "merged": "Merged", "failed": "Merge failed"}
# AgentRun.source → how it reads after "via"
AGENT_SOURCES = {"dashboard": "the dashboard", "api": "the API", "pr_comment": "/agent",
                 "fix_button": "the Fix with agent button"}
# where a setting's value comes from (pipeline/repo_config/settings_sources.py), on the settings page
SETTING_SOURCES = {"file": "set in .github/codegenapp.yml", "project": "project setting", "default": "default"}
# a pull request's state in the PR overview (dashboard/pull_overview.py decides it)
PR_STATES = {"failing": "Failing", "running": "Running", "waiting": "Waiting for /ok-to-test",
             "ready": "Ready to merge", "unvalidated": "Not validated", "merged": "Merged", "closed": "Closed"}
# a validation step's status (pipeline/results.py STATUSES), and "pending"/"running" on the live page
# the one mark of a step's state, in every report (check run, comment, page, terminal)
STEP_MARKS = {"pending": "○", "running": "●", "passed": "✓", "restored": "✓", "failed": "✗", "timed_out": "✗",
              "cancelled": "–", "skipped": "–"}
STEP_STATES = {
    "pending": "Pending",
    "running": "Running",
    "passed": "Passed",
    "failed": "Failed",
    "skipped": "Skipped",
    "cancelled": "Cancelled",
    "timed_out": "Timed out",
    "restored": "Restored",
}
# a stored webhook delivery's state, by its newest job (pipeline/deliveries/replay.py decides it)
DELIVERY_STATES = {"handled": "Handled", "failed": "Failed", "queued": "Queued", "retrying": "Retrying",
                   "running": "Running", "unhandled": "Not handled"}
# an event's action where its name does not read as words ("Pull request updated by a push")
DELIVERY_ACTIONS = {"synchronize": "updated by a push", "ready_for_review": "ready for review",
                    "requested_action": "button pressed", "converted_to_draft": "converted to draft"}
# how a delivery reached the app (Delivery.source)
DELIVERY_SOURCES = {"webhook": "webhook", "recovered": "recovered from GitHub's log",
                    "polled": "polled from GitHub's log"}

# trigger (ValidationState.trigger, a merge's trigger) → how it reads after "via"
TRIGGERS = {
    "pull_request": "a pull request event",
    "pull_request.opened": "a new pull request",
    "pull_request.synchronize": "a push",
    "pull_request.reopened": "the pull request being reopened",
    "pull_request.ready_for_review": "ready for review",
    "pull_request.edited": "a change of base",
    "command": "a command",
    "command.validate": "/validate",
    "command.ok-to-test": "/ok-to-test",
    "command.merge": "/merge",
    "button.rerun": "the Re-run button",
    "button.merge": "the Merge button",
    "check_run.rerequested": "Re-run on GitHub",
    "check_suite.rerequested": "Re-run all on GitHub",
    "check_run.requested_action": "a check-run button",
    "api.retry": "the dashboard's Retry",
    "dashboard.retry": "the dashboard's Retry",
    "agent_run": "an agent run",
    "auto-merge": "auto-merge",
    "resync": "a resync",
    "merge_group.checks_requested": "GitHub's merge queue",
    "merge_group.destroyed": "the merge group's end",
}


def words(raw: str) -> str:
    """`project.secret_added` → "project secret added": an identifier as words."""
    return " ".join(raw.replace("_", " ").replace(".", " ").replace("-", " ").split())


def _humanize(raw: str) -> str:
    """A fallback for a value this module does not know yet: words, not an identifier."""
    text = words(raw)
    return text[:1].upper() + text[1:] if text else "Unknown"


def validation_state(status: str, conclusion: str | None = None) -> str:
    if status == "completed":
        return CONCLUSIONS.get(conclusion or "", _humanize(conclusion or "completed"))
    return VALIDATION_STATES.get(status, _humanize(status))


def conclusion(value: str | None) -> str:
    return CONCLUSIONS.get(value or "", _humanize(value or "none"))


def agent_status(status: str) -> str:
    return AGENT_STATUSES.get(status, _humanize(status))


def merge_status(status: str) -> str:
    return MERGE_STATUSES.get(status, _humanize(status))


def agent_source(source: str | None) -> str:
    """`fix_button` → "the Fix with agent button"."""
    return AGENT_SOURCES.get(source or "", _humanize(source or "unknown").lower())


def setting_source(source: str) -> str:
    return SETTING_SOURCES.get(source, _humanize(source).lower())


def pr_state(state: str) -> str:
    return PR_STATES.get(state, _humanize(state))


def step_state(status: str) -> str:
    return STEP_STATES.get(status, _humanize(status))


def delivery_state(state: str) -> str:
    return DELIVERY_STATES.get(state, _humanize(state))


def delivery_source(source: str | None) -> str:
    return DELIVERY_SOURCES.get(source or "", _humanize(source or "unknown").lower())


def delivery_event(event: str, action: str | None = None) -> str:
    """`pull_request` + `opened` → "Pull request opened"; `check_run` + `rerequested` → "Check run re-requested"."""
    action = DELIVERY_ACTIONS.get(action or "", action)
    words = _humanize(f"{event} {action}" if action else event)
    return words.replace("rerequested", "re-requested")


def trigger(value: str | None) -> str:
    """`command.validate` → `/validate`; an unknown trigger in words."""
    if not value:
        return "unknown"
    return TRIGGERS.get(value, _humanize(value).lower())


def triggered(value: str | None, actor: str | None) -> str:
    """"by @dev-alice via /validate", or "via a push" when no one in particular asked."""
    via = f"via {trigger(value)}"
    return f"by @{actor} {via}" if actor else via


def duration(seconds: float | None) -> str:
    """GitHub Actions' way: `0.4s`, `12s`, `8m 20s`, `2m`, `1h 5m`."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        seconds = 0.0
    if seconds < 9.95:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        minutes, rest = divmod(whole, 60)
        return f"{minutes}m {rest}s" if rest else f"{minutes}m"
    hours, rest = divmod(whole, 3600)
    return f"{hours}h {rest // 60}m" if rest // 60 else f"{hours}h"
