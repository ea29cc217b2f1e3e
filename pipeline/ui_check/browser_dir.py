"""The directory the UI check's sandboxed browser works in, made by the app for each launch: the launcher
Playwright executes, the relay directory (the forwarder and the host proxy's socket) and the profile,
with the ownership and modes the browser's uid (61001, pipeline/ui_check/browser.py) needs.

It is not simply in TMPDIR: bwrap runs as the browser's uid, so every directory above the profile and
the relay must be searchable by that uid, and a private TMPDIR (`mktemp -d`, a service's own 0700
directory, /run/user/N) is below one it cannot pass. DATA_DIR is no better (it holds the App's key and
is usually 0700, below a home directory). So the base is the first of TMPDIR, /tmp, /var/tmp and
/dev/shm that the uid can reach, where a directory can be made, and whose path leaves room for the
proxy's Unix socket (`sockaddr_un` holds 107 bytes).

Layout, as root (without root the browser runs as the app's own uid and the same layout serves):

    <base>/codegenapp-browser-XXXXXXXX/   root 0711: passable, not listable
        chromium                          root 0700: the launcher (executed by Playwright, as root)
        relay/                            root 0711: bound read-only into the browser's sandbox
            forwarder.py                  root 0644
            proxy.sock                    the browser's uid, 0600 (handed over once the proxy listens)
        profile/                          the browser's uid, 0700: all it may write
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.ui_check.browser import FORWARDER_NAME, PROXY_SOCKET

FALLBACK_BASES = ("/tmp", "/var/tmp", "/dev/shm")
PREFIX = "codegenapp-browser-"
RELAY = "relay"
PROFILE = "profile"
_MAX_SOCKET_PATH = 107
_SOCKET_PATH_TAIL = len(f"/{PREFIX}XXXXXXXX/{RELAY}/{PROXY_SOCKET}")


class NoBrowserDirectory(Exception):
    """No base directory works for the browser's uid; the message names each candidate and why."""


@dataclass(frozen=True)
class BrowserDir:
    root: str
    relay: str
    profile: str

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)  # fd-based: links PR code or the browser left are not followed


def searchable_by(st: os.stat_result, uid: int) -> bool:
    """Whether `uid`, with gid == uid and no supplementary groups, may pass through this directory."""
    if uid == 0:
        return True
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid == uid:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def unreachable_because(path: str, uid: int) -> str | None:
    """Why `uid` cannot reach `path` (the first directory on the way it may not pass), or None when it can."""
    current = "/"
    for part in Path(path).parts:
        current = os.path.join(current, part)
        try:
            st = os.stat(current)
        except OSError as exc:
            return f"{current}: {exc.strerror}"
        if not stat.S_ISDIR(st.st_mode):
            return f"{current} is not a directory"
        if not searchable_by(st, uid):
            return f"{current} is mode {stat.S_IMODE(st.st_mode):04o}, owner uid {st.st_uid}: uid {uid} cannot pass it"
    return None


def candidate_bases() -> list[str]:
    """TMPDIR (as Python resolves it), then the system's temporary directories; real paths, each once."""
    found: list[str] = []
    for base in (tempfile.gettempdir(), *FALLBACK_BASES):
        real = os.path.realpath(base)
        if real not in found:
            found.append(real)
    return found


def make_browser_dir(uid: int, forwarder: Path, bases: Sequence[str] | None = None) -> BrowserDir:
    """A fresh browser directory (layout above) in the first base that works; NoBrowserDirectory when none does."""
    problems = []
    for base in bases if bases is not None else candidate_bases():
        if len(base) + _SOCKET_PATH_TAIL > _MAX_SOCKET_PATH:
            problems.append(f"{base}: too long a path for the proxy's Unix socket")
            continue
        if (why := unreachable_because(base, uid)) is not None:
            problems.append(f"{base}: {why}")
            continue
        try:
            root = tempfile.mkdtemp(prefix=PREFIX, dir=base)
        except OSError as exc:
            problems.append(f"{base}: {exc.strerror}")
            continue
        try:
            return _lay_out(root, uid, forwarder)
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
    raise NoBrowserDirectory(f"no directory for the browser's profile and sockets that uid {uid} can reach ("
                             + "; ".join(problems) + "): set TMPDIR to a directory whose every parent is "
                             "searchable by others (o+x), such as /var/tmp")


def _lay_out(root: str, uid: int, forwarder: Path) -> BrowserDir:
    os.chmod(root, 0o711)
    relay = os.path.join(root, RELAY)
    os.mkdir(relay)
    os.chmod(relay, 0o711)
    shutil.copyfile(forwarder, os.path.join(relay, FORWARDER_NAME))
    os.chmod(os.path.join(relay, FORWARDER_NAME), 0o644)
    profile = os.path.join(root, PROFILE)
    os.mkdir(profile, 0o700)
    if os.geteuid() == 0:
        os.chown(profile, uid, uid)
    return BrowserDir(root=root, relay=relay, profile=profile)
