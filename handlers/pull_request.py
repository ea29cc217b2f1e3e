"""Pull request events start (and end) validations of their heads."""

from __future__ import annotations

from gidgethub import routing, sansio

from handlers.context import EventContext
from handlers.payloads import pull_request_of, required
from pipeline.validation.gate import VALIDATING_ACTIONS, wants_validation

router = routing.Router()


async def _validate(event: sansio.Event, ctx: EventContext) -> None:
    pull_request = required(event, "pull_request", dict)
    if ctx.installation_id is None or not wants_validation(event.data.get("action"), pull_request):
        return  # a repository webhook, not a delivery to the App
    pull = pull_request_of(event)
    project = await ctx.project(recent=True)  # only who it is: start reads no settings
    if project is None:
        return
    await ctx.services.validations.start(project, pull, trigger=f"pull_request.{event.data['action']}",
                                         claimer=event.delivery_id)


for _action in sorted(VALIDATING_ACTIONS):
    router.add(_validate, "pull_request", action=_action)


@router.register("pull_request", action="closed")
async def pull_request_closed(event: sansio.Event, ctx: EventContext) -> None:
    """A closed PR needs no validation: end what is still running for it."""
    if ctx.installation_id is None:
        return
    project = await ctx.project()
    if project is None:
        return
    await ctx.services.validations.pull_request_closed(project, required(event, "number", int))
