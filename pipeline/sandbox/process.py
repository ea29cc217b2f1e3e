"""Starting a sandboxed (or unsandboxed) command and making sure nothing of it outlives its run.

A run is a `Proc`: the process (bwrap in its own session, or `/bin/sh` in its own process group), a
future set when it exits (asyncio's own wait also waits for stdout to close), and, sandboxed, a pidfd
on the sandbox's pid 1 (`ChildInfo`, from bwrap's `--info-fd`), its cgroup and its slirp4netns.
`kill_tree` SIGKILLs pid 1 (the kernel then kills the whole pid namespace), the session or group, and
the cgroup, and waits (bounded) until all of it is gone; `cleanup` stops the slirp4netns.
`BackgroundProcess` is the handle `Sandbox.background` gives its caller.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from pipeline.sandbox.cgroups import Cgroup
from pipeline.sandbox.network import UserNetwork
from pipeline.sandbox.output import READ_CHUNK, Output

log = logging.getLogger(__name__)

KILL_WAIT_SECONDS = 10.0
DRAIN_SECONDS = 2.0


class ChildInfo:
    """Reads bwrap's --info-fd JSON to learn the host pid of the sandbox's pid 1 and holds a pidfd on it,
    so a kill can wait until the whole pid namespace is gone (the kernel kills the namespace before pid 1
    is reported as exited)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int) -> None:
        self.loop = loop
        self.fd: int | None = fd
        self.buf = b""
        self.pidfd: int | None = None
        self.info: dict[str, object] = {}  # bwrap's report: child-pid, pid-namespace, ...
        self.read: asyncio.Future[None] = loop.create_future()  # set once the report is in (or never will be)
        os.set_blocking(fd, False)
        loop.add_reader(fd, self.poll)

    def poll(self) -> None:
        if self.fd is None:
            return
        try:
            data = os.read(self.fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self.buf += data
            try:
                info = json.loads(self.buf)
            except ValueError:
                return
            self.info = info if isinstance(info, dict) else {}
            pid = self.info.get("child-pid")
            if isinstance(pid, int) and pid > 0:
                try:
                    self.pidfd = os.pidfd_open(pid)
                except OSError:  # already gone (and reaped)
                    self.pidfd = None
        self.stop()

    def stop(self) -> None:
        if self.fd is not None:
            self.loop.remove_reader(self.fd)
            os.close(self.fd)
            self.fd = None
        if not self.read.done():
            self.read.set_result(None)

    def kill(self) -> None:
        if self.pidfd is not None:
            try:
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            except (ProcessLookupError, OSError):
                pass

    async def wait_gone(self, timeout: float) -> bool:
        if self.pidfd is None:
            return True
        fut = self.loop.create_future()
        self.loop.add_reader(self.pidfd, lambda: fut.done() or fut.set_result(None))
        try:
            await asyncio.wait_for(fut, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            self.loop.remove_reader(self.pidfd)

    def close(self) -> None:
        self.stop()
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


@dataclass
class Proc:
    """A started command: what `kill_tree`, `reap_leftovers` and `cleanup` act on."""

    proc: asyncio.subprocess.Process
    exited: asyncio.Future[None]  # set when the process exits, even if something still holds its stdout
    transport: asyncio.SubprocessTransport
    sandboxed: bool
    info: ChildInfo | None = None
    cgroup: Cgroup | None = None
    network: UserNetwork | None = None


class BackgroundProcess:
    """A command started by `Sandbox.background`, running until its `async with` block ends."""

    def __init__(self, run: Proc, output: Output) -> None:
        self._run = run
        self._output = output

    @property
    def running(self) -> bool:
        return not self._run.exited.done()

    @property
    def exit_code(self) -> int | None:
        """None while it runs; 128+N when ended by signal N."""
        rc = self._run.proc.returncode
        if rc is None or not self._run.exited.done():
            return None
        return 128 - rc if rc < 0 else rc

    async def wait(self) -> None:
        """Until the process exits (by itself, or killed by the timeout)."""
        await asyncio.shield(self._run.exited)

    def output(self) -> str:
        """Merged stdout/stderr so far, capped like `RunResult.output`."""
        return self._output.render()


class _ExitProtocol(asyncio.subprocess.SubprocessStreamProtocol):
    """asyncio's Process.wait() only returns once stdout is closed too; this tells us when the process itself
    exited, so the unsandboxed fallback can kill background jobs that still hold the pipe."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=READ_CHUNK, loop=loop)
        self.exited: asyncio.Future[None] = loop.create_future()

    def process_exited(self) -> None:
        super().process_exited()
        if not self.exited.done():
            self.exited.set_result(None)


async def start_process(*argv: str, env: Mapping[str, str], cwd: str, pass_fds: Sequence[int],
                        preexec_fn: Callable[[], None]
                        ) -> tuple[asyncio.subprocess.Process, asyncio.Future[None], asyncio.SubprocessTransport]:
    loop = asyncio.get_running_loop()
    protocol: _ExitProtocol | None = None

    def factory() -> _ExitProtocol:
        nonlocal protocol
        protocol = _ExitProtocol(loop)
        return protocol

    transport, _ = await loop.subprocess_exec(
        factory, *argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=dict(env),
        cwd=cwd, start_new_session=True, pass_fds=tuple(pass_fds), preexec_fn=preexec_fn)
    assert protocol is not None
    return asyncio.subprocess.Process(transport, protocol, loop), protocol.exited, transport


async def kill_tree(run: Proc) -> None:
    """SIGKILL everything the run started and wait (bounded) until it is gone."""
    proc = run.proc
    if run.info is not None:
        run.info.poll()  # the pid may have arrived without the loop having run the reader yet
        run.info.kill()  # pid 1 of the sandbox: the kernel then kills the whole pid namespace
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the outer bwrap (its own session) / the unsandboxed group
    except (ProcessLookupError, PermissionError):
        pass
    try:
        await asyncio.wait_for(asyncio.shield(run.exited), KILL_WAIT_SECONDS)
    except TimeoutError:
        log.error("sandbox: process %s did not exit %ss after SIGKILL", proc.pid, KILL_WAIT_SECONDS)
    if run.info is not None and not await run.info.wait_gone(KILL_WAIT_SECONDS):
        log.error("sandbox: pid namespace of %s still alive %ss after SIGKILL", proc.pid, KILL_WAIT_SECONDS)
    if run.cgroup is not None and not await run.cgroup.kill_all(KILL_WAIT_SECONDS):
        log.error("sandbox: cgroup %s still has processes after SIGKILL", run.cgroup.dirs)


async def reap_leftovers(run: Proc) -> None:
    """After the main process exited normally: nothing may outlive the run."""
    if run.sandboxed:
        # bwrap has reaped the sandbox's pid 1, so the namespace is already empty; the checks are cheap.
        if run.info is not None:
            run.info.poll()
            await run.info.wait_gone(KILL_WAIT_SECONDS)
        if run.cgroup is not None:
            await run.cgroup.kill_all(KILL_WAIT_SECONDS)
    else:
        try:
            os.killpg(run.proc.pid, signal.SIGKILL)  # background jobs left in the group
        except (ProcessLookupError, PermissionError):
            pass


async def cleanup(run: Proc) -> None:
    """Releases what a finished run holds: its pipe, its pidfd, its slirp4netns, its cgroup (emptied first)."""
    run.transport.close()  # closes our end of the pipe even if a stray process (unsandboxed) still holds it
    if run.info is not None:
        run.info.close()
    if run.network is not None:
        await run.network.stop()
    if run.cgroup is not None:
        await run.cgroup.kill_all(KILL_WAIT_SECONDS)
        await run.cgroup.remove()


async def uncancellable(coro: Awaitable[None]) -> None:
    """Run `coro` to completion even if the awaiting task is cancelled meanwhile (the cancellation is
    re-delivered afterwards)."""
    task = asyncio.ensure_future(coro)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                break
            cancelled = True
    if cancelled:
        task.result()
        raise asyncio.CancelledError
    task.result()
