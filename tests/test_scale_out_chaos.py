"""Scale-out under chaos (issue 17): two `codegenapp serve --no-worker` and two `codegenapp worker` processes on
one PostgreSQL database, a round-robin load balancer in front of the web processes, and one process SIGKILLed
and started again every 2-4 s while several hundred signed pull_request deliveries arrive for many
installations.

The seed of the killer is CHAOS_SEED (default 17); a failure names it, so a run can be repeated, and says where
the processes' logs are. About 35 s; about 90 s when a kill leaves a check run for the app's recovery (SETTLE_BOUND).
"""

from __future__ import annotations

import asyncio
import collections
import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import text

from bot.db import Database
from tests.fakes.fixtures import APP_ID
from tests.fakes.github import FakeGitHub
from tests.pg import PostgresCluster
from tests.scale_support import (
    AppProcess,
    Killer,
    RoundRobinProxy,
    migrate,
    open_pull_requests,
    send_until_acknowledged,
    shared_env,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

SECRET = "whsec-scale-out-5a4b3c2d1e"
DELIVERIES = 300
INSTALLATIONS = 40
# A worker killed between recording a validation's end and completing its check run leaves the check run
# in_progress; the app's recovery (pipeline/validation/service.py recover_check_runs) completes it once the
# validation ended CHECK_RUN_CLAIM_STALE (60 s) ago, at a worker's start or its round every 60 s.
SETTLE_BOUND = 150.0
SEND_RATE = 15.0  # deliveries a second: 300 take 20 s, while processes are being killed
SEED = int(os.environ.get("CHAOS_SEED", "17"))


# A killed worker's jobs and installation write lanes are taken over after this long, not the defaults (60 s, 20 s).
LEASES = {"JOB_LEASE_SECONDS": "3", "GITHUB_WRITE_LEASE_SECONDS": "3"}


async def rows(db: Database, sql: str, **params: Any) -> list[Any]:
    return await db.read(lambda conn: list(conn.execute(text(sql), params).all()))


async def test_acknowledged_deliveries_are_handled_once_while_processes_are_killed(
        postgres_cluster: PostgresCluster, fake_github: FakeGitHub, app_private_key: str, tmp_path: Path) -> None:
    """What "handled exactly once" means here, as far as it can be observed from outside:
    - every delivery is acknowledged (a 2xx through the load balancer; the sender retries 502s and dropped
      connections with the same X-GitHub-Delivery, as GitHub's redelivery would);
    - the database holds each acknowledged delivery once, with exactly one webhook job, and that job is done;
      no job of any kind is dead, queued or running at the end;
    - the handler's effect on GitHub happened once: each PR head has exactly one check run, completed (none is
      left queued or in_progress, none was created twice by a job run again after a kill);
    - no installation ever had two writes in flight at once (the fake records every installation-token write
      from authentication to answer and each overlap)."""
    github = fake_github
    github.write_delay = 0.005  # each installation write held 5 ms: two sent at once overlap in the record
    env = shared_env(database_url=postgres_cluster.create_database(), fake=github, app_id=APP_ID,
                     private_key=app_private_key, webhook_secret=SECRET, **LEASES)
    migrate(env, tmp_path)
    webs = [AppProcess.web(f"web{i}", env=env, root=tmp_path) for i in (1, 2)]
    workers = [AppProcess.worker(f"worker{i}", env=env, root=tmp_path) for i in (1, 2)]
    processes = [*webs, *workers]
    deliveries = open_pull_requests(github, count=DELIVERIES, installations=INSTALLATIONS, secret=SECRET)
    db = Database(env["DATABASE_URL"])
    proxy = RoundRobinProxy([web.url for web in webs])
    killer = Killer(processes, seed=SEED)

    async def settled() -> bool:
        unfinished = await rows(db, "SELECT count(*) FROM jobs WHERE status IN ('queued', 'running')")
        webhook_jobs = await rows(db, "SELECT count(*) FROM jobs WHERE kind = 'webhook'")
        completed = {run["head_sha"] for run in github.check_runs.values() if run["status"] == "completed"}
        return (unfinished[0][0] == 0 and webhook_jobs[0][0] >= DELIVERIES
                and all(d.head_sha in completed for d in deliveries))

    async def progress() -> str:
        jobs = await rows(db, "SELECT kind, status, count(*) FROM jobs GROUP BY kind, status ORDER BY 1, 2")
        completed = {run["head_sha"] for run in github.check_runs.values() if run["status"] == "completed"}
        missing = [d.head_sha for d in deliveries if d.head_sha not in completed]
        runs = collections.defaultdict(list)
        for run in github.check_runs.values():
            runs[run["head_sha"]].append(run["status"])
        states = await rows(db, "SELECT head_sha, status, conclusion, check_run_id, check_run_settled "
                                "FROM validation_states WHERE head_sha = ANY(:shas)", shas=missing[:5])
        return (f"seed {SEED}; logs in {tmp_path}; jobs {[tuple(r) for r in jobs]}; {len(missing)} heads without a "
                f"completed check run, e.g. {[(sha[-4:], runs.get(sha)) for sha in missing[:5]]}, their "
                f"validations {[tuple(r) for r in states]}; kills {killer.kills}, restarting {killer.restarting}; logs:\n" + "\n".join(f"--- {p.name}\n{p.log_tail(15)}"
                                                                      for p in processes))

    try:
        await asyncio.gather(*(process.start() for process in processes))
        await proxy.start()
        killer.start()
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
                await send_until_acknowledged(session, proxy.url, deliveries, per_second=SEND_RATE, give_up_after=30)
            await wait_until(settled, timeout=SETTLE_BOUND, describe=progress)
        finally:
            await killer.stop()
        assert all(process.running for process in processes), [p.name for p in processes if not p.running]

        refused = collections.Counter(status for d in deliveries for status in d.refusals)
        print(f"seed {SEED}: {len(killer.kills)} kills {killer.kills}; answers before acknowledgement "
              f"{dict(refused)}; acknowledged {dict(collections.Counter(d.acked for d in deliveries))}; "
              f"{github.writes_in_flight.writes} installation writes, most in flight at once "
              f"{github.writes_in_flight.max_in_flight}, {len(github.writes_in_flight.overlaps)} overlaps")
        guids = [d.guid for d in deliveries]
        stored = await rows(db, "SELECT id FROM deliveries")
        assert sorted(row[0] for row in stored) == sorted(guids)
        webhook_jobs = await rows(db, "SELECT delivery_id, status FROM jobs WHERE kind = 'webhook'")
        per_delivery = collections.Counter(row[0] for row in webhook_jobs)
        assert {guid: n for guid, n in per_delivery.items() if n != 1} == {}
        assert set(per_delivery) == set(guids)
        assert {row[1] for row in webhook_jobs} == {"done"}
        left = await rows(db, "SELECT kind, status, last_error FROM jobs WHERE status <> 'done'")
        assert left == [], f"seed {SEED}: jobs not done: {left}"

        runs_per_head = collections.Counter(run["head_sha"] for run in github.check_runs.values())
        assert {sha: n for sha, n in runs_per_head.items() if n != 1} == {}, f"seed {SEED}: heads with 2+ runs"
        assert set(runs_per_head) == {d.head_sha for d in deliveries}
        unfinished_runs = [run for run in github.check_runs.values() if run["status"] != "completed"]
        assert unfinished_runs == []

        record = github.writes_in_flight
        assert record.writes >= 2 * DELIVERIES  # each head's check run created and completed, at least
        assert [overlap.describe() for overlap in record.overlaps] == [], f"seed {SEED}: overlapping writes"
        assert record.max_in_flight == 1
        assert len(killer.kills) >= 3, killer.kills  # the chaos happened
    finally:
        await killer.stop()
        await asyncio.gather(*(process.kill() for process in processes))
        await proxy.close()
        await db.dispose()
