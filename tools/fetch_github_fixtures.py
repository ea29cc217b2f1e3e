#!/usr/bin/env python3
"""Build .cache/github-fixtures for a clone that has no ../shared/fixtures/github.

Fetches the published npm packages named in shared/fixtures/github/SOURCE.md with `npm pack`
(pinned versions, integrity checked) and lays out the same files the tests read from ../shared:

    webhooks/<event>/<action>.json          (<action>.2.json, ... ; payload.json when actionless)
    webhooks-form-encoded/<event>/<action>.txt
    rest-api-subset.json                    (the bot's REST operations + all of `components`)

Idempotent: does nothing when the cache is already complete (use --force to rebuild).
Exits 0 with a printed reason when npm is missing or fails, so `make test` can go on and skip.
Standard library only.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.ghfixtures import REST_OPERATIONS  # noqa: E402
from typing import Any
from urllib.parse import unquote_plus

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DEST = PROJECT_ROOT / ".cache" / "github-fixtures"
STAMP = ".complete.json"
NPM_TIMEOUT_S = 600

EXAMPLES_PKG = "@octokit/webhooks-examples@7.6.1"
OPENAPI_PKG = "@octokit/openapi@23.0.2"
INTEGRITY = {
    EXAMPLES_PKG: "sha512-De6U3XB6O3DtCa7bKgCMzTHdeopqqZ6SNivMYJnK65ierKL1AnNIA0tkRYCRS7lwGT792d+Ps1WbfHlso6MynQ==",
    OPENAPI_PKG: "sha512-pV8M7L9GY23AybNvTmo2nyjmpmnt6+2sRE/tqr0ZLQcPS4lnw7u5eZGNmwRNkBC3D7gZXbFx5AHzLUVRBXGDhg==",
}
EXAMPLES_MEMBER = "package/api.github.com/index.json"
OPENAPI_MEMBER = "package/generated/api.github.com.json"

# Per event: the order of the examples in index.json (by position) as ../shared names them.
# The package does not keep octokit's file names, so "the base file first" cannot be derived;
# position 0 is the docs.github.com example, which goes after the community ones of its action.
# Names are then counted per action: <action>.json, <action>.2.json, ...
EVENT_ORDER: dict[str, tuple[int, ...]] = {
    "check_run": (2, 1, 3, 4, 5, 0, 6, 7, 8),
    "check_suite": (2, 1, 3, 0, 4, 5, 6, 7, 8),
    "github_app_authorization": (0, 1),
    "installation": (1, 2, 3, 0, 4, 5, 6),
    "installation_repositories": (1, 0, 2),
    "issue_comment": (2, 1, 3, 4, 0, 5, 6, 7, 8),
    "issues": (1, 2, 3, 4, 5, 6, 7, 8, 0, *range(9, 29)),
    "meta": (1, 0),
    "ping": (1, 2, 3, 0),
    "pull_request": (*range(1, 15), 0, *range(15, 29)),
    "pull_request_review": (1, 2, 3, 0),
    "push": (1, 2, 3, 4, 5, 6, 0),
    "status": (1, 2, 3, 0),
    "workflow_run": (1, 2, 0, 3, 4),
    "installation_target": (),
    "merge_group": (0, 1),
}

# The REST operations the bot uses: the one list, kept with the fixture locator.
OPERATIONS = REST_OPERATIONS
# Served by github.com, not described in the REST description (see SOURCE.md).
NOT_IN_DESCRIPTION = ("POST /login/oauth/access_token", "POST /login/device/code", "GET /login/oauth/authorize")


class FetchError(Exception):
    """A reason to give up without failing the build."""


def npm_pack(packages: Iterable[str], into: Path, integrity: dict[str, str] = INTEGRITY) -> dict[str, Path]:
    """`npm pack` the packages into a directory; returns spec -> tarball, checked against the pinned
    `integrity` (the registry's sha512 of the tarball, which npm verified while downloading it)."""
    npm = shutil.which("npm")
    if npm is None:
        raise FetchError("npm is not installed")
    specs = list(packages)
    cmd = [npm, "pack", *specs, "--json", "--pack-destination", str(into)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=NPM_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FetchError(f"npm pack failed: {exc}") from exc
    if done.returncode != 0:
        raise FetchError(f"npm pack exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    try:
        packed = json.loads(done.stdout)
    except json.JSONDecodeError as exc:
        raise FetchError(f"unexpected npm pack output: {done.stdout[:500]!r}") from exc
    tarballs: dict[str, Path] = {}
    for spec, info in zip(specs, packed, strict=True):
        if info.get("integrity") != integrity[spec]:
            raise FetchError(f"{spec}: integrity {info.get('integrity')} != pinned {integrity[spec]}")
        tarballs[spec] = into / info["filename"]
    return tarballs


def read_json_member(tarball: Path, member: str) -> Any:
    with tarfile.open(tarball, "r:gz") as archive:
        extracted = archive.extractfile(member)
        if extracted is None:
            raise FetchError(f"{member} is not a file in {tarball.name}")
        with extracted:
            return json.load(extracted)


def resolve(doc: dict[str, Any], node: Any) -> Any:
    """Follow a local `$ref` (possibly chained)."""
    while isinstance(node, dict) and "$ref" in node:
        target: Any = doc
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        node = target
    return node


class Namer:
    """Names files per action as SOURCE.md describes, storing identical examples once."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str], int] = {}
        self._seen: dict[str, list[Any]] = {}

    def name(self, event: str, payload: Any, action: str | None) -> str | None:
        seen = self._seen.setdefault(event, [])
        if payload in seen:
            return None
        seen.append(payload)
        stem = action or "payload"
        count = self._counts.get((event, stem), 0) + 1
        self._counts[(event, stem)] = count
        return stem if count == 1 else f"{stem}.{count}"


def rest_webhook_examples(spec: dict[str, Any], media_type: str) -> Iterator[tuple[str, Any]]:
    """(event, example value) for every `x-webhooks` operation with an example of that media type."""
    for path_item in spec.get("x-webhooks", {}).values():
        operation = path_item.get("post", {})
        event = next(
            (
                p.get("example")
                for p in operation.get("parameters", [])
                if p.get("name", "").lower() == "x-github-event"
            ),
            None,
        )
        content = operation.get("requestBody", {}).get("content", {}).get(media_type, {})
        for example in content.get("examples", {}).values():
            value = resolve(spec, example).get("value")
            if event and value is not None:
                yield event, value


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def build_webhooks(index: list[dict[str, Any]], spec: dict[str, Any], dest: Path) -> int:
    by_event = {entry["name"]: entry.get("examples", []) for entry in index}
    namer = Namer()
    written = 0
    for event, order in EVENT_ORDER.items():
        examples = by_event.get(event, [])
        positions = [*order, *(i for i in range(len(examples)) if i not in order)]
        for position in positions:
            if position >= len(examples):
                continue
            payload = examples[position]
            name = namer.name(event, payload, payload.get("action"))
            if name is not None:
                write_json(dest / "webhooks" / event / f"{name}.json", payload)
                written += 1
    for event, payload in rest_webhook_examples(spec, "application/json"):
        if event in EVENT_ORDER and (name := namer.name(event, payload, payload.get("action"))):
            write_json(dest / "webhooks" / event / f"{name}.json", payload)
            written += 1
    form_namer = Namer()
    for event, value in rest_webhook_examples(spec, "application/x-www-form-urlencoded"):
        if event not in EVENT_ORDER:
            continue
        if name := form_namer.name(event, value, json_action(value)):
            target = dest / "webhooks-form-encoded" / event / f"{name}.txt"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(f"payload={value['payload']}", encoding="utf-8")
    return written


def json_action(form_value: dict[str, str]) -> str | None:
    action = json.loads(unquote_plus(form_value["payload"])).get("action")
    return action if isinstance(action, str) else None


def build_rest_subset(spec: dict[str, Any]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    missing: list[str] = list(NOT_IN_DESCRIPTION)
    for operation in OPERATIONS:
        method, template = operation.split(" ", 1)
        path_item = spec["paths"].get(template, {})
        if method.lower() not in path_item:
            missing.append(operation)
            continue
        kept = paths.setdefault(
            template,
            {
                k: v
                for k, v in path_item.items()
                if k not in {"get", "put", "post", "patch", "delete", "head", "options", "trace"}
            },
        )
        kept[method.lower()] = path_item[method.lower()]
    info = dict(spec["info"])
    info["x-subset"] = {
        "note": "Built by tools/fetch_github_fixtures.py: the bot's REST operations plus all of `components`.",
        "source": f"{OPENAPI_PKG} generated/api.github.com.json",
        "source_info_version": spec["info"].get("version"),
        "operations": list(OPERATIONS),
        "missing": missing,
    }
    head: dict[str, Any] = {k: spec[k] for k in ("openapi", "servers", "externalDocs", "tags") if k in spec}
    return {**head, "info": info, "paths": paths, "components": spec["components"]}


def is_complete(dest: Path) -> bool:
    try:
        stamp = json.loads((dest / STAMP).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(stamp, dict) and stamp == cache_stamp()


def cache_stamp() -> dict[str, Any]:
    """What a complete cache was built from: a cache built for another operation list or set of
    events is rebuilt, not trusted."""
    return {"packages": INTEGRITY, "operations": list(OPERATIONS), "events": sorted(EVENT_ORDER)}


def build(dest: Path) -> str:
    with tempfile.TemporaryDirectory(prefix="gh-fixtures-") as tmp:
        tarballs = npm_pack([EXAMPLES_PKG, OPENAPI_PKG], Path(tmp))
        index = read_json_member(tarballs[EXAMPLES_PKG], EXAMPLES_MEMBER)
        spec = read_json_member(tarballs[OPENAPI_PKG], OPENAPI_MEMBER)
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
        staging.chmod(0o755)
        try:
            count = build_webhooks(index, spec, staging)
            write_json(staging / "rest-api-subset.json", build_rest_subset(spec))
            write_json(staging / STAMP, cache_stamp())
            if dest.exists():
                shutil.rmtree(dest)
            staging.rename(dest)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return f"wrote {count} webhook examples and rest-api-subset.json to {dest}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST, help=f"default: {DEFAULT_DEST}")
    parser.add_argument("--force", action="store_true", help="rebuild even if the cache is complete")
    args = parser.parse_args(argv)
    dest: Path = args.dest.resolve()
    if not args.force and is_complete(dest):
        print(f"GitHub fixtures already in {dest}")
        return 0
    try:
        print(build(dest))
    except (FetchError, OSError, KeyError, ValueError, tarfile.TarError) as exc:
        print(f"GitHub fixtures not fetched ({exc}); tests that need them will be skipped.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
