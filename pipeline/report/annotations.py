"""Annotations for the Checks API, and which of them a pull request's diff touches.

Changed lines: lines added on the new side of each hunk. A file listed without a `patch` (binary, or
too large for GitHub to show) keeps all its annotations (`AllLines`), except a removed file or one
with zero changes (a pure rename), which keeps none.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from pipeline.report.check_run import TITLE_LIMIT
from pipeline.report.text import head_bytes, valid_utf8
from pipeline.results import Annotation

ANNOTATION_TEXT_LIMIT = 64000  # annotation message and raw_details ("64 KB")
MAX_ANNOTATIONS_PER_REQUEST = 50


def annotation_payload(annotation: Annotation) -> dict[str, Any]:
    """The annotation as the Checks API wants it (columns only on a single line, limits applied)."""
    a = annotation
    data: dict[str, Any] = {"path": a.path, "start_line": a.start_line, "end_line": a.end_line,
                            "annotation_level": a.annotation_level,
                            "message": head_bytes(valid_utf8(a.message), ANNOTATION_TEXT_LIMIT) or "(no message)"}
    if a.start_line == a.end_line and a.start_column is not None:
        data["start_column"] = a.start_column
        if a.end_column is not None:
            data["end_column"] = max(a.end_column, a.start_column)
    if a.title:
        data["title"] = valid_utf8(a.title)[:TITLE_LIMIT]
    if a.raw_details:
        data["raw_details"] = head_bytes(valid_utf8(a.raw_details), ANNOTATION_TEXT_LIMIT)
    return data


def annotation_batches(annotations: Iterable[Annotation], size: int = MAX_ANNOTATIONS_PER_REQUEST
                       ) -> list[list[dict[str, Any]]]:
    """Annotations as Checks API dicts, in batches of at most `size` (GitHub accepts 50 per request)."""
    if not 1 <= size <= MAX_ANNOTATIONS_PER_REQUEST:
        raise ValueError(f"size must be between 1 and {MAX_ANNOTATIONS_PER_REQUEST}")
    items = [annotation_payload(a) for a in annotations]
    return [items[i:i + size] for i in range(0, len(items), size)]


class AllLines(set[int]):
    """Every line of a file (its diff is not known): `n in AllLines()` is always true, and it is truthy;
    it holds no elements to iterate over."""

    def __contains__(self, line: object) -> bool:
        return True

    def __bool__(self) -> bool:
        return True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AllLines)

    def __ne__(self, other: object) -> bool:
        return not isinstance(other, AllLines)

    __hash__ = None

    def __repr__(self) -> str:
        return "AllLines()"


_HUNK = re.compile(r"@@ -\d+(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


def added_lines(patch: str) -> set[int]:
    """New-side line numbers of the lines a unified diff adds (or changes)."""
    lines: set[int] = set()
    line = old_left = new_left = 0
    for raw in patch.split("\n"):
        if raw.startswith("@@"):
            match = _HUNK.match(raw)
            old_left, new_left = (int(match[1] or 1), int(match[3] or 1)) if match else (0, 0)
            line = int(match[2]) if match else 0
            continue
        if old_left <= 0 and new_left <= 0:
            continue  # outside a hunk (headers, trailing text)
        if raw.startswith("+"):
            lines.add(line)
            line, new_left = line + 1, new_left - 1
        elif raw.startswith("-"):
            old_left -= 1
        elif not raw.startswith("\\"):  # context (" x", or an empty line whose space was stripped)
            line, old_left, new_left = line + 1, old_left - 1, new_left - 1
    return lines


def changed_lines(files: Iterable[Mapping[str, Any]]) -> dict[str, set[int]]:
    """Per file of the PR files API (`filename`, `patch`, `status`, `changes`), its added lines.

    No `patch` (binary or too large): `AllLines()`, unless the file was removed or has no changes.
    """
    changed: dict[str, set[int]] = {}
    for entry in files:
        name = entry.get("filename")
        if not isinstance(name, str):
            continue
        patch = entry.get("patch")
        if isinstance(patch, str):
            changed[name] = added_lines(patch)
        elif entry.get("status") == "removed" or entry.get("changes") == 0:
            changed[name] = set()
        else:
            changed[name] = AllLines()
    return changed


def _touches(annotation: Annotation, lines: set[int]) -> bool:
    if isinstance(lines, AllLines):
        return True
    span = range(annotation.start_line, annotation.end_line + 1)
    if len(span) <= len(lines):
        return any(n in lines for n in span)
    return any(n in span for n in lines)


def annotations_on_changed_lines(annotations: Iterable[Annotation],
                                 changed: Mapping[str, set[int]]) -> list[Annotation]:
    """The annotations whose line range overlaps a changed line of a file of the pull request."""
    return [a for a in annotations if a.path in changed and _touches(a, changed[a.path])]
