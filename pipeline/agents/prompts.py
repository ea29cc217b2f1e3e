"""What the agent is told (pure): the goal, the project's repository rules and planning statement, the
confirmed plan, and for a fix the failing validation's title, failing steps, their analysis findings
(from the structured findings stored with the validation, so that a long output tail cannot push them
out) and their (masked) output tails. Output tails are masked before they get here and again by the
caller's redactor."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.results import LISTED_FINDINGS, stored_failing_findings

MAX_TAIL_CHARS = 3000
MAX_FAILING_STEPS = 3
MAX_GOAL_CHARS = 20_000
MAX_PLAN_CHARS = 50_000
FIX_GOAL = "Make the failing validation of this pull request pass."
QUEUE_FIX_GOAL = ("This pull request was taken out of the merge queue: it fails when merged on top of the base "
                  "branch and the pull requests ahead of it in the queue, though it may pass alone. Change it so "
                  "that it passes merged with them.")


@dataclass(frozen=True)
class PromptContext:
    goal: str
    repository: str
    base_branch: str
    branch: str | None = None  # where commits go (an existing PR's head branch, or a new branch)
    pr_number: int | None = None  # the PR the agent works on (None: it opens one)
    repository_rules: str = ""
    planning_statement: str = ""
    plan: str | None = None  # the confirmed plan


@dataclass(frozen=True)
class FailingStep:
    name: str
    stage: str
    status: str
    output_tail: str
    detail: str = ""
    findings: tuple[str, ...] = ()  # `app.py:12 E501 line too long`, at most LISTED_FINDINGS
    more_findings: int = 0  # how many more there are


@dataclass(frozen=True)
class FixContext:
    title: str
    head_sha: str
    failing_steps: tuple[FailingStep, ...] = ()
    error: str | None = None  # the validation could not run (config error, sandbox...)
    attempt: int = 1
    max_attempts: int = 3
    no_change: bool = False  # the previous attempt pushed nothing


def fix_context(*, title: str | None, head_sha: str, results: Mapping[str, Any] | None, attempt: int,
                max_attempts: int, no_change: bool = False,
                redact: Callable[[str], str] = lambda text: text) -> FixContext:
    """The part of a completed validation (ValidationState.title / test_results) an agent needs."""
    results = results or {}
    steps = [s for s in results.get("steps") or [] if isinstance(s, Mapping)]
    failing = [s for s in steps if s.get("status") in ("failed", "timed_out")][:MAX_FAILING_STEPS]
    error = results.get("config_error") or results.get("error")
    found = stored_failing_findings(results)

    def failing_step(step: Mapping[str, Any]) -> FailingStep:
        name = str(step.get("name") or "step")
        lines = [redact(line) for line in found.get(name, [])]
        return FailingStep(name=name, stage=str(step.get("stage") or ""), status=str(step.get("status")),
                           output_tail=redact(str(step.get("output_tail") or ""))[-MAX_TAIL_CHARS:],
                           detail=redact(str(step.get("detail") or "")), findings=tuple(lines[:LISTED_FINDINGS]),
                           more_findings=max(0, len(lines) - LISTED_FINDINGS))

    return FixContext(
        title=redact(title or "the validation failed"), head_sha=head_sha,
        failing_steps=tuple(failing_step(s) for s in failing),
        error=redact(str(error)) if error else None, attempt=attempt, max_attempts=max_attempts,
        no_change=no_change)


def fix_goal(queue_report: str | None = None) -> str:
    """The goal of a "Fix with agent" run: make the PR's failing validation pass, or, for a PR the merge
    queue ejected (`queue_report`: what its "Merge queue" check run says: the failing step, the PRs merged
    ahead of it, the output's tail), make it pass merged with those. The PR's own validation may well pass:
    the failure is only in the queue's candidate, so the goal carries it."""
    if not (queue_report or "").strip():
        return FIX_GOAL
    assert queue_report is not None
    report = queue_report.strip()[:MAX_GOAL_CHARS - len(QUEUE_FIX_GOAL) - 100]
    return f"{QUEUE_FIX_GOAL}\n\nWhat the merge queue reported:\n\n{report}"


def _section(title: str, text: str) -> list[str]:
    text = text.strip()
    return [f"## {title}", "", text, ""] if text else []


def _fence(text: str) -> str:
    fence = "```"
    while fence in text:
        fence += "`"
    return f"{fence}\n{text.rstrip()}\n{fence}"


def _project(ctx: PromptContext) -> list[str]:
    lines = [f"Repository: {ctx.repository} (default branch `{ctx.base_branch}`)."]
    if ctx.pr_number is not None:
        lines.append(f"Work on pull request #{ctx.pr_number}: push your commits to its branch "
                     f"`{ctx.branch}`; do not open another pull request.")
    else:
        where = f" from a branch named `{ctx.branch}`" if ctx.branch else ""
        lines.append(f"Open one pull request against `{ctx.base_branch}`{where} with your change.")
    lines.append("")
    return lines + _standing_instructions(ctx)


def _standing_instructions(ctx: PromptContext) -> list[str]:
    """What the project tells its agents every time: every prompt, a fix's too, carries it."""
    return _section("Repository rules", ctx.repository_rules) + _section("Planning statement", ctx.planning_statement)


def _goal(ctx: PromptContext) -> list[str]:
    return ["## Goal", "", ctx.goal.strip()[:MAX_GOAL_CHARS], ""]


def _failure(fix: FixContext) -> list[str]:
    lines = [f"## Failing validation of {fix.head_sha[:7]}", "", f"Title: {fix.title}", ""]
    if fix.error:
        lines += ["The validation could not run:", "", _fence(fix.error), ""]
    for step in fix.failing_steps:
        what = f"Step `{step.name}` ({step.stage}) {step.status.replace('_', ' ')}"
        lines += [what + (f": {step.detail}" if step.detail else "."), ""]
        if step.findings:
            more = [f"- … and {step.more_findings} more"] if step.more_findings else []
            lines += ["Its findings on the changed lines:", "", *(f"- {line}" for line in step.findings), *more, ""]
        if step.output_tail:
            lines += ["End of its output:", "", _fence(step.output_tail), ""]
    return lines


def plan_prompt(ctx: PromptContext, *, failure: FixContext | None = None) -> str:
    lines = ["You are asked for a PLAN only. Do not change any file, do not push, do not open a pull request.",
             "Read the repository and reply with a concise, numbered plan of the change you would make to "
             "reach the goal below; it will be shown to a maintainer to confirm or reject.", ""]
    lines += _goal(ctx) + _project(ctx)
    if failure is not None:
        lines += _failure(failure)
    return "\n".join(lines).rstrip() + "\n"


def execute_prompt(ctx: PromptContext, *, failure: FixContext | None = None) -> str:
    lines = ["Make the change described below, commit it, and push it.", ""]
    lines += _goal(ctx)
    if ctx.plan:
        lines += ["## Confirmed plan", "", "A maintainer confirmed this plan; follow it.", "",
                  ctx.plan.strip()[:MAX_PLAN_CHARS], ""]
    lines += _project(ctx)
    if failure is not None:
        lines += _failure(failure)
    lines += ["The pull request is validated automatically; if the validation fails you will be told why."]
    return "\n".join(lines).rstrip() + "\n"


def fix_prompt(ctx: PromptContext, fix: FixContext) -> str:
    lines = [f"The validation of pull request #{ctx.pr_number} failed. Fix it (attempt {fix.attempt} of "
             f"{fix.max_attempts}) and push the fix to the branch `{ctx.branch}`.", ""]
    if fix.no_change:
        lines += ["Your previous attempt pushed no change: this time push a commit that fixes the failure.", ""]
    lines += _failure(fix)
    lines += ["## The original goal", "", ctx.goal.strip()[:MAX_GOAL_CHARS], ""]
    lines += _standing_instructions(ctx)
    return "\n".join(lines).rstrip() + "\n"


def slug(text: str, *, max_length: int = 40) -> str:
    """A branch-name-safe slug of the goal's first words."""
    out: list[str] = []
    for char in text.lower():
        if char.isascii() and char.isalnum():
            out.append(char)
        elif out and out[-1] != "-":
            out.append("-")
    result = "".join(out).strip("-")[:max_length].rstrip("-")
    return result or "change"


def title_of(goal: str, *, max_length: int = 72) -> str:
    first = next((line.strip() for line in goal.splitlines() if line.strip()), "Agent change")
    return first if len(first) <= max_length else first[:max_length - 1].rstrip() + "…"
