"""Whether an agent run can start for a project, from the settings, the GitHub App and the sandbox."""

from __future__ import annotations

from bot.config import Settings
from bot.github.github_app import GitHubApp
from bot.models import Project
from pipeline.agents.backend import backend_problem


class AgentAvailability:
    """Whether an agent run can start for a project: the check run shows "Fix with agent" only then,
    and a command or the dashboard is told why not otherwise."""

    def __init__(self, settings: Settings, github: GitHubApp, *, sandbox_ok: bool) -> None:
        self.settings = settings
        self.github = github
        self.sandbox_ok = sandbox_ok

    def problem(self, project: Project) -> str | None:
        return backend_problem(project, self.settings, sandbox_ok=self.sandbox_ok, github_ok=self.github.configured)

    def configured(self, project: Project) -> bool:
        return self.problem(project) is None
