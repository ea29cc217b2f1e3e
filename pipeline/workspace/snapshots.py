"""Setup snapshots: keep what a PR's setup commands produced (`.venv/`, `node_modules/`, build outputs)
and lay it into a later fresh checkout of the same project, so that setup, which still runs, finds its
work mostly done (a venv to reuse, packages already installed) and only brings it up to date.

The key (what determines setup's output) is `snapshot_key` in snapshot_key.py; what a snapshot
holds, its tar archive and how it is restored safely are in snapshot_archive.py. This module keeps the
archives: compressed, committed atomically, looked up and evicted.

**Format**: the GNU tar of snapshot_archive.py, by default compressed with the `zstd` binary at level 1
(`tar.zst`), or uncompressed (`tar`) when zstd is missing or with `compression="none"`.
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

**HOME caches**: the sandbox's HOME is the workspace, so the download caches of package managers land in
it (`.cache/pip`, `.npm/_cacache`, ...): 28 of commander's 135 MB snapshot were `.npm/_cacache`. They
are left out (`HOME_CACHES`) unless the store is made with `home_caches=True` (SNAPSHOT_HOME_CACHES):
setup runs after every restore, so they only save downloads (`npm ci` deletes `node_modules` and
installs from `.npm`), never change what setup produces.

**Size**: `max_bytes` bounds the archives kept; after each commit the least recently used snapshots
(by last restore or save) are evicted until the total fits (so disk use may exceed it by one archive
being written). A snapshot whose content (sum of file sizes plus tar headers) exceeds `max_bytes // 4`
is not kept: the check happens before anything is written (a sparse 1 TB file cannot fill the disk
on save or on restore), and the compressed archive must fit too.

Caller order: checkout -> `snapshot_key(...)` -> `restore(key, ws)` -> setup in the sandbox, hit or miss
(a snapshot is a warm start: setup brings it up to date with the commit, so a restored snapshot never
changes a verdict) -> on a miss, `save(key, ws, tracked_files=...)` (before any validate command runs,
so validation output such as coverage files is not captured; only after a *successful* setup; a save
error is worth a warning, not a failed validation) -> validate. Restored entries belong to the app until the sandbox chowns the
workspace at the start of the next run, as it does for the checkout. `tracked_files` are the commit's
paths as `git ls-files -z` (or `git ls-tree -r -z --name-only HEAD` in the mirror) prints them; run git
in the mirror, never in a workspace a sandbox has touched (see pipeline/sandbox/ownership.py).
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.workspace.snapshot_archive import (COPY_CHUNK, Entry, Extractor, Malformed, TarReader, TooLarge,
                                                 scan_workspace, write_archive)
from pipeline.workspace.snapshot_key import FORMAT_VERSION, compile_globs, normalise_tracked
from pipeline.workspace.trees import DIR_FLAGS

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 5 * 1024**3
HOME_CACHES = ("/.cache/", "/.npm/", "/.yarn/berry/cache/", "/.pnpm-store/", "/.local/share/pnpm/store/",
               "/.cargo/registry/", "/.cargo/git/", "/.m2/repository/", "/.gradle/caches/", "/go/pkg/mod/")
ZSTD_LEVEL = 1
STALE_TMP_SECONDS = 3600.0
_KEY_RE = re.compile(r"[0-9a-f]{64}")
_SUFFIX = {"zstd": ".tar.zst", "none": ".tar"}


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


# ----------------------------------------------------------------------------------------- store


class SnapshotStore:
    """Setup snapshots under `root` (see the module docstring)."""

    def __init__(self, root: Path, *, max_bytes: int = DEFAULT_MAX_BYTES, compression: str | None = None,
                 home_caches: bool = False, clock: Callable[[], float] = time.time) -> None:
        self.root = Path(root)
        self.always_excluded: tuple[str, ...] = () if home_caches else HOME_CACHES
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
        """Snapshots what setup left in `workspace` besides `tracked_files` (and `exclude` globs, and the HOME
        caches unless home_caches). None when it is larger than max_bytes // 4 (or deeper than MAX_DEPTH):
        nothing is kept then. I/O errors (e.g. a file shrinking while it is read: something still running)
        raise OSError, nothing kept."""
        _check_key(key)
        tracked = normalise_tracked(tracked_files)
        excluded = compile_globs([*exclude, *self.always_excluded])
        return await asyncio.to_thread(self._save, key, Path(workspace), tracked, excluded)

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
            entries = scan_workspace(workspace, tracked, exclude, limit)
        except TooLarge as exc:
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
                    count, files, content = write_archive(workspace, entries, fd, limit)
                os.fsync(fd)
                size = os.fstat(fd).st_size
            finally:
                os.close(fd)
            if size > limit:
                raise TooLarge(f"archive of {size} bytes")
            now = self._clock()
            meta = {"format": FORMAT_VERSION, "key": key, "archive": f"{key}.{nonce}{suffix}",
                    "compression": self.compression, "size": size, "entries": count, "files": files,
                    "content_bytes": content,
                    "created": now, "last_used": now}
            with self._lock():
                self._commit(key, tmp, meta)
                self._evict(keep=key)
        except TooLarge as exc:
            log.info("snapshot %s not kept: %s", key[:12], exc)
            return None
        finally:
            tmp.unlink(missing_ok=True)
        log.info("snapshot %s saved: %d entries, %d content bytes, %d bytes %s, %.2fs", key[:12], count,
                 content, size, self.compression, time.monotonic() - started)
        return self._info(meta)

    def _write_zstd(self, workspace: Path, entries: list[Entry], out_fd: int, limit: int) -> tuple[int, int, int]:
        assert self._zstd
        proc = subprocess.Popen([self._zstd, f"-{ZSTD_LEVEL}", "-T0", "-q", "-c", "--no-progress"],
                                stdin=subprocess.PIPE, stdout=out_fd, stderr=subprocess.DEVNULL,
                                close_fds=True, bufsize=0)
        assert proc.stdin is not None
        try:
            result = write_archive(workspace, entries, proc.stdin.fileno(), limit)
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
            root_fd = os.open(workspace, DIR_FLAGS)
        except BaseException:
            os.close(src)
            raise
        extractor = Extractor(root_fd, self.max_snapshot_bytes)
        try:
            if os.fstat(src).st_size != meta["size"]:
                raise Malformed(f"archive is {os.fstat(src).st_size} bytes, metadata says {meta['size']}")
            if meta["compression"] == "zstd":
                self._extract_zstd(src, extractor)
            else:
                extractor.extract(TarReader(src, seekable=True))
        except Malformed as exc:
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

    def _extract_zstd(self, src: int, extractor: Extractor) -> None:
        zstd = self._zstd or shutil.which("zstd")
        if not zstd:
            raise Malformed("the snapshot is zstd-compressed and there is no zstd binary")
        os.lseek(src, 0, os.SEEK_SET)
        proc = subprocess.Popen([zstd, "-d", "-q", "-c", "--no-progress"], stdin=src, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, close_fds=True, bufsize=0)
        assert proc.stdout is not None
        try:
            extractor.extract(TarReader(proc.stdout.fileno(), seekable=False))
            while os.read(proc.stdout.fileno(), COPY_CHUNK):  # the rest, so that zstd checks its checksum
                pass
        except BaseException:
            proc.kill()
            raise
        finally:
            proc.stdout.close()
            rc = proc.wait()
        if rc != 0:
            raise Malformed(f"zstd -d exited with {rc} (corrupt archive)")

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
