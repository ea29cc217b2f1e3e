"""Keep installations and their repositories (projects) in sync with GitHub."""

from __future__ import annotations

from gidgethub import routing, sansio

from bot.models import utcnow
from handlers.context import EventContext
from handlers.payloads import installation_ref, parse_time, repo_ref, sender_login

router = routing.Router()


@router.register("installation", action="created")
@router.register("installation", action="new_permissions_accepted")
@router.register("installation", action="unsuspend")
async def installation_active(event: sansio.Event, ctx: EventContext) -> None:
    installation = event.data["installation"]
    ref = installation_ref(installation)
    store = ctx.services.store.projects
    await store.upsert_installation(ref)
    if event.data["action"] == "unsuspend":
        await store.set_installation_suspended(ref.id, None)
    repos = [repo_ref(r) for r in event.data.get("repositories") or []]
    await store.upsert_projects(ref.id, repos)
    await ctx.audit(f"installation.{event.data['action']}", actor=sender_login(event.data),
                    account=ref.account_login, repositories=[r.full_name for r in repos])


@router.register("installation", action="deleted")
async def installation_deleted(event: sansio.Event, ctx: EventContext) -> None:
    installation_id = event.data["installation"]["id"]
    archived = await ctx.services.store.projects.mark_installation_deleted(installation_id)
    ctx.services.github.forget_installation(installation_id)
    await ctx.audit("installation.deleted", actor=sender_login(event.data), archived_projects=archived)


@router.register("installation", action="suspend")
async def installation_suspended(event: sansio.Event, ctx: EventContext) -> None:
    installation = event.data["installation"]
    await ctx.services.store.projects.upsert_installation(installation_ref(installation))
    suspended_at = parse_time(installation.get("suspended_at"))
    await ctx.services.store.projects.set_installation_suspended(installation["id"], suspended_at or utcnow())
    ctx.services.github.forget_installation(installation["id"])
    await ctx.audit("installation.suspend", actor=sender_login(event.data))


@router.register("installation_repositories", action="added")
async def repositories_added(event: sansio.Event, ctx: EventContext) -> None:
    installation = event.data["installation"]
    store = ctx.services.store.projects
    await store.upsert_installation(installation_ref(installation), only_if_missing=True)
    repos = [repo_ref(r) for r in event.data.get("repositories_added") or []]
    await store.upsert_projects(installation["id"], repos)
    await ctx.audit("installation_repositories.added", actor=sender_login(event.data),
                    repositories=[r.full_name for r in repos])


@router.register("installation_repositories", action="removed")
async def repositories_removed(event: sansio.Event, ctx: EventContext) -> None:
    removed = event.data.get("repositories_removed") or []
    archived = await ctx.services.store.projects.archive_projects([r["id"] for r in removed])
    await ctx.audit("installation_repositories.removed", actor=sender_login(event.data),
                    archived_projects=archived)
