"""The app's one way to GitHub: operations on a repository as its installation, installation tokens
for git, the App's own endpoints. Built once by the composition root; `configure` switches it to the
App registered from the dashboard while the app runs."""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
import gidgethub.aiohttp
from cachetools import TTLCache

from bot.config import Settings
from bot.errors import PermanentError
from bot.github.check_runs import CheckRuns
from bot.github.client import GitHubClientConfig, GitHubClients
from bot.github.comments import Comments
from bot.github.pulls import Pulls
from bot.github.repos import Repos
from bot.github.users import UserGitHub

ROLE_CACHE_SECONDS = 60.0


class AppNotConfigured(PermanentError):
    """No GitHub App is configured (or the project has no installation): nothing can reach GitHub."""


@dataclass(frozen=True)
class RepoGitHub:
    """One repository, as the installation that holds it."""

    repository: str  # owner/name
    installation_id: int
    pulls: Pulls
    check_runs: CheckRuns
    comments: Comments
    repos: Repos


class GitHubApp:
    def __init__(self, http: aiohttp.ClientSession, settings: Settings) -> None:
        self.http = http
        self.api_url = settings.github_api_url
        # (repository, login) in lower case -> role, for a minute (Repos.role)
        self.roles: TTLCache[tuple[str, str], str] = TTLCache(10_000, ROLE_CACHE_SECONDS)
        self.app_id: str | None = None
        self._clients: GitHubClients | None = None
        self._settle(settings)

    def _settle(self, settings: Settings) -> GitHubClients | None:
        old = self._clients
        self.app_id, self._clients = settings.app_id, None
        if settings.app_configured:
            assert settings.app_id is not None and settings.private_key is not None
            self._clients = GitHubClients(self.http, GitHubClientConfig(
                app_id=settings.app_id, private_key=settings.private_key, api_url=settings.github_api_url,
                user_agent=f"codegenapp/{settings.app_id}", writes_per_minute=settings.github_writes_per_minute,
                writes_per_hour=settings.github_writes_per_hour))
        return old

    async def configure(self, settings: Settings) -> None:
        """Use the App of `settings` from now on (it was just registered)."""
        old = self._settle(settings)
        if old is not None:
            await old.close()

    @property
    def configured(self) -> bool:
        return self._clients is not None

    @property
    def clients(self) -> GitHubClients:
        if self._clients is None:
            raise AppNotConfigured("the GitHub App is not configured")
        return self._clients

    def installation_api(self, installation_id: int) -> gidgethub.aiohttp.GitHubAPI:
        return self.clients.installation(installation_id)

    def app_api(self) -> gidgethub.aiohttp.GitHubAPI:
        return self.clients.app()

    def repo(self, installation_id: int | None, repository: str) -> RepoGitHub:
        if installation_id is None:
            raise AppNotConfigured(f"{repository} has no installation of the app")
        gh = self.installation_api(installation_id)
        return RepoGitHub(repository, installation_id, Pulls(gh, repository), CheckRuns(gh, repository),
                          Comments(gh, repository), Repos(gh, repository, self.roles))

    async def installation_token(self, installation_id: int) -> str:
        return await self.clients.installation_token(installation_id)

    def forget_installation(self, installation_id: int) -> None:
        if self._clients is not None:
            self._clients.forget_installation(installation_id)

    def user(self, token: str) -> UserGitHub:
        return UserGitHub(self.http, self.api_url, token)

    async def close(self) -> None:
        if self._clients is not None:
            await self._clients.close()
