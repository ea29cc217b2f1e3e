"""The SQLite unit-of-work runner: inline on the loop, on the writer thread when the database is locked."""

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from bot.db import Database


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    """A SQLite database with one table, `t (n INTEGER)`."""
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    await db.write(lambda conn: conn.execute(text("CREATE TABLE t (n INTEGER)")))
    yield db
    await db.dispose()


def connect_as_another_process(db: Database) -> sqlite3.Connection:
    return sqlite3.connect(db.url.split(":///", 1)[1], isolation_level=None)


def lock_as_another_process(db: Database) -> sqlite3.Connection:
    """A connection of its own (as another process's would be) holding the write lock; COMMIT ends it."""
    other = connect_as_another_process(db)
    other.execute("BEGIN IMMEDIATE")
    return other


async def loop_turns(n: int = 3) -> None:
    for _ in range(n):
        await asyncio.sleep(0)  # turns of the loop: it is not blocked by a write waiting for the lock


async def test_a_write_waits_off_the_loop_while_another_process_holds_the_lock(db: Database) -> None:
    other = lock_as_another_process(db)
    other.execute("INSERT INTO t VALUES (1)")
    write = asyncio.create_task(db.write(lambda conn: conn.execute(text("INSERT INTO t VALUES (2)"))))
    # The inline attempt found the lock and handed the work to the writer thread: the loop is free
    # (this coroutine runs) and the write is still waiting for the lock.
    await loop_turns()
    assert not write.done()
    other.execute("COMMIT")
    other.close()
    await asyncio.wait_for(write, 10)
    rows = await db.read(lambda conn: conn.execute(text("SELECT n FROM t ORDER BY n")).scalars().all())
    assert rows == [1, 2]

    # and the inline connection is usable again: the next write runs on the loop
    def insert_three(conn):  # type: ignore[no-untyped-def]
        conn.execute(text("INSERT INTO t VALUES (3)"))
        return threading.current_thread().name

    assert await db.write(insert_three) == threading.current_thread().name


async def test_a_failed_unit_of_work_leaves_nothing_behind(db: Database) -> None:
    def half_then_fail(conn):  # type: ignore[no-untyped-def]
        conn.execute(text("INSERT INTO t VALUES (1)"))
        raise ValueError("bug in the unit of work")

    try:
        await db.write(half_then_fail)
    except ValueError:
        pass
    else:
        raise AssertionError("the error must reach the caller")
    await db.write(lambda conn: conn.execute(text("INSERT INTO t VALUES (2)")))
    assert await db.read(lambda conn: conn.execute(text("SELECT n FROM t")).scalars().all()) == [2]


async def test_small_units_of_work_run_on_the_loop_and_large_reads_on_a_reader_thread(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        loop_thread = threading.current_thread().name
        assert await db.write(lambda conn: threading.current_thread().name) == loop_thread
        assert await db.read(lambda conn: threading.current_thread().name) == loop_thread
        assert (await db.read(lambda conn: threading.current_thread().name, large=True)).startswith("db-read")
    finally:
        await db.dispose()


async def test_writes_of_one_turn_of_the_loop_share_a_transaction(db: Database) -> None:
    outside = connect_as_another_process(db)

    def insert(n: int):  # type: ignore[no-untyped-def]
        def work(conn):  # type: ignore[no-untyped-def]
            conn.execute(text("INSERT INTO t VALUES (:n)"), {"n": n})
            seen_inside = conn.execute(text("SELECT count(*) FROM t")).scalar_one()
            seen_outside = outside.execute("SELECT count(*) FROM t").fetchone()[0]
            return seen_inside, seen_outside
        return work

    try:
        together = await asyncio.gather(*(db.write(insert(n)) for n in range(5)))
        # In the order they came, in one transaction: none of them was committed before the last ran.
        assert together == [(1, 0), (2, 0), (3, 0), (4, 0), (5, 0)]
        assert outside.execute("SELECT count(*) FROM t").fetchone()[0] == 5
    finally:
        outside.close()


async def test_a_failing_unit_fails_only_its_caller_and_a_cancelled_one_is_dropped(db: Database) -> None:
    def insert(n: int, *, fail: bool = False):  # type: ignore[no-untyped-def]
        def work(conn):  # type: ignore[no-untyped-def]
            conn.execute(text("INSERT INTO t VALUES (:n)"), {"n": n})
            if fail:
                raise ValueError(f"unit {n} failed")
            return n
        return work

    good_before = asyncio.ensure_future(db.write(insert(1)))
    bad = asyncio.ensure_future(db.write(insert(2, fail=True)))
    cancelled = asyncio.ensure_future(db.write(insert(3)))
    good_after = asyncio.ensure_future(db.write(insert(4)))
    await asyncio.sleep(0)  # all four are waiting for the same flush
    cancelled.cancel()
    results = await asyncio.gather(good_before, bad, cancelled, good_after, return_exceptions=True)

    assert results[0] == 1 and results[3] == 4
    assert isinstance(results[1], ValueError) and str(results[1]) == "unit 2 failed"
    assert isinstance(results[2], asyncio.CancelledError)
    rows = await db.read(lambda conn: conn.execute(text("SELECT n FROM t ORDER BY n")).scalars().all())
    assert rows == [1, 4]


async def test_a_batch_that_finds_the_database_locked_waits_for_it_whole(db: Database) -> None:
    other = lock_as_another_process(db)
    writes = [asyncio.ensure_future(db.write(lambda conn, n=n: conn.execute(text("INSERT INTO t VALUES (:n)"),
                                                                               {"n": n}).rowcount))
              for n in range(3)]
    await loop_turns()
    assert not any(w.done() for w in writes)  # together on the writer thread, waiting for the lock
    other.execute("COMMIT")
    other.close()
    assert await asyncio.wait_for(asyncio.gather(*writes), 10) == [1, 1, 1]
    assert await db.read(lambda conn: conn.execute(text("SELECT n FROM t")).scalars().all()) == [0, 1, 2]
