"""Three gaps of issue 15, end to end through the runner and every report:

1. Setup steps carry one name everywhere: the runner's, the planned steps' (the validation page), the
   check run's, the comment's and the CLI's (stages.setup_step_names: named after their command).
2. A passing validate or analysis step shows the last lines it printed (pytest's "297 passed"): folded
   in `<details>` in the check run's text, in its row's summary on the validation page, and as one last
   line in the sticky comment's step table; masked as a failing step's output is.
3. Findings belong to the analysis step that found them (recorded by the runner), and every report lists
   them under it; results stored before that stay readable.

The check-run and comment Markdown is read as GitHub renders it (markdown-it-py, HTML on, tables)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from markdown_it import MarkdownIt

from bot.redact import Redactor
from dashboard.validation_view import step_rows
from pipeline.repo_config.effective import EffectiveConfig
from pipeline.repo_config.steps import AnalysisStep, Step
from pipeline.report.check_run import OUTPUT_LIMIT, check_run_output
from pipeline.report.comment import render_comment
from pipeline.report.local import UNKNOWN_STEP, LocalRun, finding_json, findings_by_step, json_report
from pipeline.report.terminal import terminal_report
from pipeline.report.text import nbytes
from pipeline.results import Annotation, StepResult
from pipeline.sandbox.sandbox import Sandbox
from pipeline.validation.stages import PipelineRunner, RunPlan, planned_steps, setup_step_names
from tests.dashboard_support import dashboard  # noqa: F401 - the fixture
from tests.sandbox_support import needs_bwrap
from tests.test_validation_page import get_page, new_validation

GFM = MarkdownIt("commonmark", {"html": True}).enable("table")
SHA = "3f2a9c1d8e7b6a5f4e3d2c1b0a9f8e7d6c5b4a39"
PYTEST = "".join(f"tests/test_{n}.py ....\n" for n in range(20)) + "\x1b[32m==== 297 passed in 4.21s ====\x1b[0m\n"


def step(name: str, status: str = "passed", stage: str = "validate", tail: str = "", **kw: Any) -> StepResult:
    return StepResult(name, stage, status, 2.0, 0 if status == "passed" else kw.pop("exit_code", 1), tail, **kw)


def html_of(markdown: str) -> str:
    return GFM.render(markdown)


# ---- 1. one name for a setup step ----------------------------------------------------------------

SARIF = '''import json, sys
level, rule, line = sys.argv[1], sys.argv[2], int(sys.argv[3])
result = {"ruleId": rule, "level": level, "message": {"text": f"{rule} says no"},
          "locations": [{"physicalLocation": {"artifactLocation": {"uri": "app.py"}, "region": {"startLine": line}}}]}
print(json.dumps({"version": "2.1.0", "runs": [{"tool": {"driver": {"name": rule}}, "results": [result]}]}))
print(f"{rule}: 1 file checked", file=sys.stderr)
'''
CONFIG = EffectiveConfig(
    setup=("echo installed 3 packages", "echo installed 3 packages", "true"),
    validate=(Step("tests", "printf '%s' \"$PYTEST_OUT\"; echo \"using $API_TOKEN\"; echo 297 passed"),),
    analysis=(AnalysisStep("lint", "python3 sarif.py error E1 1"),
              AnalysisStep("style", "python3 sarif.py warning W2 2")),
    env={"PYTEST_OUT": PYTEST})
SECRET = "sekrit-value-7f3e"


async def run_config(tmp_path: Path) -> Any:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "app.py").write_text("a = 1\nb = 2\n")
    (workspace / "sarif.py").write_text(SARIF)
    plan = RunPlan(workspace=workspace, config=CONFIG, tracked_files=frozenset({"app.py", "sarif.py"}),
                   secrets={"API_TOKEN": SECRET})
    return await PipelineRunner(await Sandbox.probe()).run(plan, redactor=Redactor([SECRET]))


def test_setup_steps_are_named_after_their_commands_in_the_plan() -> None:
    names = setup_step_names(CONFIG.setup)
    assert names == ["echo installed 3 packages", "echo installed 3 packages (2)", "true"]
    assert [p["name"] for p in planned_steps(CONFIG) if p["stage"] == "setup"] == names
    assert setup_step_names(["  pip install \\\n  -e .\n"]) == ["pip install \\"]
    assert all("setup 1" not in p["name"] for p in planned_steps(CONFIG))


@needs_bwrap
async def test_one_run_through_every_report(tmp_path: Path) -> None:
    outcome = await run_config(tmp_path)
    steps = outcome.steps
    # 1. the runner names setup steps as the plan does (so the page's planned rows become its results)
    assert [(s.stage, s.name) for s in steps] == [(p["stage"], p["name"]) for p in planned_steps(CONFIG)[1:]]
    assert [s.status for s in steps] == ["passed", "passed", "passed", "passed", "failed", "passed"]
    output = check_run_output(steps, head_sha=SHA, conclusion=outcome.conclusion, details_url=None,
                              findings=outcome.annotations)
    comment = render_comment(steps, head_sha=SHA, conclusion=outcome.conclusion, findings=outcome.annotations)
    assert "<code>echo installed 3 packages (2)</code>" in html_of(output["summary"])
    assert "<code>echo installed 3 packages (2)</code>" in html_of(comment)
    assert "setup 1" not in output["summary"] + comment

    # 2. the passing step's last lines, masked as a failing step's output is
    tests = steps[3]
    assert tests.output_tail.rstrip().endswith("using ***\n297 passed")
    text = html_of(output["text"])
    assert "<summary>✓ <code>tests</code> (validate): <code>297 passed</code></summary>" in text
    assert "==== 297 passed in 4.21s ====\nusing ***\n297 passed" in text
    page = [(r.tail, r.log) for r in step_rows([s.__dict__ for s in steps])]
    assert SECRET not in json.dumps([output, comment, page]) and "using ***" in page[3][0][-2]

    # 3. each finding names the step that found it, and is listed under it
    assert [(a.step, a.title, a.annotation_level) for a in outcome.annotations] == [
        ("lint", "E1", "failure"), ("style", "W2", "warning")]
    assert {name: [a.title for a in found] for name, found in findings_by_step(steps, outcome.annotations).items()} \
        == {"lint": ["E1"], "style": ["W2"]}
    # the check run: lint failed by its finding, which its section lists; style passed with a warning
    assert re.search(r"<h3><code>lint</code> \(analysis\) failed</h3>\n<pre><code[^>]*>app.py:1 E1 E1 says no", text)
    style = re.search(r"<details>\n<summary>✓ <code>style</code> \(analysis\).*?</details>", text, re.S)[0]
    assert "<code>W2: 1 file checked</code></summary>" in style and "<code>app.py:2</code> <code>W2</code>" in style
    # the comment: a findings list per step, named
    assert "**`lint`: 1 finding on changed lines**" in comment and "**`style`: 1 finding on changed lines**" in comment
    assert comment.index("`lint`: 1 finding") < comment.index("E1 says no") < comment.index("`style`: 1 finding")
    # the page: stored as the validation service stores them
    stored = [{**finding_json(f), "step": name or None}
              for name, found in findings_by_step(steps, outcome.annotations).items() for f in found]
    rows = {r.name: r for r in step_rows([s.__dict__ for s in steps], findings=stored)}
    assert [(f.where, f.rule) for f in rows["lint"].findings] == [("app.py:1", "E1")]
    assert [(f.where, f.rule, f.level) for f in rows["style"].findings] == [("app.py:2", "W2", "warning")]
    # the CLI, for a terminal and as JSON
    run = LocalRun(sha=SHA, title=output["title"], conclusion=outcome.conclusion, steps=steps, notes=[],
                   findings=findings_by_step(steps, outcome.annotations), screenshots=[], elapsed=3.0)
    shown = terminal_report(run).split("\n")
    lint, style_row = (next(i for i, line in enumerate(shown) if f"  {name} " in line) for name in ("lint", "style"))
    assert "app.py:1 E1 E1 says no" in shown[lint + 1] and "app.py:2 W2 W2 says no" in shown[style_row + 1]
    document = json.loads(json_report(run))
    assert [(s["name"], [f["rule"] for f in s["findings"]]) for s in document["steps"]][-2:] == \
        [("lint", ["E1"]), ("style", ["W2"])]
    assert [f["step"] for f in document["findings"]] == ["lint", "style"]


# ---- 2. a passing step's last lines ---------------------------------------------------------------

PASSED = [step("checkout", stage="checkout", tail="Cloning into 'src'...\n"),
          step("npm ci", stage="setup", tail="added 212 packages\n"),
          step("pytest", tail=PYTEST), step("silent"), step("UI check", stage="ui", tail="opened /\n")]


def test_the_check_run_text_folds_each_passing_steps_last_lines() -> None:
    output = check_run_output(PASSED, head_sha=SHA, conclusion="success", details_url=None)
    html = html_of(output["text"])
    assert html.count("<details>") == 1  # pytest: the only validate or analysis step that printed
    assert "<summary>✓ <code>pytest</code> (validate): <code>==== 297 passed in 4.21s ====</code></summary>" in html
    pre = re.search(r"<pre><code[^>]*>(.*?)</code></pre>", html, re.S)[1]
    assert pre.splitlines() == [*(f"tests/test_{n}.py ...." for n in range(16, 20)), "==== 297 passed in 4.21s ===="]
    assert "\x1b" not in output["text"] and "added 212 packages" not in html and "opened /" not in html
    assert check_run_output(PASSED[:2], head_sha=SHA, conclusion="success", details_url=None)["text"] == ""


def test_failing_output_comes_first_and_passing_tails_never_crowd_it_out() -> None:
    failing = step("build", "failed", tail="x" * 200 + "\n" + "error: it broke\n")
    many = [step(f"check {n}", tail="".join(f"{n}-{i} " + "y" * 230 + "\n" for i in range(5))) for n in range(40)]
    text = check_run_output([failing, *many], head_sha=SHA, conclusion="failure", details_url=None)["text"]
    assert nbytes(text) <= OUTPUT_LIMIT
    assert text.startswith("### `build` (validate) failed") and "error: it broke" in text
    assert text.index("error: it broke") < text.index("### Passing steps")
    shown = text.count("<details>")
    assert 0 < shown < 40 and f"*{40 - shown} more passing steps: see the details page.*" in text
    huge = step("build", "failed", tail="".join(f"line {i}\n" for i in range(20000)))
    text = check_run_output([huge, *many], head_sha=SHA, conclusion="failure", details_url=None)["text"]
    assert nbytes(text) <= OUTPUT_LIMIT and "line 19999" in text and "<details>" in text


def test_the_comment_keeps_one_last_line_of_a_passing_validate_step_in_its_table() -> None:
    steps = [*PASSED, step("npm test", tail="> jest\n@types/node " + "z" * 80 + "\n"),
             step("ruff", stage="analysis", tail="All checks passed!\n")]
    body = render_comment(steps, head_sha=SHA, conclusion="success")
    html = html_of(body)
    rows = re.findall(r"<tr>\n(.*?)</tr>", html, re.S)[1:]
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", row)[1] for row in rows]
    assert cells[2] == "<code>pytest</code> · <code>297 passed in 4.21s</code>"  # without the rule of =
    assert cells[3] == "<code>silent</code>"  # printed nothing
    assert cells[5] == "<code>npm test</code> · <code>@types/node " + "z" * 47 + "…</code>"  # code: no @mention
    assert cells[1] == "<code>npm ci</code>" and cells[6] == "<code>ruff</code>"  # validate steps only
    assert "<details>" not in html  # still short


def test_the_validation_page_shows_a_passing_steps_last_line_while_it_is_folded() -> None:
    rows = step_rows([s.__dict__ for s in PASSED] + [step("lint", "failed", tail="bad\n").__dict__])
    assert rows[2].tail[-1] == rows[2].last_line == "==== 297 passed in 4.21s ===="
    assert len(rows[2].tail) == 5 and not rows[2].open
    assert [r.last_line for r in rows] == ["", "", rows[2].last_line, "", "", ""]  # not setup, the UI check, a failure


async def test_the_page_renders_the_last_line_in_the_steps_summary(dashboard) -> None:  # noqa: F811
    validations = dashboard.services.store.validations
    state = await new_validation(dashboard, trigger="pull_request.synchronize")
    assert await validations.start(state.id)
    steps = [*PASSED[:3], step("lint", "failed", stage="analysis", tail="bad <b>\n")]
    assert await validations.complete(state.id, conclusion="failure", title="lint failed in analysis",
                                      results={"steps": [s.__dict__ for s in steps]})
    page = await get_page(f"{dashboard.url}/validations/{state.id}")
    summary = re.search(r'<li id="step-3".*?<summary>(.*?)</summary>', page.html, re.S)[1]
    assert '<span class="tail" title="What it printed last">==== 297 passed in 4.21s ====</span>' in summary
    assert 'class="tail"' not in re.search(r'<li id="step-4".*?</li>', page.html, re.S)[0]


# ---- 3. results stored before findings named their step ------------------------------------------

def test_old_results_without_the_step_of_a_finding_stay_readable() -> None:
    lint = step("lint", "failed", stage="analysis", tail="app.py:1 E1 E1 says no\n\nlint: 1 file\n",
                exit_code=None, detail="1 finding on changed lines")
    style = step("style", stage="analysis", detail="1 finding(s)")
    old = [{**finding_json(Annotation("app.py", 1, 1, "failure", "E1 says no", title="E1")), "step": None},
           {**finding_json(Annotation("app.py", 2, 2, "warning", "W2 says no", title="W2")), "step": None}]
    rows = {r.name: r for r in step_rows([lint.__dict__, style.__dict__], findings=old)}
    assert [(f.where, f.rule) for f in rows["lint"].findings] == [("app.py:1", "E1")]  # from its output
    assert rows["style"].findings == []  # which step warned is not known: not put under the wrong one
    one = {r.name: r for r in step_rows([lint.__dict__], findings=old)}  # one analysis step: all are its own
    assert [f.rule for f in one["lint"].findings] == ["E1", "W2"]
    # annotations made without a step: under the one analysis step, else under none
    found = [Annotation("app.py", 1, 1, "failure", "E1 says no", title="E1")]
    assert findings_by_step([lint, style], found) == {UNKNOWN_STEP: found}
    assert findings_by_step([lint], found) == {"lint": found}
    body = render_comment([lint, style], head_sha=SHA, conclusion="failure", findings=found)
    assert "**1 finding on changed lines**" in body  # no step named: not known
