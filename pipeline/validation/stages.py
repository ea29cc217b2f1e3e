"""Runs the stages of a validation on a checked-out workspace: setup (or its snapshot), validate
steps, analysis. Knows nothing of GitHub: the check-run shell (pipeline/validation/service.py) and the local
`codegenapp validate` both drive it.

Everything a step prints is masked (every secret value, plain, base64 and URL-encoded) before it is
kept, so nothing later can leak it into a check run, a comment, a log or the database. Output cut
short (the live tail, the head and tail the sandbox keeps of a long output) is masked as an excerpt:
a secret the cut went through is masked by the part of it that is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import functools
import logging
import os
import stat
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bot.redact import Redactor
from pipeline.repo_config.effective import EffectiveConfig
from pipeline.repo_config.steps import AnalysisStep, name_steps
from pipeline.report.annotations import annotations_on_changed_lines
from pipeline.report.check_run import LIVE_TAIL_CHARS, conclusion_for
from pipeline.report.sarif import SarifError, parse_sarif
from pipeline.results import Annotation, RunOutcome, Screenshot, StepResult
from pipeline.validation.analysis_verdict import judge_analysis
from pipeline.sandbox.bwrap import WORKSPACE_MOUNT
from pipeline.sandbox.limits import Limits
from pipeline.sandbox.output import omitted_note
from pipeline.sandbox.ownership import fresh_dir
from pipeline.sandbox.sandbox import NetworkUnavailable, RunResult, Sandbox
from pipeline.workspace.snapshot_key import DEFAULT_CACHE_KEY, snapshot_key
from pipeline.workspace.snapshots import SnapshotStore
from pipeline.workspace.volumes import Volume
from pipeline.ui_check.check import BrowserSetup, run_ui_check
from pipeline.ui_check.judge import STEP_NAME as UI_STEP
from pipeline.ui_check.judge import step_result
from pipeline.ui_check.proxy import Origin

log = logging.getLogger(__name__)

KEPT_OUTPUT_CHARS = 64 * 1024  # per step; the report keeps less
MAX_SARIF_BYTES = 16 * 1024 * 1024
ANALYSIS_DIR = ".codegenapp-analysis"

Progress = Callable[[Sequence[StepResult], str | None, str | None, str], Awaitable[None]]
"""on_progress(steps so far, running step's name, its stage, its output tail so far)."""


@dataclass(frozen=True)
class RunPlan:
    workspace: Path
    config: EffectiveConfig
    tracked_files: frozenset[str]
    secrets: Mapping[str, str] = field(default_factory=dict)
    snapshot_scope: str | None = None  # None: no snapshots (e.g. the local command)
    changed_lines: Mapping[str, set[int]] | None = None  # annotations outside these are dropped
    browser: BrowserSetup = BrowserSetup()  # for the UI check: Chromium, and where screenshots go
    volume: Volume | None = None  # the workspace's own filesystem: a step that fills it fails saying so


SETUP_NAME_WIDTH = 40


def setup_step_names(commands: Sequence[str]) -> list[str]:
    """The setup steps' names, the same in every report (check run, comment, validation page, planned
    steps, `codegenapp validate`). Named after what they run, like the validate steps (`pip install -r
    requirements.txt`, `npm ci`): each command's first line, its spaces folded, shortened to
    SETUP_NAME_WIDTH, a repeated one made unique ("npm ci (2)")."""
    shortened = []
    for command in commands:
        first = " ".join((command.strip().split("\n", 1) or [""])[0].split())
        shortened.append(first if len(first) <= SETUP_NAME_WIDTH else first[:SETUP_NAME_WIDTH - 1] + "…")
    return [step.name for step in name_steps([(name or None, command)
                                              for name, command in zip(shortened, commands, strict=True)])]


def planned_steps(config: EffectiveConfig) -> list[dict[str, str]]:
    """The steps a run of `config` takes, in order, as {"name", "stage"}: the checkout (the validation
    service's), setup, the validate steps, the analysis steps and the UI check. Recorded when a run
    starts, so its page lists every step, pending, before it runs (a restored snapshot adds a step)."""
    steps = [("checkout", "checkout")]
    steps += [(name, "setup") for name in setup_step_names(config.setup)]
    steps += [(step.name, "validate") for step in config.validate]
    steps += [(analysis.name, "analysis") for analysis in config.analysis]
    if config.ui is not None:
        steps.append((UI_STEP, "ui"))
    return [{"name": name, "stage": stage} for name, stage in steps]


class _Deadline:
    def __init__(self, minutes: int) -> None:
        self.minutes = minutes
        self.at = time.monotonic() + minutes * 60

    def remaining(self) -> float:
        return self.at - time.monotonic()


class PipelineRunner:
    def __init__(self, sandbox: Sandbox, snapshots: SnapshotStore | None = None, *,
                 progress_interval: float = 3.0, limits: Limits = Limits()) -> None:
        self.sandbox = sandbox
        self.snapshots = snapshots
        self.progress_interval = progress_interval
        self.limits = limits

    async def run(self, plan: RunPlan, *, redactor: Redactor, on_progress: Progress | None = None,
                  leading_steps: Sequence[StepResult] = ()) -> RunOutcome:
        steps: list[StepResult] = list(leading_steps)
        notes: list[str] = []
        deadline = _Deadline(plan.config.timeout_minutes)
        env = {**plan.config.env, **plan.secrets}
        step_runner = _StepRunner(self, plan, env, redactor, steps, deadline, on_progress)

        key = await self._setup(plan, step_runner, steps, notes, env)
        setup_ok = all(s.status in ("passed", "restored") for s in steps if s.stage == "setup")
        for step in plan.config.validate:
            if not setup_ok or deadline.remaining() <= 0:
                steps.append(StepResult(step.name, "validate", "skipped", 0.0,
                                        detail="setup failed" if not setup_ok else "out of time"))
                continue
            steps.append(await step_runner.run(step.name, "validate", step.run, network=False))

        annotations: list[Annotation] = []
        for analysis in plan.config.analysis:
            if not setup_ok or deadline.remaining() <= 0:
                steps.append(StepResult(analysis.name, "analysis", "skipped", 0.0))
                continue
            result, found = await self._analysis(analysis, plan, step_runner)
            found = [dataclasses.replace(a, step=result.name) for a in found]  # reports list them under it
            if plan.changed_lines is not None:
                found = annotations_on_changed_lines(found, dict(plan.changed_lines))
            steps.append(judge_analysis(result, found))
            annotations.extend(found)
        screenshots: list[Screenshot] = []
        if plan.config.ui is not None:
            steps.append(await self._ui(plan, step_runner, steps, screenshots, notes))

        timed_out = any(s.status == "timed_out" for s in steps) and deadline.remaining() <= 0
        conclusion = conclusion_for(steps, timed_out=timed_out)
        return RunOutcome(steps, annotations, conclusion, notes, timed_out=timed_out, snapshot_key=key,
                          screenshots=screenshots)

    async def _setup(self, plan: RunPlan, step_runner: "_StepRunner", steps: list[StepResult],
                     notes: list[str], env: Mapping[str, str]) -> str | None:
        commands = plan.config.setup
        if not commands:
            return None
        key = None
        restored = False
        if self.snapshots is not None and plan.snapshot_scope is not None:
            public_env = {k: v for k, v in env.items() if k not in plan.secrets}
            key = snapshot_key(scope=plan.snapshot_scope, setup_commands=commands, env=public_env,
                               workspace=plan.workspace,
                               cache_key_globs=plan.config.cache_key or DEFAULT_CACHE_KEY,
                               tracked_files=plan.tracked_files, tool_version=host_toolchain())
            started = time.monotonic()
            restored = await self._restore(key, plan.workspace)
            if restored:
                steps.append(StepResult("snapshot", "setup", "restored", time.monotonic() - started,
                                        detail="an earlier setup's output"))
                notes.append("setup restored from snapshot, then run on it")
        # Setup runs even after a restore: the snapshot is only a warm start. What setup derives from this
        # commit (a compiled extension, a bundle) is then rebuilt from it, so a warm run reaches the
        # verdict a cold one would; a snapshot of an older commit's build never stands in for this one's.
        for name, command in zip(setup_step_names(commands), commands, strict=True):
            result = await step_runner.run(name, "setup", command, network=plan.config.setup_network)
            steps.append(result)
            if result.status != "passed":
                return key
        if key is not None and not restored and self.snapshots is not None:
            try:
                info = await self.snapshots.save(key, plan.workspace, tracked_files=plan.tracked_files)
            except OSError as exc:  # a snapshot is an optimisation: never fail the validation for it
                log.warning("could not save the setup snapshot: %s", exc)
                info = None
            if info is not None:
                notes.append("setup saved as a snapshot for the next validation")
        return key

    async def _restore(self, key: str, workspace: Path) -> bool:
        assert self.snapshots is not None
        try:
            return await self.snapshots.restore(key, workspace)
        except OSError as exc:
            log.warning("could not restore the setup snapshot: %s", exc)
            return False

    async def _ui(self, plan: RunPlan, step_runner: "_StepRunner", steps: list[StepResult],
                  screenshots: list[Screenshot], notes: list[str]) -> StepResult:
        """The UI check, once setup and every validate step passed, within the run's deadline."""
        ui = plan.config.ui
        assert ui is not None
        blocked = [s for s in steps if s.stage in ("setup", "validate") and s.status not in ("passed", "restored")]
        if blocked:
            return StepResult(UI_STEP, "ui", "skipped", 0.0, detail=f"{blocked[0].stage} did not pass")
        if step_runner.deadline.remaining() <= 0:
            return StepResult(UI_STEP, "ui", "skipped", 0.0, detail="out of time")
        started = time.monotonic()
        async with step_runner.live(UI_STEP, "ui") as (limits, tail):
            deadline = asyncio.timeout(limits.timeout_seconds)
            try:
                async with deadline:
                    outcome = await run_ui_check(self.sandbox, ui, workspace=plan.workspace, env=step_runner.env,
                                                 limits=limits, setup=plan.browser, log_line=tail.add)
            except Exception as exc:  # noqa: BLE001 - the browser or the app broke: this step fails, the run goes on
                if isinstance(exc, TimeoutError) and deadline.expired():
                    return StepResult(UI_STEP, "ui", "timed_out", time.monotonic() - started,
                                      output_tail=tail.masked(step_runner.redactor),
                                      detail=step_runner.timeout_detail)
                broke = step_runner.redactor.redact(f"the UI check broke: {type(exc).__name__}: {exc}")
                log.warning("%s", broke)  # masked: the error may quote the page
                return StepResult(UI_STEP, "ui", "failed", time.monotonic() - started,
                                  output_tail=f"{tail.masked(step_runner.redactor)}\n{broke}", detail=broke)
        screenshots.extend(outcome.screenshots)
        if outcome.accessibility_note and outcome.pages:
            notes.append(f"accessibility {outcome.accessibility_note}")
        result = step_result(outcome, Origin.of(ui.url), enforce=ui.accessibility == "enforce",
                             duration=time.monotonic() - started)
        return dataclasses.replace(result, detail=step_runner.redactor.redact(result.detail),
                                   output_tail=step_runner.redactor.redact(result.output_tail)[-KEPT_OUTPUT_CHARS:])

    async def _analysis(self, analysis: AnalysisStep, plan: RunPlan,
                        step_runner: "_StepRunner") -> tuple[StepResult, list[Annotation]]:
        report_path = analysis.output
        command = analysis.run
        if report_path is None:
            fresh_dir(plan.workspace / ANALYSIS_DIR)
            report_path = f"{ANALYSIS_DIR}/{len(step_runner.steps)}.sarif"
            command = f"( {analysis.run} ) > {WORKSPACE_MOUNT}/{report_path}"
        result = await step_runner.run(analysis.name, "analysis", command, network=False, judge_exit=False)
        if result.status in ("timed_out", "cancelled"):
            return result, []
        try:
            text = read_workspace_file(plan.workspace, report_path, MAX_SARIF_BYTES).decode("utf-8", "replace")
            found = parse_sarif(text, workspace_prefix=WORKSPACE_MOUNT)
        except (OSError, SarifError) as exc:
            detail = f"no SARIF report: {exc}"
            return StepResult(result.name, "analysis", "failed", result.duration_seconds, result.exit_code,
                              result.output_tail, detail), []
        detail = f"{len(found)} finding(s)"
        return StepResult(result.name, "analysis", "passed", result.duration_seconds, result.exit_code,
                          result.output_tail, detail), found


class _StepRunner:
    """Runs one command in the sandbox with live progress, the deadline and masking."""

    def __init__(self, runner: PipelineRunner, plan: RunPlan, env: Mapping[str, str], redactor: Redactor,
                 steps: list[StepResult], deadline: _Deadline, on_progress: Progress | None) -> None:
        self.runner = runner
        self.plan = plan
        self.env = env
        self.redactor = redactor
        self.steps = steps
        self.deadline = deadline
        self.on_progress = on_progress

    async def run(self, name: str, stage: str, command: str, *, network: bool,
                  judge_exit: bool = True) -> StepResult:
        if self.deadline.remaining() <= 0:
            return StepResult(name, stage, "skipped", 0.0, detail="out of time")
        full_before = self._disk_full()
        async with self.live(name, stage) as (limits, tail):
            try:
                result = await self.runner.sandbox.run(command, workspace=self.plan.workspace, env=self.env,
                                                       network=network, limits=limits, on_output=tail.add)
            except NetworkUnavailable as exc:  # fails closed: a step never gets the host's network instead
                return StepResult(name, stage, "failed", 0.0, detail="no safe network on the app's host",
                                  output_tail=f"{exc}\nSet `setup_network: false` if setup needs no network.")
        # The step that filled the workspace's disk is the one that fails for it (not every step after it).
        return self._result(name, stage, result, judge_exit, filled_disk=None if full_before else self._disk_full())

    def _disk_full(self) -> str | None:
        return self.plan.volume.limit_reached() if self.plan.volume is not None else None

    @contextlib.asynccontextmanager
    async def live(self, name: str, stage: str) -> AsyncIterator[tuple[Limits, "_Tail"]]:
        """A running step's frame: its limits cut to the run's remaining time, and the tail of its output,
        which is reported (masked) while it runs."""
        limits = dataclasses.replace(self.runner.limits, timeout_seconds=self.deadline.remaining())
        tail = _Tail(LIVE_TAIL_CHARS)
        reporter = _ProgressReporter(self, name, stage, tail)
        reporter.start()
        try:
            yield limits, tail
        finally:
            await reporter.stop()

    @property
    def timeout_detail(self) -> str:
        return f"stopped after {self.deadline.minutes} min (timeout_minutes)"

    def _result(self, name: str, stage: str, result: RunResult, judge_exit: bool,
                filled_disk: str | None) -> StepResult:
        output = masked_output(self.redactor, result)[-KEPT_OUTPUT_CHARS:]
        if result.timed_out:
            status, detail = "timed_out", self.timeout_detail
        elif filled_disk:
            status, detail = "failed", filled_disk
        elif judge_exit and result.exit_code != 0:
            status, detail = "failed", ""
        else:
            status, detail = "passed", ""
        return StepResult(name, stage, status, result.duration_seconds, result.exit_code, output, detail)


def masked_output(redactor: Redactor, result: RunResult) -> str:
    """A step's output, masked. Of a long output the sandbox kept the head and the tail: a secret
    either cut went through is masked by the part of it that is left."""
    note = omitted_note(result.output_truncated_bytes)
    head, found, tail = result.output.partition(note) if result.output_truncated_bytes else ("", "", "")
    if not found:
        return redactor.redact(result.output)
    return redactor.redact_excerpt(head, cut_end=True) + note + redactor.redact_excerpt(tail, cut_start=True)


class _Tail:
    """The last `size` characters of a running step's output."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.text = ""
        self.cut = False  # whether earlier output was dropped (the text starts inside it)
        self.version = 0

    async def add(self, chunk: str) -> None:
        text = self.text + chunk
        self.cut = self.cut or len(text) > self.size
        self.text = text[-self.size:]
        self.version += 1

    def masked(self, redactor: Redactor, *, running: bool = False) -> str:
        """The text, masked; while the step runs its end is a cut too (a secret may be half printed)."""
        return redactor.redact_excerpt(self.text, cut_start=self.cut, cut_end=running)


class _ProgressReporter:
    """Calls on_progress when a step starts and then at most every progress_interval seconds."""

    def __init__(self, step_runner: _StepRunner, name: str, stage: str, tail: _Tail) -> None:
        self.step_runner = step_runner
        self.name = name
        self.stage = stage
        self.tail = tail
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.step_runner.on_progress is not None:
            self.task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        callback = self.step_runner.on_progress
        assert callback is not None
        seen = -1
        while True:
            if self.tail.version != seen:
                seen = self.tail.version
                try:
                    await callback(list(self.step_runner.steps), self.name, self.stage,
                                   self.tail.masked(self.step_runner.redactor, running=True))
                except Exception:  # progress is best effort; the run goes on
                    log.exception("progress update failed")
            await asyncio.sleep(self.step_runner.runner.progress_interval)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


@functools.cache
def host_toolchain() -> str:
    """Changes when the host's packages change (the sandbox sees the host's /usr), so a snapshot
    built against an older python3 or node is not restored after an upgrade."""
    try:
        status = os.stat("/var/lib/dpkg/status")
    except OSError:
        return "unknown"
    return f"dpkg:{status.st_size}:{status.st_mtime_ns}"


def read_workspace_file(workspace: Path, relative: str, max_bytes: int) -> bytes:
    """Read a file PR code wrote, without following any symbolic link it may have planted."""
    parts = [p for p in Path(relative).parts if p not in ("", ".")]
    if not parts or ".." in parts or Path(relative).is_absolute():
        raise OSError(errno.EINVAL, f"{relative!r} is not a path inside the checkout")
    fd = os.open(workspace, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            next_fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = next_fd
        file_fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW, dir_fd=fd)
    finally:
        os.close(fd)
    with os.fdopen(file_fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise OSError(errno.EINVAL, f"{relative} is not a regular file")
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise OSError(errno.EFBIG, f"{relative} is larger than {max_bytes} bytes")
    return data
