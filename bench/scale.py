"""Scale-out benchmark: the same signed `pull_request.opened` deliveries, through the same load generator,
against each process layout of the app:

  sqlite           one `codegenapp serve` on SQLite (the ingest benchmark's layout)
  pg               one `codegenapp serve` on PostgreSQL
  pg-2web-1worker  two `codegenapp serve --no-worker` and one `codegenapp worker` on one PostgreSQL database;
                   the load generator's connections go to the two web processes in turn

PostgreSQL is a throwaway cluster (tests/pg.py), a fresh database per layout, migrated with
`codegenapp migrate` before the app's processes start. Each layout runs three phases on the same processes,
over `--installations` installations (each phase waits until the app has finished everything before the next):

  C=32   `-n` deliveries on 32 connections (the first phase: it also fetches every installation's token)
  C=1    `--n1` deliveries on one connection, the next one sent on the 202: the app is loaded, not idle
  idle   `--idle` deliveries one at a time, each once the app finished everything the previous one started
         (its validation's check run completed and no job left queued or running): bench/ingest.py's --idle

and prints per phase: ack p50/p99, event -> in_progress check run p50/p99/max (send -> the check run's
arrival at the fake GitHub), deliveries/s (first send -> the last in_progress check run), and CPU per
delivery of each app process, the PostgreSQL server (its processes' CPU from /proc) and this process (the load
generator and the fake GitHub, which share the machine's cores with the app), both "while sending" (first send
-> last 202, as bench/ingest.py) and "to the end" (-> every delivery's validation done). Then per layout the
peak RSS of each process, the issue's targets, what the measured CPU per delivery of each role says about
throughput on more cores, and the app's GitHub requests per delivery by operation.

    .venv/bin/python bench/scale.py [-n 2000] [--n1 300] [--idle 50] [--installations 200]
                                    [--layouts sqlite,pg,pg-2web-1worker]

To see where the CPU goes: BENCH_PROFILE=/tmp/p (cProfile of each app process, /tmp/p.<its DATA_DIR name>),
BENCH_WRAP="py-spy record -f raw -o /tmp/s.txt --" (a profiler around the app's processes: one layout at a
time; the app's CPU is then the profiler's), BENCH_PG_LOG=/tmp/l (PostgreSQL's log of every statement the app
ran and how long it took, in /tmp/l.<layout>: statements per delivery, and which cost the server most),
BENCH_PG_TABLES=1 (rows inserted and updated per table, how many updates were HOT, and the scans of each index,
printed at the end of each PostgreSQL layout).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import secrets
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.deliveries import APP_ID, SECRET, Repository, check_run_arrivals, signed_deliveries, start_fake  # noqa: E402
from bench.ingest import (free_port, max_writes_per_minute, peak_rss_mb, percentile, server_cpu_seconds,  # noqa: E402
                          wait_until_healthy)
from bench.rawload import send_all  # noqa: E402
from tests.fakes.github import FakeGitHub  # noqa: E402
from tests.fakes.github.common import Call  # noqa: E402
from tests.pg import PostgresCluster, server_bin_dir  # noqa: E402

SQLITE_CPU_TARGET_MS = 0.95  # server CPU per delivery at C=32 over 200 installations, one process on SQLite
IDLE_P50_TARGET_MS = 1.8  # event -> in_progress p50 at C=1
POSTGRES_CPU_FACTOR = 1.2  # on PostgreSQL, all processes together, within 1.2x of the SQLite target
HOST = "127.0.0.1"
PENDING_JOBS = "SELECT count(*) FROM jobs WHERE status IN ('queued', 'running') AND kind IN ('webhook', 'validate')"


@dataclass(frozen=True)
class Layout:
    name: str
    postgres: bool
    webs: int
    workers: int  # standalone `codegenapp worker` processes; 0: the web process runs the jobs

    def describe(self) -> str:
        database = "PostgreSQL" if self.postgres else "SQLite"
        if not self.workers:
            return f"{self.webs} process{'es' if self.webs > 1 else ''} (serve, jobs in process) on {database}"
        return f"{self.webs} web (serve --no-worker) + {self.workers} worker on {database}"


LAYOUTS = {layout.name: layout for layout in (
    Layout("sqlite", postgres=False, webs=1, workers=0),
    Layout("pg", postgres=True, webs=1, workers=0),
    Layout("pg-2web-1worker", postgres=True, webs=2, workers=1),
)}


# --- pure: the arithmetic on what was measured ------------------------------------------------------------

def ms_per_delivery(cpu_seconds: float, deliveries: int) -> float:
    return cpu_seconds / deliveries * 1000 if deliveries else float("nan")


def throughput_bound(role_ms: dict[str, float], processes: dict[str, int], cores: float) -> float:
    """Deliveries/s the app can reach on `cores` cores with the measured CPU per delivery of each role
    (`role_ms`, all its processes together) and `processes` processes of each (a Python process uses one core
    at most; PostgreSQL, a process per connection, is given as many as there are cores): the least of the
    cores shared by every role, and of each role's own processes."""
    total = sum(role_ms.values())
    bounds = [cores * 1000 / total] if total > 0 else []
    bounds += [min(processes.get(role, cores), cores) * 1000 / ms for role, ms in role_ms.items() if ms > 0]
    return min(bounds) if bounds else float("nan")


def scaling_lines(role_ms: dict[str, float], processes: dict[str, int], harness_ms: float, *,
                  more_processes: bool) -> list[str]:
    """`more_processes`: whether the layout can take more app processes (PostgreSQL; SQLite serializes
    writers across processes)."""
    lines = ["  per core, each role alone: " + ", ".join(
        f"{role} {1000 / ms:,.0f}/s ({ms:.2f} ms)" for role, ms in role_ms.items() if ms > 0)]
    total = sum(role_ms.values())
    here = throughput_bound({**role_ms, "harness": harness_ms}, {**processes, "harness": 1}, 2)
    lines.append(f"  all roles {total:.2f} ms/delivery: {1000 / total:,.0f}/s per core; sustained on this machine (2 "
                 f"cores, the harness's {harness_ms:.2f} ms on them too) ~{here:,.0f}/s (a burst goes faster: "
                 "validations wait)")
    fixed = ", ".join(f"{cores} cores ~{throughput_bound(role_ms, processes, cores):,.0f}/s" for cores in (4, 8, 16))
    lines.append(f"  sustained on more cores, these processes ({', '.join(f'{n} {r}' for r, n in processes.items())}), "
                 f"harness elsewhere: {fixed}")
    if more_processes:
        grown = []
        for cores in (4, 8, 16):
            scaled = {role: max(1, round(cores * ms / total)) if role != "postgres" else cores
                      for role, ms in role_ms.items()}
            grown.append(f"{cores} cores ~{throughput_bound(role_ms, scaled, cores):,.0f}/s "
                         f"({', '.join(f'{n} {r}' for r, n in scaled.items() if r != 'postgres')})")
        lines.append("  processes added in proportion to their CPU: " + ", ".join(grown))
    else:
        lines.append("  one app process uses one core at most, and SQLite takes one writer at a time: more cores "
                     "do not raise this layout's bound")
    return lines


# --- measurement on the running processes --------------------------------------------------------------------

def process_cpu(pid: int) -> float:
    return sum(server_cpu_seconds(pid))


def postgres_cpu_seconds(postmaster: int) -> float:
    """The PostgreSQL server's CPU so far: the postmaster, its live children (backends, walwriter...) and,
    through the postmaster's cumulative child times, those that have exited."""
    fields = Path(f"/proc/{postmaster}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    total = sum(int(value) for value in fields[11:15]) / ticks  # utime stime cutime cstime
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            child = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # it has just exited
            continue
        if int(child[1]) == postmaster:
            total += (int(child[11]) + int(child[12])) / ticks
    return total


class Arrivals:
    """How many calls of one kind reached the fake, counted as they come (the list is not scanned again)."""

    def __init__(self, fake: FakeGitHub, matches: Callable[[object], bool]) -> None:
        self.fake = fake
        self.matches = matches
        self.scanned = 0
        self.count = 0

    def __call__(self) -> int:
        calls = self.fake.calls
        while self.scanned < len(calls):
            self.count += self.matches(calls[self.scanned])
            self.scanned += 1
        return self.count

    async def wait_for(self, count: int, timeout: float) -> None:
        await self.fake.wait_until(lambda: self() >= count, timeout=timeout)


@dataclass
class AppProcess:
    role: str  # "web", "worker" or "app" (web and jobs in one process)
    process: asyncio.subprocess.Process
    port: int | None
    log: Path

    @property
    def label(self) -> str:
        return f"{self.role} :{self.port}" if self.port else self.role


@dataclass
class Deployment:
    """The app's processes for one layout, and where its database is."""
    layout: Layout
    processes: list[AppProcess]
    pending_jobs: Callable[[], Awaitable[int]]  # webhook and validate jobs queued or running
    postmaster: int | None
    closers: list[Callable[[], object]] = field(default_factory=list)

    @property
    def web_ports(self) -> list[int]:
        return [p.port for p in self.processes if p.port]

    def cpu(self) -> dict[str, float]:
        readings = {p.label: process_cpu(p.process.pid) for p in self.processes}
        if self.postmaster:
            readings["postgres"] = postgres_cpu_seconds(self.postmaster)
        readings["harness"] = time.process_time()
        return readings


def app_env(data_dir: Path, key: str, fake: FakeGitHub, keys: dict[str, str], **extra: str) -> dict[str, str]:
    return {**os.environ, "DATA_DIR": str(data_dir), "APP_ID": str(APP_ID), "PRIVATE_KEY": key,
            "WEBHOOK_SECRET": SECRET, "GITHUB_API_URL": fake.api_url, "GITHUB_URL": fake.base_url,
            "LOG_LEVEL": "WARNING", "WORKER_CONCURRENCY": "32", **keys, **extra}


async def spawn(role: str, args: list[str], env: dict[str, str], port: int | None) -> AppProcess:
    data_dir = Path(env["DATA_DIR"])
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir.parent / f"{data_dir.name}.log"
    command = [sys.executable, "-m", "bot", *args]
    if os.environ.get("BENCH_PROFILE"):  # BENCH_PROFILE=/tmp/p: cProfile of each app process, /tmp/p.<its DATA_DIR>
        command = [sys.executable, "-m", "cProfile", "-o", f"{os.environ['BENCH_PROFILE']}.{data_dir.name}",
                   "-m", "bot", *args]
    if os.environ.get("BENCH_WRAP"):  # e.g. BENCH_WRAP="py-spy record -f raw -o /tmp/s.txt --" (one app process)
        command = os.environ["BENCH_WRAP"].split() + command
    with log.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(*command, cwd=data_dir, env=env, stdout=sink, stderr=sink)
    return AppProcess(role, process, port, log)


async def wait_for_log(app: AppProcess, words: str, seconds: float) -> None:
    """Until the process's log shows `words` (the worker has no HTTP port to ask), or it exits."""
    give_up = time.monotonic() + seconds
    while words not in app.log.read_text(errors="replace"):
        if app.process.returncode is not None or time.monotonic() > give_up:
            raise RuntimeError(f"{app.label} did not start:\n{app.log.read_text(errors='replace')[-3000:]}")
        await asyncio.sleep(0.05)


async def deploy(layout: Layout, root: Path, fake: FakeGitHub, key: str,
                 cluster: PostgresCluster | None) -> Deployment:
    keys = {"ENCRYPTION_KEY": Fernet.generate_key().decode(), "JWT_SECRET_KEY": secrets.token_urlsafe(48)}
    closers: list[Callable[[], object]] = []
    if layout.postgres:
        assert cluster is not None
        url = cluster.create_database()
        migrate = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "migrate", cwd=root,
            env=app_env(root / "migrate", key, fake, keys, DATABASE_URL=url),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        output, _ = await migrate.communicate()
        if migrate.returncode:
            raise RuntimeError(f"codegenapp migrate failed:\n{output.decode(errors='replace')}")
        connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
        if os.environ.get("BENCH_PG_TABLES"):
            async def tables() -> None:
                for row in await connection.fetch(
                        "SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del, idx_scan, seq_scan "
                        "FROM pg_stat_user_tables WHERE n_tup_ins + n_tup_upd > 0 ORDER BY n_tup_ins + n_tup_upd DESC"):
                    print("   ", dict(row))
                for row in await connection.fetch(
                        "SELECT relname, indexrelname, idx_scan, idx_tup_read FROM pg_stat_user_indexes "
                        "ORDER BY relname, indexrelname"):
                    print("     ", dict(row))
            closers.append(tables)
        closers.append(connection.close)
        if os.environ.get("BENCH_PG_LOG"):  # BENCH_PG_LOG=/tmp/l: the server's log of every statement and its duration
            await connection.execute(f"ALTER DATABASE {url.rsplit('/', 1)[1]} SET log_min_duration_statement = 0")

            async def copy_log() -> None:
                shutil.copy(cluster.root / "log", f"{os.environ['BENCH_PG_LOG']}.{layout.name}")
            closers.append(copy_log)

        async def pending_jobs() -> int:
            return await connection.fetchval(PENDING_JOBS)
        postmaster = int((cluster.data / "postmaster.pid").read_text().split()[0])
        extra = {"DATABASE_URL": url}
    else:
        database = root / "web-0" / "codegenapp.db"

        async def pending_jobs() -> int:
            with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
                return connection.execute(PENDING_JOBS).fetchone()[0]
        postmaster = None
        extra = {}

    processes: list[AppProcess] = []
    deployment = Deployment(layout, processes, pending_jobs, postmaster, closers)
    serve = ["serve"] if not layout.workers else ["serve", "--no-worker"]
    try:
        for i in range(layout.webs):
            port = free_port()
            processes.append(await spawn("web" if layout.workers else "app", serve,
                                         app_env(root / f"web-{i}", key, fake, keys, PORT=str(port), **extra), port))
        for i in range(layout.workers):
            # INFO for the line that says it is running (it has no port to ask); at INFO it also logs a line
            # per validation and per new token: tens of microseconds against milliseconds per delivery
            processes.append(await spawn("worker", ["worker"],
                                         app_env(root / f"worker-{i}", key, fake, keys, LOG_LEVEL="INFO", **extra),
                                         None))
        async with aiohttp.ClientSession() as session:
            for app in processes:
                if app.port and not await wait_until_healthy(session, f"http://{HOST}:{app.port}", seconds=30):
                    raise RuntimeError(f"{app.label} did not start:\n{app.log.read_text(errors='replace')[-3000:]}")
                if not app.port:
                    await wait_for_log(app, "worker running", seconds=30)
    except BaseException:
        await stop(deployment)
        raise
    return deployment


async def stop(deployment: Deployment) -> None:
    for app in deployment.processes:
        if app.process.returncode is None:  # a profiler writes its output on SIGINT, not SIGTERM
            app.process.send_signal(signal.SIGINT if os.environ.get("BENCH_WRAP") else signal.SIGTERM)
    for app in deployment.processes:
        try:
            await asyncio.wait_for(app.process.wait(), 20)
        except TimeoutError:
            app.process.kill()
            await app.process.wait()
    for close in deployment.closers:
        await close()  # type: ignore[misc]


# --- one phase: send, wait for the app to finish, read the clocks ------------------------------------------------

@dataclass
class Phase:
    name: str
    n: int
    concurrency: int
    idle: bool = False
    seconds: float | None = None  # the idle phase stops sending after this long (a polling worker is slow)


@dataclass
class PhaseResult:
    phase: Phase
    sent: int
    ack: list[float]
    to_check_run: list[float]
    rate: float | None
    sending: float
    finished: float
    errors: int
    cpu_sending: dict[str, float]
    cpu_to_end: dict[str, float]
    unfinished: str | None  # why the phase ended before the app had finished its work


class Bench:
    def __init__(self, fake: FakeGitHub, repos: list[Repository], wait: float) -> None:
        """`wait`: how long a phase waits, after its last 202, for the app to finish the deliveries' work."""
        self.fake = fake
        self.repos = repos
        self.wait = wait
        self.delivered = 0  # deliveries sent so far, every layout: each has a head sha of its own
        self.check_runs = Arrivals(fake, lambda c: c.method == "POST" and c.path.endswith("/check-runs"))
        self.completions = Arrivals(fake, lambda c: c.method == "PATCH" and "/check-runs/" in c.path)

    async def until_done(self, deployment: Deployment, expected: int, timeout: float) -> None:
        """Until each delivery so far has had its validation's completing PATCH and no job is left."""
        await self.completions.wait_for(expected, timeout)
        give_up = time.monotonic() + timeout
        while await deployment.pending_jobs():
            if time.monotonic() > give_up:
                raise RuntimeError(f"jobs still queued or running {timeout} s after the deliveries")
            await asyncio.sleep(0.005)

    async def run(self, deployment: Deployment, phase: Phase) -> PhaseResult:
        first = self.delivered
        requests = signed_deliveries(self.fake, self.repos, phase.n, HOST, first=first)
        calls_before = len(self.fake.calls)
        baseline = {"check_runs": self.check_runs(), "completions": self.completions()}
        ack: list[float] = []
        sent_at: dict[str, float] = {}
        errors = 0

        def answered(sha: object, sent: float, at: float, status: int) -> None:
            nonlocal errors
            sent_at[sha] = sent  # type: ignore[index]
            ack.append(at - sent)
            errors += status != 202

        async def until_idle(_sha: object) -> None:
            await self.until_done(deployment, baseline["completions"] + len(ack), timeout=30)

        began = 0.0

        def in_time(items: list[tuple[str, bytes]]) -> Iterator[tuple[str, bytes]]:
            for item in items:
                if phase.seconds is not None and time.monotonic() - began > phase.seconds:
                    return
                yield item

        gc.collect()
        gc.freeze()  # as bench/ingest.py: no full collections of the fake's calls while the clock runs
        before = deployment.cpu()
        began = time.monotonic()
        await send_all(HOST, deployment.web_ports, in_time(requests), phase.concurrency, answered,
                       before_next=until_idle if phase.idle else None)
        sending = time.monotonic() - began
        while_sending = deployment.cpu()
        sent = len(ack)
        unfinished = None
        try:
            await self.check_runs.wait_for(baseline["check_runs"] + sent, timeout=self.wait)
            await self.until_done(deployment, baseline["completions"] + sent, timeout=self.wait)
        except (TimeoutError, RuntimeError) as exc:  # print what was measured; the next phase starts loaded
            unfinished = (f"NOT all done {self.wait:.0f} s after the last 202 ({exc.__class__.__name__}): "
                          f"{self.check_runs() - baseline['check_runs']} in_progress and "
                          f"{self.completions() - baseline['completions']} completed check runs of {sent}")
        finished = time.monotonic() - began
        after = deployment.cpu()
        self.delivered = first + phase.n

        arrivals = check_run_arrivals(self.fake.calls[calls_before:])
        to_check_run = [arrivals[sha] - sent_at[sha] for sha in sent_at if sha in arrivals]
        last = max((arrivals[sha] for sha in sent_at if sha in arrivals), default=None)
        rate = sent / (last - began) if last and not phase.idle else None
        return PhaseResult(phase, sent, ack, to_check_run, rate, sending, finished, errors,
                           {k: while_sending[k] - before[k] for k in before},
                           {k: after[k] - before[k] for k in before}, unfinished)


# --- output -------------------------------------------------------------------------------------------------

def ms(value: float) -> str:
    return f"{value * 1000:7.2f}"


def print_phase(result: PhaseResult) -> None:
    phase = result.phase
    kind = {"idle": "one at a time, each once the app finished the previous one",
            "loaded": "the next delivery on each 202: the app is never idle"}["idle" if phase.idle else "loaded"]
    print(f"  {phase.name}: {result.sent} deliveries, C={phase.concurrency} ({kind})")
    print(f"    ack                   p50 {ms(percentile(result.ack, 50))} ms  p99 {ms(percentile(result.ack, 99))} ms")
    if result.to_check_run:
        values = result.to_check_run
        print(f"    event -> in_progress  p50 {ms(percentile(values, 50))} ms  p99 {ms(percentile(values, 99))} ms  "
              f"max {ms(max(values))} ms  ({len(values)} of {result.sent})")
    rate = f"{result.rate:,.0f} deliveries/s (first send -> last in_progress); " if result.rate else ""
    print(f"    {rate}sending {result.sending:.2f} s, all done (validations too) at {result.finished:.2f} s; "
          f"errors {result.errors}")
    if result.unfinished:
        print(f"    {result.unfinished}")
    if phase.idle:
        return  # between deliveries the bench asks the database whether the app is done: no CPU per delivery
    print("    CPU ms/delivery        while sending   to the end      (CPU s to the end)")
    app_keys = [k for k in result.cpu_to_end if k not in ("postgres", "harness")]
    rows = [(k, k) for k in app_keys]
    rows.append(("app total", app_keys))
    rows += [(k, [k]) for k in ("postgres", "harness") if k in result.cpu_to_end]
    for label, keys in rows:
        keys = [keys] if isinstance(keys, str) else keys
        sending = sum(result.cpu_sending[k] for k in keys)
        to_end = sum(result.cpu_to_end[k] for k in keys)
        name = "harness (load gen + fake)" if label == "harness" else label
        print(f"      {name:<25} {ms_per_delivery(sending, result.sent):8.3f}      "
              f"{ms_per_delivery(to_end, result.sent):8.3f}       ({to_end:.2f} s)")


def role_ms(result: PhaseResult, window: str = "cpu_to_end") -> dict[str, float]:
    """CPU ms per delivery of each role (web, worker, app, postgres), all its processes together."""
    readings: dict[str, float] = getattr(result, window)
    roles: dict[str, float] = {}
    for label, seconds in readings.items():
        if label != "harness":
            role = label.split()[0]
            roles[role] = roles.get(role, 0.0) + ms_per_delivery(seconds, result.sent)
    return roles


def app_and_postgres_ms(result: PhaseResult, window: str) -> tuple[float, float]:
    roles = role_ms(result, window)
    app = sum(v for k, v in roles.items() if k != "postgres")
    return app, app + roles.get("postgres", 0.0)


def verdict(ok: bool) -> str:
    return "OK" if ok else "MISSED"


def print_layout(deployment: Deployment, results: dict[str, PhaseResult], rss: dict[str, float],
                 sqlite_ms: dict[str, float] | None, calls: list) -> None:
    layout = deployment.layout
    print("    peak RSS: " + ", ".join(f"{label} {mb:.0f} MB" for label, mb in rss.items()))
    loaded = results.get("C=32")
    idle = results.get("idle")
    targets = []
    if loaded:
        app_ms, with_pg = app_and_postgres_ms(loaded, "cpu_sending")
        if layout.postgres:
            limit = POSTGRES_CPU_FACTOR * SQLITE_CPU_TARGET_MS
            targets.append(f"C=32 CPU/delivery while sending, app + postgres {with_pg:.2f} ms <= {limit:.2f} ms "
                           f"({POSTGRES_CPU_FACTOR}x the SQLite target) {verdict(with_pg <= limit)}; "
                           f"app alone {app_ms:.2f} ms {verdict(app_ms <= limit)}")
            if sqlite_ms:
                ratios = {window: app_and_postgres_ms(loaded, window)[1] / sqlite_ms[window] for window in sqlite_ms}
                targets.append(f"C=32 app + postgres against SQLite in this run: while sending "
                               f"{ratios['cpu_sending']:.2f}x, to the end (all the same work) "
                               f"{ratios['cpu_to_end']:.2f}x <= {POSTGRES_CPU_FACTOR}x "
                               f"{verdict(ratios['cpu_to_end'] <= POSTGRES_CPU_FACTOR)}")
        else:
            targets.append(f"C=32 server CPU/delivery while sending {app_ms:.2f} ms <= {SQLITE_CPU_TARGET_MS} ms "
                           f"{verdict(app_ms <= SQLITE_CPU_TARGET_MS)}")
        lag = loaded.finished - loaded.sending
        if lag > 1:
            targets.append(f"  (the app finished {lag:.1f} s after the last 202: 'while sending' leaves out the work "
                           "it put off, 'to the end' has it)")
    if idle and idle.to_check_run:
        p50 = percentile(idle.to_check_run, 50) * 1000
        targets.append(f"idle C=1 event -> in_progress p50 {p50:.2f} ms <= {IDLE_P50_TARGET_MS} ms "
                       f"{verdict(p50 <= IDLE_P50_TARGET_MS)}")
    if results.get("C=1") and results["C=1"].to_check_run:
        p50 = percentile(results["C=1"].to_check_run, 50) * 1000
        targets.append(f"(loaded C=1 p50 {p50:.2f} ms, against the same {IDLE_P50_TARGET_MS} ms: "
                       f"{verdict(p50 <= IDLE_P50_TARGET_MS)})")
    worst, _ = max_writes_per_minute(calls)
    targets.append(f"most writes by one installation in 60 s {worst} (limit 80) {verdict(worst <= 80)}")
    print("    targets:")
    for line in targets:
        print(f"      {line}")
    if loaded:
        roles = role_ms(loaded)
        counts = {"postgres": 1} if layout.postgres else {}
        counts = {**{role: sum(1 for p in deployment.processes if p.role == role) for role in roles
                     if role != "postgres"}, **counts}
        print("    scaling (C=32, CPU per delivery to the end, validations included):")
        for line in scaling_lines(roles, counts, ms_per_delivery(loaded.cpu_to_end["harness"], loaded.sent),
                                  more_processes=layout.postgres):
            print(f"    {line}")


def print_summary(measured: dict[str, dict[str, PhaseResult]]) -> None:
    print("== summary (ms; CPU per delivery at C=32: while sending / to the end)")
    print(f"  {'layout':<16} {'C=32 /s':>8} {'C=32 p50/p99':>17} {'C=1 p50':>8} {'idle p50':>9} "
          f"{'app CPU':>13} {'postgres':>11} {'harness':>11}")
    for name, results in measured.items():
        loaded, single, idle = results.get("C=32"), results.get("C=1"), results.get("idle")

        def p50(result: PhaseResult | None) -> str:
            return f"{percentile(result.to_check_run, 50) * 1000:.1f}" if result and result.to_check_run else "-"

        def cpu(keys: Callable[[str], bool]) -> str:
            if not loaded:
                return "-"
            windows = [sum(v for k, v in getattr(loaded, w).items() if keys(k)) for w in ("cpu_sending", "cpu_to_end")]
            return "/".join(f"{ms_per_delivery(v, loaded.sent):.2f}" for v in windows)

        latency = (f"{percentile(loaded.to_check_run, 50) * 1000:.0f}/{percentile(loaded.to_check_run, 99) * 1000:.0f}"
                   if loaded and loaded.to_check_run else "-")
        print(f"  {name:<16} {f'{loaded.rate:,.0f}' if loaded and loaded.rate else '-':>8} {latency:>17} "
              f"{p50(single):>8} {p50(idle):>9} {cpu(lambda k: k not in ('postgres', 'harness')):>13} "
              f"{cpu(lambda k: k == 'postgres') if any('postgres' in r.cpu_to_end for r in results.values()) else '-':>11} "
              f"{cpu(lambda k: k == 'harness'):>11}")


def print_requests(calls: list[Call], deliveries: int) -> None:
    """The app's requests to GitHub per delivery, by operation: a change in what one delivery costs the app
    shows here as a count, where its CPU figure moves by no more than the machine's noise."""
    by_operation = Counter(call.operation or f"{call.method} {call.path}" for call in calls)
    print(f"    GitHub requests per delivery: {len(calls) / max(deliveries, 1):.2f}")
    for operation, count in by_operation.most_common():
        print(f"      {count / max(deliveries, 1):6.2f}  {operation}")


async def run_layout(layout: Layout, phases: list[Phase], bench: Bench, key: str, cluster: PostgresCluster | None,
                     sqlite_ms: dict[str, float] | None) -> dict[str, PhaseResult]:
    root = Path(tempfile.mkdtemp(prefix=f"codegenapp-scale-{layout.name}-", dir=os.environ.get("BENCH_DIR")))
    deployment = None
    try:
        started = time.monotonic()
        deployment = await deploy(layout, root, bench.fake, key, cluster)
        calls_before = len(bench.fake.calls)
        print(f"== {layout.name}: {layout.describe()} (started in {time.monotonic() - started:.1f} s)", flush=True)
        results = {}
        for phase in phases:
            results[phase.name] = await bench.run(deployment, phase)
            print_phase(results[phase.name])
        rss = {p.label: peak_rss_mb(p.process.pid) for p in deployment.processes}
        calls = bench.fake.calls[calls_before:]
        print_layout(deployment, results, rss, sqlite_ms, calls)
        print_requests(calls, sum(result.sent for result in results.values()))
        sys.stdout.flush()
        return results
    finally:
        if deployment is not None:
            await stop(deployment)
        shutil.rmtree(root, ignore_errors=True)


async def run(layouts: list[Layout], phases: list[Phase], installations: int, wait: float) -> None:
    fake, key, repos = await start_fake(installations)
    cluster = None
    try:
        if any(layout.postgres for layout in layouts):
            bin_dir = server_bin_dir()
            if bin_dir is None:
                raise SystemExit("PostgreSQL server binaries (initdb) not found: install postgresql")
            cluster = PostgresCluster(bin_dir)
            cluster.start()
        print(f"{installations} installations; phases: " + "; ".join(
            f"{p.name} n={p.n}" + (f" (at most {p.seconds:.0f} s)" if p.seconds else "") for p in phases)
              + f"; load average {os.getloadavg()[0]:.2f} at the start (the machine has {os.cpu_count()} cores)")
        bench = Bench(fake, repos, wait)
        sqlite_ms = None
        measured = {}
        for layout in layouts:
            measured[layout.name] = results = await run_layout(layout, phases, bench, key, cluster, sqlite_ms)
            if not layout.postgres and "C=32" in results:
                sqlite_ms = {window: app_and_postgres_ms(results["C=32"], window)[0]
                             for window in ("cpu_sending", "cpu_to_end")}
        print_summary(measured)
    finally:
        if cluster is not None:
            cluster.stop()
        await fake.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=2000, help="deliveries at C=32 (default 2000)")
    parser.add_argument("--n1", type=int, default=300, help="deliveries at C=1, loaded (default 300; 0: skip)")
    parser.add_argument("--idle", type=int, default=50,
                        help="deliveries at C=1 on an idle app (default 50, at most --idle-seconds; 0: skip)")
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--installations", type=int, default=200)
    parser.add_argument("--wait", type=float, default=90.0,
                        help="how long each phase waits, after its last 202, for the app to finish (default 90 s)")
    parser.add_argument("--layouts", default=",".join(LAYOUTS),
                        help=f"comma-separated, of {', '.join(LAYOUTS)} (default: all)")
    args = parser.parse_args()
    unknown = [name for name in args.layouts.split(",") if name not in LAYOUTS]
    if unknown:
        parser.error(f"unknown layouts {unknown}; choose from {list(LAYOUTS)}")
    phases = [Phase("C=32", args.n, 32)]
    if args.n1:
        phases.append(Phase("C=1", args.n1, 1))
    if args.idle:
        phases.append(Phase("idle", args.idle, 1, idle=True, seconds=args.idle_seconds))
    asyncio.run(run([LAYOUTS[name] for name in args.layouts.split(",")], phases, args.installations, args.wait))


if __name__ == "__main__":
    main()
