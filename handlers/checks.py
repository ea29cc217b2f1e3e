"""The app's check run in GitHub's Checks UI: "Re-run" (of the run or the whole suite) and the run's
buttons (requested actions: Re-run, Merge, Fix with agent)."""

from __future__ import annotations

from typing import Any

from gidgethub import routing, sansio

from bot.models import Project
from handlers.commands import PullRequestActions
from handlers.context import EventContext
from handlers.payloads import required
from pipeline.merge_queue.report import ACTION_DEQUEUE, pr_of_external_id
from pipeline.validation.buttons import ACTION_RERUN, ACTIONS
from pipeline.validation.service import NotRevalidated

router = routing.Router()


def _ours(ctx: EventContext, app: dict[str, Any] | None) -> bool:
    return bool(app) and str(app.get("id")) == str(ctx.services.settings.app_id)


async def _pr_numbers(ctx: EventContext, project: Project, head_sha: str,
                      pull_requests: list[dict[str, Any]], external_id: str | None = None) -> list[int]:
    numbers = [pr["number"] for pr in pull_requests if isinstance(pr, dict) and "number" in pr]
    if numbers:
        return numbers
    # GitHub leaves the list empty for forks: find the PR from our own record
    store = ctx.services.store.validations
    known = await store.get(external_id) if external_id else None
    if known is None or known.project_id != project.id or known.head_sha != head_sha:
        known = await store.latest_for_head(project.id, head_sha)
    return [known.pr_number] if known is not None else []


async def _rerun(ctx: EventContext, head_sha: str, pull_requests: list[dict[str, Any]], trigger: str,
                 external_id: str | None = None, actor: str | None = None) -> int:
    """Validate `head_sha` again on each open PR it is still the head of, asked by `actor` (a login);
    returns how many."""
    project = await ctx.project()
    if ctx.installation_id is None or project is None:
        return 0
    started = 0
    for number in await _pr_numbers(ctx, project, head_sha, pull_requests, external_id):
        try:
            if await ctx.services.validations.revalidate(project, number, trigger=trigger, only_head=head_sha,
                                                         actor=actor):
                started += 1
        except NotRevalidated:
            continue  # closed: nothing to validate (a moved-on PR's newer head has its own run)
    return started


def _person(event: sansio.Event) -> str | None:
    """The login of the person who sent the event (None for a bot)."""
    sender = event.data.get("sender") or {}
    return sender.get("login") if sender.get("type") != "Bot" and isinstance(sender.get("login"), str) else None


@router.register("check_run", action="rerequested")
async def check_run_rerequested(event: sansio.Event, ctx: EventContext) -> None:
    check_run = required(event, "check_run", dict)
    if _ours(ctx, check_run.get("app")):
        await _rerun(ctx, required(event, "check_run.head_sha", str), check_run.get("pull_requests") or [],
                     "check_run.rerequested", check_run.get("external_id"), actor=_person(event))


@router.register("check_suite", action="rerequested")
async def check_suite_rerequested(event: sansio.Event, ctx: EventContext) -> None:
    suite = required(event, "check_suite", dict)
    if _ours(ctx, suite.get("app")):
        await _rerun(ctx, required(event, "check_suite.head_sha", str), suite.get("pull_requests") or [],
                     "check_suite.rerequested", actor=_person(event))


@router.register("check_run", action="requested_action")
async def check_run_requested_action(event: sansio.Event, ctx: EventContext) -> None:
    """A button of our check run: the clicking user is authorized like a command's author (GitHub
    shows the buttons to users with write access only, but the app does not rely on that)."""
    check_run = required(event, "check_run", dict)
    identifier = (event.data.get("requested_action") or {}).get("identifier")
    sender = event.data.get("sender") or {}
    if (ctx.installation_id is None or not _ours(ctx, check_run.get("app"))
            or (identifier not in ACTIONS and identifier != ACTION_DEQUEUE)
            or sender.get("type") == "Bot" or not sender.get("login")):
        return
    project = await ctx.project()
    if project is None:
        return
    head_sha = required(event, "check_run.head_sha", str)
    pull_requests = check_run.get("pull_requests") or []
    # the "Merge queue" check run names its PR in its external id (GitHub names none on a fork's run)
    queued = pr_of_external_id(check_run.get("external_id"))
    numbers = [queued] if queued is not None else \
        await _pr_numbers(ctx, project, head_sha, pull_requests, check_run.get("external_id"))
    if not numbers:
        return  # no PR to act on (the check run is not one of a PR we know)
    actions = PullRequestActions(ctx, project, numbers[0], sender["login"])
    if identifier == ACTION_DEQUEUE:  # the "Merge queue" check run's button
        if await actions.authorized("use the Dequeue button", button=identifier):
            outcome = await actions.dequeue(f"dequeued by @{sender['login']}")
            if outcome.ok:
                await ctx.audit("merge_queue.dequeued", actor=sender["login"], project_id=project.id, pr=numbers[0],
                                head_sha=head_sha, check_run=check_run.get("id"), source="button")
            if outcome.message:
                await actions.reply(f"@{sender['login']} {outcome.message}")
        return
    if identifier != ACTION_RERUN:
        await actions.button(identifier, check_run)
        return
    if not await actions.authorized(f"use the {ACTIONS[identifier][0]} button", button=identifier):
        return
    await ctx.audit(f"button.{identifier}", actor=sender["login"], project_id=project.id, pr=numbers[0],
                    head_sha=head_sha, check_run=check_run.get("id"))
    if not await _rerun(ctx, head_sha, pull_requests, "button.rerun", check_run.get("external_id"),
                        actor=sender["login"]):
        await actions.reply(f"@{sender['login']} Not re-running: {head_sha[:7]} is no longer the head of an "
                            "open PR; the newer head is validated on its own.")
