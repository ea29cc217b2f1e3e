"""Outbound network for a sandboxed command, without the host: a user-mode network stack (slirp4netns).

A `network=True` run (a setup step that downloads dependencies, a local agent) gets a network namespace
of its own whose only way out is slirp4netns: a process on the host that turns the packets of the
sandbox's tap device (10.0.2.100) into ordinary sockets of its own. The command reaches what a program on
the host reaches through the host's routes (the internet, package registries, a proxy), but not the
host's loopback: 127.0.0.1 inside is the sandbox's own loopback, and `--disable-host-loopback` refuses
10.0.2.2, slirp's way to the host's 127.0.0.1. So the app's own port, a PostgreSQL on 127.0.0.1 and the
host's abstract unix sockets (they belong to a network namespace) are out of reach. Names are resolved
by slirp's forwarder 10.0.2.3, which asks the host's resolvers (the sandbox's /etc/resolv.conf says so).

The namespace exists before bwrap runs: the child `unshare`s a user and a network namespace owned by the
sandbox uid (preexec.py), bwrap keeps it (`--share-net`) under a user namespace of its own that holds no
capability over it (the command cannot change its interfaces or routes), and bwrap's child waits on
`--block-fd` until slirp4netns has configured the tap device. bwrap never configures this namespace, so
nothing races with slirp4netns (its `--configure` also brings `lo` up).

slirp4netns runs as the sandbox uid (never root), with NoNewPrivs and, where it works, its own seccomp
filter (`--enable-seccomp`); it ends with the run: SIGKILL, and `--exit-fd` should the app die first.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Sequence

SANDBOX_RESOLV_CONF = b"nameserver 10.0.2.3\n"  # slirp's DNS forwarder
TAP_DEVICE = "tap0"
SLIRP_MTU = 65520  # slirp4netns' recommended maximum: fewer, larger packets through the user-mode stack
READY_SECONDS = 10.0
_NS_GET_USERNS = 0xB701  # ioctl: the user namespace that owns a namespace
_OUTPUT_KEPT = 2000
_KILL_WAIT_SECONDS = 10.0
# Read inside the sandbox by the start-up probe: the tap device has slirp's address and the default route.
PROBE_SCRIPT = "cat /proc/net/route"


class UserNetworkError(Exception):
    """slirp4netns could not give the sandbox its network."""


def resolve_slirp4netns(name: str = "slirp4netns") -> str | None:
    """The slirp4netns executable (a path, or a name looked up in the system's bin directories)."""
    if os.sep in name:
        return name if os.path.isfile(name) and os.access(name, os.X_OK) else None
    return shutil.which(name, path="/usr/local/bin:/usr/bin:/bin")


def default_route_via_tap(route_table: str) -> bool:
    """Whether `/proc/net/route` (as the probe printed it) routes everything through the tap device."""
    for line in route_table.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 1 and fields[0] == TAP_DEVICE and fields[1] == "00000000":
            return True
    return False


def open_network_namespace(pid: int, pid_namespace: int) -> int:
    """An fd of the network namespace of `pid`, the sandbox's pid 1, checked to still be that process
    after it was opened: its pid namespace is the one bwrap reported (`pid_namespace`), so the pid was not
    reused meanwhile."""
    fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if os.stat(f"/proc/{pid}/ns/pid").st_ino != pid_namespace:
            raise UserNetworkError("the sandbox's first process went away before its network was set up")
    except BaseException:
        os.close(fd)
        raise
    return fd


class UserNetwork:
    """One run's slirp4netns, attached to the sandbox's network namespace; `stop()` when the run ends."""

    def __init__(self, process: asyncio.subprocess.Process, exit_fd: int, pump: asyncio.Task[None],
                 output: bytearray) -> None:
        self._process = process
        self._exit_fd: int | None = exit_fd
        self._pump = pump
        self._output = output

    @classmethod
    async def attach(cls, slirp4netns: str, netns_fd: int, *, extra_args: Sequence[str],
                     preexec_fn: Callable[[], None]) -> "UserNetwork":
        """Start slirp4netns on the network namespace `netns_fd` and wait (bounded) until the tap device is
        configured. `preexec_fn` makes it the sandbox uid (preexec.py `helper_preexec_fn`)."""
        userns_fd = fcntl.ioctl(netns_fd, _NS_GET_USERNS)
        ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
        exit_r, exit_w = os.pipe2(os.O_CLOEXEC)
        try:
            process = await asyncio.create_subprocess_exec(
                slirp4netns, "--configure", f"--mtu={SLIRP_MTU}", "--disable-host-loopback",
                f"--ready-fd={ready_w}", f"--exit-fd={exit_r}", f"--userns-path=/proc/self/fd/{userns_fd}",
                "--netns-type=path", *extra_args, f"/proc/self/fd/{netns_fd}", TAP_DEVICE,
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}, cwd="/", start_new_session=True,
                pass_fds=(ready_w, exit_r, userns_fd, netns_fd), preexec_fn=preexec_fn)
        except BaseException:
            for fd in (ready_r, exit_w):
                os.close(fd)
            raise
        finally:
            for fd in (ready_w, exit_r, userns_fd):
                os.close(fd)
        output = bytearray()
        assert process.stdout is not None
        network = cls(process, exit_w, asyncio.create_task(_keep_tail(process.stdout, output)), output)
        try:
            ready = await _read_byte(ready_r, READY_SECONDS)
        except BaseException:
            await network.stop()
            raise
        finally:
            os.close(ready_r)
        if ready != b"1":
            await network.stop()
            why = "did not get ready in time" if ready is None else f"failed (exit {network._process.returncode})"
            raise UserNetworkError(f"slirp4netns {why}: {network.output().strip()[-500:] or 'no output'}")
        return network

    def output(self) -> str:
        return self._output.decode(errors="replace")

    async def stop(self) -> None:
        """Kill slirp4netns and wait (bounded) until it is gone."""
        if self._exit_fd is not None:
            os.close(self._exit_fd)
            self._exit_fd = None
        with contextlib.suppress(ProcessLookupError):
            self._process.send_signal(signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._process.wait(), _KILL_WAIT_SECONDS)
        await asyncio.wait([self._pump], timeout=_KILL_WAIT_SECONDS)


async def _keep_tail(stream: asyncio.StreamReader, output: bytearray) -> None:
    """Drain slirp4netns' output (a full pipe would block it), keeping its end for an error message."""
    while chunk := await stream.read(4096):
        output += chunk
        del output[:-_OUTPUT_KEPT]


async def _read_byte(fd: int, timeout: float) -> bytes | None:
    """One byte from `fd` (b"" at end of file), None when none came within `timeout` seconds."""
    loop = asyncio.get_running_loop()
    arrived: asyncio.Future[None] = loop.create_future()
    loop.add_reader(fd, lambda: arrived.done() or arrived.set_result(None))
    try:
        await asyncio.wait_for(arrived, timeout)
    except TimeoutError:
        return None
    finally:
        loop.remove_reader(fd)
    return os.read(fd, 1)
