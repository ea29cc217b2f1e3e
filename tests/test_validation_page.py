"""The validation page (a check run's details_url) in each state, over real HTTP, and the pure parts
that decide what it shows: every step listed from the start (pending, running, passed, failed,
skipped) with its duration, the failing step open, numbered and bounded logs, analysis findings,
and what a waiting or neutral run asks of a person."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from bot.store.validations import merged_progress
from dashboard.validation_view import LOG_LINES, findings_of, notice_for, numbered_lines, step_rows, with_code
from pipeline.repo_config.effective import EffectiveConfig
from pipeline.repo_config.steps import AnalysisStep, Step
from pipeline.repo_config.ui_block import UiConfig
from pipeline.report.local import finding_json, findings_by_step
from pipeline.results import Annotation, StepResult
from pipeline.validation.analysis_verdict import judge_analysis
from pipeline.validation.stages import planned_steps
from tests.dashboard_support import dashboard  # noqa: F401 - the fixture

CONFIG = EffectiveConfig(setup=("pip install -e .", "npm ci"),
                         validate=(Step("unit tests", "pytest -q"), Step("types", "mypy .")),
                         analysis=(AnalysisStep(name="ruff", run="ruff check --output-format sarif ."),),
                         ui=UiConfig(start="npm start", url="http://127.0.0.1:8080"))
PLANNED = planned_steps(CONFIG)
RUFF_FINDINGS = [Annotation("app.py", 12, 12, "failure", "Line too long (120 > 88)", title="E501"),
                 Annotation("pkg/util.py", 3, 3, "failure", "`os` imported but unused", title="F401"),
                 Annotation("pkg/util.py", 9, 9, "failure", "Unused variable", title=None)]


def step(name: str, stage: str, status: str, seconds: float, tail: str = "", detail: str = "") -> dict[str, Any]:
    return StepResult(name, stage, status, seconds, 0 if status == "passed" else 1, tail, detail).__dict__


def failed_with_findings() -> list[dict[str, Any]]:
    """A run that failed only for ruff's findings on the changed lines (pipeline/validation/analysis_verdict.py)."""
    ruff = judge_analysis(StepResult("ruff", "analysis", "passed", 2.4, 0, "ruff: 3 files checked\n"), RUFF_FINDINGS)
    return [step("checkout", "checkout", "passed", 1.2),
            step("pip install -e .", "setup", "passed", 500.0, "installed\n"),
            step("npm ci", "setup", "passed", 31.0), step("unit tests", "validate", "passed", 62.0, "297 passed\n"),
            step("types", "validate", "passed", 8.0), ruff.__dict__,
            step("UI check", "ui", "skipped", 0.0, detail="analysis did not pass")]


def recorded_findings(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The run's findings as the validation service records them in its results (RUFF_FINDINGS and a
    warning that does not fail the check)."""
    annotations = [*RUFF_FINDINGS, Annotation("pkg/util.py", 20, 20, "warning", "Missing docstring", title="D103")]
    results = [StepResult(**{k: v for k, v in s.items() if k != "note"}) for s in steps]
    return [{**finding_json(f), "step": name or None}
            for name, found in findings_by_step(results, annotations).items() for f in found]


# ---- pure: what the page decides ------------------------------------------------------------------

def test_the_plan_names_steps_as_the_runner_does() -> None:
    assert [(p["stage"], p["name"]) for p in PLANNED] == [
        ("checkout", "checkout"), ("setup", "pip install -e ."), ("setup", "npm ci"), ("validate", "unit tests"),
        ("validate", "types"), ("analysis", "ruff"), ("ui", "UI check")]
    assert [p["name"] for p in planned_steps(EffectiveConfig(setup=("make",)))] == ["checkout", "make"]


def test_a_passing_runs_ui_check_is_open_for_its_screenshots_and_the_other_passing_steps_closed() -> None:
    rows = step_rows([step("checkout", "checkout", "passed", 1.0), step("unit tests", "validate", "passed", 6.0),
                      step("UI check", "ui", "passed", 9.0, detail="2 pages")])
    assert [(r.name, r.open) for r in rows] == [("checkout", False), ("unit tests", False), ("UI check", True)]
    skipped = step_rows([step("UI check", "ui", "skipped", 0.0, detail="validate did not pass")])
    assert [r.open for r in skipped] == [False]


def test_a_running_run_lists_every_planned_step() -> None:
    rows = step_rows([step("checkout", "checkout", "passed", 1.0), step("pip install -e .", "setup", "passed", 500.0)],
                     planned=PLANNED, current="npm ci", current_stage="setup", current_elapsed=75.0,
                     current_tail="a\nb\n")
    assert [(r.name, r.state, r.duration) for r in rows] == [
        ("checkout", "passed", "1.0s"), ("pip install -e .", "passed", "8m 20s"), ("npm ci", "running", "1m 15s"),
        ("unit tests", "pending", ""), ("types", "pending", ""), ("ruff", "pending", ""), ("UI check", "pending", "")]
    assert [r.open for r in rows] == [False, False, True, False, False, False, False]
    assert rows[2].log == [(1, "a"), (2, "b")] and rows[3].state_label == "Pending"
    # a restored snapshot is a step the plan did not name: it is listed, and the plan still follows
    restored = step_rows([step("snapshot", "setup", "restored", 3.0)], planned=PLANNED, current="checkout",
                         current_stage="checkout")
    assert [r.name for r in restored][:3] == ["snapshot", "checkout", "pip install -e ."] and len(restored) == 8


def test_a_run_that_ended_midway_shows_how_far_it_got() -> None:
    rows = step_rows([step("checkout", "checkout", "passed", 1.0)], planned=PLANNED, current="pip install -e .",
                     current_stage="setup", running=False)
    assert [r.state for r in rows] == ["passed", "cancelled", "skipped", "skipped", "skipped", "skipped", "skipped"]


def test_the_failing_step_is_open_with_its_findings_listed() -> None:
    rows = step_rows(failed_with_findings())
    ruff = rows[5]
    assert (ruff.state, ruff.state_label, ruff.open, ruff.detail) == \
        ("failed", "Failed", True, "3 findings on changed lines")
    assert [r.name for r in rows if r.open] == ["ruff"]
    assert [(f.where, f.rule, f.message) for f in ruff.findings] == [
        ("app.py:12", "E501", "Line too long (120 > 88)"), ("pkg/util.py:3", "F401", "`os` imported but unused"),
        ("pkg/util.py:9", "", "Unused variable")]
    assert [line for _, line in ruff.log] == ["ruff: 3 files checked"]  # the findings are not repeated in the log


def test_findings_the_run_recorded_are_listed_failing_first() -> None:
    ruff = failed_with_findings()[5]
    recorded = [finding_json(Annotation(f"f{i}.py", i, i, "warning", "bad\n  thing", title="W1")) for i in range(1, 61)]
    recorded.append(finding_json(RUFF_FINDINGS[0]))
    found, more = findings_of(ruff, recorded)
    assert len(found) == 50 and more.startswith("... and 11 more")
    assert [(f.where, f.rule, f.level) for f in found[:2]] == [("app.py:12", "E501", "failure"),
                                                              ("f1.py:1", "W1", "warning")]
    assert found[1].message == "bad thing" and found[1].level_label == "warning"
    assert findings_of(step("tests", "validate", "failed", 1.0, "x.py:1 R1 m\n"), recorded) == ([], "")


def test_a_long_log_shows_its_last_lines_numbered() -> None:
    text = "\n".join(f"line {n}" for n in range(1, 1201)) + "\n"
    lines, total = numbered_lines(text)
    assert total == 1200 and len(lines) == LOG_LINES
    assert lines[0] == (701, "line 701") and lines[-1] == (1200, "line 1200")
    assert numbered_lines(text, limit=None)[0][0] == (1, "line 1")
    assert numbered_lines("") == ([], 0)


def test_the_live_record_keeps_the_plan_and_when_the_running_step_began() -> None:
    t0 = datetime(2026, 12, 7, 1, 0, tzinfo=UTC)
    live = merged_progress(None, {"planned": PLANNED, "steps": [], "current": "checkout", "stage": "checkout"}, now=t0)
    later = merged_progress(live, {"steps": [], "current": "checkout", "stage": "checkout", "tail": "x"},
                            now=t0 + timedelta(seconds=3))
    assert later["planned"] == PLANNED and later["current_started_at"] == t0.isoformat()
    moved = merged_progress(later, {"steps": [step("checkout", "checkout", "passed", 4.0)],
                                    "current": "pip install -e .", "stage": "setup", "tail": ""},
                            now=t0 + timedelta(seconds=6))
    assert moved["planned"] == PLANNED and moved["current_started_at"] == (t0 + timedelta(seconds=6)).isoformat()


def test_commands_and_the_config_path_are_code_kept_on_one_line() -> None:
    assert str(with_code("comment /ok-to-test <now> in .github/codegenapp.yml, not a/b or /x/y")) == (
        'comment <code class="nowrap">/ok-to-test</code> &lt;now&gt; in '
        '<code class="nowrap">.github/codegenapp.yml</code>, not a/b or /x/y')


def test_waiting_and_neutral_runs_say_why_and_what_to_do() -> None:
    waiting = notice_for(status="waiting", conclusion="action_required", title="Waiting for a maintainer: /ok-to-test",
                         has_steps=False, author="mallory", repository="acme/widgets", head_sha="abcdef1234",
                         error=None)
    assert waiting is not None and waiting.kind == "waiting"
    assert "@mallory" in waiting.text and "write access to acme/widgets" in waiting.text
    assert "/ok-to-test" in waiting.text and "abcdef1" in waiting.text
    neutral = notice_for(status="completed", conclusion="neutral", title="Nothing to validate", has_steps=False,
                         author=None, repository="acme/widgets", head_sha="abcdef1234", error=None)
    assert neutral is not None and ".github/codegenapp.yml" in neutral.text and "validate:" in neutral.example
    assert notice_for(status="completed", conclusion="success", title="Passed", has_steps=True, author=None,
                      repository="acme/widgets", head_sha="abcdef1234", error=None) is None


# ---- over HTTP ------------------------------------------------------------------------------------

@dataclass
class Page:
    status: int
    html: str

    def row(self, name: str) -> str:
        """The <li> of the step named `name`."""
        found = re.search(r'<li id="step-\d+" class="step [a-z_]+"[^>]*>\s*<details(?:(?!</details>).)*?'
                          rf'<span class="name">{re.escape(name)}</span>.*?</details>\s*</li>', self.html, re.S)
        assert found, f"no step {name!r} on the page"
        return found.group(0)

    def state_of(self, name: str) -> str:
        return re.search(r'class="step ([a-z_]+)"', self.row(name)).group(1)  # type: ignore[union-attr]


async def get_page(url: str) -> Page:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return Page(response.status, await response.text())


async def get_live(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(url + "/live") as response:
        assert response.status == 200
        return await response.json()


async def new_validation(dashboard, **options: Any) -> Any:  # noqa: F811 - the fixture
    project = await dashboard.services.store.projects.get_project_by_name("acme/widgets")
    return await dashboard.services.store.validations.create(
        project_id=project.id, pr_number=7, head_sha="abc1234" + "0" * 33, base_sha="b" * 40, **options)


async def running_validation(dashboard) -> Any:  # noqa: F811 - the fixture
    """A run of CONFIG in its second setup command, as the validation service records it."""
    validations = dashboard.services.store.validations
    state = await new_validation(dashboard, trigger="command.validate", triggered_by="dev-alice")
    assert await validations.start(state.id)
    await validations.set_plan(state.id, PLANNED)
    await validations.set_progress(state.id, {
        "steps": [step("checkout", "checkout", "passed", 1.2), step("pip install -e .", "setup", "passed", 500.0)],
        "current": "npm ci", "stage": "setup", "tail": "added 212 packages <b>\nnpm warn deprecated\n"})
    return state


async def test_a_running_validation_lists_its_steps_and_follows_the_running_one(dashboard) -> None:  # noqa: F811
    state = await running_validation(dashboard)
    url = f"{dashboard.url}/validations/{state.id}"
    page = await get_page(url)
    assert page.status == 200
    assert [page.state_of(p["name"]) for p in PLANNED] == \
        ["passed", "passed", "running", "pending", "pending", "pending", "pending"]
    assert '<span class="duration">8m 20s</span>' in page.row("pip install -e .")
    running = page.row("npm ci")
    assert "<details open>" in running and '<span class="state">Running</span>' in running
    assert ('<span class="ln" aria-hidden="true">1</span><span class="text">added 212 packages &lt;b&gt;</span>'
            in running)
    assert "<details open>" not in page.row("pip install -e .") and "Not started yet." in page.row("types")
    assert "Triggered by @dev-alice via /validate" in page.html
    assert 'href="/projects/acme/widgets"' in page.html
    assert '<span id="run-state" class="badge running">Running</span>' in page.html
    assert 'src="/static/validation-live.js' in page.html and "in_progress" not in page.html

    live = await get_live(url)
    assert live["running"] and live["state_label"] == "Running" and live["current"] == "npm ci"
    assert [(s["name"], s["state"], s["state_label"]) for s in live["steps"]][1:4] == [
        ("pip install -e .", "passed", "Passed"), ("npm ci", "running", "Running"),
        ("unit tests", "pending", "Pending")]
    assert live["current_key"] == "step-3"
    assert live["log"] == [[1, "added 212 packages <b>"], [2, "npm warn deprecated"]]


async def test_a_failed_validation_opens_its_failing_step_with_the_findings(dashboard) -> None:  # noqa: F811
    validations = dashboard.services.store.validations
    state = await new_validation(dashboard, trigger="pull_request.synchronize")
    assert await validations.start(state.id)
    assert await validations.complete(state.id, conclusion="failure", title="ruff: 3 findings on changed lines",
                                      results={"steps": failed_with_findings(),
                                               "notes": ["setup restored from snapshot"]})
    page = await get_page(f"{dashboard.url}/validations/{state.id}")
    assert page.status == 200 and '<span id="run-state" class="badge failed">Failed</span>' in page.html
    ruff = page.row("ruff")
    assert "<details open>" in ruff and "3 findings on changed lines" in ruff
    assert '✗ Failed: <a href="#step-6">ruff</a> — 3 findings on changed lines' in page.html
    assert ('<li class="failure"><code class="where">app.py:12</code> <span class="rule">E501</span> '
            '<span class="message">Line too long (120 &gt; 88)</span></li>') in ruff
    assert '<code class="where">pkg/util.py:9</code> <span class="message">Unused variable</span>' in ruff
    assert [name for name in ("checkout", "pip install -e .", "unit tests", "types")
            if "<details open>" in page.row(name)] == []
    assert page.state_of("UI check") == "skipped" and "analysis did not pass" in page.row("UI check")
    assert '<span class="duration">1m 2s</span>' in page.row("unit tests") and "297 passed" in page.row("unit tests")
    assert "Triggered via a push" in page.html and "setup restored from snapshot" in page.html
    assert "validation-live.js" not in page.html  # nothing to follow


async def test_a_long_log_is_bounded_with_a_way_to_show_all(dashboard) -> None:  # noqa: F811
    validations = dashboard.services.store.validations
    state = await new_validation(dashboard)
    assert await validations.start(state.id)
    long_tail = "".join(f"test_{n} PASSED\n" for n in range(1, 1201))
    assert await validations.complete(state.id, conclusion="success", title="Passed", results={
        "steps": [step("checkout", "checkout", "passed", 1.0),
                  step("unit tests", "validate", "passed", 500, long_tail)]})
    url = f"{dashboard.url}/validations/{state.id}"
    page = await get_page(url)
    tests = page.row("unit tests")
    assert "Showing the last 500 of 1200 lines." in tests and 'href="?full=1#step-2">Show all 1200 lines</a>' in tests
    assert ">701</span><span class=\"text\">test_701 PASSED<" in tests and "test_700 PASSED" not in tests
    full = (await get_page(url + "?full=1")).row("unit tests")
    assert ">1</span><span class=\"text\">test_1 PASSED<" in full and "Show all" not in full


async def test_a_passed_validation_keeps_its_steps_closed(dashboard) -> None:  # noqa: F811
    validations = dashboard.services.store.validations
    state = await new_validation(dashboard, trigger="api.retry", triggered_by="dev-bob")
    assert await validations.start(state.id)
    steps = [step("checkout", "checkout", "passed", 1.0), step("unit tests", "validate", "passed", 500, "297 passed\n")]
    assert await validations.complete(state.id, conclusion="success", title="Passed: 2 steps", results={"steps": steps})
    page = await get_page(f"{dashboard.url}/validations/{state.id}")
    assert '<span id="run-state" class="badge passed">Passed</span>' in page.html
    assert "<details open>" not in page.html and "Triggered by @dev-bob via the dashboard&#39;s Retry" in page.html
    assert [page.state_of(name) for name in ("checkout", "unit tests")] == ["passed", "passed"]


async def test_a_fork_waiting_for_approval_says_who_may_approve_it(dashboard) -> None:  # noqa: F811
    validations = dashboard.services.store.validations
    state = await new_validation(dashboard, is_fork=True, author="mallory")
    assert await validations.wait_for_approval(state.id, title="Waiting for a maintainer: /ok-to-test")
    page = await get_page(f"{dashboard.url}/validations/{state.id}")
    assert page.status == 200 and '<section id="notice" class="notice waiting">' in page.html
    assert '<span id="run-state" class="badge waiting">Waiting for approval</span>' in page.html
    assert "@mallory has no write access to acme/widgets" in page.html
    assert 'someone with write access comments <code class="nowrap">/ok-to-test</code>' in page.html
    assert "abc1234 only" in page.html and '<code class="nowrap">/ok-to-test</code></span></h1>' in page.html
    assert "action_required" not in page.html and 'id="steps"' not in page.html


async def test_a_neutral_run_without_config_shows_how_to_add_one(dashboard) -> None:  # noqa: F811
    validations = dashboard.services.store.validations
    state = await new_validation(dashboard)
    assert await validations.start(state.id)
    assert await validations.complete(state.id, conclusion="neutral", title="Nothing to validate", results={})
    page = await get_page(f"{dashboard.url}/validations/{state.id}")
    assert '<section id="notice" class="notice no_config">' in page.html
    assert '<span id="run-state" class="badge neutral">Neutral</span>' in page.html
    assert 'has no <code class="nowrap">.github/codegenapp.yml</code> on its base branch' in page.html
    assert "validate:\n  - name: tests\n    run: pytest -q" in page.html
    assert 'href="/projects/acme/widgets/settings"' in page.html


async def test_a_queued_validation_says_it_waits_for_a_worker(dashboard) -> None:  # noqa: F811
    state = await new_validation(dashboard)
    url = f"{dashboard.url}/validations/{state.id}"
    page = await get_page(url)
    assert 'id="queued"' in page.html and '<span id="run-state" class="badge running">Queued</span>' in page.html
    assert (await get_live(url))["steps"] == []

