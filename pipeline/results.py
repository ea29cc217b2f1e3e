"""What a validation run produced, as plain data: its steps' results, the annotations found, the UI
check's screenshots and the run's outcome. No I/O and no imports from the rest of the pipeline but the
pure network_note: the runner (pipeline/validation/stages.py) and the UI check fill these in, the
renderer (pipeline/report/) shows them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.network_note import network_note

STAGES = ("checkout", "setup", "validate", "analysis", "ui")
STATUSES = ("passed", "failed", "skipped", "cancelled", "timed_out", "restored")
LEVELS = ("notice", "warning", "failure")
CONCLUSIONS = ("success", "failure", "cancelled", "timed_out", "action_required", "neutral", "skipped", "stale")


@dataclass(frozen=True)
class StepResult:
    """One step of a run as it ended (or so far)."""

    name: str
    stage: str
    status: str
    duration_seconds: float
    exit_code: int | None = None
    output_tail: str = ""  # masked; kept for every step, a passing one too (its last lines say what it ran)
    detail: str = ""
    note: str = ""  # a hint for the reader; by default, why a failed offline step may have failed (network_note)

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {self.stage!r}")
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")
        if not self.note:  # derived here, so every way a step result is made carries it
            object.__setattr__(self, "note", network_note(self.stage, self.status, self.output_tail))


@dataclass(frozen=True)
class Annotation:
    """A check-run annotation; lines are 1-based and inclusive, columns too. As the Checks API takes
    it: pipeline/report/annotations.py (`annotation_payload`, which leaves `step` out)."""

    path: str
    start_line: int
    end_line: int
    annotation_level: str
    message: str
    title: str | None = None
    raw_details: str | None = None
    start_column: int | None = None
    end_column: int | None = None
    step: str = ""  # the analysis step that found it (the runner records it); "" when not known

    def __post_init__(self) -> None:
        if self.annotation_level not in LEVELS:
            raise ValueError(f"annotation_level must be one of {LEVELS}, got {self.annotation_level!r}")
        if self.start_line < 1 or self.end_line < self.start_line:
            raise ValueError(f"bad line range {self.start_line}-{self.end_line}")


@dataclass(frozen=True)
class Screenshot:
    """A screenshot the UI check took of one page."""

    path: str  # the page's path
    file: str  # file name under the run's screenshot directory (an unguessable token + .png)
    width: int
    height: int


@dataclass
class RunOutcome:
    """How a run ended: its steps in order, the annotations kept, the conclusion and notes for the report."""

    steps: list[StepResult]
    annotations: list[Annotation]
    conclusion: str
    notes: list[str]
    timed_out: bool = False
    snapshot_key: str | None = None
    screenshots: list[Screenshot] = field(default_factory=list)


# ---- findings, as every report lists them ----------------------------------------------------------------

LISTED_FINDINGS = 50  # a report lists at most this many findings, then says how many more


def finding_text(path: str | None, line: int | None, rule: str | None, message: str | None) -> str:
    """`app.py:12 E501 line too long`: where, which rule, what (one line)."""
    said = " ".join(str(message or "").split())
    return f"{path or '?'}:{line or '?'}{f' {rule}' if rule else ''} {said}".rstrip()


def stored_failing_findings(results: Mapping[str, Any] | None) -> dict[str, list[str]]:
    """The findings that failed the check, from a validation's stored results (`test_results["findings"]`,
    each with the `step` that found it), as lines under that step's name; one that names no step goes
    under the one analysis step that ran. Results stored before findings were have none."""
    stored = (results or {}).get("findings")
    if not isinstance(stored, list):
        return {}
    steps: Sequence[Any] = (results or {}).get("steps") or []
    ran = [str(s.get("name")) for s in steps
           if isinstance(s, Mapping) and s.get("stage") == "analysis" and s.get("status") != "skipped"]
    grouped: dict[str, list[str]] = {}
    for finding in stored:
        if not isinstance(finding, Mapping) or finding.get("level", "failure") != "failure":
            continue  # a notice or a warning does not fail the check
        step = finding.get("step") or (ran[0] if len(ran) == 1 else None)
        if step:
            grouped.setdefault(str(step), []).append(
                finding_text(finding.get("path"), finding.get("line"), finding.get("rule"), finding.get("message")))
    return grouped
