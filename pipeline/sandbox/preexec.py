"""What runs in the forked child before it execs bwrap (or, unsandboxed, the shell): it joins the run's
cgroups, stages the binds (as root), sets the rlimits, drops to the sandbox uid, makes the network
namespace a `network=True` run uses (network.py) and sets NoNewPrivs. `helper_preexec_fn` is the same uid
drop for a run's helper process (slirp4netns).

Binds: the unprivileged bwrap resolves bind sources by path, and the workspace's real ancestors (a
0700 DATA_DIR, pytest's /tmp/pytest-of-root) are not searchable by the sandbox uid. So as root, the spawned
child first enters a private mount namespace of its own (nothing propagates to the host's mount table),
mounts a small tmpfs on `STAGE_DIR` (/run/codegenapp-sandbox, an empty root-owned 0755 directory) and
binds the workspace and the read-only binds there, each checked to be the very inode the app opened
(O_PATH) before the run; bwrap binds from those paths. Without root, `--bind-fd`/`--ro-bind-fd` are used.
No other file descriptor reaches the command (an O_PATH directory fd would allow `openat(fd, "..")`).
"""

from __future__ import annotations

import ctypes
import errno
import os
import resource
import stat
from collections.abc import Callable, Sequence
from pathlib import Path

from pipeline.sandbox.bwrap import Bind
from pipeline.sandbox.cgroups import Cgroup
from pipeline.sandbox.limits import Limits, rlimits

_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_DUMPABLE = 4
_CLONE_NEWNS = 0x00020000
_CLONE_NEWUSER, _CLONE_NEWNET = 0x10000000, 0x40000000
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_BIND, _MS_REC, _MS_PRIVATE = 0x2, 0x4, 0x8, 0x1000, 0x4000, 0x40000
# Root mode: an empty root-owned 0755 directory on which each spawn mounts, in a private mount namespace of
# its own, a tmpfs holding bind mounts of the workspace and the read-only binds (see preexec_fn).
STAGE_DIR = Path("/run/codegenapp-sandbox")


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


def prepare_stage_dir() -> Path:
    STAGE_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    st = os.lstat(STAGE_DIR)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
        raise OSError(f"{STAGE_DIR} must be a root-owned directory not writable by others")
    if st.st_mode & 0o777 != 0o755:
        os.chmod(STAGE_DIR, 0o755)
    return STAGE_DIR


def preexec_fn(limits: Limits, cgroup: Cgroup | None, *, uid: int, gid: int, switch_uid: bool,
               stage_dir: Path | None, stage: Sequence[Bind], own_network: bool = False) -> Callable[[], None]:
    """Runs in the forked child before exec: only C-level calls with everything precomputed (no imports,
    no logging, no Python-level locks).

    With `stage` (root): enter a private mount namespace (nothing propagates back to the host), mount a
    small tmpfs on STAGE_DIR and bind each source there from the app's O_PATH fd. The unprivileged bwrap
    then binds from those paths: it resolves bind sources by path, and the workspace's real ancestors
    (a 0700 DATA_DIR, pytest's /tmp/pytest-of-root) are not searchable by the sandbox uid. The private
    mount namespace ends with the run.

    With `own_network`, after the uid switch: a new user namespace (mapping only the sandbox uid and gid
    to themselves) and a network namespace it owns, for slirp4netns to attach to (network.py)."""
    pids_cgroup = cgroup is not None and any(d.parent.parent.name == "pids" for d in cgroup.dirs)
    memory_cgroup = cgroup is not None and any(d.parent.parent.name == "memory" for d in cgroup.dirs)
    to_set = rlimits(limits, pids_cgroup=pids_cgroup, memory_cgroup=memory_cgroup)
    procs_files = cgroup.procs_files if cgroup is not None else []
    libc = _LIBC
    stage_root = os.fsencode(stage_dir) if stage_dir is not None else b""
    mounts = [(os.fsencode(b.source), b.dev_ino, os.fsencode(b.stage), b.is_dir) for b in stage if b.stage]
    id_maps = ((b"/proc/self/setgroups", b"deny"), (b"/proc/self/uid_map", b"%d %d 1" % (uid, uid)),
               (b"/proc/self/gid_map", b"%d %d 1" % (gid, gid)))

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
        for which, value in to_set:
            resource.setrlimit(which, value)
        if switch_uid:
            _switch_uid(uid, gid)
        if own_network:
            # The uid switch made the process undumpable, which leaves /proc/self/*_map to root.
            libc.check(libc.prctl(_PR_SET_DUMPABLE, 1, 0, 0, 0), "prctl(PR_SET_DUMPABLE)")
            libc.check(libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNET), "unshare(CLONE_NEWUSER|CLONE_NEWNET)")
            for path, data in id_maps:
                fd = os.open(path, os.O_WRONLY)
                try:
                    os.write(fd, data)
                finally:
                    os.close(fd)
        libc.check(libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")

    return preexec


def helper_preexec_fn(*, uid: int, gid: int, switch_uid: bool) -> Callable[[], None]:
    """For a run's helper process (slirp4netns): the sandbox uid with no groups (as root), NoNewPrivs."""
    libc = _LIBC

    def preexec() -> None:
        if switch_uid:
            _switch_uid(uid, gid)
        libc.check(libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")

    return preexec


def _switch_uid(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
