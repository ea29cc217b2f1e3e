"""The user's personal API tokens."""

from __future__ import annotations

import secrets

from aiohttp import web

from dashboard import auth
from dashboard.rendering import render, services_of


async def account_page(request: web.Request, *, new_token: str | None = None) -> web.Response:
    user = await auth.require_user(request)
    tokens = await services_of(request).store.projects.api_tokens(user.id)
    return await render(request, "account.html", tokens=tokens, new_token=new_token)


async def create_token(request: web.Request) -> web.Response:
    user = await auth.require_user(request)
    form = await request.post()
    name = str(form.get("name", "")).strip()[:100] or "API token"
    token = auth.API_TOKEN_PREFIX + secrets.token_urlsafe(32)
    await services_of(request).store.projects.create_api_token(user.id, name, token)
    await services_of(request).store.audit.record("api_token.created", actor=user.login, details={"name": name})
    return await account_page(request, new_token=token)


async def delete_token(request: web.Request) -> web.Response:
    user = await auth.require_user(request)
    await services_of(request).store.projects.delete_api_token(user.id, request.match_info["token_id"])
    raise web.HTTPSeeOther("/account")
