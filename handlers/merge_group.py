"""GitHub's merge queue: the app is one of its check providers. When a ruleset requires the app's check,
the queue waits for it on each group's temporary branch (`gh-readonly-queue/<base>/pr-<n>-<sha>`):
`merge_group.checks_requested` validates the group's head, `merge_group.destroyed` ends what still runs."""

from __future__ import annotations

from gidgethub import routing, sansio

from bot.models import SUBJECT_MERGE_GROUP, VALIDATION_ACTIVE
from handlers.context import EventContext
from handlers.payloads import merge_group_of
from pipeline.validation.subjects import destroyed_reason

router = routing.Router()


@router.register("merge_group", action="checks_requested")
async def merge_group_checks_requested(event: sansio.Event, ctx: EventContext) -> None:
    """Validate the group's head with the config of its base, under the app's check name."""
    if ctx.installation_id is None:
        return  # a repository webhook, not a delivery to the App
    group = merge_group_of(event)
    project = await ctx.project(recent=True)  # only who it is: the start reads no settings
    if project is None:
        return
    await ctx.services.validations.start_subject(
        project, subject=SUBJECT_MERGE_GROUP, subject_ref=group.head_ref, pr_number=group.pr_number,
        head_sha=group.head_sha, base_sha=group.base_sha, trigger="merge_group.checks_requested",
        claimer=event.delivery_id)


@router.register("merge_group", action="destroyed")
async def merge_group_destroyed(event: sansio.Event, ctx: EventContext) -> None:
    """The group was merged, invalidated or dequeued: its validation, if still queued or running, ends
    `cancelled` saying which. One that finished stays as it is. A group destroyed before its
    `checks_requested` arrived (GitHub does not keep their order) is recorded ended, so that the late
    event validates nothing: for a merged group its head is the base's tip by then."""
    if ctx.installation_id is None:
        return
    group = merge_group_of(event)
    project = await ctx.project()
    if project is None:
        return
    reason = destroyed_reason(event.data.get("reason"))
    state, recorded = await ctx.services.store.validations.end_unbegun_subject(
        project_id=project.id, subject=SUBJECT_MERGE_GROUP, subject_ref=group.head_ref, pr_number=group.pr_number,
        head_sha=group.head_sha, base_sha=group.base_sha, trigger="merge_group.destroyed",
        title=f"Cancelled: {reason} before its checks were requested")
    if not recorded and state.status in VALIDATION_ACTIVE:
        await ctx.services.validations.cancel(project, state, reason=reason)
