"""Several processes on one database (issue 17): which workers are alive and how the queue stands
(bot/fleet.py, pure; the reads of bot/store; /health, /metrics and `codegenapp status`), periodic work run
by one process at a time under a database lease (the check-run recovery, the screenshot prune per
DATA_DIR), and a rolling restart: SIGTERM to a real `codegenapp worker` finishes or hands back its job."""

from __future__ import annotations

import asyncio
import json
import re
import signal
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select, update

from bot import fleet
from bot.config import Settings
from bot.github.github_app import GitHubApp
from bot.models import JOB_AGENT_RUN, JOB_VALIDATE, JOB_WEBHOOK, Job, WorkerHeartbeat, utcnow
from bot.store import Store
from bot.store.leases import held
from bot.status_cli import text
from bot.web import fleet_report
from pipeline.ui_check.retention import ScreenshotPruner, retention_id
from pipeline.ui_check.screenshots import screenshots_dir, screenshots_root
from pipeline.validation.service import RECOVERY_LEASE
from tests.check_run_support import (CHECK_RUNS, age_validation, begin_validation, check_runs_of,
                                     recorded_pull_request, validation_service_without_runner)
from tests.cli_support import PROJECT_ROOT, AppProcess, ServedApp, cli_env, codegenapp, worker_process
from tests.conftest import APP_ID, WEBHOOK_SECRET
from tests.fakes.github import FakeGitHub
from tests.pull_requests import open_pull_request
from tests.screenshot_support import seed_project, validation_with_screenshots

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


# ---- the view (pure) ---------------------------------------------------------------------------------

@dataclass
class Beat:
    worker_id: str
    seen_at: datetime
    running_jobs: int = 0
    hostname: str = "box"
    pid: int = 7
    started_at: datetime = NOW - timedelta(hours=1)


@dataclass
class Row:
    kind: str
    status: str
    count: int
    ready: int = 0
    oldest_ready_at: datetime | None = None


def test_a_worker_is_alive_while_it_beat_within_two_leases_and_lost_for_a_day_after() -> None:
    assert fleet.stale_after_seconds(60) == 120 and fleet.stale_after_seconds(2) == 60  # at least a minute
    found = fleet.workers([Beat("old", NOW - timedelta(days=2)), Beat("a", NOW - timedelta(seconds=5), 3),
                           Beat("gone", NOW - timedelta(seconds=121)), Beat("b", NOW - timedelta(seconds=120))],
                          now=NOW, stale_after=120)
    assert [w["id"] for w in found.live] == ["a", "b"] and [w["id"] for w in found.lost] == ["gone"]
    assert found.live[0] == {"id": "a", "host": "box", "pid": 7, "started_at": "2026-12-07T11:00:00+00:00",
                             "last_heartbeat": "2026-12-07T11:59:55+00:00", "age_seconds": 5.0, "running_jobs": 3}
    assert found.includes("b") and not found.includes("gone")
    assert found.describe(this_process="a")["alive"] == 2


def test_the_queue_counts_by_state_and_kind_and_ages_the_job_due_longest() -> None:
    view = fleet.queue([Row(JOB_WEBHOOK, "queued", 5, ready=4, oldest_ready_at=NOW - timedelta(seconds=3)),
                        Row(JOB_WEBHOOK, "running", 2),
                        Row(JOB_VALIDATE, "queued", 3, ready=1, oldest_ready_at=NOW - timedelta(seconds=90)),
                        Row(JOB_AGENT_RUN, "queued", 1)],  # retrying later: queued, not ready
                       dead=6, now=NOW)
    assert {k: view[k] for k in ("queued", "running", "dead", "ready_now", "oldest_ready_age_seconds")} == {
        "queued": 9, "running": 2, "dead": 6, "ready_now": 5, "oldest_ready_age_seconds": 90.0}
    assert view["by_kind"][JOB_WEBHOOK] == {"queued": 5, "running": 2, "ready_now": 4, "oldest_ready_age_seconds": 3.0}
    assert view["by_kind"][JOB_AGENT_RUN]["oldest_ready_age_seconds"] is None
    assert fleet.queue([], dead=0, now=NOW)["oldest_ready_age_seconds"] is None


def test_status_text_names_the_workers_the_queue_and_what_is_wrong() -> None:
    found = fleet.workers([Beat("box:7:ab", NOW - timedelta(seconds=4), 2),
                           Beat("box:9:cd", NOW - timedelta(minutes=10))], now=NOW, stale_after=120)
    report = {"database": {"ok": True, "dialect": "postgresql"}, "workers": found.describe(this_process=None),
              "queue": fleet.queue([Row(JOB_VALIDATE, "queued", 3, 2, NOW - timedelta(seconds=75))], dead=1, now=NOW),
              "delivery_log": {"mode": "webhook", "interval_seconds": 300.0, "last_run": "2026-12-07T11:58:00+00:00",
                               "failed": False, "ingested": 4},
              "resync": {"interval_seconds": 3600.0, "max_starts": 50, "last_run": None}}
    shown = text(report, now=NOW)
    assert shown.splitlines()[0] == "healthy: 1 worker alive"
    assert "box:7:ab  box   7    2026-12-07 11:00:00  4 s ago    2" in shown
    assert "lost: box:9:cd on box stopped beating 10 min ago without stopping cleanly" in shown
    assert "queue: 2 ready now, the oldest waiting 75 s; 3 queued in all, 0 running, 1 dead-lettered" in shown
    assert "delivery log: last swept 2 min ago, 4 ingested (mode webhook, every 300 s)" in shown
    assert "resync: never run yet (every 3600 s)" in shown
    report["workers"] = fleet.workers([], now=NOW, stale_after=120).describe(this_process=None)
    assert text(report, now=NOW).startswith("NOT HEALTHY: no worker is alive")
    assert text({"database": {"ok": False, "error": "connection refused"}}, now=NOW) == \
        "NOT HEALTHY: the database cannot be read (connection refused)"


# ---- the reads, on SQLite and PostgreSQL -------------------------------------------------------------

async def test_the_fleet_is_read_from_heartbeats_and_the_queue(store: Store, make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(JOB_LEASE_SECONDS="30")  # alive: beat within 60 s
    now = utcnow()
    await store.heartbeats.beat("alive", running_jobs=1, started_at=now - timedelta(minutes=5))
    await store.heartbeats.beat("killed", running_jobs=2, started_at=now - timedelta(hours=2))
    await store.db.write(lambda conn: conn.execute(update(WorkerHeartbeat).where(WorkerHeartbeat.worker_id == "killed")
                                                   .values(seen_at=now - timedelta(minutes=3))))
    await store.jobs.enqueue(JOB_VALIDATE, run_after=now - timedelta(seconds=40))
    await store.jobs.enqueue(JOB_VALIDATE, run_after=now + timedelta(hours=1))  # a retry later
    await store.jobs.enqueue(JOB_WEBHOOK)
    running = await store.jobs.enqueue(JOB_AGENT_RUN, run_after=now - timedelta(days=1))
    [claimed] = await store.jobs.claim("w", limit=1, lease_seconds=60, kinds=frozenset({JOB_AGENT_RUN}))
    assert claimed.id == running
    await store.jobs.enqueue(JOB_WEBHOOK)
    [job] = await store.jobs.claim("w", limit=1, lease_seconds=60, kinds=frozenset({JOB_WEBHOOK}))
    assert await store.jobs.fail("w", job.id, error="boom", retry_at=None)  # dead-lettered

    found, queue = await fleet_report(store, settings)
    assert [w["id"] for w in found.live] == ["alive"] and [w["id"] for w in found.lost] == ["killed"]
    assert found.live[0]["running_jobs"] == 1 and found.live[0]["pid"] > 0
    assert (queue["queued"], queue["running"], queue["ready_now"]) == (3, 1, 2)
    assert queue["dead"] == 1
    assert 40 <= queue["oldest_ready_age_seconds"] < 60  # the due validation, not the running agent run
    assert queue["by_kind"][JOB_VALIDATE] == {"queued": 2, "running": 0, "ready_now": 1,
                                              "oldest_ready_age_seconds": queue["oldest_ready_age_seconds"]}
    assert queue["by_kind"][JOB_AGENT_RUN]["running"] == 1


async def test_a_beat_forgets_workers_gone_longer_than_the_lost_window_at_most_every_few_minutes(store: Store) -> None:
    now = utcnow()

    async def last_seen(worker_id: str, ago: timedelta) -> None:
        await store.heartbeats.beat(worker_id, running_jobs=0, started_at=now - timedelta(days=3))
        await store.db.write(lambda conn: conn.execute(update(WorkerHeartbeat).where(
            WorkerHeartbeat.worker_id == worker_id).values(seen_at=now - ago)))

    async def rows() -> set[str]:
        return {beat.worker_id for beat in await store.heartbeats.since(now - timedelta(days=30))}

    beating = type(store.heartbeats)(store.db)  # another process's: it has not pruned yet
    await last_seen("killed long ago", fleet.LOST_WINDOW + timedelta(minutes=1))
    await last_seen("lost", fleet.LOST_WINDOW - timedelta(minutes=1))
    await beating.beat("alive", running_jobs=0, started_at=now)
    assert await rows() == {"lost", "alive"}  # still listed as lost; the older one deleted
    await last_seen("killed meanwhile", fleet.LOST_WINDOW + timedelta(minutes=1))
    await beating.beat("alive", running_jobs=0, started_at=now)
    assert "killed meanwhile" in await rows()  # within FORGET_EVERY of the last prune: one UPDATE only
    beating._forgot_at = now - beating.FORGET_EVERY
    await beating.beat("alive", running_jobs=0, started_at=now)
    assert await rows() == {"lost", "alive"}


async def test_a_web_process_leaves_the_workspaces_alone_and_reports_none(
        aiohttp_client, make_settings: Callable[..., Settings], fake_github: FakeGitHub) -> None:  # type: ignore[no-untyped-def]
    from bot.app import create_app
    settings = make_settings(GITHUB_API_URL=fake_github.api_url, GITHUB_URL=fake_github.base_url)
    workspaces = settings.data_dir / "workspaces"
    client = await aiohttp_client(create_app(settings, with_worker=False))  # `serve --no-worker`
    async with client.get("/health") as response:
        health = await response.json()
    assert "runs" not in health["disk"] and health["workers"]["this_process"] is None
    assert not workspaces.exists()  # not made, not cleaned: it may be a worker's, as another user


def test_status_on_a_fresh_data_dir_writes_nothing_and_exits_2(tmp_path: Path) -> None:
    env = cli_env(tmp_path, HOME=str(tmp_path), LANG="C.UTF-8")
    data_dir = Path(env["DATA_DIR"])
    checked = codegenapp("status", "--json", env=env)
    assert checked.returncode == 2, checked.stdout + checked.stderr  # no database to read
    assert json.loads(checked.stdout)["database"]["ok"] is False
    # no generated keys: the first `serve` would take them for an earlier installation's and refuse to start
    assert not data_dir.exists() or list(data_dir.iterdir()) == []
    assert "exit codes:" in codegenapp("status", "--help", env=env).stdout


# ---- one process at a time -----------------------------------------------------------------------------

async def test_the_check_run_recovery_runs_in_one_process_at_a_time(
        store: Store, fake_github: FakeGitHub, make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(GITHUB_API_URL=fake_github.api_url, GITHUB_URL=fake_github.base_url)
    async with aiohttp.ClientSession() as http:
        one_github, two_github = GitHubApp(http, settings), GitHubApp(http, settings)
        one = validation_service_without_runner(store, one_github)
        two = validation_service_without_runner(store, two_github)
        project, _, pr = await recorded_pull_request(store, fake_github)
        begun = (await begin_validation(store, project.id, "dead-process", pr=pr)).validation
        await age_validation(store, begun.id)  # its process died before it made the check run
        creating = fake_github.hold_next("POST", CHECK_RUNS, before_handling=True)
        first = asyncio.create_task(one.recover_under_lease())
        await asyncio.wait_for(creating.arrived.wait(), 10)  # `one` is recovering it now
        assert await store.leases.holder(RECOVERY_LEASE) == one.holder
        assert await two.recover_under_lease() is None  # skipped: nothing looked at, nothing made
        creating.release()
        assert await asyncio.wait_for(first, 10) == 1
        assert await store.leases.holder(RECOVERY_LEASE) is None  # released once done
        assert await two.recover_under_lease() == 0  # its turn: nothing left to recover
        [made] = check_runs_of(fake_github, pr.head_sha)
        assert made["external_id"] == begun.id
        await one_github.close()
        await two_github.close()


async def test_the_screenshot_prune_runs_in_one_process_at_a_time_per_data_dir(store: Store, tmp_path: Path) -> None:
    shared, other = tmp_path / "shared", tmp_path / "other"
    project_id = await seed_project(store)
    old, _ = await validation_with_screenshots(store, shared, project_id, days_ago=40)
    elsewhere, _ = await validation_with_screenshots(store, other, project_id, days_ago=40)
    one, two = ScreenshotPruner(store, shared, 30), ScreenshotPruner(store, shared, 30)
    on_other_machine = ScreenshotPruner(store, other, 30)
    assert await one.lease_name() == await two.lease_name() != await on_other_machine.lease_name()
    assert retention_id(screenshots_root(shared)) == (await one.lease_name()).split(":")[1]  # kept in the root

    async with held(store.leases, await one.lease_name(), one.holder, ttl=timedelta(minutes=1)) as mine:
        assert mine  # `one` is pruning `shared` ...
        assert await two.run_once() is None  # ... so `two` skips it
        assert screenshots_dir(shared, old).is_dir()
        pruned = await on_other_machine.run_once()  # another DATA_DIR has a lease of its own
        assert pruned is not None and pruned.directories == 1 and not screenshots_dir(other, elsewhere).exists()
    result = await two.run_once()  # free again
    assert result is not None and result.directories == 1 and not screenshots_dir(shared, old).exists()


# ---- rolling restarts: SIGTERM to a real `codegenapp worker` or `codegenapp serve` ----------------------

GRACE = {"finished": "20", "released": "1"}  # SHUTDOWN_GRACE_SECONDS: the held job outlives 1 s


async def said(log: list[str], words: str, *, process: Any, timeout: float = 60) -> None:
    """Until a line of `log` holds `words`; fails (quoting the log's end) if the process ends first."""
    async def seen() -> None:
        while not any(words in line for line in log):
            if process.returncode is not None:
                raise AssertionError(f"the process ended before saying {words!r}:\n" + "".join(log[-30:]))
            await asyncio.sleep(0.05)

    await asyncio.wait_for(seen(), timeout)


async def webhook_jobs(database: Path) -> list[Any]:
    from bot.db import Database
    db = Database(f"sqlite:///{database}")
    try:
        return await db.read(lambda conn: conn.execute(
            select(Job.status, Job.lease_owner, Job.attempts).where(Job.kind == JOB_WEBHOOK)).all())
    finally:
        await db.dispose()


async def health_of(session: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    async with session.get(f"{url}/health") as response:
        return response.status, await response.json()


@pytest.fixture
def process_env(tmp_path: Path, app_private_key: str, fake_github: FakeGitHub) -> Callable[[str], dict[str, str]]:
    def env(grace: str) -> dict[str, str]:
        return cli_env(tmp_path, HOME=str(tmp_path), LANG="C.UTF-8", APP_ID=str(APP_ID), PRIVATE_KEY=app_private_key,
                       WEBHOOK_SECRET=WEBHOOK_SECRET, HOST="127.0.0.1", GITHUB_API_URL=fake_github.api_url,
                       GITHUB_URL=fake_github.base_url, SHUTDOWN_GRACE_SECONDS=grace, LOG_LEVEL="INFO",
                       RESYNC_INTERVAL="0", SWEEP_INTERVAL="0")
    return env


@pytest.mark.slow
@pytest.mark.parametrize("command", ["worker", "serve"])
@pytest.mark.parametrize("outcome", ["finished", "released"])
async def test_sigterm_lets_the_running_job_finish_within_the_grace_or_hands_it_back(
        command: str, outcome: str, process_env: Callable[[str], dict[str, str]], fake_github: FakeGitHub,
        tmp_path: Path) -> None:
    env = process_env(GRACE[outcome])
    database = tmp_path / "data" / "codegenapp.db"
    scenario = open_pull_request(fake_github, config=None)
    creating = fake_github.hold_next("POST", CHECK_RUNS, before_handling=True)  # the job waits on GitHub here
    async with aiohttp.ClientSession() as session:
        web = ServedApp(env, *(["--no-worker"] if command == "worker" else []), session=session)
        await web.start()
        worker: AppProcess | None = None
        try:
            if command == "worker":
                status, health = await health_of(session, web.url)
                # a web process without a worker stays healthy for its load balancer, and says none is alive
                assert (status, health["workers"]["alive"], health["workers"]["this_process"]) == (200, 0, None)
                assert health["workers"]["reason"] == "no worker is alive: queued jobs wait until one starts"
            assert web.webhooks is not None
            assert (await web.webhooks.send("pull_request", scenario.payload("opened"))).status == 202
            if command == "worker":
                worker = await worker_process(env).start()
            await asyncio.wait_for(creating.arrived.wait(), 60)

            status, health = await health_of(session, web.url)
            assert (status, health["workers"]["alive"], health["queue"]["running"]) == (200, 1, 1)
            checked = await asyncio.to_thread(codegenapp, "status", "--json", env=env)
            assert checked.returncode == 0, checked.stdout + checked.stderr
            assert json.loads(checked.stdout)["workers"]["alive"] == 1

            stopping, log = (worker.process, worker.log) if worker is not None else (web.process, web.log)
            stopping.send_signal(signal.SIGTERM)
            await said(log, "stopping: running jobs have", process=stopping)
            if outcome == "finished":
                creating.release()  # GitHub answers within the grace: the job ends as it would have
            code = await asyncio.wait_for(stopping.wait(), 60)  # one SIGTERM, as systemd sends it
            assert code == 0, "".join(log[-30:])
        finally:
            creating.release()
            if worker is not None:
                await worker.stop()
            await web.stop()

    [(state, owner, attempts)] = await webhook_jobs(database)
    if outcome == "finished":
        assert state == "done"
    else:  # handed back at once, untried, for another worker: not left claimed until its lease expires
        assert (state, owner, attempts) == ("queued", None, 0)
    checked = await asyncio.to_thread(codegenapp, "status", "--json", env=env)
    assert checked.returncode == 1  # nothing alive now: the stopped worker removed its heartbeat
    assert json.loads(checked.stdout)["workers"] == {"alive": 0, "stale_after_seconds": 120.0, "live": [], "lost": []}


# ---- the operations docs stay true to the code ---------------------------------------------------------

def _section(title: str) -> str:
    readme = (PROJECT_ROOT / "README.md").read_text()
    start = readme.index(f"## {title}\n")
    return readme[start:readme.index("\n## ", start + 1)]


def test_the_readme_says_which_settings_must_match_for_every_setting_the_config_reads() -> None:
    from tests.test_docs import variables_read_by_config
    section = _section("Running several processes on PostgreSQL")
    same = section[section.index("**The same settings everywhere.**"):section.index("These may differ")]
    differ = section[section.index("These may differ"):]
    named = [re.findall(r"`([A-Z_]+)`", part) for part in (same, differ)]
    assert set(named[0]) & set(named[1]) == set()
    assert set(named[0]) | set(named[1]) == variables_read_by_config()


def test_the_readme_counts_the_connections_bot_db_opens() -> None:
    from bot.db import PG_POOL_OVERFLOW, PG_POOL_SIZE
    section = " ".join(_section("Running several processes on PostgreSQL").split())
    pool = PG_POOL_SIZE + PG_POOL_OVERFLOW
    assert (f"at most {pool} connections from its pool (`PG_POOL_SIZE` {PG_POOL_SIZE} + `PG_POOL_OVERFLOW` "
            f"{PG_POOL_OVERFLOW}, `bot/db.py`) and 2 more") in section
    assert f"must be at least {pool + 2} × (N + M), plus {pool} for each command" in section
    six = 6 * (pool + 2)
    assert f"2 web + 4 workers: {six} + {pool} + 3 = {six + pool + 3}, under PostgreSQL's default of 100" in section


def test_the_units_stop_after_the_grace_and_signal_only_the_main_process() -> None:
    units = PROJECT_ROOT / "deploy" / "systemd"
    grace = Settings.__dataclass_fields__["shutdown_grace_seconds"].default
    for name in ("codegenapp-web@.service", "codegenapp-worker@.service"):
        unit = dict(line.split("=", 1) for line in (units / name).read_text().splitlines()
                    if "=" in line and not line.startswith("#"))
        assert (unit["KillSignal"], unit["KillMode"], unit["EnvironmentFile"]) == ("SIGTERM", "mixed",
                                                                                 "/etc/codegenapp/env")
        assert float(unit["TimeoutStopSec"]) > grace + 15
        assert "RestrictNamespaces" not in unit and "PrivateUsers" not in unit  # bubblewrap needs them
        assert "ProtectClock" not in unit  # older systemd: a device list without /dev/net/tun and /dev/loop*


def _unit(name: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in (PROJECT_ROOT / "deploy" / "systemd" / name).read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def test_every_worker_has_a_data_dir_of_its_own_and_shares_only_the_screenshots() -> None:
    env_file = (PROJECT_ROOT / "deploy" / "systemd" / "env.example").read_text()
    assert not re.search(r"^DATA_DIR=", env_file, flags=re.MULTILINE)  # it would override the units' own
    assert {"JWT_SECRET_KEY", "ENCRYPTION_KEY"} <= set(re.findall(r"^([A-Z_]+)=", env_file, flags=re.MULTILINE))
    worker, web = _unit("codegenapp-worker@.service"), _unit("codegenapp-web@.service")
    assert "DATA_DIR=/var/lib/codegenapp/worker-%i" in worker["Environment"]
    assert worker["StateDirectory"] == ["codegenapp/worker-%i"]
    shared = "/var/lib/codegenapp/validations"  # DATA_DIR/validations: where the screenshots are
    assert worker["BindPaths"] == [f"{shared}:/var/lib/codegenapp/worker-%i/validations"]
    assert "DATA_DIR=/var/lib/codegenapp" in web["Environment"] and screenshots_root(Path("/var/lib/codegenapp")) == Path(shared)
    tmpfiles = (PROJECT_ROOT / "deploy" / "systemd" / "codegenapp.tmpfiles.conf").read_text()
    assert f"d {shared} " in tmpfiles  # BindPaths= needs its source to exist
