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

import aiohttp

from tests.pg import free_port
from tests.webhook_sender import WebhookSender

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A command's environment: DATA_DIR under `tmp_path`, nothing written in ~; `extra` added."""
    return {"DATA_DIR": str(tmp_path / "data"), "XDG_CACHE_HOME": str(tmp_path / "cache"), **extra}


def _process_env(env: dict[str, str]) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "PYTHONPATH": str(PROJECT_ROOT), **env}


def _cwd(env: dict[str, str]) -> Path:
    return Path(env["DATA_DIR"]).parent


def codegenapp(*args: str, env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`codegenapp ARGS`, run to its end."""
    return subprocess.run([sys.executable, "-m", "bot", *args], input=stdin, capture_output=True, text=True,
                          env=_process_env(env), cwd=_cwd(env), timeout=60)


def codegenapp_in_terminal(*args: str, env: dict[str, str], columns: int = 100,
                           timeout: float = 120) -> tuple[int, str, str]:
    """`codegenapp ARGS` with its standard output on a pseudo-terminal `columns` wide, as a person runs it:
    (exit code, what the terminal showed with CRLF as "\\n", standard error)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    process = subprocess.Popen([sys.executable, "-m", "bot", *args], stdin=subprocess.DEVNULL, stdout=slave,
                               stderr=subprocess.PIPE, env=_process_env(env), cwd=_cwd(env))
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


class ServedApp:
    """`codegenapp serve SERVE_ARGS --port PORT` in a process of its own; its log is read to the end (a full
    pipe would stall it) and kept in `log`. With a `session`, `webhooks` sends it deliveries signed with
    the environment's WEBHOOK_SECRET."""

    def __init__(self, env: dict[str, str], *serve_args: str, port: int | None = None,
                 session: aiohttp.ClientSession | None = None) -> None:
        self.env = env
        self.port = port or free_port()
        self.args = ("serve", *serve_args, "--port", str(self.port))
        self.url = f"http://127.0.0.1:{self.port}"
        self.webhooks = WebhookSender(session, self.url, env["WEBHOOK_SECRET"]) if session is not None else None
        self.log: list[str] = []

    async def start(self, *, timeout: float = 60) -> ServedApp:
        """Starts it and waits until it says "Running on"; if it stops or takes longer than `timeout`
        seconds instead, it is killed and an AssertionError quotes the end of its log."""
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", *self.args, cwd=_cwd(self.env), env=_process_env(self.env),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        ready = asyncio.Event()
        self._reader = asyncio.create_task(self._read_log(ready))
        waits = [asyncio.create_task(ready.wait()), asyncio.create_task(self.process.wait())]
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        for wait in waits:
            wait.cancel()
        if not ready.is_set():
            await self.stop()
            raise AssertionError(f"`codegenapp {' '.join(self.args)}` did not start:\n" + "".join(self.log[-30:]))
        return self

    async def _read_log(self, ready: asyncio.Event) -> None:
        assert self.process.stderr is not None
        async for line in self.process.stderr:
            self.log.append(line.decode(errors="replace"))
            if "Running on" in self.log[-1]:
                ready.set()

    async def kill(self) -> None:
        """SIGKILL: as a crash or a power cut ends it."""
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()
        await self._reader

    async def terminate(self, *, timeout: float = 20) -> int:
        """SIGTERM, and its exit code once it has stopped."""
        self.process.terminate()
        code = await asyncio.wait_for(self.process.wait(), timeout)
        await self._reader
        return code

    async def stop(self) -> None:
        """Kills it if it still runs."""
        if self.process.returncode is None:
            await self.kill()
        else:
            await self._reader
