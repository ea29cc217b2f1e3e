"""The app's long-lived parts as one plain record, built by the composition root (bot/app.py) and
seen only by the edges: the webhook handlers, the dashboard and the CLI."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from cachetools import LRUCache, TTLCache

from bot.config import Settings
from bot.event_bridge import PostgresEventBridge
from bot.events import EventBus, JobWakeup
from bot.github.github_app import GitHubApp
from bot.redact import PROCESS_REDACTOR
from bot.store import Store
from pipeline.agents.service import AgentRunService
from pipeline.deliveries.replay import DeliveryReplay
from pipeline.merge.service import MergeService
from pipeline.merge_queue.service import MergeQueueService
from pipeline.deliveries.service import DeliveryLogSweep
from pipeline.resync.service import Resync
from pipeline.sandbox.sandbox import Sandbox
from pipeline.ui_check.launch_check import BrowserHealth
from pipeline.ui_check.retention import ScreenshotPruner
from pipeline.validation.service import ValidationService
from pipeline.workspace.volumes import RunVolumes
from worker.runner import Worker

REPO_FILE_SECONDS = 30.0  # how long the settings page trusts the repository's file it read


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
    replays: DeliveryReplay | None = None  # replaying stored deliveries (None: a record built by hand)
    resync: Resync | None = None  # the resync of open pull requests; runs where a worker does
    # The delivery-log sweep (recovery; in polling mode, how events arrive): started and stopped by the
    # web app's lifecycle (bot/app.py). None: a record built by hand.
    delivery_log: DeliveryLogSweep | None = None
    # How a feature that queued a job wakes the workers, this process's and (through the bridge) the others'.
    wakeup: JobWakeup | None = None  # None: a record built by hand
    event_bridge: PostgresEventBridge | None = None  # PostgreSQL: the bus across processes (bot/event_bridge.py)
    merge_queues: MergeQueueService | None = None  # the app's own merge queue (None: a record built by hand)
    # (installation id, repository id) pairs known to be recorded; rows are never deleted, so a hit is safe.
    seen_repositories: LRUCache[tuple[int, int | None], bool] = field(default_factory=lambda: LRUCache(10_000))
    # By project id: its `.github/codegenapp.yml` as the settings page last read it (dashboard/project_settings.py),
    # kept REPO_FILE_SECONDS so that views and saves do not each wait on GitHub.
    repo_files: TTLCache[str, Any] = field(default_factory=lambda: TTLCache(1024, REPO_FILE_SECONDS))

    async def activate(self, settings: Settings) -> None:
        """Switch the running app to new Settings: the App was just registered from the dashboard."""
        for value in settings.secret_values:
            PROCESS_REDACTOR.add(value)
        self.settings = settings
        await self.github.configure(settings)

    async def close(self) -> None:
        if self.screenshot_pruner is not None:
            await self.screenshot_pruner.stop()
        if self.resync is not None:
            await self.resync.stop()
        await self.validations.close()
        if self.merge_queues is not None:
            await self.merge_queues.close()
        if self.worker is not None:
            await self.worker.stop(grace=self.settings.shutdown_grace_seconds)
        if self.volumes is not None:
            await self.volumes.close()  # each run removes its own; nothing stays mounted whatever happened
        await self.agent_runs.close()
        if self.event_bridge is not None:
            await self.event_bridge.close()  # after the features: what they published last still goes out
        await self.github.close()
        await self.http.close()
        await self.store.close()


SERVICES = web.AppKey("services", Services)
SETTINGS = web.AppKey("settings", Settings)
