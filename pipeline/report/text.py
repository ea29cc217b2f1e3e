"""Text for GitHub's Markdown: output cleaned for display, cut to a byte budget, fenced so nothing can
break out, and the small formats (durations, sizes, short shas) the check run and the comment share.

Decisions:

* Sizes are measured in UTF-8 bytes. GitHub documents its limits in characters (65535 for a check
  run's summary and text, 65536 for a comment body); a byte count is never smaller than the number of
  characters or UTF-16 units, so staying under it in bytes is safe whatever GitHub counts.
* When output is too long, the TAIL is kept (the error is at the end), cut at a line boundary, and a
  line says how many lines and bytes were cut (`keep_tail`).
* Output goes into a fenced code block whose fence is one backtick longer than the longest run of
  backticks in the output (at least three), so the output can never close it early. Step names are
  shown in code spans (so `@name` in a name never notifies anyone, and `|` cannot break a table).
* Output tails given here are already masked by the caller; `clean_output` only cleans them for
  display (ANSI colours and control characters removed, CRLF and progress-bar carriage returns folded).
"""

from __future__ import annotations

import math
import re

NAME_LIMIT = 100              # step names as displayed
PASSING_TAIL_LINES = 5        # of a passing step's output, shown under it
LINE_WIDTH = 240              # characters of one output line shown on its own

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def valid_utf8(text: str) -> str:
    """Valid UTF-8 (lone surrogates from undecodable bytes become U+FFFD)."""
    return text if text.isascii() else _SURROGATE.sub("\ufffd", text)


def nbytes(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def head_bytes(text: str, limit: int) -> str:
    return text if nbytes(text) <= limit else text.encode("utf-8")[:limit].decode("utf-8", "ignore")


def tail_bytes(text: str, limit: int) -> str:
    if limit <= 0:
        return ""
    return text if nbytes(text) <= limit else text.encode("utf-8")[-limit:].decode("utf-8", "ignore")


def clean_output(text: str) -> str:
    """Output as a log viewer shows it: no ANSI escapes or control characters, `\\r\\n` -> `\\n`, and of
    a line redrawn with carriage returns (progress bars) only its last state."""
    text = _ANSI.sub("", valid_utf8(text)).replace("\r\n", "\n")
    if "\r" in text:
        text = "\n".join(line.rstrip("\r").rsplit("\r", 1)[-1] for line in text.split("\n"))
    return _CONTROL.sub("", text)


def last_lines(text: str, count: int = PASSING_TAIL_LINES, width: int = LINE_WIDTH) -> list[str]:
    """The last `count` non-blank lines of a step's output, cleaned for display and each cut to `width`
    characters: what a passing step shows of what it ran (pytest's "297 passed in 4.21s")."""
    lines = [line.rstrip() for line in clean_output(text).split("\n") if line.strip()]
    return [line if len(line) <= width else line[:width - 1] + "…" for line in lines[-count:]] if count > 0 else []


def keep_tail(text: str, limit: int) -> tuple[str, int, int]:
    """The end of `text` within `limit` bytes, from a line start when possible; with the number of
    lines (a partly cut line counts) and bytes cut."""
    if nbytes(text) <= limit:
        return text, 0, 0
    kept = tail_bytes(text, limit)
    newline = kept.find("\n")
    if 0 <= newline < len(kept) - 1 and newline < len(kept) // 2:
        kept = kept[newline + 1:]
    cut = text[:len(text) - len(kept)]
    return kept, cut.count("\n") + (0 if cut.endswith("\n") else 1), nbytes(cut)


def format_bytes(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KB"
    return f"{n / (1024 * 1024):.1f} MB"


def fence_for(text: str) -> str:
    """A backtick fence longer than any backtick run in `text` (at least three)."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def code_block(text: str, info: str = "text") -> str:
    fence = fence_for(text)
    body = text if not text or text.endswith("\n") else text + "\n"
    return f"{fence}{info}\n{body}{fence}\n"


def code_span(text: str, *, table: bool = False) -> str:
    """An inline code span that `text` cannot break out of (`table`: with `|` escaped for a table cell)."""
    text = " ".join(valid_utf8(text).split())[:NAME_LIMIT] or " "
    ticks = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    span = f"{ticks}{pad}{text}{pad}{ticks}"
    return span.replace("|", "\\|") if table else span


def table_cell(text: str) -> str:
    return " ".join(valid_utf8(text).split()).replace("|", "\\|")


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def markdown_url(url: str) -> str:
    return url.replace(" ", "%20").replace("(", "%28").replace(")", "%29")


def short_sha(sha: str) -> str:
    return sha[:7] if re.fullmatch(r"[0-9a-fA-F]{8,64}", sha) else sha
