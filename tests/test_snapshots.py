"""Setup snapshots (pipeline/workspace/snapshot*.py) on real files: keys, save/restore round trip, restore safety,
eviction, concurrency."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.workspace.snapshot_key import compile_globs, snapshot_key
from pipeline.workspace.snapshots import SnapshotStore

COMPRESSIONS = ["none", pytest.param("zstd", marks=pytest.mark.skipif(
    shutil.which("zstd") is None, reason="no zstd binary (apt-get install zstd)"))]
TRACKED = {
    "requirements.txt": "requests==2.32.3\n",
    "svc/requirements-dev.txt": "pytest\n",
    "package-lock.json": '{"lockfileVersion": 3}\n',
    "src/pkg/__init__.py": "VERSION = 1\n",
    "README.md": "# demo\n",
}
KEY_ARGS = dict(scope="42:trusted", setup_commands=["pip install -r requirements.txt", "npm ci"],
                env={"NODE_ENV": "test"}, cache_key_globs=["requirements*.txt", "package-lock.json"])


def checkout(ws: Path, files: dict[str, str] = TRACKED) -> Path:
    """A fresh checkout: tracked files plus a .git directory."""
    ws.mkdir(parents=True, exist_ok=True)
    for rel, text in files.items():
        path = ws / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (ws / ".git").mkdir(exist_ok=True)
    (ws / ".git/config").write_text("[core]\n")
    return ws


def run_setup(ws: Path, outside: Path, marker: str = "1") -> None:
    """What setup leaves behind: a venv, node_modules, caches next to tracked sources, odd entries."""
    venv = ws / ".venv"
    (venv / "bin").mkdir(parents=True)
    os.symlink("/usr/bin/python3", venv / "bin/python")  # absolute, outside the workspace: legitimate
    os.symlink("python", venv / "bin/python3")
    tool = venv / "bin/tool"
    tool.write_text(f"#!/workspace/.venv/bin/python\nprint({marker})\n")
    tool.chmod(0o755)
    site = venv / "lib/python3.11/site-packages/requests"
    site.mkdir(parents=True)
    (site / "__init__.py").write_text(f"# requests {marker}\n")
    secret = site / "private.key"
    secret.write_text("k")
    secret.chmod(0o600)
    setuid = venv / "bin/suid"
    setuid.write_text("x")
    setuid.chmod(0o4755)
    (venv / "empty").mkdir()
    locked = venv / "locked"
    locked.mkdir()
    (locked / "inside.txt").write_text("in a 0500 directory")
    locked.chmod(0o500)
    (ws / "node_modules/left-pad").mkdir(parents=True)
    (ws / "node_modules/left-pad/index.js").write_bytes(b"module.exports = 1;\n" + bytes(range(256)))
    os.symlink("../left-pad/index.js", ws / "node_modules/left-pad/alias.js")
    (ws / "src/pkg/__pycache__").mkdir()
    (ws / "src/pkg/__pycache__/__init__.cpython-311.pyc").write_bytes(b"\x00pyc")
    (ws / "secret-link").symlink_to("/etc/shadow")  # planted: must be stored as a link, never read
    (ws / "data-link").symlink_to(outside)
    os.mkfifo(ws / "fifo")
    (ws / "src/pkg/__init__.py").write_text("VERSION = 'changed by setup'\n")  # tracked: not kept
    (ws / ".git/hooks").mkdir()
    (ws / ".git/hooks/post-checkout").write_text("evil")
    (ws / ".cache/pip").mkdir(parents=True)
    (ws / ".cache/pip/blob").write_bytes(b"cache")
    long_dir = ws / ("d" * 120) / ("e" * 120)
    long_dir.mkdir(parents=True)
    (long_dir / ("f" * 150)).write_text("long names")
    os.symlink("t" * 200, ws / "long-link")
    (ws / "node_modules" / os.fsdecode(b"caf\xe9.txt")).write_text("not UTF-8 in its name")
    os.link(site / "__init__.py", ws / "node_modules/hardlink.py")  # stored as an independent copy
    os.utime(venv / "bin/tool", (1_600_000_000, 1_600_000_000), follow_symlinks=False)


def tree(root: Path) -> dict[str, tuple]:
    """Untracked entries below root (not .git, not tracked files): kind, mode, content or target, mtime."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        if rel_dir.split(os.sep)[0] == ".git":
            continue
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if rel in TRACKED or rel == ".git":
                continue
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode))
            elif stat.S_ISREG(st.st_mode):
                out[rel] = ("file", stat.S_IMODE(st.st_mode), path.read_bytes(), int(st.st_mtime))
            else:
                out[rel] = ("special",)
    return out


def archive_members(info) -> list[str]:
    data = info.path.read_bytes()
    if info.compression == "zstd":
        data = subprocess.run(["zstd", "-d", "-q", "-c"], input=data, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return tf.getnames()


def key_for(ws: Path, **overrides) -> str:
    args = {**KEY_ARGS, **overrides}
    return snapshot_key(workspace=ws, tracked_files=list(TRACKED), **args)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    path = tmp_path / "outside"
    path.mkdir()
    return path


@pytest.fixture(params=COMPRESSIONS)
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., SnapshotStore]:
    def make(**kwargs) -> SnapshotStore:
        return SnapshotStore(tmp_path / "snapshots", compression=request.param, **kwargs)
    return make


# ------------------------------------------------------------------------------------------- keys


def test_key_changes_with_inputs_and_is_stable_otherwise(tmp_path: Path) -> None:
    ws = checkout(tmp_path / "ws")
    base = key_for(ws)
    assert len(base) == 64 and key_for(ws) == base
    assert key_for(ws, cache_key_globs=["package-lock.json", "requirements*.txt", "requirements*.txt"]) == base
    assert key_for(ws, scope="42:fork") != base
    assert key_for(ws, setup_commands=["pip install -r requirements.txt"]) != base
    assert key_for(ws, setup_commands=["npm ci", "pip install -r requirements.txt"]) != base
    assert key_for(ws, env={"NODE_ENV": "prod"}) != base
    assert key_for(ws, tool_version="2") != base

    other = checkout(tmp_path / "other")  # same content elsewhere: same key
    assert key_for(other) == base
    (other / "README.md").write_text("not a cache-key file")
    (other / "requirements-untracked.txt").write_text("untracked files never count")
    assert key_for(other) == base
    (other / "svc/requirements-dev.txt").write_text("pytest==8\n")  # nested match of requirements*.txt
    assert key_for(other) != base
    assert key_for(other, cache_key_globs=[]) == key_for(ws, cache_key_globs=[])


def test_key_hashes_a_tracked_symlink_by_target_without_following(tmp_path: Path) -> None:
    ws = checkout(tmp_path / "ws")
    (ws / "package-lock.json").unlink()
    (ws / "package-lock.json").symlink_to("/dev/zero")  # following it would never end
    k1 = key_for(ws)
    (ws / "package-lock.json").unlink()
    (ws / "package-lock.json").symlink_to("/dev/null")
    assert key_for(ws) != k1


@pytest.mark.parametrize(("pattern", "matches", "misses"), [
    ("requirements*.txt", ["requirements.txt", "a/b/requirements-dev.txt"], ["requirements.txt.bak", "requirements/x"]),
    ("/package.json", ["package.json"], ["web/package.json"]),
    ("web/package.json", ["web/package.json"], ["x/web/package.json"]),
    ("**/lock.json", ["lock.json", "a/b/lock.json"], ["a/block.json"]),
    ("deps/**", ["deps/a", "deps/a/b"], ["deps", "x/deps/a"]),
    ("a/**/b.txt", ["a/b.txt", "a/x/y/b.txt"], ["b.txt", "x/a/b.txt"]),
    ("vendor/", ["vendor/x.txt", "lib/vendor/y"], ["vendor"]),
    ("vendor", ["vendor", "vendor/x.txt"], ["vendors"]),
    ("*.lock", ["yarn.lock", "a/Gemfile.lock"], ["yarn.lock.txt"]),
    ("req?.txt", ["req1.txt"], ["req12.txt", "req/.txt"]),
    ("req[0-9].txt", ["req1.txt"], ["reqa.txt"]),
    ("req[!0-9].txt", ["reqa.txt"], ["req1.txt"]),
])
def test_glob_semantics(pattern: str, matches: list[str], misses: list[str]) -> None:
    regex = compile_globs([pattern])
    assert regex is not None
    assert [m for m in matches if not regex.match(m)] == []
    assert [m for m in misses if regex.match(m)] == []


def test_negated_glob_is_rejected() -> None:
    with pytest.raises(ValueError):
        compile_globs(["!keep.txt"])


# ------------------------------------------------------------------------------- save / restore


async def test_round_trip_into_a_fresh_checkout(tmp_path: Path, outside: Path,
                                                make_store: Callable[..., SnapshotStore]) -> None:
    store = make_store(home_caches=True)  # everything setup left, its .cache/ too
    ws = checkout(tmp_path / "ws")
    key = key_for(ws)
    run_setup(ws, outside)
    before = tree(ws)
    (ws / "libs/sub/.git").mkdir(parents=True)  # a submodule (a tracked gitlink): never stored
    (ws / "libs/sub/code.py").write_text("submodule")
    info = await store.save(key, ws, tracked_files=[*TRACKED, "libs/sub"])
    assert info is not None and info.path.exists() and info.key == key
    names = archive_members(info)
    assert sorted(names) == sorted(set(before) - {"fifo", "src", "src/pkg", "svc"}) and info.entries == len(names)
    assert info.files == sum(1 for e in before.values() if e[0] == "file")
    assert names.index(".venv") < names.index(".venv/bin") < names.index(".venv/bin/tool")
    assert "src" not in names and "src/pkg" not in names and "src/pkg/__pycache__" in names
    assert store.usage() == (info.size, 1)
    assert store.info(key) == info

    fresh = checkout(tmp_path / "fresh")
    assert await store.restore(key, fresh)
    after = tree(fresh)
    expected = {rel: entry for rel, entry in before.items() if entry != ("special",)}
    expected[".venv/bin/suid"] = ("file", 0o755, b"x", expected[".venv/bin/suid"][3])  # setuid dropped
    assert after == expected
    assert after[".venv/bin/python"] == ("link", "/usr/bin/python3")
    assert after["secret-link"] == ("link", "/etc/shadow")
    assert after[".venv/bin/tool"][1] == 0o755 and after[".venv/bin/tool"][3] == 1_600_000_000
    assert after[".venv/locked"] == ("dir", 0o500) and after[".venv/empty"][0] == "dir"
    assert "fifo" not in after
    assert (fresh / "src/pkg/__init__.py").read_text() == "VERSION = 1\n"  # tracked: from the checkout
    assert sorted(os.listdir(fresh / ".git")) == ["config"]  # .git never comes from a snapshot
    assert os.listdir(outside) == []
    assert all(os.lstat(fresh / rel).st_nlink == 1 for rel, e in after.items() if e[0] == "file")
    assert after[os.fsdecode(b"node_modules/caf\xe9.txt")][2] == b"not UTF-8 in its name"
    assert not (fresh / "libs").exists()
    assert store.info(key).last_used >= info.last_used


async def test_restore_miss_and_exclude(tmp_path: Path, outside: Path,
                                        make_store: Callable[..., SnapshotStore]) -> None:
    store = make_store()
    ws = checkout(tmp_path / "ws")
    key = key_for(ws)
    assert not await store.restore(key, ws)
    run_setup(ws, outside)
    assert await store.save(key, ws, tracked_files=list(TRACKED), exclude=[".cache/", "*.pyc"])
    fresh = checkout(tmp_path / "fresh")
    assert await store.restore(key, fresh)
    assert not (fresh / ".cache").exists()
    assert not (fresh / "src/pkg/__pycache__/__init__.cpython-311.pyc").exists()
    assert (fresh / "node_modules/left-pad/index.js").exists()
    with pytest.raises(ValueError):
        await store.restore("../../etc", fresh)


async def test_home_caches_are_left_out_unless_the_store_keeps_them(tmp_path: Path) -> None:
    ws = checkout(tmp_path / "ws")
    for rel in (".npm/_cacache/index-v5/ab/cd", ".cache/pip/http/blob", ".cargo/registry/index/x", ".venv/bin/tool",
                "node_modules/.cache/babel/x", "web/.npm/kept"):
        (ws / rel).parent.mkdir(parents=True, exist_ok=True)
        (ws / rel).write_text("x")
    caches = {".npm/_cacache/index-v5/ab/cd", ".cache/pip/http/blob", ".cargo/registry/index/x"}
    by_default = await SnapshotStore(tmp_path / "default").save(key_for(ws), ws, tracked_files=list(TRACKED))
    kept = await SnapshotStore(tmp_path / "kept", home_caches=True).save(key_for(ws), ws, tracked_files=list(TRACKED))
    assert by_default is not None and kept is not None
    stored = set(archive_members(by_default))
    assert {".venv/bin/tool", "node_modules/.cache/babel/x", "web/.npm/kept"} <= stored  # only HOME's caches go
    assert not caches & stored and ".npm" not in stored and ".cache" not in stored
    assert caches <= set(archive_members(kept))


async def test_tracked_files_of_the_new_checkout_are_not_overwritten(
        tmp_path: Path, outside: Path, make_store: Callable[..., SnapshotStore]) -> None:
    store = make_store()
    ws = checkout(tmp_path / "ws")
    key = key_for(ws)
    run_setup(ws, outside)
    (ws / "build").mkdir()
    (ws / "build/gen.py").write_text("generated by setup")
    (ws / "vendored").mkdir()
    (ws / "vendored/lib.py").write_text("from setup")
    assert await store.save(key, ws, tracked_files=list(TRACKED))

    # The next commit tracks what was untracked: a file, and a symlink where the snapshot has a directory.
    files = {**TRACKED, "build/gen.py": "tracked now"}
    fresh = checkout(tmp_path / "fresh", files)
    (fresh / "vendored").symlink_to(outside)
    (fresh / "node_modules").mkdir()
    (fresh / "node_modules/left-pad").write_text("a tracked file where the snapshot has a directory")
    assert await store.restore(key, fresh)
    assert (fresh / "build/gen.py").read_text() == "tracked now"
    assert os.listdir(outside) == []  # nothing written through the tracked symlink
    assert (fresh / "node_modules/left-pad").read_text().startswith("a tracked file")
    assert (fresh / ".venv/bin/tool").exists()
    for rel, text in TRACKED.items():
        assert (fresh / rel).read_text() == text


# -------------------------------------------------------------------------------- malicious tars


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    bio = io.BytesIO()
    with tarfile.open(fileobj=bio, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return bio.getvalue()


def _member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes | None = None, linkname: str = "") -> tuple:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, linkname, 0o644
    if data is not None:
        info.size = len(data)
    return info, data


async def _plant(store: SnapshotStore, key: str, ws: Path, archive: bytes) -> None:
    """Replace the archive of a saved snapshot by `archive` (an attacker with write access to the store)."""
    info = await store.save(key, ws, tracked_files=list(TRACKED))
    assert info is not None
    if store.compression == "zstd":
        archive = subprocess.run(["zstd", "-q", "-c"], input=archive, capture_output=True, check=True).stdout
    info.path.write_bytes(archive)
    meta_path = info.path.parent / f"{key}.json"
    meta = json.loads(meta_path.read_text())
    meta["size"] = len(archive)
    meta_path.write_text(json.dumps(meta))


@pytest.mark.parametrize("members", [
    [_member("ok.txt", data=b"fine"), _member("../../escape", data=b"x")],
    [_member("ok.txt", data=b"fine"), _member("/tmp/abs-escape", data=b"x")],
    [_member("ok.txt", data=b"fine"), _member("a/../../escape", data=b"x")],
    [_member("ok.txt", data=b"fine"), _member(".git/config", data=b"[core]\nfsmonitor = evil\n")],
    [_member("ok.txt", data=b"fine"), _member("hard", tarfile.LNKTYPE, linkname="/etc/passwd")],
    [_member("ok.txt", data=b"fine"), _member("dev", tarfile.CHRTYPE)],
    [_member("ok.txt", data=b"fine"), _member("pipe", tarfile.FIFOTYPE)],
], ids=["dotdot", "absolute", "inner-dotdot", "git", "hardlink", "device", "fifo"])
async def test_malformed_archive_is_rejected_and_rolled_back(
        tmp_path: Path, make_store: Callable[..., SnapshotStore], members: list) -> None:
    store = make_store()
    ws = checkout(tmp_path / "a" / "b" / "ws")
    key = key_for(ws)
    await _plant(store, key, ws, _tar(members))
    fresh = checkout(tmp_path / "a" / "b" / "fresh")
    before = sorted(p.name for p in fresh.iterdir())
    assert not await store.restore(key, fresh)
    assert sorted(p.name for p in fresh.iterdir()) == before  # ok.txt rolled back
    assert (fresh / ".git/config").read_text() == "[core]\n"
    assert not (tmp_path / "a" / "escape").exists() and not (tmp_path / "escape").exists()
    assert not Path("/tmp/abs-escape").exists()
    assert store.usage() == (0, 0)  # dropped


async def test_symlink_then_file_through_it_cannot_write_outside(
        tmp_path: Path, outside: Path, make_store: Callable[..., SnapshotStore]) -> None:
    store = make_store()
    ws = checkout(tmp_path / "ws")
    key = key_for(ws)
    await _plant(store, key, ws, _tar([
        _member("evil", tarfile.SYMTYPE, linkname=str(outside)),
        _member("evil/pwned", data=b"x"),
        _member("evil", tarfile.DIRTYPE),
        _member("evil/pwned2", data=b"x"),
        _member("rel", tarfile.SYMTYPE, linkname="../../.."),
        _member("rel/escape", data=b"x"),
        _member("README.md", data=b"overwrite a tracked file"),
        _member("README.md", tarfile.SYMTYPE, linkname="/etc/passwd"),
        _member("ok/file.txt", data=b"x"),  # parent missing: skipped, not created
        _member("good.txt", data=b"fine"),
    ]))
    fresh = checkout(tmp_path / "fresh")
    assert await store.restore(key, fresh)
    assert os.listdir(outside) == []
    assert not (tmp_path.parent / "escape").exists()
    assert (fresh / "evil").is_symlink() and os.readlink(fresh / "evil") == str(outside)
    assert (fresh / "README.md").read_text() == TRACKED["README.md"] and not (fresh / "README.md").is_symlink()
    assert not (fresh / "ok").exists()
    assert (fresh / "good.txt").read_text() == "fine"


async def test_truncated_archive_is_a_miss(tmp_path: Path, outside: Path,
                                           make_store: Callable[..., SnapshotStore]) -> None:
    store = make_store()
    ws = checkout(tmp_path / "ws")
    key = key_for(ws)
    run_setup(ws, outside)
    info = await store.save(key, ws, tracked_files=list(TRACKED))
    data = info.path.read_bytes()
    info.path.write_bytes(data[: len(data) // 2])
    meta_path = info.path.parent / f"{key}.json"
    meta = json.loads(meta_path.read_text())
    meta["size"] = len(data) // 2
    meta_path.write_text(json.dumps(meta))
    fresh = checkout(tmp_path / "fresh")
    assert not await store.restore(key, fresh)
    assert not (fresh / ".venv").exists() and not (fresh / "node_modules").exists()
    assert store.usage() == (0, 0)


# ------------------------------------------------------------------------------- size and LRU


async def test_lru_eviction_and_oversized_snapshot(tmp_path: Path) -> None:
    now = [1000.0]
    store = SnapshotStore(tmp_path / "snapshots", max_bytes=400_000, compression="none", clock=lambda: now[0])
    ws = checkout(tmp_path / "ws")
    blob = ws / "node_modules/blob.bin"
    blob.parent.mkdir()
    keys = [f"{i:x}" * 64 for i in range(1, 6)]
    for i, key in enumerate(keys[:3]):
        blob.write_bytes(os.urandom(90_000) + bytes([i]))
        now[0] += 1
        assert await store.save(key, ws, tracked_files=list(TRACKED))
    size_one = store.usage()[0] // 3
    assert store.usage()[1] == 3 and size_one < 100_000
    now[0] += 1
    assert await store.restore(keys[0], checkout(tmp_path / "r0"))  # keys[0] becomes the most recent
    now[0] += 1
    assert await store.save(keys[3], ws, tracked_files=list(TRACKED))  # 4 x ~92 KB: fits 400 KB
    now[0] += 1
    assert await store.save(keys[4], ws, tracked_files=list(TRACKED))  # 5th: evicts the LRU, keys[1]
    assert store.info(keys[1]) is None
    assert all(store.info(k) for k in (keys[0], keys[2], keys[3], keys[4]))
    assert store.usage()[0] <= 400_000
    assert not await store.restore(keys[1], checkout(tmp_path / "r1"))

    blob.write_bytes(bytes(101_000))  # > max_bytes / 4: not kept, nothing written
    used = store.usage()
    assert await store.save("f" * 64, ws, tracked_files=list(TRACKED)) is None
    assert store.usage() == used and store.info("f" * 64) is None
    assert os.listdir(tmp_path / "snapshots/tmp") == []

    sparse = ws / "node_modules/sparse"
    blob.unlink()
    with open(sparse, "wb") as f:
        f.truncate(1 << 40)  # 1 TB of nothing: rejected before anything is read
    assert await store.save("e" * 64, ws, tracked_files=list(TRACKED)) is None


async def test_too_deep_tree_is_not_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pipeline.workspace.snapshot_archive.MAX_DEPTH", 4)
    store = SnapshotStore(tmp_path / "snapshots", compression="none")
    ws = checkout(tmp_path / "ws")
    (ws / "a/b/c").mkdir(parents=True)
    assert await store.save("a" * 64, ws, tracked_files=list(TRACKED))
    (ws / "a/b/c/d/e").mkdir(parents=True)
    assert await store.save("b" * 64, ws, tracked_files=list(TRACKED)) is None


# -------------------------------------------------------------------------------- concurrency


async def test_concurrent_saves_of_one_key_and_restore_during_save(
        tmp_path: Path, outside: Path, make_store: Callable[..., SnapshotStore]) -> None:
    store = make_store(home_caches=True)  # compares whole trees, .cache/ included
    workspaces = []
    for i in range(3):
        ws = checkout(tmp_path / f"ws{i}")
        run_setup(ws, outside, marker=str(i))
        (ws / "node_modules/big.bin").write_bytes(bytes([i]) * 300_000)
        workspaces.append(ws)
    key = key_for(workspaces[0])
    trees = [tree(ws) for ws in workspaces]
    results = await asyncio.gather(*(store.save(key, ws, tracked_files=list(TRACKED)) for ws in workspaces[:2]))
    assert all(results)
    assert store.usage()[1] == 1
    assert len(list(store.root.glob("??/*.tar*"))) == 1
    fresh = checkout(tmp_path / "fresh")
    assert await store.restore(key, fresh)
    restored = tree(fresh)
    expected = [{k: v for k, v in t.items() if v != ("special",)} for t in trees[:2]]
    for t in expected:
        t[".venv/bin/suid"] = restored[".venv/bin/suid"]  # setuid dropped, checked in the round trip
    assert restored in expected

    # A restore racing a save of the same key sees the old snapshot or the new one, never a mix.
    fresh2 = checkout(tmp_path / "fresh2")
    saved, hit = await asyncio.gather(store.save(key, workspaces[2], tracked_files=list(TRACKED)),
                                      store.restore(key, fresh2))
    assert saved and hit
    big = (fresh2 / "node_modules/big.bin").read_bytes()
    marker = big[0]
    assert big == bytes([marker]) * 300_000
    assert (fresh2 / ".venv/bin/tool").read_text().endswith(f"print({marker})\n")
    assert os.listdir(store.root / "tmp") == []
