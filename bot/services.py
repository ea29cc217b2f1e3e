"""The app's long-lived parts, built once from Settings and shared by the web app, the worker and the CLI."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web
from cachetools import LRUCache, TTLCache

from bot import migrate
from bot.config import Settings
from bot.crypto import Crypto
from bot.db import Database
from bot.events import EventBus
from bot.redact import PROCESS_REDACTOR

if TYPE_CHECKING:
    from bot.github.client import GitHubClients
    from bot.models import Project
    from bot.store import Store
    from pipeline.agents.service import AgentRunService
    from pipeline.merge.service import MergeService
    from pipeline.ui_check.retention import ScreenshotPruner
    from pipeline.sandbox.sandbox import Sandbox
    from pipeline.validation.service import ValidationService
    from worker.runner import Worker

log = logging.getLogger(__name__)

JOB_WEBHOOK = "webhook"
PERMISSION_CACHE_SECONDS = 60.0


class SchemaOutOfDate(Exception):
    pass


@dataclass
class Services:
    settings: Settings
    store: "Store"
    http: aiohttp.ClientSession
    bus: EventBus = field(default_factory=EventBus)
    github: "GitHubClients | None" = None
    worker: "Worker | None" = None
    sandbox: "Sandbox | None" = None
    validations: "ValidationService | None" = None
    merges: "MergeService | None" = None
    agent_runs: "AgentRunService | None" = None
    screenshot_pruner: "ScreenshotPruner | None" = None  # with a worker: deletes expired UI-check screenshots
    # (installation id, repository id) pairs known to be recorded; rows are never deleted, so a hit is safe.
    seen_repositories: LRUCache[tuple[int, int | None], bool] = field(default_factory=lambda: LRUCache(10_000))
    # (repository full name, user login), lower case -> role from GitHub, briefly (handlers/commands.py).
    permission_cache: TTLCache[tuple[str, str], str] = field(
        default_factory=lambda: TTLCache(10_000, PERMISSION_CACHE_SECONDS))

    @property
    def agent_backend_configured(self) -> bool:
        """Whether coding-agent runs can be started app-wide ("Fix with agent", `/agent`): Codegen is
        configured. A project may also use the local backend: `agent_backend_configured_for(project)`."""
        return (self.agent_runs is not None and self.github is not None
                and bool(self.settings.codegen_api_key and self.settings.codegen_org_id))

    def agent_backend_configured_for(self, project: "Project") -> bool:
        """Whether an agent run can start for this project (its backend and what that needs are set)."""
        return self.agent_runs is not None and self.agent_runs.configured(project)

    async def close(self) -> None:
        if self.screenshot_pruner is not None:
            await self.screenshot_pruner.stop()
        if self.worker is not None:
            await self.worker.stop()
        if self.agent_runs is not None:
            await self.agent_runs.close()
        if self.github is not None:
            await self.github.close()
        await self.http.close()
        await self.store.close()


SERVICES = web.AppKey("services", Services)
SETTINGS = web.AppKey("settings", Settings)


async def prepare_database(settings: Settings, *, migrate_sqlite: bool = True) -> Database:
    """Open the database; SQLite is migrated in place, PostgreSQL must be migrated with `codegenapp migrate`."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.database_url)
    if db.is_sqlite and migrate_sqlite:
        await migrate.upgrade(db)
    else:
        current, head = await migrate.current_revision(db), migrate.head_revision()
        if current != head:
            await db.dispose()
            raise SchemaOutOfDate(f"database schema is at {current or 'nothing'}, the app needs {head}: "
                                  "run `codegenapp migrate` first")
    return db


def github_clients(settings: Settings, http: aiohttp.ClientSession) -> "GitHubClients | None":
    if not settings.app_configured:
        return None
    from bot.github.client import GitHubClientConfig, GitHubClients
    assert settings.app_id is not None and settings.private_key is not None
    return GitHubClients(http, GitHubClientConfig(
        app_id=settings.app_id, private_key=settings.private_key, api_url=settings.github_api_url,
        user_agent=f"codegenapp/{settings.app_id}", writes_per_minute=settings.github_writes_per_minute,
        writes_per_hour=settings.github_writes_per_hour))


async def start_services(settings: Settings, *, with_worker: bool = True) -> Services:
    from bot import registration
    from bot.store import Store
    settings = registration.apply(settings)  # the App registered from the dashboard; the environment wins
    for value in settings.secret_values:
        PROCESS_REDACTOR.add(value)
    db = await prepare_database(settings)
    store = Store(db, Crypto(settings.encryption_key), github_url=settings.github_url)
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60, connect=10))
    services = Services(settings=settings, store=store, http=http)
    services.github = github_clients(settings, http)
    if services.github is not None:
        await build_pipeline(services)
    from pipeline.agents.service import build_agent_runs
    services.agent_runs = build_agent_runs(services)
    if with_worker:
        services.worker = build_worker(services)
        await services.worker.start()
        services.agent_runs.start_listening()
        from pipeline.ui_check.retention import ScreenshotPruner
        services.screenshot_pruner = ScreenshotPruner(store, settings.data_dir, settings.screenshot_retention_days)
        services.screenshot_pruner.start()  # at start, then hourly (pipeline/ui_check/retention.py)
    return services


async def activate_settings(services: Services, settings: Settings) -> None:
    """Switch a running app to new Settings (the App was just registered from the dashboard): the GitHub
    clients and the pipeline are rebuilt; the worker and the agent runs read `services` as they go."""
    for value in settings.secret_values:
        PROCESS_REDACTOR.add(value)
    old = services.github
    services.settings = settings
    services.github = github_clients(settings, services.http)
    if services.github is not None and services.validations is None:
        await build_pipeline(services)
    if old is not None:
        await old.close()


async def build_pipeline(services: Services) -> None:
    """The sandbox (its layers probed once, reported in /health), checkouts and setup snapshots."""
    from pipeline.workspace.checkout import Checkouts
    from pipeline.merge.service import MergeService
    from pipeline.validation.stages import PipelineRunner
    from pipeline.sandbox.sandbox import Sandbox
    from pipeline.workspace.snapshots import SnapshotStore
    from pipeline.validation.service import ValidationService

    settings = services.settings
    services.sandbox = await Sandbox.probe()
    if not services.sandbox.capabilities.sandboxed:
        log.warning("no working sandbox (%s): PR code will not be run; validations fail saying so",
                    services.sandbox.capabilities.summary())
    runner = PipelineRunner(services.sandbox, SnapshotStore(settings.data_dir / "snapshots"))
    services.validations = ValidationService(services, runner,
                                             Checkouts(settings.data_dir / "git", github_url=settings.github_url))
    services.merges = MergeService(services)


def build_worker(services: Services) -> "Worker":
    from handlers import handle_delivery
    from pipeline.agents.service import agent_job_handlers
    from pipeline.validation.service import JOB_VALIDATE
    from worker.runner import Lane, Worker

    async def run_webhook(job):  # type: ignore[no-untyped-def]
        await handle_delivery(services, job)

    async def run_validation(job):  # type: ignore[no-untyped-def]
        assert services.validations is not None
        await services.validations.run_job(job)

    handlers = {JOB_WEBHOOK: run_webhook, JOB_VALIDATE: run_validation, **agent_job_handlers(services)}
    settings = services.settings
    # Webhook jobs are short and end in what the user sees first (the check run): they have slots of
    # their own, and the long jobs wait while a burst of them is handled (worker/policy.py).
    lanes = [Lane("webhooks", settings.webhook_concurrency, frozenset({JOB_WEBHOOK}), urgent=True),
             Lane("background", settings.worker_concurrency)]
    return Worker(services.store, handlers, bus=services.bus, lanes=lanes,
                  lease_seconds=services.settings.job_lease_seconds)
