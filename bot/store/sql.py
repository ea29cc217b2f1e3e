"""Small SQL helpers shared by the store modules."""

from typing import Any, TypeVar

from sqlalchemy import Connection, Select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from bot.db import Database

E = TypeVar("E")


def upsert_insert(db: Database, table: Any) -> Any:
    """The dialect's INSERT, which has on_conflict_do_nothing / on_conflict_do_update."""
    return (sqlite.insert if db.is_sqlite else postgresql.insert)(table)


def entities(conn: Connection, stmt: Select[tuple[E]]) -> list[E]:
    """Model instances for `select(Model)`; they stay readable after the transaction ends."""
    with Session(bind=conn, expire_on_commit=False) as session:
        return list(session.execute(stmt).scalars())


def entity(conn: Connection, stmt: Select[tuple[E]]) -> E | None:
    found = entities(conn, stmt.limit(1))
    return found[0] if found else None
