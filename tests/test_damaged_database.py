"""A damaged or lost SQLite database is refused at start with one line naming the file (bot/db.py
check_sqlite_file), instead of starting "healthy" and failing every job, or starting as a fresh
database that has forgotten every project's settings and secrets."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from pathlib import Path

import pytest

from bot import migrate
from bot.config import load_settings
from bot.cli import serve
from bot.db import Database, DatabaseUnusable, check_sqlite_file
from tests.cli_support import ServedApp, cli_env, codegenapp
from tests.pg import free_port


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return cli_env(tmp_path)


def database_of(env: dict[str, str]) -> Path:
    return Path(env["DATA_DIR"]) / "codegenapp.db"


async def make_database(path: Path) -> None:
    """The app's schema and enough rows that the file has pages in the middle worth damaging."""
    db = Database(f"sqlite:///{path}")
    try:
        await migrate.upgrade(db)
    finally:
        await db.dispose()
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE filler (id INTEGER PRIMARY KEY, text TEXT)")
        conn.executemany("INSERT INTO filler (text) VALUES (?)", ((f"row {i} " * 40,) for i in range(3000)))
    assert conn.execute("PRAGMA journal_mode=DELETE").fetchone() == ("delete",)  # all of it in the file itself
    conn.close()


FREELIST_COUNT_OFFSET = 36  # in the database header


def damage_a_page_in_the_middle(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.close()
    with open(path, "r+b") as handle:
        handle.seek((pages // 2) * page_size)
        handle.write(bytes(range(256)) * (page_size // 256))


async def test_a_database_with_one_damaged_page_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    await make_database(path)
    sound = tmp_path / "sound.db"  # a copy: the check is remembered per file, and the damage may keep its mtime
    shutil.copy(path, sound)
    check_sqlite_file(sound, keys_found_in=None, init=False)  # sound: no complaint
    damage_a_page_in_the_middle(path)
    with sqlite3.connect(path) as conn:  # what went unnoticed: the header and the schema still read fine
        assert conn.execute("SELECT count(*) FROM alembic_version").fetchone() == (1,)
    conn.close()
    with pytest.raises(DatabaseUnusable) as refused:
        check_sqlite_file(path, keys_found_in=None, init=True)  # --init never accepts a damaged file
    message = str(refused.value)
    assert message.startswith(f"the database {path} is damaged (")
    assert "restore the file from a backup" in message and "\n" not in message


async def test_what_quick_check_finds_is_quoted_on_one_line(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    await make_database(path)
    with open(path, "r+b") as handle:
        handle.seek(FREELIST_COUNT_OFFSET)
        handle.write((5).to_bytes(4, "big"))
    with pytest.raises(DatabaseUnusable) as refused:
        check_sqlite_file(path, keys_found_in=None, init=False)
    assert str(refused.value).startswith(  # quick_check said it on two lines
        f"the database {path} is damaged (*** in database main *** Main freelist: size is 0 but should be 5): ")


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    path.write_bytes(b"this is not SQLite" * 300)
    with pytest.raises(DatabaseUnusable, match=r"is damaged \(file is not a database\)"):
        check_sqlite_file(path, keys_found_in=None, init=False)


@pytest.mark.parametrize("zero_length", [True, False])
def test_an_empty_database_beside_an_earlier_starts_keys_needs_init(tmp_path: Path, zero_length: bool) -> None:
    path = tmp_path / "app.db"
    if zero_length:
        path.touch()
    with pytest.raises(DatabaseUnusable) as refused:
        check_sqlite_file(path, keys_found_in=tmp_path, init=False)
    assert str(refused.value).startswith(
        f"the database {path} is {'empty' if zero_length else 'missing'}, but {tmp_path} holds the keys of an "
        "installation that ran before")
    assert str(refused.value).endswith("begin with an empty one: `codegenapp migrate --init` (or `serve --init`, "
                                       "`worker --init`)")
    check_sqlite_file(path, keys_found_in=tmp_path, init=True)
    check_sqlite_file(path, keys_found_in=None, init=False)  # a new installation: nothing to lose


def test_settings_say_whether_data_dir_held_keys_before_this_start(tmp_path: Path) -> None:
    env = {"DATA_DIR": str(tmp_path / "data")}
    assert load_settings(env, dotenv_path=None).generated_keys_found is False  # generated now
    assert load_settings(env, dotenv_path=None).generated_keys_found is True


def one_line(stderr: str) -> str:
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
    return stderr.strip()


async def test_serve_refuses_a_damaged_or_lost_database_in_one_line(make_settings, capsys) -> None:
    settings = make_settings()
    path = settings.data_dir / "codegenapp.db"
    await make_database(path)
    damage_a_page_in_the_middle(path)
    assert await asyncio.to_thread(serve, settings, host=None, port=free_port(), with_worker=True) == 2
    assert one_line(capsys.readouterr().err).startswith(f"codegenapp: the database {path} is damaged (")

    path.write_bytes(b"")
    settings = make_settings()  # finds the keys made above
    assert await asyncio.to_thread(serve, settings, host=None, port=free_port(), with_worker=True) == 2
    assert one_line(capsys.readouterr().err).startswith(f"codegenapp: the database {path} is empty, but ")
    assert path.stat().st_size == 0  # nothing was made of it


@pytest.mark.slow  # a process per command
async def test_the_commands_refuse_a_lost_database_and_init_starts_a_new_one(env: dict[str, str]) -> None:
    assert codegenapp("migrate", env=env).returncode == 0  # generates the keys, makes the database
    database_of(env).write_bytes(b"")
    for command in (["worker"], ["migrate"], ["projects", "list"]):
        refused = codegenapp(*command, env=env)
        assert refused.returncode == 2
        line = one_line(refused.stderr)
        assert line.startswith(f"codegenapp: the database {database_of(env)} is empty, but "), line
        assert line.endswith("`codegenapp migrate --init` (or `serve --init`, `worker --init`)"), line

    served = await ServedApp(env, "--init").start(timeout=30)
    assert await served.terminate() == 0
    assert "no projects yet" in codegenapp("projects", "list", env=env).stdout

    damage_a_page_in_the_middle(database_of(env))
    refused = codegenapp("worker", env=env)
    assert refused.returncode == 2
    assert one_line(refused.stderr).startswith(f"codegenapp: the database {database_of(env)} is damaged (")
