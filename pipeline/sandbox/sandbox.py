"""The one place untrusted code runs: a PR's setup/validate commands, the UI check's app, a local agent.

`Sandbox` runs command lines in bubblewrap, under these layers (each probed once at start, see
`SandboxCapabilities` in capabilities.py; the optional ones degrade explicitly):

1. **bubblewrap namespaces** (required): `--unshare-all --unshare-user` (user, mount, pid, net, ipc, uts,
   cgroup), `--die-with-parent`, `--new-session`, its own `/proc` with bwrap's reaper as pid 1 (not
   `--as-pid-1`: when the command exits, pid 1 exits and the kernel kills everything left in the pid
   namespace), `--hostname sandbox`, `--disable-userns` (no nested user namespaces).
2. **A dedicated unprivileged uid** (root only): the bwrap process itself is started as uid/gid
   `DEFAULT_SANDBOX_UID` (61000; no passwd entry on the host; outside Debian's regular-user range and
   systemd's dynamic-uid range 61184-65519) with no supplementary groups, so bwrap runs *unprivileged*
   and every process of the sandbox has that real uid on the host: RLIMIT_NPROC counts against it (it
   does not apply to uid 0), root-owned files are not writable even through a mistake in the binds,
   and an escape from the namespaces lands as a nobody. Inside, the uid is the same number (a
   synthetic /etc/passwd names it `sandbox`). When the app itself is not root, the sandbox uses the
   app's own uid (bwrap's unprivileged user namespace) - files then belong to the app directly.
   Plus `--cap-drop ALL` (CapEff 0) and NoNewPrivs (set in preexec_fn and by bwrap).
3. **seccomp** (optional): a syscall filter for the command only (seccomp.py).
4. **rlimits** (required), set by the child before exec (limits.py, preexec.py).
5. **cgroup v1** memory and pids limits (optional; root): one child cgroup per run (cgroups.py).
6. **A user-mode network** (optional; `network=True` runs are refused without it): slirp4netns, host
   loopback disabled, in a network namespace of the run's own (network.py).
7. **Wall-clock timeout, cancellation, output cap**: see `Sandbox.run`. `Sandbox.background` keeps a
   command (the UI stage's app under test) running during an `async with` block, under the same rules
   with no network, and kills its whole tree when the block ends, however it ends.

The rest of the package: bwrap.py builds bwrap's command line (the filesystem inside, the synthetic
/etc), preexec.py is what the child does before exec (binds staged as root, rlimits, the uid switch),
ownership.py hands the workspace to the sandbox uid, process.py starts the process and kills its whole
tree, output.py caps and streams its output.

Environment: `--clearenv`, then PATH, HOME=/workspace, LANG=C.UTF-8, TERM=dumb, CI=true, then the
caller's env (which may override those). The bwrap process itself is started with a two-variable
environment, so nothing of the app's environment (secrets, DATABASE_URL, ...) is ever passed on.

**Network policy**: `network=False` (the default; always for validate commands) gives a private network
namespace with only `lo`: no route anywhere, not even to the host's 127.0.0.1. `network=True` (setup
steps that download dependencies, a local agent) gives a network namespace of its own too, whose way
out is slirp4netns with the host's loopback disabled (network.py): the internet and the registries, but
not the app's port, a PostgreSQL on 127.0.0.1 or the host's abstract unix sockets. It never shares the
host's network namespace: without a working slirp4netns (probed at start, `user_network`), a
`network=True` run fails closed with `NetworkUnavailable`. What the host's routes reach (its other
interfaces' addresses, the internal network, a cloud metadata endpoint) stays reachable, as from any
program on the host.

**Unsandboxed fallback**: without a working bubblewrap, `run()` raises `SandboxUnavailable`, unless the
Sandbox was constructed with `allow_unsandboxed=True` (only for the local `codegenapp validate`): then
it logs a loud warning on every run and runs `/bin/sh -c` directly in the workspace with the clean
environment, rlimits, timeout and output cap only (no uid change: RLIMIT_NPROC does not bind root;
a process that calls setsid() escapes the process-group kill).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import stat
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.errors import PermanentError
from pipeline.sandbox.bwrap import (SANDBOX_PATH, WORKSPACE_MOUNT, Bind, bwrap_options, etc_files, memfd,
                                    resolve_bwrap, version_of)
from pipeline.sandbox.capabilities import PROBE_LIMITS, PROBE_SCRIPT, SandboxCapabilities, read_probe
from pipeline.sandbox.cgroups import Cgroup, cleanup_stale_cgroups, probe_cgroup
from pipeline.sandbox.limits import Limits, limit_notes
from pipeline.sandbox.network import (PROBE_SCRIPT as NETWORK_PROBE_SCRIPT, READY_SECONDS, UserNetwork,
                                      UserNetworkError, default_route_via_tap, open_network_namespace,
                                      resolve_slirp4netns)
from pipeline.sandbox.output import Output, Streamer, read_output
from pipeline.sandbox.ownership import claim_tree
from pipeline.sandbox.preexec import helper_preexec_fn, preexec_fn, prepare_stage_dir
from pipeline.sandbox.process import (DRAIN_SECONDS, BackgroundProcess, ChildInfo, Proc, cleanup, kill_tree,
                                      reap_leftovers, start_process, uncancellable)
from pipeline.sandbox.seccomp import build_seccomp_filter

log = logging.getLogger(__name__)

DEFAULT_SANDBOX_UID = 61000
_UNSANDBOXED_WARNING = (
    "!!! SANDBOX DISABLED: running %r WITHOUT bubblewrap (allow_unsandboxed=True): no namespaces, no "
    "dedicated uid, no seccomp, full filesystem and network access - only rlimits, timeout and a clean "
    "environment apply. Never use this for code you do not trust. Reason: %s")


class SandboxUnavailable(PermanentError):
    """No working bubblewrap, and the Sandbox was not allowed to run commands unsandboxed (no later try
    of the same work can do better)."""


class NetworkUnavailable(SandboxUnavailable):
    """A `network=True` run, and no user-mode network for it: the host's own is never shared instead."""


@dataclass(frozen=True)
class RunResult:
    exit_code: int | None  # None when killed by the wall-clock timeout; 128+N when ended by signal N
    timed_out: bool
    output: str  # merged stdout/stderr, capped: head + "\n… N bytes omitted …\n" + tail
    output_truncated_bytes: int
    duration_seconds: float
    # The signal that ended it, if any. Sandboxed, this is read from the conventional 128+N status that
    # bwrap and sh report, so a command that itself runs `exit 137` is reported as SIGKILL too.
    signal: int | None


@dataclass
class _Config:
    seccomp: bool
    disable_userns: bool
    cgroup_controllers: tuple[str, ...] = ()


class Sandbox:
    """Runs shell command lines in a bubblewrap sandbox. Construct with `await Sandbox.probe()`, once per
    process; `run()` may be called concurrently."""

    def __init__(self, *, allow_unsandboxed: bool = False, uid: int | None = None, bwrap: str = "bwrap",
                 slirp4netns: str = "slirp4netns") -> None:
        self.allow_unsandboxed = allow_unsandboxed
        self.bwrap = bwrap
        self.slirp4netns = slirp4netns
        self._is_root = os.geteuid() == 0
        if self._is_root:
            if uid == 0:
                raise ValueError("refusing to run untrusted code as uid 0")
            self.uid = DEFAULT_SANDBOX_UID if uid is None else uid
            self.gid = self.uid
        else:
            if uid is not None and uid != os.getuid():
                raise ValueError(f"only root can run the sandbox as another uid ({uid}); the app runs as {os.getuid()}")
            self.uid, self.gid = os.getuid(), os.getgid()
        self._bwrap_path: str | None = None
        self._slirp_path: str | None = None
        self._slirp_args: tuple[str, ...] = ()
        self._network_problem = "the network was not probed"  # why network=True runs are refused
        self._stage: Path | None = None
        self._seccomp_bpf: bytes | None = None
        self._config: _Config | None = None
        self._capabilities: SandboxCapabilities | None = None
        self._probe_lock: asyncio.Lock | None = None

    # ----------------------------------------------------------------------------------------- probe

    @classmethod
    async def probe(cls, **kwargs: Any) -> "Sandbox":
        sandbox = cls(**kwargs)
        await sandbox._ensure_probed()
        return sandbox

    @property
    def capabilities(self) -> SandboxCapabilities:
        if self._capabilities is None:
            raise RuntimeError("the sandbox has not been probed yet: use `await Sandbox.probe()`")
        return self._capabilities

    async def _ensure_probed(self) -> SandboxCapabilities:
        if self._capabilities is None:
            if self._probe_lock is None:
                self._probe_lock = asyncio.Lock()
            async with self._probe_lock:
                if self._capabilities is None:
                    self._capabilities = await self._probe()
                    level = logging.INFO if self._capabilities.sandboxed else logging.WARNING
                    log.log(level, "%s; notes: %s", self._capabilities.summary(),
                            "; ".join(self._capabilities.notes) or "-")
        return self._capabilities

    async def _probe(self) -> SandboxCapabilities:
        started = time.monotonic()
        notes: list[str] = []
        caps: dict[str, Any] = {"allow_unsandboxed": self.allow_unsandboxed, "uid": self.uid}

        # rlimits: setrlimit in the child is always available on Linux; verified inside the probe run too.
        caps["rlimits"] = True

        # cgroup v1 (root only)
        controllers: list[str] = []
        if self._is_root:
            for controller in ("memory", "pids"):
                if probe_cgroup(controller, notes):
                    controllers.append(controller)
            cleanup_stale_cgroups(controllers)
        else:
            notes.append("cgroups: not root, per-run memory/pids cgroups unavailable (RLIMIT_AS/NPROC only)")
        caps["cgroup_memory"] = "memory" in controllers
        caps["cgroup_pids"] = "pids" in controllers

        if self._is_root:
            try:
                self._stage = prepare_stage_dir()
            except OSError as exc:
                self._stage = None
                notes.append(f"bind staging unavailable ({exc}): the workspace's parent directories must be "
                             f"searchable by uid {self.uid}")

        # seccomp
        try:
            self._seccomp_bpf = build_seccomp_filter()
        except Exception as exc:  # ImportError, OSError from libseccomp
            self._seccomp_bpf = None
            notes.append(f"seccomp: unavailable ({type(exc).__name__}: {exc}); running without a syscall filter")

        # bwrap
        self._bwrap_path = resolve_bwrap(self.bwrap)
        caps["bwrap"] = self._bwrap_path
        if self._bwrap_path is None:
            notes.append(f"bwrap: {self.bwrap!r} not found or not executable (apt-get install bubblewrap)")
        else:
            caps["bwrap_version"] = await version_of(self._bwrap_path)
            trials = [_Config(seccomp=self._seccomp_bpf is not None, disable_userns=True),
                      _Config(seccomp=False, disable_userns=True), _Config(seccomp=False, disable_userns=False)]
            seen: set[tuple[bool, bool]] = set()
            for trial in trials:
                if (trial.seccomp, trial.disable_userns) in seen:
                    continue
                seen.add((trial.seccomp, trial.disable_userns))
                trial.cgroup_controllers = tuple(controllers)
                measured, problem = await self._probe_run(trial)
                if problem is None:
                    self._config = trial
                    caps.update(measured)
                    caps["bwrap_works"] = True
                    break
                notes.append(f"bwrap probe (seccomp={trial.seccomp}, disable_userns={trial.disable_userns}) "
                             f"failed: {problem}")
            if self._config is not None:
                if self._seccomp_bpf is not None and not self._config.seccomp:
                    notes.append("seccomp: filter built but bwrap could not load it; running without")
                if not self._config.disable_userns:
                    notes.append("bwrap --disable-userns failed; nested user namespaces are only blocked by seccomp")
                caps.update(await self._probe_user_network(self._config, notes))
        if not caps.get("bwrap_works"):
            self._config = None
            if self.allow_unsandboxed:
                notes.append("commands will run UNSANDBOXED (allow_unsandboxed=True)")
            else:
                notes.append("commands will be refused (SandboxUnavailable)")
        caps["probe_seconds"] = time.monotonic() - started
        caps["notes"] = tuple(notes)
        return SandboxCapabilities(**caps)

    async def _probe_user_network(self, config: _Config, notes: list[str]) -> dict[str, Any]:
        """slirp4netns for `network=True` runs: found, and giving a probe run its default route (with its
        own seccomp filter if it can). Why not is kept for `NetworkUnavailable`."""
        self._slirp_path = resolve_slirp4netns(self.slirp4netns)
        found: dict[str, Any] = {}
        if self._slirp_path is None:
            self._network_problem = f"{self.slirp4netns!r} is not installed (apt-get install slirp4netns)"
        else:
            found = {"slirp4netns": self._slirp_path, "slirp4netns_version": await version_of(self._slirp_path)}
            attempts = []
            for args, label in ((("--enable-seccomp",), "with --enable-seccomp"), ((), "without")):
                self._slirp_args = args
                try:
                    result = await self._probe_command(NETWORK_PROBE_SCRIPT, config, network=True)
                except NetworkUnavailable as exc:  # its cause says why, without its own sentence around it
                    problem = str(exc.__cause__ or exc)
                except Exception as exc:  # noqa: BLE001 - reported: network=True runs are then refused
                    problem = f"{type(exc).__name__}: {exc}"
                else:
                    if default_route_via_tap(result.output):
                        if attempts:
                            notes.append(f"network: slirp4netns runs without its own seccomp filter ({attempts[0]})")
                        return {**found, "user_network": True}
                    problem = f"no route out of the sandbox: {result.output.strip()[-500:]}"
                attempts.append(f"{label}: {problem}")
            self._network_problem = f"slirp4netns gave the probe run no network ({'; '.join(attempts)})"
        notes.append(f"network: {self._network_problem}; commands that need the network (setup_network) are "
                     "refused, the host's network is never shared instead")
        return found

    async def _probe_run(self, config: _Config) -> tuple[dict[str, Any], str | None]:
        try:
            result = await self._probe_command(PROBE_SCRIPT, config, network=False)
        except Exception as exc:
            return {}, f"{type(exc).__name__}: {exc}"
        return read_probe(result.exit_code, result.output, seccomp=config.seccomp,
                          disable_userns=config.disable_userns, pids_cgroup="pids" in config.cgroup_controllers,
                          root=self._is_root, uid=self.uid)

    async def _probe_command(self, script: str, config: _Config, *, network: bool) -> RunResult:
        workspace = Path(tempfile.mkdtemp(prefix="codegenapp-sandbox-probe-"))
        try:
            return await self._run(script, workspace=workspace, env={}, network=network, limits=PROBE_LIMITS,
                                   on_output=None, read_only_binds=(), config=config)
        finally:
            shutil.rmtree(workspace, ignore_errors=True)

    # ------------------------------------------------------------------------------------------- run

    async def run(self, command: str, *, workspace: Path, env: Mapping[str, str] = {}, network: bool = False,
                  limits: Limits = Limits(), on_output: Callable[[str], Awaitable[None]] | None = None,
                  read_only_binds: Sequence[Path] = ()) -> RunResult:
        """Run `command` with `/bin/sh -c` in the sandbox, cwd and HOME = the workspace (at /workspace).

        - `env` is added to the clean environment (it may override PATH, HOME, ...).
        - `network=True`: out through slirp4netns, not to the host's loopback (see the module docstring);
          `NetworkUnavailable` where the probe found no working slirp4netns. The default is a private
          network namespace with only loopback.
        - `on_output(chunk)` is awaited with decoded output as it arrives (all of it, not capped); if it
          raises, the error is logged and streaming stops, the run continues.
        - `read_only_binds`: host paths (absolute, existing) made visible read-only at the same path
          (ignored when running unsandboxed, where the whole host is visible anyway).
        - On the wall-clock timeout the whole tree is killed: `timed_out=True`, `exit_code=None`.
        - If the awaiting task is cancelled, the whole tree is killed (and waited for) before the
          CancelledError propagates.
        """
        config = await self._config_for(command)
        if network and config is not None and not self.capabilities.user_network:
            raise NetworkUnavailable(
                "This command needs the network, which the sandbox gives only through slirp4netns (a user-mode "
                "network stack that keeps the host's own services out of reach), and on the app's host "
                f"{self._network_problem}. The host's network is never shared instead.")
        return await self._run(command, workspace=workspace, env=env, network=network, limits=limits,
                               on_output=on_output, read_only_binds=read_only_binds, config=config)

    async def _config_for(self, command: str) -> _Config | None:
        """The bwrap configuration, None to run unsandboxed (allowed), or SandboxUnavailable."""
        caps = await self._ensure_probed()
        if not caps.sandboxed:
            if not self.allow_unsandboxed:
                raise SandboxUnavailable(
                    "refusing to run untrusted code: no working bubblewrap sandbox "
                    f"({'; '.join(caps.notes)}). Install it with `apt-get install bubblewrap`, or construct "
                    "Sandbox(allow_unsandboxed=True) for local, trusted use only.")
            log.warning(_UNSANDBOXED_WARNING, command, "; ".join(caps.notes))
            return None
        assert self._config is not None
        return self._config

    @contextlib.asynccontextmanager
    async def background(self, command: str, *, workspace: Path, env: Mapping[str, str] = {},
                         limits: Limits = Limits(), on_output: Callable[[str], Awaitable[None]] | None = None,
                         read_only_binds: Sequence[Path] = ()) -> AsyncIterator[BackgroundProcess]:
        """Start `command` (a server, say) under the same rules as `run` with no network (loopback
        only), and keep it running while the `async with` block runs. Leaving the block - normally, by
        an exception or by cancellation - kills the whole tree and waits (bounded) until it is gone.
        `limits.timeout_seconds` still applies: past it the tree is killed even if the block goes on."""
        config = await self._config_for(command)
        run, output, streamer, pump = await self._start(
            command, workspace=workspace, env=env, network=False, limits=limits, on_output=on_output,
            read_only_binds=read_only_binds, config=config)
        process = BackgroundProcess(run, output)
        watchdog = asyncio.create_task(self._kill_after(run, limits.timeout_seconds))
        try:
            yield process
        finally:
            watchdog.cancel()
            await uncancellable(self._stop_background(run, pump, streamer, watchdog))

    async def _kill_after(self, run: Proc, seconds: float) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(run.exited), seconds)
        except TimeoutError:
            await uncancellable(kill_tree(run))

    async def _stop_background(self, run: Proc, pump: asyncio.Task[None], streamer: Streamer,
                               watchdog: asyncio.Task[None]) -> None:
        await asyncio.wait([watchdog])
        await kill_tree(run)
        await asyncio.wait([pump], timeout=DRAIN_SECONDS)
        if not pump.done():
            pump.cancel()
            await asyncio.wait([pump])
        await streamer.flush()
        await cleanup(run)

    async def _start(self, command: str, **options: Any) -> tuple[Proc, Output, Streamer, asyncio.Task[None]]:
        """`_spawn` guarded against cancellation: a task cancelled just as its process was started
        would lose the handle (the result of the finished await is dropped for the CancelledError)
        and leave the process running. The start is finished, what it started killed, then the
        cancellation goes on."""
        start = asyncio.ensure_future(self._spawn(command, **options))
        try:
            return await asyncio.shield(start)
        except asyncio.CancelledError:
            await uncancellable(self._abandon(start))
            raise

    async def _abandon(self, start: "asyncio.Future[tuple[Proc, Output, Streamer, asyncio.Task[None]]]") -> None:
        try:
            run, _output, _streamer, pump = await start
        except BaseException:  # noqa: BLE001 - it did not start: nothing runs
            return
        await kill_tree(run)
        pump.cancel()
        await asyncio.wait([pump])
        await cleanup(run)

    async def _spawn(self, command: str, *, workspace: Path, env: Mapping[str, str], network: bool, limits: Limits,
                     on_output: Callable[[str], Awaitable[None]] | None, read_only_binds: Sequence[Path],
                     config: _Config | None) -> tuple[Proc, Output, Streamer, asyncio.Task[None]]:
        """Spawn `command` and start pumping its output (shared by `run` and `background`)."""
        workspace = Path(workspace).resolve(strict=True)
        if not workspace.is_dir():
            raise NotADirectoryError(f"workspace {workspace} is not a directory")
        sandbox_env = self._sandbox_env(env, home=WORKSPACE_MOUNT if config else str(workspace))
        binds = [self._check_bind(p) for p in read_only_binds] if config else []
        if config is not None and self._is_root:
            await asyncio.to_thread(claim_tree, workspace, self.uid, self.gid)
        output = Output(limits.max_output_bytes)
        if config is not None:
            run = await self._spawn_bwrap(command, workspace, sandbox_env, network, limits, binds, config)
        else:
            run = await self._spawn_direct(command, workspace, sandbox_env, limits)
        streamer = Streamer(on_output)
        pump = asyncio.create_task(read_output(run.proc.stdout, output, streamer))
        return run, output, streamer, pump

    async def _run(self, command: str, *, workspace: Path, env: Mapping[str, str], network: bool, limits: Limits,
                   on_output: Callable[[str], Awaitable[None]] | None, read_only_binds: Sequence[Path],
                   config: _Config | None) -> RunResult:
        started = time.monotonic()
        run, output, streamer, pump = await self._start(
            command, workspace=workspace, env=env, network=network, limits=limits, on_output=on_output,
            read_only_binds=read_only_binds, config=config)
        timed_out = False
        try:
            try:
                async with asyncio.timeout(limits.timeout_seconds):
                    await asyncio.shield(run.exited)
                    await reap_leftovers(run)  # the unsandboxed group, or a non-empty cgroup
                    await asyncio.wait([pump], timeout=DRAIN_SECONDS if not run.sandboxed else None)
            except TimeoutError:
                # (if the command had exited and only a slow on_output held up the draining, it did not time out)
                timed_out = not run.exited.done()
                await uncancellable(kill_tree(run))
                await asyncio.wait([pump], timeout=DRAIN_SECONDS)
            except BaseException:  # cancelled (a newer head supersedes this run) or anything unexpected
                await uncancellable(kill_tree(run))
                raise
            finally:
                if not pump.done():
                    pump.cancel()
                    await asyncio.wait([pump])
            exit_code, sig = _exit_status(run.proc.returncode, timed_out)
            notes = limit_notes(limits, timed_out=timed_out, signal_number=sig,
                                events=run.cgroup.events() if run.cgroup is not None else {})
            for note in notes:
                output.feed(note.encode())
                await streamer.send(note)
            await streamer.flush()
        finally:
            await uncancellable(cleanup(run))
        return RunResult(exit_code=exit_code, timed_out=timed_out, output=output.render(),
                         output_truncated_bytes=output.dropped, duration_seconds=time.monotonic() - started,
                         signal=sig)

    @staticmethod
    def _sandbox_env(env: Mapping[str, str], *, home: str) -> dict[str, str]:
        result = {"PATH": SANDBOX_PATH, "HOME": home, "LANG": "C.UTF-8", "TERM": "dumb", "CI": "true"}
        for key, value in env.items():
            if not key or "=" in key or "\0" in key or "\0" in str(value):
                raise ValueError(f"invalid environment variable name or value: {key!r}")
            result[key] = str(value)
        return result

    @staticmethod
    def _check_bind(path: Path) -> tuple[Path, str]:
        """(resolved host source, destination inside = the path as given, normalised)."""
        path = Path(path)
        if not path.is_absolute():
            raise ValueError(f"read-only bind {path} must be an absolute path")
        resolved = path.resolve(strict=True)
        dest = os.path.normpath(path)
        for candidate in (resolved, Path(dest)):
            if candidate == Path("/") or candidate.parts[1:2] in (("proc",), ("sys",), ("dev",), ("workspace",)):
                raise ValueError(f"refusing to bind {path} into the sandbox")
        return resolved, dest

    async def _spawn_bwrap(self, command: str, workspace: Path, env: Mapping[str, str], network: bool,
                           limits: Limits, ro_binds: Sequence[tuple[Path, str]], config: _Config) -> Proc:
        assert self._bwrap_path is not None
        fds: list[int] = []
        info_r = info_w = block_r = block_w = -1
        cgroup: Cgroup | None = None
        try:
            binds: list[Bind] = []
            for i, (path, dest, writable) in enumerate(
                    [*((p, dest, False) for p, dest in ro_binds), (workspace, WORKSPACE_MOUNT, True)]):
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
                fds.append(fd)
                st = os.fstat(fd)
                stage = None
                if self._stage is not None:
                    stage = self._stage / ("workspace" if writable else f"ro{i}")
                binds.append(Bind(fd=fd, source=path, dest=dest, writable=writable, is_dir=stat.S_ISDIR(st.st_mode),
                                  dev_ino=(st.st_dev, st.st_ino), stage=stage))
            data_fds = {}
            for dest, data in etc_files(self.uid, self.gid, network).items():
                fd = memfd("etc", data)
                fds.append(fd)
                data_fds[dest] = fd
            seccomp_fd = None
            if config.seccomp and self._seccomp_bpf is not None:
                seccomp_fd = memfd("seccomp", self._seccomp_bpf)
                fds.append(seccomp_fd)
            info_r, info_w = os.pipe2(os.O_CLOEXEC)
            if network:  # the command waits until slirp4netns has set up its network (network.py)
                block_r, block_w = os.pipe2(os.O_CLOEXEC)
            options = bwrap_options(uid=self.uid, gid=self.gid, network=network, limits=limits,
                                    disable_userns=config.disable_userns, env=env, binds=binds, data_fds=data_fds,
                                    seccomp_fd=seccomp_fd, info_fd=info_w, block_fd=block_r if network else None)
            args_fd = memfd("bwrap-args", b"".join(os.fsencode(o) + b"\0" for o in options))
            fds.append(args_fd)
            if config.cgroup_controllers:
                cgroup = Cgroup(config.cgroup_controllers)
                cgroup.create(limits)
            preexec = preexec_fn(limits, cgroup, uid=self.uid, gid=self.gid, switch_uid=self._is_root,
                                 stage_dir=self._stage, stage=[b for b in binds if b.stage is not None],
                                 own_network=network)
            # Only the fds bwrap consumes (and closes) may be passed: an O_PATH fd of a directory reaching the
            # command would let it openat(fd, "..") its way out of the mount namespace.
            passed = [fd for fd in fds if all(b.fd != fd or b.stage is None for b in binds)] + [info_w]
            passed += [block_r] if network else []
            proc, exited, transport = await start_process(
                self._bwrap_path, "--args", str(args_fd), "--", "/bin/sh", "-c", command,
                env={"PATH": SANDBOX_PATH, "LANG": "C.UTF-8"}, cwd="/", pass_fds=passed, preexec_fn=preexec)
        except BaseException:
            for fd in (*fds, info_r, info_w, block_r, block_w):
                if fd >= 0:
                    os.close(fd)
            if cgroup is not None:
                await cgroup.remove()
            raise
        for fd in (*fds, info_w, block_r):
            if fd >= 0:
                os.close(fd)
        info = ChildInfo(asyncio.get_running_loop(), info_r)
        run = Proc(proc=proc, exited=exited, transport=transport, sandboxed=True, info=info, cgroup=cgroup)
        if network:
            try:
                run.network = await self._attach_network(info)
            except BaseException as exc:
                await uncancellable(kill_tree(run))  # before the block fd closes: the command never starts
                await uncancellable(cleanup(run))
                os.close(block_w)
                if isinstance(exc, (UserNetworkError, OSError)):
                    raise NetworkUnavailable(f"could not give the sandbox its network: {exc}") from exc
                raise
            os.write(block_w, b"1")
            os.close(block_w)
        return run

    async def _attach_network(self, info: ChildInfo) -> UserNetwork:
        """slirp4netns on the network namespace of the run's pid 1, once bwrap has said which process that is."""
        assert self._slirp_path is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(info.read), READY_SECONDS)
        pid, pid_namespace = info.info.get("child-pid"), info.info.get("pid-namespace")
        if not isinstance(pid, int) or not isinstance(pid_namespace, int):
            raise UserNetworkError(f"bwrap did not report its sandbox's first process ({info.info or 'nothing'})")
        netns_fd = open_network_namespace(pid, pid_namespace)
        try:
            return await UserNetwork.attach(
                self._slirp_path, netns_fd, extra_args=self._slirp_args,
                preexec_fn=helper_preexec_fn(uid=self.uid, gid=self.gid, switch_uid=self._is_root))
        finally:
            os.close(netns_fd)

    async def _spawn_direct(self, command: str, workspace: Path, env: Mapping[str, str], limits: Limits) -> Proc:
        proc, exited, transport = await start_process(
            "/bin/sh", "-c", command, env=dict(env), cwd=str(workspace), pass_fds=[],
            preexec_fn=preexec_fn(limits, None, uid=self.uid, gid=self.gid, switch_uid=False,
                                  stage_dir=self._stage, stage=[]))
        return Proc(proc=proc, exited=exited, transport=transport, sandboxed=False)


def _exit_status(rc: int | None, timed_out: bool) -> tuple[int | None, int | None]:
    """(exit code, the signal that ended the command): 128+N and N for a signal N, (None, SIGKILL) when
    the wall-clock timeout killed it."""
    if timed_out or rc is None:
        return None, int(signal.SIGKILL)
    if rc < 0:
        return 128 - rc, -rc
    return rc, rc - 128 if 128 < rc < 128 + signal.NSIG else None
