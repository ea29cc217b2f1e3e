"""Schema migrations (Alembic), run over the app's own engine.

Alembic is imported only when there is something to migrate: `serve` checks the schema's revision
with one query against SCHEMA_HEAD, so a running app does not carry Alembic's ~10 MB
(tests/test_jobs.py checks SCHEMA_HEAD against Alembic's own head).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from bot.db import Database

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
SCHEMA_HEAD = "0016"  # the newest revision in migrations/versions


def alembic_config(connection: Connection | None = None) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def alembic_head() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def head_revision() -> str:
    return SCHEMA_HEAD


async def current_revision(db: Database) -> str | None:
    def work(conn: Connection) -> str | None:
        # Asked first, not by catching the SELECT's error: a read may run without a transaction to
        # roll back to (PostgreSQL's reads run in autocommit mode: bot/db.py).
        if not inspect(conn).has_table("alembic_version"):  # an empty database
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one_or_none()

    return await db.read(work)


async def upgrade(db: Database) -> str:
    """Bring the schema to the newest revision; returns it."""
    if await current_revision(db) != SCHEMA_HEAD:
        from alembic import command

        await db.run_migration(lambda conn: command.upgrade(alembic_config(conn), "head"))
    return SCHEMA_HEAD


async def autogenerate(db: Database, message: str) -> None:
    """Developer helper: write a new revision from the difference between models and schema."""
    from alembic import command

    await db.run_migration(lambda conn: command.revision(alembic_config(conn), message=message, autogenerate=True))


def upgrade_in_child(url: str) -> None:
    """`upgrade` in a short-lived child process: `serve` migrates SQLite itself this way, so the
    long-running process never imports Alembic (its peak memory stays ~10 MB lower)."""
    import subprocess
    import sys

    subprocess.run([sys.executable, "-m", "bot.migrate", url], check=True)


def _main() -> None:
    import asyncio
    import sys

    async def run(url: str) -> None:
        db = Database(url)
        try:
            await upgrade(db)
        finally:
            await db.dispose()

    asyncio.run(run(sys.argv[1]))


if __name__ == "__main__":
    _main()
