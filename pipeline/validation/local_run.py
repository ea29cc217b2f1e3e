"""`codegenapp validate`: the same pipeline on a local checkout, printing what the check run would show."""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bot.redact import Redactor
from pipeline.report.check_run import check_run_output
from pipeline.repo_config.effective import effective_config
from pipeline.repo_config.parse import ConfigFileError, ProjectSettings, parse_repo_config
from pipeline.validation.stages import PipelineRunner, RunPlan
from pipeline.results import StepResult
from pipeline.sandbox.sandbox import Sandbox, SandboxUnavailable
from pipeline.validation.service import CONFIG_PATH

log = logging.getLogger(__name__)


class LocalRunError(Exception):
    pass


@dataclass(frozen=True)
class LocalReport:
    conclusion: str
    text: str

    @property
    def exit_code(self) -> int:
        return 0 if self.conclusion == "success" else 1


async def _git(*args: str, cwd: Path | None = None) -> str:
    process = await asyncio.create_subprocess_exec("git", *args, cwd=cwd, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.PIPE)
    out, err = await process.communicate()
    if process.returncode != 0:
        raise LocalRunError(f"git {' '.join(args)}: {err.decode(errors='replace').strip()}")
    return out.decode()


async def validate_local(path: Path, *, ref: str = "HEAD", config_file: Path | None = None,
                         unsandboxed: bool = False) -> LocalReport:
    repo = Path(path).resolve()
    sha = (await _git("rev-parse", "--verify", f"{ref}^{{commit}}", cwd=repo)).strip()
    if config_file is not None:
        text = config_file.read_text()
    else:
        try:
            text = await _git("show", f"{sha}:{CONFIG_PATH}", cwd=repo)
        except LocalRunError:
            raise LocalRunError(f"{repo} has no {CONFIG_PATH} at {ref}; pass --config FILE") from None
    try:
        config = effective_config(parse_repo_config(text, path=str(config_file or CONFIG_PATH)), ProjectSettings())
    except ConfigFileError as exc:
        return LocalReport("failure", f"Invalid configuration: {exc}\n")

    sandbox = await Sandbox.probe(allow_unsandboxed=unsandboxed)
    if not sandbox.capabilities.sandboxed and not unsandboxed:
        raise SandboxUnavailable(f"no working sandbox ({sandbox.capabilities.summary()}): install bubblewrap, "
                                 "or pass --unsandboxed to run the commands directly on this machine")
    workspace = Path(tempfile.mkdtemp(prefix="codegenapp-validate-"))
    try:
        await _git("clone", "--quiet", "--local", "--no-checkout", str(repo), str(workspace / "src"))
        workspace = workspace / "src"
        await _git("checkout", "--quiet", "--detach", sha, cwd=workspace)
        tracked = frozenset((await _git("ls-tree", "-r", "--name-only", sha, cwd=workspace)).splitlines())
        checkout = StepResult("checkout", "checkout", "passed", 0.0, detail=sha[:7])
        outcome = await PipelineRunner(sandbox).run(RunPlan(workspace=workspace, config=config, tracked_files=tracked),
                                                    redactor=Redactor(), leading_steps=[checkout])
    finally:
        shutil.rmtree(workspace.parent if workspace.name == "src" else workspace, ignore_errors=True)
    output = check_run_output(outcome.steps, head_sha=sha, conclusion=outcome.conclusion, details_url=None,
                              notes=outcome.notes, timeout_minutes=config.timeout_minutes)
    text = f"{output['title']}\n\n{output['summary']}\n"
    if output["text"]:
        text += f"\n{output['text']}\n"
    for annotation in outcome.annotations:
        text += f"{annotation.path}:{annotation.start_line}: {annotation.annotation_level}: {annotation.message}\n"
    return LocalReport(outcome.conclusion, text)
