"""A local command as the agent (e.g. an agent CLI the operator installed), run in the validation
sandbox; no SaaS needed.

Each start or resume is one run of the project's command (`/bin/sh -c`, with network: agents talk to
their model's API) on a fresh checkout: of the default branch for a new PR, of the PR's head for a
run on a PR and for fixes. The command finds what to do in files and the environment:

| variable | value |
| --- | --- |
| `CODEGENAPP_MODE` | `plan` or `execute` |
| `CODEGENAPP_GOAL_FILE` | the prompt (goal, repository rules, planning statement, plan, failure), Markdown |
| `CODEGENAPP_PLAN_FILE` | plan mode: write the plan here (else the command's output is the plan); execute mode: the confirmed plan, when there is one |
| `CODEGENAPP_CONTEXT_FILE` | the same facts as JSON (`mode`, `goal`, `repository`, `base_branch`, `branch`, `pr_number`, `attempt`, `run_id`) |
| `CODEGENAPP_RUN_ID`, `CODEGENAPP_REPOSITORY`, `CODEGENAPP_BASE_BRANCH`, `CODEGENAPP_BRANCH`, `CODEGENAPP_PR_NUMBER`, `CODEGENAPP_ATTEMPT` | the same, one by one |
| the project's secrets | as for trusted validations (e.g. the agent's model API key) |

The files live in `/workspace/.codegenapp-agent/`, which is never committed. The checkout has a
`.git` of its own the agent may use (`git diff`, `git log`); whatever the agent does to it is ignored:
the app commits from a private copy of the repository that the sandbox never sees, with hooks off and
a clean git environment, every change of the work tree (`git add -A`, `.gitignore` respected) as one
commit, pushes it with the installation token (only in git's environment) to `codegenapp/<run>-<slug>`
(or the PR's branch), and opens the PR (`POST /repos/{owner}/{repo}/pulls`) when there is none. A
non-zero exit or a timeout ends the agent run `failed` with the output's tail (masked).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import shutil
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bot.github.github_app import GitHubApp, RepoGitHub
from bot.github.types import PullRequest
from bot.redact import Redactor
from pipeline.agents.backend import LOCAL, AgentError, AgentStatus, AgentTarget, Handle, Mode
from pipeline.agents.prompts import title_of
from pipeline.workspace.checkout import Checkouts
from pipeline.workspace.errors import CheckoutError
from pipeline.workspace.git import Git
from pipeline.workspace.trees import remove_tree
from pipeline.validation.stages import read_workspace_file
from pipeline.sandbox.bwrap import WORKSPACE_MOUNT
from pipeline.sandbox.limits import Limits
from pipeline.sandbox.sandbox import Sandbox, SandboxUnavailable

log = logging.getLogger(__name__)

AGENT_DIR = ".codegenapp-agent"
GOAL_FILE = "goal.md"
PLAN_FILE = "plan.md"
CONTEXT_FILE = "context.json"
TIMEOUT_SECONDS = 60 * 60
MAX_PLAN_BYTES = 256 * 1024
TAIL_CHARS = 4000
GIT_TIMEOUT_SECONDS = 300.0
# What git on the app's copy of the repository sets beyond pipeline/workspace/git.py's hardening.
GIT_OPTIONS = ("-c", "core.autocrlf=false", "-c", "commit.gpgSign=false")


class LocalAgentBackend:
    name = LOCAL
    synchronous = True

    def __init__(self, *, command: str, sandbox: Sandbox, checkouts: Checkouts, github: GitHubApp,
                 github_url: str, work_root: Path, redactor: Redactor, timeout_seconds: float = TIMEOUT_SECONDS,
                 on_started: Callable[[], None] | None = None) -> None:
        self.command = command
        self.on_started = on_started
        self.sandbox = sandbox
        self.checkouts = checkouts
        self.github = github
        self.github_url = github_url.rstrip("/")
        self.work_root = Path(work_root)
        self.redactor = redactor
        self.timeout_seconds = timeout_seconds

    # ---- the interface ---------------------------------------------------------------------------------

    async def start(self, prompt: str, mode: Mode, metadata: Mapping[str, Any],
                    target: AgentTarget) -> tuple[Handle, AgentStatus]:
        status = await self._run(prompt, mode, target, plan=metadata.get("plan"))
        return _handle(status, mode, 1), status

    async def poll(self, handle: Handle) -> AgentStatus:
        result = handle.get("result") or {}
        return AgentStatus(**{k: v for k, v in result.items() if k in AgentStatus.__dataclass_fields__})

    async def resume(self, handle: Handle, prompt: str, target: AgentTarget) -> tuple[Handle, AgentStatus]:
        status = await self._run(prompt, Mode.EXECUTE, target, plan=None)
        return _handle(status, Mode.EXECUTE, int(handle.get("sequence", 1)) + 1), status

    # ---- one run of the command ------------------------------------------------------------------------

    async def _run(self, prompt: str, mode: Mode, target: AgentTarget, *, plan: str | None) -> AgentStatus:
        if target.installation_id is None:
            raise AgentError("the project has no installation: the app cannot read or push its repository",
                             terminal=True)
        repo = self.github.repo(target.installation_id, target.repository)
        token = await self.github.installation_token(target.installation_id)
        redactor = self.redactor.child([token, *target.secrets.values()])
        root = self.work_root / f"{target.run_id}-{uuid.uuid4().hex[:8]}"
        workspace, git_dir, home = root / "work", root / "git", root / "home"
        try:
            home.mkdir(parents=True)
            pull = await self._pull(repo, target) if target.pr_number is not None else None
            if pull is not None:
                sha = pull.head_sha
                await self._checkout(target, sha=sha, token=token, dest=workspace, pr_number=target.pr_number)
            else:
                sha = await self._branch_sha(repo, target.base_branch)
                await self._checkout(target, sha=sha, token=token, dest=workspace,
                                     ref=f"refs/heads/{target.base_branch}")
            # The app's own copy of the repository: the sandbox never sees it.
            os.rename(workspace / ".git", git_dir)
            await asyncio.to_thread(_copy_git_dir, git_dir, workspace / ".git", self.checkouts.hardlink)
            for info in (git_dir / "info", workspace / ".git" / "info"):
                info.mkdir(exist_ok=True)
                with open(info / "exclude", "a", encoding="utf-8") as exclude:
                    exclude.write(f"\n/{AGENT_DIR}\n")  # a directory, or whatever the agent put there
            self._write_inputs(workspace, prompt, mode, target, plan)
            if self.on_started is not None:
                self.on_started()

            result = await self.sandbox.run(
                self.command, workspace=workspace, env=self._env(mode, target), network=True,
                limits=Limits(timeout_seconds=self.timeout_seconds, cpu_seconds=int(self.timeout_seconds)))
            tail = redactor.redact(result.output)[-TAIL_CHARS:]
            if result.timed_out:
                return AgentStatus("failed", raw_status="timed_out",
                                   error=f"the agent command ran out of time ({self.timeout_seconds / 60:.0f} min)"
                                         f":\n{tail}")
            if result.exit_code != 0:
                return AgentStatus("failed", raw_status=f"exit {result.exit_code}",
                                   error=f"the agent command exited with {result.exit_code}:\n{tail}")
            if mode == Mode.PLAN:
                return AgentStatus("finished", raw_status="exit 0", plan_text=self._plan(workspace, tail, redactor),
                                   summary=tail[-500:])
            try:
                return await self._publish(repo, target, token, workspace, git_dir, root, pull, tail)
            except CheckoutError as exc:  # git on the app's copy, not the checkout
                raise AgentError(redactor.redact(str(exc)), terminal=False) from None
        except SandboxUnavailable as exc:
            raise AgentError(f"the local agent cannot run: {exc}", terminal=True) from None
        except CheckoutError as exc:
            terminal = exc.reason in ("auth", "not_found", "invalid", "missing_ref", "missing_commit")
            raise AgentError(f"checking out {target.repository} failed: {redactor.redact(str(exc))}",
                             terminal=terminal) from None
        finally:
            await asyncio.shield(asyncio.to_thread(remove_tree, root))

    async def _pull(self, repo: RepoGitHub, target: AgentTarget) -> PullRequest:
        assert target.pr_number is not None
        pull = await repo.pulls.find(target.pr_number)
        if pull is None:
            raise AgentError(f"pull request #{target.pr_number} does not exist", terminal=True)
        head_repo = pull.head_repository or ""
        if head_repo.lower() != target.repository.lower():
            raise AgentError(f"pull request #{target.pr_number} comes from a fork ({head_repo or 'deleted'}): "
                             "the app cannot push to its branch", terminal=True)
        return pull

    async def _branch_sha(self, repo: RepoGitHub, branch: str) -> str:
        sha = await repo.repos.branch_sha(branch)
        if sha is None:
            raise AgentError(f"{repo.repository} has no branch {branch!r}", terminal=True)
        return sha

    async def _checkout(self, target: AgentTarget, *, sha: str, token: str, dest: Path,
                        pr_number: int | None = None, ref: str | None = None) -> None:
        await self.checkouts.checkout(target.repository, sha=sha, token=token, dest=dest, pr_number=pr_number,
                                      ref=ref)

    def _write_inputs(self, workspace: Path, prompt: str, mode: Mode, target: AgentTarget, plan: str | None) -> None:
        folder = workspace / AGENT_DIR
        if folder.is_symlink() or folder.exists() and not folder.is_dir():
            folder.unlink()
        folder.mkdir(exist_ok=True)
        (folder / GOAL_FILE).write_text(prompt, encoding="utf-8")
        plan_path = folder / PLAN_FILE
        if plan_path.is_symlink() or plan_path.exists():
            plan_path.unlink()
        if mode == Mode.EXECUTE and plan:
            plan_path.write_text(plan, encoding="utf-8")
        context = {"mode": str(mode), "goal": target.goal, "repository": target.repository,
                   "base_branch": target.base_branch, "branch": target.branch, "pr_number": target.pr_number,
                   "attempt": target.attempt, "run_id": target.run_id}
        (folder / CONTEXT_FILE).write_text(json.dumps(context, indent=2) + "\n", encoding="utf-8")

    def _env(self, mode: Mode, target: AgentTarget) -> dict[str, str]:
        base = f"{WORKSPACE_MOUNT}/{AGENT_DIR}"
        ours = {"CODEGENAPP_MODE": str(mode), "CODEGENAPP_GOAL_FILE": f"{base}/{GOAL_FILE}",
                "CODEGENAPP_PLAN_FILE": f"{base}/{PLAN_FILE}", "CODEGENAPP_CONTEXT_FILE": f"{base}/{CONTEXT_FILE}",
                "CODEGENAPP_RUN_ID": target.run_id, "CODEGENAPP_REPOSITORY": target.repository,
                "CODEGENAPP_BASE_BRANCH": target.base_branch, "CODEGENAPP_BRANCH": target.branch,
                "CODEGENAPP_PR_NUMBER": str(target.pr_number or ""), "CODEGENAPP_ATTEMPT": str(target.attempt)}
        return {**target.secrets, **ours}

    def _plan(self, workspace: Path, output_tail: str, redactor: Redactor) -> str:
        try:
            data = read_workspace_file(workspace, f"{AGENT_DIR}/{PLAN_FILE}", MAX_PLAN_BYTES)
        except OSError:
            return output_tail.strip()  # no plan file: what the command printed is its plan
        return redactor.redact(data.decode("utf-8", "replace")).strip()

    # ---- commit, push, PR ---------------------------------------------------------------------------------

    async def _publish(self, repo: RepoGitHub, target: AgentTarget, token: str, workspace: Path, git_dir: Path,
                       root: Path, pull: PullRequest | None, tail: str) -> AgentStatus:
        """git as pipeline/workspace/git.py runs it, HOME `root/home`, on the app's copy with the agent's work tree."""
        runner = Git("git", root, GIT_TIMEOUT_SECONDS)

        def git(*args: str, what: str | None = None, masks: Sequence[str] = (),
                **options: Any) -> Awaitable[tuple[int, bytes]]:
            return runner.run([*GIT_OPTIONS, *args], git_dir=git_dir, work_tree=workspace, masks=[token, *masks],
                              what=what or f"git {args[0]}", **options)

        await git("add", "--all", "--", ".")
        code, _ = await git("diff", "--cached", "--quiet", check=False)
        if code == 0:
            number = target.pr_number
            url = pull.html_url if pull else None
            return AgentStatus("finished", raw_status="no change", pr_number=number, pr_url=url,
                               summary="the agent changed no file")
        message = title_of(target.goal)
        if target.attempt:
            message = f"Fix the validation (attempt {target.attempt})"
        body = f"{message}\n\nCodegenApp agent run {target.run_id}.\n"
        email = f"{self.github.app_id or 'codegenapp'}+codegenapp[bot]@users.noreply.github.com"
        await git("-c", "user.name=CodegenApp agent", "-c", f"user.email={email}", "commit", "--quiet",
                  "--no-verify", "--no-gpg-sign", "-m", body, what="git commit")
        _, out = await git("rev-parse", "HEAD")
        head = out.decode().strip()
        # Our own new branch may be left over from an attempt that died before opening the PR: overwrite it.
        force = "+" if target.pr_number is None else ""
        header = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        auth = {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraHeader",
                "GIT_CONFIG_VALUE_0": f"Authorization: Basic {header}"}
        url = f"{self.github_url}/{target.repository}.git"
        await git("push", "--quiet", "--no-verify", url, f"{force}{head}:refs/heads/{target.branch}",
                  env=auth, masks=[header])
        if target.pr_number is not None:
            return AgentStatus("finished", raw_status="pushed", pr_number=target.pr_number,
                               pr_url=pull.html_url if pull else None, summary=tail[-500:])
        number, html_url = await self._open_pull(repo, target)
        return AgentStatus("finished", raw_status="pushed", pr_number=number, pr_url=html_url, summary=tail[-500:])

    async def _open_pull(self, repo: RepoGitHub, target: AgentTarget) -> tuple[int, str | None]:
        for existing in await repo.pulls.open_from(target.branch):
            return existing.number, existing.html_url
        created = await repo.pulls.create(
            title=title_of(target.goal), head=target.branch, base=target.base_branch,
            body=f"{target.goal.strip()}\n\n---\nOpened by CodegenApp agent run `{target.run_id}`.")
        return created.number, created.html_url


def _handle(status: AgentStatus, mode: Mode, sequence: int) -> Handle:
    return {"backend": LOCAL, "mode": str(mode), "sequence": sequence, "result": dict(status.__dict__)}


def _copy_git_dir(source: Path, target: Path, hardlink: bool) -> None:
    """A copy of a repository's .git for the agent; objects are hard-linked when that is safe (as root,
    they are root-owned files with several links, which the sandbox never chowns)."""
    def copy(src: str, dst: str) -> None:
        if hardlink and f"{os.sep}objects{os.sep}" in src:
            try:
                os.link(src, dst, follow_symlinks=False)
                return
            except OSError:
                pass
        shutil.copy2(src, dst, follow_symlinks=False)

    shutil.copytree(source, target, symlinks=True, copy_function=copy)
