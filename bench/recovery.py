"""Delivery-log benchmark: polling mode's latency, and the catch-up after a restart.

Starts the fake GitHub in this process (its delivery log: tests/fakes/github/hooks.py; request bodies
not schema-checked, as in ingest.py) and `codegenapp serve` as a subprocess (SQLite in a temporary
DATA_DIR). Pull requests are spread over `--installations` installations, so that GitHub's write limits
per installation (80 a minute) are not what is measured. Each PR's validation finds no config and ends
neutral without a checkout. Prints:

1. **Polling mode** (WEBHOOK_MODE=poll, POLL_INTERVAL=`--poll-interval`, default 5 s as shipped): `-n` PR
   events created on the fake one at a time, every `--every` seconds (so they fall at every phase of
   the polling), GitHub's POST to the App's webhook URL failing (nothing listens). Time from the event's
   creation on the fake to the arrival at the fake of its `in_progress` check run: p50, p99, max.
2. **Catch-up after a restart**: the app is stopped (SIGTERM), `--missed` PR events are delivered and fail
   meanwhile, then the app starts again in webhook mode (its recovery sweep at start). Time from the
   restart (the new process started) to the last of their `in_progress` check runs; the sweep's own
   duration and pages from /health. The outage is compressed: the missed events are created as fast
   as the fake can, not over ten minutes (the sweep sees the same log either way: it pages by count,
   and everything is within the 3-day horizon).

    .venv/bin/python bench/recovery.py [-n 200] [--every 0.25] [--poll-interval 5] [--missed 500]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ingest import free_port, percentile, wait_until_healthy  # noqa: E402
from tests.fakes.fixtures import generate_private_key_pem  # noqa: E402
from tests.fakes.github import FakeGitHub  # noqa: E402

SECRET = "bench-webhook-secret"
APP_ID = 12345
CHECK_RUNS = "/repos/*/*/check-runs"


class Bench:
    def __init__(self, installations: int) -> None:
        self.fake = FakeGitHub(app_id=APP_ID, private_key_pem=generate_private_key_pem(), validate_bodies=False)
        self.installations = installations
        self.repos: list[tuple[int, str]] = []
        self.numbers = 0
        self.data_dir = tempfile.mkdtemp(prefix="codegenapp-bench-recovery-", dir=os.environ.get("BENCH_DIR"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server: asyncio.subprocess.Process | None = None

    async def start_fake(self) -> None:
        await self.fake.start()
        self.fake.webhook_secret = SECRET
        self.fake.webhook_url = f"http://127.0.0.1:{free_port()}/api/v1/webhooks/github"  # nothing listens
        for i in range(self.installations):
            self.fake.add_installation(1000 + i, f"org{i}", repos=[f"org{i}/repo{i}"])
            self.repos.append((1000 + i, f"org{i}/repo{i}"))

    async def start_app(self, session: aiohttp.ClientSession, **env: str) -> float:
        """`codegenapp serve` with `env`; the monotonic time the process was started."""
        environment = {**os.environ, "DATA_DIR": self.data_dir, "PORT": str(self.port), "APP_ID": str(APP_ID),
                       "PRIVATE_KEY": self.fake.private_key_pem, "WEBHOOK_SECRET": SECRET,
                       "GITHUB_API_URL": self.fake.api_url, "GITHUB_URL": self.fake.base_url, "LOG_LEVEL": "WARNING",
                       "RESYNC_INTERVAL": "0", **env}
        started = time.monotonic()
        self.server = await asyncio.create_subprocess_exec(sys.executable, "-m", "bot", "serve", cwd=self.data_dir,
                                                           env=environment)
        if not await wait_until_healthy(session, self.url, seconds=60):
            raise RuntimeError("the server did not start")
        return started

    async def stop_app(self) -> None:
        if self.server is not None and self.server.returncode is None:
            self.server.send_signal(signal.SIGTERM)
            await self.server.wait()

    def new_pull(self) -> tuple[str, dict[str, Any]]:
        """A new PR on the fake (its own head sha): (head sha, its pull_request.opened payload)."""
        self.numbers += 1
        installation_id, full_name = self.repos[self.numbers % len(self.repos)]
        sha = f"{self.numbers:040x}"
        pull = self.fake.add_pull(full_name, self.numbers, head_sha=sha, base_sha="f" * 40)
        return sha, {"action": "opened", "number": self.numbers, "pull_request": pull,
                     "repository": self.fake.repos[full_name], "installation": {"id": installation_id},
                     "sender": pull["user"]}

    def check_run_at(self) -> dict[str, float]:
        """head sha -> when its check run was created (the fake's clock)."""
        return {call.json["head_sha"]: call.at for call in self.fake.calls_to("POST", CHECK_RUNS)
                if isinstance(call.json, dict) and call.status == 201}

    async def until_check_runs(self, shas: list[str], *, timeout: float) -> dict[str, float]:
        wanted = set(shas)
        await self.fake.wait_until(lambda: wanted <= set(self.check_run_at()), timeout=timeout)
        return self.check_run_at()

    async def close(self) -> None:
        await self.stop_app()
        await self.fake.close()
        shutil.rmtree(self.data_dir, ignore_errors=True)


async def polling(bench: Bench, session: aiohttp.ClientSession, n: int, every: float, interval: float) -> None:
    await bench.start_app(session, WEBHOOK_MODE="poll", POLL_INTERVAL=str(interval))
    created: dict[str, float] = {}
    for _ in range(n):
        sha, payload = bench.new_pull()
        entry = await bench.fake.deliver("pull_request", payload)
        assert entry["status"] == "failed to connect to host"
        created[sha] = time.monotonic()
        await asyncio.sleep(every)
    arrived = await bench.until_check_runs(list(created), timeout=interval * 4 + 120)
    latencies = [arrived[sha] - at for sha, at in created.items()]
    print(f"polling mode, POLL_INTERVAL={interval:g} s, {n} PRs created every {every:g} s over "
          f"{bench.installations} installations:")
    print(f"  PR event created -> its in_progress check run: p50 {percentile(latencies, 50):.2f} s, "
          f"p99 {percentile(latencies, 99):.2f} s, max {max(latencies):.2f} s, min {min(latencies):.2f} s")
    print(f"  delivery-log requests: {len(bench.fake.calls_to('GET', '/app/hook/deliveries'))} list, "
          f"{len(bench.fake.calls_to('GET', '/app/hook/deliveries/*'))} fetch, "
          f"{len(bench.fake.calls_to('POST', '/app/hook/deliveries/*/attempts'))} redelivery")


async def catch_up(bench: Bench, session: aiohttp.ClientSession, missed: int) -> None:
    await bench.stop_app()
    shas = []
    outage = time.monotonic()
    for _ in range(missed):
        sha, payload = bench.new_pull()
        await bench.fake.deliver("pull_request", payload)
        shas.append(sha)
    outage = time.monotonic() - outage
    restarted = await bench.start_app(session, WEBHOOK_MODE="webhook", SWEEP_INTERVAL="300")
    healthy = time.monotonic()
    arrived = await bench.until_check_runs(shas, timeout=600)
    done = max(arrived[sha] for sha in shas)
    async with session.get(bench.url + "/health") as response:
        health = (await response.json())["delivery_log"]
    print(f"catch-up: app stopped, {missed} PR events delivered and failed ({outage:.1f} s), restarted in "
          f"webhook mode:")
    print(f"  restart -> last of the {missed} in_progress check runs: {done - restarted:.2f} s "
          f"(of which start-up to healthy {healthy - restarted:.2f} s); {missed / (done - healthy):.0f} PRs/s after")
    print(f"  the start's sweep: {health.get('ingested')} ingested in {health.get('seconds')} s "
          f"({health.get('pages')} pages listed), stopped at {health.get('stopped_at')}; "
          f"redeliveries asked: {len(bench.fake.redelivery_requests)}")


async def run(args: argparse.Namespace) -> None:
    bench = Bench(args.installations)
    await bench.start_fake()
    try:
        async with aiohttp.ClientSession() as session:
            await polling(bench, session, args.n, args.every, args.poll_interval)
            await catch_up(bench, session, args.missed)
    finally:
        await bench.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=200, help="PR events in polling mode (default 200)")
    parser.add_argument("--every", type=float, default=0.25, help="seconds between them (default 0.25)")
    parser.add_argument("--poll-interval", type=float, default=5.0, help="POLL_INTERVAL (default 5, as shipped)")
    parser.add_argument("--missed", type=int, default=500, help="deliveries missed while stopped (default 500)")
    parser.add_argument("--installations", type=int, default=100, help="installations to spread PRs over")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
