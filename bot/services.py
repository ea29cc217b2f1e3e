"""The app's long-lived parts as one plain record, built by the composition root (bot/app.py) and
seen only by the edges: the webhook handlers, the dashboard and the CLI."""

from __future__ import annotations

from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from cachetools import LRUCache

from bot.config import Settings
from bot.events import EventBus
from bot.github.github_app import GitHubApp
from bot.redact import PROCESS_REDACTOR
from bot.store import Store
from pipeline.agents.service import AgentRunService
from pipeline.merge.service import MergeService
from pipeline.sandbox.sandbox import Sandbox
from pipeline.ui_check.launch_check import BrowserHealth
from pipeline.ui_check.retention import ScreenshotPruner
from pipeline.validation.service import ValidationService
from pipeline.workspace.volumes import RunVolumes
from worker.runner import Worker


@dataclass
class Services:
    settings: Settings  # replaced whole by `activate` when the App is registered from the dashboard
    store: Store
    http: aiohttp.ClientSession
    bus: EventBus
    github: GitHubApp
    sandbox: Sandbox
    validations: ValidationService
    merges: MergeService
    agent_runs: AgentRunService
    worker: Worker | None  # None: `serve --no-worker` (a worker process elsewhere runs the jobs)
    screenshot_pruner: ScreenshotPruner | None  # runs where a worker does
    browser: BrowserHealth | None = None  # the UI check's browser for /health (None: a record built by hand)
    volumes: RunVolumes | None = None  # the runs' workspace disks, for /health and closing (None: built by hand)
    # (installation id, repository id) pairs known to be recorded; rows are never deleted, so a hit is safe.
    seen_repositories: LRUCache[tuple[int, int | None], bool] = field(default_factory=lambda: LRUCache(10_000))

    async def activate(self, settings: Settings) -> None:
        """Switch the running app to new Settings: the App was just registered from the dashboard."""
        for value in settings.secret_values:
            PROCESS_REDACTOR.add(value)
        self.settings = settings
        await self.github.configure(settings)

    async def close(self) -> None:
        if self.screenshot_pruner is not None:
            await self.screenshot_pruner.stop()
        await self.validations.close()
        if self.worker is not None:
            await self.worker.stop()
        if self.volumes is not None:
            await self.volumes.close()  # each run removes its own; nothing stays mounted whatever happened
        await self.agent_runs.close()
        await self.github.close()
        await self.http.close()
        await self.store.close()


SERVICES = web.AppKey("services", Services)
SETTINGS = web.AppKey("settings", Settings)
