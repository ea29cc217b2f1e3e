"""The pipeline runner on a real workspace and the real sandbox, without GitHub."""

import os
from pathlib import Path

import pytest

from bot.redact import Redactor
from pipeline.repo_config.effective import EffectiveConfig
from pipeline.repo_config.steps import Step
from pipeline.validation.stages import PipelineRunner, RunPlan, read_workspace_file
from pipeline.sandbox.sandbox import Sandbox, SandboxUnavailable
from pipeline.repo_config.ui_block import UiConfig
from pipeline.workspace.snapshots import SnapshotStore
from tests.sandbox_support import needs_bwrap


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


NETWORK_PROBE = "cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' ' | tr '\\n' ' '"


@needs_bwrap
async def test_setup_gets_a_network_of_its_own_and_setup_network_false_none(tmp_path: Path) -> None:
    sandbox = await Sandbox.probe()
    if not sandbox.capabilities.user_network:
        pytest.skip(f"no user-mode network here: {sandbox.capabilities.notes}")
    for setup_network, interfaces in ((True, "lo tap0"), (False, "lo")):
        config = EffectiveConfig(setup=(NETWORK_PROBE,), setup_network=setup_network)
        (tmp_path / str(setup_network)).mkdir()
        plan = RunPlan(workspace=workspace(tmp_path / str(setup_network)), config=config, tracked_files=frozenset())
        outcome = await PipelineRunner(sandbox).run(plan, redactor=Redactor())
        assert outcome.steps[0].output_tail.strip() == interfaces, outcome.steps


@needs_bwrap
async def test_setup_with_network_fails_closed_without_slirp4netns(tmp_path: Path) -> None:
    sandbox = await Sandbox.probe(slirp4netns="/nonexistent/slirp4netns")
    config = EffectiveConfig(setup=("echo ran > ran",), validate=(Step("tests", "true"),))
    plan = RunPlan(workspace=workspace(tmp_path), config=config, tracked_files=frozenset({"app.py"}))
    outcome = await PipelineRunner(sandbox).run(plan, redactor=Redactor())
    assert [(s.name, s.status, s.detail) for s in outcome.steps] == \
        [("echo ran > ran", "failed", "no safe network on the app's host"), ("tests", "skipped", "setup failed")]
    assert "apt-get install slirp4netns" in outcome.steps[0].output_tail
    assert "setup_network: false" in outcome.steps[0].output_tail
    assert not (plan.workspace / "ran").exists() and outcome.conclusion == "failure"


@needs_bwrap
async def test_a_steps_cpu_limit_follows_timeout_minutes(tmp_path: Path) -> None:
    config = EffectiveConfig(validate=(Step("limits", "grep 'Max cpu time' /proc/self/limits"),), timeout_minutes=20)
    plan = RunPlan(workspace=workspace(tmp_path), config=config, tracked_files=frozenset({"app.py"}))
    outcome = await PipelineRunner(await Sandbox.probe()).run(plan, redactor=Redactor())
    soft = int(outcome.steps[0].output_tail.split()[3])
    cpus = len(os.sched_getaffinity(0))
    # The 20 minutes left when the step started, on every CPU: never the 600 s it once was.
    assert 19 * 60 * cpus < soft <= 20 * 60 * cpus, outcome.steps[0].output_tail


@needs_bwrap
@pytest.mark.slow
async def test_setup_can_download_a_package(tmp_path: Path) -> None:
    sandbox = await Sandbox.probe()
    if not sandbox.capabilities.user_network:
        pytest.skip(f"no user-mode network here: {sandbox.capabilities.notes}")
    config = EffectiveConfig(setup=("python3 -m pip download --no-deps --no-cache-dir --dest dl six",),
                             timeout_minutes=3)
    plan = RunPlan(workspace=workspace(tmp_path), config=config, tracked_files=frozenset({"app.py"}))
    outcome = await PipelineRunner(sandbox).run(plan, redactor=Redactor())
    if "No module named pip" in outcome.steps[0].output_tail:
        pytest.skip("the host's python3 has no pip")
    assert outcome.steps[0].status == "passed", outcome.steps[0].output_tail
    assert any(name.startswith("six-") for name in os.listdir(plan.workspace / "dl"))


# ---- setup snapshots: a warm start, never a different verdict ----------------------------------------------

# A build that, like make or setuptools' build_ext, skips its output when it is newer than its source.
BUILD = ("[ build/greeting.txt -nt src/greeting.txt ] || "
         "{ mkdir -p build && cp src/greeting.txt build/greeting.txt && echo built; }")
BUILD_STEP = "[ build/greeting.txt -nt src/greeting.t…"  # named after its command, cut (setup_step_names)
BUILT_GREETING = EffectiveConfig(setup=(BUILD,), validate=(Step("greeting", "grep -qx hello build/greeting.txt"),))


def commit_checkout(path: Path, files: dict[str, str]) -> RunPlan:
    for rel, text in files.items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_text(text)
    return RunPlan(workspace=path, config=BUILT_GREETING, tracked_files=frozenset(files), snapshot_scope="7:trusted")


@needs_bwrap
async def test_a_restored_snapshot_gives_the_verdict_of_a_cold_run(tmp_path: Path) -> None:
    runner = PipelineRunner(await Sandbox.probe(), SnapshotStore(tmp_path / "snapshots"))
    main = await runner.run(commit_checkout(tmp_path / "main", {"src/greeting.txt": "hello\n"}), redactor=Redactor())
    assert main.conclusion == "success" and main.notes == ["setup saved as a snapshot for the next validation"]

    pull_request = {"src/greeting.txt": "goodbye\n"}  # the PR changes the source the build copies
    warm = await runner.run(commit_checkout(tmp_path / "warm", pull_request), redactor=Redactor())
    cold = await PipelineRunner(await Sandbox.probe()).run(commit_checkout(tmp_path / "cold", pull_request),
                                                           redactor=Redactor())
    assert [(s.name, s.status) for s in warm.steps] == [("snapshot", "restored"), (BUILD_STEP, "passed"),
                                                        ("greeting", "failed")]
    assert warm.steps[1].output_tail.strip() == "built"  # the restored build/ was rebuilt from this commit
    assert warm.conclusion == cold.conclusion == "failure"
    assert warm.notes == ["setup restored from snapshot, then run on it"]


@needs_bwrap
async def test_without_cache_key_a_changed_dependency_file_means_a_cold_setup(tmp_path: Path) -> None:
    runner = PipelineRunner(await Sandbox.probe(), SnapshotStore(tmp_path / "snapshots"))
    files = {"src/greeting.txt": "hello\n", "requirements.txt": "left-pad==1\n", "app.py": "v = 1\n"}
    await runner.run(commit_checkout(tmp_path / "one", files), redactor=Redactor())
    same_deps = await runner.run(commit_checkout(tmp_path / "two", {**files, "app.py": "v = 2\n"}), redactor=Redactor())
    assert same_deps.steps[0].status == "restored"
    dropped = await runner.run(commit_checkout(tmp_path / "three", {**files, "requirements.txt": ""}),
                               redactor=Redactor())
    assert [(s.name, s.status) for s in dropped.steps if s.stage == "setup"] == [(BUILD_STEP, "passed")]  # cold
