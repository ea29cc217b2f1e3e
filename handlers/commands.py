"""Slash commands in PR comments (parsing is pure: pipeline.commands.parse), and what commands and the
check run's buttons do on a PR (handlers/checks.py uses `PullRequestActions` for the buttons).

Who may: write, maintain or admin on the repository, from
`GET /repos/{owner}/{repo}/collaborators/{user}/permission`, cached for a minute. Anyone else gets
one short reply naming the permission needed, and nothing runs. A command that is taken gets 👀 on
the comment; when every command of the comment succeeded, 👍; whatever needs saying (a refusal, an
error, `/help`) comes in one reply. Comments by bots (the app's own included) are ignored.

A comment's commands are handled once, whichever way its delivery comes again (a replay, a webhook job
of another delivery), as two rows of the `leases` table, by the comment's id and a digest of its body (an
edit GitHub sends as `issue_comment.edited` with a new body is a new comment here). The job handling the
comment holds `command_claim` for a short time, renewed while it works (`held`), and released when it
fails; when the comment's commands were handled, it records `command_done` (which never expires in
practice) before letting the claim go. Any other job finds the comment claimed or done, and does nothing.
A job that died (its tries or its outage budget spent) or whose process died therefore leaves the comment
to a replay, which handles it. No table of its own (no migration).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from gidgethub import routing, sansio

from bot.github.github_app import RepoGitHub
from bot.github.types import PullRequest, can_write
from bot.logs import job_id_var
from bot.models import VALIDATION_ACTIVE, VALIDATION_WAITING, Project
from bot.redact import PROCESS_REDACTOR
from bot.store.leases import held
from handlers.context import EventContext
from handlers.payloads import required
from pipeline.commands.parse import Command, help_text, parse_commands
from pipeline.merge_queue.report import ejection_report
from pipeline.validation.buttons import ACTIONS
from pipeline.validation.service import NotRevalidated

log = logging.getLogger(__name__)

router = routing.Router()

NEEDED_PERMISSION = "write"
COMMAND_CLAIM_TTL = timedelta(minutes=2)  # renewed every third of it while the job handles the comment
COMMAND_DONE_TTL = timedelta(days=36_500)  # stored deliveries are kept, and may be replayed, for ever


def command_claim(comment_id: int, body: str) -> str:
    """The lease name of one version of a command comment (at most 64 characters)."""
    return f"command-comment:{comment_id}:{_digest(body)}"


def command_done(comment_id: int, body: str) -> str:
    """The lease name saying that version of the comment was handled (at most 64 characters)."""
    return f"command-done:{comment_id}:{_digest(body)}"


def _digest(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def claim_holder(job_id: int | None, delivery_id: str | None) -> str:
    """Who handles the comment now: the job (its retries are the same holder), else the delivery."""
    return f"job:{job_id}" if job_id is not None else f"delivery:{delivery_id}"[:64]


@dataclass(frozen=True)
class Outcome:
    ok: bool
    message: str | None = None  # said in the reply (for ok=False: why it did not happen)


def from_a_bot(data: dict[str, Any], app_id: str | None) -> bool:
    """Bots (the app itself included) do not command the app."""
    sender = data.get("sender") or {}
    comment = data.get("comment") or {}
    if sender.get("type") == "Bot" or (comment.get("user") or {}).get("type") == "Bot":
        return True
    via = comment.get("performed_via_github_app")
    return isinstance(via, dict) and str(via.get("id")) == str(app_id)


def refusal(login: str, full_name: str, what: str, role: str) -> str:
    return (f"@{login} you need {NEEDED_PERMISSION} access to {full_name} to {what} "
            f"(you have {role}), so nothing was done.")


class PullRequestActions:
    """What commands and buttons do on one PR, on behalf of one user."""

    def __init__(self, ctx: EventContext, project: Project, number: int, actor: str) -> None:
        self.ctx = ctx
        self.services = ctx.services
        self.project = project
        self.repo: RepoGitHub = ctx.repo(project)
        self.number = number
        self.actor = actor
        self._pull: PullRequest | None = None

    async def pull(self) -> PullRequest:
        if self._pull is None:
            self._pull = await self.repo.pulls.get(self.number)
        return self._pull

    async def authorized(self, what: str, **audit: Any) -> bool:
        role = await self.repo.repos.role(self.actor)
        if can_write(role):
            return True
        await self.ctx.audit("command.refused", actor=self.actor, project_id=self.project.id, pr=self.number,
                             role=role, needed=NEEDED_PERMISSION, **audit)
        await self.reply(refusal(self.actor, self.project.name, what, role))
        return False

    async def reply(self, body: str) -> None:
        await self.repo.comments.create(self.number, body)

    async def react(self, comment_id: int, content: str) -> None:
        await self.repo.comments.react(comment_id, content)

    # ---- comments ------------------------------------------------------------------------------

    async def run_comment(self, comment_id: int, commands: list[Command]) -> None:
        names = ", ".join(f"`/{c.name}`" for c in commands)
        if not await self.authorized(f"run {names}", commands=[c.name for c in commands], comment=comment_id):
            return
        await self.react(comment_id, "eyes")
        results: list[tuple[Command, Outcome]] = []
        for command in commands:
            await self.ctx.audit(f"command.{command.name}", actor=self.actor, project_id=self.project.id,
                                 pr=self.number, args=list(command.args), comment=comment_id,
                                 **({"error": command.error} if command.error else {}))
            try:
                outcome = await self.run(command)
            except Exception as exc:
                log.exception("/%s on %s#%s failed", command.name, self.project.name, self.number)
                outcome = Outcome(False, f"`/{command.name}` failed: {type(exc).__name__}: "
                                         f"{PROCESS_REDACTOR.redact(str(exc))[:300]}")
            results.append((command, outcome))
        if all(outcome.ok for _, outcome in results):
            await self.react(comment_id, "+1")
        said = [(command, outcome.message) for command, outcome in results if outcome.message]
        if len(said) == 1:
            await self.reply(f"@{self.actor} {said[0][1]}")
        elif said:
            await self.reply(f"@{self.actor}\n\n" + "\n\n".join(
                f"**`/{c.name}`**\n\n{m}" if "\n" in m else f"**`/{c.name}`**: {m}" for c, m in said))

    async def run(self, command: Command) -> Outcome:
        if command.error:
            return Outcome(False, command.error)
        if command.name == "validate":
            return await self.validate()
        if command.name == "cancel":
            return await self.cancel()
        if command.name == "merge":
            return await self.merge(method=command.args[0] if command.args else None, trigger="command.merge")
        if command.name == "auto-merge":
            return await self.auto_merge(command.args[0] == "on")
        if command.name == "ok-to-test":
            return await self.ok_to_test()
        if command.name == "agent":
            return Outcome(*await self.services.agent_runs.agent_command(self.project, self.number, command.args[0],
                                                                         actor=self.actor))
        if command.name == "plan":
            return Outcome(*await self.services.agent_runs.plan_command(self.project, self.number, command.args[0],
                                                                        actor=self.actor))
        if command.name == "queue":
            return await self.queue()
        if command.name == "dequeue":
            return await self.dequeue(f"dequeued by @{self.actor}")
        if command.name == "help":
            return Outcome(True, help_text())
        raise AssertionError(f"unhandled command {command.name}")

    # ---- what each command does ----------------------------------------------------------------

    async def validate(self) -> Outcome:
        try:
            await self.services.validations.revalidate(self.project, self.number, trigger="command.validate",
                                                       actor=self.actor)
        except NotRevalidated as exc:
            return Outcome(False, "Not validating: the PR is closed." if exc.closed else f"Not validating: {exc}.")
        return Outcome(True)

    async def cancel(self) -> Outcome:
        latest = await self.services.store.validations.latest_for_pr(self.project.id, self.number)
        if latest is None or latest.status not in VALIDATION_ACTIVE:
            return Outcome(False, "Nothing to cancel: no validation of this PR is running.")
        if not await self.services.validations.cancel(self.project, latest,
                                                      reason=f"cancelled by @{self.actor}", actor=self.actor):
            return Outcome(False, "Nothing to cancel: the validation finished meanwhile.")
        return Outcome(True)

    async def merge(self, *, method: str | None = None, trigger: str, expected_head: str | None = None) -> Outcome:
        outcome = await self.services.merges.merge(self.project, self.number, trigger=trigger,
                                                   requested_by=self.actor, method=method,
                                                   expected_head=expected_head,
                                                   delivery_id=self.ctx.event.delivery_id)
        return Outcome(True) if outcome.merged else Outcome(False, outcome.message)

    async def auto_merge(self, on: bool) -> Outcome:
        await self.services.store.pull_requests.set_auto_merge(self.project.id, self.number, on, set_by=self.actor)
        await self.ctx.audit("auto_merge.set", actor=self.actor, project_id=self.project.id, pr=self.number,
                             auto_merge=on)
        if not on:
            return Outcome(True)
        # Already validated? Then "on" means now, as it would right after the validation.
        pull = await self.pull()
        latest = await self.services.store.validations.latest_for_head(self.project.id, pull.head_sha,
                                                                       pr_number=self.number)
        if pull.state != "open" or latest is None or latest.conclusion != "success":
            return Outcome(True)
        outcome = await self.services.merges.merge(self.project, self.number, trigger="auto-merge",
                                                   requested_by=self.actor, expected_head=latest.head_sha,
                                                   delivery_id=self.ctx.event.delivery_id)
        if outcome.merged:
            return Outcome(True)
        return Outcome(True, f"Auto-merge is on, but {outcome.message[:1].lower()}{outcome.message[1:]}")

    async def queue(self) -> Outcome:
        queues = self.services.merge_queues
        if queues is None:
            return Outcome(False, "Not queued: the merge queue does not run in this app.")
        refusal = await queues.enqueue(self.project, self.number, by=self.actor, pull=await self.pull())
        return Outcome(True) if refusal is None else Outcome(False, f"Not queued: {refusal}.")

    async def dequeue(self, reason: str) -> Outcome:
        queues = self.services.merge_queues
        if queues is None or not await queues.dequeue(self.project, self.number, reason=reason):
            return Outcome(False, "Nothing to dequeue: this PR is not in a merge queue.")
        return Outcome(True)

    async def ok_to_test(self) -> Outcome:
        pull = await self.pull()
        if pull.state != "open":
            return Outcome(False, "Nothing to approve: the PR is closed.")
        head = pull.head_sha
        store = self.services.store.validations
        await store.approve_head(self.project.id, self.number, head, approved_by=self.actor)
        await self.ctx.audit("fork_gate.approved", actor=self.actor, project_id=self.project.id, pr=self.number,
                             head_sha=head)
        latest = await store.latest_for_head(self.project.id, head, pr_number=self.number)
        waiting = latest is not None and latest.status == VALIDATION_WAITING
        never_started = latest is None and pull.fork and not pull.draft
        if waiting or never_started:
            await self.services.validations.start(self.project, pull, trigger="command.ok-to-test", restart=True,
                                                  actor=self.actor)
        return Outcome(True)

    # ---- buttons -------------------------------------------------------------------------------

    async def button(self, identifier: str, check_run: dict[str, Any]) -> Outcome | None:
        """A requested action of the app's check run; None when the user may not use it."""
        label = ACTIONS[identifier][0]
        if not await self.authorized(f"use the {label} button", button=identifier):
            return None
        await self.ctx.audit(f"button.{identifier}", actor=self.actor, project_id=self.project.id, pr=self.number,
                             head_sha=check_run.get("head_sha"), check_run=check_run.get("id"))
        if identifier == "merge":
            outcome = await self.merge(trigger="button.merge", expected_head=check_run.get("head_sha"))
        elif identifier == "fix":
            outcome = Outcome(*await self.services.agent_runs.fix_button(self.project, self.number, actor=self.actor,
                                                                         queue_report=ejection_report(check_run)))
        else:
            raise AssertionError(f"button {identifier} is handled in handlers/checks.py")
        if outcome.message:
            await self.reply(f"@{self.actor} {outcome.message}")
        return outcome


@router.register("issue_comment", action="created")
async def issue_comment_created(event: sansio.Event, ctx: EventContext) -> None:
    data = event.data
    issue = data.get("issue") or {}
    if ctx.installation_id is None or not issue.get("pull_request"):
        return  # a repository webhook, or a comment on a plain issue
    if from_a_bot(data, ctx.services.settings.app_id):
        return
    comment = data.get("comment") or {}
    commands = parse_commands(comment.get("body") or "")
    if not commands:
        return
    project = await ctx.project()
    if project is None:
        return
    comment_id = required(event, "comment.id", int)
    body, leases = comment.get("body") or "", ctx.services.store.leases
    holder = claim_holder(job_id_var.get(), event.delivery_id)
    async with held(leases, command_claim(comment_id, body), holder, ttl=COMMAND_CLAIM_TTL) as mine:
        # read under the claim: whoever handled the comment wrote it before letting the claim go
        if not mine or await leases.holder(command_done(comment_id, body)) is not None:
            log.info("the commands of comment %s on %s were handled already, or are being handled (delivery %s: "
                     "a replay?): not again", comment_id, project.name, event.delivery_id)
            return
        actions = PullRequestActions(ctx, project, required(event, "issue.number", int),
                                     required(event, "comment.user.login", str))
        await actions.run_comment(comment_id, commands)
        await leases.acquire(command_done(comment_id, body), holder, ttl=COMMAND_DONE_TTL)
