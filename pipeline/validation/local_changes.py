"""The lines a local commit changed since a base, as a pull request's files API would give them (pure):
`codegenapp validate --base REF` keeps only the SARIF findings on these lines, as on a PR.

Input: `git diff -U0 -M --no-color --no-ext-diff --no-textconv --src-prefix=a/ --dst-prefix=b/ MERGE_BASE
COMMIT`. A file is named by its `+++ b/<path>` line, which git C-quotes when the path has special or
non-ASCII bytes (`+++ "b/na\\303\\257ve.py"`) and ends with a tab when it holds a space. A file without
that line (deleted, a pure rename, a mode change, binary) gets no changed lines.
"""

from __future__ import annotations

import os

from pipeline.report.annotations import added_lines

_C_ESCAPES = {ord("a"): 7, ord("b"): 8, ord("t"): 9, ord("n"): 10, ord("v"): 11, ord("f"): 12, ord("r"): 13,
              ord('"'): ord('"'), ord("\\"): ord("\\")}


def unquote_path(raw: bytes) -> bytes:
    """A path as git prints it in a diff header, C-quoted or not, back to its bytes."""
    if not (len(raw) >= 2 and raw.startswith(b'"') and raw.endswith(b'"')):
        return raw
    out = bytearray()
    body, i = raw[1:-1], 0
    while i < len(body):
        if body[i] == ord("\\") and i + 1 < len(body):
            if body[i + 1:i + 4].isdigit():
                out.append(int(body[i + 1:i + 4], 8) & 0xFF)
                i += 4
                continue
            out.append(_C_ESCAPES.get(body[i + 1], body[i + 1]))
            i += 2
            continue
        out.append(body[i])
        i += 1
    return bytes(out)


def changed_lines_of_diff(diff: bytes) -> dict[str, set[int]]:
    """Per path (decoded as the file system does), the new-side lines the diff adds or changes."""
    changed: dict[str, set[int]] = {}
    path: str | None = None
    hunks: list[bytes] = []

    def finish() -> None:
        if path is not None:
            changed[path] = added_lines(b"\n".join(hunks).decode("utf-8", "replace"))

    for line in diff.split(b"\n"):
        if line.startswith(b"diff --git "):
            finish()
            path, hunks = None, []
        elif line.startswith(b"+++ ") and not hunks:
            name = unquote_path(line[4:].removesuffix(b"\t"))
            path = os.fsdecode(name[2:]) if name.startswith(b"b/") else None
        elif path is not None:
            hunks.append(line)
    finish()
    return changed
