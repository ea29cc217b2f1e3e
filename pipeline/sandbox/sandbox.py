"""The one place untrusted code runs: a PR's setup/validate commands (and later a UI app, a local agent).

Layers (each probed once at start, see `SandboxCapabilities`; the optional ones degrade explicitly):

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
3. **seccomp** (optional, pyseccomp over libseccomp2): `DENIED_SYSCALLS` fail with EPERM for x86-64,
   i386 and x32; `clone` with namespace flags fails with EPERM and `clone3` with ENOSYS (libc falls back
   to `clone`, whose flags the filter can inspect). Passed to bwrap with `--seccomp FD`, so it applies
   to the command only, after bwrap has set up the namespaces.
4. **rlimits** in preexec_fn (required): CPU seconds, file size, processes, open files, core=0, and
   address space when no memory cgroup is available. RLIMIT_NPROC is per *real uid*, which is why the
   dedicated uid matters; note it is shared by all concurrent sandboxes (they all run as the same uid),
   so when the pids cgroup gives an exact per-run limit, RLIMIT_NPROC becomes a looser backstop
   (`NPROC_SHARED_FACTOR` x max_processes).
5. **cgroup v1** memory and pids limits (optional; root, `/sys/fs/cgroup/{memory,pids}` writable): one
   child cgroup per run under `codegenapp-sandbox/`, the child joins it in preexec_fn before exec, the
   cgroup is emptied (SIGKILL) and removed afterwards. This machine has no cgroup v2 and no systemd-run.
6. **Wall-clock timeout, cancellation, output cap**: see `Sandbox.run`. `Sandbox.background` keeps a
   command (the UI stage's app under test) running during an `async with` block, under the same rules
   with no network, and kills its whole tree when the block ends, however it ends.

Filesystem inside: `/usr` read-only (with the /bin, /sbin, /lib* symlinks as on the host), the
workspace read-write at `/workspace` (cwd, and HOME, so caches such as `pip install --user` persist from
setup to validate), a private tmpfs at `/tmp` (size-capped), bwrap's minimal `/dev`, a fresh `/proc`
of the sandbox's own pid namespace, optional caller-given read-only binds at the same path, and the
root tmpfs itself remounted read-only. No /root, /home, /var, /run, /sys, /opt, no DATA_DIR. /etc holds
only: synthetic passwd, group, hosts, hostname, nsswitch.conf (so `id`, `whoami`, `getpass`, git and
`localhost` work) and read-only binds of public, non-secret files tools need: alternatives (Debian's
/usr/bin/awk etc. are symlinks through it), ssl/certs, ssl/openssl.cnf, ca-certificates (TLS; not
/etc/ssl/private), ld.so.cache, ld.so.conf*, localtime, timezone, os-release, services, protocols,
mime.types, python3* (Debian's sitecustomize), and with network: resolv.conf, gai.conf, host.conf and
the host's hosts file.

Binds: the unprivileged bwrap resolves bind sources by path, and the workspace's real ancestors (a
0700 DATA_DIR, pytest's /tmp/pytest-of-root) are not searchable by the sandbox uid. So as root, the spawned
child first enters a private mount namespace of its own (nothing propagates to the host's mount table),
mounts a small tmpfs on `STAGE_DIR` (/run/codegenapp-sandbox, an empty root-owned 0755 directory) and
binds the workspace and the read-only binds there, each checked to be the very inode the app opened
(O_PATH) before the run; bwrap binds from those paths. Without root, `--bind-fd`/`--ro-bind-fd` are used.
No other file descriptor reaches the command (an O_PATH directory fd would allow `openat(fd, "..")`).
All bwrap options (including `--setenv` values) go through a memfd with `--args`, so environment values
given by the caller never appear in the host's `ps`; only `bwrap --args N -- /bin/sh -c <command>` does.

Environment: `--clearenv`, then PATH, HOME=/workspace, LANG=C.UTF-8, TERM=dumb, CI=true, then the
caller's env (which may override those). The bwrap process itself is started with a two-variable
environment, so nothing of the app's environment (secrets, DATABASE_URL, ...) is ever passed on.

**Network policy**: `network=False` (the default; always for validate commands) gives a private network
namespace with only `lo`: no route anywhere, not even to the host's 127.0.0.1. `network=True` (an
option for setup steps that download dependencies) keeps every other namespace but *shares the host's
network namespace* (`--share-net`). Trade-off: the command can then reach everything the host can -
the internet, the internal network, cloud metadata endpoints, and the host's loopback services (the
app's own HTTP port, PostgreSQL on 127.0.0.1, ...) and abstract unix sockets. So services on the host
must never trust loopback connections (no `trust` auth in pg_hba.conf for 127.0.0.1, no unauthenticated
admin endpoints), and setup with network should be treated as less isolated than validate. A user-mode
network stack (pasta/slirp4netns, not installed here) with host-loopback disabled would close this gap.

**Workspace ownership** (root): before each run the workspace tree is chowned (race-safe `os.fwalk`, never
following symlinks) to the sandbox uid, so the command can modify the checkout; it stays owned by the
sandbox uid afterwards. The app, being root, can still read and delete everything (shutil.rmtree works,
even on mode-000 directories). Regular files with more than one hard link are NOT chowned (they may
share an inode with app data, e.g. `git clone --local` hardlinks the mirror's objects): they stay
read-only for the sandbox. Git run by the app in such a workspace reports "detected dubious
ownership". That is git protecting root from a `.git/config` (core.fsmonitor, hooks, ...) that the
sandboxed code may have planted: after a sandbox run, treat the workspace as untrusted; do not run git
in it with `-c safe.directory=*`; prefer the mirror (`git --git-dir=<mirror> ...`) or throw it away.

**Unsandboxed fallback**: without a working bubblewrap, `run()` raises `SandboxUnavailable`, unless the
Sandbox was constructed with `allow_unsandboxed=True` (only for the local `codegenapp validate`): then
it logs a loud warning on every run and runs `/bin/sh -c` directly in the workspace with the clean
environment, rlimits, timeout and output cap only (no uid change: RLIMIT_NPROC does not bind root;
a process that calls setsid() escapes the process-group kill).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import ctypes
import errno
import glob
import itertools
import json
import logging
import os
import resource
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

WORKSPACE_MOUNT = "/workspace"
DEFAULT_SANDBOX_UID = 61000
SANDBOX_HOSTNAME = "sandbox"
SANDBOX_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_PARENT = "codegenapp-sandbox"
NPROC_SHARED_FACTOR = 4
KILL_WAIT_SECONDS = 10.0
DRAIN_SECONDS = 2.0
READ_CHUNK = 64 * 1024

DENIED_SYSCALLS: tuple[str, ...] = (
    # required by the issue
    "ptrace", "mount", "umount2", "unshare", "setns", "keyctl", "bpf", "perf_event_open", "add_key",
    "request_key", "init_module", "finit_module", "kexec_load", "reboot", "swapon", "pivot_root", "chroot",
    # same families: other mount/kernel/clock/accounting entry points and cross-process memory access
    "umount", "swapoff", "delete_module", "kexec_file_load", "open_tree", "move_mount", "fsopen", "fsconfig",
    "fsmount", "fspick", "mount_setattr", "process_vm_readv", "process_vm_writev", "kcmp", "userfaultfd",
    "open_by_handle_at", "acct", "quotactl", "settimeofday", "clock_settime", "clock_adjtime", "syslog",
    "vhangup", "lookup_dcookie", "iopl", "ioperm", "io_uring_setup", "io_uring_enter", "io_uring_register",
)
_CLONE_NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000,
                          0x40000000, 0x00000080)  # NEWNS NEWCGROUP NEWUTS NEWIPC NEWUSER NEWPID NEWNET NEWTIME
_ETC_READ_ONLY = ("alternatives", "ssl/certs", "ssl/openssl.cnf", "ca-certificates", "ld.so.cache", "ld.so.conf",
                  "ld.so.conf.d", "localtime", "timezone", "os-release", "services", "protocols", "mime.types")
_ETC_NETWORK = ("resolv.conf", "gai.conf", "host.conf", "hosts")
_NAMESPACES = ("user", "mnt", "pid", "net", "ipc", "uts")
_PR_SET_NO_NEW_PRIVS = 38
_CLONE_NEWNS = 0x00020000
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_BIND, _MS_REC, _MS_PRIVATE = 0x2, 0x4, 0x8, 0x1000, 0x4000, 0x40000
# Root mode: an empty root-owned 0755 directory on which each spawn mounts, in a private mount namespace of
# its own, a tmpfs holding bind mounts of the workspace and the read-only binds (see _preexec).
STAGE_DIR = Path("/run/codegenapp-sandbox")
_UNSANDBOXED_WARNING = (
    "!!! SANDBOX DISABLED: running %r WITHOUT bubblewrap (allow_unsandboxed=True): no namespaces, no "
    "dedicated uid, no seccomp, full filesystem and network access - only rlimits, timeout and a clean "
    "environment apply. Never use this for code you do not trust. Reason: %s")


class SandboxUnavailable(Exception):
    """No working bubblewrap, and the Sandbox was not allowed to run commands unsandboxed."""


@dataclass(frozen=True)
class Limits:
    timeout_seconds: float = 600
    cpu_seconds: int = 600
    memory_bytes: int = 2 * 1024**3
    max_processes: int = 256
    max_file_bytes: int = 1 * 1024**3
    max_output_bytes: int = 1 * 1024**2
    max_open_files: int = 4096  # extension of the API (RLIMIT_NOFILE); capped at the host's hard limit

    def __post_init__(self) -> None:
        for name in ("timeout_seconds", "cpu_seconds", "memory_bytes", "max_processes", "max_file_bytes",
                     "max_output_bytes", "max_open_files"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Limits.{name} must be positive, got {getattr(self, name)!r}")


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


class BackgroundProcess:
    """A command started by `Sandbox.background`, running until its `async with` block ends."""

    def __init__(self, run: "_Proc", output: "_Output") -> None:
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


@dataclass(frozen=True)
class SandboxCapabilities:
    """What the start-up probe measured. `sandboxed` is False when commands would be refused (or run
    unsandboxed, if allowed); the other layers are reported for /health and the logs."""

    bwrap: str | None = None
    bwrap_version: str | None = None
    bwrap_works: bool = False
    user_namespace: bool = False
    mount_namespace: bool = False
    pid_namespace: bool = False
    net_namespace: bool = False
    ipc_namespace: bool = False
    uts_namespace: bool = False
    dedicated_uid: bool = False  # a uid switch from root to `uid`
    uid: int | None = None  # the uid commands run as (inside == outside)
    capabilities_dropped: bool = False
    no_new_privs: bool = False
    seccomp: bool = False
    nested_userns_disabled: bool = False
    rlimits: bool = False
    cgroup_memory: bool = False
    cgroup_pids: bool = False
    allow_unsandboxed: bool = False
    probe_seconds: float = 0.0
    notes: tuple[str, ...] = ()

    @property
    def sandboxed(self) -> bool:
        return self.bwrap_works

    @property
    def mode(self) -> str:
        if self.bwrap_works:
            return "bwrap"
        return "unsandboxed" if self.allow_unsandboxed else "unavailable"

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary for /health."""
        return {
            "mode": self.mode,
            "sandboxed": self.sandboxed,
            "bwrap": self.bwrap,
            "bwrap_version": self.bwrap_version,
            "uid": self.uid,
            "layers": {
                "user_namespace": self.user_namespace,
                "mount_namespace": self.mount_namespace,
                "pid_namespace": self.pid_namespace,
                "net_namespace": self.net_namespace,
                "ipc_namespace": self.ipc_namespace,
                "uts_namespace": self.uts_namespace,
                "dedicated_uid": self.dedicated_uid,
                "capabilities_dropped": self.capabilities_dropped,
                "no_new_privs": self.no_new_privs,
                "seccomp": self.seccomp,
                "nested_userns_disabled": self.nested_userns_disabled,
                "rlimits": self.rlimits,
                "cgroup_memory": self.cgroup_memory,
                "cgroup_pids": self.cgroup_pids,
            },
            "probe_seconds": round(self.probe_seconds, 4),
            "notes": list(self.notes),
        }

    def summary(self) -> str:
        layers = [name for name, on in self.describe()["layers"].items() if on]
        return f"sandbox mode={self.mode} uid={self.uid} layers={','.join(layers) or '-'}"


# ---------------------------------------------------------------------------------------------- helpers


def build_seccomp_filter() -> bytes:
    """The BPF program for `bwrap --seccomp`; raises ImportError/OSError when pyseccomp/libseccomp fail."""
    import pyseccomp as seccomp  # optional layer: imported lazily so its absence only disables seccomp

    flt = seccomp.SyscallFilter(seccomp.ALLOW)
    if seccomp.system_arch() == seccomp.Arch.X86_64:
        for arch in (seccomp.Arch.X86, seccomp.Arch.X32):  # no bypass through the 32-bit syscall ABIs
            if not flt.exist_arch(arch):
                flt.add_arch(arch)
    eperm = seccomp.ERRNO(errno.EPERM)
    for name in DENIED_SYSCALLS:
        try:
            flt.add_rule(eperm, name)
        except OSError:  # unknown on this architecture
            continue
    for flag in _CLONE_NAMESPACE_FLAGS:
        flt.add_rule(eperm, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
    try:
        flt.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")  # its flags live in memory the filter cannot read
    except OSError:
        pass
    fd = os.memfd_create("seccomp-export", os.MFD_CLOEXEC)
    try:
        flt.export_bpf(_Fileno(fd))
        os.lseek(fd, 0, os.SEEK_SET)
        return _read_all(fd)
    finally:
        os.close(fd)


class _Fileno:
    def __init__(self, fd: int) -> None:
        self._fd = fd

    def fileno(self) -> int:
        return self._fd


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _memfd(name: str, data: bytes) -> int:
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def system_binds() -> list[str]:
    """bwrap options for the host's programs and libraries: `/usr` read-only, and `/bin`, `/sbin`, `/lib*`
    as on the host (links on a merged-/usr system, read-only directories otherwise). Shared with the UI
    check's browser sandbox (pipeline/ui_check/browser.py)."""
    a = ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        host = f"/{name}"
        if os.path.islink(host):
            a += ["--symlink", os.readlink(host), host]
        elif os.path.isdir(host):
            a += ["--ro-bind", host, host]
    return a


def _resolve_bwrap(bwrap: str) -> str | None:
    if os.sep in bwrap:
        return bwrap if os.path.isfile(bwrap) and os.access(bwrap, os.X_OK) else None
    return shutil.which(bwrap, path="/usr/local/bin:/usr/bin:/bin")


class _Libc:
    """prctl, unshare and mount from libc, resolved once in the parent (preexec_fn only calls them)."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.prctl = libc.prctl
        self.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        self.prctl.restype = ctypes.c_int
        self.unshare = libc.unshare
        self.unshare.argtypes = [ctypes.c_int]
        self.unshare.restype = ctypes.c_int
        self.mount = libc.mount
        self.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
        self.mount.restype = ctypes.c_int

    @staticmethod
    def check(result: int, what: str) -> None:
        if result != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")


_LIBC = _Libc()


def _prepare_stage_dir() -> Path:
    STAGE_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    st = os.lstat(STAGE_DIR)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
        raise OSError(f"{STAGE_DIR} must be a root-owned directory not writable by others")
    if st.st_mode & 0o777 != 0o755:
        os.chmod(STAGE_DIR, 0o755)
    return STAGE_DIR


def fresh_dir(path: Path) -> None:
    """An empty real directory at `path` in a workspace, whatever PR code left there (a link is removed,
    not followed), writable by the sandbox."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
    path.mkdir(mode=0o777)
    os.chmod(path, 0o777)


def _claim_tree(root: Path, uid: int, gid: int) -> int:
    """chown the workspace tree to the sandbox uid, never following symlinks (fd-relative, race-safe)
    and leaving multiply-linked regular files alone. Returns how many entries were changed."""
    changed = 0
    top = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(top)
        if (st.st_uid, st.st_gid) != (uid, gid):
            os.fchown(top, uid, gid)
            changed += 1
        for _dirpath, dirnames, filenames, dirfd in os.fwalk(".", dir_fd=top, follow_symlinks=False):
            for name in itertools.chain(dirnames, filenames):
                try:
                    st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
                    if (st.st_uid, st.st_gid) == (uid, gid):
                        continue
                    if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                        continue  # may share its inode with app data (hard links): keep it read-only
                    os.chown(name, uid, gid, dir_fd=dirfd, follow_symlinks=False)
                    changed += 1
                except FileNotFoundError:
                    continue
    finally:
        os.close(top)
    return changed


class _Output:
    """Merged output with a cap: keeps the first quarter and the last three quarters of the budget."""

    def __init__(self, max_bytes: int) -> None:
        self.head_limit = max_bytes // 4
        self.tail_limit = max_bytes - self.head_limit
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def feed(self, data: bytes) -> None:
        self.total += len(data)
        room = self.head_limit - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data[-self.tail_limit:]
            excess = len(self.tail) - self.tail_limit
            if excess > 0:
                del self.tail[:excess]

    @property
    def dropped(self) -> int:
        return self.total - len(self.head) - len(self.tail)

    def render(self) -> str:
        head = self.head.decode("utf-8", errors="replace")
        tail = self.tail.decode("utf-8", errors="replace")
        if not self.dropped:
            return head + tail
        return f"{head}\n… {self.dropped} bytes omitted …\n{tail}"


class _ChildInfo:
    """Reads bwrap's --info-fd JSON to learn the host pid of the sandbox's pid 1 and holds a pidfd on it,
    so a kill can wait until the whole pid namespace is gone (the kernel kills the namespace before pid 1
    is reported as exited)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int) -> None:
        self.loop = loop
        self.fd: int | None = fd
        self.buf = b""
        self.pidfd: int | None = None
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
            pid = info.get("child-pid") if isinstance(info, dict) else None
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


class _Cgroup:
    """A per-run cgroup v1 child in the memory and/or pids hierarchy."""

    _counter = itertools.count(1)

    def __init__(self, controllers: Sequence[str]) -> None:
        name = f"run-{os.getpid()}-{next(self._counter)}"
        self.dirs = [CGROUP_ROOT / c / CGROUP_PARENT / name for c in controllers]

    def create(self, limits: Limits) -> None:
        for d in self.dirs:
            d.mkdir()
            controller = d.parent.parent.name
            if controller == "memory":
                (d / "memory.limit_in_bytes").write_text(str(limits.memory_bytes))
                memsw = d / "memory.memsw.limit_in_bytes"
                if memsw.exists():
                    try:
                        memsw.write_text(str(limits.memory_bytes))
                    except OSError:
                        pass
            elif controller == "pids":
                (d / "pids.max").write_text(str(limits.max_processes))

    @property
    def procs_files(self) -> list[bytes]:
        return [os.fsencode(d / "cgroup.procs") for d in self.dirs]

    def pids(self) -> set[int]:
        found: set[int] = set()
        for d in self.dirs:
            try:
                found.update(int(p) for p in (d / "cgroup.procs").read_text().split())
            except OSError:
                pass
        return found

    def events(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for d in self.dirs:
            for fname in ("memory.oom_control", "pids.events"):
                try:
                    for line in (d / fname).read_text().splitlines():
                        key, _, value = line.partition(" ")
                        if value.strip().isdigit():
                            out[f"{fname.split('.')[0]}.{key}"] = int(value)
                except OSError:
                    pass
        return out

    async def kill_all(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while pids := self.pids():
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.005)
        return True

    async def remove(self) -> None:
        for d in self.dirs:
            for attempt in range(50):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if attempt == 49:
                        log.warning("sandbox: could not remove cgroup %s", d)
                    await asyncio.sleep(0.01)


def _cleanup_stale_cgroups(controllers: Sequence[str]) -> None:
    for c in controllers:
        parent = CGROUP_ROOT / c / CGROUP_PARENT
        for child in parent.glob("run-*"):
            try:
                owner = int(child.name.split("-")[1])
                os.kill(owner, 0)
                continue  # its app process is alive
            except (ValueError, IndexError):
                pass
            except ProcessLookupError:
                pass
            except PermissionError:
                continue
            try:  # its app died (e.g. SIGKILL); bwrap --die-with-parent normally took the sandbox along
                for pid in (child / "cgroup.procs").read_text().split():
                    os.kill(int(pid), signal.SIGKILL)
                child.rmdir()
            except (OSError, ValueError):
                pass


# ---------------------------------------------------------------------------------------------- sandbox


@dataclass
class _Config:
    seccomp: bool
    disable_userns: bool
    cgroup_controllers: tuple[str, ...] = ()


@dataclass
class _Bind:
    fd: int  # O_PATH fd opened by the app
    source: Path  # resolved host path
    dest: str  # path inside the sandbox
    writable: bool
    is_dir: bool
    dev_ino: tuple[int, int]  # identity of `fd`, re-checked in preexec_fn
    stage: Path | None  # root mode: where _preexec binds it for bwrap to pick up


@dataclass
class _Proc:
    proc: asyncio.subprocess.Process
    exited: asyncio.Future[None]  # set when the process exits, even if something still holds its stdout
    transport: asyncio.SubprocessTransport
    sandboxed: bool
    info: _ChildInfo | None = None
    cgroup: _Cgroup | None = None


class Sandbox:
    """Runs shell command lines in a bubblewrap sandbox. Construct with `await Sandbox.probe()`, once per
    process; `run()` may be called concurrently."""

    def __init__(self, *, allow_unsandboxed: bool = False, uid: int | None = None, bwrap: str = "bwrap") -> None:
        self.allow_unsandboxed = allow_unsandboxed
        self.bwrap = bwrap
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
                if self._probe_cgroup(controller, notes):
                    controllers.append(controller)
            _cleanup_stale_cgroups(controllers)
        else:
            notes.append("cgroups: not root, per-run memory/pids cgroups unavailable (RLIMIT_AS/NPROC only)")
        caps["cgroup_memory"] = "memory" in controllers
        caps["cgroup_pids"] = "pids" in controllers

        if self._is_root:
            try:
                self._stage = _prepare_stage_dir()
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
        self._bwrap_path = _resolve_bwrap(self.bwrap)
        caps["bwrap"] = self._bwrap_path
        if self._bwrap_path is None:
            notes.append(f"bwrap: {self.bwrap!r} not found or not executable (apt-get install bubblewrap)")
        else:
            caps["bwrap_version"] = await self._bwrap_version()
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
        if not caps.get("bwrap_works"):
            self._config = None
            if self.allow_unsandboxed:
                notes.append("commands will run UNSANDBOXED (allow_unsandboxed=True)")
            else:
                notes.append("commands will be refused (SandboxUnavailable)")
        caps["probe_seconds"] = time.monotonic() - started
        caps["notes"] = tuple(notes)
        return SandboxCapabilities(**caps)

    def _probe_cgroup(self, controller: str, notes: list[str]) -> bool:
        base = CGROUP_ROOT / controller
        if not base.is_dir() or not os.access(base, os.W_OK):
            notes.append(f"cgroup {controller}: {base} is not a writable cgroup v1 hierarchy")
            return False
        try:
            (base / CGROUP_PARENT).mkdir(exist_ok=True)
            test = base / CGROUP_PARENT / f"probe-{os.getpid()}"
            test.mkdir(exist_ok=True)
            try:
                knob = "memory.limit_in_bytes" if controller == "memory" else "pids.max"
                (test / knob).write_text("67108864" if controller == "memory" else "64")
            finally:
                test.rmdir()
            return True
        except OSError as exc:
            notes.append(f"cgroup {controller}: not usable ({exc})")
            return False

    async def _bwrap_version(self) -> str | None:
        assert self._bwrap_path
        try:
            proc = await asyncio.create_subprocess_exec(
                self._bwrap_path, "--version", stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, env={"PATH": SANDBOX_PATH})
            out, _ = await asyncio.wait_for(proc.communicate(), 10)
            return out.decode(errors="replace").strip() or None
        except (OSError, TimeoutError):
            return None

    _PROBE_SCRIPT = (
        "for ns in user mnt pid net ipc uts; do echo \"ns_$ns=$(readlink /proc/self/ns/$ns)\"; done; "
        "sed -n 's/^\\(Uid\\|CapEff\\|NoNewPrivs\\|Seccomp\\):[[:space:]]*\\([^[:space:]]*\\).*/\\1=\\2/p' "
        "/proc/self/status; "
        "sed -n 's/^Max processes[[:space:]]*\\([^[:space:]]*\\).*/nproc=\\1/p' /proc/self/limits; "
        "echo probe=ok"
    )

    async def _probe_run(self, config: _Config) -> tuple[dict[str, Any], str | None]:
        limits = Limits(timeout_seconds=15, cpu_seconds=10, memory_bytes=512 * 1024**2, max_processes=64,
                        max_file_bytes=1024**2, max_output_bytes=64 * 1024)
        workspace = Path(tempfile.mkdtemp(prefix="codegenapp-sandbox-probe-"))
        try:
            result = await self._run(self._PROBE_SCRIPT, workspace=workspace, env={}, network=False,
                                     limits=limits, on_output=None, read_only_binds=(), config=config)
        except Exception as exc:
            return {}, f"{type(exc).__name__}: {exc}"
        finally:
            shutil.rmtree(workspace, ignore_errors=True)
        values = dict(line.split("=", 1) for line in result.output.splitlines() if "=" in line)
        if result.exit_code != 0 or values.get("probe") != "ok":
            return {}, f"exit {result.exit_code}: {result.output.strip()[-500:]}"
        measured: dict[str, Any] = {}
        for ns in _NAMESPACES:
            try:
                host = os.readlink(f"/proc/self/ns/{ns}")
            except OSError:
                host = None
            inside = values.get(f"ns_{ns}")
            key = {"mnt": "mount", "user": "user"}.get(ns, ns) + "_namespace"
            measured[key] = bool(inside) and inside != host
        measured["dedicated_uid"] = self._is_root and values.get("Uid") == str(self.uid)
        measured["capabilities_dropped"] = values.get("CapEff", "").strip("0") == "" and "CapEff" in values
        measured["no_new_privs"] = values.get("NoNewPrivs") == "1"
        measured["seccomp"] = config.seccomp and values.get("Seccomp") == "2"
        measured["nested_userns_disabled"] = config.disable_userns or measured["seccomp"]
        nproc_expected = limits.max_processes * (NPROC_SHARED_FACTOR if "pids" in config.cgroup_controllers else 1)
        measured["rlimits"] = values.get("nproc") == str(nproc_expected)
        missing = [k for k in ("user_namespace", "mount_namespace", "pid_namespace", "net_namespace",
                               "capabilities_dropped", "no_new_privs") if not measured[k]]
        if values.get("Uid") in (None, "0"):
            missing.append("non-root uid")
        if missing:
            return {}, f"isolation not in effect: {', '.join(missing)} ({values})"
        return measured, None

    # ------------------------------------------------------------------------------------------- run

    async def run(self, command: str, *, workspace: Path, env: Mapping[str, str] = {}, network: bool = False,
                  limits: Limits = Limits(), on_output: Callable[[str], Awaitable[None]] | None = None,
                  read_only_binds: Sequence[Path] = ()) -> RunResult:
        """Run `command` with `/bin/sh -c` in the sandbox, cwd and HOME = the workspace (at /workspace).

        - `env` is added to the clean environment (it may override PATH, HOME, ...).
        - `network=True` shares the host's network namespace (see the module docstring for the trade-off);
          the default is a private network namespace with only loopback.
        - `on_output(chunk)` is awaited with decoded output as it arrives (all of it, not capped); if it
          raises, the error is logged and streaming stops, the run continues.
        - `read_only_binds`: host paths (absolute, existing) made visible read-only at the same path
          (ignored when running unsandboxed, where the whole host is visible anyway).
        - On the wall-clock timeout the whole tree is killed: `timed_out=True`, `exit_code=None`.
        - If the awaiting task is cancelled, the whole tree is killed (and waited for) before the
          CancelledError propagates.
        """
        config = await self._config_for(command)
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
                         read_only_binds: Sequence[Path] = ()) -> AsyncIterator["BackgroundProcess"]:
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
            await _uncancellable(self._stop_background(run, pump, streamer, watchdog))

    async def _kill_after(self, run: _Proc, seconds: float) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(run.exited), seconds)
        except TimeoutError:
            await _uncancellable(self._kill_tree(run))

    async def _stop_background(self, run: _Proc, pump: asyncio.Task[None], streamer: "_Streamer",
                               watchdog: asyncio.Task[None]) -> None:
        await asyncio.wait([watchdog])
        await self._kill_tree(run)
        await asyncio.wait([pump], timeout=DRAIN_SECONDS)
        if not pump.done():
            pump.cancel()
            await asyncio.wait([pump])
        await streamer.flush()
        await self._cleanup(run)

    async def _start(self, command: str, **options: Any) -> tuple[_Proc, "_Output", "_Streamer", asyncio.Task[None]]:
        """`_spawn` guarded against cancellation: a task cancelled just as its process was started
        would lose the handle (the result of the finished await is dropped for the CancelledError)
        and leave the process running. The start is finished, what it started killed, then the
        cancellation goes on."""
        start = asyncio.ensure_future(self._spawn(command, **options))
        try:
            return await asyncio.shield(start)
        except asyncio.CancelledError:
            await _uncancellable(self._abandon(start))
            raise

    async def _abandon(self, start: "asyncio.Future[tuple[_Proc, _Output, _Streamer, asyncio.Task[None]]]") -> None:
        try:
            run, _output, _streamer, pump = await start
        except BaseException:  # noqa: BLE001 - it did not start: nothing runs
            return
        await self._kill_tree(run)
        pump.cancel()
        await asyncio.wait([pump])
        await self._cleanup(run)

    async def _spawn(self, command: str, *, workspace: Path, env: Mapping[str, str], network: bool, limits: Limits,
                     on_output: Callable[[str], Awaitable[None]] | None, read_only_binds: Sequence[Path],
                     config: _Config | None) -> tuple[_Proc, _Output, "_Streamer", asyncio.Task[None]]:
        """Spawn `command` and start pumping its output (shared by `run` and `background`)."""
        workspace = Path(workspace).resolve(strict=True)
        if not workspace.is_dir():
            raise NotADirectoryError(f"workspace {workspace} is not a directory")
        sandbox_env = self._sandbox_env(env, home=WORKSPACE_MOUNT if config else str(workspace))
        binds = [self._check_bind(p) for p in read_only_binds] if config else []
        if config is not None and self._is_root:
            await asyncio.to_thread(_claim_tree, workspace, self.uid, self.gid)
        output = _Output(limits.max_output_bytes)
        if config is not None:
            run = await self._spawn_bwrap(command, workspace, sandbox_env, network, limits, binds, config)
        else:
            run = await self._spawn_direct(command, workspace, sandbox_env, limits)
        streamer = _Streamer(on_output)
        pump = asyncio.create_task(self._pump(run.proc.stdout, output, streamer))
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
                    await self._reap_leftovers(run)  # the unsandboxed group, or a non-empty cgroup
                    await asyncio.wait([pump], timeout=DRAIN_SECONDS if not run.sandboxed else None)
            except TimeoutError:
                # (if the command had exited and only a slow on_output held up the draining, it did not time out)
                timed_out = not run.exited.done()
                await _uncancellable(self._kill_tree(run))
                await asyncio.wait([pump], timeout=DRAIN_SECONDS)
            except BaseException:  # cancelled (a newer head supersedes this run) or anything unexpected
                await _uncancellable(self._kill_tree(run))
                raise
            finally:
                if not pump.done():
                    pump.cancel()
                    await asyncio.wait([pump])
            rc = run.proc.returncode
            notes = self._limit_notes(run, limits, timed_out)
            for note in notes:
                output.feed(note.encode())
                await streamer.send(note)
            await streamer.flush()
        finally:
            await _uncancellable(self._cleanup(run))
        duration = time.monotonic() - started
        sig: int | None = None
        exit_code: int | None
        if timed_out or rc is None:
            exit_code, sig = None, signal.SIGKILL
        else:
            if rc < 0:
                sig = -rc
                exit_code = 128 + sig
            else:
                exit_code = rc
                if rc > 128 and rc - 128 < signal.NSIG:
                    sig = rc - 128
        return RunResult(exit_code=exit_code, timed_out=timed_out, output=output.render(),
                         output_truncated_bytes=output.dropped, duration_seconds=duration,
                         signal=int(sig) if sig is not None else None)

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

    # ---------------------------------------------------------------------------------- spawning

    def _bwrap_options(self, *, network: bool, limits: Limits, config: _Config, env: Mapping[str, str],
                       binds: Sequence[_Bind], data_fds: Mapping[str, int], seccomp_fd: int | None,
                       info_fd: int) -> list[str]:
        a = ["--unshare-all", "--unshare-user"]
        if network:
            a.append("--share-net")
        if config.disable_userns:
            a.append("--disable-userns")
        a += ["--die-with-parent", "--new-session", "--cap-drop", "ALL", "--uid", str(self.uid),
              "--gid", str(self.gid), "--hostname", SANDBOX_HOSTNAME]
        a += system_binds()
        a += ["--proc", "/proc", "--dev", "/dev",
              "--perms", "1777", "--size", str(limits.memory_bytes), "--tmpfs", "/dev/shm",
              "--perms", "1777", "--size", str(limits.memory_bytes), "--tmpfs", "/tmp",
              "--perms", "0755", "--dir", "/etc"]
        for dest, fd in data_fds.items():
            a += ["--perms", "0444", "--ro-bind-data", str(fd), dest]
        etc = list(_ETC_READ_ONLY) + sorted(os.path.basename(p) for p in glob.glob("/etc/python3*"))
        if network:
            etc += [n for n in _ETC_NETWORK if f"/etc/{n}" not in data_fds]
        for name in etc:
            a += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
        a += ["--symlink", "/proc/self/mounts", "/etc/mtab"]
        for bind in binds:  # the workspace comes last
            if bind.stage is not None:
                a += ["--bind" if bind.writable else "--ro-bind", str(bind.stage), bind.dest]
            else:
                a += ["--bind-fd" if bind.writable else "--ro-bind-fd", str(bind.fd), bind.dest]
        a += ["--chdir", WORKSPACE_MOUNT, "--remount-ro", "/"]
        if seccomp_fd is not None:
            a += ["--seccomp", str(seccomp_fd)]
        a += ["--info-fd", str(info_fd), "--clearenv"]
        for key, value in env.items():
            a += ["--setenv", key, value]
        return a

    def _etc_files(self, network: bool) -> dict[str, bytes]:
        users = {0: "root", self.uid: "sandbox", 65534: "nobody"}
        groups = {0: "root", self.gid: "sandbox", 65534: "nogroup"}
        passwd = "".join(
            f"{name}:x:{uid}:{uid if uid != self.uid else self.gid}:{name}:"
            f"{WORKSPACE_MOUNT if uid == self.uid else '/nonexistent'}:"
            f"{'/bin/sh' if uid == self.uid else '/usr/sbin/nologin'}\n"
            for uid, name in users.items())
        group = "".join(f"{name}:x:{gid}:\n" for gid, name in groups.items())
        files = {
            "/etc/passwd": passwd.encode(),
            "/etc/group": group.encode(),
            "/etc/hostname": f"{SANDBOX_HOSTNAME}\n".encode(),
            "/etc/nsswitch.conf": b"passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n"
                                  b"networks: files\nprotocols: files\nservices: files\n",
        }
        if not network or not os.path.exists("/etc/hosts"):
            files["/etc/hosts"] = (f"127.0.0.1\tlocalhost {SANDBOX_HOSTNAME}\n"
                                   "::1\tlocalhost ip6-localhost ip6-loopback\n").encode()
        return files

    async def _spawn_bwrap(self, command: str, workspace: Path, env: Mapping[str, str], network: bool,
                           limits: Limits, ro_binds: Sequence[tuple[Path, str]], config: _Config) -> _Proc:
        assert self._bwrap_path is not None
        fds: list[int] = []
        info_r = info_w = -1
        cgroup: _Cgroup | None = None
        try:
            binds: list[_Bind] = []
            for i, (path, dest, writable) in enumerate(
                    [*((p, dest, False) for p, dest in ro_binds), (workspace, WORKSPACE_MOUNT, True)]):
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
                fds.append(fd)
                st = os.fstat(fd)
                stage = None
                if self._stage is not None:
                    stage = self._stage / ("workspace" if writable else f"ro{i}")
                binds.append(_Bind(fd=fd, source=path, dest=dest, writable=writable, is_dir=stat.S_ISDIR(st.st_mode),
                                   dev_ino=(st.st_dev, st.st_ino), stage=stage))
            data_fds = {}
            for dest, data in self._etc_files(network).items():
                fd = _memfd("etc", data)
                fds.append(fd)
                data_fds[dest] = fd
            seccomp_fd = None
            if config.seccomp and self._seccomp_bpf is not None:
                seccomp_fd = _memfd("seccomp", self._seccomp_bpf)
                fds.append(seccomp_fd)
            info_r, info_w = os.pipe2(os.O_CLOEXEC)
            options = self._bwrap_options(network=network, limits=limits, config=config, env=env, binds=binds,
                                          data_fds=data_fds, seccomp_fd=seccomp_fd, info_fd=info_w)
            args_fd = _memfd("bwrap-args", b"".join(os.fsencode(o) + b"\0" for o in options))
            fds.append(args_fd)
            if config.cgroup_controllers:
                cgroup = _Cgroup(config.cgroup_controllers)
                cgroup.create(limits)
            preexec = self._preexec(limits, cgroup, switch_uid=self._is_root,
                                    stage=[b for b in binds if b.stage is not None])
            # Only the fds bwrap consumes (and closes) may be passed: an O_PATH fd of a directory reaching the
            # command would let it openat(fd, "..") its way out of the mount namespace.
            passed = [fd for fd in fds if all(b.fd != fd or b.stage is None for b in binds)] + [info_w]
            proc, exited, transport = await _exec(
                self._bwrap_path, "--args", str(args_fd), "--", "/bin/sh", "-c", command,
                env={"PATH": SANDBOX_PATH, "LANG": "C.UTF-8"}, cwd="/", pass_fds=passed, preexec_fn=preexec)
        except BaseException:
            for fd in (*fds, info_r, info_w):
                if fd >= 0:
                    os.close(fd)
            if cgroup is not None:
                await cgroup.remove()
            raise
        for fd in fds:
            os.close(fd)
        os.close(info_w)
        info = _ChildInfo(asyncio.get_running_loop(), info_r)
        return _Proc(proc=proc, exited=exited, transport=transport, sandboxed=True, info=info, cgroup=cgroup)

    async def _spawn_direct(self, command: str, workspace: Path, env: Mapping[str, str], limits: Limits) -> _Proc:
        proc, exited, transport = await _exec(
            "/bin/sh", "-c", command, env=dict(env), cwd=str(workspace), pass_fds=[],
            preexec_fn=self._preexec(limits, None, switch_uid=False, stage=[]))
        return _Proc(proc=proc, exited=exited, transport=transport, sandboxed=False)

    def _preexec(self, limits: Limits, cgroup: _Cgroup | None, *, switch_uid: bool,
                 stage: Sequence[_Bind]) -> Callable[[], None]:
        """Runs in the forked child before exec: only C-level calls with everything precomputed (no imports,
        no logging, no Python-level locks).

        With `stage` (root): enter a private mount namespace (nothing propagates back to the host), mount a
        small tmpfs on STAGE_DIR and bind each source there from the app's O_PATH fd. The unprivileged bwrap
        then binds from those paths: it resolves bind sources by path, and the workspace's real ancestors
        (a 0700 DATA_DIR, pytest's /tmp/pytest-of-root) are not searchable by the sandbox uid. The private
        mount namespace ends with the run."""
        nofile_hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        nofile = limits.max_open_files if nofile_hard == resource.RLIM_INFINITY else min(limits.max_open_files,
                                                                                          nofile_hard)
        has_pids_cgroup = cgroup is not None and any(d.parent.parent.name == "pids" for d in cgroup.dirs)
        has_mem_cgroup = cgroup is not None and any(d.parent.parent.name == "memory" for d in cgroup.dirs)
        nproc = limits.max_processes * (NPROC_SHARED_FACTOR if has_pids_cgroup else 1)
        rlimits = [
            (resource.RLIMIT_CORE, (0, 0)),
            (resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 1)),
            (resource.RLIMIT_FSIZE, (limits.max_file_bytes, limits.max_file_bytes)),
            (resource.RLIMIT_NOFILE, (nofile, nofile)),
            (resource.RLIMIT_NPROC, (nproc, nproc)),
        ]
        if not has_mem_cgroup:
            rlimits.append((resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes)))
        procs_files = cgroup.procs_files if cgroup is not None else []
        uid, gid = self.uid, self.gid
        libc = _LIBC
        stage_root = os.fsencode(self._stage) if self._stage is not None else b""
        mounts = [(os.fsencode(b.source), b.dev_ino, os.fsencode(b.stage), b.is_dir) for b in stage if b.stage]

        def preexec() -> None:
            pid = str(os.getpid()).encode()
            for path in procs_files:
                fd = os.open(path, os.O_WRONLY)
                try:
                    os.write(fd, pid)
                finally:
                    os.close(fd)
            if mounts:
                libc.check(libc.unshare(_CLONE_NEWNS), "unshare(CLONE_NEWNS)")
                libc.check(libc.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None), "mount --make-rprivate /")
                libc.check(libc.mount(b"tmpfs", stage_root, b"tmpfs", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC,
                                      b"mode=0755,size=65536"), "mount stage tmpfs")
                for source, dev_ino, target, is_dir in mounts:
                    # The app's fd belongs to the old mount namespace (a bind from it fails with EINVAL):
                    # reopen the path here and insist it is still the very same inode.
                    fd = os.open(source, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
                    st = os.fstat(fd)
                    if (st.st_dev, st.st_ino) != dev_ino:
                        raise OSError(errno.ESTALE, "bind source was replaced")
                    if is_dir:
                        os.mkdir(target, 0o755)
                    else:
                        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
                    libc.check(libc.mount(b"/proc/self/fd/%d" % fd, target, None, _MS_BIND | _MS_REC, None),
                               "bind mount")
                    os.close(fd)
            for which, value in rlimits:
                resource.setrlimit(which, value)
            if switch_uid:
                os.setgroups([])
                os.setresgid(gid, gid, gid)
                os.setresuid(uid, uid, uid)
            libc.check(libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")

        return preexec

    # --------------------------------------------------------------------------------- streaming

    @staticmethod
    async def _pump(stream: asyncio.StreamReader | None, output: _Output, streamer: "_Streamer") -> None:
        assert stream is not None
        while chunk := await stream.read(READ_CHUNK):
            output.feed(chunk)
            await streamer.send_bytes(chunk)

    # ----------------------------------------------------------------------------------- killing

    async def _kill_tree(self, run: _Proc) -> None:
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

    async def _reap_leftovers(self, run: _Proc) -> None:
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

    @staticmethod
    def _limit_notes(run: _Proc, limits: Limits, timed_out: bool) -> list[str]:
        notes = []
        if timed_out:
            notes.append(f"\n[sandbox] wall-clock timeout of {limits.timeout_seconds:g} s exceeded: "
                         "the process tree was killed\n")
        if run.cgroup is not None:
            events = run.cgroup.events()
            if events.get("memory.oom_kill"):
                notes.append(f"\n[sandbox] memory limit of {limits.memory_bytes // 1024**2} MiB exceeded: the "
                             f"kernel killed {events['memory.oom_kill']} process(es)\n")
            if events.get("pids.max"):
                notes.append(f"\n[sandbox] process limit of {limits.max_processes} reached: "
                             f"{events['pids.max']} fork(s) failed\n")
        return notes

    async def _cleanup(self, run: _Proc) -> None:
        run.transport.close()  # closes our end of the pipe even if a stray process (unsandboxed) still holds it
        if run.info is not None:
            run.info.close()
        if run.cgroup is not None:
            await run.cgroup.kill_all(KILL_WAIT_SECONDS)
            await run.cgroup.remove()


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


async def _exec(*argv: str, env: Mapping[str, str], cwd: str, pass_fds: Sequence[int],
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


class _Streamer:
    """Decodes output incrementally for the caller's on_output; a failing callback is disabled."""

    def __init__(self, callback: Callable[[str], Awaitable[None]] | None) -> None:
        self.callback = callback
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    async def send_bytes(self, chunk: bytes) -> None:
        if self.callback is not None:
            await self.send(self.decoder.decode(chunk))

    async def flush(self) -> None:
        if self.callback is not None:
            await self.send(self.decoder.decode(b"", final=True))

    async def send(self, text: str) -> None:
        if self.callback is None or not text:
            return
        try:
            await self.callback(text)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("sandbox: on_output callback failed; live output disabled for this run")
            self.callback = None


async def _uncancellable(coro: Awaitable[None]) -> None:
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
