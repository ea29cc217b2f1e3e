"""Whether a PR may be merged, as a pure function of stored and fetched state (tested without I/O).

The app merges only the head it validated: the PR must be open and not a draft, the stored
validation of its *current* head must have succeeded, GitHub must not report a conflict, and every
required check of the base branch's protection (where the app can read it) must be green. The merge
request itself then names that head (`sha`), so a push in between makes GitHub refuse it (409).

`mergeable_state == "blocked"` alone does not refuse: GitHub recomputes it a moment after a check
completes, so right after our own check run turns green it is often still "blocked". The merge
request is the authority there; GitHub answers 405 with the reason when something (a required
review, a ruleset) really blocks it, and the app reports that.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from bot import labels
from bot.github.types import PullRequest
from pipeline.report.text import short_sha
from pipeline.repo_config.effective import EffectiveConfig, effective_config
from pipeline.repo_config.parse import ProjectSettings, RepoConfig
from pipeline.results import LISTED_FINDINGS, stored_failing_findings

GREEN_CONCLUSIONS = frozenset({"success", "neutral", "skipped"})
ACTIVE_STATUSES = frozenset({"queued", "in_progress"})


class ValidationView(Protocol):
    """What the decision reads of a stored validation (bot.models.ValidationState has it)."""

    head_sha: str
    status: str
    conclusion: str | None
    title: str | None  # what the check run's title said
    test_results: dict[str, Any] | None  # its findings, for a refusal to list


@dataclass(frozen=True)
class RequiredCheck:
    context: str
    app_id: int | None = None  # only a check run of this app counts; None: any check run or status


@dataclass(frozen=True)
class RequiredChecks:
    readable: bool  # False: the protection could not be read (404 unprotected, 403 no permission)
    checks: tuple[RequiredCheck, ...] = ()


NOT_READABLE = RequiredChecks(readable=False)


def required_checks(protection: Mapping[str, Any] | None) -> RequiredChecks:
    """The required checks of a branch protection: `GET .../branches/{b}/protection` or the
    `protection` summary of `GET .../branches/{b}` (which has `enforcement_level`). None: not readable."""
    if protection is None:
        return NOT_READABLE
    if protection.get("enabled") is False:
        return RequiredChecks(readable=True)
    rules = protection.get("required_status_checks") or {}
    if not isinstance(rules, Mapping) or rules.get("enforcement_level") == "off":
        return RequiredChecks(readable=True)
    found: dict[str, RequiredCheck] = {}
    for item in rules.get("checks") or []:
        if isinstance(item, Mapping) and isinstance(item.get("context"), str):
            app_id = item.get("app_id")
            app = app_id if isinstance(app_id, int) and app_id > 0 else None
            found.setdefault(item["context"], RequiredCheck(item["context"], app))
    for context in rules.get("contexts") or []:
        if isinstance(context, str):
            found.setdefault(context, RequiredCheck(context))
    return RequiredChecks(readable=True, checks=tuple(found.values()))


def check_state(required: RequiredCheck, check_runs: Iterable[Mapping[str, Any]],
                statuses: Iterable[Mapping[str, Any]]) -> str:
    """"success", "pending", "missing" or the failing conclusion/state of one required check at the
    head: the newest matching check run, else the newest commit status with that context."""
    runs = [r for r in check_runs if r.get("name") == required.context
            and (required.app_id is None or (r.get("app") or {}).get("id") == required.app_id)]
    if runs:
        run = max(runs, key=lambda r: r.get("id") or 0)
        if run.get("status") != "completed":
            return "pending"
        conclusion = run.get("conclusion") or "failure"
        return "success" if conclusion in GREEN_CONCLUSIONS else conclusion
    if required.app_id is None:
        matching = [s for s in statuses if s.get("context") == required.context]
        if matching:
            newest = max(matching, key=lambda s: (s.get("updated_at") or s.get("created_at") or "", s.get("id") or 0))
            return str(newest.get("state") or "pending")
    return "missing"


def not_open(pull: PullRequest) -> str | None:
    """Why the PR cannot be merged whatever else holds (merged, closed, a draft); None when it is open."""
    if pull.merged:
        return "the PR is already merged"
    if pull.state != "open":
        return "the PR is closed"
    return "the PR is a draft" if pull.draft else None


def required_check_problems(required: RequiredChecks, check_runs: Iterable[Mapping[str, Any]],
                            statuses: Iterable[Mapping[str, Any]], own_check: RequiredCheck | None) -> list[str]:
    """Each required check that is not green at the head, in words; `own_check` (the app's) is skipped:
    the caller judges it."""
    check_runs, statuses = list(check_runs), list(statuses)
    problems = []
    for check in required.checks:
        if own_check is not None and check.context == own_check.context and check.app_id in (None, own_check.app_id):
            continue
        result = check_state(check, check_runs, statuses)
        if result == "success":
            continue
        words = {"pending": "is still pending", "missing": "has not reported on this head"}
        said = words.get(result) or f"did not pass ({labels.conclusion(result)})"  # "(Action required)"
        problems.append(f"required check `{check.context}` {said}")
    return problems


@dataclass(frozen=True)
class MergeDecision:
    allowed: bool
    reason: str               # a sentence fragment: "Not merging: {reason}." / "Merging: {reason}."
    retry_later: bool = False  # GitHub is still computing mergeability: read the PR again shortly


def merge_decision(pull: PullRequest, validation: ValidationView | None, *,
                   required: RequiredChecks = NOT_READABLE,
                   check_runs: Iterable[Mapping[str, Any]] = (),
                   statuses: Iterable[Mapping[str, Any]] = (),
                   own_check: RequiredCheck | None = None) -> MergeDecision:
    """May `pull` (as read from GitHub now) be merged at its current head?

    `validation` is the stored validation of that head (the newest one), `required` the base
    branch's required checks, `check_runs` / `statuses` those of the head. A required check that is
    `own_check` (the app's own check run) is judged by `validation`, which is the source of truth
    for it (GitHub's copy may not show the completion yet).
    """
    head = pull.head_sha
    base = pull.base_ref or "the base branch"
    if (refusal := not_open(pull)) is not None:
        return MergeDecision(False, refusal)
    if validation is None or validation.head_sha != head:
        return MergeDecision(False, f"the current head {short_sha(head)} has not been validated (comment `/validate`)")
    if validation.status in ACTIVE_STATUSES:
        return MergeDecision(False, f"the validation of {short_sha(head)} is still running")
    if validation.status == "waiting":
        return MergeDecision(False, f"{short_sha(head)} is a fork's head waiting for a maintainer's `/ok-to-test`")
    if validation.conclusion != "success":
        outcome = labels.validation_state(validation.status, validation.conclusion)
        said = f"{outcome}: {validation.title}" if validation.title else outcome
        return MergeDecision(False, f"the validation of {short_sha(head)} did not pass ({said})"
                                    + findings_listed(validation.test_results))
    state = pull.mergeable_state
    if pull.mergeable is False or state == "dirty":
        return MergeDecision(False, f"the PR has conflicts with {base}; resolve them and push")
    if state == "behind":
        return MergeDecision(False, f"the head branch is behind {base} and branch protection requires it "
                                    "to be up to date; update the branch")
    problems = required_check_problems(required, check_runs, statuses, own_check)  # own: the validation above
    if problems:
        return MergeDecision(False, "; ".join(problems))
    if pull.mergeable is None or state == "unknown":
        return MergeDecision(False, "GitHub has not finished checking whether the PR can be merged; "
                                    "try again in a moment", retry_later=True)
    return MergeDecision(True, f"the validation of {short_sha(head)} succeeded")


def findings_listed(results: Mapping[str, Any] | None) -> str:
    """The findings that failed the validation, as a markdown list under their step (at most
    LISTED_FINDINGS, then a count): what a refusal must show for a PR that failed on findings alone."""
    lines: list[str] = []
    for step, found in stored_failing_findings(results).items():
        lines.append(f"\n\n`{step}`:")
        lines += [f"- `{line}`" for line in found[:LISTED_FINDINGS]]
        if len(found) > LISTED_FINDINGS:
            lines.append(f"- … and {len(found) - LISTED_FINDINGS} more (see the check run's annotations)")
    return "\n".join(lines)


# ---- settings -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class MergeSettings:
    auto_merge: bool
    auto_merge_source: str  # "pull_request" (/auto-merge), "repository", "project" or "default"
    method: str
    delete_branch: bool


def merge_settings(repo: RepoConfig | None, project: ProjectSettings, *,
                   pr_auto_merge: bool | None = None) -> MergeSettings:
    """The effective auto-merge switch and method: `/auto-merge on|off` on the PR, then the
    repository's config file, then the project's setting (see pipeline.repo_config.effective)."""
    config: EffectiveConfig = effective_config(repo, project, pr_auto_merge=pr_auto_merge)
    return MergeSettings(auto_merge=config.auto_merge, auto_merge_source=config.sources["auto_merge"],
                         method=config.merge_method, delete_branch=config.delete_branch_after_merge)
