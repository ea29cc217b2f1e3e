"""The composition root: the one place that builds the app's parts and wires them together.

Every class takes what it uses in its constructor (the store, the GitHub layer, the event bus, the
worker's wake-up, settings values); nothing is filled in later. The edges (handlers, the dashboard,
the CLI) get the finished `Services` record; the aiohttp application is built here too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from gidgethub import BadRequest

from bot import migrate, registration, webhooks
from bot.config import WEBHOOK_PATH, Settings
from bot.crypto import Crypto
from bot.db import Database, check_sqlite_file, sqlite_file
from bot.event_bridge import PostgresEventBridge, asyncpg_dsn
from bot.events import EventBus, JobWakeup
from bot.github.github_app import AppIdentity, GitHubApp
from bot.guard.request_guard import GUARD, build_guard
from bot.models import DELIVERY_POLLED, DELIVERY_RECOVERED, JOB_AGENT_RUN, JOB_MERGE_QUEUE, JOB_VALIDATE, JOB_WEBHOOK
from bot.redact import PROCESS_REDACTOR
from bot.services import SERVICES, SETTINGS, Services
from bot.startup_report import StartupFacts, startup_report
from bot.store import ClaimedJob, Store
from bot.store.write_lanes import SharedWriteOwnership
from bot.web import health, metrics_page
from dashboard import views as dashboard_views
from dashboard.api import add_routes as add_api_routes
from handlers import handle_delivery
from handlers.payloads import shape_problem
from pipeline.agents.availability import AgentAvailability
from pipeline.agents.service import AgentRunService
from pipeline.deliveries.replay import DeliveryReplay
from pipeline.merge.service import MergeService
from pipeline.merge_queue.candidates import CandidateBuilder
from pipeline.merge_queue.restore import CandidateRestorer
from pipeline.merge_queue.service import MergeQueueService
from pipeline.deliveries.service import DeliveryLogSweep
from pipeline.resync.service import Resync
from pipeline.sandbox.sandbox import Sandbox
from pipeline.ui_check.launch_check import BrowserHealth
from pipeline.ui_check.retention import ScreenshotPruner
from pipeline.validation.service import ValidationService
from pipeline.validation.stages import PipelineRunner
from pipeline.workspace.checkout import Checkouts
from pipeline.workspace.snapshots import SnapshotStore
from pipeline.workspace.volumes import RunVolumes
from worker.runner import Lane, Worker

log = logging.getLogger(__name__)


class SchemaOutOfDate(Exception):
    pass


def check_database(settings: Settings, *, init: bool = False) -> None:
    """Refuse (DatabaseUnusable) a damaged SQLite file, or an empty one where DATA_DIR holds the keys of an
    earlier start, unless `init` (the operator's --init): see bot/db.py."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    path = sqlite_file(settings.database_url)
    if path is not None:
        check_sqlite_file(path, keys_found_in=settings.data_dir if settings.generated_keys_found else None, init=init)


async def prepare_database(settings: Settings, *, init: bool = False, migrate_sqlite: bool = True) -> Database:
    """Open the database; SQLite is checked (`check_database`) and migrated in place, PostgreSQL must be
    migrated with `codegenapp migrate`."""
    await asyncio.to_thread(check_database, settings, init=init)
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


async def build_services(settings: Settings, *, with_worker: bool = True, init: bool = False) -> Services:
    settings = registration.apply(settings)  # the App registered from the dashboard; the environment wins
    for value in settings.secret_values:
        PROCESS_REDACTOR.add(value)
    db = await prepare_database(settings, init=init)
    store = Store(db, Crypto(settings.encryption_key), github_url=settings.github_url)
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60, connect=10))
    bus = EventBus()
    wakeup = JobWakeup()
    # PostgreSQL: the bus and the wake-ups reach the app's other processes (web processes, workers) by
    # LISTEN/NOTIFY; SQLite is one process, so nothing is relayed there.
    bridge = None if db.is_sqlite else PostgresEventBridge(asyncpg_dsn(settings.database_url), bus, wakeup)
    if bridge is not None:
        await bridge.start()  # before the worker: a job queued elsewhere from now on wakes it
    # PostgreSQL: one process at a time sends an installation's GitHub writes (a lease in the database), and
    # GitHub's rate-limit holds go to the other processes over the bus; SQLite: all in memory, no I/O added.
    github = GitHubApp(http, settings, ownership=None if db.is_sqlite else SharedWriteOwnership(
        store.write_lanes, lease_seconds=settings.github_write_lease_seconds), hold_bus=None if db.is_sqlite else bus)
    github.follow_holds()
    sandbox = await Sandbox.probe()  # its layers probed once (it logs them), reported in /health and at start
    checkouts = Checkouts(settings.data_dir / "git", github_url=settings.github_url)
    volumes = RunVolumes(settings.data_dir / "workspaces", limit_bytes=settings.run_disk_limit_bytes,
                         min_free_bytes=settings.min_free_disk_bytes)
    if with_worker:  # a web process runs no jobs: it leaves DATA_DIR/workspaces (maybe another user's) alone
        await volumes.start()  # removes what a stopped process left mounted; finds out whether mounting works
    agents_available = AgentAvailability(settings, github, sandbox_ok=sandbox.capabilities.sandboxed)
    merges = MergeService(store, github, bus)
    snapshots = SnapshotStore(settings.data_dir / "snapshots", home_caches=settings.snapshot_home_caches)
    validations = ValidationService(
        store, github, bus, wakeup, PipelineRunner(sandbox, snapshots),
        checkouts, merges, volumes=volumes, agent_configured=agents_available.configured,
        public_url=settings.public_url,
        data_dir=settings.data_dir, chromium_path=settings.chromium_path)
    candidates = CandidateBuilder(checkouts)
    merge_queues = MergeQueueService(store, github, bus, wakeup, validations, merges, candidates,
                                     agent_configured=agents_available.configured, public_url=settings.public_url)
    validations.enter_queue = merge_queues.enter_after_validation
    validations.restore_candidate = CandidateRestorer(store.merge_queues, candidates)
    agent_runs = AgentRunService(store, github, bus, wakeup, http, settings, sandbox=sandbox, checkouts=checkouts,
                                 validations=validations, availability=agents_available)
    worker = pruner = resync = None
    if with_worker:
        async def run_webhook(job: ClaimedJob) -> None:
            await handle_delivery(services, job)

        # Webhook jobs are short and end in what the user sees first (the check run): they have slots of
        # their own, and the long jobs wait while a burst of them is handled (worker/policy.py).
        worker = Worker(store, {JOB_WEBHOOK: run_webhook, JOB_VALIDATE: validations.run_job,
                                JOB_AGENT_RUN: agent_runs.run_job, JOB_MERGE_QUEUE: merge_queues.run_job},
                        bus=bus, wakeup=wakeup, lease_seconds=settings.job_lease_seconds,
                        poll_interval=settings.job_poll_interval,  # the fallback: wake-ups find new jobs
                        outage_budget_seconds=settings.github_outage_budget_hours * 3600.0,
                        on_dead={JOB_VALIDATE: validations.job_died},
                        lanes=[Lane("webhooks", settings.webhook_concurrency, frozenset({JOB_WEBHOOK}), urgent=True),
                               Lane("background", settings.worker_concurrency)])
        pruner = ScreenshotPruner(store, settings.data_dir, settings.screenshot_retention_days)
        resync = Resync(store, github, validations, bus, interval=settings.resync_interval,
                        max_starts=settings.resync_max_starts)
    browser = BrowserHealth(settings.chromium_path, sandbox.capabilities)
    browser.start()  # one real launch, in the background: /health says "checking" until it is known
    polling = settings.webhook_mode == "poll"
    # The App's delivery log, read through the ingress's own path (same checks, same dedupe): at start and
    # every SWEEP_INTERVAL it recovers what the webhook never brought; in polling mode, every POLL_INTERVAL,
    # it is how events arrive. Started by the web app's lifecycle (create_app).
    delivery_log = DeliveryLogSweep(
        store, github.hook_deliveries,
        ingest=lambda guid, event, payload, source: webhooks.ingest_logged(services, guid, event, payload, source),
        shape_problem=shape_problem, source=DELIVERY_POLLED if polling else DELIVERY_RECOVERED,
        interval=settings.poll_interval if polling else settings.sweep_interval, bus=bus,
        configured=lambda: github.configured, first_lookback=settings.sweep_first_lookback,
        max_queued=settings.webhook_concurrency)  # live deliveries queue behind at most this many recovered ones
    services = Services(settings=settings, store=store, http=http, bus=bus, github=github, sandbox=sandbox,
                        validations=validations, merges=merges, agent_runs=agent_runs, worker=worker,
                        screenshot_pruner=pruner, browser=browser, volumes=volumes if with_worker else None, resync=resync,
                        replays=DeliveryReplay(store, wakeup, max_attempts=settings.job_max_attempts),
                        delivery_log=delivery_log, wakeup=wakeup, event_bridge=bridge, merge_queues=merge_queues)
    # In every process, web or worker: the process that ends a validation nudges its PR's agent runs (a
    # dashboard's cancel on a web process too); events from other processes are theirs to act on.
    agent_runs.start_listening()
    if worker is not None and pruner is not None:
        await worker.start()
        pruner.start()  # at start, then hourly (pipeline/ui_check/retention.py)
        validations.start_recovery()  # what a killed process left of check runs, at start and every minute
        merge_queues.start_listening()  # a candidate's validation that ends advances its queue
        await merge_queues.resume_all()  # what a killed process left under way in the merge queues
        merge_queues.start_sweeping(settings.merge_queue_sweep_interval)  # a queue whose wake-up was lost
        if resync is not None:
            resync.start()  # open pull requests without a validation of their head: at start, then hourly
    return services


# How long GET /app (the App's name, asked while the services are built) may take before the block names
# the App by its id alone.
APP_NAME_TIMEOUT_SECONDS = 3.0
CREDENTIALS_REFUSED = (401, 404)  # GET /app as the App: a PRIVATE_KEY that is not the App's, or no such APP_ID


@dataclass(frozen=True)
class AppNaming:
    """What GET /app said at start: the App as GitHub shows it, or why GitHub refused its credentials;
    neither when it was not asked (setup mode) or did not answer in time."""
    identity: AppIdentity | None = None
    refused: str | None = None


async def read_app_naming(settings: Settings, *, timeout: float = APP_NAME_TIMEOUT_SECONDS) -> AppNaming:
    """GET /app as the App (registered from the dashboard or the environment's), at most `timeout` s, on a
    session of its own: the start asks it first, while it builds the services."""
    settings = registration.apply(settings)
    if not settings.app_configured:
        return AppNaming()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http:
        github = GitHubApp(http, settings)
        try:
            return AppNaming(identity=await asyncio.wait_for(github.identity(), timeout))
        except BadRequest as exc:
            if exc.status_code in CREDENTIALS_REFUSED:
                return AppNaming(refused=f"GET /app answered {exc.status_code} ({exc}): check APP_ID and the "
                                         "private key (PRIVATE_KEY or PRIVATE_KEY_PATH)")
            log.info("the GitHub App's name was not read at start (%s); the start goes on", exc)
        except Exception as exc:  # noqa: BLE001 - GitHub slow or failing: the block names the App without its name
            log.info("the GitHub App's name was not read at start (%s); the start goes on", type(exc).__name__)
        finally:
            await github.close()
    return AppNaming()


def startup_facts(services: Services, *, runs_jobs: bool, naming: AppNaming) -> StartupFacts:
    """What the start-up block reports, from what the start already measured (the facts of /health) and
    what GET /app said (`read_app_naming`; without the App's name, the slug the dashboard registered, if
    any); in setup mode, the one-time token of the registration link (DATA_DIR/setup-token, 0600) is made here."""
    settings = services.settings
    registered = registration.load(settings)
    registered_here = registered is not None and registered.app_id == settings.app_id
    identity = naming.identity
    return StartupFacts(
        settings=settings,
        app_name=identity.name if identity is not None else registered.slug if registered_here else None,
        app_slug=identity.slug if identity is not None else None,
        app_refused=naming.refused,
        registered_here=registered_here,
        setup_token=None if settings.app_configured else registration.ensure_setup_token(settings),
        sandbox=services.sandbox.capabilities.describe(),
        workspaces=services.volumes.describe() if services.volumes is not None else None,
        browser=services.browser.describe() if services.browser is not None else None,
        runs_jobs=runs_jobs)


def serving_at(settings: Settings, *, host: str | None, port: int | None) -> Settings:
    """The settings of `serve --host/--port`: a PUBLIC_URL left to its default (http://HOST:PORT) follows
    them, so that the link printed at start and the URLs registered with GitHub are where the app listens."""
    host, port = host or settings.host, port or settings.port
    default = f"http://{settings.host}:{settings.port}"
    public_url = f"http://{host}:{port}" if settings.public_url == default else settings.public_url
    return settings.with_overrides(host=host, port=port, public_url=public_url)


def create_app(settings: Settings, *, with_worker: bool = True,
               clock: Callable[[], float] = time.monotonic) -> web.Application:
    """`clock` times the per-client rate limits (tests move it by hand)."""
    app = web.Application(client_max_size=settings.max_webhook_bytes)
    app[SETTINGS] = settings

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        # The App's name is asked for while the services are built (the bound read now: tests raise it).
        naming = asyncio.create_task(read_app_naming(settings, timeout=APP_NAME_TIMEOUT_SECONDS), name="get-app")
        try:
            services = await build_services(settings, with_worker=with_worker)
        except BaseException:
            naming.cancel()
            await asyncio.gather(naming, return_exceptions=True)
            raise
        app[SERVICES] = services
        app[GUARD] = guard = build_guard(services.settings, services.github, clock=clock)
        if guard.hook_sources is not None:
            guard.hook_sources.start()  # GitHub's webhook addresses, read now and hourly
        # One block for the operator at INFO; what a person must act on (an unreachable PUBLIC_URL, no
        # sandbox..., and in setup mode the link only the token's holder may use) at WARNING, each row once.
        report = startup_report(startup_facts(services, runs_jobs=with_worker, naming=await naming))
        log.info("%s", "\n".join(report.info))
        if report.warnings:
            log.warning("%s", "\n".join(report.warnings))
        if services.delivery_log is not None:
            services.delivery_log.start()  # the delivery log: at start, then every SWEEP_INTERVAL/POLL_INTERVAL
        yield
        if services.worker is not None:
            log.info("stopping: running jobs have %g s to finish (SHUTDOWN_GRACE_SECONDS), the rest go back to the "
                     "queue", services.settings.shutdown_grace_seconds)
        if services.delivery_log is not None:
            await services.delivery_log.stop()
        if guard.hook_sources is not None:
            await guard.hook_sources.stop()
        await services.close()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_post(WEBHOOK_PATH, webhooks.receive)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics_page)
    dashboard_views.setup(app)  # every dashboard page, the validation pages and /api/v1/ws
    add_api_routes(app)
    return app
