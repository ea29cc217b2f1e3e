"""What a handler gets besides the event: the app's services, and what the event says of itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gidgethub import sansio

from bot.github.github_app import RepoGitHub
from bot.models import Project
from bot.services import Services


@dataclass
class EventContext:
    services: Services
    event: sansio.Event

    @property
    def installation_id(self) -> int | None:
        installation = self.event.data.get("installation")
        if isinstance(installation, dict) and isinstance(installation.get("id"), int):
            return installation["id"]
        return None

    def repo(self, project: Project) -> RepoGitHub:
        """The project's repository, as the delivery's installation."""
        return self.services.github.repo(self.installation_id, project.name)

    async def project(self, *, recent: bool = False) -> Project | None:
        """The project of the event's repository (recorded before handlers run); `recent`: a copy a
        few seconds old will do (ProjectStore.get_project_by_repo_id)."""
        repository = self.event.data.get("repository")
        if not isinstance(repository, dict) or "id" not in repository:
            return None
        return await self.services.store.projects.get_project_by_repo_id(repository["id"], recent=recent)

    async def audit(self, action: str, *, actor: str | None = None, project_id: str | None = None,
                    **details: Any) -> None:
        await self.services.store.audit.record(action, actor=actor, installation_id=self.installation_id,
                                               project_id=project_id, delivery_id=self.event.delivery_id,
                                               details=details)
