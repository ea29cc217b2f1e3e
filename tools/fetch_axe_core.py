#!/usr/bin/env python3
"""Vendor axe-core (the accessibility checker the UI check runs in each page) into pipeline/ui_check/vendor/.

`npm pack` of a pinned version, its tarball checked against the pinned sha512 integrity (the
registry's, which npm verifies while downloading), then `axe.min.js` copied out. Idempotent: does
nothing when the pinned version is already there (--force to fetch again). Exits 0 with a printed
reason when npm is missing or fails: the UI check then reports accessibility as not checked.
Never fetched at run time. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import sys
import tarfile
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tools.fetch_github_fixtures import FetchError, npm_pack  # noqa: E402

AXE_PKG = "axe-core@4.14.1"
AXE_INTEGRITY = "sha512-FHfa+lmNjQZfJz1q8wKqIDwC6DExcHt/pkjNQb09a3NPjCKg2rhu5qb2S4r76ASyFNNtuFooJpZe37OgudVGtQ=="
MEMBER = "package/axe.min.js"
DEST = Path(__file__).resolve().parents[1] / "pipeline" / "ui_check" / "vendor"
STAMP = "axe-core.json"


def is_current(dest: Path) -> bool:
    try:
        stamp = json.loads((dest / STAMP).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return stamp == {"package": AXE_PKG, "integrity": AXE_INTEGRITY} and (dest / "axe.min.js").is_file()


def fetch(dest: Path) -> str:
    with tempfile.TemporaryDirectory(prefix="axe-core-") as tmp:
        tarball = npm_pack([AXE_PKG], Path(tmp), {AXE_PKG: AXE_INTEGRITY})[AXE_PKG]
        with tarfile.open(tarball, "r:gz") as archive:
            member = archive.extractfile(MEMBER)
            if member is None:
                raise FetchError(f"{MEMBER} is not a file in {tarball.name}")
            script = member.read()
    dest.mkdir(parents=True, exist_ok=True)
    partial = dest / "axe.min.js.partial"
    partial.write_bytes(script)
    partial.rename(dest / "axe.min.js")
    (dest / STAMP).write_text(json.dumps({"package": AXE_PKG, "integrity": AXE_INTEGRITY}) + "\n", encoding="utf-8")
    return f"vendored {AXE_PKG} ({len(script)} bytes) into {dest}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=DEST, help=f"default: {DEST}")
    parser.add_argument("--force", action="store_true", help="fetch even if the pinned version is there")
    args = parser.parse_args(argv)
    if not args.force and is_current(args.dest):
        print(f"{AXE_PKG} already in {args.dest}")
        return 0
    try:
        print(fetch(args.dest))
    except (FetchError, OSError, tarfile.TarError) as exc:
        print(f"axe-core not vendored ({exc}); the UI check will report accessibility as not checked.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
