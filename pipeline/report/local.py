"""A run of `codegenapp validate` as its reports see it (LocalRun), and its JSON form for scripts.

The JSON shape is stable (README, "Running it locally"); a key is only ever added:

    {"format": 1, "commit": "<sha>", "conclusion": "success" | "failure" | ..., "title": "...",
     "duration_seconds": 12.3, "duration": "12s", "notes": ["..."],
     "steps": [{"name", "stage", "state": "passed" | "failed" | "skipped" | "cancelled" | "timed_out" | "restored",
                "exit_code": int | null, "duration_seconds", "duration", "detail", "note", "tail",
                "findings": [<finding>]}],
     "findings": [<finding> + {"step": name | null}],
     "screenshots": [{"page": "/", "file": "/abs/path.png", "width", "height"}]}

    <finding> = {"path", "line", "end_line", "level": "notice" | "warning" | "failure", "rule", "message"}

A step's `tail` is the end of its output with colours and control characters removed: its last lines
when it passed, everything kept (up to 64 KB) otherwise. `note` is a hint such as the no-network one
(pipeline/network_note.py), "" when there is none.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bot.labels import duration
from pipeline.report.text import clean_output, last_lines
from pipeline.results import Annotation, Screenshot, StepResult

JSON_FORMAT = 1
UNKNOWN_STEP = ""  # the findings key of those that do not say which of several analysis steps found them


@dataclass(frozen=True)
class LocalRun:
    sha: str
    title: str
    conclusion: str
    steps: Sequence[StepResult]
    notes: Sequence[str]
    findings: Mapping[str, Sequence[Annotation]]  # by the name of the step that found them (findings_by_step)
    screenshots: Sequence[tuple[Screenshot, str]]  # with the file it was saved to
    elapsed: float


def findings_by_step(steps: Sequence[StepResult], annotations: Sequence[Annotation]) -> dict[str, list[Annotation]]:
    """The run's findings under the analysis step that found them: the step each records (the runner
    sets it); one that records none (made before steps were recorded) goes under the one analysis step
    that ran, or under UNKNOWN_STEP when several did."""
    ran = [s.name for s in steps if s.stage == "analysis" and s.status != "skipped"]
    unrecorded = ran[0] if len(ran) == 1 else UNKNOWN_STEP
    grouped: dict[str, list[Annotation]] = {}
    for annotation in annotations:
        grouped.setdefault(annotation.step or unrecorded, []).append(annotation)
    return grouped


def step_tail(step: StepResult) -> str:
    """What a report shows of a step's output: the last lines of a passing one, all that was kept of another."""
    if step.status in ("passed", "restored"):
        return "\n".join(last_lines(step.output_tail))
    return clean_output(step.output_tail).strip("\n")


def finding_json(finding: Annotation) -> dict[str, Any]:
    return {"path": finding.path, "line": finding.start_line, "end_line": finding.end_line,
            "level": finding.annotation_level, "rule": finding.title or "", "message": finding.message}


def json_report(run: LocalRun) -> str:
    steps = [{"name": s.name, "stage": s.stage, "state": s.status, "exit_code": s.exit_code,
              "duration_seconds": round(s.duration_seconds, 3), "duration": duration(s.duration_seconds),
              "detail": s.detail, "note": s.note, "tail": step_tail(s),
              "findings": [finding_json(f) for f in run.findings.get(s.name, ())]} for s in run.steps]
    findings = [{**finding_json(f), "step": step or None} for step, found in run.findings.items() for f in found]
    document = {"format": JSON_FORMAT, "commit": run.sha, "conclusion": run.conclusion, "title": run.title,
                "duration_seconds": round(run.elapsed, 3), "duration": duration(run.elapsed),
                "notes": list(run.notes), "steps": steps, "findings": findings,
                "screenshots": [{"page": shot.path, "file": file, "width": shot.width, "height": shot.height}
                                for shot, file in run.screenshots]}
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
