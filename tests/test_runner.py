"""The pipeline runner on a real workspace and the real sandbox, without GitHub."""

import shutil
from pathlib import Path

import pytest

from bot.redact import Redactor
from pipeline.repo_config.effective import EffectiveConfig
from pipeline.repo_config.steps import Step
from pipeline.validation.stages import PipelineRunner, RunPlan, read_workspace_file
from pipeline.sandbox.sandbox import Sandbox, SandboxUnavailable
from pipeline.repo_config.ui_block import UiConfig

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap not installed: `make install`")


def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "ws"
    path.mkdir()
    (path / "app.py").write_text("print('hi')\n")
    return path


@needs_bwrap
@pytest.mark.slow
async def test_the_whole_run_is_bounded_by_timeout_minutes(tmp_path: Path) -> None:
    config = EffectiveConfig(validate=(Step("slow", "sleep 30"), Step("after", "true")), timeout_minutes=0.02)
    plan = RunPlan(workspace=workspace(tmp_path), config=config, tracked_files=frozenset({"app.py"}))
    outcome = await PipelineRunner(await Sandbox.probe()).run(plan, redactor=Redactor())
    assert outcome.conclusion == "timed_out" and outcome.timed_out
    assert [(s.name, s.status) for s in outcome.steps] == [("slow", "timed_out"), ("after", "skipped")]


@needs_bwrap
async def test_a_failed_setup_skips_validation_and_output_is_masked(tmp_path: Path) -> None:
    config = EffectiveConfig(setup=("echo using $TOKEN; exit 4",), validate=(Step("tests", "true"),))
    plan = RunPlan(workspace=workspace(tmp_path), config=config, tracked_files=frozenset({"app.py"}),
                   secrets={"TOKEN": "sekrit-value-1"})
    outcome = await PipelineRunner(await Sandbox.probe()).run(plan, redactor=Redactor(["sekrit-value-1"]))
    assert outcome.conclusion == "failure"
    assert [(s.stage, s.status) for s in outcome.steps] == [("setup", "failed"), ("validate", "skipped")]
    assert outcome.steps[0].output_tail.strip() == "using ***"


async def test_without_bubblewrap_pr_code_is_refused(tmp_path: Path) -> None:
    sandbox = await Sandbox.probe(bwrap="/nonexistent/bwrap")
    plan = RunPlan(workspace=workspace(tmp_path), config=EffectiveConfig(validate=(Step("t", "true"),)),
                   tracked_files=frozenset())
    with pytest.raises(SandboxUnavailable):
        await PipelineRunner(sandbox).run(plan, redactor=Redactor())


def test_reading_a_report_never_follows_a_planted_link(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    (tmp_path / "host-secret").write_text("top secret")
    (ws / "report.sarif").symlink_to(tmp_path / "host-secret")
    (ws / "dir").symlink_to(tmp_path)
    for path in ("report.sarif", "dir/host-secret", "../host-secret", "/etc/passwd"):
        with pytest.raises(OSError):
            read_workspace_file(ws, path, 1000)
    (ws / "real.sarif").write_text("{}")
    assert read_workspace_file(ws, "real.sarif", 1000) == b"{}"


@needs_bwrap
async def test_the_ui_check_is_skipped_when_a_validate_step_failed(tmp_path: Path) -> None:
    ui = UiConfig(start="sleep 30", url="http://127.0.0.1:8080")
    config = EffectiveConfig(validate=(Step("tests", "exit 1"), Step("lint", "true")), ui=ui)
    plan = RunPlan(workspace=workspace(tmp_path), config=config, tracked_files=frozenset({"app.py"}))
    outcome = await PipelineRunner(await Sandbox.probe()).run(plan, redactor=Redactor())
    assert [(s.name, s.stage, s.status, s.detail) for s in outcome.steps][-1] == \
        ("UI check", "ui", "skipped", "validate did not pass")
    assert outcome.conclusion == "failure" and outcome.screenshots == []


@needs_bwrap
async def test_a_ui_check_that_breaks_fails_its_step_and_keeps_the_other_results(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pipeline.validation.stages as runner_module

    async def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("Target page, context or browser has been closed (secret-value-7)")

    monkeypatch.setattr(runner_module, "run_ui_check", broken)
    ui = UiConfig(start="sleep 30", url="http://127.0.0.1:8080")
    config = EffectiveConfig(validate=(Step("tests", "true"),), ui=ui)
    plan = RunPlan(workspace=workspace(tmp_path), config=config, tracked_files=frozenset({"app.py"}))
    outcome = await PipelineRunner(await Sandbox.probe()).run(plan, redactor=Redactor(["secret-value-7"]))
    assert [(s.name, s.status) for s in outcome.steps] == [("tests", "passed"), ("UI check", "failed")]
    ui_step = outcome.steps[-1]
    assert ui_step.detail.startswith("the UI check broke: RuntimeError: Target page")
    assert "secret-value-7" not in ui_step.detail + ui_step.output_tail
    assert outcome.conclusion == "failure"
