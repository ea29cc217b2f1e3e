"""The bubblewrap command line: the filesystem inside the sandbox and the options that build it.

Filesystem inside: `/usr` read-only (with the /bin, /sbin, /lib* symlinks as on the host), the
workspace read-write at `/workspace` (cwd, and HOME, so caches such as `pip install --user` persist from
setup to validate), a private tmpfs at `/tmp` (size-capped), bwrap's minimal `/dev`, a fresh `/proc`
of the sandbox's own pid namespace, optional caller-given read-only binds at the same path, and the
root tmpfs itself remounted read-only. No /root, /home, /var, /run, /sys, /opt, no DATA_DIR. /etc holds
only: synthetic passwd, group, hosts, hostname, nsswitch.conf (so `id`, `whoami`, `getpass`, git and
`localhost` work) and read-only binds of public, non-secret files tools need: alternatives (Debian's
/usr/bin/awk etc. are symlinks through it), ssl/certs, ssl/openssl.cnf, ca-certificates (TLS; not
/etc/ssl/private), ld.so.cache, ld.so.conf*, localtime, timezone, os-release, services, protocols,
mime.types, python3* (Debian's sitecustomize), and with network: gai.conf, host.conf, the host's hosts
file and a resolv.conf naming slirp's DNS forwarder (network.py).

All bwrap options (including `--setenv` values) go through a memfd with `--args`, so environment values
given by the caller never appear in the host's `ps`; only `bwrap --args N -- /bin/sh -c <command>` does.
Standard library only: the UI check's browser launcher (pipeline/ui_check/browser.py, run as
`python3 -I`) imports `system_binds` from here.
"""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.sandbox.limits import Limits
from pipeline.sandbox.network import SANDBOX_RESOLV_CONF

WORKSPACE_MOUNT = "/workspace"
SANDBOX_HOSTNAME = "sandbox"
SANDBOX_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_ETC_READ_ONLY = ("alternatives", "ssl/certs", "ssl/openssl.cnf", "ca-certificates", "ld.so.cache", "ld.so.conf",
                  "ld.so.conf.d", "localtime", "timezone", "os-release", "services", "protocols", "mime.types")
_ETC_NETWORK = ("gai.conf", "host.conf", "hosts")


def memfd(name: str, data: bytes) -> int:
    """An in-memory file (close-on-exec) holding `data`, read from its start: how bwrap gets its options,
    the /etc files and the seccomp program."""
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


def resolve_bwrap(bwrap: str) -> str | None:
    """The bwrap executable (`bwrap` a path, or a name looked up in the system's bin directories); None when missing."""
    if os.sep in bwrap:
        return bwrap if os.path.isfile(bwrap) and os.access(bwrap, os.X_OK) else None
    return shutil.which(bwrap, path="/usr/local/bin:/usr/bin:/bin")


async def version_of(path: str) -> str | None:
    """The first line of `path --version` (bwrap, slirp4netns), None when it cannot tell."""
    try:
        proc = await asyncio.create_subprocess_exec(
            path, "--version", stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, env={"PATH": SANDBOX_PATH})
        out, _ = await asyncio.wait_for(proc.communicate(), 10)
        return out.decode(errors="replace").strip().split("\n")[0] or None
    except (OSError, TimeoutError):
        return None


@dataclass
class Bind:
    fd: int  # O_PATH fd opened by the app
    source: Path  # resolved host path
    dest: str  # path inside the sandbox
    writable: bool
    is_dir: bool
    dev_ino: tuple[int, int]  # identity of `fd`, re-checked in preexec_fn
    stage: Path | None  # root mode: where the child binds it (preexec.py) for bwrap to pick up


def bwrap_options(*, uid: int, gid: int, network: bool, limits: Limits, disable_userns: bool,
                  env: Mapping[str, str], binds: Sequence[Bind], data_fds: Mapping[str, int],
                  seccomp_fd: int | None, info_fd: int, block_fd: int | None = None) -> list[str]:
    """bwrap's options for one run (passed through a memfd with `--args`, never in argv). `network`: keep
    the network namespace bwrap is started in, the run's own (network.py), never the host's; `block_fd`:
    the command waits until it is readable."""
    a = ["--unshare-all", "--unshare-user"]
    if network:
        a.append("--share-net")
    if block_fd is not None:
        a += ["--block-fd", str(block_fd)]
    if disable_userns:
        a.append("--disable-userns")
    a += ["--die-with-parent", "--new-session", "--cap-drop", "ALL", "--uid", str(uid),
          "--gid", str(gid), "--hostname", SANDBOX_HOSTNAME]
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


def etc_files(sandbox_uid: int, sandbox_gid: int, network: bool) -> dict[str, bytes]:
    """The synthetic /etc files (path -> content) bound read-only into the sandbox."""
    users = {0: "root", sandbox_uid: "sandbox", 65534: "nobody"}
    groups = {0: "root", sandbox_gid: "sandbox", 65534: "nogroup"}
    passwd = "".join(
        f"{name}:x:{uid}:{uid if uid != sandbox_uid else sandbox_gid}:{name}:"
        f"{WORKSPACE_MOUNT if uid == sandbox_uid else '/nonexistent'}:"
        f"{'/bin/sh' if uid == sandbox_uid else '/usr/sbin/nologin'}\n"
        for uid, name in users.items())
    group = "".join(f"{name}:x:{gid}:\n" for gid, name in groups.items())
    files = {
        "/etc/passwd": passwd.encode(),
        "/etc/group": group.encode(),
        "/etc/hostname": f"{SANDBOX_HOSTNAME}\n".encode(),
        "/etc/nsswitch.conf": b"passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n"
                              b"networks: files\nprotocols: files\nservices: files\n",
    }
    if network:
        files["/etc/resolv.conf"] = SANDBOX_RESOLV_CONF
    if not network or not os.path.exists("/etc/hosts"):
        files["/etc/hosts"] = (f"127.0.0.1\tlocalhost {SANDBOX_HOSTNAME}\n"
                               "::1\tlocalhost ip6-localhost ip6-loopback\n").encode()
    return files
