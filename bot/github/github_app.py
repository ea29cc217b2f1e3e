"""The app's one way to GitHub: operations on a repository as its installation, installation tokens
for git, the App's own endpoints. Built once by the composition root; `configure` switches it to the
App registered from the dashboard while the app runs."""

from __future__ import annotations

import dataclasses
import asyncio
from dataclasses import dataclass
from typing import Any

import aiohttp
import gidgethub.aiohttp
from cachetools import TTLCache

from bot.config import Settings
from bot.errors import PermanentError
from bot.events import EventBus
from bot.github.check_runs import CheckRuns
from bot.github.client import GitHubClientConfig, GitHubClients
from bot.github.comments import Comments
from bot.github.errors import UnexpectedResponse, field
from bot.github.hook_deliveries import HookDeliveries
from bot.github.meta import GitHubMeta, read_meta
from bot.github.pulls import Pulls
from bot.github.repos import Repos
from bot.github.users import UserGitHub
from bot.github.write_lanes import WriteOwnership, publish_holds, publish_lane_wanted, start_following_holds
from bot.redact import Redactor

ROLE_CACHE_SECONDS = 60.0


class ManifestRefused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class LoginRefused(Exception):
    """GitHub did not exchange the OAuth code for a user token (the message says why)."""


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

    def masked(self, redactor: Redactor) -> RepoGitHub:
        """This repository, every check run and comment it writes masked by `redactor` (which knows
        what the process does not: a project's secrets)."""
        return dataclasses.replace(self, check_runs=self.check_runs.masked(redactor),
                                   comments=self.comments.masked(redactor))


@dataclass(frozen=True)
class AppIdentity:
    """The App as GitHub shows it (`GET /app`): its name, and the slug of github.com/apps/SLUG."""
    name: str
    slug: str


class GitHubApp:
    def __init__(self, http: aiohttp.ClientSession, settings: Settings, *, ownership: WriteOwnership | None = None,
                 hold_bus: EventBus | None = None) -> None:
        """Several processes (PostgreSQL): `ownership` says which one sends an installation's writes
        (bot/github/write_lanes.py), and GitHub's rate-limit holds met here are published on `hold_bus`
        (which carries them to the others; `follow_holds` applies theirs here)."""
        self.http = http
        self._ownership = ownership
        self._hold_bus = hold_bus
        self._following_holds: asyncio.Task[None] | None = None
        self.api_url = settings.github_api_url
        self.web_url = settings.github_url
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
                writes_per_hour=settings.github_writes_per_hour),
                ownership=self._ownership, on_hold=None if self._hold_bus is None else publish_holds(self._hold_bus),
                on_lane_wanted=None if self._hold_bus is None else publish_lane_wanted(self._hold_bus))
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

    def apply_hold(self, scope: str, until_epoch: float) -> None:
        """GitHub's rate limit holds `scope` until `until_epoch`, as another process learned."""
        if self._clients is not None:
            self._clients.apply_hold(scope, until_epoch)

    def follow_holds(self) -> None:
        """Apply the holds the other processes publish on `hold_bus`, until `close`."""
        if self._hold_bus is not None and self._following_holds is None:
            self._following_holds = start_following_holds(self._hold_bus, self.apply_hold, self.lane_wanted)

    def lane_wanted(self, installation_id: int) -> None:
        """Another process waits for this installation's write lane (its owner hands it over soon)."""
        if self._clients is not None:
            self._clients.lane_wanted(installation_id)

    def status(self) -> dict[str, Any]:
        """For /health: GitHub work paused while GitHub fails (by installation, or "all"), and the
        installations held by a rate limit."""
        if self._clients is None:
            return {"ok": True, "paused": [], "rate_limited": []}
        return self._clients.status()

    def hook_deliveries(self) -> HookDeliveries:
        """The App's webhook delivery log, as the App (JWT)."""
        return HookDeliveries(self.clients.app())

    def installation_api(self, installation_id: int) -> gidgethub.aiohttp.GitHubAPI:
        return self.clients.installation(installation_id)

    def repo(self, installation_id: int | None, repository: str) -> RepoGitHub:
        if installation_id is None:
            raise AppNotConfigured(f"{repository} has no installation of the app")
        gh = self.installation_api(installation_id)
        return RepoGitHub(repository, installation_id, Pulls(gh, repository),
                          CheckRuns(gh, repository, app_id=self.app_id),
                          Comments(gh, repository, app_id=self.app_id), Repos(gh, repository, self.roles))

    async def installation_token(self, installation_id: int) -> str:
        return await self.clients.installation_token(installation_id)

    def forget_installation(self, installation_id: int) -> None:
        if self._clients is not None:
            self._clients.forget_installation(installation_id)

    async def convert_manifest(self, code: str) -> dict[str, Any]:
        """The App GitHub made from our manifest (`POST /app-manifests/{code}/conversions`, no
        authentication: the one-time code is the credential): its id, key, secrets. ManifestRefused
        when GitHub says no; aiohttp's errors when it cannot be reached."""
        async with self.http.post(f"{self.api_url}/app-manifests/{code}/conversions",
                                  headers={"Accept": "application/vnd.github+json",
                                           "User-Agent": "codegenapp-setup"}) as response:
            body = await response.json(content_type=None)
            if response.status != 201:
                raise ManifestRefused(response.status, str(body.get("message", body) if isinstance(body, dict)
                                                           else body))
        if not isinstance(body, dict):
            raise UnexpectedResponse("POST /app-manifests/{code}/conversions", "a JSON object", body)
        return body

    async def user_token(self, code: str, *, client_id: str, client_secret: str, redirect_uri: str) -> str:
        """The OAuth web flow's last step (github.com, not the API): the code GitHub sent the browser
        back with becomes the user's token. LoginRefused when GitHub says no."""
        async with self.http.post(f"{self.web_url}/login/oauth/access_token", headers={"Accept": "application/json"},
                                  data={"client_id": client_id, "client_secret": client_secret, "code": code,
                                        "redirect_uri": redirect_uri}) as response:
            answer = await response.json(content_type=None)
        token = answer.get("access_token") if isinstance(answer, dict) else None
        if not token:
            raise LoginRefused(str(answer.get("error_description") or answer) if isinstance(answer, dict)
                               else str(answer))
        return str(token)

    def user(self, token: str) -> UserGitHub:
        return UserGitHub(self.http, self.api_url, token)

    async def identity(self) -> AppIdentity:
        """`GET /app` as the App (JWT): its name and slug."""
        body = await self.clients.app().getitem("/app")
        return AppIdentity(name=str(field(body, "name", "GET /app")), slug=str(field(body, "slug", "GET /app")))

    async def meta(self) -> GitHubMeta:
        """`GET /meta` (anonymous): where GitHub's webhook deliveries come from."""
        return await read_meta(gidgethub.aiohttp.GitHubAPI(self.http, "codegenapp", base_url=self.api_url))

    async def close(self) -> None:
        if self._following_holds is not None:
            self._following_holds.cancel()
            await asyncio.gather(self._following_holds, return_exceptions=True)
        if self._clients is not None:
            await self._clients.close()
