"""The app scaled out, for the chaos test (tests/test_scale_out_chaos.py): `codegenapp serve --no-worker` and
`codegenapp worker` processes on one PostgreSQL database, a round-robin proxy in front of the web processes
(a load balancer: a dead backend is a 502), a sender that retries each delivery with the same
X-GitHub-Delivery until it is acknowledged (as GitHub's redelivery would), and a killer that SIGKILLs one
process at a time and starts it again.

Each process has a DATA_DIR of its own (as on separate hosts: checkouts and run volumes are per host), and
all share ENCRYPTION_KEY and JWT_SECRET_KEY, which must be the same wherever the database is read.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from cryptography.fernet import Fernet

from bot.config import WEBHOOK_PATH
from tests import cli_support
from tests.cli_support import codegenapp
from tests.fakes.github import FakeGitHub
from tests.pg import free_port
from tests.webhook_sender import github_headers

HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "host"})


def shared_env(*, database_url: str, fake: FakeGitHub, app_id: int, private_key: str, webhook_secret: str,
               **extra: str) -> dict[str, str]:
    """What every process of the deployment is given (DATA_DIR comes per process)."""
    return {"DATABASE_URL": database_url, "APP_ID": str(app_id), "PRIVATE_KEY": private_key,
            "WEBHOOK_SECRET": webhook_secret, "GITHUB_API_URL": fake.api_url, "GITHUB_URL": fake.base_url,
            "WEBHOOK_MODE": "webhook", "SWEEP_INTERVAL": "0", "RESYNC_INTERVAL": "0",
            "ENCRYPTION_KEY": Fernet.generate_key().decode(), "JWT_SECRET_KEY": "scale-test-jwt-secret-0123456789",
            "LOG_LEVEL": "INFO", **extra}


def migrate(env: dict[str, str], root: Path) -> None:
    """`codegenapp migrate`, once, before any process starts."""
    (root / "migrate").mkdir(parents=True, exist_ok=True)
    done = codegenapp("migrate", env={**env, "DATA_DIR": str(root / "migrate" / "data")})
    assert done.returncode == 0, done.stderr


class AppProcess(cli_support.AppProcess):
    """One process of the deployment (`serve --no-worker --port P` or `worker`) with a DATA_DIR of its own,
    killed and started again as often as the test likes; `port` stays the same across restarts. The end of
    its log is kept in `log`, all of it (every start) in `log_file`, for a failure's post-mortem."""

    def __init__(self, name: str, args: Sequence[str], *, env: dict[str, str], data_dir: Path, ready: str,
                 port: int | None = None) -> None:
        super().__init__({**env, "DATA_DIR": str(data_dir)}, *args, ready=ready, name=name, keep=300,
                         log_file=data_dir.parent / "log.txt")
        self.port = port

    @classmethod
    def web(cls, name: str, *, env: dict[str, str], root: Path) -> AppProcess:
        port = free_port()
        return cls(name, ("serve", "--no-worker", "--port", str(port)), env=env, data_dir=root / name / "data",
                   ready="Running on", port=port)

    @classmethod
    def worker(cls, name: str, *, env: dict[str, str], root: Path) -> AppProcess:
        return cls(name, ("worker",), env=env, data_dir=root / name / "data", ready="worker running")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def restart(self) -> None:
        await self.kill()
        await self.start()


class RoundRobinProxy:
    """A load balancer in front of the web processes: each request goes to the next backend in turn; a backend
    that does not answer gives the client a 502 (not an acknowledgement: the sender tries again)."""

    def __init__(self, backends: Sequence[str]) -> None:
        self.backends = list(backends)
        self._next = itertools.cycle(range(len(self.backends)))
        self.answers: collections.Counter[int] = collections.Counter()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.url = ""

    async def start(self) -> RoundRobinProxy:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))
        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def _forward(self, request: web.Request) -> web.Response:
        assert self._session is not None
        backend = self.backends[next(self._next)]
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        body = await request.read()
        try:
            async with self._session.request(request.method, backend + request.rel_url.raw_path_qs,
                                             headers=headers, data=body) as answer:
                content = await answer.read()
                status = answer.status
                kept = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP}
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            self.answers[502] += 1
            return web.json_response({"message": f"bad gateway: {exc.__class__.__name__}"}, status=502)
        self.answers[status] += 1
        return web.Response(status=status, body=content, headers=kept)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()


@dataclass
class Delivery:
    guid: str
    installation_id: int
    head_sha: str
    body: bytes
    headers: dict[str, str]
    acked: int | None = None  # the 2xx status that acknowledged it
    attempts: int = 0
    refusals: list[int] = field(default_factory=list)  # statuses (or 0: no answer) before the acknowledgement


def open_pull_requests(fake: FakeGitHub, *, count: int, installations: int, secret: str,
                       first_installation: int = 7000) -> list[Delivery]:
    """`count` pull requests over `installations` installations (one repository each), and the signed
    `pull_request.opened` delivery of each, in bursts: each installation's pull requests one after another, so
    that its writes compete (when sent in this order). The repositories have no config: each validation
    completes neutral without a checkout."""
    repos = []
    for i in range(installations):
        installation_id = first_installation + i
        fake.add_installation(installation_id, f"scale{i}", repos=[f"scale{i}/repo"])
        repos.append((installation_id, f"scale{i}/repo"))
    deliveries = []
    for n in range(count):
        installation_id, full_name = repos[n * installations // count]
        number = n + 1
        head_sha = f"{n + 1:040x}"
        pull = fake.add_pull(full_name, number, head_sha=head_sha, base_sha="f" * 40)
        payload: dict[str, Any] = {"action": "opened", "number": number, "pull_request": pull,
                                   "repository": fake.repos[full_name],
                                   "installation": {"id": installation_id, "node_id": f"inst{installation_id}"},
                                   "sender": pull["user"]}
        body = json.dumps(payload).encode()
        headers = github_headers("pull_request", body, secret=secret, payload=payload)
        deliveries.append(Delivery(headers["X-GitHub-Delivery"], installation_id, head_sha, body, headers))
    return deliveries


async def send_until_acknowledged(session: aiohttp.ClientSession, url: str, deliveries: Sequence[Delivery], *,
                                  per_second: float, give_up_after: float) -> None:
    """Sends the deliveries `per_second` (spread over the time the processes are being killed), each (with the
    same X-GitHub-Delivery every time) until a 2xx acknowledges it; a delivery not acknowledged within
    `give_up_after` seconds fails the test."""
    loop = asyncio.get_running_loop()
    began = loop.time()

    async def send(delivery: Delivery) -> None:
        deadline = loop.time() + give_up_after
        while True:
            delivery.attempts += 1
            try:
                async with session.post(url + WEBHOOK_PATH, data=delivery.body, headers=delivery.headers) as answer:
                    await answer.read()
                    status = answer.status
            except (aiohttp.ClientError, asyncio.TimeoutError):
                status = 0
            if 200 <= status < 300:
                delivery.acked = status
                return
            delivery.refusals.append(status)
            if loop.time() > deadline:
                raise AssertionError(f"delivery {delivery.guid} not acknowledged within {give_up_after} s: "
                                     f"answers {delivery.refusals}")
            await asyncio.sleep(0.1)  # a redelivery comes later, not in a tight loop

    async def send_in_turn(index: int, delivery: Delivery) -> None:
        await asyncio.sleep(max(0.0, began + index / per_second - loop.time()))
        await send(delivery)

    await asyncio.gather(*(send_in_turn(index, delivery) for index, delivery in enumerate(deliveries)))


@dataclass
class Killer:
    """Every `min_gap`..`max_gap` seconds (seeded), SIGKILLs one of the running `processes` chosen at random and
    starts it again in the background (a start takes seconds: meanwhile the next one may be killed), until
    stopped; `kills` lists (process name, seconds since the start)."""

    processes: Sequence[AppProcess]
    seed: int
    min_gap: float = 2.0
    max_gap: float = 4.0
    kills: list[tuple[str, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._restarts: dict[str, asyncio.Task[None]] = {}

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        chance = random.Random(self.seed)
        loop = asyncio.get_running_loop()
        began = loop.time()
        while True:
            try:
                await asyncio.wait_for(self._stop.wait(), chance.uniform(self.min_gap, self.max_gap))
                return
            except TimeoutError:
                pass
            running = [process for process in self.processes if process.name not in self.restarting]
            if not running:
                continue
            victim = chance.choice(running)
            self.kills.append((victim.name, round(loop.time() - began, 1)))
            await victim.kill()
            self._restarts[victim.name] = asyncio.create_task(victim.start())

    async def stop(self) -> None:
        """Stops killing and waits until every process killed has started again (AssertionError if one could
        not)."""
        self._stop.set()
        if self._task is not None:
            await self._task
        await asyncio.gather(*self._restarts.values())

    @property
    def restarting(self) -> list[str]:
        return [name for name, task in self._restarts.items() if not task.done()]


async def wait_until(condition: Callable[[], Awaitable[bool]], *, timeout: float, interval: float = 0.25,
                     describe: Callable[[], Awaitable[str]] | None = None) -> None:
    """Polls `condition` until it holds; after `timeout` seconds, AssertionError with `describe()`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await condition():
        if loop.time() > deadline:
            detail = await describe() if describe is not None else ""
            raise AssertionError(f"not reached within {timeout} s. {detail}")
        await asyncio.sleep(interval)
