"""Whether an analysis step passed, from its findings on the lines the PR changed (pure): a step whose
findings fail the check is a failed step, and says which findings, so the title, the step table, the
check run's text, the PR comment, the validation page and an agent's fix prompt all tell the same story."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from pipeline.results import LISTED_FINDINGS, Annotation, StepResult, finding_text


def finding_line(finding: Annotation) -> str:
    """`app.py:12 E501 line too long`: where, which rule, what."""
    return finding_text(finding.path, finding.start_line, finding.title, finding.message)


def judge_analysis(step: StepResult, findings: Sequence[Annotation]) -> StepResult:
    """The analysis step as the check sees it: failed when any of its `findings` (already limited to
    the lines the PR changed) is at failure level, with those findings listed in its output."""
    if step.stage != "analysis" or step.status != "passed":
        return step
    failing = [f for f in findings if f.annotation_level == "failure"]
    if not failing:
        return step
    count = f"{len(failing)} finding{'s' if len(failing) != 1 else ''} on changed lines"
    listed = [finding_line(f) for f in failing[:LISTED_FINDINGS]]
    if len(failing) > LISTED_FINDINGS:
        listed.append(f"... and {len(failing) - LISTED_FINDINGS} more (see the check run's annotations)")
    tail = "\n".join(listed) + ("\n\n" + step.output_tail if step.output_tail.strip() else "")
    # no exit code: the findings failed it, not the command (which may well have exited 0)
    return dataclasses.replace(step, status="failed", exit_code=None, detail=count, output_tail=tail)
