"""Pull request events start (and end) validations of their heads, and are recorded for the PR overview."""

from __future__ import annotations

import logging
from typing import Any

from gidgethub import routing, sansio

from bot.github.types import PullRequest
from bot.models import PR_CLOSED, PR_MERGED, PR_OPEN, utcnow
from bot.store.tracked_pulls import PullSnapshot
from handlers.context import EventContext
from handlers.payloads import parse_time, pull_request_of, required
from pipeline.validation.gate import VALIDATING_ACTIONS, head_moved_on, wants_validation

router = routing.Router()
log = logging.getLogger(__name__)

# The events that change what the PR overview shows of a PR (its head, title, draft, state).
TRACKED_ACTIONS = ("opened", "reopened", "synchronize", "edited", "ready_for_review", "converted_to_draft",
                   "closed")


def snapshot_of(pull: PullRequest, raw: dict[str, Any]) -> PullSnapshot:
    """The overview's record of the PR as the event's `pull_request` describes it."""
    state = PR_MERGED if pull.merged else PR_OPEN if pull.state == "open" else PR_CLOSED
    return PullSnapshot(number=pull.number, title=pull.title, author=pull.author, head_sha=pull.head_sha,
                        head_ref=pull.head_ref, base_ref=pull.base_ref, is_fork=pull.fork, draft=pull.draft,
                        state=state, opened_at=parse_time(raw.get("created_at")),
                        updated_at=parse_time(raw.get("updated_at")) or utcnow(),
                        closed_at=parse_time(raw.get("closed_at")))


async def _track_and_validate(event: sansio.Event, ctx: EventContext) -> None:
    """Record the PR for the overview, then validate its head if the action asks for it. An event older
    than the one recorded (recovered from the log or replayed after a newer push was handled) whose head
    is no longer the PR's validates nothing (`head_moved_on`): starting it would end the current head's run.
    An older event of the current head (handled after an `edited`, say) validates as usual."""
    if ctx.installation_id is None:
        return  # a repository webhook, not a delivery to the App
    pull_request = required(event, "pull_request", dict)
    pull = pull_request_of(event)
    project = await ctx.project(recent=True)  # only who it is: start reads no settings
    if project is None:
        return
    snapshot = snapshot_of(pull, pull_request)
    action = event.data.get("action")
    validating = action in VALIDATING_ACTIONS and wants_validation(action, pull_request)
    tracked = ctx.services.store.tracked_pulls
    began = False
    if validating and tracked.records_under_lock:
        # PostgreSQL: the PR is recorded by the statement that takes the begin's lock (a round trip less); an
        # event older than the one recorded begins nothing there, and is looked at below as on SQLite.
        began = current = await ctx.services.validations.start(
            project, pull, trigger=f"pull_request.{action}", claimer=event.delivery_id,
            record_pull=tracked.under_lock(project.id, snapshot)) is not None
    else:
        current = await tracked.record(project.id, snapshot)
    if current:
        ctx.services.bus.publish("pr.updated", project_id=project.id, pr_number=snapshot.number,
                                 state=snapshot.state, head_sha=snapshot.head_sha)
    if began or not validating:
        return
    if not current:  # a newer event was recorded (an edit, say): is this head still the PR's?
        recorded = await ctx.services.store.tracked_pulls.get(project.id, pull.number)
        if recorded is not None and head_moved_on(pull.head_sha, recorded.head_sha, recorded.state == PR_OPEN):
            log.info("%s #%d: not validating %s from an older %s event (the PR has moved on to %s, %s)",
                     project.name, pull.number, pull.head_sha[:7], action, recorded.head_sha[:7], recorded.state)
            return
    await ctx.services.validations.start(project, pull, trigger=f"pull_request.{action}",
                                         claimer=event.delivery_id)


for _action in sorted(set(TRACKED_ACTIONS) | set(VALIDATING_ACTIONS)):
    router.add(_track_and_validate, "pull_request", action=_action)


@router.register("pull_request", action="closed")
async def pull_request_closed(event: sansio.Event, ctx: EventContext) -> None:
    """A closed PR needs no validation: end what is still running for it."""
    if ctx.installation_id is None:
        return
    project = await ctx.project()
    if project is None:
        return
    await ctx.services.validations.pull_request_closed(project, required(event, "number", int))
