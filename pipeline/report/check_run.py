"""The check run's output: its conclusion and title, the summary (a table of the steps, links, notes,
screenshots), the failing steps' output in `text` and, after it, the last lines of each passing validate
or analysis step (pytest's "297 passed", folded in `<details>`) with an analysis step's findings, and
the output shown while the run goes on. The PR
comment (comment.py) shows the same title and a compact form of the rest. Durations read as GitHub
Actions writes them (bot.labels.duration: "1m 12s").

Results read as a word with a simple mark: "✓ passed", "✗ failed (exit 1)", "✗ timed out",
"cancelled", "skipped", "✓ restored". Pure functions of plain data (pipeline/results.py), no I/O.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Iterable, Sequence

from bot import labels
from pipeline.report.local import findings_by_step
from pipeline.report.text import (PASSING_TAIL_LINES, clean_output, code_block, code_span, fence_for, format_bytes,
                                  head_bytes, keep_tail, last_lines, markdown_url, nbytes, plural, short_sha,
                                  table_cell, tail_bytes, valid_utf8)
from pipeline.results import CONCLUSIONS, STAGES, Annotation, StepResult

OUTPUT_LIMIT = 65535          # check run output summary and text
TITLE_LIMIT = 255             # check run output title and annotation title
MAX_TEXT_SECTIONS = 10        # failing steps whose output is shown in the check run's text
LIVE_TAIL_CHARS = 8 * 1024  # of a running step's output, kept for the validation page
PASSING_TEXT_LIMIT = 16 * 1024  # of `text`, for the passing steps' last lines (the failing output has the rest)
PASSING_FINDINGS = 20         # of a passing analysis step's findings listed under it (all are annotations)
SUMMARY_LINE_WIDTH = 100      # characters of the last line shown in a passing step's <details> summary

_OK = ("passed", "restored")
_BAD = ("failed", "timed_out")


# --- conclusion and title ------------------------------------------------------------------------

def superseded_reason(new_sha: str) -> str:
    """The `reason` for a run cancelled by a newer push: "superseded by abc1234"."""
    return f"superseded by {short_sha(new_sha)}"


def conclusion_for(steps: Sequence[StepResult], *, cancelled: bool = False, timed_out: bool = False,
                   action_required: bool = False) -> str:
    """action_required > cancelled > timed_out > failure > neutral (no step passed) > success."""
    statuses = {s.status for s in steps}
    if action_required:
        return "action_required"
    if cancelled:
        return "cancelled"
    if timed_out or "timed_out" in statuses:
        return "timed_out"
    if "failed" in statuses:
        return "failure"
    if "cancelled" in statuses:
        return "cancelled"
    if "passed" not in statuses:
        return "neutral"
    return "success"


def _plain_name(name: str) -> str:
    return " ".join(name.split())[:60]


def _failed_title(steps: Sequence[StepResult], fmt: Callable[[str], str]) -> str:
    """"pytest failed", "npm ci failed in setup", "ruff: 3 findings on changed lines" (an analysis step
    that failed on its findings), "a and b failed", "a and 2 more failed"."""
    if len(steps) == 1:
        stage = steps[0].stage
        if stage == "analysis" and steps[0].exit_code is None and steps[0].detail:
            return f"{fmt(steps[0].name)}: {steps[0].detail}"  # failed on its findings: "ruff: 3 findings on …"
        return f"{fmt(steps[0].name)} failed" + (f" in {stage}" if stage not in ("validate", "ui") else "")
    if len(steps) == 2:
        return f"{fmt(steps[0].name)} and {fmt(steps[1].name)} failed"
    return f"{fmt(steps[0].name)} and {len(steps) - 1} more failed"


def run_title(steps: Sequence[StepResult], conclusion: str, reason: str | None, timeout_minutes: int | None,
              fmt: Callable[[str], str] = _plain_name) -> str:
    if conclusion not in CONCLUSIONS:
        raise ValueError(f"conclusion must be one of {CONCLUSIONS}, got {conclusion!r}")
    ok = sum(s.status in _OK for s in steps)
    skipped = sum(s.status == "skipped" for s in steps)
    counted = f"{ok} of {len(steps)} steps passed"
    if conclusion == "success":
        if not steps:
            return reason or "Nothing ran"
        passed = [s for s in steps if s.status in _OK]
        first = f"{fmt(passed[0].name)} passed" if len(passed) == 1 else f"All {ok} steps passed"
        return first + (f" ({skipped} skipped)" if skipped else "")
    if conclusion == "failure":
        failed = [s for s in steps if s.status in _BAD]
        return f"{_failed_title(failed, fmt)} — {counted}" if failed else f"{reason or 'Failed'} — {counted}"
    if conclusion == "cancelled":
        return f"Cancelled: {reason}" if reason else "Cancelled"
    if conclusion == "timed_out":
        late = [s for s in steps if s.status == "timed_out"] or [s for s in steps if s.status != "skipped"]
        title = f"Timed out in {late[0].stage if late else 'the run'}"
        return title + (f" after {timeout_minutes} min" if timeout_minutes else "")
    if conclusion == "action_required":
        return f"Waiting for a maintainer: {reason or '/ok-to-test'}"
    if conclusion == "neutral":
        return reason or ("Nothing to validate" if not steps else counted)
    return reason or labels.conclusion(conclusion)


# --- step table ----------------------------------------------------------------------------------

_RESULT_WORDS = {"passed": "✓ passed", "failed": "✗ failed", "timed_out": "✗ timed out",
                 "cancelled": "cancelled", "skipped": "skipped", "restored": "✓ restored"}


def result_word(step: StepResult) -> str:
    word = _RESULT_WORDS[step.status]
    if step.status == "failed" and step.exit_code is not None:
        word += f" (exit {step.exit_code})"
    return word


def _row(stage: str, name: str, result: str, duration: str) -> str:
    return f"| {stage} | {code_span(name, table=True)} | {table_cell(result)} | {duration} |"


def step_table(steps: Sequence[StepResult], current: tuple[str, str] | None = None) -> str:
    """The Markdown table of steps; `current` = (stage, name) adds a "running…" row."""
    rows = ["| Stage | Step | Result | Duration |", "| --- | --- | --- | --- |"]
    for s in steps:
        result = result_word(s) + (f" — {s.detail}" if s.detail else "")
        duration = "—" if s.status == "skipped" else labels.duration(s.duration_seconds)
        rows.append(_row(s.stage, s.name, result, duration))
    if current is not None:
        rows.append(_row(table_cell(current[0]) or "…", current[1], "running…", "—"))
    return "\n".join(rows) + "\n"


def run_summary(steps: Sequence[StepResult], head_sha: str | None, links: Sequence[tuple[str, str | None]],
                notes: Iterable[str], current: tuple[str, str] | None = None, lead: str = "",
                screenshots: Sequence[tuple[str, str]] = (), elapsed: float | None = None) -> str:
    """`elapsed`: while the run goes on, how long it has been running (the finished steps' total would
    leave out the running one)."""
    first = [lead] if lead else []
    if head_sha:
        first.append(f"{'commit' if lead else 'Commit'} `{short_sha(table_cell(head_sha).replace('`', ''))}`")
    first += [f"[{text}]({markdown_url(url)})" for text, url in links if url]
    parts = [" · ".join(first) + "\n"] if first else []
    if steps or current:
        parts.append(step_table(steps, current))
        total = sum(s.duration_seconds for s in steps if math.isfinite(s.duration_seconds))
        if current is not None:
            if elapsed is not None:
                parts.append(f"Running for {labels.duration(elapsed)}\n")
        elif steps:
            parts.append(f"Total time: {labels.duration(total)}\n")
    else:
        parts.append("No steps ran.\n")
    notes = [n for n in notes if n and n.strip()]
    if notes:
        parts.append("".join(f"- {valid_utf8(n).strip()}\n" for n in notes))
    if screenshots:
        shots = " · ".join(f"[{code_span(page)}]({markdown_url(url)})" for page, url in screenshots)
        parts.append(f"Screenshots: {shots}\n")
    return "\n".join(parts)


def check_run_images(screenshots: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    """`output.images` of the check run: GitHub shows them inline (it must be able to fetch the URLs)."""
    return [{"alt": f"Screenshot of {_plain_name(page)}", "image_url": url, "caption": _plain_name(page)}
            for page, url in screenshots]


def _fit_head(text: str, limit: int) -> str:
    """`text` within `limit` bytes, keeping the beginning (for summaries, whose table starts at the top)."""
    if nbytes(text) <= limit:
        return text
    note = "\n\n*… the rest of this summary ({}) was cut to fit GitHub's limit.*\n"
    head = head_bytes(text, limit - nbytes(note) - 20)
    head = head[:head.rfind("\n") + 1] or head
    return head + note.format(format_bytes(nbytes(text) - nbytes(head)))


# --- output sections -----------------------------------------------------------------------------

def _section_header(step: StepResult, live: bool = False) -> str:
    if live:
        return f"### Live output of {code_span(step.name)} ({step.stage})\n\n"
    what = {"failed": "failed" + (f" with exit code {step.exit_code}" if step.exit_code is not None else ""),
            "timed_out": "timed out", "cancelled": "was cancelled"}.get(step.status, step.status)
    note = f"*{valid_utf8(step.note).strip()}*\n\n" if step.note.strip() else ""  # e.g. no network here
    return f"### {code_span(step.name)} ({step.stage}) {what}\n\n{note}"


def _cut_note(lines: int, size: int) -> str:
    return f"*{plural(lines, 'earlier line')} ({format_bytes(size)}) cut — the end of the output follows.*\n\n"


_NOTE_RESERVE = 120  # bytes for a cut note


def _sections(steps: Sequence[StepResult], limit: int | None, live: bool = False) -> str:
    """Each step's header and output tail in a code block; with `limit`, fitted within it (tails kept,
    shared fairly: short outputs whole, the rest split evenly)."""
    outputs = [clean_output(s.output_tail).rstrip("\n") for s in steps]
    headers = [_section_header(s, live) for s in steps]
    if limit is None:
        return "\n".join(h + (code_block(o) if o else "*(no output)*\n")
                         for h, o in zip(headers, outputs, strict=True))
    overheads = [nbytes(h) + 2 * len(fence_for(o)) + 12 + _NOTE_RESERVE
                 for h, o in zip(headers, outputs, strict=True)]
    budgets = _share([nbytes(o) for o in outputs], limit - sum(overheads) - len(steps))
    blocks = []
    for header, output, budget in zip(headers, outputs, budgets, strict=True):
        kept, lines, size = keep_tail(output, max(budget, 0))
        note = _cut_note(lines, size) if lines else ""
        blocks.append(header + note + (code_block(kept) if kept else "*(no output)*\n"))
    return tail_bytes("\n".join(blocks), limit)


def _share(sizes: Sequence[int], total: int) -> list[int]:
    """Split `total` among items wanting `sizes`: small ones get what they want, the rest equal shares."""
    budgets = [0] * len(sizes)
    remaining = max(total, 0)
    order = sorted(range(len(sizes)), key=lambda i: sizes[i])
    for done, i in enumerate(order):
        budgets[i] = min(sizes[i], remaining // (len(sizes) - done))
        remaining -= budgets[i]
    return budgets


def failing_steps(steps: Sequence[StepResult]) -> list[StepResult]:
    """The steps whose output a report shows: the failed and timed-out ones (else the cancelled ones
    that said something)."""
    bad = [s for s in steps if s.status in _BAD]
    return bad or [s for s in steps if s.status == "cancelled" and s.output_tail]


def failure_text(steps: Sequence[StepResult], limit: int | None) -> str:
    failing = failing_steps(steps)
    shown, hidden = failing[:MAX_TEXT_SECTIONS], failing[MAX_TEXT_SECTIONS:]
    tail = f"\n*{plural(len(hidden), 'more failing step')}: see the table.*\n" if hidden else ""
    if not shown:
        return ""
    return _sections(shown, None if limit is None else limit - nbytes(tail)) + tail


# --- passing steps ------------------------------------------------------------------------------

def passing_tail(step: StepResult, count: int = PASSING_TAIL_LINES) -> list[str]:
    """The last `count` lines a passing validate or analysis step printed (its output is masked when
    kept, as a failing step's is), cleaned for display; [] for any other step."""
    if step.status != "passed" or step.stage not in ("validate", "analysis"):
        return []
    return last_lines(step.output_tail, count)


def _finding_item(finding: Annotation) -> str:
    rule = f" {code_span(finding.title)}" if finding.title else ""
    level = "" if finding.annotation_level == "failure" else f" ({finding.annotation_level})"
    message = " ".join(valid_utf8(finding.message).split())
    message = message if len(message) <= 100 else message[:99] + "…"
    return f"- {code_span(f'{finding.path}:{finding.start_line}')}{rule}{level} {code_span(message)}\n"


def _passing_entry(step: StepResult, found: Sequence[Annotation]) -> str:
    """A passing step folded: its last line in the summary, its last lines (and findings) inside."""
    if step.status != "passed" or step.stage not in ("validate", "analysis"):
        return ""
    lines = passing_tail(step)
    if not lines and not found:
        return ""
    name = html.escape(" ".join(valid_utf8(step.name).split())[:100])
    if lines:
        last = lines[-1] if len(lines[-1]) <= SUMMARY_LINE_WIDTH else lines[-1][:SUMMARY_LINE_WIDTH - 1] + "…"
        said = f"<code>{html.escape(last)}</code>"
    else:
        said = plural(len(found), "finding")
    summary = f"✓ <code>{name}</code> ({step.stage}): {said}"
    inside = [code_block("\n".join(lines))] if lines else []
    if found:
        listed = "".join(_finding_item(f) for f in found[:PASSING_FINDINGS])
        more = f"\n*… and {len(found) - PASSING_FINDINGS} more in the annotations.*\n" \
            if len(found) > PASSING_FINDINGS else ""
        inside.append(f"**{plural(len(found), 'finding')}**\n\n{listed}{more}")
    return f"<details>\n<summary>{summary}</summary>\n\n" + "\n".join(inside) + "\n</details>\n"


def passing_text(steps: Sequence[StepResult], findings: Sequence[Annotation] = (),
                 limit: int = PASSING_TEXT_LIMIT) -> str:
    """The passing validate and analysis steps' last lines, each folded in `<details>`, within `limit`
    bytes (the steps past it are counted, not shown); "" when none printed anything."""
    by_step = findings_by_step(steps, findings)
    entries = [_passing_entry(s, by_step.get(s.name, ()) if s.stage == "analysis" else ()) for s in steps]
    entries = [entry for entry in entries if entry]
    if not entries:
        return ""
    heading = "### Passing steps\n\n"
    kept: list[str] = []
    size = nbytes(heading) + _NOTE_RESERVE
    for entry in entries:
        if size + nbytes(entry) + 1 > limit:
            break
        kept.append(entry)
        size += nbytes(entry) + 1
    left = len(entries) - len(kept)
    more = f"\n*{plural(left, 'more passing step')}: see the details page.*\n" if left else ""
    return heading + "\n".join(kept) + more


# --- check run output ----------------------------------------------------------------------------

def check_run_output(steps: Sequence[StepResult], *, head_sha: str, conclusion: str, details_url: str | None,
                     notes: Sequence[str] = (), reason: str | None = None, timeout_minutes: int | None = None,
                     screenshots: Sequence[tuple[str, str]] = (),
                     findings: Sequence[Annotation] = ()) -> dict[str, str]:
    """The final `output` of the check run: {title, summary, text}, each within GitHub's limits.

    `reason` completes the title for cancelled ("superseded by abc1234"), action_required (default
    "/ok-to-test") and neutral runs; `timeout_minutes` completes "Timed out in setup after 30 min".
    `text` holds the output tail of each failing step (a step failed by its findings lists them at its
    top), then the last lines of each passing validate or analysis step with a passing analysis step's
    `findings` (the run's annotations, under the step that found them); empty when nothing printed.
    `screenshots` are (page, URL) pairs of the UI check, linked from the summary.
    """
    title = run_title(steps, conclusion, reason, timeout_minutes)[:TITLE_LIMIT]
    summary = run_summary(steps, head_sha, [("Full log", details_url)], notes, screenshots=screenshots)
    passing = passing_text(steps, findings)
    failing = failure_text(steps, OUTPUT_LIMIT - nbytes(passing) - 2)
    return {"title": title, "summary": _fit_head(summary, OUTPUT_LIMIT),
            "text": "\n".join(part for part in (failing, passing) if part)}


def waiting_output(reason: str, head_sha: str) -> dict[str, str]:
    """The `output` of a fork's head waiting for `/ok-to-test`; `reason`: why (the fork gate's words)."""
    title = "Waiting for a maintainer: /ok-to-test"
    why = reason[:1].upper() + reason[1:]
    summary = (f"{why}, so its code does not run until a maintainer with write access comments `/ok-to-test` "
               f"on the PR. The approval holds for `{short_sha(head_sha)}` only.")
    return {"title": title, "summary": summary}


def in_progress_output(steps_so_far: Sequence[StepResult], current_step: str | None, current_tail: str, *,
                       current_stage: str | None = None, elapsed: float | None = None) -> dict[str, str]:
    """The `output` while the run goes on: the steps so far, the running one, and its live output tail."""
    done = len(steps_so_far)
    failed = sum(s.status in _BAD for s in steps_so_far)
    progress = plural(done, "step") + " done" + (f", {failed} failed" if failed else "")
    if current_step:
        title = f"Running {' '.join(current_step.split())[:60]}" + (f" — {progress}" if done else "")
    else:
        title = progress if done else "Starting"
    current = (current_stage or "", current_step) if current_step else None
    summary = run_summary(steps_so_far, None, [], [], current, elapsed=elapsed)
    text = ""
    if current_step and current_tail.strip():
        live = StepResult(current_step, current_stage if current_stage in STAGES else "validate", "passed", 0.0,
                          output_tail=current_tail)
        text = _sections([live], OUTPUT_LIMIT, live=True)
    return {"title": title[:TITLE_LIMIT], "summary": _fit_head(summary, OUTPUT_LIMIT), "text": text}
