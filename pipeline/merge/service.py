"""The GitHub shell around `pipeline.merge.decision`: read what the decision needs, merge the validated head.

One path for every trigger (`/merge`, the Merge button, `/auto-merge on`, auto-merge after a
successful validation):

1. lock the base branch: an asyncio lock per (project, base branch) in this process, then the
   `merge_locks` row (one statement; with several workers on PostgreSQL the row is the lock);
2. read the PR again, inside the lock, and the stored validation of its current head;
3. decide (`merge_decision`), reading the base branch's required checks only when the cheap checks pass,
   once (the re-reads while GitHub computes mergeability, seconds apart, use the same);
4. claim the merge of that head in the store: a second `/merge` of the same head does nothing;
5. `PUT .../pulls/{n}/merge` with `sha` = the validated head. 409 (head moved), 405 (not mergeable,
   blocked) and 422 end the attempt with a clear message; nothing retries them;
6. delete the head branch when the repository's config asks for it (never a fork's).

Every merge and every refusal is written to the audit log. The caller reports the outcome (a reply
to a command, a PR comment for a button or auto-merge): this module never comments itself.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from gidgethub import BadRequest

from bot import labels
from bot.events import EventBus
from bot.github.check_runs import CHECK_NAME
from bot.github.github_app import GitHubApp, RepoGitHub
from bot.github.types import PullRequest
from bot.models import Project, ValidationState, new_id
from bot.store import Store
from pipeline.merge.decision import (NOT_READABLE, MergeDecision, MergeSettings, RequiredCheck, RequiredChecks,
                                     merge_decision, merge_settings, required_checks)
from pipeline.report.text import short_sha
from pipeline.repo_config.parse import ConfigFileError, RepoConfig
from pipeline.repo_config.reading import project_settings, read_repo_config

log = logging.getLogger(__name__)

LOCK_TTL = timedelta(minutes=10)  # longer than any merge request waits for its turn to be sent
LOCK_WAIT_SECONDS = 120.0
LOCK_POLL_SECONDS = 0.5


class MergeBusy(Exception):
    pass


@dataclass(frozen=True)
class MergeOutcome:
    merged: bool
    message: str                 # one sentence for the PR: "Merged abc1234 into main (squash)." / "Not merging: ..."
    head_sha: str | None = None
    merge_commit_sha: str | None = None
    stale: bool = False          # the PR moved on from the head the caller meant; nothing to report


def merge_error_message(status: int, github_message: str, *, head_sha: str, base_ref: str) -> str:
    """What to tell the PR when GitHub refuses the merge request."""
    said = f" (GitHub: “{github_message}”)" if github_message else ""
    if status == 409:
        return (f"Not merged: the head moved after {short_sha(head_sha)} was validated{said}. "
                "The new head is validated on its own; merge it once that passes.")
    if status == 405:
        return f"Not merged: GitHub says the PR cannot be merged into {base_ref} now{said}."
    if status == 422:
        return f"Not merged: GitHub refused the merge{said}; check for conflicts and the allowed merge methods."
    if status == 403:
        return f"Not merged: the app is not allowed to merge here{said}; it needs the contents: write permission."
    return f"Not merged: GitHub answered {status}{said}."


class MergeService:
    def __init__(self, store: Store, github: GitHubApp, bus: EventBus) -> None:
        self.store = store
        self.github = github
        self.bus = bus
        self._locks: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = weakref.WeakValueDictionary()
        self.mergeable_retry_delays: tuple[float, ...] = (1.0, 2.0)  # re-reads while GitHub computes mergeability
        self.lock_wait_seconds = LOCK_WAIT_SECONDS

    def repo(self, project: Project) -> RepoGitHub:
        return self.github.repo(project.installation_id, project.name)

    def own_check(self) -> RequiredCheck:
        app_id = self.github.app_id
        return RequiredCheck(CHECK_NAME, int(app_id) if app_id and str(app_id).isdigit() else None)

    # ---- settings ------------------------------------------------------------------------------

    async def settings(self, project: Project, pr_number: int, repo_config: RepoConfig | None) -> MergeSettings:
        override = await self.store.pull_requests.auto_merge(project.id, pr_number)
        return merge_settings(repo_config, project_settings(project), pr_auto_merge=override)

    # ---- the decision --------------------------------------------------------------------------

    async def required_checks(self, repo: RepoGitHub, base_ref: str) -> RequiredChecks:
        """The base branch's required checks; where the protection cannot be read, none."""
        try:
            protection = await repo.repos.protection(base_ref)
        except BadRequest as exc:
            if exc.status_code == 404:
                return NOT_READABLE  # not protected (or not visible): nothing is required
            if exc.status_code != 403:
                raise
            # No administration permission: the branch's own summary has the required checks too.
            try:
                branch = await repo.repos.branch(base_ref)
            except BadRequest:
                return NOT_READABLE
            if branch is None:
                return NOT_READABLE
            return required_checks(branch.get("protection")) if branch.get("protected") else RequiredChecks(True)
        return required_checks(protection)

    async def decide(self, repo: RepoGitHub, pull: PullRequest, validation: ValidationState | Any | None, *,
                     required: RequiredChecks | None = None) -> tuple[MergeDecision, RequiredChecks | None]:
        """`merge_decision` with what it needs read from GitHub; also the base branch's required checks, for
        a decision again moments later to pass back as `required`. They are read only once the cheap
        checks pass (None until then)."""
        first = merge_decision(pull, validation)
        if not first.allowed and not first.retry_later:
            return first, required  # refused before any required check matters
        if required is None:
            required = await self.required_checks(repo, pull.base_ref)
        own = self.own_check()
        others = [c for c in required.checks if not (c.context == own.context and c.app_id in (None, own.app_id))]
        check_runs: list[dict[str, Any]] = []
        statuses: list[dict[str, Any]] = []
        if others:
            # a required status the app may not read (403) reads as missing
            check_runs = await repo.check_runs.for_ref(pull.head_sha)
            statuses = await repo.check_runs.statuses(pull.head_sha)
        return merge_decision(pull, validation, required=required, check_runs=check_runs, statuses=statuses,
                              own_check=own), required

    # ---- the lock ------------------------------------------------------------------------------

    @asynccontextmanager
    async def lock(self, project_id: str, base_ref: str) -> AsyncIterator[None]:
        """At most one merge at a time per (project, base branch): in this process, then across workers."""
        key = (project_id, base_ref)
        local = self._locks.get(key)
        if local is None:
            local = self._locks[key] = asyncio.Lock()
        async with local:
            holder = new_id()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.lock_wait_seconds
            while not await self.store.pull_requests.acquire_merge_lock(project_id, base_ref, holder, ttl=LOCK_TTL):
                if loop.time() >= deadline:
                    raise MergeBusy(f"another merge into {base_ref} is still running")
                await asyncio.sleep(LOCK_POLL_SECONDS)
            try:
                yield
            finally:
                await asyncio.shield(self.store.pull_requests.release_merge_lock(project_id, base_ref, holder))

    # ---- merging -------------------------------------------------------------------------------

    async def merge(self, project: Project, pr_number: int, *, trigger: str,
                    requested_by: str | None, method: str | None = None, expected_head: str | None = None,
                    delivery_id: str | None = None) -> MergeOutcome:
        """Merge the PR at its validated head if the decision allows it (see the module docstring).

        `expected_head`: the head the caller acted on (a check run's button, a validation that just
        finished); if the PR has moved on, nothing is merged and the outcome is `stale`.
        """
        repo = self.repo(project)
        pull = await repo.pulls.get(pr_number)
        try:
            async with self.lock(project.id, pull.base_ref):
                return await self._merge_locked(repo, project, pr_number, trigger=trigger, requested_by=requested_by,
                                                method=method, expected_head=expected_head, delivery_id=delivery_id)
        except MergeBusy as exc:
            return await self._refused(project, pr_number, pull.head_sha, str(exc), trigger=trigger,
                                       requested_by=requested_by, delivery_id=delivery_id, method=method)

    async def _merge_locked(self, repo: RepoGitHub, project: Project, pr_number: int, *, trigger: str,
                            requested_by: str | None, method: str | None, expected_head: str | None,
                            delivery_id: str | None) -> MergeOutcome:
        pull = await repo.pulls.get(pr_number)
        head = pull.head_sha
        if expected_head is not None and head != expected_head and not pull.merged:
            reason = f"the PR's head is now {short_sha(head)}, not {short_sha(expected_head)}"
            outcome = await self._refused(project, pr_number, head, reason, trigger=trigger,
                                          requested_by=requested_by, delivery_id=delivery_id, method=method)
            return MergeOutcome(False, outcome.message, head_sha=head, stale=True)
        validation = await self.store.validations.latest_for_head(project.id, head, pr_number=pr_number)
        decision, required = await self.decide(repo, pull, validation)
        for delay in self.mergeable_retry_delays:
            if not decision.retry_later:
                break
            await asyncio.sleep(delay)  # GitHub computes mergeability in the background after a read
            pull = await repo.pulls.get(pr_number)
            if pull.head_sha != head:
                break
            # The required checks the first decision read serve its retries: they are seconds apart.
            decision, required = await self.decide(repo, pull, validation, required=required)
        if pull.head_sha != head:
            decision = MergeDecision(False, f"the head moved to {short_sha(pull.head_sha)} while deciding")
        if not decision.allowed:
            return await self._refused(project, pr_number, head, decision.reason, trigger=trigger,
                                       requested_by=requested_by, delivery_id=delivery_id, method=method)
        try:
            settings = await self.settings(project, pr_number, await read_repo_config(repo, pull.base_sha))
        except ConfigFileError as exc:
            return await self._refused(project, pr_number, head, f"the repository's config is invalid: {exc}",
                                       trigger=trigger, requested_by=requested_by, delivery_id=delivery_id,
                                       method=method)
        method = method or settings.method
        base_ref = pull.base_ref

        claim = await self.store.pull_requests.claim_merge(
            project_id=project.id, pr_number=pr_number, head_sha=head, base_ref=base_ref, method=method,
            trigger=trigger, requested_by=requested_by)
        if not claim.claimed:
            done = claim.merge
            reason = (f"{short_sha(head)} was already merged" if done.status == "merged"
                      else f"a merge of {short_sha(head)} is already in progress")
            return await self._refused(project, pr_number, head, reason, trigger=trigger,
                                       requested_by=requested_by, delivery_id=delivery_id, method=method)
        details = {"pr": pr_number, "head_sha": head, "base": base_ref, "method": method, "trigger": trigger}
        try:
            merged = await repo.pulls.merge(pr_number, sha=head, method=method)
        except BadRequest as exc:
            github_message = str(exc.args[0]) if exc.args else ""
            message = merge_error_message(exc.status_code, github_message, head_sha=head, base_ref=base_ref)
            await self.store.pull_requests.finish_merge(claim.merge.id, merged=False,
                                                        error=f"{exc.status_code}: {github_message}")
            await self._audit("merge.failed", project, requested_by, delivery_id,
                              **details, status=exc.status_code, error=github_message)
            log_merge(project, pr_number, head, method, trigger, requested_by, message)
            return MergeOutcome(False, message, head_sha=head)
        except BaseException as exc:
            if isinstance(exc, Exception):
                log_merge(project, pr_number, head, method, trigger, requested_by,
                          f"{labels.merge_status('failed')}: {type(exc).__name__}: {exc}")
            await asyncio.shield(self.store.pull_requests.finish_merge(
                claim.merge.id, merged=False, error=f"{type(exc).__name__}: {exc}"))
            await asyncio.shield(self._audit("merge.failed", project, requested_by, delivery_id, **details,
                                              error=f"{type(exc).__name__}: {exc}"))
            raise
        merge_sha = merged.sha
        await self.store.pull_requests.finish_merge(claim.merge.id, merged=True, merge_commit_sha=merge_sha)
        await self._audit("merge.merged", project, requested_by, delivery_id, **details, merge_commit_sha=merge_sha)
        log_merge(project, pr_number, head, method, trigger, requested_by,
                  f"{labels.merge_status('merged')} into {base_ref} as {short_sha(merge_sha) if merge_sha else '-'}")
        self.bus.publish("merge.merged", project_id=project.id, pr_number=pr_number, head_sha=head,
                                  merge_commit_sha=merge_sha, trigger=trigger)
        if settings.delete_branch:
            await self._delete_head_branch(repo, project, pull, requested_by, delivery_id)
        return MergeOutcome(True, f"Merged {short_sha(head)} into {base_ref} ({method}).", head_sha=head,
                            merge_commit_sha=merge_sha)

    async def _delete_head_branch(self, repo: RepoGitHub, project: Project, pull: PullRequest,
                                  requested_by: str | None, delivery_id: str | None) -> None:
        if pull.fork:
            return  # a fork's branch belongs to its owner
        branch = pull.head_ref
        try:
            await repo.repos.delete_branch(branch)
        except BadRequest as exc:  # 422: already gone (GitHub's own setting may have deleted it)
            log.info("deleting branch %s of %s: %s", branch, project.name, exc)
            return
        await self._audit("merge.branch_deleted", project, requested_by, delivery_id, pr=pull.number,
                          branch=branch)

    async def _refused(self, project: Project, pr_number: int, head: str | None, reason: str, *, trigger: str,
                       requested_by: str | None, delivery_id: str | None, method: str | None = None) -> MergeOutcome:
        await self._audit("merge.refused", project, requested_by, delivery_id, pr=pr_number, head_sha=head,
                          trigger=trigger, reason=reason)
        message = f"Not merging: {reason}."
        log_merge(project, pr_number, head, method, trigger, requested_by, message)
        return MergeOutcome(False, message, head_sha=head)

    async def _audit(self, action: str, project: Project, actor: str | None, delivery_id: str | None,
                     **details: Any) -> None:
        await self.store.audit.record(action, actor=actor, installation_id=project.installation_id,
                                      project_id=project.id, delivery_id=delivery_id, details=details)

    # ---- after a validation --------------------------------------------------------------------

    async def merge_button(self, project: Project, validation: Any) -> bool:
        """Whether the check run of a head whose validation just succeeded (`validation`, completed)
        gets the Merge button: when merging it is allowed now (or GitHub is still computing)."""
        repo = self.repo(project)
        decision, _ = await self.decide(repo, await repo.pulls.get(validation.pr_number), validation)
        return decision.allowed or decision.retry_later

    async def auto_merge(self, project: Project, validation: Any) -> MergeOutcome:
        """Auto-merge after a successful validation; a refusal or failure is commented on the PR."""
        outcome = await self.merge(project, validation.pr_number, trigger="auto-merge", requested_by=None,
                                   expected_head=validation.head_sha)
        if not outcome.merged and not outcome.stale:
            await self.repo(project).comments.create(
                validation.pr_number, f"Auto-merge is on, but {_lower_first(outcome.message)}\n\n"
                                      "Comment `/merge` to try again.")
        return outcome


def log_merge(project: Project, pr_number: int, head: str | None, method: str | None, trigger: str,
              requested_by: str | None, result: str) -> None:
    """One INFO line per merge outcome: `acme/widgets PR #12 at abc1234 (squash) by @alice via /merge: Merged
    into main as def5678`."""
    log.info("%s PR #%d at %s (%s) %s: %s", project.name, pr_number, short_sha(head) if head else "an unknown head",
             method or "method not chosen yet", labels.triggered(trigger, requested_by), result)


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]
