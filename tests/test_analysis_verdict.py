"""An analysis step's verdict from its findings on changed lines (pure)."""

from pipeline.report.check_run import run_title
from pipeline.results import Annotation, StepResult
from pipeline.validation.analysis_verdict import LISTED_FINDINGS, judge_analysis


def finding(line: int, level: str = "failure") -> Annotation:
    return Annotation("app.py", line, line, level, f"problem  on\nline {line}", title="E1")


def test_a_step_whose_findings_fail_the_check_is_a_failed_step_that_lists_them() -> None:
    steps = [StepResult("checkout", "checkout", "passed", 0.1), StepResult("pytest", "validate", "passed", 2.0),
             judge_analysis(StepResult("ruff", "analysis", "passed", 0.5, output_tail="ruff ran"),
                            [finding(3), finding(7), finding(9, "warning")])]
    ruff = steps[-1]
    assert (ruff.status, ruff.detail) == ("failed", "2 findings on changed lines")
    assert ruff.output_tail == "app.py:3 E1 problem on line 3\napp.py:7 E1 problem on line 7\n\nruff ran"
    assert run_title(steps, "failure", None, None) == "ruff: 2 findings on changed lines — 2 of 3 steps passed"
    failing_command = StepResult("ruff", "analysis", "failed", 0.5, exit_code=2, detail="exit 2")
    assert run_title([*steps[:2], failing_command], "failure", None, None) == "ruff failed in analysis — 2 of 3 steps passed"


def test_warnings_alone_or_no_findings_pass_and_a_long_list_is_cut() -> None:
    clean = StepResult("ruff", "analysis", "passed", 0.5)
    assert judge_analysis(clean, [finding(1, "warning"), finding(2, "notice")]) == clean
    assert judge_analysis(clean, []) == clean
    many = judge_analysis(clean, [finding(n) for n in range(1, LISTED_FINDINGS + 8)])
    lines = many.output_tail.splitlines()
    assert len(lines) == LISTED_FINDINGS + 1 and lines[-1].startswith("... and 7 more")
