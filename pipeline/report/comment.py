"""The sticky PR comment over a run's whole life: "Validating `abc1234`…" while the run goes on (with the
previous result in one line), then the result fitted into one screen: the title, a compact step table
(a passing validate step with the last line it printed, pytest's "297 passed in 4.21s"), each failing
step's output tail folded in `<details>`, the analysis findings (under the step that found them when
several analysis steps ran), the screenshots as links.

The sticky comment is the one whose body starts with `COMMENT_MARKER` (find it among the App's own
comments, never trust another author's). It is ONE comment: overflow is dropped from the beginning of
the longest output, replaced by "… N lines omitted …", and the tail is kept (the full log is on the
details page; extra comments would pile up on every push). A code fence cut by the dropping is closed
before the note and reopened, with the same fence and info string, after it.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass

from bot import labels
from pipeline.report.check_run import failing_steps, passing_tail, run_title
from pipeline.report.local import UNKNOWN_STEP, findings_by_step
from pipeline.report.text import (clean_output, code_block, code_span, markdown_url, nbytes, plural, short_sha,
                                  valid_utf8)
from pipeline.results import LISTED_FINDINGS, Annotation, StepResult

COMMENT_LIMIT = 65536         # issue comment body
COMMENT_MARKER = "<!-- codegenapp:validation -->"
TAIL_LINES = 60               # of each failing step's output (the whole log is on the details page)
SHOWN_STEPS = 3               # failing steps whose tail the comment shows
OPEN_FINDINGS = 10            # ... of which these show unfolded
LAST_LINE_WIDTH = 60          # characters of a passing validate step's last line, in the step table

_HEADINGS = {"success": "✓ Validation passed", "failure": "✗ Validation failed",
             "timed_out": "✗ Validation timed out", "cancelled": "Validation cancelled",
             "action_required": "Validation is waiting for a maintainer", "neutral": "Nothing was validated",
             "skipped": "Validation skipped", "stale": "Validation is stale"}
_MARKS = {"success": "✓", "failure": "✗", "timed_out": "✗"}
_STEP_MARKS = labels.STEP_MARKS
_LEVELS = {"failure": "✗", "warning": "⚠️", "notice": "ℹ️"}
_INLINE_SPECIAL = re.compile(r"([\\`*_\[\]<>|~#!&])")


@dataclass(frozen=True)
class PreviousResult:
    """How the PR's previous validation ended, for one line under the current one."""

    conclusion: str
    head_sha: str
    title: str | None = None


def comment_heading(conclusion: str) -> str:
    """"✗ Validation failed": the comment's heading for a run that ended so."""
    return _HEADINGS.get(conclusion, f"Validation: {labels.conclusion(conclusion)}")


def inline_text(text: str, limit: int = 200) -> str:
    """Plain text as Markdown inline text: one line, no Markdown or HTML of its own, at most `limit` chars."""
    text = " ".join(valid_utf8(text).split())
    if len(text) > limit:
        text = text[:limit - 1].rstrip() + "…"
    return _INLINE_SPECIAL.sub(r"\\\1", text)


def previous_line(previous: PreviousResult | None) -> str:
    """"Previous: ✗ Failed on `1234abc` — pytest failed", or "" when there was none."""
    if previous is None:
        return ""
    mark = _MARKS.get(previous.conclusion, "")
    said = f"{mark} " if mark else ""
    line = f"Previous: {said}{labels.conclusion(previous.conclusion)} on `{short_sha(previous.head_sha)}`"
    said_why = (previous.title or "").split(" — ")[0]  # "pytest failed", without "— 3 of 4 steps passed"
    return line + (f" — {inline_text(said_why, 120)}" if said_why.strip() else "")


def _footer(previous: PreviousResult | None) -> str:
    line = previous_line(previous)
    return f"\n<sub>{line}</sub>\n" if line else ""


def render_running_comment(*, head_sha: str, details_url: str | None, previous: PreviousResult | None = None) -> str:
    """The sticky comment while a run goes on (one write when the run starts; the result replaces it)."""
    follow = f"[Follow it live]({markdown_url(details_url)}): " if details_url else ""
    return (f"{COMMENT_MARKER}\n### Validating `{short_sha(head_sha)}`…\n\n"
            f"{follow}this comment shows the result when the run ends.\n{_footer(previous)}")


def render_not_run_comment(heading: str, text: str, *, previous: PreviousResult | None = None) -> str:
    """The sticky comment of a head whose code did not run (waiting for `/ok-to-test`, an invalid config):
    `heading` and why, in Markdown."""
    return f"{COMMENT_MARKER}\n### {heading}\n\n{text.strip()}\n{_footer(previous)}"


def _last_line(step: StepResult) -> str:
    """The last line a passing validate step printed, without a rule's `=` or `-` around it and cut to
    LAST_LINE_WIDTH ("297 passed in 4.21s"); "" for any other step."""
    lines = passing_tail(step, 1) if step.stage == "validate" else []
    line = (lines[0].strip(" =-") or lines[0].strip()) if lines else ""
    return line if len(line) <= LAST_LINE_WIDTH else line[:LAST_LINE_WIDTH - 1] + "…"


def _step_cell(step: StepResult) -> str:
    name = code_span(step.name, table=True)
    if step.status == "passed":
        last = _last_line(step)  # in a code span: output never mentions anyone (`@types/node`) or links
        return f"{name} · {code_span(last, table=True)}" if last else name
    if step.status == "failed":
        what = "failed" + (f" (exit {step.exit_code})" if step.exit_code is not None else "")
    else:
        what = {"timed_out": "timed out", "restored": "restored from a snapshot"}.get(step.status, step.status)
    detail = f": {inline_text(step.detail, 100)}" if step.detail and step.status in ("failed", "timed_out") else ""
    return f"{name} {what}{detail}"


def compact_step_table(steps: Sequence[StepResult]) -> str:
    """| ✓ | `pytest` | 1m 12s |: a mark, the step (and what went wrong), its duration."""
    rows = ["| | Step | Duration |", "| :-: | --- | --: |"]
    for step in steps:
        took = "—" if step.status == "skipped" else labels.duration(step.duration_seconds)
        rows.append(f"| {_STEP_MARKS[step.status]} | {_step_cell(step)} | {took} |")
    return "\n".join(rows) + "\n"


def _last_lines(text: str, count: int) -> tuple[str, int]:
    """The last `count` lines of `text` and how many lines were left out before them."""
    lines = text.split("\n")
    return "\n".join(lines[-count:]), max(0, len(lines) - count)


def _failing_tail(step: StepResult) -> str:
    output = clean_output(step.output_tail).rstrip("\n")
    kept, cut = _last_lines(output, TAIL_LINES)
    what = "timed out" if step.status == "timed_out" else "cancelled" if step.status == "cancelled" else "failed"
    which = f"last {plural(TAIL_LINES, 'line')}" if cut else "output"
    name = html.escape(" ".join(step.name.split())[:100])
    summary = f"{_STEP_MARKS[step.status]} <code>{name}</code> {what}: {which}"
    inside = code_block(kept) if kept.strip() else "*(no output)*\n"
    note = f"*{valid_utf8(step.note).strip()}*\n\n" if step.note.strip() else ""  # e.g. no network here
    return f"{note}<details>\n<summary>{summary}</summary>\n\n{inside}\n</details>\n"


def _finding(annotation: Annotation) -> str:
    where = code_span(f"{annotation.path}:{annotation.start_line}")
    rule = f" {code_span(annotation.title)}" if annotation.title else ""
    return f"- {_LEVELS[annotation.annotation_level]} {where}{rule} {inline_text(annotation.message, 160)}\n"


def _findings_group(findings: Sequence[Annotation], step: str, room: int) -> str:
    """One step's findings (`step`: its name, or "" to leave it unsaid), failures first: the first few
    shown, up to `room` in all (the rest folded), then a count of the others."""
    order = sorted(findings, key=lambda f: (list(_LEVELS).index(f.annotation_level), f.path, f.start_line))
    listed = order[:max(room, 0)]
    shown, folded = listed[:OPEN_FINDINGS], listed[OPEN_FINDINGS:]
    counts = [(level, sum(f.annotation_level == level for f in findings)) for level in _LEVELS]
    words = {"failure": "failing the check", "warning": "warning", "notice": "notice"}
    split = "" if max(n for _, n in counts) == len(findings) else \
        " (" + ", ".join(f"{n} {words[level]}" if level == "failure" else plural(n, words[level])
                         for level, n in counts if n) + ")"
    whose = f"{code_span(step)}: " if step else ""
    parts = [f"**{whose}{plural(len(findings), 'finding')} on changed lines**{split}\n\n", *map(_finding, shown)]
    if folded:
        parts.append(f"\n<details>\n<summary>{plural(len(folded), 'more finding')}</summary>\n\n"
                     + "".join(map(_finding, folded)) + "\n</details>\n")
    if len(order) > len(listed):
        parts.append(f"\n*… and {len(order) - len(listed)} more in the check run's annotations.*\n")
    return "".join(parts)


def findings_section(findings: Sequence[Annotation], steps: Sequence[StepResult] = ()) -> str:
    """The analysis findings on the changed lines, under the step that found them (named when several
    analysis steps ran), failures first: up to LISTED_FINDINGS in all, then a count of the others."""
    if not findings:
        return ""
    ran = [s.name for s in steps if s.stage == "analysis" and s.status != "skipped"]
    groups = findings_by_step(steps, findings)
    named = len(ran) > 1 or len(groups) > 1
    order = sorted(groups, key=lambda name: ran.index(name) if name in ran else len(ran))
    parts, room = [], LISTED_FINDINGS
    for step in order:
        parts.append(_findings_group(groups[step], step if named and step != UNKNOWN_STEP else "", room))
        room -= min(room, len(groups[step]))
    return "\n".join(parts)


def render_comment(steps: Sequence[StepResult], *, head_sha: str, conclusion: str,
                   check_run_url: str | None = None, details_url: str | None = None, notes: Sequence[str] = (),
                   reason: str | None = None, timeout_minutes: int | None = None,
                   screenshots: Sequence[tuple[str, str]] = (), findings: Sequence[Annotation] = (),
                   previous: PreviousResult | None = None) -> str:
    """The sticky comment's body when the run ended (starts with COMMENT_MARKER); fit it into one
    comment with `fit_comment`."""
    title = run_title(steps, conclusion, reason, timeout_minutes, fmt=code_span)
    links = [("check run", check_run_url), ("details and full log", details_url)]
    lead = " · ".join([title, f"commit `{short_sha(head_sha)}`",
                       *(f"[{text}]({markdown_url(url)})" for text, url in links if url)])
    parts = [f"{COMMENT_MARKER}\n### {comment_heading(conclusion)}\n\n{lead}\n"]
    parts.append(compact_step_table(steps) if steps else "No steps ran.\n")
    # An analysis step failed by its findings says why in the findings list, not in its output.
    failing = [s for s in failing_steps(steps)
               if not (findings and s.stage == "analysis" and s.exit_code is None)]
    parts += [_failing_tail(step) for step in failing[:SHOWN_STEPS]]
    if len(failing) > SHOWN_STEPS:
        parts.append(f"*{plural(len(failing) - SHOWN_STEPS, 'more failing step')}: see the details page.*\n")
    if findings:
        parts.append(findings_section(findings, steps))
    if kept := [n for n in notes if n and n.strip()]:  # "*" bullets: not one list with the findings' "-"
        parts.append("".join(f"* {valid_utf8(n).strip()}\n" for n in kept))
    if screenshots:
        shots = " · ".join(f"[{code_span(page)}]({markdown_url(url)})" for page, url in screenshots)
        parts.append(f"Screenshots: {shots}\n")
    return "\n".join(parts) + _footer(previous)


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


QUEUE_LINE_START, QUEUE_LINE_END = "<!-- codegenapp:queue -->", "<!-- /codegenapp:queue -->"


def with_queue_line(body: str, line: str | None) -> str:
    """The sticky comment `body` with its one merge queue line set to `line` (None: removed), kept at the end."""
    start = body.find(QUEUE_LINE_START)
    end = body.find(QUEUE_LINE_END, start)
    if start != -1 and end != -1:
        body = (body[:start] + body[end + len(QUEUE_LINE_END):]).rstrip("\n") + "\n"
    return body if line is None else f"{body.rstrip()}\n\n{QUEUE_LINE_START}{line}{QUEUE_LINE_END}\n"
