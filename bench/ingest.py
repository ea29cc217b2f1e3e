"""Ingest benchmark: signed `pull_request.opened` deliveries against a running `codegenapp serve`.

Starts the recording fake GitHub in this process (request bodies not schema-checked: the tests do
that) and `codegenapp serve` as a subprocess (SQLite in a temporary DATA_DIR; `BENCH_DIR=/dev/shm`
puts it on another filesystem), sends N deliveries at concurrency C spread over many installations or
one, through a lean load generator (bench/rawload.py: pre-built requests on keep-alive connections, so
the client takes little of the machine's two cores), and prints:
  - ack latency p50/p99 (send → 202),
  - send → the handler's first GitHub call for that delivery p50/p99 (the `in_progress` check run),
  - deliveries/s end to end (first send → the last of those check runs),
  - the server's peak RSS and CPU (in all, and while the deliveries were being sent), and the
    largest write rate any one installation saw.

    .venv/bin/python bench/ingest.py [-n 2000] [-c 32] [--installations 100] [--idle] [--floor]

`--idle` sends one delivery at a time, each only once the app has finished everything the previous
one started (its validation's job has finished, after its completing PATCH): the latency of a
delivery that finds the app idle. Without it, `-c 1` sends the next delivery on the 202, while the
previous one is still being handled, and the server runs at full load.

`--floor` measures bench/floor_server.py (no storage, one check-run POST per delivery) in place of the
app: the least any aiohttp app can do here, which bounds what the app can reach.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import re
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.deliveries import APP_ID, SECRET, check_run_arrivals, signed_deliveries, start_fake  # noqa: E402
from bench.rawload import send_all  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def wait_until_healthy(session: aiohttp.ClientSession, url: str, *, seconds: float) -> bool:
    """Poll /health until the server answers 200 (it is starting in another process)."""
    for _ in range(int(seconds / 0.05)):
        try:
            async with session.get(url + "/health") as response:
                if response.status == 200:
                    return True
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.05)
    return False


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024


def server_cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of the process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / os.sysconf("SC_CLK_TCK"), int(fields[12]) / os.sysconf("SC_CLK_TCK")


async def jobs_done(session: aiohttp.ClientSession, url: str, kind: str = "webhook") -> float:
    async with session.get(url + "/metrics") as response:
        text = await response.text()
    return sum(float(m) for m in re.findall(rf'codegenapp_jobs_total\{{kind="{kind}",outcome="\w+"\}} ([0-9.e+]+)', text))


def max_writes_per_minute(calls) -> tuple[int, int]:
    """The most writes any one installation made in a sliding 60 s window, and in flight at once."""
    by_installation: dict[int, list[float]] = {}
    for call in calls:
        if call.method in ("POST", "PATCH", "PUT", "DELETE") and call.installation_id is not None \
                and "/access_tokens" not in call.path:
            by_installation.setdefault(call.installation_id, []).append(call.at)
    worst = 0
    for times in by_installation.values():
        times.sort()
        start = 0
        for end, t in enumerate(times):
            while t - times[start] > 60:
                start += 1
            worst = max(worst, end - start + 1)
    return worst, len(by_installation)


async def run(n: int, concurrency: int, installations: int, floor: bool = False, idle: bool = False) -> None:
    fake, key, repos = await start_fake(installations)

    data_dir = tempfile.mkdtemp(prefix="codegenapp-bench-", dir=os.environ.get("BENCH_DIR"))
    port = free_port()
    env = {**os.environ, "DATA_DIR": data_dir, "PORT": str(port), "APP_ID": str(APP_ID), "PRIVATE_KEY": key,
           "WEBHOOK_SECRET": SECRET, "GITHUB_API_URL": fake.api_url, "GITHUB_URL": fake.base_url,
           "LOG_LEVEL": "WARNING", "WORKER_CONCURRENCY": str(max(8, concurrency))}
    command = [sys.executable, "-m", "bot", "serve"]
    if floor:  # the least any app can do per delivery: see bench/floor_server.py
        command = [sys.executable, str(ROOT / "bench" / "floor_server.py")]
    if os.environ.get("BENCH_PROFILE"):  # BENCH_PROFILE=/tmp/server.prof: cProfile of the server
        command = [sys.executable, "-m", "cProfile", "-o", os.environ["BENCH_PROFILE"], *command[1:]]
    if os.environ.get("BENCH_WRAP"):  # e.g. BENCH_WRAP="py-spy record -r 500 -f raw -t -o /tmp/s.txt --"
        command = os.environ["BENCH_WRAP"].split() + command
    server = await asyncio.create_subprocess_exec(*command, cwd=data_dir, env=env)
    url = f"http://127.0.0.1:{port}"
    ack: list[float] = []
    sent_at: dict[str, float] = {}
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
            if not await wait_until_healthy(session, url, seconds=30):
                raise RuntimeError("the server did not start")
            # Bodies are built and signed before the clock starts: the client's own work is not the server's.
            requests = signed_deliveries(fake, repos, n, f"127.0.0.1:{port}")
            errors = 0

            def answered(sha: object, sent: float, at: float, status: int) -> None:
                nonlocal errors
                sent_at[sha] = sent  # type: ignore[index]
                ack.append(at - sent)
                if status != 202:
                    errors += 1

            # What was built so far (the fake's state, the requests) lives to the end: keep the
            # collector from re-scanning it while the clock runs (its pauses would count as latency).
            gc.freeze()
            client_cpu = time.process_time()
            burst_cpu = server_cpu_seconds(server.pid)
            began = time.monotonic()
            async def until_idle(_sha: object) -> None:
                """Until the app has finished the delivery just answered (`--idle`)."""
                finished = len(ack)
                # First its validation's completing PATCH, without asking the server anything: a
                # /metrics scrape costs it ~15 ms of CPU, which must stay off the measured path.
                await fake.wait_for_call("PATCH", "/repos/*/*/check-runs/*", count=finished, timeout=30)
                give_up = time.monotonic() + 30
                while await jobs_done(session, url, "validate") < finished:  # then its job's last writes
                    if time.monotonic() > give_up:
                        raise RuntimeError(f"the validation of delivery {finished} did not finish within 30 s")
                    await asyncio.sleep(0.005)

            await send_all("127.0.0.1", port, iter(requests), concurrency, answered,
                           before_next=until_idle if idle else None)
            burst_cpu = sum(server_cpu_seconds(server.pid)) - sum(burst_cpu)
            sending = time.monotonic() - began
            done = 0.0
            deadline = time.monotonic() + 120
            while done < n and time.monotonic() < deadline:
                done = await jobs_done(session, url)
                if done < n:
                    await asyncio.sleep(0.5)  # a scrape costs the server ~15 ms: do not poll hard
            end_to_end = time.monotonic() - began
            client_cpu = time.process_time() - client_cpu
            rss = peak_rss_mb(server.pid)
            cpu = server_cpu_seconds(server.pid)
    finally:
        if os.environ.get("BENCH_WRAP"):  # a profiler writes its output on SIGINT, not SIGTERM
            server.send_signal(signal.SIGINT)
        else:
            server.terminate()
        await server.wait()
        await fake.close()
        shutil.rmtree(data_dir, ignore_errors=True)

    first_call = check_run_arrivals(fake.calls)
    to_check_run = [first_call[sha] - sent_at[sha] for sha in sent_at if sha in first_call]
    # Once every installation has had a delivery (its token fetched, its project recorded): the steady state.
    warm = [first_call[sha] - sent_at[sha] for sha in sent_at
            if sha in first_call and int(sha, 16) >= 2 * installations]
    # The webhook job's last GitHub call is its check run: the last one to arrive ends the burst
    # (the jobs-finished poll above only confirms it, at 0.5 s granularity).
    last_check_run = max((first_call[sha] for sha in sent_at if sha in first_call), default=None)
    worst_rate, active = max_writes_per_minute(fake.calls)

    print(f"deliveries {n}, concurrency {concurrency}, installations {installations}"
          + ("  [IDLE: one at a time, each once the previous one's validation completed]" if idle else "")
          + ("  [FLOOR: bench/floor_server.py, not the app]" if floor else ""))
    print(f"  ack latency          p50 {percentile(ack, 50) * 1000:7.2f} ms   p99 {percentile(ack, 99) * 1000:7.2f} ms")
    if to_check_run:
        print(f"  send -> check run    p50 {percentile(to_check_run, 50) * 1000:7.2f} ms   "
              f"p99 {percentile(to_check_run, 99) * 1000:7.2f} ms   ({len(to_check_run)} of {n})")
        if warm:
            print(f"    after the first {2 * installations}: p50 {percentile(warm, 50) * 1000:7.2f} ms   "
                  f"p99 {percentile(warm, 99) * 1000:7.2f} ms   (warm: every installation seen)")
    else:
        print("  send -> check run    n/a (no handler calls GitHub for pull_request yet)")
    print(f"  sending took {sending:.2f} s ({n / sending:.0f}/s acked); all jobs finished by "
          f"{end_to_end:.2f} s (polled)")
    if last_check_run is not None and len(to_check_run) == n and not idle:
        print(f"  end to end: first send -> last check run {last_check_run - began:.2f} s: "
              f"{n / (last_check_run - began):.0f} deliveries/s")
    print(f"  peak RSS of the server {rss:.1f} MB; server CPU {sum(cpu):.2f} s in all ({cpu[0]:.2f} user, "
          f"{cpu[1]:.2f} system), {sum(cpu) / n * 1000:.2f} ms per delivery (startup included)")
    print(f"  server CPU while sending {burst_cpu:.2f} s: {burst_cpu / n * 1000:.3f} ms per delivery")
    print(f"  errors {errors}; jobs finished {done:.0f}/{n}; most writes by one installation in 60 s: "
          f"{worst_rate} (limit 80) over {active} installations")
    print(f"  mean ack {statistics.mean(ack) * 1000:.2f} ms; load generator + fake GitHub CPU {client_cpu:.2f} s")
    targets = [("peak RSS <= 100 MB", rss <= 100), ("no errors", errors == 0),
               ("pacing: <= 80 writes / installation / 60 s", worst_rate <= 80)]
    if to_check_run and concurrency == 1 and not idle:
        targets.append(("send -> check run p50 <= 2 ms at C=1", percentile(to_check_run, 50) <= 0.002))
    if to_check_run and concurrency == 32:
        targets.append(("send -> check run p99 <= 30 ms at C=32", percentile(to_check_run, 99) <= 0.030))
    if last_check_run is not None and len(to_check_run) == n and installations > 1 and not idle:
        targets.append((">= 1700 deliveries/s end to end", n / (last_check_run - began) >= 1700))
    print("  targets: " + "; ".join(f"{name} {'OK' if ok else 'MISSED'}" for name, ok in targets))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=2000, help="deliveries")
    parser.add_argument("-c", "--concurrency", type=int, default=32)
    parser.add_argument("--installations", type=int, default=100)
    parser.add_argument("--floor", action="store_true",
                        help="measure bench/floor_server.py (signature, JSON, 202, one check-run POST; no storage) "
                             "instead of the app: what aiohttp alone allows on this machine")
    parser.add_argument("--idle", action="store_true",
                        help="one delivery at a time, each once the app finished the previous one (implies -c 1)")
    args = parser.parse_args()
    if args.idle and args.floor:
        parser.error("--idle waits for each validation to finish, which the floor server does not run")
    concurrency = 1 if args.idle else args.concurrency
    asyncio.run(run(args.n, concurrency, args.installations, floor=args.floor, idle=args.idle))


if __name__ == "__main__":
    main()
