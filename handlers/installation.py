"""Keep installations and their repositories (projects) in sync with GitHub."""

from __future__ import annotations

from gidgethub import routing, sansio

from bot.models import utcnow
from handlers.context import EventContext
from handlers.payloads import installation_of, parse_time, repo_refs, required, sender_login

router = routing.Router()


@router.register("installation", action="created")
@router.register("installation", action="new_permissions_accepted")
@router.register("installation", action="unsuspend")
async def installation_active(event: sansio.Event, ctx: EventContext) -> None:
    ref = installation_of(event)
    store = ctx.services.store.projects
    await store.upsert_installation(ref)
    if event.data["action"] == "unsuspend":
        await store.set_installation_suspended(ref.id, None)
    repos = repo_refs(event, "repositories")
    await store.upsert_projects(ref.id, repos)
    await ctx.audit(f"installation.{event.data['action']}", actor=sender_login(event.data),
                    account=ref.account_login, repositories=[r.full_name for r in repos])


@router.register("installation", action="deleted")
async def installation_deleted(event: sansio.Event, ctx: EventContext) -> None:
    installation_id = required(event, "installation.id", int)
    archived = await ctx.services.store.projects.mark_installation_deleted(installation_id)
    ctx.services.github.forget_installation(installation_id)
    await ctx.audit("installation.deleted", actor=sender_login(event.data), archived_projects=archived)


@router.register("installation", action="suspend")
async def installation_suspended(event: sansio.Event, ctx: EventContext) -> None:
    ref = installation_of(event)
    await ctx.services.store.projects.upsert_installation(ref)
    suspended_at = parse_time(event.data["installation"].get("suspended_at"))
    await ctx.services.store.projects.set_installation_suspended(ref.id, suspended_at or utcnow())
    ctx.services.github.forget_installation(ref.id)
    await ctx.audit("installation.suspend", actor=sender_login(event.data))


@router.register("installation_repositories", action="added")
async def repositories_added(event: sansio.Event, ctx: EventContext) -> None:
    ref = installation_of(event)
    store = ctx.services.store.projects
    await store.upsert_installation(ref, only_if_missing=True)
    repos = repo_refs(event, "repositories_added")
    await store.upsert_projects(ref.id, repos)
    await ctx.audit("installation_repositories.added", actor=sender_login(event.data),
                    repositories=[r.full_name for r in repos])


@router.register("installation_repositories", action="removed")
async def repositories_removed(event: sansio.Event, ctx: EventContext) -> None:
    removed = event.data.get("repositories_removed") or []
    ids = [required(event, f"repositories_removed.{i}.id", int) for i in range(len(removed))]
    archived = await ctx.services.store.projects.archive_projects(ids)
    await ctx.audit("installation_repositories.removed", actor=sender_login(event.data),
                    archived_projects=archived)
