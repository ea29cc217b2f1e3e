"""The sticky PR comment: the check run's title, summary and failing output, fitted into one comment.

The sticky comment is the one whose body starts with `COMMENT_MARKER` (find it among the App's own
comments, never trust another author's). It is ONE comment: overflow is dropped from the beginning of
the longest output, replaced by "… N lines omitted …", and the tail is kept (the full log is on the
details page; extra comments would pile up on every push). A code fence cut by the dropping is closed
before the note and reopened, with the same fence and info string, after it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.report.check_run import failure_text, run_summary, run_title
from pipeline.report.text import code_span, nbytes, plural, valid_utf8
from pipeline.results import StepResult

COMMENT_LIMIT = 65536         # issue comment body
COMMENT_TEXT_CAP = 1024 * 1024  # failing output rendered into a comment body, before fitting
COMMENT_MARKER = "<!-- codegenapp:validation -->"

_HEADINGS = {"success": "Validation passed", "failure": "Validation failed", "cancelled": "Validation cancelled",
             "timed_out": "Validation timed out", "action_required": "Validation is waiting for a maintainer",
             "neutral": "Nothing was validated", "skipped": "Validation skipped", "stale": "Validation is stale"}


def render_comment(steps: Sequence[StepResult], *, head_sha: str, conclusion: str,
                   check_run_url: str | None = None, details_url: str | None = None, notes: Sequence[str] = (),
                   reason: str | None = None, timeout_minutes: int | None = None,
                   screenshots: Sequence[tuple[str, str]] = ()) -> str:
    """The sticky comment's body (starts with COMMENT_MARKER). Its failing output is capped at
    COMMENT_TEXT_CAP (1 MiB, to keep fitting cheap); fit it into one comment with `fit_comment`."""
    title = run_title(steps, conclusion, reason, timeout_minutes, fmt=code_span)
    links = [("check run", check_run_url), ("details and full log", details_url)]
    summary = run_summary(steps, head_sha, links, notes, lead=title, screenshots=screenshots)
    body = f"{COMMENT_MARKER}\n### {_HEADINGS[conclusion]}\n\n{summary}"
    text = failure_text(steps, COMMENT_TEXT_CAP)
    return body + ("\n" + text if text else "")


_Fence = tuple[str, str]  # (fence, info string)
_FENCE_LINE = re.compile(r" {0,3}(`{3,}|~{3,})(.*)")


@dataclass(frozen=True)
class _Item:
    text: str
    before: _Fence | None  # the open fence before this line
    after: _Fence | None   # ... and after it
    note: bool = False     # an "… N lines omitted …" line


def _scan(body: str, chunk: int) -> list[_Item]:
    """The body's lines with their fence state; lines longer than `chunk` bytes split into pieces."""
    items: list[_Item] = []
    state: _Fence | None = None
    lines = body.split("\n")
    for number, line in enumerate(lines):
        if number < len(lines) - 1:
            line += "\n"
        elif not line:
            break
        stripped = line.rstrip("\r\n")
        before = state
        match = _FENCE_LINE.fullmatch(stripped) if len(stripped) <= 1000 else None
        if match and state is None and not (match[1][0] == "`" and "`" in match[2]):
            state = (match[1], match[2])
        elif match and state is not None and match[1][0] == state[0][0] and len(match[1]) >= len(state[0]) \
                and not match[2].strip():
            state = None
        if nbytes(line) <= chunk:
            items.append(_Item(line, before, state))
            continue
        pieces = _pieces(line, chunk)
        items += [_Item(p, before, before) for p in pieces[:-1]] + [_Item(pieces[-1], before, state)]
    return items


def _pieces(text: str, chunk: int) -> list[str]:
    data = text.encode("utf-8")
    pieces, start = [], 0
    while start < len(data):
        end = min(start + chunk, len(data))
        while end < len(data) and (data[end] & 0xC0) == 0x80:  # not inside a character
            end -= 1
        pieces.append(data[start:end].decode("utf-8"))
        start = end
    return pieces


def _open(fence: _Fence) -> str:
    return f"{fence[0]}{fence[1]}\n"


def _close(fence: _Fence, text_so_far_ends_with_newline: bool) -> str:
    return ("" if text_so_far_ends_with_newline else "\n") + f"{fence[0]}\n"


def _omitted(dropped: Sequence[_Item]) -> int:
    complete = sum(item.text.endswith("\n") for item in dropped)
    return complete + (0 if dropped[-1].text.endswith("\n") else 1)


def _drop(items: list[_Item], start: int, count: int) -> list[_Item]:
    """`items` without items[start:start+count], replaced by an "… N lines omitted …" line (and whatever
    fence lines keep the fence state right)."""
    if count <= 0:
        return items
    dropped = items[start:start + count]
    before = items[start].before
    after = items[start + count].before if start + count < len(items) else dropped[-1].after
    note = f"… {plural(_omitted(dropped), 'line')} omitted …\n"
    inserted = [_Item(note if before else f"*{note.rstrip()}*\n\n", before, before, note=True)]
    if before != after:
        if before is not None:
            inserted.append(_Item(f"{before[0]}\n", before, None))
        if after is not None:
            inserted.append(_Item(_open(after), None, after))
    return items[:start] + inserted + items[start + count:]


def _blocks(items: Sequence[_Item]) -> list[tuple[int, int]]:
    """(start, length) of each run of lines inside a fence (the output blocks) not trimmed yet, largest
    first."""
    runs: list[tuple[int, int]] = []
    i = 0
    while i < len(items):
        if items[i].before is not None and items[i].after == items[i].before and not items[i].note:
            j = i
            while j < len(items) and items[j].before == items[i].before and items[j].after == items[i].before:
                j += 1
            runs.append((i, j - i))
            i = j
        else:
            i += 1
    return sorted(runs, key=lambda r: -sum(nbytes(items[k].text) for k in range(r[0], r[0] + r[1])))


def _join(items: Sequence[_Item], limit: int) -> str | None:
    """The comment holding `items` when it fits in `limit` bytes, else None (a fence still open after
    the last item is closed)."""
    head = f"{COMMENT_MARKER}\n" + (_open(items[0].before) if items and items[0].before else "")
    size = nbytes(head)
    for index, item in enumerate(items):
        cost = nbytes(item.text)
        closing = nbytes(_close(item.after, item.text.endswith("\n"))) if item.after else 0
        if index and size + cost + closing > limit:
            return None
        size += cost
    last = items[-1] if items else None
    closing = _close(last.after, last.text.endswith("\n")) if last is not None and last.after is not None else ""
    return head + "".join(item.text for item in items) + closing


def _fewest_dropped(items: list[_Item], start: int, length: int, limit: int) -> int:
    """The smallest count of lines to drop from items[start:] so that the body fits (or `length`)."""
    low, high = 0, length
    while low < high:
        middle = (low + high) // 2
        if _join(_drop(items, start, middle), limit) is not None:
            high = middle
        else:
            low = middle + 1
    return low


def fit_comment(body: str, limit: int = COMMENT_LIMIT) -> str:
    """The comment for `body`: starting with COMMENT_MARKER, at most `limit` bytes.

    When the body is too long, lines are dropped from the beginning of the largest code block (then the
    next largest, then from the top of the body), keeping the tail, and "… N lines omitted …" says where.
    """
    body = valid_utf8(body).removeprefix(COMMENT_MARKER).removeprefix("\n")
    fences = [len(m[1]) + len(m[2]) for m in re.finditer(r"(?m)^ {0,3}(`{3,}|~{3,})(.*)$", body) if len(m[0]) <= 1000]
    overhead = nbytes(f"{COMMENT_MARKER}\n") + 2 * (max(fences, default=0) + 2) + 64
    chunk = min(limit - overhead, max(256, limit // 4))
    if chunk < 16:
        raise ValueError(f"limit {limit} is too small")
    items = _scan(body, chunk)
    comment = _join(items, limit)
    while comment is None and (blocks := _blocks(items)):
        start, length = blocks[0]
        items = _drop(items, start, _fewest_dropped(items, start, length, limit))
        comment = _join(items, limit)
    if comment is None:
        items = _drop(items, 0, _fewest_dropped(items, 0, len(items), limit))
        comment = _join(items, limit)
    assert comment is not None
    return comment
