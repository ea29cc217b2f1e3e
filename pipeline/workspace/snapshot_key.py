"""The key of a setup snapshot (pipeline/workspace/snapshots.py): what determines setup's output, hashed.
Pure apart from reading the tracked files the cache-key globs select.

**Key** (`snapshot_key`): sha256 over a canonical JSON of the tool version, the scope, the setup
commands (in order), the non-secret env (sorted), the cache-key globs (sorted, deduplicated) and, for
every *tracked* file matching one of them (sorted by path), its path and the sha256 of its content.
 - `scope` separates trust levels: the caller passes e.g. `"<project id>:trusted"` / `"<project id>:fork"`
   so a fork PR's setup can never produce a snapshot that a trusted PR (which gets secrets) restores.
 - The files are read from the workspace *before* setup runs: compute the key right after checkout.
   Tracked symlinks are hashed by their target text (never followed); other non-regular files by type.
 - Never pass secrets in `env`: they would end up hashed in a file name. Put the toolchain identity
   (e.g. the host's python3 / node version, OS release) into `tool_version`: a venv's `bin/python` is
   an absolute symlink to `/usr/bin/python3` and breaks when the host upgrades it.
 - The caller runs setup after every restore (pipeline/validation/stages.py): a snapshot is a warm
   start, and setup brings it up to date with the commit (rebuilds a compiled extension, reinstalls the
   project). What re-running setup cannot undo is what the key must cover: a dependency the commit
   dropped stays installed in a restored venv or node_modules. So the globs name the dependency files;
   a config without `cache_key` gets `DEFAULT_CACHE_KEY`, the usual manifests and lock files.

**Glob semantics** (gitignore-like, matched against the tracked paths, POSIX separators): a pattern
without a slash (other than a trailing one) matches a name at any depth (`requirements*.txt` matches
`requirements.txt` and `svc/requirements-dev.txt`); a pattern with a leading or inner slash is
anchored at the repository root (`/package.json`, `web/package.json`); `*` and `?` never match `/`,
`[...]` is a character class (`[!...]` negated); `**` as a whole segment matches any number of
directories (`**/x`, `a/**/b`, `a/**`); a pattern matching a directory matches every file below it; a
trailing `/` matches directories only. Negation (`!pattern`) is not supported (ValueError).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import stat
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

from pipeline.workspace.trees import DIR_FLAGS, READ_FLAGS, DirChain

FORMAT_VERSION = 1  # part of every key and of the store's metadata: bump it when snapshots change shape
DEFAULT_CACHE_KEY = (
    "requirements*.txt", "constraints*.txt", "pyproject.toml", "setup.py", "setup.cfg", "Pipfile.lock",
    "poetry.lock", "uv.lock", "package.json", "package-lock.json", "npm-shrinkwrap.json", "yarn.lock",
    "pnpm-lock.yaml", "Gemfile.lock", "go.sum", "Cargo.lock", "composer.lock",
)
_HASH_CHUNK = 1 << 20


def compile_globs(patterns: Sequence[str]) -> re.Pattern[str] | None:
    """One regex matching a POSIX relative path that any of the gitignore-like `patterns` matches
    (semantics in the module docstring); None when there are no patterns."""
    parts = [_glob_regex(p) for p in sorted(set(patterns))]
    return re.compile("|".join(f"(?:{p})" for p in parts)) if parts else None


def _glob_regex(pattern: str) -> str:
    p = pattern.strip()
    dir_only = p.endswith("/")
    body = p.rstrip("/")
    anchored = "/" in body
    segments = [s for s in body.lstrip("/").split("/") if s]
    if not segments or p.startswith("!"):
        raise ValueError(f"unsupported glob {pattern!r} (negation and empty patterns are not supported)")
    out = "" if anchored else "(?:.*/)?"
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if seg == "**":
            out += ".*" if last else "(?:.*/)?"
        else:
            out += _segment_regex(seg) + ("" if last else "/")
    if segments[-1] == "**":
        return "^" + out + "$" if not dir_only else "^" + out + "/.*$"
    return "^" + out + ("/.*$" if dir_only else "(?:/.*)?$")


def _segment_regex(seg: str) -> str:
    out, i, n = [], 0, len(seg)
    while i < n:
        c = seg[i]
        i += 1
        if c == "*":
            while i < n and seg[i] == "*":
                i += 1
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "\\" and i < n:
            out.append(re.escape(seg[i]))
            i += 1
        elif c == "[":
            j = i
            if j < n and seg[j] in "!^":
                j += 1
            if j < n and seg[j] == "]":
                j += 1
            while j < n and seg[j] != "]":
                j += 1
            if j >= n:
                out.append(re.escape(c))
                continue
            inner = seg[i:j]
            i = j + 1
            neg = inner[:1] in ("!", "^")
            inner = inner[1:] if neg else inner
            inner = "".join("\\" + ch if ch in "\\[]&~|^" else ch for ch in inner if ch != "/")
            out.append(("[^/" if neg else "[") + inner + "]")
        else:
            out.append(re.escape(c))
    return "".join(out)


def normalise_tracked(tracked_files: Collection[str]) -> set[str]:
    out = set()
    for path in tracked_files:
        path = path.strip("/")
        while path.startswith("./"):
            path = path[2:]
        if path:
            out.add(path)
    return out


def snapshot_key(*, scope: str, setup_commands: Sequence[str], env: Mapping[str, str], workspace: Path,
                 cache_key_globs: Sequence[str], tracked_files: Collection[str], tool_version: str = "1") -> str:
    """sha256 hex of what determines setup's output (see the module docstring). Reads the tracked files
    matching `cache_key_globs` from `workspace`: call it right after checkout, before setup runs.
    Blocking file I/O (small files); wrap it in asyncio.to_thread if the files can be large."""
    matcher = compile_globs(cache_key_globs)
    files: list[list[str]] = []
    if matcher is not None:
        selected = sorted(p for p in normalise_tracked(tracked_files) if matcher.match(p))
        root_fd = os.open(workspace, DIR_FLAGS)
        chain = DirChain(root_fd)
        try:
            for path in selected:
                files.append([path, _digest_tracked(chain, path)])
        finally:
            chain.close()
            os.close(root_fd)
    canonical = {
        "format": FORMAT_VERSION,
        "tool_version": tool_version,
        "scope": scope,
        "setup_commands": list(setup_commands),
        "env": sorted([str(k), str(v)] for k, v in env.items()),
        "cache_key_globs": sorted(set(cache_key_globs)),
        "files": files,
    }
    data = json.dumps(canonical, ensure_ascii=True, separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(data.encode("ascii")).hexdigest()


def _digest_tracked(chain: DirChain, path: str) -> str:
    parts = path.split("/")
    try:
        dir_fd = chain.get(parts[:-1])
        st = os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False)
    except OSError as exc:
        return f"missing:{errno.errorcode.get(exc.errno, exc.errno)}"
    if stat.S_ISLNK(st.st_mode):
        target = os.readlink(parts[-1], dir_fd=dir_fd)
        return "symlink:" + hashlib.sha256(os.fsencode(target)).hexdigest()
    if not stat.S_ISREG(st.st_mode):
        return f"type:{stat.S_IFMT(st.st_mode):o}"
    h = hashlib.sha256()
    fd = os.open(parts[-1], READ_FLAGS, dir_fd=dir_fd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return "type:changed"
        while chunk := os.read(fd, _HASH_CHUNK):
            h.update(chunk)
    finally:
        os.close(fd)
    return "sha256:" + h.hexdigest()
