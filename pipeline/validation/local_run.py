"""`codegenapp validate`: the same pipeline on a local checkout, printing what the check run would show.

 - **What is validated**: a commit (`ref`, default HEAD), cloned into a temporary directory under TMPDIR;
   uncommitted changes of the working tree are not (the notices say so). Git is not told `--local`:
   it hard-links the objects when TMPDIR is on the repository's file system and copies them otherwise
   (an explicit `--local` dies with "Invalid cross-device link").
 - **Configuration**: that commit's `.github/codegenapp.yml` (a PR reads its base's), or `config_file`.
   An invalid one is a LocalRunError: the command could not run.
 - **Snapshots**: the caller passes a store (the CLI's is per user: `$XDG_CACHE_HOME/codegenapp/snapshots`);
   the scope is the repository's path. Not used unsandboxed: the checkout is then at a new temporary
   path each run, and what setup writes (a venv's scripts) names that path.
 - **Changed lines**: with `base`, annotations are kept only on lines changed since the merge base of
   `base` and the commit, as on a pull request (local_changes.py); without it, all are kept.
 - **The report**: the Markdown the check run would show, and the run as data (LocalRun) for the
   terminal and JSON forms (pipeline/report/terminal.py, local.py). Setup steps are named after their
   commands, as everywhere (stages.setup_step_names); the UI check's screenshots are kept in a
   directory per commit.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bot.redact import Redactor
from pipeline.report.check_run import check_run_output
from pipeline.report.local import LocalRun, findings_by_step
from pipeline.repo_config.effective import EffectiveConfig, effective_config
from pipeline.repo_config.parse import ConfigFileError, ProjectSettings, parse_repo_config
from pipeline.repo_config.reading import CONFIG_PATH
from pipeline.results import StepResult
from pipeline.sandbox.sandbox import Sandbox, SandboxUnavailable
from pipeline.ui_check.check import BrowserSetup
from pipeline.validation.local_changes import changed_lines_of_diff
from pipeline.validation.stages import PipelineRunner, Progress, RunPlan
from pipeline.workspace.snapshots import SnapshotStore

log = logging.getLogger(__name__)


class LocalRunError(Exception):
    pass


@dataclass(frozen=True)
class LocalReport:
    run: LocalRun  # for the terminal and JSON forms (pipeline/report/terminal.py, local.py)
    text: str  # Markdown: what the check run would show, then the annotations

    @property
    def conclusion(self) -> str:
        return self.run.conclusion

    @property
    def exit_code(self) -> int:
        return 0 if self.conclusion == "success" else 1


def progress_notifier(notify: Callable[[str], None]) -> Progress:
    """on_progress for the runner: says once which step runs, so a long run is not silent."""
    announced: set[tuple[str, str]] = set()

    async def on_progress(_steps: Sequence[StepResult], name: str | None, stage: str | None, _tail: str) -> None:
        if name is not None and stage is not None and (stage, name) not in announced:
            announced.add((stage, name))
            notify(f"running {name} ({stage})")
    return on_progress


async def _git(*args: str, cwd: Path | None = None) -> bytes:
    process = await asyncio.create_subprocess_exec("git", *args, cwd=cwd, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.PIPE)
    out, err = await process.communicate()
    if process.returncode != 0:
        raise LocalRunError(f"git {' '.join(args)}: {err.decode(errors='replace').strip()}")
    return out


async def _commit(repo: Path, ref: str) -> str:
    try:
        out = await _git("rev-parse", "--verify", "--end-of-options", f"{ref}^{{commit}}", cwd=repo)
    except LocalRunError as exc:
        raise LocalRunError(f"{ref!r} is not a commit of {repo} ({exc})") from None
    return out.decode().strip()


async def tracked_files(repo: Path, sha: str) -> frozenset[str]:
    """The commit's paths, NUL-separated so that git never quotes them (a quoted non-ASCII name would be
    taken for an untracked file and end up in a snapshot)."""
    out = await _git("ls-tree", "-r", "-z", "--name-only", sha, cwd=repo)
    return frozenset(os.fsdecode(path) for path in out.split(b"\0") if path)


async def changed_since(repo: Path, base: str, sha: str) -> Mapping[str, set[int]]:
    base_sha = await _commit(repo, base)
    try:
        merge_base = (await _git("merge-base", base_sha, sha, cwd=repo)).decode().strip()
    except LocalRunError:
        raise LocalRunError(f"--base {base} and the validated commit have no common ancestor") from None
    diff = await _git("diff", "-U0", "-M", "--no-color", "--no-ext-diff", "--no-textconv", "--src-prefix=a/",
                      "--dst-prefix=b/", merge_base, sha, cwd=repo)
    return changed_lines_of_diff(diff)


async def _uncommitted(repo: Path, sha: str) -> bool:
    """Whether the working tree differs from the validated commit, when that commit is its HEAD."""
    try:
        if (await _git("rev-parse", "--verify", "HEAD", cwd=repo)).decode().strip() != sha:
            return False
        return bool((await _git("status", "--porcelain", "-z", cwd=repo)).strip(b"\0"))
    except LocalRunError:  # a bare repository has no working tree
        return False


async def _config(repo: Path, sha: str, ref: str, config_file: Path | None,
                  notify: Callable[[str], None]) -> EffectiveConfig:
    if config_file is not None:
        text = config_file.read_bytes()
        notify(f"validating {sha[:7]} ({ref}) with {config_file}")
    else:
        try:
            text = await _git("show", f"{sha}:{CONFIG_PATH}", cwd=repo)
        except LocalRunError:
            raise LocalRunError(f"{repo} has no {CONFIG_PATH} at {ref}; pass --config FILE") from None
        notify(f"validating {sha[:7]} ({ref}) with the {CONFIG_PATH} of that commit")
    try:
        return effective_config(parse_repo_config(text, path=str(config_file or CONFIG_PATH)), ProjectSettings())
    except ConfigFileError as exc:
        raise LocalRunError(f"invalid configuration: {exc}") from None


async def validate_local(path: Path, *, ref: str = "HEAD", base: str | None = None, config_file: Path | None = None,
                         unsandboxed: bool = False, snapshots: SnapshotStore | None = None,
                         screenshots: Path | None = None,
                         notify: Callable[[str], None] = lambda line: None) -> LocalReport:
    """`screenshots`: where the UI check's screenshots are kept, in a directory per commit (emptied
    first); None: not kept."""
    started = time.monotonic()
    repo = Path(path).resolve()
    sha = await _commit(repo, ref)
    config = await _config(repo, sha, ref, config_file, notify)
    if await _uncommitted(repo, sha):
        notify(f"the working tree has uncommitted changes: they are not validated, only {ref} is "
               "(commit them to include them)")
    changed = await changed_since(repo, base, sha) if base is not None else None

    sandbox = await Sandbox.probe(allow_unsandboxed=unsandboxed)
    if not sandbox.capabilities.sandboxed and not unsandboxed:
        raise SandboxUnavailable(f"no working sandbox ({sandbox.capabilities.summary()}): install bubblewrap, "
                                 "or pass --unsandboxed to run the commands directly on this machine")
    if not sandbox.capabilities.sandboxed and snapshots is not None:
        notify("no setup snapshots without the sandbox: setup runs from scratch")
        snapshots = None
    shots_dir = _screenshots_dir(screenshots, sha) if screenshots is not None and config.ui is not None else None
    tracked = await tracked_files(repo, sha)
    scratch = Path(tempfile.mkdtemp(prefix="codegenapp-validate-"))
    workspace = scratch / "src"
    try:
        await _git("clone", "--quiet", "--no-checkout", str(repo), str(workspace))
        await _git("checkout", "--quiet", "--detach", sha, cwd=workspace)
        checkout = StepResult("checkout", "checkout", "passed", 0.0, detail=sha[:7])
        plan = RunPlan(workspace=workspace, config=config, tracked_files=tracked, changed_lines=changed,
                       snapshot_scope=f"local:{repo}" if snapshots is not None else None,
                       browser=BrowserSetup(screenshots_dir=shots_dir))
        outcome = await PipelineRunner(sandbox, snapshots).run(plan, redactor=Redactor(), leading_steps=[checkout],
                                                               on_progress=progress_notifier(notify))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    steps = outcome.steps
    output = check_run_output(steps, head_sha=sha, conclusion=outcome.conclusion, details_url=None,
                              notes=outcome.notes, timeout_minutes=config.timeout_minutes,
                              findings=outcome.annotations)
    text = f"{output['title']}\n\n{output['summary']}\n"
    if output["text"]:
        text += f"\n{output['text']}\n"
    for annotation in outcome.annotations:
        text += f"{annotation.path}:{annotation.start_line}: {annotation.annotation_level}: {annotation.message}\n"
    run = LocalRun(sha=sha, title=output["title"], conclusion=outcome.conclusion, steps=steps, notes=outcome.notes,
                   findings=findings_by_step(steps, outcome.annotations),
                   screenshots=[(shot, str(shots_dir / shot.file)) for shot in outcome.screenshots if shots_dir],
                   elapsed=time.monotonic() - started)
    return LocalReport(run, text)


def _screenshots_dir(root: Path, sha: str) -> Path:
    """The commit's screenshot directory, emptied of an earlier run's."""
    directory = root / sha[:12]
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    return directory
