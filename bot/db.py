"""The database: SQLite (embedded default) or PostgreSQL, used through units of work.

Every read or write is a plain function over a SQLAlchemy `Connection`, run as one transaction:

    rows = await db.read(lambda conn: conn.execute(stmt).all())

A unit of work only touches the database (it may run twice: see below), so it must not do other I/O.

SQLite: WAL, and every write transaction opened with BEGIN IMMEDIATE so a read-then-write can never
lose an update (the platform notes measured the driver default losing half of them).

A unit of work runs *inline* on the event loop's thread, on a connection of its own that never waits
for a lock (busy_timeout 0): a small transaction costs tens of microseconds there, where a hop to a
database thread costs ~0.3 ms and, under load, a wait for the GIL after every statement (the thread
releases it for each SQLite call and queues behind the loop to get it back; bench/README.md). When
the database is locked (another process, or a transaction already running on the fallback thread),
the inline attempt is rolled back and the unit of work runs again on a writer thread that waits for the
lock (busy timeout) without blocking the loop. WAL checkpoints, which write and fsync the database
file, also run on that thread, never inline, and so do reads marked `large` (the dashboard's lists,
which decode many JSON documents).

Group commit (SQLite): the write units of work submitted during one turn of the event loop run in one
transaction, in the order they came, at the start of the next turn. A commit costs far more than the
statements of a small unit (it writes every page they touched to the WAL: ~40 µs for one small row,
~4 µs a row when they share a commit), and under load many tasks write in the same turn. When one of
them raises, the transaction is rolled back and each unit runs again in a transaction of its own, so
only its caller sees the error (a unit of work may run twice: it must only touch the database).
A unit whose caller was cancelled before it ran is dropped.

PostgreSQL: the async engine (asyncpg) runs the same functions through `run_sync`.

Before a SQLite file is used, `check_sqlite_file` refuses a damaged one (`PRAGMA quick_check`: a bad
page otherwise goes unnoticed until every job that reads it fails) and an empty one where DATA_DIR
says the app ran before (a truncated or lost file would otherwise start as a fresh database: the
projects back with new ids, their settings and secrets gone), unless the operator asks for a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

T = TypeVar("T")
# A unit of work waiting for the next group commit, and the future its caller awaits.
_Pending = tuple[Callable[[Connection], Any], asyncio.Future[Any]]

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 10_000
SQLITE_READ_THREADS = 2
# Checkpoint (on the writer thread) after this many inline write transactions, or at the latest
# CHECKPOINT_SECONDS after a write: SQLite's own auto-checkpoint would run inside a commit on the loop.
CHECKPOINT_EVERY_WRITES = 500
CHECKPOINT_SECONDS = 1.0


def _sqlite_pragmas(busy_timeout_ms: int) -> Callable[[Any, Any], None]:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take over transaction control from Python's sqlite3 module (see BEGIN IMMEDIATE below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA wal_autocheckpoint=0")
        cursor.close()
    return on_connect


def _begin_immediate(connection: Connection) -> None:
    # Straight to the driver: through SQLAlchemy's execution path a BEGIN costs ~40 µs, and every
    # unit of work has one.
    connection.connection.driver_connection.execute("BEGIN IMMEDIATE")  # type: ignore[union-attr]


def _begin_deferred(connection: Connection) -> None:
    connection.connection.driver_connection.execute("BEGIN")  # type: ignore[union-attr]


def sync_url(url: str) -> str:
    """The URL of the synchronous driver for SQLite (DATABASE_URL may name aiosqlite)."""
    return "sqlite://" + url.split("://", 1)[1] if url.startswith("sqlite") else url


class DatabaseUnusable(Exception):
    """The database cannot be used as it is; the message names the file and what to do."""


# Rows of `PRAGMA quick_check` quoted in the refusal (the rest are more of the same damage).
QUICK_CHECK_ROWS = 3
# Files that passed quick_check in this process, by (device, inode, size, mtime): `serve` checks before
# migrating in a child process and opens the same, unchanged file again right after.
_checked: set[tuple[int, int, int, int]] = set()


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite DATABASE_URL (None for PostgreSQL or an in-memory database)."""
    if not url.startswith("sqlite"):
        return None
    database = make_url(url).database
    return Path(database).resolve() if database and database != ":memory:" else None


def check_sqlite_file(path: Path, *, keys_found_in: Path | None, init: bool) -> None:
    """Refuse (DatabaseUnusable) a damaged database, and an empty or missing one when `keys_found_in`
    (DATA_DIR, when it held the keys a previous start generated) unless `init` (the operator's --init)."""
    empty = not path.exists()
    if not empty:
        try:
            with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=rw", uri=True)) as conn:
                problems = _quick_check(conn, path)
                empty = not problems and conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
        except sqlite3.DatabaseError as exc:
            if getattr(exc, "sqlite_errorcode", None) not in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
                raise DatabaseUnusable(f"the database {path} cannot be opened: {exc}") from exc
            problems = [str(exc)]
        if problems:
            raise DatabaseUnusable(
                f"the database {path} is damaged ({'; '.join(problems)}): stop the app and restore the file from "
                f"a backup (`sqlite3 {path} .recover` saves what is still readable); the app will not use it as it is")
    if empty and keys_found_in is not None and not init:
        raise DatabaseUnusable(
            f"the database {path} is {'empty' if path.exists() else 'missing'}, but {keys_found_in} holds the keys "
            "of an installation that ran before: starting would lose its projects, settings and secrets. Restore "
            "the database from a backup, or begin with an empty one: `codegenapp migrate --init` (or `serve --init`, "
            "`worker --init`)")


def _quick_check(conn: sqlite3.Connection, path: Path) -> list[str]:
    st = path.stat()
    identity = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    if identity in _checked:
        return []
    rows: list[str] = []
    try:
        for (row,) in conn.execute(f"PRAGMA quick_check({QUICK_CHECK_ROWS})"):
            rows.append(" ".join(row.split()))  # one line: a row may hold several
    except sqlite3.DatabaseError as exc:  # the damage may stop the check itself, after what it found
        if not rows:
            raise
        rows.append(str(exc))
    if rows == ["ok"]:
        _checked.add(identity)
        return []
    return rows


def failure_cause(exc: BaseException) -> BaseException:
    """The driver's own error behind a SQLAlchemy one (whose text quotes the statement and its values)."""
    return exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc


def disk_full(exc: BaseException) -> bool:
    """Whether a failed write failed because the disk (or the database's quota) is full."""
    cause = failure_cause(exc)
    if isinstance(cause, sqlite3.Error):
        return getattr(cause, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
    if isinstance(cause, OSError):
        return cause.errno in (errno.ENOSPC, errno.EDQUOT)
    return getattr(cause, "sqlstate", None) == "53100"  # PostgreSQL's disk_full


def _sqlite_engine(url: str, *, begin: Callable[[Connection], None], pool_size: int = 1,
                   busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS, single: bool = False) -> Engine:
    options: dict[str, Any] = {"poolclass": StaticPool} if single else {"pool_size": pool_size, "max_overflow": 0}
    engine = create_engine(sync_url(url), pool_reset_on_return=None, connect_args={"check_same_thread": False},
                           **options)
    event.listen(engine, "connect", _sqlite_pragmas(busy_timeout_ms))
    event.listen(engine, "begin", begin)
    return engine


def _is_locked(exc: OperationalError | sqlite3.OperationalError) -> bool:
    orig = failure_cause(exc)  # a BEGIN goes to the driver directly: its error is already the driver's
    if not isinstance(orig, sqlite3.OperationalError):
        return False
    code = getattr(orig, "sqlite_errorcode", None)
    return code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or "database is locked" in str(orig)


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self._async_engine: AsyncEngine | None = None
        if self.is_sqlite:
            # inline (on the loop): one connection each, never waiting for a lock
            self._inline_write = _Inline(_sqlite_engine(url, begin=_begin_immediate, busy_timeout_ms=0, single=True))
            self._inline_read = _Inline(_sqlite_engine(url, begin=_begin_deferred, busy_timeout_ms=0, single=True))
            # fallback and checkpoints (threads): wait for the lock
            self._write_engine = _sqlite_engine(url, begin=_begin_immediate)
            self._read_engine = _sqlite_engine(url, begin=_begin_deferred, pool_size=SQLITE_READ_THREADS)
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="db-write")
            self._readers = ThreadPoolExecutor(SQLITE_READ_THREADS, thread_name_prefix="db-read")
            self._writes_since_checkpoint = 0
            self._checkpoint_handle: asyncio.TimerHandle | None = None
            self._checkpointing: asyncio.Future[Any] | None = None
            self._pending: list[_Pending] = []
            self._flush_handle: asyncio.Handle | None = None
            self._fallbacks: set[asyncio.Task[None]] = set()
        else:
            self._async_engine = create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)

    @property
    def dialect_name(self) -> str:
        return "sqlite" if self.is_sqlite else "postgresql"

    async def write(self, work: Callable[[Connection], T]) -> T:
        """Run `work` in a write transaction, committed when it returns (with the other units of work
        submitted in the same turn of the loop, on SQLite)."""
        if self._async_engine is not None:
            async with self._async_engine.begin() as conn:
                return await conn.run_sync(work)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._pending.append((work, future))
        if self._flush_handle is None:
            self._flush_handle = loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._flush_handle = None
        batch = [(work, future) for work, future in self._pending if not future.cancelled()]
        self._pending = []
        if batch:
            self._commit_inline(batch)

    def _commit_inline(self, batch: list[_Pending]) -> None:
        try:
            results = self._inline_write.run(_all_of([work for work, _ in batch]))
        except _UnitFailed as failed:
            if _is_locked(failed.error):
                self._fall_back(batch)
            elif len(batch) == 1:
                _settle(batch[0][1], error=failed.error)
            else:
                for entry in batch:
                    self._commit_inline([entry])
            return
        except (OperationalError, sqlite3.OperationalError) as exc:
            if _is_locked(exc):
                self._fall_back(batch)
            else:
                _settle_all(batch, error=exc)
            return
        self._committed(batch, results)

    def _fall_back(self, batch: list[_Pending]) -> None:
        """The database is locked: run the batch on the writer thread, which waits for the lock."""
        task = asyncio.get_running_loop().create_task(self._commit_on_writer(batch))
        self._fallbacks.add(task)
        task.add_done_callback(self._fallbacks.discard)

    async def _commit_on_writer(self, batch: list[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self._writer, _in_transaction, self._write_engine,
                                                 _all_of([work for work, _ in batch]))
        except _UnitFailed as failed:
            if len(batch) == 1:
                _settle(batch[0][1], error=failed.error)
            else:
                for entry in batch:
                    await self._commit_on_writer([entry])
            return
        except Exception as exc:  # noqa: BLE001 - handed to the callers
            _settle_all(batch, error=exc)
            return
        self._committed(batch, results)

    def _committed(self, batch: list[_Pending], results: list[Any]) -> None:
        for (_, future), result in zip(batch, results, strict=True):
            _settle(future, result=result)
        self._wrote()

    async def read(self, work: Callable[[Connection], T], *, large: bool = False) -> T:
        """Run `work` in a read transaction. `large`: it may read many rows or big JSON documents
        (the dashboard's lists), so it runs on a reader thread instead of holding up the loop."""
        if self._async_engine is not None:
            async with self._async_engine.connect() as conn:
                return await conn.run_sync(work)
        if not large:
            try:
                return self._inline_read.run(work)
            except (OperationalError, sqlite3.OperationalError) as exc:
                if not _is_locked(exc):
                    raise
        return await asyncio.get_running_loop().run_in_executor(self._readers, _in_transaction,
                                                                self._read_engine, work)

    async def run_migration(self, work: Callable[[Connection], T]) -> T:
        """For Alembic: `work` gets a connection in a transaction (DDL included), off the loop."""
        if self._async_engine is not None:
            return await self.write(work)
        return await asyncio.get_running_loop().run_in_executor(self._writer, _in_transaction,
                                                                self._write_engine, work)

    # WAL checkpoints, on the writer thread
    def _wrote(self) -> None:
        self._writes_since_checkpoint += 1
        if self._writes_since_checkpoint >= CHECKPOINT_EVERY_WRITES:
            self._checkpoint()
        elif self._checkpoint_handle is None:
            self._checkpoint_handle = asyncio.get_running_loop().call_later(CHECKPOINT_SECONDS, self._checkpoint)

    def _checkpoint(self) -> None:
        if self._checkpoint_handle is not None:
            self._checkpoint_handle.cancel()
            self._checkpoint_handle = None
        if self._checkpointing is not None and not self._checkpointing.done():
            return  # the next write schedules another
        self._writes_since_checkpoint = 0
        self._checkpointing = asyncio.get_running_loop().run_in_executor(self._writer, self._checkpoint_now)

    def _checkpoint_now(self) -> None:
        try:
            raw = self._write_engine.raw_connection()  # outside any transaction, as a checkpoint must be
            try:
                raw.driver_connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            finally:
                raw.close()
        except Exception:  # noqa: BLE001 - a later checkpoint catches up
            log.warning("WAL checkpoint failed", exc_info=True)

    async def dispose(self) -> None:
        if self._async_engine is not None:
            await self._async_engine.dispose()
            return
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush()
        while self._fallbacks:
            await asyncio.gather(*self._fallbacks, return_exceptions=True)
        if self._checkpoint_handle is not None:
            self._checkpoint_handle.cancel()
            self._checkpoint_handle = None
        if self._checkpointing is not None:
            await asyncio.gather(self._checkpointing, return_exceptions=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._writer, self._checkpoint_now)
        self._inline_write.dispose()
        self._inline_read.dispose()
        await loop.run_in_executor(self._writer, self._write_engine.dispose)
        await loop.run_in_executor(self._readers, self._read_engine.dispose)
        self._writer.shutdown(wait=False)
        self._readers.shutdown(wait=False)


class _Inline:
    """One connection kept open for the loop's own units of work (they never overlap: each runs
    whole, without an await), which saves building a Connection for every transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._conn: Connection | None = None

    def run(self, work: Callable[[Connection], T]) -> T:
        conn = self._conn
        if conn is None or conn.closed or conn.invalidated:
            conn = self._conn = self.engine.connect()
        with conn.begin():
            return work(conn)

    def dispose(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self.engine.dispose()


class _UnitFailed(Exception):
    """One unit of work of a group commit raised `error`: the whole transaction is rolled back."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(repr(error))
        self.error = error


def _all_of(works: list[Callable[[Connection], Any]]) -> Callable[[Connection], list[Any]]:
    def run(conn: Connection) -> list[Any]:
        results = []
        for work in works:
            try:
                results.append(work(conn))
            except Exception as exc:
                raise _UnitFailed(exc) from exc
        return results
    return run


def _settle_all(batch: list[_Pending], *, error: BaseException) -> None:
    for _, future in batch:
        _settle(future, error=error)


def _settle(future: asyncio.Future[Any], *, result: Any = None, error: BaseException | None = None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _in_transaction(engine: Engine, work: Callable[[Connection], T]) -> T:
    with engine.begin() as conn:
        return work(conn)
