"""The addresses GitHub sends webhooks from (`hooks` of `GET /meta`), for the webhook ingress's optional
allowlist (WEBHOOK_GITHUB_ADDRESSES_ONLY). Fetched at start, then every REFRESH_SECONDS; a failed fetch
keeps the last list and is tried again after RETRY_SECONDS. Until a first list is known, nothing is
allowed (the ingress answers 503: GitHub shows the delivery as failed and it can be redelivered)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from bot.guard.client_address import Network, within

log = logging.getLogger(__name__)

REFRESH_SECONDS = 3600.0
RETRY_SECONDS = 60.0


class HookSources:
    def __init__(self, fetch: Callable[[], Awaitable[tuple[Network, ...]]], *,
                 refresh_seconds: float = REFRESH_SECONDS, retry_seconds: float = RETRY_SECONDS) -> None:
        self.fetch = fetch
        self.refresh_seconds = refresh_seconds
        self.retry_seconds = retry_seconds
        self.networks: tuple[Network, ...] | None = None
        self._task: asyncio.Task[None] | None = None

    def allows(self, address: str) -> bool | None:
        """Whether `address` is one of GitHub's webhook addresses; None while they are not known."""
        return None if self.networks is None else within(address, self.networks)

    async def refresh(self) -> None:
        networks = await self.fetch()
        if networks != self.networks:
            log.info("GitHub's webhook addresses: %s", ", ".join(map(str, networks)) or "none")
        self.networks = networks

    async def _keep_fresh(self) -> None:
        while True:
            try:
                await self.refresh()
                delay = self.refresh_seconds
            except Exception as exc:  # noqa: BLE001 - GitHub unreachable or odd: keep the last list
                log.warning("could not read GitHub's webhook addresses (GET /meta): %r; %s", exc,
                            "keeping the last list" if self.networks is not None else "refusing webhooks until then")
                delay = self.retry_seconds
            await asyncio.sleep(delay)

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._keep_fresh())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
