"""What a maintainer sees of a validation run: check-run output, annotations, the sticky PR comment.

Pure functions of plain data (no I/O). Output tails given here are already masked by the caller; this
module only cleans them for display (ANSI colours and control characters removed, CRLF and progress-bar
carriage returns folded) and fits them into GitHub's limits.

Decisions:

* Sizes are measured in UTF-8 bytes. GitHub documents its limits in characters (65535 for a check
  run's summary and text, 65536 for a comment body); a byte count is never smaller than the number of
  characters or UTF-16 units, so staying under it in bytes is safe whatever GitHub counts.
* When output is too long, the TAIL is kept (the error is at the end), cut at a line boundary, and a
  line says how many lines and bytes were cut.
* Output goes into a fenced code block whose fence is one backtick longer than the longest run of
  backticks in the output (at least three), so the output can never close it early. Step names are
  shown in code spans (so `@name` in a name never notifies anyone, and `|` cannot break a table).
* Results read as a word with a simple mark: "✓ passed", "✗ failed (exit 1)", "✗ timed out",
  "cancelled", "skipped", "✓ restored".
* Sticky comment: the comment whose body starts with `COMMENT_MARKER` (find it among the App's own
  comments, never trust another author's). By default it is ONE comment: overflow is dropped from the
  beginning of the longest output, replaced by "… N lines omitted …", and the tail is kept (the full
  log is on the details page; extra comments would pile up on every push). `split_comment(...,
  max_parts=N)` can instead spread a body over up to N comments (continuations start with
  `<!-- codegenapp:validation part 2 -->`, ...), dropping only what does not fit in N. Code fences are
  closed at the end of a part and reopened, with the same fence and info string, at the start of the
  next.
* SARIF results without a physical location, or whose file is outside the workspace, are dropped;
  a result without a region is annotated on line 1 of its file.
* Changed lines: lines added on the new side of each hunk. A file listed without a `patch` (binary, or
  too large for GitHub to show) keeps all its annotations (`AllLines`), except a removed file or one
  with zero changes (a pure rename), which keeps none.
"""

from __future__ import annotations

import json
import math
import posixpath
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

STAGES = ("checkout", "setup", "validate", "analysis", "ui")
STATUSES = ("passed", "failed", "skipped", "cancelled", "timed_out", "restored")
LEVELS = ("notice", "warning", "failure")
CONCLUSIONS = ("success", "failure", "cancelled", "timed_out", "action_required", "neutral", "skipped", "stale")

OUTPUT_LIMIT = 65535          # check run output summary and text
COMMENT_LIMIT = 65536         # issue comment body
TITLE_LIMIT = 255             # check run output title and annotation title
ANNOTATION_TEXT_LIMIT = 64000  # annotation message and raw_details ("64 KB")
MAX_ANNOTATIONS_PER_REQUEST = 50
MAX_TEXT_SECTIONS = 10        # failing steps whose output is shown in the check run's text
NAME_LIMIT = 100              # step names as displayed
COMMENT_TEXT_CAP = 1024 * 1024  # failing output rendered into a comment body, before splitting

COMMENT_MARKER = "<!-- codegenapp:validation -->"
_PART_MARKER = "<!-- codegenapp:validation part {n} -->"

_OK = ("passed", "restored")
_BAD = ("failed", "timed_out")


LIVE_TAIL_CHARS = 8 * 1024  # of a running step's output, kept for the validation page


class SarifError(ValueError):
    """The analysis step's output is not a SARIF 2.1.0 document this module can read."""


@dataclass(frozen=True)
class StepResult:
    """One step of a run as it ended (or so far)."""

    name: str
    stage: str
    status: str
    duration_seconds: float
    exit_code: int | None = None
    output_tail: str = ""
    detail: str = ""

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {self.stage!r}")
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")


@dataclass(frozen=True)
class Annotation:
    """A check-run annotation; lines are 1-based and inclusive, columns too."""

    path: str
    start_line: int
    end_line: int
    annotation_level: str
    message: str
    title: str | None = None
    raw_details: str | None = None
    start_column: int | None = None
    end_column: int | None = None

    def __post_init__(self) -> None:
        if self.annotation_level not in LEVELS:
            raise ValueError(f"annotation_level must be one of {LEVELS}, got {self.annotation_level!r}")
        if self.start_line < 1 or self.end_line < self.start_line:
            raise ValueError(f"bad line range {self.start_line}-{self.end_line}")

    def to_github(self) -> dict[str, Any]:
        """The annotation as the Checks API wants it (columns only on a single line, limits applied)."""
        data: dict[str, Any] = {"path": self.path, "start_line": self.start_line, "end_line": self.end_line,
                                "annotation_level": self.annotation_level,
                                "message": _head_bytes(_safe(self.message), ANNOTATION_TEXT_LIMIT) or "(no message)"}
        if self.start_line == self.end_line and self.start_column is not None:
            data["start_column"] = self.start_column
            if self.end_column is not None:
                data["end_column"] = max(self.end_column, self.start_column)
        if self.title:
            data["title"] = _safe(self.title)[:TITLE_LIMIT]
        if self.raw_details:
            data["raw_details"] = _head_bytes(_safe(self.raw_details), ANNOTATION_TEXT_LIMIT)
        return data


# --- text helpers --------------------------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _safe(text: str) -> str:
    """Valid UTF-8 (lone surrogates from undecodable bytes become U+FFFD)."""
    return text if text.isascii() else _SURROGATE.sub("\ufffd", text)


def _nbytes(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def _head_bytes(text: str, limit: int) -> str:
    return text if _nbytes(text) <= limit else text.encode("utf-8")[:limit].decode("utf-8", "ignore")


def _tail_bytes(text: str, limit: int) -> str:
    if limit <= 0:
        return ""
    return text if _nbytes(text) <= limit else text.encode("utf-8")[-limit:].decode("utf-8", "ignore")


def clean_output(text: str) -> str:
    """Output as a log viewer shows it: no ANSI escapes or control characters, `\\r\\n` -> `\\n`, and of
    a line redrawn with carriage returns (progress bars) only its last state."""
    text = _ANSI.sub("", _safe(text)).replace("\r\n", "\n")
    if "\r" in text:
        text = "\n".join(line.rstrip("\r").rsplit("\r", 1)[-1] for line in text.split("\n"))
    return _CONTROL.sub("", text)


def keep_tail(text: str, limit: int) -> tuple[str, int, int]:
    """The end of `text` within `limit` bytes, from a line start when possible; with the number of
    lines (a partly cut line counts) and bytes cut."""
    if _nbytes(text) <= limit:
        return text, 0, 0
    kept = _tail_bytes(text, limit)
    newline = kept.find("\n")
    if 0 <= newline < len(kept) - 1 and newline < len(kept) // 2:
        kept = kept[newline + 1:]
    cut = text[:len(text) - len(kept)]
    return kept, cut.count("\n") + (0 if cut.endswith("\n") else 1), _nbytes(cut)


def format_bytes(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KB"
    return f"{n / (1024 * 1024):.1f} MB"


def format_duration(seconds: float) -> str:
    """`0.4 s`, `12 s`, `1 min 12 s`, `2 min`, `1 h 5 min`."""
    if not math.isfinite(seconds) or seconds < 0:
        seconds = 0.0
    if seconds < 9.95:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        minutes, rest = divmod(whole, 60)
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    hours, rest = divmod(whole, 3600)
    return f"{hours} h {rest // 60} min" if rest // 60 else f"{hours} h"


def fence_for(text: str) -> str:
    """A backtick fence longer than any backtick run in `text` (at least three)."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def code_block(text: str, info: str = "text") -> str:
    fence = fence_for(text)
    body = text if not text or text.endswith("\n") else text + "\n"
    return f"{fence}{info}\n{body}{fence}\n"


def _code(text: str, *, table: bool = False) -> str:
    """An inline code span that `text` cannot break out of (`table`: with `|` escaped for a table cell)."""
    text = " ".join(_safe(text).split())[:NAME_LIMIT] or " "
    ticks = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    span = f"{ticks}{pad}{text}{pad}{ticks}"
    return span.replace("|", "\\|") if table else span


def _cell(text: str) -> str:
    return " ".join(_safe(text).split()).replace("|", "\\|")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _link(url: str) -> str:
    return url.replace(" ", "%20").replace("(", "%28").replace(")", "%29")


def short_sha(sha: str) -> str:
    return sha[:7] if re.fullmatch(r"[0-9a-fA-F]{8,64}", sha) else sha


def superseded_reason(new_sha: str) -> str:
    """The `reason` for a run cancelled by a newer push: "superseded by abc1234"."""
    return f"superseded by {short_sha(new_sha)}"


# --- conclusion and title ------------------------------------------------------------------------

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
    """"pytest failed", "npm ci failed in setup", "a and b failed", "a and 2 more failed"."""
    if len(steps) == 1:
        stage = steps[0].stage
        return f"{fmt(steps[0].name)} failed" + (f" in {stage}" if stage not in ("validate", "ui") else "")
    if len(steps) == 2:
        return f"{fmt(steps[0].name)} and {fmt(steps[1].name)} failed"
    return f"{fmt(steps[0].name)} and {len(steps) - 1} more failed"


def _title(steps: Sequence[StepResult], conclusion: str, reason: str | None, timeout_minutes: int | None,
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
    return reason or conclusion.capitalize()


# --- step table ----------------------------------------------------------------------------------

_RESULT_WORDS = {"passed": "✓ passed", "failed": "✗ failed", "timed_out": "✗ timed out",
                 "cancelled": "cancelled", "skipped": "skipped", "restored": "✓ restored"}


def result_word(step: StepResult) -> str:
    word = _RESULT_WORDS[step.status]
    if step.status == "failed" and step.exit_code is not None:
        word += f" (exit {step.exit_code})"
    return word


def _row(stage: str, name: str, result: str, duration: str) -> str:
    return f"| {stage} | {_code(name, table=True)} | {_cell(result)} | {duration} |"


def step_table(steps: Sequence[StepResult], current: tuple[str, str] | None = None) -> str:
    """The Markdown table of steps; `current` = (stage, name) adds a "running…" row."""
    rows = ["| Stage | Step | Result | Duration |", "| --- | --- | --- | --- |"]
    for s in steps:
        result = result_word(s) + (f" — {s.detail}" if s.detail else "")
        duration = "—" if s.status == "skipped" else format_duration(s.duration_seconds)
        rows.append(_row(s.stage, s.name, result, duration))
    if current is not None:
        rows.append(_row(_cell(current[0]) or "…", current[1], "running…", "—"))
    return "\n".join(rows) + "\n"


def _summary(steps: Sequence[StepResult], head_sha: str | None, links: Sequence[tuple[str, str | None]],
             notes: Iterable[str], current: tuple[str, str] | None = None, lead: str = "",
             screenshots: Sequence[tuple[str, str]] = ()) -> str:
    first = [lead] if lead else []
    if head_sha:
        first.append(f"{'commit' if lead else 'Commit'} `{short_sha(_cell(head_sha).replace('`', ''))}`")
    first += [f"[{text}]({_link(url)})" for text, url in links if url]
    parts = [" · ".join(first) + "\n"] if first else []
    if steps or current:
        parts.append(step_table(steps, current))
        total = sum(s.duration_seconds for s in steps if math.isfinite(s.duration_seconds))
        if steps:
            parts.append(f"Total time: {format_duration(total)}\n")
    else:
        parts.append("No steps ran.\n")
    notes = [n for n in notes if n and n.strip()]
    if notes:
        parts.append("".join(f"- {_safe(n).strip()}\n" for n in notes))
    if screenshots:
        shots = " · ".join(f"[{_code(page)}]({_link(url)})" for page, url in screenshots)
        parts.append(f"Screenshots: {shots}\n")
    return "\n".join(parts)


def check_run_images(screenshots: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    """`output.images` of the check run: GitHub shows them inline (it must be able to fetch the URLs)."""
    return [{"alt": f"Screenshot of {_plain_name(page)}", "image_url": url, "caption": _plain_name(page)}
            for page, url in screenshots]


def _fit_head(text: str, limit: int) -> str:
    """`text` within `limit` bytes, keeping the beginning (for summaries, whose table starts at the top)."""
    if _nbytes(text) <= limit:
        return text
    note = "\n\n*… the rest of this summary ({}) was cut to fit GitHub's limit.*\n"
    head = _head_bytes(text, limit - _nbytes(note) - 20)
    head = head[:head.rfind("\n") + 1] or head
    return head + note.format(format_bytes(_nbytes(text) - _nbytes(head)))


# --- output sections -----------------------------------------------------------------------------

def _section_header(step: StepResult, live: bool = False) -> str:
    if live:
        return f"### Live output of {_code(step.name)} ({step.stage})\n\n"
    what = {"failed": "failed" + (f" with exit code {step.exit_code}" if step.exit_code is not None else ""),
            "timed_out": "timed out", "cancelled": "was cancelled"}.get(step.status, step.status)
    return f"### {_code(step.name)} ({step.stage}) {what}\n\n"


def _cut_note(lines: int, size: int) -> str:
    return f"*{_plural(lines, 'earlier line')} ({format_bytes(size)}) cut — the end of the output follows.*\n\n"


_NOTE_RESERVE = 120  # bytes for a cut note


def _sections(steps: Sequence[StepResult], limit: int | None, live: bool = False) -> str:
    """Each step's header and output tail in a code block; with `limit`, fitted within it (tails kept,
    shared fairly: short outputs whole, the rest split evenly)."""
    outputs = [clean_output(s.output_tail).rstrip("\n") for s in steps]
    headers = [_section_header(s, live) for s in steps]
    if limit is None:
        return "\n".join(h + (code_block(o) if o else "*(no output)*\n")
                         for h, o in zip(headers, outputs, strict=True))
    overheads = [_nbytes(h) + 2 * len(fence_for(o)) + 12 + _NOTE_RESERVE
                 for h, o in zip(headers, outputs, strict=True)]
    budgets = _share([_nbytes(o) for o in outputs], limit - sum(overheads) - len(steps))
    blocks = []
    for header, output, budget in zip(headers, outputs, budgets, strict=True):
        kept, lines, size = keep_tail(output, max(budget, 0))
        note = _cut_note(lines, size) if lines else ""
        blocks.append(header + note + (code_block(kept) if kept else "*(no output)*\n"))
    return _tail_bytes("\n".join(blocks), limit)


def _share(sizes: Sequence[int], total: int) -> list[int]:
    """Split `total` among items wanting `sizes`: small ones get what they want, the rest equal shares."""
    budgets = [0] * len(sizes)
    remaining = max(total, 0)
    order = sorted(range(len(sizes)), key=lambda i: sizes[i])
    for done, i in enumerate(order):
        budgets[i] = min(sizes[i], remaining // (len(sizes) - done))
        remaining -= budgets[i]
    return budgets


def _failing(steps: Sequence[StepResult]) -> list[StepResult]:
    bad = [s for s in steps if s.status in _BAD]
    return bad or [s for s in steps if s.status == "cancelled" and s.output_tail]


def _failure_text(steps: Sequence[StepResult], limit: int | None) -> str:
    failing = _failing(steps)
    shown, hidden = failing[:MAX_TEXT_SECTIONS], failing[MAX_TEXT_SECTIONS:]
    tail = f"\n*{_plural(len(hidden), 'more failing step')}: see the table.*\n" if hidden else ""
    if not shown:
        return ""
    return _sections(shown, None if limit is None else limit - _nbytes(tail)) + tail


# --- check run output ----------------------------------------------------------------------------

def check_run_output(steps: Sequence[StepResult], *, head_sha: str, conclusion: str, details_url: str | None,
                     notes: Sequence[str] = (), reason: str | None = None, timeout_minutes: int | None = None,
                     screenshots: Sequence[tuple[str, str]] = ()) -> dict[str, str]:
    """The final `output` of the check run: {title, summary, text}, each within GitHub's limits.

    `reason` completes the title for cancelled ("superseded by abc1234"), action_required (default
    "/ok-to-test") and neutral runs; `timeout_minutes` completes "Timed out in setup after 30 min".
    `text` holds the output tail of each failing step (empty when none failed). `screenshots` are
    (page, URL) pairs of the UI check, linked from the summary.
    """
    title = _title(steps, conclusion, reason, timeout_minutes)[:TITLE_LIMIT]
    summary = _summary(steps, head_sha, [("Full log", details_url)], notes, screenshots=screenshots)
    return {"title": title, "summary": _fit_head(summary, OUTPUT_LIMIT),
            "text": _failure_text(steps, OUTPUT_LIMIT)}


def in_progress_output(steps_so_far: Sequence[StepResult], current_step: str | None, current_tail: str, *,
                       current_stage: str | None = None) -> dict[str, str]:
    """The `output` while the run goes on: the steps so far, the running one, and its live output tail."""
    done = len(steps_so_far)
    failed = sum(s.status in _BAD for s in steps_so_far)
    progress = _plural(done, "step") + " done" + (f", {failed} failed" if failed else "")
    if current_step:
        title = f"Running {' '.join(current_step.split())[:60]}" + (f" — {progress}" if done else "")
    else:
        title = progress if done else "Starting"
    current = (current_stage or "", current_step) if current_step else None
    summary = _summary(steps_so_far, None, [], [], current)
    text = ""
    if current_step and current_tail.strip():
        live = StepResult(current_step, current_stage if current_stage in STAGES else "validate", "passed", 0.0,
                          output_tail=current_tail)
        text = _sections([live], OUTPUT_LIMIT, live=True)
    return {"title": title[:TITLE_LIMIT], "summary": _fit_head(summary, OUTPUT_LIMIT), "text": text}


# --- annotations ---------------------------------------------------------------------------------

def annotation_batches(annotations: Iterable[Annotation], size: int = MAX_ANNOTATIONS_PER_REQUEST
                       ) -> list[list[dict[str, Any]]]:
    """Annotations as Checks API dicts, in batches of at most `size` (GitHub accepts 50 per request)."""
    if not 1 <= size <= MAX_ANNOTATIONS_PER_REQUEST:
        raise ValueError(f"size must be between 1 and {MAX_ANNOTATIONS_PER_REQUEST}")
    items = [a.to_github() for a in annotations]
    return [items[i:i + size] for i in range(0, len(items), size)]


_SARIF_LEVELS = {"error": "failure", "warning": "warning", "note": "notice", "none": "notice"}


class _Sarif:
    """Reads one SARIF log; `where` paths in errors look like `runs[0].results[3].message`."""

    def __init__(self, workspace_prefix: str) -> None:
        prefix = workspace_prefix.removeprefix("file://")
        self.prefix = prefix.rstrip("/") + "/" if prefix.strip("/") else ""

    @staticmethod
    def obj(value: Any, where: str, optional: bool = False) -> dict[str, Any]:
        if value is None and optional:
            return {}
        if not isinstance(value, dict):
            raise SarifError(f"{where} must be an object")
        return value

    @staticmethod
    def array(value: Any, where: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise SarifError(f"{where} must be an array")
        return value

    @staticmethod
    def positive(value: Any, where: str) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SarifError(f"{where} must be a positive integer, got {json.dumps(value)[:40]}")
        return value

    @staticmethod
    def string(value: Any, where: str) -> str | None:
        if value is not None and not isinstance(value, str):
            raise SarifError(f"{where} must be a string")
        return value

    def log(self, doc: Any) -> list[Annotation]:
        doc = self.obj(doc, "the SARIF log")
        version = doc.get("version")
        if version is not None and version != "2.1.0":
            raise SarifError(f"SARIF version {json.dumps(version)[:20]} is not supported (only 2.1.0)")
        if "runs" not in doc:
            raise SarifError('the SARIF log has no "runs"')
        annotations: list[Annotation] = []
        for r, run in enumerate(self.array(doc["runs"], "runs")):
            annotations += self.run(self.obj(run, f"runs[{r}]"), f"runs[{r}]")
        return annotations

    def run(self, run: dict[str, Any], where: str) -> list[Annotation]:
        driver = self.obj(self.obj(run.get("tool"), f"{where}.tool", True).get("driver"),
                          f"{where}.tool.driver", True)
        rules = [r if isinstance(r, dict) else {}
                 for r in self.array(driver.get("rules"), f"{where}.tool.driver.rules")]
        annotations = []
        for i, result in enumerate(self.array(run.get("results"), f"{where}.results")):
            at = f"{where}.results[{i}]"
            annotation = self.result(self.obj(result, at), at, run, rules)
            if annotation is not None:
                annotations.append(annotation)
        return annotations

    def rule(self, result: dict[str, Any], rules: list[dict[str, Any]],
             where: str) -> tuple[str | None, dict[str, Any]]:
        ref = self.obj(result.get("rule"), f"{where}.rule", True)
        rule_id = self.string(result.get("ruleId"), f"{where}.ruleId") or self.string(ref.get("id"), f"{where}.rule.id")
        index = result.get("ruleIndex", ref.get("index"))
        if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < len(rules):
            return rule_id or self.string(rules[index].get("id"), f"{where}.rule"), rules[index]
        return rule_id, next((r for r in rules if rule_id is not None and r.get("id") == rule_id), {})

    def result(self, result: dict[str, Any], where: str, run: dict[str, Any],
               rules: list[dict[str, Any]]) -> Annotation | None:
        kind = result.get("kind", "fail")
        if kind in ("pass", "notApplicable") or result.get("baselineState") == "absent" or self.suppressed(result):
            return None
        rule_id, rule = self.rule(result, rules, where)
        level = result.get("level")
        if level is None:
            default = self.obj(rule.get("defaultConfiguration"), "rule.defaultConfiguration", True).get("level")
            level = "none" if kind != "fail" else default if isinstance(default, str) and default in _SARIF_LEVELS \
                else "warning"
        if not isinstance(level, str) or level not in _SARIF_LEVELS:
            raise SarifError(f"{where}.level must be error, warning, note or none, got {json.dumps(level)[:40]}")
        message = self.message(result, rule, rule_id, where)
        located = self.location(result, where, run)
        if located is None:
            return None
        path, lines, columns = located
        help_uri = rule.get("helpUri") if isinstance(rule.get("helpUri"), str) else None
        return Annotation(path=path, start_line=lines[0], end_line=lines[1], annotation_level=_SARIF_LEVELS[level],
                          message=message, title=rule_id, raw_details=help_uri,
                          start_column=columns[0], end_column=columns[1])

    def suppressed(self, result: dict[str, Any]) -> bool:
        suppressions = result.get("suppressions")
        return isinstance(suppressions, list) and any(
            isinstance(s, dict) and s.get("status", "accepted") == "accepted" for s in suppressions)

    def message(self, result: dict[str, Any], rule: dict[str, Any], rule_id: str | None, where: str) -> str:
        message = self.obj(result.get("message"), f"{where}.message")
        text = message.get("text")
        if not isinstance(text, str):
            text = message.get("markdown")
        if not isinstance(text, str) and isinstance(message.get("id"), str):
            strings = rule.get("messageStrings")
            entry = strings.get(message["id"]) if isinstance(strings, dict) else None
            text = entry.get("text") if isinstance(entry, dict) else None
        if not isinstance(text, str) or not text.strip():
            short = rule.get("shortDescription")
            text = short.get("text") if isinstance(short, dict) else None
        if not isinstance(text, str) or not text.strip():
            return rule_id or "(no message)"
        arguments = message.get("arguments")
        return _format_message(text, arguments if isinstance(arguments, list) else [])

    def location(self, result: dict[str, Any], where: str, run: dict[str, Any]
                 ) -> tuple[str, tuple[int, int], tuple[int | None, int | None]] | None:
        locations = self.array(result.get("locations"), f"{where}.locations")
        if not locations:
            return None
        at = f"{where}.locations[0]"
        physical = self.obj(self.obj(locations[0], at).get("physicalLocation"), f"{at}.physicalLocation", True)
        artifact = self.obj(physical.get("artifactLocation"), f"{at}.physicalLocation.artifactLocation", True)
        uri = self.uri(artifact, run, f"{at}.physicalLocation.artifactLocation")
        path = _repo_path(uri, self.prefix) if uri else None
        if path is None:
            return None
        lines, columns = self.region(physical.get("region"), f"{at}.physicalLocation.region")
        return path, lines, columns

    def uri(self, artifact: dict[str, Any], run: dict[str, Any], where: str) -> str | None:
        index = artifact.get("index")
        uri = self.string(artifact.get("uri"), f"{where}.uri")
        if uri is None and isinstance(index, int) and not isinstance(index, bool):
            artifacts = self.array(run.get("artifacts"), "artifacts")
            if 0 <= index < len(artifacts) and isinstance(artifacts[index], dict):
                location = artifacts[index].get("location")
                if isinstance(location, dict):
                    artifact = location
                    uri = self.string(location.get("uri"), f"artifacts[{index}].location.uri")
        base_id = artifact.get("uriBaseId")
        bases = run.get("originalUriBaseIds")
        if uri is not None and isinstance(base_id, str) and isinstance(bases, dict) and not urlsplit(uri).scheme:
            base = bases.get(base_id)
            base_uri = base.get("uri") if isinstance(base, dict) else None
            if isinstance(base_uri, str):
                uri = urljoin(base_uri if base_uri.endswith("/") else base_uri + "/", uri)
        return uri

    def region(self, region: Any, where: str) -> tuple[tuple[int, int], tuple[int | None, int | None]]:
        region = self.obj(region, where, True)
        start = self.positive(region.get("startLine"), f"{where}.startLine")
        if start is None:  # no region, or one given by character offsets: the file's first line
            return (1, 1), (None, None)
        end = self.positive(region.get("endLine"), f"{where}.endLine") or start
        if end < start:
            raise SarifError(f"{where}.endLine is before its startLine")
        first = self.positive(region.get("startColumn"), f"{where}.startColumn")
        last = self.positive(region.get("endColumn"), f"{where}.endColumn")
        if end != start or first is None:
            return (start, end), (None, None)
        # SARIF's endColumn is one past the last character; GitHub's end_column is the last one.
        return (start, end), (first, max(first, last - 1) if last is not None else None)


def _format_message(text: str, arguments: list[Any]) -> str:
    """SARIF message placeholders: {0} -> arguments[0]; {{ and }} are literal braces."""
    def replace(match: re.Match[str]) -> str:
        if match[1] is None:
            return match[0][0]
        index = int(match[1])
        return str(arguments[index]) if index < len(arguments) else match[0]
    return re.sub(r"\{\{|\}\}|\{(\d+)\}", replace, text)


def _repo_path(uri: str, prefix: str) -> str | None:
    """A repository-relative path from a SARIF artifact URI, or None when it is outside the workspace."""
    parts = urlsplit(uri)
    if parts.scheme == "file":
        path = unquote(parts.path)
    elif parts.scheme and len(parts.scheme) > 1:
        return None
    else:
        path = unquote(uri)
    if prefix and path.startswith(prefix):
        path = path[len(prefix):]
    if path.startswith("/") or not path or "\0" in path:
        return None
    path = posixpath.normpath(path)
    if path in (".", "..") or path.startswith("../"):
        return None
    return path


def parse_sarif(text: str, *, workspace_prefix: str = "") -> list[Annotation]:
    """Annotations from a SARIF 2.1.0 log (e.g. `ruff check --output-format sarif`).

    URIs lose `file://` and `workspace_prefix` (e.g. "/workspace/"); results outside it, without a
    location, passed, suppressed or absent from the baseline are dropped. Levels: error -> failure,
    warning -> warning, note/none -> notice (a result without a level takes its rule's default, then
    "warning"). The title is the rule id; raw_details the rule's help URI. Raises SarifError (only)
    for anything that is not SARIF 2.1.0.
    """
    if not isinstance(text, str):
        raise SarifError("the SARIF log must be text")
    if not text.strip():
        raise SarifError("the output is empty (expected a SARIF log)")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SarifError(f"the output is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
                         'if the tool prints more than the SARIF log, write it to a file and set "output:"') from None
    except RecursionError:
        raise SarifError("the SARIF log is nested too deeply") from None
    try:
        return _Sarif(workspace_prefix).log(doc)
    except RecursionError:  # pragma: no cover - json.loads already bounds the depth
        raise SarifError("the SARIF log is nested too deeply") from None


# --- changed lines -------------------------------------------------------------------------------

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


# --- sticky comment ------------------------------------------------------------------------------

_HEADINGS = {"success": "Validation passed", "failure": "Validation failed", "cancelled": "Validation cancelled",
             "timed_out": "Validation timed out", "action_required": "Validation is waiting for a maintainer",
             "neutral": "Nothing was validated", "skipped": "Validation skipped", "stale": "Validation is stale"}


def render_comment(steps: Sequence[StepResult], *, head_sha: str, conclusion: str,
                   check_run_url: str | None = None, details_url: str | None = None, notes: Sequence[str] = (),
                   reason: str | None = None, timeout_minutes: int | None = None,
                   screenshots: Sequence[tuple[str, str]] = ()) -> str:
    """The sticky comment's body (starts with COMMENT_MARKER). Its failing output is capped at
    COMMENT_TEXT_CAP (1 MiB, to keep splitting cheap); fit it into comments with `split_comment`."""
    title = _title(steps, conclusion, reason, timeout_minutes, fmt=_code)
    links = [("check run", check_run_url), ("details and full log", details_url)]
    summary = _summary(steps, head_sha, links, notes, lead=title, screenshots=screenshots)
    body = f"{COMMENT_MARKER}\n### {_HEADINGS[conclusion]}\n\n{summary}"
    text = _failure_text(steps, COMMENT_TEXT_CAP)
    return body + ("\n" + text if text else "")


def comment_part(body: str) -> int | None:
    """1 for the sticky comment, N for its continuation part N, None for any other comment."""
    if body.startswith(COMMENT_MARKER):
        return 1
    match = re.match(r"<!-- codegenapp:validation part (\d+) -->", body)
    return int(match[1]) if match else None


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
        if _nbytes(line) <= chunk:
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


def _part_header(n: int) -> str:
    return f"{COMMENT_MARKER}\n" if n == 1 else f"{_PART_MARKER.format(n=n)}\n*(continued)*\n\n"


def _open(fence: _Fence) -> str:
    return f"{fence[0]}{fence[1]}\n"


def _close(fence: _Fence, text_so_far_ends_with_newline: bool) -> str:
    return ("" if text_so_far_ends_with_newline else "\n") + f"{fence[0]}\n"


def _pack(items: Sequence[_Item], limit: int, max_parts: int) -> list[str] | None:
    """Greedy split into parts of at most `limit` bytes; None when more than `max_parts` are needed."""
    parts: list[str] = []
    current: list[str] = []
    size = 0
    last: _Item | None = None

    def start(item: _Item | None) -> None:
        nonlocal current, size, last
        head = _part_header(len(parts) + 1) + (_open(item.before) if item is not None and item.before else "")
        current, size, last = [head], _nbytes(head), None

    def finish() -> None:
        if last is not None and last.after is not None:
            current.append(_close(last.after, last.text.endswith("\n")))
        parts.append("".join(current))

    start(items[0] if items else None)
    for item in items:
        cost = _nbytes(item.text)
        closing = _nbytes(_close(item.after, item.text.endswith("\n"))) if item.after else 0
        if last is not None and size + cost + closing > limit:
            finish()
            if len(parts) >= max_parts:
                return None
            start(item)
        current.append(item.text)
        size += cost
        last = item
    finish()
    return parts


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
    note = f"… {_plural(_omitted(dropped), 'line')} omitted …\n"
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
    return sorted(runs, key=lambda r: -sum(_nbytes(items[k].text) for k in range(r[0], r[0] + r[1])))


def _fewest_dropped(items: list[_Item], start: int, length: int, limit: int, max_parts: int) -> int:
    """The smallest count of lines to drop from items[start:] so that the body fits (or `length`)."""
    low, high = 0, length
    while low < high:
        middle = (low + high) // 2
        if _pack(_drop(items, start, middle), limit, max_parts) is not None:
            high = middle
        else:
            low = middle + 1
    return low


def split_comment(body: str, limit: int = COMMENT_LIMIT, *, max_parts: int = 1) -> list[str]:
    """Split a comment body into at most `max_parts` bodies of at most `limit` bytes each.

    The first starts with COMMENT_MARKER, part N with `<!-- codegenapp:validation part N -->`. A code
    fence open at the end of a part is closed there and reopened (same fence and info string) at the
    start of the next. When `max_parts` parts are not enough, lines are dropped from the beginning of
    the largest code block (then the next largest, then from the top of the body), keeping the tail,
    and "… N lines omitted …" says where.
    """
    if max_parts < 1:
        raise ValueError("max_parts must be at least 1")
    body = _safe(body).removeprefix(COMMENT_MARKER).removeprefix("\n")
    fences = [len(m[1]) + len(m[2]) for m in re.finditer(r"(?m)^ {0,3}(`{3,}|~{3,})(.*)$", body) if len(m[0]) <= 1000]
    overhead = _nbytes(_part_header(max_parts)) + 2 * (max(fences, default=0) + 2) + 64
    chunk = min(limit - overhead, max(256, limit // 4))
    if chunk < 16:
        raise ValueError(f"limit {limit} is too small")
    items = _scan(body, chunk)
    parts = _pack(items, limit, max_parts)
    while parts is None and (blocks := _blocks(items)):
        start, length = blocks[0]
        items = _drop(items, start, _fewest_dropped(items, start, length, limit, max_parts))
        parts = _pack(items, limit, max_parts)
    if parts is None:
        items = _drop(items, 0, _fewest_dropped(items, 0, len(items), limit, max_parts))
        parts = _pack(items, limit, max_parts)
    assert parts is not None
    return parts
