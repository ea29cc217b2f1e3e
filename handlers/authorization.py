"""A user revoked the App's authorization: forget every token we hold for them and end their dashboard
sessions (the session epoch, dashboard/auth.py)."""

from __future__ import annotations

from gidgethub import routing, sansio

from handlers.context import EventContext
from handlers.payloads import required

router = routing.Router()


@router.register("github_app_authorization", action="revoked")
async def authorization_revoked(event: sansio.Event, ctx: EventContext) -> None:
    forgot = await ctx.services.store.projects.forget_user_tokens(required(event, "sender.id", int), end_sessions=True)
    sender = event.data["sender"]
    await ctx.audit("github_app_authorization.revoked", actor=sender.get("login"), tokens_forgotten=forgot)
