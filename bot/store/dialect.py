from typing import Any

from sqlalchemy.dialects import postgresql, sqlite

from bot.db import Database


def upsert_insert(db: Database, table: Any) -> Any:
    """The dialect's INSERT, which has on_conflict_do_nothing / on_conflict_do_update."""
    return (sqlite.insert if db.is_sqlite else postgresql.insert)(table)
