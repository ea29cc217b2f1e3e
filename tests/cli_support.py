"""The `codegenapp` command (`python -m bot`) run as a real process by the tests: from DATA_DIR's parent
(so that no stray .env is read), with only the environment the test gives it, and `codegenapp serve`
in a process of its own until the test stops or kills it."""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Self

import aiohttp

from tests.pg import free_port
from tests.webhook_sender import WebhookSender

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A command's environment: DATA_DIR under `tmp_path`, nothing written in ~; `extra` added."""
    return {"DATA_DIR": str(tmp_path / "data"), "XDG_CACHE_HOME": str(tmp_path / "cache"), **extra}


def process_env(env: dict[str, str]) -> dict[str, str]:
    """The environment a command runs with: PATH, the project on PYTHONPATH, and `env`."""
    return {"PATH": os.environ["PATH"], "PYTHONPATH": str(PROJECT_ROOT), **env}


def process_cwd(env: dict[str, str]) -> Path:
    """Where a command runs: DATA_DIR's parent, so that no stray .env is read."""
    return Path(env["DATA_DIR"]).parent


def codegenapp(*args: str, env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`codegenapp ARGS`, run to its end."""
    return subprocess.run([sys.executable, "-m", "bot", *args], input=stdin, capture_output=True, text=True,
                          env=process_env(env), cwd=process_cwd(env), timeout=60)


def codegenapp_in_terminal(*args: str, env: dict[str, str], columns: int = 100,
                           timeout: float = 120) -> tuple[int, str, str]:
    """`codegenapp ARGS` with its standard output on a pseudo-terminal `columns` wide, as a person runs it:
    (exit code, what the terminal showed with CRLF as "\\n", standard error)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    process = subprocess.Popen([sys.executable, "-m", "bot", *args], stdin=subprocess.DEVNULL, stdout=slave,
                               stderr=subprocess.PIPE, env=process_env(env), cwd=process_cwd(env))
    os.close(slave)
    shown = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while True:
            if time.monotonic() > deadline:
                process.kill()
                raise AssertionError(f"`codegenapp {' '.join(args)}` took over {timeout} s:\n{shown.decode()}")
            if not select.select([master], [], [], 1)[0]:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the command closed the terminal (it ended)
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(master)
    code = process.wait(timeout=30)
    assert process.stderr is not None
    return code, shown.decode().replace("\r\n", "\n"), process.stderr.read().decode()


class AppProcess:
    """`codegenapp ARGS` in a process of its own until the test stops or kills it, started as often as the
    test likes. Its log (standard error) is read to the end (a full pipe would stall it) into `log` (the
    last `keep` lines; all of them without `keep`) and, with a `log_file`, appended there too, every start's;
    it is ready once a line holds `ready`."""

    def __init__(self, env: dict[str, str], *args: str, ready: str, name: str = "codegenapp",
                 keep: int | None = None, log_file: Path | None = None) -> None:
        self.env = env
        self.args = args
        self.ready_marker = ready
        self.name = name
        self.log: list[str] = []
        self.keep = keep
        self.log_file = log_file
        self.starts = 0
        self.process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self, *, timeout: float = 60) -> Self:
        """Starts it and waits until its log says it is ready; if it stops or takes longer than `timeout`
        seconds instead, it is killed and an AssertionError quotes the end of its log."""
        cwd = process_cwd(self.env)
        cwd.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        if self.starts > 1:
            self._keep(f"----- start #{self.starts}\n")
        self.process = process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", *self.args, cwd=cwd, env=process_env(self.env),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        ready = asyncio.Event()
        self._reader = asyncio.create_task(self._read_log(process, ready))
        waits = [asyncio.create_task(ready.wait()), asyncio.create_task(process.wait())]
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        for wait in waits:
            wait.cancel()
        if not ready.is_set():
            await self.kill()
            raise AssertionError(f"{self.name} (`codegenapp {' '.join(self.args)}`) did not start:\n"
                                 + self.log_tail(30))
        return self

    def _keep(self, line: str) -> None:
        self.log.append(line)
        if self.keep is not None and len(self.log) > 2 * self.keep:
            del self.log[:-self.keep]
        if self.log_file is not None:
            with self.log_file.open("a") as kept:
                kept.write(line)

    async def _read_log(self, process: asyncio.subprocess.Process, ready: asyncio.Event) -> None:
        assert process.stderr is not None
        async for line in process.stderr:
            self._keep(line.decode(errors="replace"))
            if self.ready_marker in self.log[-1]:
                ready.set()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def log_tail(self, lines: int = 40) -> str:
        return "".join(self.log[-lines:])

    async def wait(self, timeout: float) -> int:
        """Its exit code once it has ended by itself (or by a signal the test sent)."""
        assert self.process is not None
        code = await asyncio.wait_for(self.process.wait(), timeout)
        if self._reader is not None:
            await self._reader
        return code

    async def kill(self) -> None:
        """SIGKILL: as a crash, a power cut or a lost host ends it."""
        if self.running:
            assert self.process is not None
            self.process.send_signal(signal.SIGKILL)
        await self.wait(30)

    async def terminate(self, *, timeout: float = 20) -> int:
        """SIGTERM, and its exit code once it has stopped."""
        assert self.process is not None
        self.process.terminate()
        return await self.wait(timeout)

    async def stop(self) -> None:
        """Kills it if it still runs."""
        if self.process is not None:
            await self.kill()


def worker_process(env: dict[str, str]) -> AppProcess:
    """`codegenapp worker`, ready once it says so."""
    return AppProcess(env, "worker", ready="worker running")


class ServedApp(AppProcess):
    """`codegenapp serve SERVE_ARGS --port PORT`, ready once it listens. With a `session`, `webhooks` sends
    it deliveries signed with the environment's WEBHOOK_SECRET."""

    def __init__(self, env: dict[str, str], *serve_args: str, port: int | None = None,
                 session: aiohttp.ClientSession | None = None) -> None:
        self.port = port or free_port()
        super().__init__(env, "serve", *serve_args, "--port", str(self.port), ready="Running on")
        self.url = f"http://127.0.0.1:{self.port}"
        self.webhooks = WebhookSender(session, self.url, env["WEBHOOK_SECRET"]) if session is not None else None
