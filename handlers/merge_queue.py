"""What takes a PR out of the app's merge queue, and what moves its base: a push to a queued PR, its close,
a change of its base branch, and pushes to a base branch (the queue reads the new tip itself)."""

from __future__ import annotations

from gidgethub import routing, sansio

from handlers.context import EventContext
from handlers.payloads import pull_request_of, required
from pipeline.merge_queue.model import BaseChanged, HeadPushed, PullClosed

router = routing.Router()


@router.register("pull_request", action="synchronize")
@router.register("pull_request", action="closed")
@router.register("pull_request", action="edited")
async def pull_request_changed(event: sansio.Event, ctx: EventContext) -> None:
    queues = ctx.services.merge_queues
    if ctx.installation_id is None or queues is None:
        return
    project = await ctx.project(recent=True)
    if project is None:
        return
    pull = pull_request_of(event)
    action = event.data.get("action")
    if action == "synchronize":
        await queues.leave(project, pull.base_ref, HeadPushed(pull.number, pull.head_sha))
    elif action == "closed":
        await queues.leave(project, pull.base_ref, PullClosed(pull.number, merged=pull.merged))
    elif "base" in (event.data.get("changes") or {}):
        old_base = (((event.data["changes"]["base"] or {}).get("ref") or {}).get("from"))
        if isinstance(old_base, str):
            await queues.leave(project, old_base, BaseChanged(pull.number, pull.base_ref))


@router.register("push")
async def branch_pushed(event: sansio.Event, ctx: EventContext) -> None:
    queues = ctx.services.merge_queues
    ref = required(event, "ref", str)
    if ctx.installation_id is None or queues is None or not ref.startswith("refs/heads/"):
        return
    project = await ctx.project(recent=True)
    if project is None:
        return
    base_ref = ref.removeprefix("refs/heads/")
    stored = await ctx.services.store.merge_queues.load(project.id, base_ref)
    if stored is not None:
        await queues.kick(project.id, base_ref, f"push-{required(event, 'after', str)}")
