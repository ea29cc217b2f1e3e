"""Each run's workspace on a size-limited filesystem of its own (pipeline/workspace/volumes.py): real
loop-mounted ext4 images, so these need root."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import GIB
from pipeline.workspace.volumes import RunVolumes, VolumeUnavailable, free_bytes
from tests.cli_support import PROJECT_ROOT
from tests.volume_support import mounted_under

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("mkfs.ext4") is None,
                                reason="loop-mounting a filesystem needs root and mkfs.ext4 (e2fsprogs)")

LIMIT = 32 * 1024**2


def fill(directory: Path, mib: int) -> int | None:
    """Write up to `mib` MiB into a file there; the errno that stopped it, if any."""
    chunk = b"\0" * 1024**2
    try:
        with open(directory / "fill", "wb") as handle:
            for _ in range(mib):
                handle.write(chunk)
                handle.flush()
    except OSError as exc:
        return exc.errno
    return None


@pytest.fixture
async def make_volumes(tmp_path: Path):
    """RunVolumes under tmp_path, all closed after the test; nothing may stay mounted (whatever a failing
    test left is unmounted all the same, so that no loop device leaks)."""
    made: list[RunVolumes] = []

    async def make(root: Path = tmp_path / "workspaces", **options) -> RunVolumes:
        volumes = RunVolumes(root, **{"limit_bytes": LIMIT, "min_free_bytes": 0, **options})
        made.append(volumes)
        await volumes.start()
        return volumes

    yield make
    for volumes in made:
        await volumes.close()
    left = mounted_under(tmp_path)
    for point in left:
        subprocess.run(["umount", "--lazy", point], check=False)
    assert left == []


@pytest.fixture
async def volumes(make_volumes) -> RunVolumes:
    return await make_volumes()


async def test_a_run_that_writes_past_its_limit_gets_enospc_inside_its_own_filesystem(volumes: RunVolumes) -> None:
    assert volumes.bounded, volumes.unbounded_reason
    volume = await volumes.create("run-1")
    assert list(volume.path.iterdir()) == []  # an empty directory for the checkout
    data_dir_free = free_bytes(volumes.root)[0]
    assert volume.limit_reached() is None

    assert fill(volume.path, 3 * LIMIT // 1024**2) == errno.ENOSPC
    assert volume.limit_reached() == "disk limit of 0.0312 GiB reached"
    # the space was taken from DATA_DIR when the run began, not as it wrote
    assert abs(free_bytes(volumes.root)[0] - data_dir_free) < 4 * 1024**2

    (volume.path / "fill").unlink()
    assert volume.limit_reached() is None


async def test_running_out_of_files_is_the_limit_too(volumes: RunVolumes) -> None:
    volume = await volumes.create("run-1")
    with pytest.raises(OSError) as exhausted:
        for i in range(100_000):
            (volume.path / str(i)).touch()
    assert exhausted.value.errno == errno.ENOSPC
    assert volume.limit_reached().startswith("disk limit of 0.0312 GiB reached (all its ")


async def test_removing_a_run_unmounts_it_and_leaves_nothing(volumes: RunVolumes) -> None:
    volume = await volumes.create("run-1")
    (volume.path / "dir").mkdir(mode=0)
    assert mounted_under(volumes.root) == [str(volume.path)]
    await volumes.remove("run-1")
    assert mounted_under(volumes.root) == [] and list(volumes.root.iterdir()) == []
    await volumes.remove("run-1")  # twice is fine


async def test_a_run_starts_only_when_the_apps_reserve_stays_free(tmp_path: Path, make_volumes) -> None:
    volumes = await make_volumes(min_free_bytes=free_bytes(tmp_path)[1])  # the whole disk: never free
    with pytest.raises(VolumeUnavailable) as refused:
        await volumes.create("run-1")
    assert str(refused.value).startswith("not enough free disk to start this run: its workspace takes 0.0312 GiB")
    assert list(volumes.root.iterdir()) == []


async def test_a_name_in_use_by_a_live_process_is_refused_and_left_alone(volumes: RunVolumes, make_volumes) -> None:
    volume = await volumes.create("run-1")
    (volume.path / "work").write_text("mine")
    other = await make_volumes()  # another process's view: its start leaves the live run alone
    with pytest.raises(VolumeUnavailable, match="in use by another process"):
        await other.create("run-1")
    assert (volume.path / "work").read_text() == "mine"


LEAVE_A_VOLUME = """
import asyncio, os, sys
from pathlib import Path
from pipeline.workspace.volumes import RunVolumes

async def main():
    volumes = RunVolumes(Path(sys.argv[1]), limit_bytes=32 * 1024**2, min_free_bytes=0)
    await volumes.start()
    volume = await volumes.create("crashed")
    (volume.path / "file").write_text("left behind")
    os._exit(9)  # dies with it mounted

asyncio.run(main())
"""


def leave_a_volume(root: Path) -> None:
    """A process that dies with its run's volume `crashed` mounted under `root`."""
    died = subprocess.run([sys.executable, "-c", LEAVE_A_VOLUME, str(root)], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=60)
    assert died.returncode == 9, died.stderr
    assert mounted_under(root) == [str(root / "crashed")]
    assert (root / "crashed" / "file").read_text() == "left behind"


async def test_what_a_crashed_process_left_mounted_is_removed_at_the_next_start(tmp_path: Path, make_volumes) -> None:
    root = tmp_path / "workspaces"
    leave_a_volume(root)
    old_style = root / "0123abcd"  # a plain workspace directory an older version left
    old_style.mkdir()
    (old_style / "x").write_text("x")

    await make_volumes(root)
    assert mounted_under(root) == [] and list(root.iterdir()) == []


async def test_a_retried_run_of_the_same_name_replaces_what_its_dead_attempt_left(tmp_path: Path, make_volumes) -> None:
    root = tmp_path / "workspaces"
    volumes = await make_volumes(root)
    leave_a_volume(root)
    volume = await volumes.create("crashed")
    assert list(volume.path.iterdir()) == [] and mounted_under(root) == [str(volume.path)]
    await volumes.close()
    assert mounted_under(root) == []


async def test_without_root_workspaces_are_plain_directories_and_health_says_why(tmp_path: Path, monkeypatch,
                                                                                 make_volumes) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    volumes = await make_volumes(limit_bytes=GIB)
    assert volumes.describe() == {"bounded": False, "limit_bytes": GIB,
                                  "reason": "the app is not root: mounting a filesystem per run needs root"}
    volume = await volumes.create("run-1")
    (volume.path / "a").write_text("x")
    assert volume.limit_reached() is None and mounted_under(tmp_path) == []
    await volumes.remove("run-1")
    assert list(volumes.root.iterdir()) == []
