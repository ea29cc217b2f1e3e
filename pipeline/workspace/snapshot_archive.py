"""What a setup snapshot holds, and its archive: the scan of a workspace after setup, a small GNU tar
writer and reader over file descriptors, and the extractor that lays an archive into a fresh checkout
without overwriting or following anything. The store (pipeline/workspace/snapshots.py) compresses,
keeps and evicts the archives.

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

The tar (integer mtimes, no PAX headers, arbitrary byte names) is written and read here over file
descriptors, using tarfile only for the header codec (TarInfo.tobuf / TarInfo.frombuf): tarfile's
stream mode copies its whole buffer on every small read or write, and file data here moves in the
kernel (copy_file_range / sendfile into zstd's pipe / splice out of it).

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
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline.workspace.trees import DIR_FLAGS, READ_FLAGS, DirChain

log = logging.getLogger(__name__)

MAX_DEPTH = 256  # deeper trees are not snapshotted (each level holds one directory fd)
COPY_CHUNK = 1 << 20
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_BLOCK = 512
_ENCODING = "utf-8"
_MAX_NAME = 64 * 1024
_MAX_MTIME = 8**11 - 1  # what a ustar header holds in octal (year 2242)


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
        chunk = os.read(src, min(remaining, COPY_CHUNK))
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

class _TarWriter:
    def __init__(self, fd: int, limit: int) -> None:
        self.fd = fd
        self.limit = limit
        self.written = 0
        self.buf = bytearray()

    def _account(self, n: int) -> None:
        self.written += n
        if self.written > self.limit:
            raise TooLarge(f"more than {self.limit} bytes")

    def _emit(self, data: bytes) -> None:
        self._account(len(data))
        self.buf += data
        if len(self.buf) >= COPY_CHUNK:
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


class TarReader:
    """Iterates over the members of a GNU tar read from `fd` (a regular file, read with pread at explicit
    offsets, or a pipe). After each member is yielded, the consumer may call `copy_data`; whatever data
    it left is skipped. Anything that is not a well-formed archive written by _TarWriter raises
    Malformed (including a missing end-of-archive block: a truncated archive)."""

    def __init__(self, fd: int, *, seekable: bool) -> None:
        self.fd = fd
        self.seekable = seekable
        self.pos = 0
        self.remaining = 0

    def _read_exact(self, n: int) -> bytes:
        chunks, got = [], 0
        while got < n:
            if self.seekable:
                chunk = os.pread(self.fd, min(n - got, COPY_CHUNK), self.pos + got)
            else:
                chunk = os.read(self.fd, min(n - got, COPY_CHUNK))
            if not chunk:
                raise Malformed("archive truncated")
            chunks.append(chunk)
            got += len(chunk)
        self.pos += n
        return b"".join(chunks)

    def _skip(self, n: int) -> None:
        if self.seekable:
            self.pos += n
        else:
            while n:
                n -= len(self._read_exact(min(n, COPY_CHUNK)))

    def copy_data(self, dst: int, n: int) -> None:
        if n > self.remaining:
            raise Malformed("reading past a member's data")
        try:
            if self.seekable:
                os.lseek(self.fd, self.pos, os.SEEK_SET)
            _copy_fd(self.fd, dst, n)
        except EOFError:
            raise Malformed("archive truncated") from None
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
                raise Malformed(f"bad tar header at {self.pos - _BLOCK}: {exc}") from None
            if info.type in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK):
                if not 0 < info.size <= _MAX_NAME:
                    raise Malformed("bad GNU long name")
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
                raise Malformed(f"unsupported member type {info.type!r} for {info.name!r}")
            if info.type == tarfile.DIRTYPE or info.type == tarfile.SYMTYPE:
                info.size = 0  # no data follows these whatever the header says
            self.remaining = info.size
            yield info
            self._skip(self.remaining + _round_up(info.size) - info.size)
            self.remaining = 0


# ------------------------------------------------------------------------------------------ save

@dataclass
class Entry:
    path: str
    kind: str  # "d", "f", "l"
    mode: int
    mtime: int
    size: int = 0
    target: str = ""


class TooLarge(Exception):
    """The snapshot would be larger (or deeper) than allowed: it is not kept."""


class Malformed(Exception):
    """The archive is corrupt or breaks a rule of restoring: the restore is a miss."""


def _tar_overhead(path: str, target: str = "") -> int:
    extra = 0
    for name in (path, target):
        if len(os.fsencode(name)) >= 100:  # GNU long name/link: one header + the name's blocks
            extra += _BLOCK + _round_up(len(os.fsencode(name)) + 1)
    return _BLOCK + extra


def _round_up(n: int) -> int:
    return (n + _BLOCK - 1) // _BLOCK * _BLOCK


def scan_workspace(workspace: Path, tracked: set[str], exclude: re.Pattern[str] | None, limit: int) -> list[Entry]:
    """What a snapshot of `workspace` holds, in tar order (a directory before its contents). Raises
    TooLarge when the archive would exceed `limit` bytes or the tree is deeper than MAX_DEPTH."""
    tracked_dirs = {p.rsplit("/", i)[0] for p in tracked for i in range(1, p.count("/") + 1)}
    entries: list[Entry] = []
    estimate = 2 * _BLOCK  # the end-of-archive blocks
    root_fd = os.open(workspace, DIR_FLAGS)
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
                    raise TooLarge(f"deeper than {MAX_DEPTH} directories at {rel!r}")
                if rel not in tracked_dirs:
                    entries.append(Entry(rel, "d", mode, _mtime(st)))
                    estimate += _tar_overhead(rel)
                try:
                    sub = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
                except FileNotFoundError:
                    continue
                stack.append((sub, rel + "/", iter(_listdir(sub))))
            elif rel in tracked_dirs:
                continue  # a tracked directory that setup replaced: the checkout provides it
            elif stat.S_ISLNK(st.st_mode):
                target = os.readlink(name, dir_fd=dir_fd)
                entries.append(Entry(rel, "l", 0o777, _mtime(st), target=target))
                estimate += _tar_overhead(rel, target)
            elif stat.S_ISREG(st.st_mode):
                entries.append(Entry(rel, "f", mode, _mtime(st), size=st.st_size))
                estimate += _tar_overhead(rel) + _round_up(st.st_size)
            # fifos, sockets, devices: skipped
            if _round_up_record(estimate) > limit:
                raise TooLarge(f"more than {limit} bytes")
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


def write_archive(workspace: Path, entries: list[Entry], out_fd: int, limit: int) -> tuple[int, int, int]:
    """Writes the uncompressed GNU tar of `entries` to out_fd. Returns (entries, regular files, content bytes)."""
    writer = _TarWriter(out_fd, limit)
    root_fd = os.open(workspace, DIR_FLAGS)
    chain = DirChain(root_fd)
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
                    fd = os.open(parts[-1], READ_FLAGS, dir_fd=chain.get(parts[:-1]))
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
        raise Malformed(f"bad member name {name!r}")
    parts = name.split("/")
    if any(p in ("", ".", "..", ".git") for p in parts):
        raise Malformed(f"bad member name {name!r}")
    return parts


class Extractor:
    """Lays the members of a snapshot into `root_fd` without overwriting or following anything."""

    def __init__(self, root_fd: int, limit: int) -> None:
        self.chain = DirChain(root_fd)
        self.limit = limit
        self.content = 0
        self.created_dirs: set[str] = set()
        self.tops: list[tuple[list[str], bool]] = []  # created entries whose parent existed: (parts, is_dir)
        self.dir_attrs: list[tuple[list[str], int, int]] = []
        self.restored = 0
        self.skipped = 0

    def extract(self, reader: TarReader) -> None:
        for member in reader:
            self.member(reader, member)
        self.finish()

    def member(self, reader: TarReader, member: tarfile.TarInfo) -> None:
        parts = _member_parts(member)
        if member.issym() and not member.linkname:
            raise Malformed(f"symlink {member.name!r} without a target")
        if not 0 <= member.mtime <= _MAX_MTIME:
            raise Malformed(f"mtime {member.mtime} of {member.name!r}")
        if member.isreg():
            self.content += member.size
            if self.content > self.limit:
                raise Malformed("content larger than the snapshot limit")
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
                fd = os.open(parts[-1], DIR_FLAGS, dir_fd=self.chain.get(parts[:-1]))
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
