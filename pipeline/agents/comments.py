"""What an agent run says on its PR, Atlantis-style (pure): its plan (posted when it is ready, updated
when a maintainer confirms or rejects it), the context of a PR the agent opened (the goal, who asked,
the plan), and its outcome with a link to the run's page. Each is one comment with a marker of its
own (bot.github.comments.marker), edited in place, never posted twice.

Each function takes the run and the URL of its page and returns (marker, body) (a `PrComment`); the
service (service.py, `say_on_pr`) posts it.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from bot import labels
from bot.github.comments import marker
from bot.models import AGENT_AWAITING_CONFIRMATION, AGENT_CANCELLED, AGENT_COMPLETED, AgentRun
from pipeline.agents.prompts import title_of
from pipeline.report.comment import inline_text
from pipeline.report.text import plural

PLAN = "agent-plan"
CONTEXT = "agent-context"
OUTCOME = "agent-outcome"
PLAN_CHARS = 20_000  # of the plan shown in a comment (the run's page has all of it)

PrComment = Callable[[AgentRun, str], tuple[str, str]]  # (the run, its page's URL) -> (marker, body)

_LOGIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})(?:\[bot\])?")
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})(.*)")


def person(login: str | None) -> str:
    """@login for a GitHub login (who asked is told); anything else in a code span, never a mention."""
    if login and _LOGIN.fullmatch(login):
        return f"@{login}"
    return f"`{(login or 'someone').replace('`', '')}`"


def asked(run: AgentRun) -> str:
    """"asked by @alice via /agent"."""
    via = f"via {labels.agent_source(run.source)}"
    return f"asked by {person(run.requested_by)} {via}" if run.requested_by else f"asked {via}"


def _goal_line(run: AgentRun, run_url: str) -> str:
    goal = inline_text(title_of(run.target_text, max_length=200))
    return f"**Goal:** {goal} · {asked(run)} · [agent run]({run_url})\n"


def plan_markdown(plan: str | None) -> str:
    """The agent's plan as Markdown that cannot swallow what follows it: a code fence left open is
    closed, and a very long plan is cut (the run's page has all of it)."""
    text = (plan or "").strip()
    if len(text) > PLAN_CHARS:
        text = text[:PLAN_CHARS].rstrip() + "\n\n*… the rest of the plan is on the run's page.*"
    fence: str | None = None
    for line in text.split("\n"):
        match = _FENCE.fullmatch(line)
        if match and fence is None:
            fence = match[1]
        elif match and fence is not None and match[1][0] == fence[0] and len(match[1]) >= len(fence) \
                and not match[2].strip():
            fence = None
    return text + (f"\n{fence}" if fence else "") + "\n" if text else "*(the agent gave no plan)*\n"


def plan_comment(run: AgentRun, run_url: str) -> tuple[str, str]:
    """The plan, waiting for `/plan confirm` or `/plan reject`; once decided, who decided (the plan folded)."""
    plan = plan_markdown(run.plan_text)
    found_by = marker(PLAN, run.id)
    head = f"{found_by}\n"
    if run.status == AGENT_AWAITING_CONFIRMATION or not run.plan_decided_by:
        return found_by, head + (
            f"### Plan of agent run: waiting for confirmation\n\n{_goal_line(run, run_url)}\n{plan}\n---\n"
            "Reply `/plan confirm` to let the agent make this change, or `/plan reject` to drop it "
            "(the run's page has the same buttons).\n")
    rejected = run.status == AGENT_CANCELLED and (run.reason or "").startswith("plan rejected")
    if rejected:
        heading, then = f"✗ Plan rejected by {person(run.plan_decided_by)}", "Nothing was changed."
    else:
        heading = f"✓ Plan confirmed by {person(run.plan_decided_by)}"
        then = "The agent is making the change; its outcome will be posted here."
    return found_by, head + (f"### {heading}\n\n{_goal_line(run, run_url)}\n"
                         f"<details>\n<summary>The plan</summary>\n\n{plan}\n</details>\n\n{then}\n")


def context_comment(run: AgentRun, run_url: str) -> tuple[str, str]:
    """On a PR the agent opened: what it was asked, by whom, and the plan it followed."""
    found_by = marker(CONTEXT, run.id)
    parts = [f"{found_by}\n### Opened by a CodegenApp agent run\n\n{_goal_line(run, run_url)}"]
    if "\n" in run.target_text.strip():
        goal = plan_markdown(run.target_text)
        parts.append(f"\n<details>\n<summary>The goal in full</summary>\n\n{goal}\n</details>\n")
    if run.plan_text:
        decided = f" (confirmed by {person(run.plan_decided_by)})" if run.plan_decided_by else ""
        parts.append(f"\n<details>\n<summary>The plan{decided}</summary>\n\n{plan_markdown(run.plan_text)}\n"
                     "</details>\n")
    tries = run.max_fix_attempts
    fixes = f"the agent tries to fix a failure ({plural(tries, 'attempt')} at most)" if tries else \
        "a failure is left to a person"
    parts.append(f"\nThis PR is validated like any other; {fixes}. The outcome will be posted here.\n")
    return found_by, "".join(parts)


def outcome_comment(run: AgentRun, run_url: str, *, needs_human: bool = False) -> tuple[str, str]:
    """How the run ended, in a line or two, with a link to its page."""
    reason = (run.reason or "").strip().rstrip(".")
    if needs_human:
        heading = "✗ A human is needed"
    else:
        mark = "✓ " if run.status == AGENT_COMPLETED else "✗ " if run.status != AGENT_CANCELLED else ""
        heading = f"{mark}Agent run {labels.agent_status(run.status).lower()}"
    said = f"Agent run stopped: {reason}." if needs_human else (f"{reason[:1].upper()}{reason[1:]}." if reason else "")
    facts = []
    if run.fix_attempts:
        facts.append(f"fix attempts: {run.fix_attempts} of {run.max_fix_attempts}")
    if run.validation_status:
        facts.append(f"last validation: {labels.conclusion(run.validation_status).lower()}"
                     if run.validation_status in labels.CONCLUSIONS
                     else f"last validation: {labels.validation_state(run.validation_status).lower()}")
    joined = "; ".join(facts)
    detail = f"{joined[:1].upper()}{joined[1:]}.\n\n" if facts else ""
    found_by = marker(OUTCOME, run.id)
    return found_by, (f"{found_by}\n### {heading}\n\n{said}\n\n{detail}{_goal_line(run, run_url)}"
                     .replace("\n\n\n", "\n\n"))
