"""Agent runs and their PRs: a PR that is closed or merged ends the run working on it."""

from __future__ import annotations

from gidgethub import routing, sansio

from handlers.context import EventContext
from handlers.payloads import required

router = routing.Router()


@router.register("pull_request", action="closed")
async def pull_request_closed(event: sansio.Event, ctx: EventContext) -> None:
    """The run looks at the PR now (it would at its next poll anyway) and ends: merged or closed."""
    if ctx.installation_id is None:
        return
    project = await ctx.project()
    if project is not None:
        await ctx.services.agent_runs.nudge_pr(project.id, required(event, "number", int))
