"""Running git for the mirrors and the workspaces (pipeline/workspace/checkout.py).

Git runs with a clean environment (no inherited ``GIT_*``, no system/global config, ``HOME`` an empty
directory of ours), ``credential.helper`` cleared, no terminal prompt, ``core.hooksPath=/dev/null``,
protocol v2, only http(s) transports, and ``safe.directory`` only for the paths given. Each git runs in
its own process group, killed whole on a timeout or cancellation; its stderr is masked (``masks``: the
token and its header) before it reaches a CheckoutError.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from pipeline.workspace.errors import CheckoutError

DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


class Git:
    """Runs `git` (the binary) for one checkouts root: HOME is `<root>/home`, the default cwd `root`;
    `local_timeout` bounds every run that is not given its own timeout (fetches are)."""

    def __init__(self, git: str, root: Path, local_timeout: float) -> None:
        self.git = git
        self.root = root
        self.local_timeout = local_timeout

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH") or DEFAULT_PATH,
            "HOME": str(self.root / "home"),
            "LANG": "C",
            "LC_ALL": "C",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ASKPASS": "",
            "SSH_ASKPASS": "",
            "GIT_NO_REPLACE_OBJECTS": "1",
            "GIT_ALLOW_PROTOCOL": "http:https",
        }
        env.update(extra or {})
        return env

    async def run(
        self,
        args: Sequence[str],
        *,
        git_dir: Path | None = None,
        work_tree: Path | None = None,
        safe: Path | None = None,
        env: Mapping[str, str] | None = None,
        masks: Iterable[str] = (),
        timeout: float | None = None,
        check: bool = True,
        what: str | None = None,
    ) -> tuple[int, bytes]:
        """Run git; (exit code, stdout). With check, a failure raises CheckoutError("git ...")."""
        options = ["-c", "credential.helper=", "-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false",
                   "-c", "protocol.version=2"]
        for path in (git_dir, work_tree, safe):
            if path is not None:
                options += ["-c", f"safe.directory={os.path.abspath(path)}"]
        if git_dir is not None:
            options.append(f"--git-dir={git_dir}")
        if work_tree is not None:
            options.append(f"--work-tree={work_tree}")
        process = await asyncio.create_subprocess_exec(
            self.git,
            *options,
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.env(env),
            cwd=str(work_tree or git_dir or self.root),
            start_new_session=True,  # its own process group: a timeout kills git's helpers too
        )
        limit = timeout if timeout is not None else self.local_timeout
        try:
            out, err = await asyncio.wait_for(process.communicate(), limit)
        except TimeoutError:
            await _kill(process)
            raise CheckoutError(f"{what or 'git ' + args[0]} timed out after {limit:g}s", reason="timeout") from None
        except BaseException:
            await _kill(process)
            raise
        code = process.returncode if process.returncode is not None else -1
        if check and code != 0:
            text = _mask(err.decode(errors="replace").strip(), masks)
            raise CheckoutError(f"{what or 'git ' + args[0]} failed (exit {code}): {text}", git_output=text)
        return code, out


def _mask(text: str, masks: Iterable[str]) -> str:
    for secret in masks:
        if secret:
            text = text.replace(secret, "***")
    return text


async def _kill(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    await process.wait()
