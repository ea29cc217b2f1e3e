"""A personal API token (`cga_...`) for the JSON API tests: a GitHub user with a role on a repository of
the fake GitHub, recorded as if they had logged in to the dashboard, and a token created for them as the
account page does."""

from __future__ import annotations

import secrets

from bot.store import Store
from dashboard.auth import API_TOKEN_PREFIX
from tests.fakes.github import FakeGitHub


async def api_token_for(store: Store, fake: FakeGitHub, login: str = "alice", *, role: str = "admin",
                        full_name: str = "acme/widgets", installation_ids: list[int] | None = None) -> str:
    """A personal API token of `login`, who has `role` (read, triage, write, maintain, admin) on
    `full_name` and sees `installation_ids` (None: every installation)."""
    fake.set_permission(full_name, login, role)
    github_token = fake.add_user_token(login, installation_ids=installation_ids)
    user_id = int(fake.users[login.lower()]["id"])
    await store.projects.save_user(user_id, login, access_token=github_token)
    token = API_TOKEN_PREFIX + secrets.token_urlsafe(32)
    await store.projects.create_api_token(user_id, "tests", token)
    return token
