"""Retention of the UI check's screenshots: the pure decision, the setting, and the prune on a real
filesystem and a real store (old files gone, new ones kept, the address 404s, links never followed)."""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.config import ConfigError, load_settings
from bot.models import VALIDATION_COMPLETED, VALIDATION_IN_PROGRESS, VALIDATION_QUEUED, VALIDATION_SUPERSEDED
from bot.store import Store, ValidationLifetime
from pipeline.ui_check.retention import expired_validations, prune_screenshots, screenshots_expire_at, screenshots_expired
from pipeline.ui_check.screenshots import screenshots_dir, screenshots_root
from tests.screenshot_support import seed_project, validation_with_screenshots

NOW = datetime(2024, 6, 30, 12, 0, tzinfo=UTC)


def row(status: str = VALIDATION_COMPLETED, *, created_days_ago: float, completed_days_ago: float | None = None,
        id: str = "v") -> ValidationLifetime:
    completed = None if completed_days_ago is None else NOW - timedelta(days=completed_days_ago)
    return ValidationLifetime(id, status, NOW - timedelta(days=created_days_ago), completed)


# ---- the decision (pure) ---------------------------------------------------------------------------

def test_a_validation_expires_retention_days_after_it_completed() -> None:
    assert screenshots_expire_at(row(created_days_ago=40, completed_days_ago=31), 30) == NOW - timedelta(days=1)
    assert screenshots_expired(row(created_days_ago=40, completed_days_ago=31), now=NOW, retention_days=30)
    assert not screenshots_expired(row(created_days_ago=40, completed_days_ago=29), now=NOW, retention_days=30)
    assert screenshots_expired(row(created_days_ago=40, completed_days_ago=30), now=NOW, retention_days=30)


def test_one_never_completed_is_judged_by_its_creation() -> None:
    assert screenshots_expired(row(VALIDATION_SUPERSEDED, created_days_ago=31), now=NOW, retention_days=30)
    assert not screenshots_expired(row(VALIDATION_SUPERSEDED, created_days_ago=29), now=NOW, retention_days=30)


def test_a_queued_or_running_validation_keeps_its_screenshots() -> None:
    for status in (VALIDATION_QUEUED, VALIDATION_IN_PROGRESS):
        assert screenshots_expire_at(row(status, created_days_ago=400), 30) is None


def test_zero_days_keeps_everything_forever() -> None:
    assert screenshots_expire_at(row(created_days_ago=10_000, completed_days_ago=10_000), 0) is None
    assert expired_validations([row(created_days_ago=10_000, completed_days_ago=10_000)], now=NOW,
                               retention_days=0) == []


def test_expired_validations_picks_the_old_ones_in_order() -> None:
    rows = [row(id="a", created_days_ago=9, completed_days_ago=6), row(id="b", created_days_ago=50, completed_days_ago=49),
            row(VALIDATION_IN_PROGRESS, id="c", created_days_ago=60), row(VALIDATION_SUPERSEDED, id="d", created_days_ago=8),
            row(id="e", created_days_ago=40, completed_days_ago=1), row(id="f", created_days_ago=99, completed_days_ago=99)]
    assert expired_validations(rows, now=NOW, retention_days=7) == ["b", "d", "f"]


# ---- the setting -----------------------------------------------------------------------------------

def load(tmp_path: Path, **env: str):
    return load_settings({"DATA_DIR": str(tmp_path / "data"), **env}, dotenv_path=None, create_keys=False)


def test_retention_setting_defaults_to_30_days_and_0_means_forever(tmp_path: Path) -> None:
    assert load(tmp_path).screenshot_retention_days == 30
    assert load(tmp_path, SCREENSHOT_RETENTION_DAYS="0").screenshot_retention_days == 0
    assert load(tmp_path, SCREENSHOT_RETENTION_DAYS="7").screenshot_retention_days == 7


@pytest.mark.parametrize("value, message", [
    ("ten", "SCREENSHOT_RETENTION_DAYS must be a whole number, got 'ten'"),
    ("-1", "SCREENSHOT_RETENTION_DAYS must be at least 0, got -1"),
    ("36501", "SCREENSHOT_RETENTION_DAYS must be at most 36500 (100 years), got 36501; 0 keeps screenshots forever"),
])
def test_a_bad_retention_is_reported(tmp_path: Path, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        load(tmp_path, SCREENSHOT_RETENTION_DAYS=value)
    assert error.value.problems == [message]


# ---- the prune, on disk ----------------------------------------------------------------------------

async def test_the_running_app_prunes_old_screenshots_and_keeps_new_ones(start_bot, caplog) -> None:
    bot = await start_bot(SCREENSHOT_RETENTION_DAYS="30")
    pruner = bot.services.screenshot_pruner
    await asyncio.wait_for(pruner.first_run_done.wait(), 10)  # the run at start (nothing stored yet)
    data_dir = bot.services.settings.data_dir
    project_id = await seed_project(bot.store)
    old, old_files = await validation_with_screenshots(bot.store, data_dir, project_id, days_ago=31)
    new, new_files = await validation_with_screenshots(bot.store, data_dir, project_id, days_ago=29)
    session = bot.webhooks.session
    old_url = f"{bot.url}/validations/{old}/screenshots/{old_files[0].name}"
    async with session.get(old_url) as response:
        assert response.status == 200

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pipeline.ui_check.retention"):
        result = await pruner.run_once()
    assert (result.directories, result.bytes_freed) == (1, (8 + 1000) + (8 + 2000))
    assert not screenshots_dir(data_dir, old).exists() and not (screenshots_root(data_dir) / old).exists()
    assert all(p.is_file() for p in new_files)
    [line] = [r.getMessage() for r in caplog.records if r.name == "pipeline.ui_check.retention"]
    assert line == "screenshot retention (30 days): pruned 1 directories, freed 2.9 KiB (3016 bytes); 1 kept"

    async with session.get(old_url) as response:
        assert response.status == 404
    async with session.get(f"{bot.url}/validations/{new}/screenshots/{new_files[0].name}") as response:
        assert (response.status, response.headers["Content-Type"]) == (200, "image/png")
    async with session.get(f"{bot.url}/validations/{old}") as response:
        page = await response.text()
    assert 'id="screenshots-expired"' in page and "<img" not in page
    assert ("The 2 screenshots of this run have expired: screenshots are kept for 30 days after a run ends."
            in " ".join(page.split()))
    async with session.get(f"{bot.url}/validations/{new}") as response:
        page = await response.text()
    assert "screenshots-expired" not in page and f'src="/validations/{new}/screenshots/{new_files[1].name}"' in page

    again = await pruner.run_once()  # nothing left to do
    assert (again.directories, again.bytes_freed) == (0, 0)


async def test_the_prune_never_follows_a_link_out_of_the_screenshots_root(store: Store, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    outside = tmp_path / "outside"
    (outside / "nested").mkdir(parents=True)
    (outside / "precious.txt").write_text("keep me")
    (outside / "nested" / "deep.png").write_bytes(b"keep me too")
    project_id = await seed_project(store)

    # An expired run whose directory holds links out of the root: a directory link and a file link.
    old, old_files = await validation_with_screenshots(store, data_dir, project_id, days_ago=60)
    os.symlink(outside, old_files[0].parent / "escape")
    os.symlink(outside / "precious.txt", old_files[0].parent / f"{uuid.uuid4().hex}.png")
    # An expired run whose screenshots directory itself is a link out of the root.
    linked, linked_files = await validation_with_screenshots(store, data_dir, project_id, days_ago=60, pages=0)
    linked_files_dir = screenshots_dir(data_dir, linked)
    linked_files_dir.rmdir()
    os.symlink(outside, linked_files_dir)

    result = await prune_screenshots(store, data_dir, retention_days=30)
    assert result.directories == 1 and result.skipped == (linked,)
    assert result.bytes_freed == (8 + 1000) + (8 + 2000)  # links counted as nothing, never followed
    assert not screenshots_dir(data_dir, old).exists()
    assert linked_files_dir.is_symlink()  # left alone, and so is everything it points at
    assert (outside / "precious.txt").read_text() == "keep me"
    assert (outside / "nested" / "deep.png").read_bytes() == b"keep me too"


async def test_the_same_prune_with_retention_off_deletes_nothing(store: Store, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    project_id = await seed_project(store)
    _old, files = await validation_with_screenshots(store, data_dir, project_id, days_ago=3650)
    result = await prune_screenshots(store, data_dir, retention_days=0)
    assert (result.directories, result.bytes_freed) == (0, 0)
    assert all(p.is_file() for p in files)
