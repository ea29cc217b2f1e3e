"""Setup snapshots: keep what a PR's setup commands produced (`.venv/`, `node_modules/`, build outputs)
and lay it into a later fresh checkout of the same project, so that validation can skip setup.

**Key** (`snapshot_key`): sha256 over a canonical JSON of the tool version, the scope, the setup
commands (in order), the non-secret env (sorted), the cache-key globs (sorted, deduplicated) and, for
every *tracked* file matching one of them (sorted by path), its path and the sha256 of its content.
 - `scope` separates trust levels: the caller passes e.g. `"<project id>:trusted"` / `"<project id>:fork"`
   so a fork PR's setup can never produce a snapshot that a trusted PR (which gets secrets) restores.
 - The files are read from the workspace *before* setup runs: compute the key right after checkout.
   Tracked symlinks are hashed by their target text (never followed); other non-regular files by type.
 - Never pass secrets in `env`: they would end up hashed in a file name. Put the toolchain identity
   (e.g. the host's python3 / node version, OS release) into `tool_version`: a venv's `bin/python` is
   an absolute symlink to `/usr/bin/python3` and breaks when the host upgrades it.
 - Without globs the key depends on commands, env and scope only, so a change of the dependency files
   is NOT noticed and a stale snapshot is restored. Always set cache_key, e.g.
   `["requirements*.txt", "pyproject.toml", "package-lock.json"]`. If setup installs the project
   itself non-editably (`pip install .`, a build into `dist/`), the installed copy is the *old*
   commit's code: either include those sources in the globs or use editable installs.

**Glob semantics** (gitignore-like, matched against the tracked paths, POSIX separators): a pattern
without a slash (other than a trailing one) matches a name at any depth (`requirements*.txt` matches
`requirements.txt` and `svc/requirements-dev.txt`); a pattern with a leading or inner slash is
anchored at the repository root (`/package.json`, `web/package.json`); `*` and `?` never match `/`,
`[...]` is a character class (`[!...]` negated); `**` as a whole segment matches any number of
directories (`**/x`, `a/**/b`, `a/**`); a pattern matching a directory matches every file below it; a
trailing `/` matches directories only. Negation (`!pattern`) is not supported (ValueError).

**What a snapshot holds**: every entry of the workspace after setup that is not tracked by the commit:
untracked and ignored files, directories (also empty ones) and symlinks. Tracked files always come from
the new checkout; a change setup made to a tracked file is not kept (so setup must not depend on
rewriting tracked files). Never included: any component named `.git` (the repository, submodules,
nested checkouts), anything at or below a tracked path (a submodule gitlink, a tracked file that setup
replaced by a directory), the directories leading to tracked files themselves (the checkout creates
them; what setup put inside them, e.g. `src/pkg/__pycache__/`, is kept), special files (fifos,
sockets, devices: skipped), and paths matching the optional `exclude` globs of `save`. Symlinks are
stored as links with their target text, whatever it points to (a venv's `bin/python -> /usr/bin/python3`
is legitimate; a planted link to /etc/shadow or DATA_DIR is stored as a link, its target is never
read). Hard links are stored as independent copies (restored files have one link each, so the sandbox
chowns them and they cannot alias anything). Kept per entry: permission bits (`mode & 0o777`;
setuid/setgid/sticky dropped), mtime (whole seconds, clamped to 1970..2242; keeps `.pyc` files valid),
not the owner: the app (root) extracts as itself and the sandbox chowns the tree before the next run.

The tree is walked with directory file descriptors, one component at a time with O_NOFOLLOW, so
neither saving nor restoring ever follows a symlink, and regular files are opened with O_NOFOLLOW |
O_NONBLOCK and checked with fstat (a fifo swapped in cannot block the save).

**Format**: a GNU tar (integer mtimes, no PAX headers, arbitrary byte names), by default compressed
with the `zstd` binary at level 1 (`tar.zst`), or uncompressed (`tar`) when zstd is missing or with
`compression="none"`. The tar is written and read here over file descriptors (tarfile only encodes and
decodes headers: its stream mode copies its whole buffer on every small read/write), and file data
moves in the kernel (copy_file_range / sendfile into zstd's pipe / splice out of it).
Measured with `bench/snapshot.py` (2 CPUs; synthetic tree of 7,516 entries / 105 MB, and a copy of the
app's venv, 5,658 entries / 133 MB), median of 5, page cache warm:
  - tmpfs (the code's own cost): none: save 0.30 s, restore 0.31 s (venv 0.29 / 0.28), archive 105% of
    the content; zstd -1: save 0.51 s, restore 0.45 s (venv 0.65 / 0.53), archive 43% (venv 34%);
    shutil.copytree of the same tree: 0.40 s (venv 0.52 s).
  - ext4 on this VM, after warm-up: copytree 0.48-0.75 s, restore none 0.42-0.74 s, zstd 0.76-1.02 s.
    The first allocation of inodes in untouched block groups costs up to ~0.6 ms each here (2,000
    empty files: 1.3-1.6 s, vs 0.03 s for 2,000 hard links), so cold-disk runs vary (restore 2.6-8 s,
    copytree 0.5-6 s); setup itself pays the same cost for the same files.
  - gzip level 1 (zlib, one thread) compresses the 110 MB tar in 1.0 s to 47 MB vs zstd -1 0.31 s to
    46 MB: zstd. A warm restore stays ≤ 0.3x of a cold run for any setup of ≥ 5 s (zstd: 0.45 / (5 +
    0.51) = 0.08 on tmpfs, ~0.15 on the warmed disk); zstd trades ~0.2-0.4 s per 100 MB of restore
    for keeping ~3x as many snapshots within `max_bytes`.
  - Not a hard-linked directory copy (which would avoid the inode cost): files with more than one
    link are not chowned by the sandbox, so setup's outputs would be read-only in the next run (a
    database or cache file created by setup and written by the tests), and a world-writable one would
    let a PR write through the link into the snapshot every later run restores.

**Layout** under `root` (create it inside the 0700 DATA_DIR; never bind it into a sandbox):
`<key[:2]>/<key>.json` (metadata: archive name, compression, size, entries, content bytes, created,
last used) and `<key[:2]>/<key>.<nonce>.tar[.zst]`; `tmp/` holds archives being written; `.lock` is
the flock that serialises commits, evictions and lookups (also across processes; the lock is held only
for renames and unlinks, never while archiving or extracting).

**Atomicity and concurrency**: an archive is written to `tmp/`, fsynced, and renamed into place under
the lock; the metadata file is then replaced atomically and is the commit point. Two saves of the same
key both write complete archives; the one that commits last wins and the other archive is deleted. A
restore opens the archive named by the metadata under the lock and reads it from that descriptor, so
a concurrent save or eviction that deletes it cannot affect it: it sees the old complete snapshot or
none. Blocking work runs in `asyncio.to_thread`; cancelling the awaiting task does not stop the thread.

**Size**: `max_bytes` bounds the archives kept; after each commit the least recently used snapshots
(by last restore or save) are evicted until the total fits (so disk use may exceed it by one archive
being written). A snapshot whose content (sum of file sizes plus tar headers) exceeds `max_bytes // 4`
is not kept: the check happens before anything is written (a sparse 1 TB file cannot fill the disk
on save or on restore), and the compressed archive must fit too.

**Restoring safely** (into a fresh checkout, after the checkout and before any sandbox run):
 - member names must be relative, normalised (`..`, `.`, empty components, absolute paths, NUL are
   rejected), must not contain `.git`; only directories, regular files and symlinks are accepted (no
   hard links, devices, fifos, sparse files); the total content is capped. An archive breaking any of
   these rules, or a corrupt one (tar error, zstd checksum, size mismatch), is treated as a miss:
   what this restore created is removed again, the snapshot is dropped, and `restore` returns False.
 - Nothing existing is ever overwritten or followed: files are created with O_CREAT | O_EXCL |
   O_NOFOLLOW, symlinks with symlinkat (EEXIST = skip), directories are entered with O_NOFOLLOW. So a
   member colliding with a tracked path of the new checkout is skipped (the tracked file wins); a
   member below a symlink (a tracked one, or one the archive itself created, e.g. `evil -> /etc` then
   `evil/shadow`) fails with ELOOP and is skipped; a member whose parent directory does not exist
   (a directory that was tracked in the saved commit and is gone in the new one) is skipped.
 - Directory modes and mtimes are applied at the end, deepest first (a 0500 directory is still filled
   when the app is not root); pre-existing directories keep theirs.

Caller order: checkout -> `snapshot_key(...)` -> `restore(key, ws)`; on a miss: setup in the sandbox ->
`save(key, ws, tracked_files=...)` (before any validate command runs, so validation output such as
coverage files is not captured; only after a *successful* setup; a save error is worth a warning, not
a failed validation) -> validate. Restored entries belong to the app until the sandbox chowns the
workspace at the start of the next run, as it does for the checkout. `tracked_files` are the commit's
paths as `git ls-files -z` (or `git ls-tree -r -z --name-only HEAD` in the mirror) prints them; run git
in the mirror, never in a workspace a sandbox has touched (see pipeline/sandbox/sandbox.py).
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import stat
import subprocess
import tarfile
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
DEFAULT_MAX_BYTES = 5 * 1024**3
ZSTD_LEVEL = 1
MAX_DEPTH = 256  # deeper trees are not snapshotted (each level holds one directory fd)
STALE_TMP_SECONDS = 3600.0
_KEY_RE = re.compile(r"[0-9a-f]{64}")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_BLOCK = 512
_COPY_CHUNK = 1 << 20
_SUFFIX = {"zstd": ".tar.zst", "none": ".tar"}
_ENCODING = "utf-8"
_MAX_NAME = 64 * 1024
_MAX_MTIME = 8**11 - 1  # what a ustar header holds in octal (year 2242)


# ---------------------------------------------------------------------------------------------- key


def compile_globs(patterns: Sequence[str]) -> re.Pattern[str] | None:
    """One regex matching a POSIX relative path that any of the gitignore-like `patterns` matches
    (semantics in the module docstring); None when there are no patterns."""
    parts = [_glob_regex(p) for p in sorted(set(patterns))]
    return re.compile("|".join(f"(?:{p})" for p in parts)) if parts else None


def _glob_regex(pattern: str) -> str:
    p = pattern.strip()
    dir_only = p.endswith("/")
    body = p.rstrip("/")
    anchored = "/" in body
    segments = [s for s in body.lstrip("/").split("/") if s]
    if not segments or p.startswith("!"):
        raise ValueError(f"unsupported glob {pattern!r} (negation and empty patterns are not supported)")
    out = "" if anchored else "(?:.*/)?"
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if seg == "**":
            out += ".*" if last else "(?:.*/)?"
        else:
            out += _segment_regex(seg) + ("" if last else "/")
    if segments[-1] == "**":
        return "^" + out + "$" if not dir_only else "^" + out + "/.*$"
    return "^" + out + ("/.*$" if dir_only else "(?:/.*)?$")


def _segment_regex(seg: str) -> str:
    out, i, n = [], 0, len(seg)
    while i < n:
        c = seg[i]
        i += 1
        if c == "*":
            while i < n and seg[i] == "*":
                i += 1
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "\\" and i < n:
            out.append(re.escape(seg[i]))
            i += 1
        elif c == "[":
            j = i
            if j < n and seg[j] in "!^":
                j += 1
            if j < n and seg[j] == "]":
                j += 1
            while j < n and seg[j] != "]":
                j += 1
            if j >= n:
                out.append(re.escape(c))
                continue
            inner = seg[i:j]
            i = j + 1
            neg = inner[:1] in ("!", "^")
            inner = inner[1:] if neg else inner
            inner = "".join("\\" + ch if ch in "\\[]&~|^" else ch for ch in inner if ch != "/")
            out.append(("[^/" if neg else "[") + inner + "]")
        else:
            out.append(re.escape(c))
    return "".join(out)


def _normalise_tracked(tracked_files: Collection[str]) -> set[str]:
    out = set()
    for path in tracked_files:
        path = path.strip("/")
        while path.startswith("./"):
            path = path[2:]
        if path:
            out.add(path)
    return out


def snapshot_key(*, scope: str, setup_commands: Sequence[str], env: Mapping[str, str], workspace: Path,
                 cache_key_globs: Sequence[str], tracked_files: Collection[str], tool_version: str = "1") -> str:
    """sha256 hex of what determines setup's output (see the module docstring). Reads the tracked files
    matching `cache_key_globs` from `workspace`: call it right after checkout, before setup runs.
    Blocking file I/O (small files); wrap it in asyncio.to_thread if the files can be large."""
    matcher = compile_globs(cache_key_globs)
    files: list[list[str]] = []
    if matcher is not None:
        selected = sorted(p for p in _normalise_tracked(tracked_files) if matcher.match(p))
        root_fd = os.open(workspace, _DIR_FLAGS)
        chain = _DirChain(root_fd)
        try:
            for path in selected:
                files.append([path, _digest_tracked(chain, path)])
        finally:
            chain.close()
            os.close(root_fd)
    canonical = {
        "format": FORMAT_VERSION,
        "tool_version": tool_version,
        "scope": scope,
        "setup_commands": list(setup_commands),
        "env": sorted([str(k), str(v)] for k, v in env.items()),
        "cache_key_globs": sorted(set(cache_key_globs)),
        "files": files,
    }
    data = json.dumps(canonical, ensure_ascii=True, separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(data.encode("ascii")).hexdigest()


def _digest_tracked(chain: _DirChain, path: str) -> str:
    parts = path.split("/")
    try:
        dir_fd = chain.get(parts[:-1])
        st = os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False)
    except OSError as exc:
        return f"missing:{errno.errorcode.get(exc.errno, exc.errno)}"
    if stat.S_ISLNK(st.st_mode):
        target = os.readlink(parts[-1], dir_fd=dir_fd)
        return "symlink:" + hashlib.sha256(os.fsencode(target)).hexdigest()
    if not stat.S_ISREG(st.st_mode):
        return f"type:{stat.S_IFMT(st.st_mode):o}"
    h = hashlib.sha256()
    fd = os.open(parts[-1], _READ_FLAGS, dir_fd=dir_fd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return "type:changed"
        while chunk := os.read(fd, _COPY_CHUNK):
            h.update(chunk)
    finally:
        os.close(fd)
    return "sha256:" + h.hexdigest()


# ------------------------------------------------------------------------------------ fd plumbing


class _DirChain:
    """File descriptors of the directories on one path below `root_fd`, each opened from its parent with
    O_NOFOLLOW (a symlink anywhere on the way raises ELOOP, a file ENOTDIR). Consecutive lookups share
    their common prefix, so walking a tree in order costs one open per directory and depth-many fds."""

    def __init__(self, root_fd: int) -> None:
        self.root_fd = root_fd
        self.parts: list[str] = []
        self.fds: list[int] = []

    def get(self, parts: Sequence[str]) -> int:
        common = 0
        limit = min(len(parts), len(self.parts))
        while common < limit and self.parts[common] == parts[common]:
            common += 1
        self._truncate(common)
        for name in parts[common:]:
            fd = os.open(name, _DIR_FLAGS, dir_fd=self.fds[-1] if self.fds else self.root_fd)
            self.fds.append(fd)
            self.parts.append(name)
        return self.fds[-1] if self.fds else self.root_fd

    def _truncate(self, n: int) -> None:
        while len(self.fds) > n:
            os.close(self.fds.pop())
            self.parts.pop()

    def close(self) -> None:
        self._truncate(0)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _copy_fd(src: int, dst: int, count: int) -> None:
    """Copies `count` bytes from src's offset to dst in the kernel where it can: copy_file_range between
    regular files, sendfile into a pipe, splice out of a pipe; read/write otherwise. Raises EOFError when
    src ends early."""
    remaining = count
    for method in (_copy_file_range, _sendfile, _splice):
        if not remaining:
            return
        try:
            while remaining:
                n = method(src, dst, remaining)
                if n == 0:
                    raise EOFError("unexpected end of data")
                remaining -= n
            return
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF):
                raise
    while remaining:
        chunk = os.read(src, min(remaining, _COPY_CHUNK))
        if not chunk:
            raise EOFError("unexpected end of data")
        _write_all(dst, chunk)
        remaining -= len(chunk)


def _copy_file_range(src: int, dst: int, n: int) -> int:
    return os.copy_file_range(src, dst, min(n, 1 << 30))


def _sendfile(src: int, dst: int, n: int) -> int:
    return os.sendfile(dst, src, None, min(n, 1 << 30))


def _splice(src: int, dst: int, n: int) -> int:
    return os.splice(src, dst, min(n, 1 << 30))


# ------------------------------------------------------------------------------------------- tar
# A small GNU tar writer and reader over file descriptors, using tarfile only for the header codec
# (TarInfo.tobuf / TarInfo.frombuf): tarfile's stream mode copies its whole buffer on every small read
# or write, and file data here moves in the kernel.


class _TarWriter:
    def __init__(self, fd: int, limit: int) -> None:
        self.fd = fd
        self.limit = limit
        self.written = 0
        self.buf = bytearray()

    def _account(self, n: int) -> None:
        self.written += n
        if self.written > self.limit:
            raise _TooLarge(f"more than {self.limit} bytes")

    def _emit(self, data: bytes) -> None:
        self._account(len(data))
        self.buf += data
        if len(self.buf) >= _COPY_CHUNK:
            self.flush()

    def flush(self) -> None:
        if self.buf:
            _write_all(self.fd, self.buf)
            self.buf.clear()

    def add(self, info: tarfile.TarInfo, src_fd: int | None = None) -> None:
        self._emit(info.tobuf(tarfile.GNU_FORMAT, _ENCODING, "surrogateescape"))
        if src_fd is not None and info.size:
            self.flush()
            self._account(info.size)
            _copy_fd(src_fd, self.fd, info.size)
            self._emit(bytes(_round_up(info.size) - info.size))

    def close(self) -> None:
        self._emit(bytes(2 * _BLOCK))
        self._emit(bytes(_round_up_record(self.written) - self.written))
        self.flush()


def _round_up_record(n: int) -> int:
    return (n + tarfile.RECORDSIZE - 1) // tarfile.RECORDSIZE * tarfile.RECORDSIZE


class _TarReader:
    """Iterates over the members of a GNU tar read from `fd` (a regular file, read with pread at explicit
    offsets, or a pipe). After each member is yielded, the consumer may call `copy_data`; whatever data
    it left is skipped. Anything that is not a well-formed archive written by _TarWriter raises
    _Malformed (including a missing end-of-archive block: a truncated archive)."""

    def __init__(self, fd: int, *, seekable: bool) -> None:
        self.fd = fd
        self.seekable = seekable
        self.pos = 0
        self.remaining = 0

    def _read_exact(self, n: int) -> bytes:
        chunks, got = [], 0
        while got < n:
            if self.seekable:
                chunk = os.pread(self.fd, min(n - got, _COPY_CHUNK), self.pos + got)
            else:
                chunk = os.read(self.fd, min(n - got, _COPY_CHUNK))
            if not chunk:
                raise _Malformed("archive truncated")
            chunks.append(chunk)
            got += len(chunk)
        self.pos += n
        return b"".join(chunks)

    def _skip(self, n: int) -> None:
        if self.seekable:
            self.pos += n
        else:
            while n:
                n -= len(self._read_exact(min(n, _COPY_CHUNK)))

    def copy_data(self, dst: int, n: int) -> None:
        if n > self.remaining:
            raise _Malformed("reading past a member's data")
        try:
            if self.seekable:
                os.lseek(self.fd, self.pos, os.SEEK_SET)
            _copy_fd(self.fd, dst, n)
        except EOFError:
            raise _Malformed("archive truncated") from None
        self.pos += n
        self.remaining -= n

    def __iter__(self) -> Iterator[tarfile.TarInfo]:
        long: dict[str, str] = {}
        while True:
            block = self._read_exact(_BLOCK)
            if block == bytes(_BLOCK):
                return
            try:
                info = tarfile.TarInfo.frombuf(block, _ENCODING, "surrogateescape")
            except tarfile.HeaderError as exc:
                raise _Malformed(f"bad tar header at {self.pos - _BLOCK}: {exc}") from None
            if info.type in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK):
                if not 0 < info.size <= _MAX_NAME:
                    raise _Malformed("bad GNU long name")
                data = self._read_exact(_round_up(info.size))[:info.size].split(b"\0", 1)[0]
                long["name" if info.type == tarfile.GNUTYPE_LONGNAME else "linkname"] = data.decode(
                    _ENCODING, "surrogateescape")
                continue
            if "name" in long:
                info.name = long["name"].rstrip("/") if info.type == tarfile.DIRTYPE else long["name"]
            if "linkname" in long:
                info.linkname = long["linkname"]
            long.clear()
            if info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE):
                raise _Malformed(f"unsupported member type {info.type!r} for {info.name!r}")
            if info.type == tarfile.DIRTYPE or info.type == tarfile.SYMTYPE:
                info.size = 0  # no data follows these whatever the header says
            self.remaining = info.size
            yield info
            self._skip(self.remaining + _round_up(info.size) - info.size)
            self.remaining = 0


# ------------------------------------------------------------------------------------------ save


@dataclass(frozen=True)
class SnapshotInfo:
    key: str
    path: Path  # the archive
    size: int  # bytes on disk
    entries: int  # directories, regular files and symlinks in the archive
    files: int  # regular files among them
    content_bytes: int  # sum of the regular files' sizes
    compression: str  # "zstd" or "none"
    created: float
    last_used: float


@dataclass
class _Entry:
    path: str
    kind: str  # "d", "f", "l"
    mode: int
    mtime: int
    size: int = 0
    target: str = ""


class _TooLarge(Exception):
    pass


class _Malformed(Exception):
    pass


def _tar_overhead(path: str, target: str = "") -> int:
    extra = 0
    for name in (path, target):
        if len(os.fsencode(name)) >= 100:  # GNU long name/link: one header + the name's blocks
            extra += _BLOCK + _round_up(len(os.fsencode(name)) + 1)
    return _BLOCK + extra


def _round_up(n: int) -> int:
    return (n + _BLOCK - 1) // _BLOCK * _BLOCK


def _scan(workspace: Path, tracked: set[str], exclude: re.Pattern[str] | None, limit: int) -> list[_Entry]:
    """What a snapshot of `workspace` holds, in tar order (a directory before its contents). Raises
    _TooLarge when the archive would exceed `limit` bytes or the tree is deeper than MAX_DEPTH."""
    tracked_dirs = {p.rsplit("/", i)[0] for p in tracked for i in range(1, p.count("/") + 1)}
    entries: list[_Entry] = []
    estimate = 2 * _BLOCK  # the end-of-archive blocks
    root_fd = os.open(workspace, _DIR_FLAGS)
    stack: list[tuple[int, str, Iterator[str]]] = []
    try:
        stack.append((root_fd, "", iter(_listdir(root_fd))))
        while stack:
            dir_fd, prefix, names = stack[-1]
            name = next(names, None)
            if name is None:
                stack.pop()
                if dir_fd != root_fd:
                    os.close(dir_fd)
                continue
            rel = prefix + name
            if name == ".git" or rel in tracked:
                continue
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            is_dir = stat.S_ISDIR(st.st_mode)
            if exclude is not None and (exclude.match(rel) or (is_dir and exclude.match(rel + "/"))):
                continue
            mode = stat.S_IMODE(st.st_mode) & 0o777
            if is_dir:
                if len(stack) >= MAX_DEPTH:
                    raise _TooLarge(f"deeper than {MAX_DEPTH} directories at {rel!r}")
                if rel not in tracked_dirs:
                    entries.append(_Entry(rel, "d", mode, _mtime(st)))
                    estimate += _tar_overhead(rel)
                try:
                    sub = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
                except FileNotFoundError:
                    continue
                stack.append((sub, rel + "/", iter(_listdir(sub))))
            elif rel in tracked_dirs:
                continue  # a tracked directory that setup replaced: the checkout provides it
            elif stat.S_ISLNK(st.st_mode):
                target = os.readlink(name, dir_fd=dir_fd)
                entries.append(_Entry(rel, "l", 0o777, _mtime(st), target=target))
                estimate += _tar_overhead(rel, target)
            elif stat.S_ISREG(st.st_mode):
                entries.append(_Entry(rel, "f", mode, _mtime(st), size=st.st_size))
                estimate += _tar_overhead(rel) + _round_up(st.st_size)
            # fifos, sockets, devices: skipped
            if _round_up_record(estimate) > limit:
                raise _TooLarge(f"more than {limit} bytes")
    finally:
        for dir_fd, _, _ in stack:
            if dir_fd != root_fd:
                os.close(dir_fd)
        os.close(root_fd)
    return entries


def _mtime(st: os.stat_result) -> int:
    return min(max(int(st.st_mtime), 0), _MAX_MTIME)


def _listdir(dir_fd: int) -> list[str]:
    with os.scandir(dir_fd) as it:
        return sorted(entry.name for entry in it)


def _write_archive(workspace: Path, entries: list[_Entry], out_fd: int, limit: int) -> tuple[int, int, int]:
    """Writes the uncompressed GNU tar of `entries` to out_fd. Returns (entries, regular files, content bytes)."""
    writer = _TarWriter(out_fd, limit)
    root_fd = os.open(workspace, _DIR_FLAGS)
    chain = _DirChain(root_fd)
    written = files = content = 0
    try:
        for entry in entries:
            parts = entry.path.split("/")
            info = tarfile.TarInfo(entry.path)
            info.mode, info.mtime, info.uid, info.gid, info.uname, info.gname = (
                entry.mode, entry.mtime, 0, 0, "", "")
            if entry.kind == "d":
                info.type = tarfile.DIRTYPE
                writer.add(info)
            elif entry.kind == "l":
                info.type, info.linkname = tarfile.SYMTYPE, entry.target
                writer.add(info)
            else:
                try:
                    fd = os.open(parts[-1], _READ_FLAGS, dir_fd=chain.get(parts[:-1]))
                except FileNotFoundError:
                    continue
                try:
                    st = os.fstat(fd)
                    if not stat.S_ISREG(st.st_mode):
                        continue
                    info.type, info.size = tarfile.REGTYPE, st.st_size
                    try:
                        writer.add(info, fd)
                    except EOFError:
                        raise OSError(f"{entry.path!r} shrank while being saved") from None
                    content += st.st_size
                    files += 1
                finally:
                    os.close(fd)
            written += 1
        writer.close()
    finally:
        chain.close()
        os.close(root_fd)
    return written, files, content


# --------------------------------------------------------------------------------------- restore


def _member_parts(member: tarfile.TarInfo) -> list[str]:
    name = member.name
    if not name or "\x00" in name or name.startswith("/"):
        raise _Malformed(f"bad member name {name!r}")
    parts = name.split("/")
    if any(p in ("", ".", "..", ".git") for p in parts):
        raise _Malformed(f"bad member name {name!r}")
    return parts


class _Extractor:
    """Lays the members of a snapshot into `root_fd` without overwriting or following anything."""

    def __init__(self, root_fd: int, limit: int) -> None:
        self.chain = _DirChain(root_fd)
        self.limit = limit
        self.content = 0
        self.created_dirs: set[str] = set()
        self.tops: list[tuple[list[str], bool]] = []  # created entries whose parent existed: (parts, is_dir)
        self.dir_attrs: list[tuple[list[str], int, int]] = []
        self.restored = 0
        self.skipped = 0

    def extract(self, reader: _TarReader) -> None:
        for member in reader:
            self.member(reader, member)
        self.finish()

    def member(self, reader: _TarReader, member: tarfile.TarInfo) -> None:
        parts = _member_parts(member)
        if member.issym() and not member.linkname:
            raise _Malformed(f"symlink {member.name!r} without a target")
        if not 0 <= member.mtime <= _MAX_MTIME:
            raise _Malformed(f"mtime {member.mtime} of {member.name!r}")
        if member.isreg():
            self.content += member.size
            if self.content > self.limit:
                raise _Malformed("content larger than the snapshot limit")
        try:
            parent = self.chain.get(parts[:-1])
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
                self.skipped += 1  # below a tracked symlink/file, or a directory gone from the checkout
                return
            raise
        name = parts[-1]
        mode = member.mode & 0o777
        try:
            if member.isdir():
                os.mkdir(name, 0o700, dir_fd=parent)
                self.created_dirs.add("/".join(parts))
                self.dir_attrs.append((parts, mode, int(member.mtime)))
            elif member.issym():
                os.symlink(member.linkname, name, dir_fd=parent)
            else:
                fd = os.open(name, _CREATE_FLAGS, 0o600, dir_fd=parent)
                try:
                    if "/".join(parts[:-1]) not in self.created_dirs:
                        self.tops.append((parts, False))  # before writing: a failed copy is rolled back
                    reader.copy_data(fd, member.size)
                    os.fchmod(fd, mode)
                    os.utime(fd, ns=(int(member.mtime) * 10**9,) * 2)
                finally:
                    os.close(fd)
                self.restored += 1
                return
        except FileExistsError:
            self.skipped += 1  # the checkout has it (a tracked path): the checkout wins
            return
        self.restored += 1
        if "/".join(parts[:-1]) not in self.created_dirs:
            self.tops.append((parts, member.isdir()))

    def finish(self) -> None:
        for parts, mode, mtime in sorted(self.dir_attrs, key=lambda a: -len(a[0])):
            try:
                fd = os.open(parts[-1], _DIR_FLAGS, dir_fd=self.chain.get(parts[:-1]))
            except OSError:
                continue
            try:
                os.fchmod(fd, mode)
                os.utime(fd, ns=(mtime * 10**9,) * 2)
            finally:
                os.close(fd)

    def rollback(self) -> None:
        """Removes what this restore created (never anything that existed before)."""
        for parts, is_dir in reversed(self.tops):
            try:
                parent = self.chain.get(parts[:-1])
                if is_dir:
                    shutil.rmtree(parts[-1], dir_fd=parent)
                else:
                    os.unlink(parts[-1], dir_fd=parent)
            except OSError as exc:
                log.warning("snapshot rollback: cannot remove %s: %s", "/".join(parts), exc)

    def close(self) -> None:
        self.chain.close()


# ----------------------------------------------------------------------------------------- store


class SnapshotStore:
    """Setup snapshots under `root` (see the module docstring)."""

    def __init__(self, root: Path, *, max_bytes: int = DEFAULT_MAX_BYTES, compression: str | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.max_snapshot_bytes = max_bytes // 4
        self._zstd = shutil.which("zstd")
        if compression is None:
            compression = "zstd" if self._zstd else "none"
        if compression not in _SUFFIX:
            raise ValueError(f"compression must be 'zstd' or 'none', not {compression!r}")
        if compression == "zstd" and not self._zstd:
            raise ValueError("compression='zstd' needs the zstd binary (apt-get install zstd)")
        self.compression = compression
        self._clock = clock
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        (self.root / "tmp").mkdir(mode=0o700, exist_ok=True)

    # ----------------------------------------------------------------------------------- public

    async def restore(self, key: str, workspace: Path) -> bool:
        """Lays the snapshot of `key` into the fresh checkout `workspace`; True on a hit. On a miss, or a
        corrupt or malformed snapshot (then dropped, and what was laid in removed again), False."""
        _check_key(key)
        return await asyncio.to_thread(self._restore, key, Path(workspace))

    async def save(self, key: str, workspace: Path, *, tracked_files: Collection[str],
                   exclude: Sequence[str] = ()) -> SnapshotInfo | None:
        """Snapshots what setup left in `workspace` besides `tracked_files` (and `exclude` globs). None
        when it is larger than max_bytes // 4 (or deeper than MAX_DEPTH): nothing is kept then. I/O errors
        (e.g. a file shrinking while it is read: something still running) raise OSError, nothing kept."""
        _check_key(key)
        tracked = _normalise_tracked(tracked_files)
        return await asyncio.to_thread(self._save, key, Path(workspace), tracked, compile_globs(exclude))

    def usage(self) -> tuple[int, int]:
        """(bytes of the archives kept, number of snapshots)."""
        metas = self._all_meta()
        return sum(m["size"] for m in metas), len(metas)

    def info(self, key: str) -> SnapshotInfo | None:
        _check_key(key)
        meta = self._read_meta(self._meta_path(key))
        return self._info(meta) if meta else None

    # ---------------------------------------------------------------------------------- save

    def _save(self, key: str, workspace: Path, tracked: set[str],
              exclude: re.Pattern[str] | None) -> SnapshotInfo | None:
        started = time.monotonic()
        limit = self.max_snapshot_bytes
        try:
            entries = _scan(workspace, tracked, exclude, limit)
        except _TooLarge as exc:
            log.info("snapshot %s not kept: %s", key[:12], exc)
            return None
        suffix = _SUFFIX[self.compression]
        nonce = secrets.token_hex(6)
        tmp = self.root / "tmp" / f"{key}.{nonce}{suffix}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            try:
                if self.compression == "zstd":
                    count, files, content = self._write_zstd(workspace, entries, fd, limit)
                else:
                    count, files, content = _write_archive(workspace, entries, fd, limit)
                os.fsync(fd)
                size = os.fstat(fd).st_size
            finally:
                os.close(fd)
            if size > limit:
                raise _TooLarge(f"archive of {size} bytes")
            now = self._clock()
            meta = {"format": FORMAT_VERSION, "key": key, "archive": f"{key}.{nonce}{suffix}",
                    "compression": self.compression, "size": size, "entries": count, "files": files,
                    "content_bytes": content,
                    "created": now, "last_used": now}
            with self._lock():
                self._commit(key, tmp, meta)
                self._evict(keep=key)
        except _TooLarge as exc:
            log.info("snapshot %s not kept: %s", key[:12], exc)
            return None
        finally:
            tmp.unlink(missing_ok=True)
        log.info("snapshot %s saved: %d entries, %d content bytes, %d bytes %s, %.2fs", key[:12], count,
                 content, size, self.compression, time.monotonic() - started)
        return self._info(meta)

    def _write_zstd(self, workspace: Path, entries: list[_Entry], out_fd: int, limit: int) -> tuple[int, int, int]:
        assert self._zstd
        proc = subprocess.Popen([self._zstd, f"-{ZSTD_LEVEL}", "-T0", "-q", "-c", "--no-progress"],
                                stdin=subprocess.PIPE, stdout=out_fd, stderr=subprocess.DEVNULL,
                                close_fds=True, bufsize=0)
        assert proc.stdin is not None
        try:
            result = _write_archive(workspace, entries, proc.stdin.fileno(), limit)
        except BaseException:
            proc.kill()
            raise
        finally:
            proc.stdin.close()
            rc = proc.wait()
        if rc != 0:
            raise OSError(f"zstd exited with {rc}")
        return result

    def _commit(self, key: str, tmp: Path, meta: dict[str, Any]) -> None:
        meta_path = self._meta_path(key)
        meta_path.parent.mkdir(mode=0o700, exist_ok=True)
        old = self._read_meta(meta_path)
        os.replace(tmp, meta_path.parent / meta["archive"])
        self._write_meta(meta_path, meta)
        if old and old.get("archive") != meta["archive"]:
            (meta_path.parent / old["archive"]).unlink(missing_ok=True)

    def _evict(self, keep: str) -> None:
        metas = self._all_meta()
        total = sum(m["size"] for m in metas)
        for meta in sorted(metas, key=lambda m: m["last_used"]):
            if total <= self.max_bytes:
                break
            if meta["key"] == keep:
                continue
            self._drop(meta)
            total -= meta["size"]
            log.info("snapshot %s evicted (last used %.0f)", meta["key"][:12], meta["last_used"])
        self._sweep()

    def _sweep(self) -> None:
        """Removes leftovers of crashed saves: old temp files and archives no metadata names (under the lock,
        so no commit is half-done)."""
        now = time.time()
        for path in (self.root / "tmp").iterdir():
            try:
                if now - path.lstat().st_mtime > STALE_TMP_SECONDS:
                    path.unlink()
            except FileNotFoundError:
                pass
        for sub in self.root.iterdir():
            if len(sub.name) != 2 or not sub.is_dir():
                continue
            referenced = {m["archive"] for m in (self._read_meta(p) for p in sub.glob("*.json")) if m}
            for path in sub.iterdir():
                if path.suffix != ".json" and path.name not in referenced:
                    path.unlink(missing_ok=True)

    # ------------------------------------------------------------------------------- restore

    def _restore(self, key: str, workspace: Path) -> bool:
        started = time.monotonic()
        with self._lock():
            meta_path = self._meta_path(key)
            meta = self._read_meta(meta_path)
            if meta is None:
                return False
            try:
                src = os.open(meta_path.parent / meta["archive"], os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                self._drop(meta)
                return False
            meta["last_used"] = self._clock()
            self._write_meta(meta_path, meta)
        try:
            root_fd = os.open(workspace, _DIR_FLAGS)
        except BaseException:
            os.close(src)
            raise
        extractor = _Extractor(root_fd, self.max_snapshot_bytes)
        try:
            if os.fstat(src).st_size != meta["size"]:
                raise _Malformed(f"archive is {os.fstat(src).st_size} bytes, metadata says {meta['size']}")
            if meta["compression"] == "zstd":
                self._extract_zstd(src, extractor)
            else:
                extractor.extract(_TarReader(src, seekable=True))
        except _Malformed as exc:
            log.warning("snapshot %s unusable, dropped: %s", key[:12], exc)
            extractor.rollback()
            with self._lock():
                current = self._read_meta(meta_path)
                if current and current["archive"] == meta["archive"]:
                    self._drop(current)
            return False
        except BaseException:
            extractor.rollback()
            raise
        finally:
            extractor.close()
            os.close(root_fd)
            os.close(src)
        log.info("snapshot %s restored: %d entries, %d skipped, %.2fs", key[:12], extractor.restored,
                 extractor.skipped, time.monotonic() - started)
        return True

    def _extract_zstd(self, src: int, extractor: _Extractor) -> None:
        zstd = self._zstd or shutil.which("zstd")
        if not zstd:
            raise _Malformed("the snapshot is zstd-compressed and there is no zstd binary")
        os.lseek(src, 0, os.SEEK_SET)
        proc = subprocess.Popen([zstd, "-d", "-q", "-c", "--no-progress"], stdin=src, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, close_fds=True, bufsize=0)
        assert proc.stdout is not None
        try:
            extractor.extract(_TarReader(proc.stdout.fileno(), seekable=False))
            while os.read(proc.stdout.fileno(), _COPY_CHUNK):  # the rest, so that zstd checks its checksum
                pass
        except BaseException:
            proc.kill()
            raise
        finally:
            proc.stdout.close()
            rc = proc.wait()
        if rc != 0:
            raise _Malformed(f"zstd -d exited with {rc} (corrupt archive)")

    # ------------------------------------------------------------------------------ metadata

    def _meta_path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    @staticmethod
    def _read_meta(path: Path) -> dict[str, Any] | None:
        try:
            meta = json.loads(path.read_bytes())
        except (FileNotFoundError, ValueError):
            return None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
            return None
        return meta

    def _write_meta(self, path: Path, meta: dict[str, Any]) -> None:
        tmp = self.root / "tmp" / f"{path.name}.{secrets.token_hex(6)}"
        tmp.write_text(json.dumps(meta, sort_keys=True))
        os.replace(tmp, path)

    def _all_meta(self) -> list[dict[str, Any]]:
        metas = []
        for path in self.root.glob("??/*.json"):
            meta = self._read_meta(path)
            if meta is not None:
                metas.append(meta)
        return metas

    def _drop(self, meta: dict[str, Any]) -> None:
        meta_path = self._meta_path(meta["key"])
        meta_path.unlink(missing_ok=True)
        (meta_path.parent / meta["archive"]).unlink(missing_ok=True)

    def _info(self, meta: dict[str, Any]) -> SnapshotInfo:
        return SnapshotInfo(key=meta["key"], path=self._meta_path(meta["key"]).parent / meta["archive"],
                            size=meta["size"], entries=meta["entries"], files=meta.get("files", 0),
                            content_bytes=meta["content_bytes"],
                            compression=meta["compression"], created=meta["created"], last_used=meta["last_used"])

    def _lock(self) -> _FileLock:
        return _FileLock(self.root / ".lock")


class _FileLock:
    """flock on a file: excludes other threads (each opens its own description) and other processes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = -1

    def __enter__(self) -> None:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


def _check_key(key: str) -> None:
    if not isinstance(key, str) or not _KEY_RE.fullmatch(key):
        raise ValueError(f"snapshot key must be 64 lowercase hex digits, not {key!r}")
