"""A PR cannot fill the disk, and a full disk or a failing database is answered, not crashed on: a
validate step that writes past its run's limit fails saying so; a delivery that cannot be stored gets
503 with the reason; /health reports DATA_DIR's free space and fails below MIN_FREE_DISK_GIB."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from bot import metrics
from bot.config import ConfigError
from bot.events import wait_for
from pipeline.workspace.volumes import leaves_reserve
from tests.pull_requests import open_pull_request
from tests.sandbox_support import needs_bwrap
from tests.volume_support import mounted_under

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a filesystem needs root")


@as_root
@needs_bwrap
@pytest.mark.skipif(shutil.which("mkfs.ext4") is None, reason="mkfs.ext4 not installed: `make install`")
async def test_a_step_that_writes_past_the_runs_disk_limit_fails_saying_so(start_bot, fake_github) -> None:
    bot = await start_bot(RUN_DISK_LIMIT_GIB="0.03125", MIN_FREE_DISK_GIB="0")  # 32 MiB a run
    data_dir = bot.services.settings.data_dir
    config = ("validate:\n  - name: fill the disk\n    run: for i in 1 2 3; do head -c 30M /dev/zero > blob$i; done\n"
              "  - test -f app.py\n")
    scenario = open_pull_request(fake_github, config=config)
    with bot.services.bus.subscribe() as events:
        assert (await bot.webhooks.send("pull_request", scenario.payload("opened"))).status == 202
        done = await wait_for(events, "validation.completed", timeout=60, head_sha=scenario.head_sha)
        await wait_for(events, "job.finished", timeout=10, kind="validate")  # its workspace is removed by then
    state = await bot.store.validations.get(done.data["validation_id"])
    run = fake_github.check_runs[state.check_run_id]
    assert run["conclusion"] == "failure"
    assert "fill the disk" in run["output"]["title"]
    summary = run["output"]["summary"]
    assert "| `fill the disk` | ✗ failed (exit 1) — disk limit of 0.0312 GiB reached |" in summary
    assert "No space left on device" in run["output"]["text"]
    # the next step ran on the full disk without being blamed for it; then the workspace went away
    assert "| validate | `test` | ✓ passed |" in summary
    assert mounted_under(data_dir) == [] and list((data_dir / "workspaces").iterdir()) == []


@needs_bwrap
async def test_a_run_that_would_eat_into_the_apps_reserve_does_not_start(start_bot, fake_github) -> None:
    bot = await start_bot(MIN_FREE_DISK_GIB="1000000")
    scenario = open_pull_request(fake_github, config="validate:\n  - test -f app.py\n")
    with bot.services.bus.subscribe() as events:
        assert (await bot.webhooks.send("pull_request", scenario.payload("opened"))).status == 202
        done = await wait_for(events, "validation.completed", timeout=60, head_sha=scenario.head_sha)
    state = await bot.store.validations.get(done.data["validation_id"])
    run = fake_github.check_runs[state.check_run_id]
    assert run["conclusion"] == "failure"
    assert ("| checkout | `checkout` | ✗ failed — not enough free disk to start this run: its workspace takes "
            "4 GiB and 1e+06 GiB must stay free for the app, but ") in run["output"]["summary"]


def test_a_run_starts_only_when_its_workspace_leaves_the_reserve_free() -> None:
    assert leaves_reserve(free=10, limit_bytes=4, min_free_bytes=6)  # exactly the reserve left: fine
    assert not leaves_reserve(free=10, limit_bytes=4, min_free_bytes=7)
    assert not leaves_reserve(free=3, limit_bytes=4, min_free_bytes=0)  # not even room for the workspace


def test_the_disk_settings_are_read_in_gib(make_settings) -> None:
    settings = make_settings(RUN_DISK_LIMIT_GIB="0.5", MIN_FREE_DISK_GIB="0")
    assert (settings.run_disk_limit_bytes, settings.min_free_disk_bytes) == (512 * 1024**2, 0)
    with pytest.raises(ConfigError) as bad:
        make_settings(RUN_DISK_LIMIT_GIB="0", MIN_FREE_DISK_GIB="lots")
    assert bad.value.problems == ["RUN_DISK_LIMIT_GIB must be at least 0.01 GiB, got 0",
                                  "MIN_FREE_DISK_GIB must be a number of GiB (such as 4 or 0.5), got 'lots'"]


async def test_health_reports_the_free_space_of_data_dir_and_how_runs_are_bounded(start_bot) -> None:
    bot = await start_bot()
    async with bot.webhooks.session.get(bot.url + "/health") as response:
        report = await response.json()
    assert response.status == 200
    disk = report["disk"]
    assert disk["ok"] is True and disk["min_free_bytes"] == 1024**3 and 0 < disk["free_bytes"] <= disk["total_bytes"]
    assert disk["runs"]["limit_bytes"] == 4 * 1024**3
    assert disk["runs"]["bounded"] is (os.geteuid() == 0 and shutil.which("mkfs.ext4") is not None)


async def test_health_is_unavailable_when_data_dir_runs_low(start_bot) -> None:
    bot = await start_bot(MIN_FREE_DISK_GIB="1000000")
    async with bot.webhooks.session.get(bot.url + "/health") as response:
        report = await response.json()
    assert response.status == 503 and report["status"] == "unavailable"
    assert report["database"]["ok"] is True
    assert report["disk"]["ok"] is False
    assert report["disk"]["reason"].endswith("GiB free on DATA_DIR, below MIN_FREE_DISK_GIB (1e+06 GiB)")


def _driver_error(message: str, code: int) -> OperationalError:
    error = sqlite3.OperationalError(message)
    error.sqlite_errorcode = code  # type: ignore[attr-defined]
    return OperationalError("INSERT INTO deliveries ...", {"payload": "…"}, error)


@pytest.mark.parametrize(("error", "reason"), [
    (_driver_error("database or disk is full", sqlite3.SQLITE_FULL), "the disk is full"),
    (_driver_error("disk I/O error", sqlite3.SQLITE_IOERR), "a database error"),
])
async def test_a_delivery_that_cannot_be_stored_gets_503_with_the_reason(bot, monkeypatch, error, reason) -> None:
    stored = bot.store.deliveries.store

    async def failing(delivery):
        raise error

    before = metrics.REJECTED_DELIVERIES.labels("not_stored")._value.get()
    monkeypatch.setattr(bot.store.deliveries, "store", failing)
    answer = await bot.webhooks.send("issues", {"action": "opened"})
    assert answer.status == 503
    assert answer.body == {"error": f"the delivery could not be stored ({reason}); it can be redelivered"}
    assert metrics.REJECTED_DELIVERIES.labels("not_stored")._value.get() == before + 1

    monkeypatch.setattr(bot.store.deliveries, "store", stored)  # the database is back: the slot was given back
    _, finished = await bot.deliver("issues", {"action": "opened"})
    assert finished.data["outcome"] == "done"


@pytest.fixture
def tiny_disk(tmp_path: Path):
    """A 24 MiB filesystem for DATA_DIR."""
    path = tmp_path / "tiny"
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(path)], check=True)
    yield path
    subprocess.run(["umount", "--lazy", str(path)], check=True)


def fill(path: Path) -> None:
    with open(path, "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 1024**2)
        except OSError:
            pass


@as_root
async def test_a_full_disk_gets_503_from_the_ingress_and_health_and_both_recover(tiny_disk, start_bot) -> None:
    bot = await start_bot(DATA_DIR=str(tiny_disk / "data"), MIN_FREE_DISK_GIB="0.002")
    await bot.deliver("issues", {"action": "opened"})
    fill(tiny_disk / "filler")
    padding = "x" * (2 * 1024**2)  # more than the database's write-ahead log holds already

    answer = await bot.webhooks.send("issues", {"action": "opened", "padding": padding})
    assert answer.status == 503
    assert answer.body["error"] == "the delivery could not be stored (the disk is full); it can be redelivered"
    async with bot.webhooks.session.get(bot.url + "/health") as response:
        report = await response.json()
    assert response.status == 503 and report["disk"]["ok"] is False and report["database"]["ok"] is True

    (tiny_disk / "filler").unlink()
    _, finished = await bot.deliver("issues", {"action": "opened", "padding": padding})
    assert finished.data["outcome"] == "done"
    async with bot.webhooks.session.get(bot.url + "/health") as response:
        assert response.status == 200
