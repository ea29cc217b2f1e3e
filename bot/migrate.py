"""Schema migrations (Alembic), run over the app's own async engine."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from bot.db import Database

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


async def current_revision(db: Database) -> str | None:
    return await db.read(lambda conn: MigrationContext.configure(conn).get_current_revision())


async def upgrade(db: Database) -> str:
    """Bring the schema to the newest revision; returns it."""
    await db.write(lambda conn: command.upgrade(alembic_config(conn), "head"))
    return head_revision()


async def autogenerate(db: Database, message: str) -> None:
    """Developer helper: write a new revision from the difference between models and schema."""
    await db.write(lambda conn: command.revision(alembic_config(conn), message=message, autogenerate=True))
