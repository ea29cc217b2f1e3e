"""`codegenapp validate`'s report for a terminal: the outcome on the first line, then a row per step with
a coloured ✓ or ✗, its stage, name, state and duration in aligned columns, and under a step what a person
wants next: the last lines of a passing step, the end of a failing step's output, its findings
(file:line rule message) and any note. Then the run's notes and the files of its screenshots.

Pure: plain ANSI escapes, only when `colour` is on (use_colour: a terminal, and NO_COLOR unset).
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence

from bot.labels import STEP_MARKS, duration, step_state
from pipeline.report.local import UNKNOWN_STEP, LocalRun, step_tail
from pipeline.report.text import LINE_WIDTH, plural, short_sha
from pipeline.results import LISTED_FINDINGS, Annotation, StepResult

FORMATS = ("text", "markdown", "json")
FAILING_TAIL_LINES = 30       # of a failing step's output
NAME_WIDTH = 40

RESET, BOLD, DIM, RED, GREEN, YELLOW = "\x1b[0m", "\x1b[1m", "\x1b[2m", "\x1b[31m", "\x1b[32m", "\x1b[33m"

_COLOURS = {"passed": GREEN, "restored": GREEN, "failed": RED, "timed_out": RED, "cancelled": YELLOW, "skipped": DIM}
_MARKS = {state: (STEP_MARKS[state], colour) for state, colour in _COLOURS.items()}
_CONCLUSION_MARKS = {"success": ("✓", GREEN), "failure": ("✗", RED), "timed_out": ("✗", RED)}
_LEVEL_COLOURS = {"failure": RED, "warning": YELLOW, "notice": DIM}


def report_format(requested: str | None, stdout_is_terminal: bool) -> str:
    """--format, or by default the terminal form on a terminal and Markdown (the check run's) when piped."""
    if requested is not None:
        return requested
    return "text" if stdout_is_terminal else "markdown"


def use_colour(env: Mapping[str, str], stdout_is_terminal: bool) -> bool:
    """Colours on a terminal unless NO_COLOR is set to anything (no-color.org) or TERM is dumb."""
    return stdout_is_terminal and not env.get("NO_COLOR") and env.get("TERM") != "dumb"


class _Paint:
    def __init__(self, on: bool) -> None:
        self.on = on

    def __call__(self, text: str, *styles: str) -> str:
        return f"{''.join(styles)}{text}{RESET}" if self.on and styles and text else text


def _cut(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 1] + "…"


def _state(step: StepResult) -> str:
    word = step_state(step.status)
    return f"{word} (exit {step.exit_code})" if step.status == "failed" and step.exit_code is not None else word


def _finding(finding: Annotation, paint: _Paint) -> str:
    where = f"{finding.path}:{finding.start_line}"
    rest = _cut(f"{' ' + finding.title if finding.title else ''} {finding.message}", LINE_WIDTH)
    return paint(where, _LEVEL_COLOURS.get(finding.annotation_level, "")) + " " + rest


def _findings(found: Sequence[Annotation], paint: _Paint) -> list[str]:
    lines = [_finding(f, paint) for f in found[:LISTED_FINDINGS]]
    if len(found) > LISTED_FINDINGS:
        lines.append(f"… and {len(found) - LISTED_FINDINGS} more")
    return lines


def _under(step: StepResult, found: Sequence[Annotation], paint: _Paint, width: int) -> list[str]:
    """The lines shown under a step's row (a note wrapped to `width`)."""
    lines: list[str] = []
    if found:
        lines += _findings(found, paint)
    elif step.status != "skipped":
        tail = step_tail(step).split("\n") if step.output_tail.strip() else []
        if step.status not in ("passed", "restored") and len(tail) > FAILING_TAIL_LINES:
            lines.append(paint(f"… {plural(len(tail) - FAILING_TAIL_LINES, 'earlier line')}", DIM))
            tail = tail[-FAILING_TAIL_LINES:]
        lines += [paint("│ ", DIM) + (paint(line, DIM) if step.status in ("passed", "restored") else line)
                  for line in tail]
    if step.note:
        wrapped = textwrap.wrap(f"note: {step.note}", max(width, 40), break_on_hyphens=False)
        lines += [paint("note:", YELLOW, BOLD) + wrapped[0].removeprefix("note:"), *wrapped[1:]]
    return lines


def terminal_report(run: LocalRun, *, colour: bool = False, width: int = 100) -> str:
    """`width`: the terminal's columns, to which notes are wrapped (output lines are left as they are)."""
    paint = _Paint(colour)
    mark, tone = _CONCLUSION_MARKS.get(run.conclusion, ("–", YELLOW))
    out = [paint(f"{mark} {run.title}", tone, BOLD),
           paint(f"  commit {short_sha(run.sha)} · {duration(run.elapsed)}", DIM), ""]

    names = [_cut(s.name, NAME_WIDTH) for s in run.steps]
    states = [_state(s) for s in run.steps]
    durations = ["—" if s.status == "skipped" else duration(s.duration_seconds) for s in run.steps]
    stage_w = max((len(s.stage) for s in run.steps), default=0)
    name_w, state_w = max(map(len, names), default=0), max(map(len, states), default=0)
    duration_w = max(map(len, durations), default=0)
    indent = " " * (2 + 1 + 2 + stage_w + 2)
    for step, name, state, took in zip(run.steps, names, states, durations, strict=True):
        mark, tone = _MARKS[step.status]
        row = (f"  {paint(mark, tone, BOLD)}  {paint(step.stage.ljust(stage_w), DIM)}  {name.ljust(name_w)}  "
               f"{paint(state.ljust(state_w), tone)}  {took.rjust(duration_w)}")
        if step.detail:
            row += f"  {paint(_cut(step.detail, LINE_WIDTH), DIM)}"
        out.append(row.rstrip())
        out += [indent + line for line in _under(step, run.findings.get(step.name, ()), paint, width - len(indent))]

    unplaced = run.findings.get(UNKNOWN_STEP, ())
    if unplaced:
        out += ["", paint(f"Findings ({len(unplaced)})", BOLD)] + ["  " + line for line in _findings(unplaced, paint)]
    notes = [n.strip() for n in run.notes if n and n.strip()]
    if notes:
        out += ["", paint("Notes", BOLD)] + [f"  - {n}" for n in notes]
    if run.screenshots:
        page_w = max(len(shot.path) for shot, _ in run.screenshots)
        out += ["", paint("Screenshots", BOLD)]
        out += [f"  {shot.path.ljust(page_w)}  {file}" for shot, file in run.screenshots]
    return "\n".join(out) + "\n"
