"""What a handler gets besides the event: the app's services and the delivery's installation client."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gidgethub import sansio

if TYPE_CHECKING:
    from gidgethub.abc import GitHubAPI

    from bot.models import Project
    from bot.services import Services


class NoInstallation(Exception):
    pass


@dataclass
class EventContext:
    services: "Services"
    event: sansio.Event

    @property
    def installation_id(self) -> int | None:
        installation = self.event.data.get("installation")
        if isinstance(installation, dict) and isinstance(installation.get("id"), int):
            return installation["id"]
        return None

    @property
    def gh(self) -> "GitHubAPI":
        if self.installation_id is None:
            raise NoInstallation(f"{self.event.event} delivery {self.event.delivery_id} has no installation")
        if self.services.github is None:
            raise NoInstallation("the GitHub App is not configured")
        return self.services.github.installation(self.installation_id)

    async def project(self, *, recent: bool = False) -> "Project | None":
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
