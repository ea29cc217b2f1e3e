"""Prepared statements: the driver-level fast path stores and reads back exactly what Connection.execute
does (types included), on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import bindparam, insert, select, update

from bot.models import JOB_QUEUED, JOB_RUNNING, Installation, Job, utcnow
from bot.store import Store
from bot.store.prepared import Prepared

_RETURNED = (Job.id, Job.kind, Job.args, Job.run_after, Job.lease_expires_at, Job.delivery_id)


def job_row(**overrides: object) -> dict[str, object]:
    now = utcnow()
    row: dict[str, object] = {
        "kind": "webhook", "delivery_id": None, "args": {"pr": 7, "nested": {"list": [1, None, "x"]}},
        "dedupe_key": None, "status": JOB_QUEUED, "attempts": 0, "max_attempts": 5, "run_after": now,
        "created_at": now, "lease_owner": None, "lease_expires_at": None, "last_error": None, "finished_at": None}
    row.update(overrides)
    return row


async def test_an_insert_stores_what_connection_execute_stores(store: Store) -> None:
    prepared = Prepared(insert(Job).returning(*_RETURNED))
    plain = insert(Job).returning(*_RETURNED)
    moment = datetime(2026, 12, 5, 9, 30, 1, 250, tzinfo=UTC)
    row = job_row(run_after=moment, lease_expires_at=moment + timedelta(seconds=60), args={"ok": True})

    fast = await store.db.write(lambda conn: prepared.run(conn, row))
    slow = await store.db.write(lambda conn: conn.execute(plain, row).all())

    assert fast.columns == ("id", "kind", "args", "run_after", "lease_expires_at", "delivery_id")
    assert fast.rows[0][1:] == tuple(slow[0])[1:] == ("webhook", {"ok": True}, moment, moment + timedelta(seconds=60),
                                                      None)
    assert fast.rows[0][3].tzinfo is not None  # an aware UTC datetime, as the column type gives
    # and read back by SQLAlchemy, the two rows are the same
    both = await store.db.read(lambda conn: conn.execute(
        select(Job.kind, Job.args, Job.run_after, Job.status).where(Job.id.in_([fast.rows[0][0], slow[0][0]]))).all())
    assert both[0] == both[1]


async def test_a_select_reads_back_through_the_column_types(store: Store) -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    job_id = await store.db.write(lambda conn: conn.execute(
        insert(Job).returning(Job.id), job_row(run_after=moment, args={"a": [1, 2]})).scalar_one())
    by_id = Prepared(select(Job.id, Job.args, Job.run_after, Job.status).where(Job.id == bindparam("b_id")))

    found = await store.db.read(lambda conn: by_id.run(conn, {"b_id": job_id}))

    assert found.rows == [(job_id, {"a": [1, 2]}, moment, JOB_QUEUED)]
    assert found.mappings() == [{"id": job_id, "args": {"a": [1, 2]}, "run_after": moment, "status": JOB_QUEUED}]
    assert found.scalar() == job_id
    assert (await store.db.read(lambda conn: by_id.run(conn, {"b_id": -1}))).first() is None


async def test_values_built_into_the_statement_and_row_counts(store: Store) -> None:
    ids = await store.db.write(lambda conn: [conn.execute(insert(Job).returning(Job.id), job_row()).scalar_one()
                                             for _ in range(3)])
    lease = Prepared(update(Job).where(Job.id == bindparam("b_id"), Job.status == JOB_QUEUED)
                     .values(status=JOB_RUNNING, lease_owner=bindparam("owner")))

    first = await store.db.write(lambda conn: lease.run(conn, {"b_id": ids[0], "owner": "w1"}))
    again = await store.db.write(lambda conn: lease.run(conn, {"b_id": ids[0], "owner": "w2"}))
    many = await store.db.write(lambda conn: lease.run_many(conn, [{"b_id": i, "owner": "w3"} for i in ids[1:]]))

    assert (first.rowcount, again.rowcount, [r.rowcount for r in many]) == (1, 0, [1, 1])
    assert first.rows == []
    owners = await store.db.read(lambda conn: conn.execute(
        select(Job.lease_owner, Job.status).where(Job.id.in_(ids)).order_by(Job.id)).all())
    assert [tuple(r) for r in owners] == [("w1", JOB_RUNNING), ("w3", JOB_RUNNING), ("w3", JOB_RUNNING)]


async def test_an_insert_may_leave_out_columns_without_a_python_default(store: Store) -> None:
    prepared = Prepared(insert(Job).returning(Job.id, Job.lease_owner))
    row = job_row()
    del row["lease_owner"], row["last_error"]  # nullable, no default: NULL
    found = await store.db.write(lambda conn: prepared.run(conn, row))
    assert found.rows[0][1] is None


def test_statements_the_fast_path_could_get_wrong_are_refused() -> None:
    from sqlalchemy.dialects import sqlite

    dialect = sqlite.dialect()
    # a Python-side default would be skipped
    with pytest.raises(ValueError, match="Python-side default"):
        Prepared(insert(Installation))._compile(dialect, {"id": 1, "account_login": "octo"})
    # an expanding IN list changes the SQL with every execution
    with pytest.raises(ValueError, match="expanding"):
        Prepared(select(Job.id).where(Job.id.in_(bindparam("ids", expanding=True))))._compile(dialect, {})
