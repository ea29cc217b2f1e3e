"""Per-client rate limits of the dashboard (bot/guard/): the login with its OAuth and registration
callbacks (LOGIN_REQUESTS_PER_MINUTE) and the JSON API under /api/v1, its WebSocket included
(API_REQUESTS_PER_MINUTE). Past a limit the answer is 429 with `Retry-After`; the webhook endpoint
has its own (bot/webhooks.py)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from bot.config import WEBHOOK_PATH
from bot.guard.ratelimit import RateLimiter
from bot.guard.request_guard import GUARD, RequestGuard

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

LOGIN_PATHS = frozenset({"/auth/login", "/auth/callback", "/setup/callback"})
API_PREFIX = "/api/v1/"


def setup(app: web.Application) -> None:
    app.middlewares.insert(0, rate_limits)  # before sessions: a refused request costs no cookie or lookup


def _limiter(request: web.Request, guard: RequestGuard) -> RateLimiter | None:
    if request.path in LOGIN_PATHS:
        return guard.login
    if request.path.startswith(API_PREFIX) and request.path != WEBHOOK_PATH:
        return guard.api
    return None


@web.middleware
async def rate_limits(request: web.Request, handler: Handler) -> web.StreamResponse:
    guard = request.app[GUARD]
    limiter = _limiter(request, guard)
    if limiter is None:
        return await handler(request)
    client, verdict = guard.take(limiter, request)
    if verdict.allowed:
        return await handler(request)
    if verdict.first_refusal:
        log.warning("%s: too many requests from %s, answering 429 (logged once)", request.path, client)
    message = f"too many requests from this address: try again in {verdict.retry_seconds} s"
    headers = {"Retry-After": str(verdict.retry_seconds)}
    if limiter is guard.api:
        return web.json_response({"error": message}, status=429, headers=headers)
    return web.Response(status=429, text=message.capitalize(), headers=headers)
