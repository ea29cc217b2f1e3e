"""GitHub as a signed-in dashboard user sees it (their OAuth token): who they are, which repositories
of the app's installations they can reach."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from gidgethub.aiohttp import GitHubAPI

from bot.github.errors import field


class UserGitHub:
    def __init__(self, http: aiohttp.ClientSession, api_url: str, token: str) -> None:
        self.gh = GitHubAPI(http, "codegenapp-dashboard", oauth_token=token, base_url=api_url)

    async def me(self) -> tuple[int, str]:
        """(id, login) of the token's user."""
        user = await self.gh.getitem("/user")
        return int(field(user, "id", "GET /user")), str(field(user, "login", "GET /user"))

    async def repositories(self) -> AsyncIterator[tuple[int, dict[str, Any]]]:
        """(installation id, repository) for every repository of every installation the user can reach."""
        async for installation in self.gh.getiter("/user/installations", iterable_key="installations"):
            async for repo in self.gh.getiter(f"/user/installations/{installation['id']}/repositories",
                                              iterable_key="repositories"):
                yield int(installation["id"]), repo
