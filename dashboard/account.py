"""The user's personal API tokens: created with an optional expiry, shown once (with a copy button),
listed with when they expire, revoked."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from bot.models import ApiToken, utcnow
from dashboard import auth
from dashboard.rendering import render, services_of

# the form's choice -> days the token lasts (None: until revoked)
EXPIRY_DAYS: dict[str, int | None] = {"7": 7, "30": 30, "90": 90, "never": None}
EXPIRY_WORDS = {"7": "7 days", "30": "30 days", "90": "90 days", "never": "No expiry"}
DEFAULT_EXPIRY = "30"


def token_expiry(choice: str, now: datetime) -> datetime | None:
    """When a token created now with the form's `choice` expires; KeyError for an unknown choice."""
    days = EXPIRY_DAYS[choice]
    return None if days is None else now + timedelta(days=days)


def expiry_text(expires_at: datetime | None, now: datetime) -> str:
    """"never", "2026-12-14 01:00 UTC" or "expired 2026-12-01 09:30 UTC"."""
    if expires_at is None:
        return "never"
    when = expires_at.strftime("%Y-%m-%d %H:%M UTC")
    return f"expired {when}" if auth.token_expired(expires_at, now) else when


def token_rows(tokens: list[ApiToken], now: datetime) -> list[dict[str, Any]]:
    return [{"token": t, "expires": expiry_text(t.expires_at, now),
             "expired": auth.token_expired(t.expires_at, now)} for t in tokens]


async def account_page(request: web.Request, *, new_token: str | None = None, new_expiry: str | None = None,
                       status: int = 200, problem: str | None = None) -> web.Response:
    user = await auth.require_user(request)
    tokens = await services_of(request).store.projects.api_tokens(user.id)
    return await render(request, "account.html", status=status, tokens=token_rows(tokens, utcnow()),
                        new_token=new_token, new_expiry=new_expiry, problem=problem, expiry_words=EXPIRY_WORDS,
                        default_expiry=DEFAULT_EXPIRY)


async def create_token(request: web.Request) -> web.Response:
    user = await auth.require_user(request)
    form = await request.post()
    name = str(form.get("name", "")).strip()[:100] or "API token"
    choice = str(form.get("expiry", "never"))
    if choice not in EXPIRY_DAYS:
        return await account_page(request, status=400,
                                  problem=f"Expiry must be one of: {', '.join(EXPIRY_WORDS.values())}")
    now = utcnow()
    expires_at = token_expiry(choice, now)
    token = auth.API_TOKEN_PREFIX + secrets.token_urlsafe(32)
    await services_of(request).store.projects.create_api_token(user.id, name, token, expires_at=expires_at)
    await services_of(request).store.audit.record("api_token.created", actor=user.login,
                                                  details={"name": name, "expiry": EXPIRY_WORDS[choice]})
    return await account_page(request, new_token=token, new_expiry=expiry_text(expires_at, now))


async def delete_token(request: web.Request) -> web.Response:
    user = await auth.require_user(request)
    await services_of(request).store.projects.delete_api_token(user.id, request.match_info["token_id"])
    raise web.HTTPSeeOther("/account")
