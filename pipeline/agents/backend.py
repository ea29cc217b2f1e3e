"""The one interface of coding agents, whatever runs them.

    handle, status = await backend.start(prompt, Mode.PLAN, metadata, target)
    status = await backend.poll(handle)          # running | finished (plan text, PR) | failed (why)
    handle, status = await backend.resume(handle, prompt, target)   # a follow-up: the fix of a failure

A handle is JSON (stored on the run, so a restarted app polls the same agent run). Errors are
`AgentError`: `terminal` ones end the run with their reason (402, 403, 404, 422 from Codegen, a local
command that cannot run); the others are retried by the run with backoff, after `retry_after` when the
backend said so (429).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, Protocol

from bot.config import Settings
from bot.models import Project

Handle = dict[str, Any]

CODEGEN = "codegen"
LOCAL = "local"
NONE = "none"
BACKENDS = (CODEGEN, LOCAL, NONE)


class Mode(StrEnum):
    PLAN = "plan"
    EXECUTE = "execute"


AgentState = Literal["running", "finished", "failed"]


@dataclass(frozen=True)
class AgentStatus:
    state: AgentState
    raw_status: str | None = None  # what the backend said (Codegen's status string)
    plan_text: str | None = None
    pr_number: int | None = None
    pr_url: str | None = None
    summary: str | None = None
    error: str | None = None  # why it failed
    web_url: str | None = None  # where a human can watch it


class AgentError(Exception):
    """The backend could not do what was asked. `terminal`: retrying cannot help (the run ends with
    `reason`); otherwise the run tries again later (after `retry_after` seconds when given)."""

    def __init__(self, reason: str, *, terminal: bool, retry_after: float | None = None,
                 status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.terminal = terminal
        self.retry_after = retry_after
        self.status = status


@dataclass(frozen=True)
class AgentTarget:
    """Where and on what an agent works (the local backend needs all of it; Codegen gets it in metadata)."""

    run_id: str
    project_id: str
    repository: str  # owner/repo
    installation_id: int | None
    base_branch: str  # the branch a new PR goes into
    branch: str  # the branch the agent's commits go to (a new `codegenapp/...` or the PR's head)
    pr_number: int | None  # the PR the run works on, once there is one
    goal: str
    attempt: int = 0  # fix attempt (0: not a fix)
    secrets: Mapping[str, str] = field(default_factory=dict)


class AgentBackend(Protocol):
    name: str
    # True when start/resume return only once the agent is done (the local command): their status is
    # always about that start or resume, never a previous one still shown by a remote service.
    synchronous: bool

    async def start(self, prompt: str, mode: Mode, metadata: Mapping[str, Any],
                    target: AgentTarget) -> tuple[Handle, AgentStatus]: ...

    async def poll(self, handle: Handle) -> AgentStatus: ...

    async def resume(self, handle: Handle, prompt: str, target: AgentTarget) -> tuple[Handle, AgentStatus]: ...


def chosen_backend(project: Project, settings: Settings) -> str:
    """The project's backend: its setting, or Codegen when none is set and Codegen is configured."""
    choice = (project.agent_backend or "").strip().lower()
    if choice:
        return choice
    return CODEGEN if settings.codegen_api_key and settings.codegen_org_id else NONE


def backend_problem(project: Project, settings: Settings, *, sandbox_ok: bool, github_ok: bool) -> str | None:
    """Why no agent can run for this project (a sentence for the user), or None when one can."""
    if not github_ok:
        return "the GitHub App is not configured on this app"
    choice = chosen_backend(project, settings)
    if choice == NONE:
        return ("no agent backend is configured for this project: set its agent backend to \"local\" with a "
                "command, or set CODEGEN_API_KEY and CODEGEN_ORG_ID")
    if choice == CODEGEN:
        missing = [name for name, value in (("CODEGEN_API_KEY", settings.codegen_api_key),
                                            ("CODEGEN_ORG_ID", settings.codegen_org_id)) if not value]
        return f"the Codegen backend needs {' and '.join(missing)}" if missing else None
    if choice == LOCAL:
        if not (project.agent_command or "").strip():
            return "the local agent backend needs a command in the project's settings"
        if not sandbox_ok:
            return "the local agent backend needs the sandbox (bubblewrap), which is not working on this host"
        return None
    return f"unknown agent backend {choice!r} (expected codegen, local or none)"

