"""The database: SQLite (embedded default) or PostgreSQL, used through units of work.

Every read or write is a plain function over a SQLAlchemy `Connection`, run as one transaction:

    rows = await db.read(lambda conn: conn.execute(stmt).all())

SQLite: WAL, a busy timeout, and every write transaction opened with BEGIN IMMEDIATE so a
read-then-write can never lose an update (the platform notes measured the driver default losing
half of them). A unit of work runs whole on one database thread: writes on a single writer thread,
so they queue in Python instead of spinning in SQLite's busy handler; reads on their own small pool
(WAL lets them run beside the writer). Running each transaction in one thread hop, instead of one hop
per statement as aiosqlite does, is what makes a commit cost ~0.3 ms instead of ~1 ms here
(bench/README.md).

PostgreSQL: the async engine (asyncpg) runs the same functions through `run_sync`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

T = TypeVar("T")

SQLITE_BUSY_TIMEOUT_MS = 10_000
SQLITE_READ_THREADS = 2


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Take over transaction control from Python's sqlite3 module (see BEGIN IMMEDIATE below).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _begin_immediate(connection: Connection) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def _begin_deferred(connection: Connection) -> None:
    connection.exec_driver_sql("BEGIN")


def sync_url(url: str) -> str:
    """The URL of the synchronous driver for SQLite (DATABASE_URL may name aiosqlite)."""
    return "sqlite://" + url.split("://", 1)[1] if url.startswith("sqlite") else url


def _sqlite_engine(url: str, *, begin: Callable[[Connection], None], pool_size: int) -> Engine:
    engine = create_engine(sync_url(url), pool_size=pool_size, max_overflow=0, pool_reset_on_return=None,
                           connect_args={"check_same_thread": False})
    event.listen(engine, "connect", _sqlite_pragmas)
    event.listen(engine, "begin", begin)
    return engine


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self._async_engine: AsyncEngine | None = None
        if self.is_sqlite:
            self._write_engine = _sqlite_engine(url, begin=_begin_immediate, pool_size=1)
            self._read_engine = _sqlite_engine(url, begin=_begin_deferred, pool_size=SQLITE_READ_THREADS)
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="db-write")
            self._readers = ThreadPoolExecutor(SQLITE_READ_THREADS, thread_name_prefix="db-read")
        else:
            self._async_engine = create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)

    @property
    def dialect_name(self) -> str:
        return "sqlite" if self.is_sqlite else "postgresql"

    async def write(self, work: Callable[[Connection], T]) -> T:
        """Run `work` in a write transaction, committed when it returns."""
        if self._async_engine is not None:
            async with self._async_engine.begin() as conn:
                return await conn.run_sync(work)
        return await asyncio.get_running_loop().run_in_executor(self._writer, _in_transaction,
                                                                self._write_engine, work)

    async def read(self, work: Callable[[Connection], T]) -> T:
        if self._async_engine is not None:
            async with self._async_engine.connect() as conn:
                return await conn.run_sync(work)
        return await asyncio.get_running_loop().run_in_executor(self._readers, _in_transaction,
                                                                self._read_engine, work)

    async def run_migration(self, work: Callable[[Connection], T]) -> T:
        """For Alembic: `work` gets a connection in a transaction (DDL included)."""
        return await self.write(work)

    async def dispose(self) -> None:
        if self._async_engine is not None:
            await self._async_engine.dispose()
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._writer, self._write_engine.dispose)
        await loop.run_in_executor(self._readers, self._read_engine.dispose)
        self._writer.shutdown(wait=False)
        self._readers.shutdown(wait=False)


def _in_transaction(engine: Engine, work: Callable[[Connection], T]) -> T:
    with engine.begin() as conn:
        return work(conn)
