"""Retention of the UI check's screenshots: after SCREENSHOT_RETENTION_DAYS they are deleted.

Which validations' screenshots have expired is decided by `expired_validations`, a pure function of
the validations' database rows (completed_at, or created_at for a run that never completed) and the
clock; file times play no part. The running app (`serve` with its worker, or `codegenapp worker`)
prunes at start and then every hour (`ScreenshotPruner`). The filesystem work runs in a thread, and
it never leaves the screenshots root: only real directories `<root>/<validation id>/screenshots`
whose resolved path is exactly that are removed, and links inside them are removed, never followed.

One prune at a time per DATA_DIR, across processes: a run holds the database lease named after the
screenshots root's own id (a random id kept in `<root>/.retention-id`, made by the first process). Not
one lease for the whole app: the screenshots live on each machine's DATA_DIR, and the process holding
a single lease could prune only its own; processes sharing a DATA_DIR (on one machine, or on a shared
mount) share its id and take turns, machines with a DATA_DIR of their own each prune theirs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import stat
import secrets
import socket
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

from bot.models import VALIDATION_ACTIVE, utcnow
from bot.store import Store
from bot.store.leases import run_once
from pipeline.ui_check.screenshots import SCREENSHOTS, screenshots_root

log = logging.getLogger(__name__)

PRUNE_INTERVAL_SECONDS = 3600.0
LEASE_PREFIX = "screenshot-retention:"
LEASE_TTL = timedelta(minutes=5)  # renewed every third of it while a prune runs (bot.store.leases.held)
ID_FILE = ".retention-id"
_ID = re.compile(r"[0-9a-f]{32}\Z")
_QUERY_CHUNK = 500


class ValidationTimes(Protocol):
    """What the decision needs of a validation (a `ValidationState` and a `ValidationLifetime` have it)."""

    @property
    def id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def completed_at(self) -> datetime | None: ...


def screenshots_expire_at(validation: ValidationTimes, retention_days: int) -> datetime | None:
    """When this validation's screenshots expire, or None for never: retention is off (0 days), or the
    run is still queued or running (it may be writing them now; it is judged once it has ended)."""
    if retention_days <= 0 or validation.status in VALIDATION_ACTIVE:
        return None
    ended = validation.completed_at or validation.created_at
    return ended + timedelta(days=retention_days)


def screenshots_expired(validation: ValidationTimes, *, now: datetime, retention_days: int) -> bool:
    expires = screenshots_expire_at(validation, retention_days)
    return expires is not None and expires <= now


def expired_validations(validations: Iterable[ValidationTimes], *, now: datetime,
                        retention_days: int) -> list[str]:
    """The ids of the validations whose screenshots are to be deleted, in the order given."""
    return [v.id for v in validations if screenshots_expired(v, now=now, retention_days=retention_days)]


@dataclass(frozen=True)
class PruneResult:
    directories: int = 0
    bytes_freed: int = 0
    skipped: tuple[str, ...] = ()  # ids whose directory was not a real directory inside the root


def stored_validation_ids(root: Path) -> list[str]:
    """The validations with a screenshots directory under `root` (blocking: run it in a thread)."""
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return []
    return sorted(e.name for e in entries if _ID.match(e.name) and e.is_dir(follow_symlinks=False)
                  and os.path.lexists(os.path.join(e.path, SCREENSHOTS)))


def delete_screenshots(root: Path, validation_ids: Sequence[str], *,
                       stop: threading.Event | None = None) -> PruneResult:
    """Delete `<root>/<id>/screenshots` of each id, never anything outside `root` (blocking: run it in a
    thread). A directory that is a link, or that resolves elsewhere, is left alone and reported."""
    real_root = root.resolve()
    directories = freed = 0
    skipped: list[str] = []
    for validation_id in validation_ids:
        if stop is not None and stop.is_set():
            break
        if not _ID.match(validation_id):
            continue
        target, real = root / validation_id / SCREENSHOTS, real_root / validation_id / SCREENSHOTS
        if not _is_real_directory(target) or target.resolve() != real:
            if os.path.lexists(target):
                skipped.append(validation_id)
            continue
        size = _size_without_following_links(real)
        try:
            shutil.rmtree(real)  # fd-based on Linux: links inside are unlinked, never followed
        except FileNotFoundError:
            continue  # another process (a second worker on this DATA_DIR) pruned it first
        except OSError as exc:
            log.warning("screenshot retention: could not delete %s: %s", real, exc)
            continue
        directories += 1
        freed += size
        try:
            (real_root / validation_id).rmdir()  # only when nothing else is kept with the run
        except OSError:
            pass
    return PruneResult(directories, freed, tuple(skipped))


def retention_id(root: Path) -> str:
    """The screenshots root's own id (`<root>/.retention-id`), made by the first process that asks; every
    process on this DATA_DIR reads the same (blocking: run it in a thread)."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / ID_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):  # the first process may be writing it this instant
            found = path.read_text().strip()
            if _ID.match(found):
                return found
            threading.Event().wait(0.01)
        raise RuntimeError(f"{path} does not hold an id; remove it and it is made again") from None
    made = secrets.token_hex(16)
    with os.fdopen(fd, "w") as file:
        file.write(made + "\n")
    return made


def _is_real_directory(path: Path) -> bool:
    try:
        return stat.S_ISDIR(path.lstat().st_mode)
    except OSError:
        return False


def _size_without_following_links(top: Path) -> int:
    total = 0
    for directory, _dirs, files in os.walk(top, followlinks=False):
        for name in files:
            try:
                info = os.lstat(os.path.join(directory, name))
            except OSError:
                continue
            if stat.S_ISREG(info.st_mode):
                total += info.st_size
    return total


async def prune_screenshots(store: Store, data_dir: Path, *, retention_days: int, now: datetime | None = None,
                            stop: threading.Event | None = None) -> PruneResult:
    """Delete the screenshots of the validations that ended more than `retention_days` ago; logs one
    line. The filesystem work runs in a thread, the event loop only reads the rows and decides."""
    root = screenshots_root(data_dir)
    if retention_days <= 0:
        return PruneResult()
    stored = await asyncio.to_thread(stored_validation_ids, root)
    rows = await store.validations.lifetimes(stored, chunk=_QUERY_CHUNK)
    expired = expired_validations(rows, now=now or utcnow(), retention_days=retention_days)
    result = await asyncio.to_thread(delete_screenshots, root, expired, stop=stop)
    unknown = len(stored) - len(rows)
    log.info("screenshot retention (%d days): pruned %d directories, freed %s (%d bytes); %d kept%s%s",
             retention_days, result.directories, _human(result.bytes_freed), result.bytes_freed,
             len(stored) - result.directories,
             f", {unknown} without a validation row" if unknown else "",
             f", {len(result.skipped)} not real directories inside {root}, left alone" if result.skipped else "")
    return result


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover


class ScreenshotPruner:
    """Prunes at start, then every `interval` seconds, until `stop()`; under the lease of its DATA_DIR."""

    def __init__(self, store: Store, data_dir: Path, retention_days: int, *,
                 interval: float = PRUNE_INTERVAL_SECONDS) -> None:
        self.store = store
        self.data_dir = data_dir
        self.retention_days = retention_days
        self.interval = interval
        self.first_run_done = asyncio.Event()
        self._lock = asyncio.Lock()
        self._stop = threading.Event()  # seen by the deleting thread between directories
        self._task: asyncio.Task[None] | None = None
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"[:64]
        self._lease: str | None = None

    def start(self) -> None:
        if self.retention_days <= 0:
            log.info("screenshot retention off (SCREENSHOT_RETENTION_DAYS=0): screenshots are kept forever")
            self.first_run_done.set()
            return
        if self._task is None:
            self._stop.clear()  # started again after a stop
            self._task = asyncio.create_task(self._loop(), name="screenshot-retention")

    async def lease_name(self) -> str:
        if self._lease is None:
            self._lease = LEASE_PREFIX + await asyncio.to_thread(retention_id, screenshots_root(self.data_dir))
        return self._lease

    async def run_once(self) -> PruneResult | None:
        """One prune; None when another process on this DATA_DIR holds the lease (it is pruning)."""
        async with self._lock:  # the periodic run and an explicit one never overlap
            lease = await self.lease_name()
            return await run_once(self.store.leases, lease, self.holder, ttl=LEASE_TTL, doing="screenshot retention",
                                  work=lambda: prune_screenshots(self.store, self.data_dir,
                                                                 retention_days=self.retention_days, stop=self._stop))

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:  # noqa: BLE001 - the next run tries again
                log.exception("screenshot retention: the prune failed; trying again in %.0f s", self.interval)
            self.first_run_done.set()
            await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
