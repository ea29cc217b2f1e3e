"""The PostgreSQL unit-of-work runner: group commit of the writes of one turn, reads in autocommit mode,
connections the server dropped replaced without the caller seeing it."""

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, insert, text
from sqlalchemy.exc import IntegrityError

from bot.db import Database
from bot.store.prepared import Prepared
from tests.pg import PostgresCluster

pytestmark = pytest.mark.postgres


@pytest.fixture
async def db(postgres_cluster: PostgresCluster) -> AsyncIterator[Database]:
    """A database with one table, `t (n INTEGER UNIQUE)`."""
    db = Database(postgres_cluster.create_database())
    await db.run_migration(lambda conn: conn.execute(text("CREATE TABLE t (n INTEGER UNIQUE)")))
    yield db
    await db.dispose()


T = Table("t", MetaData(), Column("n", Integer, unique=True))
# Through the driver-level fast path, as the app's hot statements run: its errors are SQLAlchemy's.
INSERT = Prepared(insert(T))


def insert_row(n: int, *, fail: bool = False):  # type: ignore[no-untyped-def]
    def work(conn):  # type: ignore[no-untyped-def]
        INSERT.run(conn, {"n": n})
        if fail:
            raise ValueError(f"unit {n} failed")
        return n
    return work


async def rows(db: Database) -> list[int]:
    return await db.read(lambda conn: conn.execute(text("SELECT n FROM t ORDER BY n")).scalars().all())


async def test_writes_of_one_turn_of_the_loop_share_a_transaction(db: Database) -> None:
    def insert_and_look(n: int):  # type: ignore[no-untyped-def]
        def work(conn):  # type: ignore[no-untyped-def]
            conn.execute(text("INSERT INTO t VALUES (:n)"), {"n": n})
            return conn.execute(text("SELECT count(*), txid_current() FROM t")).one()
        return work

    together = await asyncio.gather(*(db.write(insert_and_look(n)) for n in range(5)))
    # In the order they came, each seeing the ones before it, in one transaction.
    assert [seen for seen, _ in together] == [1, 2, 3, 4, 5]
    assert len({txid for _, txid in together}) == 1
    # A later turn: a transaction of its own.
    (_, later), = await asyncio.gather(db.write(insert_and_look(5)))
    assert later != together[0][1]
    assert await rows(db) == [0, 1, 2, 3, 4, 5]


async def test_a_failing_unit_fails_only_its_caller_and_a_cancelled_one_is_dropped(db: Database) -> None:
    await db.write(insert_row(7))
    good_before = asyncio.ensure_future(db.write(insert_row(1)))
    bad = asyncio.ensure_future(db.write(insert_row(2, fail=True)))
    # A statement PostgreSQL refuses aborts the whole transaction, not just the unit that ran it.
    duplicate = asyncio.ensure_future(db.write(insert_row(7)))
    cancelled = asyncio.ensure_future(db.write(insert_row(3)))
    good_after = asyncio.ensure_future(db.write(insert_row(4)))
    await asyncio.sleep(0)  # all five are waiting for the same batch
    cancelled.cancel()
    results = await asyncio.gather(good_before, bad, duplicate, cancelled, good_after, return_exceptions=True)

    assert results[0] == 1 and results[4] == 4
    assert isinstance(results[1], ValueError) and str(results[1]) == "unit 2 failed"
    assert isinstance(results[2], IntegrityError)
    assert isinstance(results[3], asyncio.CancelledError)
    assert await rows(db) == [1, 4, 7]


async def test_reads_of_one_turn_fail_alone_and_see_only_what_was_committed(db: Database) -> None:
    await db.write(insert_row(1))

    def broken(conn):  # type: ignore[no-untyped-def]
        return conn.execute(text("SELECT no_such_column FROM t")).all()

    results = await asyncio.gather(db.read(lambda conn: conn.execute(text("SELECT count(*) FROM t")).scalar()),
                                   db.read(broken),
                                   db.read(lambda conn: conn.execute(text("SELECT n FROM t")).scalars().all()),
                                   return_exceptions=True)
    assert results[0] == 1 and results[2] == [1]
    assert "no_such_column" in str(results[1])


async def test_connections_the_server_dropped_are_replaced_unseen(db: Database,
                                                                 postgres_cluster: PostgresCluster) -> None:
    # Connections held open for reads and for writes, as the app's are between requests.
    await asyncio.gather(db.write(insert_row(1)), db.read(lambda conn: conn.execute(text("SELECT 1")).scalar()))
    other = Database(db.url)
    try:
        # As a server restart would: every connection of the app's database ends under it.
        ended = await other.write(lambda conn: conn.execute(text(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalar())
        assert ended >= 2
    finally:
        await other.dispose()
    assert await db.write(insert_row(2)) == 2
    assert await rows(db) == [1, 2]


async def test_large_values_are_compressed_with_lz4_where_the_server_has_it(db: Database) -> None:
    """pglz, PostgreSQL's default, cost the server ~0.2 ms a delivery's 25 KB payload; every connection of
    the app asks for lz4 (PostgreSQL 14+ built with it), on its write and read connections alike."""
    has_lz4 = await db.read(lambda conn: conn.execute(text(
        "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'")).scalar())
    if not has_lz4:
        pytest.skip("this PostgreSQL server was built without lz4")
    await db.run_migration(lambda conn: conn.execute(text("CREATE TABLE big (body TEXT)")))
    body = "".join(f'{{"n": {n}, "sha": "{n:040x}"}}' for n in range(2000))  # JSON-like, compressible
    await asyncio.gather(db.write(lambda conn: conn.execute(text("INSERT INTO big VALUES (:b)"), {"b": body})),
                         db.write(lambda conn: conn.execute(text("INSERT INTO big VALUES (:b)"), {"b": body})))
    assert await db.read(lambda conn: conn.execute(text("SELECT pg_column_compression(body) FROM big")).scalars()
                         .all()) == ["lz4", "lz4"]
    assert await db.read(lambda conn: conn.execute(text("SELECT current_setting('default_toast_compression')"))
                         .scalar()) == "lz4"
    assert await db.read(lambda conn: conn.execute(text("SELECT body FROM big LIMIT 1")).scalar()) == body
