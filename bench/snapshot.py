"""Setup-snapshot benchmark: save and restore times and archive sizes for a synthetic setup output.

Builds a tree like a setup's output (default ~5,000 files / ~100 MB: a `.venv/` of Python-like text
files and `.so`-like half-random binaries, a `node_modules/` of small JS files, symlinks, exec bits)
next to a few tracked files, then for each compression: `SnapshotStore.save`, and `restore` into a
fresh checkout (tracked files only), several rounds, printing the median. Also prints the warm/cold
ratio for a setup of `--setup-seconds` (cold = setup + save, warm = restore; validation time is the
same on both sides and left out, so the real ratio is closer to 1 than this one).

    .venv/bin/python bench/snapshot.py [--files 5000] [--mb 100] [--rounds 3] [--tree PATH]

`--tree PATH` snapshots a copy of an existing directory instead (e.g. `--tree .venv`). Runs in a
temporary directory on the same filesystem as /tmp; the page cache is warm (nothing is dropped).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.workspace.snapshot_key import snapshot_key  # noqa: E402
from pipeline.workspace.snapshots import SnapshotStore  # noqa: E402

TRACKED = {"requirements.txt": "requests==2.32.3\n", "package-lock.json": "{}\n", "src/app.py": "print(1)\n"}
WORDS = ("def class return import from self None True False if else for in while with as try except "
         "lambda yield async await raise assert pass break continue global nonlocal").split()


def build_tree(ws: Path, files: int, total_mb: int, seed: int = 1) -> None:
    rnd = random.Random(seed)
    total = total_mb * 1024 * 1024
    n_bin = max(1, files // 20)  # 5% binaries carry ~60% of the bytes, as in a venv with numpy & co
    n_text = files - n_bin
    bin_size = int(total * 0.6 / n_bin)
    text_size = int(total * 0.4 / n_text)
    site = ws / ".venv/lib/python3.11/site-packages"
    (ws / ".venv/bin").mkdir(parents=True)
    os.symlink("/usr/bin/python3", ws / ".venv/bin/python")
    os.symlink("python", ws / ".venv/bin/python3")
    for i in range(n_text):
        if i % 3 == 0:
            d = ws / "node_modules" / f"pkg{i % 400}" / "lib"
            name = f"m{i}.js"
        else:
            d = site / f"pkg{i % 300}" / f"sub{i % 7}"
            name = f"mod{i}.py"
        d.mkdir(parents=True, exist_ok=True)
        words = [rnd.choice(WORDS) + str(rnd.randrange(50)) for _ in range(text_size // 7 + 1)]
        (d / name).write_text(" ".join(words)[:text_size])
    for i in range(n_bin):
        d = site / f"pkg{i % 300}"
        d.mkdir(parents=True, exist_ok=True)
        half = bin_size // 2
        data = rnd.randbytes(half) + bytes(range(256)) * ((bin_size - half) // 256 + 1)
        path = d / f"_native{i}.cpython-311-x86_64-linux-gnu.so"
        path.write_bytes(data[:bin_size])
        path.chmod(0o755)
    for i in range(20):
        script = ws / ".venv/bin" / f"tool{i}"
        script.write_text("#!/workspace/.venv/bin/python\nimport sys\n")
        script.chmod(0o755)


def checkout(ws: Path) -> None:
    for rel, text in TRACKED.items():
        path = ws / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def tree_stats(path: Path) -> tuple[int, int]:
    count = size = 0
    for dirpath, dirnames, filenames in os.walk(path):
        count += len(dirnames) + len(filenames)
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            size += st.st_size
    return count, size


async def bench(args: argparse.Namespace) -> None:
    base = Path(tempfile.mkdtemp(prefix="snapshot-bench-", dir=args.dir))
    try:
        ws = base / "ws"
        ws.mkdir()
        checkout(ws)
        if args.tree:
            shutil.copytree(args.tree, ws / Path(args.tree).name, symlinks=True)
        else:
            build_tree(ws, args.files, args.mb)
        entries, size = tree_stats(ws)
        print(f"tree: {entries} entries, {size / 1e6:.1f} MB ({'copy of ' + args.tree if args.tree else 'synthetic'})")
        key = snapshot_key(scope="bench:trusted", setup_commands=["pip install -r requirements.txt"], env={},
                           workspace=ws, cache_key_globs=["requirements*.txt", "package-lock.json"],
                           tracked_files=list(TRACKED))
        t = time.perf_counter()
        shutil.copytree(ws, base / "copy", symlinks=True)
        print(f"baseline shutil.copytree: {time.perf_counter() - t:.2f}s")
        shutil.rmtree(base / "copy")
        modes = ["none", "zstd"] if shutil.which("zstd") else ["none"]
        for mode in modes:
            saves, restores, size_on_disk = [], [], 0
            for r in range(args.rounds):
                store = SnapshotStore(base / f"store-{mode}-{r}", compression=mode)
                t = time.perf_counter()
                info = await store.save(key, ws, tracked_files=list(TRACKED))
                saves.append(time.perf_counter() - t)
                assert info is not None
                size_on_disk = info.size
                fresh = base / f"fresh-{mode}-{r}"
                fresh.mkdir()
                checkout(fresh)
                t = time.perf_counter()
                assert await store.restore(key, fresh)
                restores.append(time.perf_counter() - t)
                shutil.rmtree(fresh)
                shutil.rmtree(base / f"store-{mode}-{r}")
            save, restore = statistics.median(saves), statistics.median(restores)
            ratio = restore / (args.setup_seconds + save)
            print(f"{mode:5s} save {save:.2f}s  restore {restore:.2f}s  archive {size_on_disk / 1e6:.1f} MB "
                  f"({size_on_disk / max(size, 1):.0%} of content)  warm/cold for a {args.setup_seconds:g}s setup: "
                  f"{ratio:.2f}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--setup-seconds", type=float, default=5.0)
    parser.add_argument("--tree", help="snapshot a copy of this directory instead of the synthetic tree")
    parser.add_argument("--dir", help="where to build the tree and the stores (default: the temp dir)")
    asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    main()
