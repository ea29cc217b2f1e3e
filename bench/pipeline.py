"""Validation pipeline benchmark: a signed `pull_request` event -> the completed check run, for real.

Starts the recording fake GitHub in this process (real git repositories served over smart HTTP) and
`codegenapp serve` as a subprocess (SQLite and everything else in a temporary DATA_DIR; the real
bubblewrap sandbox, mirrors, checkouts and setup snapshots), then measures three targets:

1. **Pipeline overhead** (target <= 1.10x). A small Python package (`widgets/`: six modules; four test
   files, `python3 -m unittest` ~1 s of CPU) with a cheap setup (`tools/gen_version.py`, writes an
   untracked module) and two validate steps (`compileall`, `unittest`). *By hand*: `git clone` from
   the fake's smart HTTP into a fresh directory, `git checkout` of the head, then the same setup and
   validate commands with plain subprocesses (`/bin/sh -c`, the sandbox's PATH and environment - so
   /usr/bin/python3 on both sides - no sandbox). *Pipeline*: from sending the signed event to the
   arrival of the PATCH that completes the check run. *Cold*: the first validation of a repository
   (its mirror is created and fetched whole, no setup snapshot yet), once on each of N repositories;
   *warm*: N pushes to one of them (`synchronize`: an incremental fetch, setup restored from the
   snapshot). Hand and pipeline runs alternate (which goes first alternates too); medians, per step,
   with the steps' durations as the app stored them and "outside the steps" = total - their sum.
2. **Warm snapshot vs cold** (target <= 0.3x). A repository whose setup builds a real venv
   (`/usr/bin/python3 -m venv`, with pip: ~1,700 files), vendors ~2,000 modules into it, compiles
   them, and sleeps until the setup has taken >= 5.5 s (offline); `cache_key: [requirements.txt]`. The
   first validation runs setup and saves the snapshot (cold); then N pushes each restore it (warm).
   Event -> completed check run, cold vs the median warm, and the ratio.
3. **Event -> first validate command running** (target <= 1 s), on those warm runs (mirror and
   snapshot warm): the first validate step is `echo first-command-started-at $(date +%s.%N)`; its stored
   output is compared with the wall-clock time at which the event was sent (CLOCK_REALTIME is the same
   inside the sandbox). p50 and max over the N warm runs, with where the time went.

Each repository has its own installation, so none comes near GitHub's 80 writes a minute (the pacing
would otherwise add waits that are not pipeline overhead; the most writes any installation made in
60 s is printed). Before its first validation each repository gets a `pull_request.labeled` (the app
records the project; nothing is validated) and a `check_run.rerequested` for a sha that is not the
PR's head (the app fetches the PR with a new installation token and starts nothing): "cold" is about
the mirror and the snapshot, not the first event of a never-seen installation. Step durations and
outputs are read from the app's SQLite database (read-only); CPU from /proc.

The filesystem matters: on ext4 *without a journal* (this VM's root) creating files right after many
were deleted is slow (see bench/README.md), which hits snapshot restores; the filesystem of DATA_DIR is
printed, and `--dir /dev/shm` puts DATA_DIR and the clones by hand on tmpfs to take the disk out.

    .venv/bin/python bench/pipeline.py [-n 5] [--dir /dev/shm] [--keep] [--profile /tmp/server.prof]

`--profile` runs the server under cProfile (written when the server exits). Requires bubblewrap and
root or unprivileged user namespaces, like the app itself. About 40 s with -n 5 (plus slow-disk time).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.ingest import free_port, max_writes_per_minute, wait_until_healthy  # noqa: E402

from bot.config import WEBHOOK_PATH  # noqa: E402
from tests.fakes.fixtures import generate_private_key_pem  # noqa: E402
from tests.fakes.github import FakeGitHub  # noqa: E402
from tests.pull_requests import Scenario, open_pull_request  # noqa: E402
from tests.webhook_sender import github_headers  # noqa: E402

SECRET = "bench-webhook-secret"
APP_ID = 12345
# What the sandbox gives a command (SANDBOX_PATH in pipeline/sandbox/bwrap.py), for the runs by hand: the same
# python3 (/usr/bin).
SANDBOX_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TIMEOUT = 120.0

# ------------------------------------------------------------------------------ the projects

WIDGETS_CONFIG = """\
setup:
  - python3 tools/gen_version.py
cache_key: [requirements.txt]
validate:
  - name: compile
    run: python3 -m compileall -q widgets tests
  - name: unit tests
    run: python3 -m unittest discover -s tests -t . -q
"""

WIDGETS_FILES = {
    "README.md": "# widgets\n\nA small inventory and pricing library.\n",
    "requirements.txt": "# no third-party dependencies\n",
    "setup.cfg": "[metadata]\nname = widgets\nversion = attr: widgets._version.VERSION\n",
    "tools/gen_version.py": '''\
"""Writes widgets/_version.py (a build step: the file is not tracked)."""
import pathlib
import subprocess

pathlib.Path("widgets/_version.py").write_text('VERSION = "1.4.0"\\nBUILD = "bench"\\n')
subprocess.run(["python3", "-c", "import widgets, sys; sys.exit(widgets.VERSION != '1.4.0')"], check=True)
''',
    "widgets/__init__.py": '''\
"""widgets: inventory, pricing and geometry of widgets."""
from widgets._version import VERSION
from widgets.geometry import Box, volume
from widgets.inventory import Inventory
from widgets.pricing import price

REVISION = 0
__all__ = ["VERSION", "Box", "volume", "Inventory", "price", "REVISION"]
''',
    "widgets/geometry.py": '''\
from dataclasses import dataclass
import math


@dataclass(frozen=True)
class Box:
    width: float
    height: float
    depth: float

    def volume(self) -> float:
        return self.width * self.height * self.depth

    def surface(self) -> float:
        w, h, d = self.width, self.height, self.depth
        return 2 * (w * h + h * d + w * d)

    def diagonal(self) -> float:
        return math.sqrt(self.width ** 2 + self.height ** 2 + self.depth ** 2)


def volume(boxes) -> float:
    return sum(b.volume() for b in boxes)


def pack(boxes, capacity: float):
    """First-fit decreasing bin packing by volume."""
    bins: list[list[Box]] = []
    free: list[float] = []
    for box in sorted(boxes, key=lambda b: b.volume(), reverse=True):
        for i, room in enumerate(free):
            if box.volume() <= room:
                bins[i].append(box)
                free[i] -= box.volume()
                break
        else:
            bins.append([box])
            free.append(capacity - box.volume())
    return bins
''',
    "widgets/inventory.py": '''\
from collections import Counter


class Inventory:
    def __init__(self):
        self._stock = Counter()

    def add(self, sku: str, count: int = 1) -> None:
        if count <= 0:
            raise ValueError("count must be positive")
        self._stock[sku] += count

    def remove(self, sku: str, count: int = 1) -> None:
        if self._stock[sku] < count:
            raise KeyError(sku)
        self._stock[sku] -= count
        if not self._stock[sku]:
            del self._stock[sku]

    def count(self, sku: str) -> int:
        return self._stock[sku]

    def total(self) -> int:
        return sum(self._stock.values())

    def top(self, n: int):
        return self._stock.most_common(n)
''',
    "widgets/pricing.py": '''\
from decimal import Decimal, ROUND_HALF_UP

TIERS = [(100, Decimal("0.10")), (50, Decimal("0.05")), (10, Decimal("0.02"))]


def price(unit: Decimal, quantity: int) -> Decimal:
    discount = next((d for q, d in TIERS if quantity >= q), Decimal(0))
    total = unit * quantity * (1 - discount)
    return total.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
''',
    "widgets/textutil.py": '''\
import re
import unicodedata


def slug(text: str) -> str:
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def wrap(text: str, width: int):
    line, lines = "", []
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return lines + ([line] if line else [])
''',
    "widgets/numbers.py": '''\
def primes_below(n: int):
    sieve = bytearray([1]) * n
    sieve[0:2] = b"\\x00\\x00"
    for i in range(2, int(n ** 0.5) + 1):
        if sieve[i]:
            sieve[i * i::i] = bytearray(len(range(i * i, n, i)))
    return [i for i, flag in enumerate(sieve) if flag]


def collatz_length(n: int) -> int:
    steps = 1
    while n != 1:
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        steps += 1
    return steps
''',
    "tests/__init__.py": "",
    "tests/test_geometry.py": '''\
import random
import unittest

from widgets.geometry import Box, pack, volume


class GeometryTest(unittest.TestCase):
    def test_volume(self):
        self.assertEqual(Box(1, 2, 3).volume(), 6)
        self.assertEqual(volume([Box(1, 1, 1)] * 4), 4)

    def test_surface_and_diagonal(self):
        self.assertEqual(Box(1, 1, 1).surface(), 6)
        self.assertAlmostEqual(Box(1, 2, 2).diagonal(), 3)

    def test_pack(self):
        rnd = random.Random(7)
        boxes = [Box(rnd.random(), rnd.random(), rnd.random()) for _ in range(3000)]
        bins = pack(boxes, 1.0)
        self.assertAlmostEqual(sum(volume(b) for b in bins), volume(boxes))
        self.assertTrue(all(volume(b) <= 1.0 + 1e-9 for b in bins))
''',
    "tests/test_inventory.py": '''\
import unittest

from widgets.inventory import Inventory


class InventoryTest(unittest.TestCase):
    def test_add_remove(self):
        inv = Inventory()
        for i in range(20000):
            inv.add(f"sku{i % 97}", 1 + i % 3)
        self.assertEqual(inv.total(), sum(1 + i % 3 for i in range(20000)))
        inv.remove("sku1", inv.count("sku1"))
        self.assertEqual(inv.count("sku1"), 0)

    def test_errors(self):
        inv = Inventory()
        with self.assertRaises(ValueError):
            inv.add("x", 0)
        with self.assertRaises(KeyError):
            inv.remove("x")
''',
    "tests/test_pricing.py": '''\
import unittest
from decimal import Decimal

from widgets.pricing import price
from widgets.textutil import slug, wrap


class PricingTest(unittest.TestCase):
    def test_tiers(self):
        self.assertEqual(price(Decimal("1.00"), 5), Decimal("5.00"))
        self.assertEqual(price(Decimal("1.00"), 10), Decimal("9.80"))
        self.assertEqual(price(Decimal("1.00"), 100), Decimal("90.00"))

    def test_many(self):
        total = sum(price(Decimal("0.37"), q) for q in range(1, 20000))
        self.assertGreater(total, 0)

    def test_text(self):
        self.assertEqual(slug("Héllo, Wörld!"), "hello-world")
        self.assertEqual(wrap("a bb ccc dddd", 6), ["a bb", "ccc", "dddd"])
''',
    "tests/test_numbers.py": '''\
import unittest

from widgets.numbers import collatz_length, primes_below


class NumbersTest(unittest.TestCase):
    def test_primes(self):
        primes = primes_below(2_000_000)
        self.assertEqual(len(primes), 148933)

    def test_collatz(self):
        longest = max(range(1, 150_000), key=collatz_length)
        self.assertEqual(longest, 142587)
''',
}

SERVICE_CONFIG = """\
setup:
  - python3 tools/install_deps.py --min-seconds 5.5
cache_key: [requirements.txt]
validate:
  - name: clock
    run: echo "first-command-started-at $(date +%s.%N)"
  - name: unit tests
    run: .venv/bin/python -m unittest discover -s tests -t . -q
"""

SERVICE_FILES = {
    "README.md": "# service\n",
    "requirements.txt": "acme-deps==40.50\n",
    "tools/install_deps.py": '''\
"""A setup as `python3 -m venv .venv && .venv/bin/pip install -r requirements.txt` would be, offline:
a real venv (with pip), ~2,000 vendored modules compiled to .pyc, then a sleep up to --min-seconds."""
import argparse
import pathlib
import subprocess
import sys
import time

start = time.monotonic()
parser = argparse.ArgumentParser()
parser.add_argument("--min-seconds", type=float, default=0)
args = parser.parse_args()
subprocess.run([sys.executable, "-m", "venv", ".venv"], check=True)
site = next(pathlib.Path(".venv/lib").glob("python3*/site-packages"))
for i in range(40):
    package = site / f"acme_dep{i}"
    package.mkdir()
    (package / "__init__.py").write_text(f"NAME = 'acme_dep{i}'\\n")
    for j in range(50):
        body = "".join(f"def f{k}(x):\\n    return x * {k} + {i * 50 + j}\\n\\n" for k in range(12))
        (package / f"mod{j}.py").write_text(f"VALUE = {i * 50 + j}\\n\\n" + body)
subprocess.run([".venv/bin/python", "-m", "compileall", "-q", *map(str, site.glob("acme_dep*"))], check=True)
time.sleep(max(0.0, args.min_seconds - (time.monotonic() - start)))
''',
    "app/__init__.py": "",
    "app/core.py": "import acme_dep3.mod7\n\n\ndef answer():\n    return acme_dep3.mod7.VALUE\n",
    "tests/__init__.py": "",
    "tests/test_core.py": '''\
import unittest

from app.core import answer


class CoreTest(unittest.TestCase):
    def test_answer(self):
        self.assertEqual(answer(), 157)

    def test_all_deps_import(self):
        import importlib
        for i in range(0, 40, 7):
            self.assertEqual(importlib.import_module(f"acme_dep{i}.mod1").VALUE, i * 50 + 1)
''',
}

# ----------------------------------------------------------------------------------- helpers


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def verdict(ok: bool) -> str:
    return "OK" if ok else "MISSED"


def steps_of(config: str, key: str) -> list[tuple[str, str]]:
    """(name, command) of the config's setup or validate list (names as in the YAML, setup: "setup")."""
    import yaml
    steps = []
    for item in yaml.safe_load(config)[key]:
        if isinstance(item, str):
            steps.append(("setup" if key == "setup" else item.split()[0], item))
        else:
            steps.append((item["name"], item["run"]))
    return steps


def process_cpu(pid: int) -> tuple[float, float]:
    """(own CPU seconds, CPU seconds of waited-for descendants) of a process. The sandboxed commands do
    not reliably show up in the second figure, so only the first is used per validation."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick, (int(fields[13]) + int(fields[14])) / tick


def steal_seconds() -> float:
    values = Path("/proc/stat").read_text().splitlines()[0].split()
    return int(values[8]) / os.sysconf("SC_CLK_TCK")


def others_cpu() -> dict[int, tuple[str, float]]:
    """pid -> (start time, CPU seconds including reaped children) of every process that is neither this
    benchmark nor one of its descendants (the server, its sandboxes, git): other work on the machine."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    procs: dict[int, tuple[str, float]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        procs[pid] = (fields[19], sum(int(f) for f in fields[11:15]) / tick)
    ours = {os.getpid()}
    for pid in parents:
        chain, p = [], pid
        while p > 1 and p not in ours and p in parents and len(chain) < 64:
            chain.append(p)
            p = parents[p]
        if p in ours:
            ours.update(chain)
    return {pid: value for pid, value in procs.items() if pid not in ours}


def others_used(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> float:
    """CPU seconds other processes used between two `others_cpu()` samples (processes that started and
    ended in between count through their parents' reaped-children time)."""
    total = 0.0
    for pid, (start, cpu) in after.items():
        earlier = before.get(pid)
        total += cpu - earlier[1] if earlier is not None and earlier[0] == start else cpu
    return total


def filesystem_note(path: Path) -> str:
    """The filesystem `path` is on, and a warning when it is ext4 without a journal: there, allocating an
    inode skips, one by one, every inode of the group deleted in the last 60 s (360 s while its inode
    table block is dirty) - ext4's recently_deleted() in fs/ext4/ialloc.c, only checked without a journal -
    so creating thousands of files right after deleting thousands (a restore after the previous
    workspace was removed) costs ~0.2-0.7 ms a file instead of ~25 us."""
    st = os.stat(path)
    best: tuple[str, str, str] | None = None
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[2] != f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}":
            continue
        mount_point, rest = fields[4], fields[fields.index("-") + 1:]
        if str(path).startswith(mount_point) and (best is None or len(mount_point) > len(best[0])):
            best = (mount_point, rest[0], rest[1])
    if best is None:
        return "unknown filesystem"
    mount_point, fstype, source = best
    note = f"{fstype} ({source} on {mount_point})"
    device = os.path.basename(source)
    if fstype == "ext4" and Path(f"/proc/fs/ext4/{device}").is_dir() \
            and not any(Path("/proc/fs/jbd2").glob(f"{device}-*")):
        note += (" WITHOUT A JOURNAL: creating files right after deleting many is slow there (ext4's "
                 "recently_deleted() scan), which slows restores and setups; see bench/README.md")
    return note


def own_cpu() -> float:
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


@dataclass
class Repo:
    scenario: Scenario
    installation_id: int
    pushes: int = 0

    @property
    def full_name(self) -> str:
        return self.scenario.full_name

    def payload(self, action: str) -> dict[str, Any]:
        payload = self.scenario.payload(action)
        payload["installation"]["id"] = self.installation_id
        return payload


@dataclass
class PipelineRun:
    sent: float  # time.monotonic(), the clock of the fake's Call.at
    sent_wall: float  # time.time(), the clock `date` prints inside the sandbox
    completed: float  # arrival of the PATCH completing the check run
    stages: dict[str, float]  # what the fake saw -> time.monotonic()
    steps: dict[str, float]  # "stage/name" (checkout, setup, validate/<name>) -> seconds, from the stored results
    restored: bool
    server_cpu: float  # the app's own CPU seconds for this validation (until every job finished)
    first_command_wall: float | None = None

    @property
    def total(self) -> float:
        return self.completed - self.sent

    @property
    def outside_steps(self) -> float:
        return self.total - sum(self.steps.values())


class Bench:
    def __init__(self, fake: FakeGitHub, session: aiohttp.ClientSession, url: str, server_pid: int,
                 data_dir: Path) -> None:
        self.fake = fake
        self.session = session
        self.url = url
        self.server_pid = server_pid
        self.database = data_dir / "codegenapp.db"
        self.jobs_expected = 0
        self.work = Path(tempfile.mkdtemp(prefix="pipeline-bench-hand-", dir=data_dir.parent))
        self.next_installation = 7000

    # ---- repositories

    def new_repo(self, owner: str, name: str, files: dict[str, str], config: str) -> Repo:
        installation_id = self.next_installation
        self.next_installation += 1
        full_name = f"{owner}/{name}"
        self.fake.add_installation(installation_id, owner, repos=[full_name])
        files = {**files, "README.md": files["README.md"].replace("# ", f"# {owner}/", 1)}
        head_files = {"README.md": files["README.md"] + "\nThe PR's first change.\n"}
        scenario = open_pull_request(self.fake, config=config, base_files=files, head_files=head_files,
                                     full_name=full_name)
        return Repo(scenario, installation_id)

    def push(self, repo: Repo, path: str, text: str) -> str:
        repo.pushes += 1
        return repo.scenario.push({path: text}, message=f"push {repo.pushes}")

    # ---- the app

    async def send(self, repo: Repo, action: str, *, event: str = "pull_request",
                   payload: dict[str, Any] | None = None) -> tuple[float, float]:
        payload = payload or repo.payload(action)
        body = json.dumps(payload).encode()
        headers = github_headers(event, body, secret=SECRET, payload=payload)
        sent, sent_wall = time.monotonic(), time.time()
        async with self.session.post(self.url + WEBHOOK_PATH, data=body, headers=headers) as response:
            await response.read()
            if response.status != 202:
                raise RuntimeError(f"webhook answered {response.status}")
        return sent, sent_wall

    async def jobs_done(self) -> float:
        async with self.session.get(self.url + "/metrics") as response:
            text = await response.text()
        return sum(float(m) for m in re.findall(r'codegenapp_jobs_total\{kind="\w+",outcome="\w+"\} ([0-9.e+]+)', text))

    async def settle(self) -> None:
        """Until every job the app was given has finished (the comment, the workspace removal)."""
        deadline = time.monotonic() + TIMEOUT
        while await self.jobs_done() < self.jobs_expected:
            if time.monotonic() > deadline:
                raise TimeoutError(f"jobs did not finish: {await self.jobs_done()} of {self.jobs_expected}")
            await asyncio.sleep(0.02)

    async def until(self, predicate: Callable[[], Any], timeout: float = TIMEOUT) -> Any:
        cond = self.fake._changed  # notified after every call the fake answers
        async with cond:
            await asyncio.wait_for(cond.wait_for(predicate), timeout)
        return predicate()

    async def register(self, repo: Repo) -> None:
        """Before the first validation: the app records the project (a `pull_request.labeled`, which
        validates nothing) and creates its installation token (a `check_run.rerequested` naming the PR
        with a sha that is not its head: the app fetches the PR, with a new token, and starts nothing)."""
        await self.send(repo, "labeled")
        pr = repo.payload("labeled")
        rerequested = {"action": "rerequested", "repository": pr["repository"], "installation": pr["installation"],
                       "sender": pr["sender"],
                       "check_run": {"id": 1, "head_sha": repo.scenario.base_sha, "external_id": "",
                                     "app": {"id": APP_ID}, "pull_requests": [{"number": repo.scenario.number}]}}
        await self.send(repo, "rerequested", event="check_run", payload=rerequested)
        self.jobs_expected += 2
        await self.settle()
        if not any(c.path.endswith(f"/installations/{repo.installation_id}/access_tokens") for c in self.fake.calls):
            print(f"   (!) no installation token was created for {repo.full_name} before its first validation")

    def stored_steps(self, validation_id: str) -> list[dict[str, Any]]:
        """The validation's steps as the app stored them (exact durations and output tails); read-only."""
        with contextlib.closing(sqlite3.connect(f"file:{self.database}?mode=ro", uri=True)) as db:
            row = db.execute("SELECT test_results FROM validation_states WHERE id = ?", (validation_id,)).fetchone()
        results = row[0] if row else None
        return (json.loads(results) if isinstance(results, str) else results or {}).get("steps", [])

    async def validate(self, repo: Repo, action: str) -> PipelineRun:
        sha, full = repo.scenario.head_sha, repo.full_name
        first = len(self.fake.calls)
        earlier = set(self.fake.check_runs)
        cpu_before = process_cpu(self.server_pid)
        sent, sent_wall = await self.send(repo, action)
        self.jobs_expected += 2  # the webhook's job and the validation's

        def done() -> dict[str, Any] | None:
            return next((r for r in self.fake.check_runs.values() if r["id"] not in earlier
                         and r["head_sha"] == sha and r["status"] == "completed"), None)

        run = await self.until(done)
        await self.settle()
        cpu_after = process_cpu(self.server_pid)
        if run["conclusion"] != "success":
            raise RuntimeError(f"validation of {full}@{sha[:7]} concluded {run['conclusion']}: "
                               f"{run['output'].get('title')}\n{run['output'].get('text', '')[-2000:]}")
        calls = self.fake.calls[first:]
        check = f"/repos/{full}/check-runs/{run['id']}"
        completed = next(c.at for c in calls if c.method == "PATCH" and c.path == check
                         and isinstance(c.json, dict) and "conclusion" in c.json)

        def at(predicate: Callable[[Any], bool]) -> float | None:
            return next((c.at for c in calls if predicate(c)), None)

        number = repo.scenario.number
        stages = {
            "new installation token": at(lambda c: c.method == "POST" and c.path.endswith("/access_tokens")),
            "check run created (in_progress)": at(lambda c: c.method == "POST" and c.path == f"/repos/{full}/check-runs"),
            "validate job starts (GET pull)": at(lambda c: c.method == "GET" and c.path == f"/repos/{full}/pulls/{number}"),
            "git fetch starts": at(lambda c: c.path.endswith("/info/refs")),
            "checkout done (GET pull files)": at(lambda c: c.method == "GET" and c.path.endswith(f"/pulls/{number}/files")),
        }
        steps: dict[str, float] = {}
        restored = False
        first_command = None
        for step in self.stored_steps(run["external_id"]):
            key = step["stage"] if step["stage"] in ("checkout", "setup") else f"{step['stage']}/{step['name']}"
            steps[key] = steps.get(key, 0.0) + step["duration_seconds"]
            restored = restored or step["status"] == "restored"
            found = re.search(r"first-command-started-at (\d+\.\d+)", step.get("output_tail") or "")
            if found:
                first_command = float(found.group(1))
        return PipelineRun(sent, sent_wall, completed, {k: v for k, v in stages.items() if v is not None}, steps,
                           restored, cpu_after[0] - cpu_before[0], first_command)

    # ---- by hand

    async def by_hand(self, repo: Repo, config: str) -> dict[str, float]:
        """git clone over smart HTTP + checkout of the head, then the config's setup and validate commands
        with plain subprocesses (/bin/sh -c, the sandbox's PATH and environment, no sandbox)."""
        dest = Path(tempfile.mkdtemp(dir=self.work)) / "clone"
        git_env = {"PATH": SANDBOX_PATH, "HOME": str(self.work), "LANG": "C", "GIT_CONFIG_NOSYSTEM": "1",
                   "GIT_CONFIG_GLOBAL": os.devnull, "GIT_TERMINAL_PROMPT": "0"}
        env = {"PATH": SANDBOX_PATH, "HOME": str(dest), "LANG": "C.UTF-8", "TERM": "dumb", "CI": "true"}
        times: dict[str, float] = {}
        cpu = own_cpu()
        started = time.monotonic()
        await run_command(["git", "clone", "--quiet", "--no-checkout",
                           f"{self.fake.base_url}/{repo.full_name}.git", str(dest)], env=git_env, cwd=self.work)
        await run_command(["git", "-c", "advice.detachedHead=false", "checkout", "--quiet", "--detach",
                           repo.scenario.head_sha], env=git_env, cwd=dest)
        times["checkout"] = time.monotonic() - started
        for stage in ("setup", "validate"):
            for name, command in steps_of(config, stage):
                mark = time.monotonic()
                await run_command(["/bin/sh", "-c", command], env=env, cwd=dest)
                key = "setup" if stage == "setup" else f"validate/{name}"
                times[key] = times.get(key, 0.0) + time.monotonic() - mark
        times["total"] = time.monotonic() - started
        times["cpu"] = own_cpu() - cpu  # git clone, the commands, and the fake's git http-backend
        shutil.rmtree(dest.parent)
        return times

    async def untar_snapshot(self) -> float | None:
        """Baseline for a restore: `zstd -dc | tar -x` of the largest snapshot archive into a new directory
        beside the app's workspaces (same filesystem, same moment), then removed."""
        metas = [json.loads(p.read_text()) for p in (self.database.parent / "snapshots").glob("*/*.json")]
        if not metas or shutil.which("zstd") is None:
            return None
        meta = max(metas, key=lambda m: m.get("entries", 0))
        archive = self.database.parent / "snapshots" / meta["key"][:2] / meta["archive"]
        dest = self.database.parent / "workspaces" / f"bench-untar-{time.time_ns()}"
        dest.mkdir(parents=True)
        decompress = "zstd -dc" if meta.get("compression") == "zstd" else "cat"
        started = time.monotonic()
        await run_command(["/bin/sh", "-c", f"{decompress} '{archive}' | tar -x -C '{dest}'"],
                          env={"PATH": SANDBOX_PATH}, cwd=dest)
        elapsed = time.monotonic() - started
        await asyncio.to_thread(shutil.rmtree, dest)
        return elapsed

    def writes_per_minute(self) -> int:
        return max_writes_per_minute(self.fake.calls)[0]


async def run_command(argv: list[str], *, env: dict[str, str], cwd: Path) -> None:
    process = await asyncio.create_subprocess_exec(*argv, env=env, cwd=str(cwd), stdin=asyncio.subprocess.DEVNULL,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"{argv} failed ({process.returncode}):\n{out.decode(errors='replace')[-2000:]}")


def stages_line(runs: list[PipelineRun]) -> str:
    """Median time from the send to each stage the fake GitHub saw."""
    parts = []
    for name in runs[0].stages:
        values = [r.stages[name] - r.sent for r in runs if name in r.stages]
        parts.append(f"{name} +{median(values):.3f}")
    parts.append(f"check run completed +{median([r.total for r in runs]):.3f}")
    return "      from the send (s): " + ", ".join(parts)


# ------------------------------------------------------------------------------------ targets


async def overhead(bench: Bench, n: int) -> dict[str, Any]:
    print(f"1. pipeline overhead: {n} cold repositories, then {n} pushes to one PR", flush=True)
    repos = [bench.new_repo(f"overhead{i}", "widgets", WIDGETS_FILES, WIDGETS_CONFIG) for i in range(n)]
    for repo in repos:
        await bench.register(repo)
    hand_cold: list[dict[str, float]] = []
    cold: list[PipelineRun] = []
    for i, repo in enumerate(repos):
        # alternate which goes first, so that a drift in the machine's load favours neither
        if i % 2 == 0:
            hand_cold.append(await bench.by_hand(repo, WIDGETS_CONFIG))
            cold.append(await bench.validate(repo, "opened"))
        else:
            cold.append(await bench.validate(repo, "opened"))
            hand_cold.append(await bench.by_hand(repo, WIDGETS_CONFIG))
        print(f"   cold {i + 1}: by hand {hand_cold[-1]['total']:.2f} s, pipeline {cold[-1].total:.2f} s", flush=True)
    hand_warm: list[dict[str, float]] = []
    warm: list[PipelineRun] = []
    repo = repos[0]
    for i in range(n):
        bench.push(repo, "widgets/__init__.py",
                   WIDGETS_FILES["widgets/__init__.py"].replace("REVISION = 0", f"REVISION = {i + 1}"))
        if i % 2 == 0:
            warm.append(await bench.validate(repo, "synchronize"))
            hand_warm.append(await bench.by_hand(repo, WIDGETS_CONFIG))
        else:
            hand_warm.append(await bench.by_hand(repo, WIDGETS_CONFIG))
            warm.append(await bench.validate(repo, "synchronize"))
        print(f"   warm {i + 1}: by hand {hand_warm[-1]['total']:.2f} s, pipeline {warm[-1].total:.2f} s", flush=True)
    return {"hand_cold": hand_cold, "cold": cold, "hand_warm": hand_warm, "warm": warm}


def print_overhead(result: dict[str, Any]) -> list[float]:
    hand_cold, cold, hand_warm, warm = result["hand_cold"], result["cold"], result["hand_warm"], result["warm"]
    rows = ["checkout"] + ["setup"] + [f"validate/{name}" for name, _ in steps_of(WIDGETS_CONFIG, "validate")]
    print("1. pipeline overhead: signed event -> completed check run, vs git clone + the same commands by hand")
    print(f"   median seconds of {len(cold)}        by hand   cold   by hand   warm")
    for row in rows:
        label = {"checkout": "checkout (clone | mirror)", "setup": "setup (warm: restored)"}.get(row, row)
        print(f"   {label:30s} {median([h[row] for h in hand_cold]):7.2f} {median([r.steps.get(row, 0) for r in cold]):6.2f}"
              f" {median([h[row] for h in hand_warm]):9.2f} {median([r.steps.get(row, 0) for r in warm]):6.2f}")
    print(f"   {'outside the steps (the app)':30s} {'-':>7s} {median([r.outside_steps for r in cold]):6.2f}"
          f" {'-':>9s} {median([r.outside_steps for r in warm]):6.2f}")
    hc, c = median([h["total"] for h in hand_cold]), median([r.total for r in cold])
    hw, w = median([h["total"] for h in hand_warm]), median([r.total for r in warm])
    print(f"   {'total':30s} {hc:7.2f} {c:6.2f} {hw:9.2f} {w:6.2f}")
    print(f"   {'CPU: commands | the app itself':30s} {median([h['cpu'] for h in hand_cold]):7.2f} "
          f"{median([r.server_cpu for r in cold]):6.2f} {median([h['cpu'] for h in hand_warm]):9.2f} "
          f"{median([r.server_cpu for r in warm]):6.2f}")
    ratios = [c / hc, w / hw]
    print(f"   ratio cold {ratios[0]:.2f}x {verdict(ratios[0] <= 1.10)}, warm {ratios[1]:.2f}x "
          f"{verdict(ratios[1] <= 1.10)}  (target <= 1.10x; rows are medians of their own and need not add up)")
    print("   cold" + stages_line(cold)[5:])
    print("   warm" + stages_line(warm)[5:])
    return ratios


async def snapshots(bench: Bench, n: int) -> dict[str, Any]:
    print(f"2./3. warm snapshot vs cold, event -> first command: 1 cold validation, then {n} pushes", flush=True)
    repo = bench.new_repo("snapshots", "service", SERVICE_FILES, SERVICE_CONFIG)
    await bench.register(repo)
    cold = await bench.validate(repo, "opened")
    print(f"   cold: {cold.total:.2f} s", flush=True)
    warm: list[PipelineRun] = []
    for i in range(n):
        bench.push(repo, "app/core.py", SERVICE_FILES["app/core.py"] + f"\nREVISION = {i + 1}\n")
        warm.append(await bench.validate(repo, "synchronize"))
        first = warm[-1].first_command_wall
        print(f"   warm {i + 1}: {warm[-1].total:.2f} s; event -> first command "
              f"{(first - warm[-1].sent_wall) if first else float('nan'):.3f} s", flush=True)
        if not warm[-1].restored:
            print("   (!) the setup was not restored from its snapshot", flush=True)
    # after the measured runs: it deletes thousands of files too, which would slow the next restore
    untar = await bench.untar_snapshot()
    return {"cold": cold, "warm": warm, "untar": untar}


def print_snapshots(result: dict[str, Any]) -> tuple[float, float | None]:
    cold, warm = result["cold"], result["warm"]
    c, w = cold.total, median([r.total for r in warm])
    print(f"2. warm snapshot vs cold: event -> completed check run; setup {cold.steps.get('setup', 0):.2f} s cold "
          f"(venv + ~2,000 modules + sleep), restored in {median([r.steps.get('setup', 0) for r in warm]):.2f} s")
    print(f"   cold {c:.2f} s, warm {w:.2f} s (median of {len(warm)}): ratio {w / c:.2f}x  (target <= 0.3x) "
          f"{verdict(w / c <= 0.3)}")
    restores = ", ".join(f"{r.steps.get('setup', 0):.2f}" for r in warm)
    if result["untar"] is not None:
        print(f"   baseline: `zstd -dc | tar -x` of the same archive beside the workspaces, after the last warm run: "
              f"{result['untar']:.2f} s (the restores: {restores} s)")
    print("   cold" + stages_line([cold])[5:])
    print("   warm" + stages_line(warm)[5:])
    first = [r.first_command_wall - r.sent_wall for r in warm if r.first_command_wall is not None]
    if not first:
        print("3. event -> first validate command: no timestamp found in the step output")
        return w / c, None
    p50 = percentile(first, 50)
    print(f"3. event -> first validate command running (warm mirror, warm snapshot): p50 {p50:.3f} s, "
          f"max {max(first):.3f} s over {len(first)}  (target <= 1 s) {verdict(p50 <= 1.0)}")
    job = [r.stages["validate job starts (GET pull)"] - r.sent for r in warm]
    checkout = [r.stages["checkout done (GET pull files)"] - r.stages["validate job starts (GET pull)"] for r in warm]
    restore = [r.steps.get("setup", 0.0) for r in warm]
    rest = [r.first_command_wall - r.sent_wall - (r.stages["checkout done (GET pull files)"] - r.sent)
            - r.steps.get("setup", 0.0) for r in warm if r.first_command_wall is not None]
    print(f"   medians: send -> validate job's first request {median(job):.3f} s; -> checkout done "
          f"{median(checkout):.3f} s (config, token, fetch, checkout); snapshot restore {median(restore):.3f} s; "
          f"the rest (snapshot key, chown of the workspace, sandbox start) {median(rest):.3f} s")
    return w / c, p50


# ---------------------------------------------------------------------------------------- main


async def run(args: argparse.Namespace) -> None:
    if shutil.which("bwrap") is None:
        sys.exit("bubblewrap is not installed: `make install` (or apt-get install bubblewrap)")
    key = generate_private_key_pem()
    fake = FakeGitHub(app_id=APP_ID, private_key_pem=key)
    await fake.start()
    data_dir = Path(tempfile.mkdtemp(prefix="codegenapp-pipeline-bench-", dir=args.dir))
    fs_note = filesystem_note(data_dir)
    print(f"DATA_DIR {data_dir}: {fs_note}", flush=True)
    port = free_port()
    env = {**os.environ, "DATA_DIR": str(data_dir), "PORT": str(port), "APP_ID": str(APP_ID), "PRIVATE_KEY": key,
           "WEBHOOK_SECRET": SECRET, "GITHUB_API_URL": fake.api_url, "GITHUB_URL": fake.base_url,
           "LOG_LEVEL": "WARNING"}
    command = [sys.executable, "-m", "bot", "serve"]
    if args.profile:
        command = [sys.executable, "-m", "cProfile", "-o", args.profile, "-m", "bot", "serve"]
    log_path = data_dir / "server.log"
    with open(log_path, "wb") as log_file:
        server = await asyncio.create_subprocess_exec(*command, cwd=data_dir, env=env, stdout=log_file,
                                                      stderr=asyncio.subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    bench = None
    load_before = os.getloadavg()
    try:
        async with aiohttp.ClientSession() as session:
            if not await wait_until_healthy(session, url, seconds=20):
                raise RuntimeError(f"the server did not start; see {log_path}")
            bench = Bench(fake, session, url, server.pid, data_dir)
            began, others_before, steal_before = time.monotonic(), others_cpu(), steal_seconds()
            t1 = await overhead(bench, args.n)
            t2 = await snapshots(bench, args.n)
            elapsed = time.monotonic() - began
            others = others_used(others_before, others_cpu())
            steal = steal_seconds() - steal_before
            worst_writes = bench.writes_per_minute()
        problems = fake.errors()
    except BaseException:
        print(f"server log: {log_path}\n{log_path.read_text()[-4000:] if log_path.exists() else ''}", file=sys.stderr)
        raise
    finally:
        server.terminate()
        await server.wait()
        await fake.close()
        if bench is not None:
            shutil.rmtree(bench.work, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)

    print()
    print(f"pipeline benchmark: -n {args.n}, {os.cpu_count()} CPUs, {elapsed:.0f} s; load average before "
          f"{load_before[0]:.2f}; other processes on the machine used {others:.1f} CPU-s meanwhile "
          f"({others / elapsed / (os.cpu_count() or 1):.0%} of it), steal {steal:.1f} s")
    print(f"DATA_DIR and the clones by hand on {fs_note}")
    print_overhead(t1)
    print_snapshots(t2)
    print(f"most writes by one installation in 60 s: {worst_writes} (limit 80); fake GitHub problems: {len(problems)}")
    for problem in problems[:5]:
        print(f"   {problem[:300]}")
    if args.keep:
        print(f"DATA_DIR kept: {data_dir} (server log: {log_path})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=5, help="repetitions (cold repositories, warm pushes)")
    parser.add_argument("--keep", action="store_true", help="keep the server's DATA_DIR and log")
    parser.add_argument("--dir", help="where to create DATA_DIR and the clones by hand (default: the temp dir), "
                                      "e.g. /dev/shm to take the disk out of the figures")
    parser.add_argument("--profile", help="run the server under cProfile, writing this file")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
