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
A unit whose caller was cancelled before it ran is dropped (on both databases).

PostgreSQL: the async engine (asyncpg) runs the same functions through `run_sync`, with group commit
too. What costs there is round trips to the server (each a send, a wait and a wake-up of the loop, ~0.1
ms of CPU under load), so the path takes as few as it can (`_Postgres`):
  - the write units of work of one turn of the loop run in one transaction (one BEGIN and one COMMIT
    for all of them), in the order they came; when one raises or the server refuses a statement (which
    aborts the whole transaction), the batch is rolled back and each unit runs again alone, as on
    SQLite. At most PG_WRITE_BATCHES batches run at once; what comes meanwhile goes in the next one.
    Isolation is READ COMMITTED as before: units that read then write rely on row locks, upserts, an
    advisory lock (validations) or SKIP LOCKED (the job claim), which hold within a shared transaction
    as they do alone (a unit sees what the units before it in its batch wrote, and their locks are its
    own); a batch holds its locks until its last unit ran.
  - reads run on connections in autocommit mode: no BEGIN or ROLLBACK round trip (each statement sees
    a snapshot of its own, as in a READ COMMITTED transaction). A read must not open a savepoint.
    The reads of one turn run one after the other on one connection (one hop into SQLAlchemy's
    greenlet for them all); each succeeds or fails alone.
  - the connections are held open, not checked out of the pool for every transaction, and not pinged
    before use (the pool's pre-ping cost three round trips per transaction): a unit that finds its
    connection dropped by the server (a restart) makes the batch run again, once, on a new connection.
  - hot statements (bot/store/prepared.py) go to asyncpg through SQLAlchemy's DBAPI adapter without
    `Connection.execute`, and asyncpg keeps them prepared on each connection.

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
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
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
# PostgreSQL: batches of units of work in flight at once, each on a connection of its own held open
# (more wait, and go together in the next batch), and the engine's pool (those, and migrations).
# One write batch at a time: the bench measured a batch per 3 deliveries (a BEGIN and a COMMIT round
# trip each), against one per 1.3 deliveries with two at a time, for the same latency.
PG_WRITE_BATCHES = 1
PG_READ_BATCHES = 2
PG_ALONE_BATCHES = 1  # `write(alone=True)`: each unit its own transaction, outside the group commit
PG_POOL_SIZE = PG_WRITE_BATCHES + PG_READ_BATCHES + PG_ALONE_BATCHES
PG_POOL_OVERFLOW = 4


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


# PostgreSQL: the large values the app writes (a delivery's payload, ~25 KB of JSON) are compressed with lz4
# where the server has it (PostgreSQL 14 and later, built with lz4), not pglz, the default: pglz took ~0.2 ms of
# the server's CPU per payload, about a sixth of all it spends on a delivery. A server without lz4 keeps pglz;
# values already stored are read either way.
_LZ4_WHERE_AVAILABLE = ("SELECT set_config('default_toast_compression', 'lz4', false) FROM pg_settings "
                        "WHERE name = 'default_toast_compression' AND 'lz4' = ANY(enumvals)")


def _postgres_session(dbapi_connection: Any, _record: Any) -> None:
    # On asyncpg's own connection, outside any transaction: the setting is the session's.
    dbapi_connection.run_async(lambda driver: driver.execute(_LZ4_WHERE_AVAILABLE))


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
            self._async_engine = create_async_engine(url, pool_size=PG_POOL_SIZE, max_overflow=PG_POOL_OVERFLOW)
            event.listen(self._async_engine.sync_engine, "connect", _postgres_session)
            self._postgres = _Postgres(self._async_engine)

    @property
    def dialect_name(self) -> str:
        return "sqlite" if self.is_sqlite else "postgresql"

    async def write(self, work: Callable[[Connection], T], *, alone: bool = False) -> T:
        """Run `work` in a write transaction, committed when it returns (with the other units of work
        submitted in the same turn of the loop). `alone` (PostgreSQL): outside the group commit, each of
        its statements committed by itself: for a statement that may wait for a row lock another process
        holds (a write lane), which must not stall a batch nor keep its locks until a batch commits.
        SQLite has one writer at a time anyway: `alone` changes nothing there."""
        if self._async_engine is not None:
            return await (self._postgres.write_alone(work) if alone else self._postgres.write(work))
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
            return await self._postgres.read(work)
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
            async with self._async_engine.begin() as conn:
                return await conn.run_sync(work)
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
            await self._postgres.close()
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


class _Batches:
    """Units of work submitted during one turn of the loop, handed together to `run_batch` at the start
    of the next; at most `limit` batches run at once, and what comes meanwhile waits to go together
    in the next one (the busier the app, the larger the batches)."""

    def __init__(self, run_batch: Callable[[list[_Pending]], Awaitable[None]], limit: int) -> None:
        self._run_batch = run_batch
        self._limit = limit
        self._pending: list[_Pending] = []
        self._flush_handle: asyncio.Handle | None = None
        self._running: set[asyncio.Task[None]] = set()

    async def submit(self, work: Callable[[Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._pending.append((work, future))
        if self._flush_handle is None and len(self._running) < self._limit:
            self._flush_handle = loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._flush_handle = None
        batch = [(work, future) for work, future in self._pending if not future.cancelled()]
        self._pending = []
        if batch:
            task = asyncio.get_running_loop().create_task(self._run_guarded(batch))
            self._running.add(task)
            task.add_done_callback(self._finished)

    async def _run_guarded(self, batch: list[_Pending]) -> None:
        try:
            await self._run_batch(batch)
        except BaseException as exc:  # a bug, or cancelled: no caller may wait for ever
            _settle_all(batch, error=exc if isinstance(exc, Exception) else asyncio.CancelledError())
            raise

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if self._pending and self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)

    async def drain(self) -> None:
        while self._pending or self._running:
            if self._flush_handle is not None:
                self._flush_handle.cancel()
            self._flush()
            await asyncio.gather(*self._running, return_exceptions=True)


class _Postgres:
    """PostgreSQL's units of work, in batches (`_Batches`) over a few connections held open.

    Writes: one transaction per batch; when a unit raises (or the commit fails), the batch is
    rolled back and each of its units runs again alone, so only its caller sees the error. Reads: the
    units of a batch one after the other on a connection in autocommit mode (each statement its own
    transaction, as each statement of a READ COMMITTED transaction sees its own snapshot anyway): no
    BEGIN or ROLLBACK round trips. A connection found dead (the server restarted) is replaced and the
    batch runs again once, which is what the pool's pre-ping did, without its round trips before every
    transaction."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._idle: dict[bool, list[AsyncConnection]] = {False: [], True: []}  # by autocommit
        self._writes = _Batches(self._commit, PG_WRITE_BATCHES)
        self._reads = _Batches(self._read, PG_READ_BATCHES)
        # Units that must not wait in (nor hold their locks until the end of) a group commit: one after the
        # other on one connection, each committed by itself (autocommit: a one-statement unit is one round trip).
        self._alone = _Batches(self._read, PG_ALONE_BATCHES)

    async def write(self, work: Callable[[Connection], T]) -> T:
        return await self._writes.submit(work)

    async def write_alone(self, work: Callable[[Connection], T]) -> T:
        """Each statement of `work` commits by itself: only for units whose statements stand alone (a
        lane's upsert, renewal or release), never for one that needs them to succeed together."""
        return await self._alone.submit(work)

    async def read(self, work: Callable[[Connection], T]) -> T:
        return await self._reads.submit(work)

    async def _commit(self, batch: list[_Pending]) -> None:
        try:
            results = await self._run(_in_one_transaction([work for work, _ in batch]), autocommit=False)
        except Exception as exc:  # noqa: BLE001 - handed to the callers
            if len(batch) == 1:
                _settle(batch[0][1], error=exc.error if isinstance(exc, _UnitFailed) else exc)
            else:
                for entry in batch:
                    if not entry[1].done():
                        await self._commit([entry])
            return
        for (_, future), result in zip(batch, results, strict=True):
            _settle(future, result=result)

    async def _read(self, batch: list[_Pending]) -> None:
        outcomes = await self._run(_each_alone([work for work, _ in batch]), autocommit=True)
        for (_, future), (error, result) in zip(batch, outcomes, strict=True):
            _settle(future, result=result, error=error)

    async def _run(self, work: Callable[[Connection], T], *, autocommit: bool) -> T:
        for attempt in (1, 2):
            conn = await self._connection(autocommit)
            usable = False  # cancelled while a statement ran, the connection is in an unknown state
            try:
                result = await conn.run_sync(work)
                usable = True
                return result
            except Exception as exc:
                usable = True  # rolled back (or invalidated, which `_release` sees)
                if attempt == 2 or not _connection_lost(exc):
                    raise
                await self._forget_idle()
            finally:
                await self._release(conn, autocommit, usable=usable)
        raise AssertionError("unreachable")

    async def _connection(self, autocommit: bool) -> AsyncConnection:
        idle = self._idle[autocommit]
        if idle:
            return idle.pop()
        conn = await self._engine.connect()
        if autocommit:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
        return conn

    async def _release(self, conn: AsyncConnection, autocommit: bool, *, usable: bool) -> None:
        if not usable or conn.invalidated or conn.closed:
            with contextlib.suppress(Exception):
                await conn.invalidate()
                await conn.close()
        else:
            self._idle[autocommit].append(conn)

    async def _forget_idle(self) -> None:
        """The server dropped a connection: those held idle are likely gone too."""
        stale = [conn for conns in self._idle.values() for conn in conns]
        for conns in self._idle.values():
            conns.clear()
        for conn in stale:
            with contextlib.suppress(Exception):
                await conn.invalidate()
                await conn.close()

    async def close(self) -> None:
        await self._writes.drain()
        await self._reads.drain()
        await self._alone.drain()
        for conns in self._idle.values():
            while conns:
                with contextlib.suppress(Exception):
                    await conns.pop().close()


def _connection_lost(exc: BaseException) -> bool:
    error = exc.error if isinstance(exc, _UnitFailed) else exc
    return isinstance(error, DBAPIError) and error.connection_invalidated


def _in_one_transaction(works: list[Callable[[Connection], Any]]) -> Callable[[Connection], list[Any]]:
    run_all = _all_of(works)

    def run(conn: Connection) -> list[Any]:
        with conn.begin():
            return run_all(conn)
    return run


def _each_alone(works: list[Callable[[Connection], Any]]
                ) -> Callable[[Connection], list[tuple[BaseException | None, Any]]]:
    """Each unit in a transaction of its own; the error or result of each (a lost connection ends
    the batch: it runs again on another)."""
    def run(conn: Connection) -> list[tuple[BaseException | None, Any]]:
        outcomes: list[tuple[BaseException | None, Any]] = []
        for work in works:
            try:
                with conn.begin():
                    outcomes.append((None, work(conn)))
            except Exception as exc:
                if _connection_lost(exc):
                    raise
                outcomes.append((exc, None))
        return outcomes
    return run


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
