"""The guard of the HTTP edges, built once by the composition root from the settings: the client's
address (behind TRUSTED_PROXIES), the per-client limits of the login and OAuth callbacks, of `/api/v1`,
and of refused webhook requests, and GitHub's webhook addresses when WEBHOOK_GITHUB_ADDRESSES_ONLY is on.
The edges find it as `request.app[GUARD]`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from bot.config import Settings
from bot.github.github_app import GitHubApp
from bot.guard.client_address import Network, client_address, rate_key
from bot.guard.hook_sources import HookSources
from bot.guard.ratelimit import RateLimiter, Verdict


@dataclass
class RequestGuard:
    trusted_proxies: tuple[Network, ...]
    login: RateLimiter
    api: RateLimiter
    webhook_refusals: RateLimiter  # unsigned, badly signed or from outside GitHub's addresses; never a valid one
    hook_sources: HookSources | None  # None: webhooks are taken from any address

    def client(self, request: web.Request) -> str:
        return client_address(request.remote, request.headers.getall("X-Forwarded-For", []), self.trusted_proxies)

    def take(self, limiter: RateLimiter, request: web.Request) -> tuple[str, Verdict]:
        """The client's address, and whether `limiter` lets it make this request."""
        client = self.client(request)
        return client, limiter.take(rate_key(client))


def build_guard(settings: Settings, github: GitHubApp, *,
                clock: Callable[[], float] = time.monotonic) -> RequestGuard:
    async def hook_networks() -> tuple[Network, ...]:
        return (await github.meta()).hooks

    return RequestGuard(
        trusted_proxies=settings.trusted_proxies,
        login=RateLimiter(settings.login_requests_per_minute, clock=clock),
        api=RateLimiter(settings.api_requests_per_minute, clock=clock),
        webhook_refusals=RateLimiter(settings.webhook_refusals_per_minute, clock=clock),
        hook_sources=HookSources(hook_networks) if settings.webhook_github_addresses_only else None)


GUARD = web.AppKey("request_guard", RequestGuard)
