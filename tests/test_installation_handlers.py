"""Installations and repositories kept in sync from real GitHub payloads, end to end through the ingress."""

import copy

import pytest

from tests.ghfixtures import load_webhook, require_fixtures


@pytest.fixture(autouse=True)
def _fixtures() -> None:
    require_fixtures()


def payload(event: str, name: str, **changes) -> dict:
    data = copy.deepcopy(load_webhook(event, name))
    data.update(changes)
    return data


async def names(bot, *, include_archived: bool = False) -> list[str]:
    return [p.name for p in await bot.store.projects.list_projects(include_archived=include_archived)]


async def test_installation_lifecycle(bot) -> None:
    created = payload("installation", "created")
    installation_id = created["installation"]["id"]
    await bot.deliver("installation", created)
    installation = await bot.store.projects.get_installation(installation_id)
    assert (installation.account_login, installation.account_type) == ("Codertocat", "User")
    assert await names(bot) == ["Codertocat/Hello-World"]

    added = payload("installation_repositories", "added")
    added["installation"]["id"] = installation_id
    await bot.deliver("installation_repositories", added)
    assert await names(bot) == ["Codertocat/Hello-World", "Codertocat/Space"]

    removed = payload("installation_repositories", "removed",
                      repositories_removed=[added["repositories_added"][0]])
    removed["installation"]["id"] = installation_id
    await bot.deliver("installation_repositories", removed)
    assert await names(bot) == ["Codertocat/Hello-World"]
    assert "Codertocat/Space" in await names(bot, include_archived=True)  # archived, not deleted

    suspend = payload("installation", "suspend")
    suspend["installation"]["id"] = installation_id
    await bot.deliver("installation", suspend)
    assert (await bot.store.projects.get_installation(installation_id)).suspended_at is not None
    unsuspend = payload("installation", "unsuspend")
    unsuspend["installation"]["id"] = installation_id
    await bot.deliver("installation", unsuspend)
    assert (await bot.store.projects.get_installation(installation_id)).suspended_at is None

    deleted = payload("installation", "deleted")
    deleted["installation"]["id"] = installation_id
    await bot.deliver("installation", deleted)
    assert (await bot.store.projects.get_installation(installation_id)).deleted_at is not None
    assert await names(bot) == []
    actions = [e.action for e in await bot.store.audit.list(installation_id=installation_id)]
    assert actions == ["installation.deleted", "installation.unsuspend", "installation.suspend",
                       "installation_repositories.removed", "installation_repositories.added",
                       "installation.created"]


async def test_an_event_from_an_unseen_installation_records_it(bot) -> None:
    opened = payload("pull_request", "opened")
    await bot.deliver("pull_request", opened)
    installation = await bot.store.projects.get_installation(opened["installation"]["id"])
    assert installation is not None and installation.account_login == opened["repository"]["owner"]["login"]
    project = await bot.store.projects.get_project_by_name(opened["repository"]["full_name"])
    assert project is not None and project.installation_id == opened["installation"]["id"]


async def test_revoked_authorization_forgets_the_users_tokens(bot) -> None:
    revoked = payload("github_app_authorization", "revoked")
    await bot.store.projects.save_user(revoked["sender"]["id"], revoked["sender"]["login"], access_token="ghu_x1234")
    await bot.deliver("github_app_authorization", revoked)
    assert (await bot.store.projects.get_user(revoked["sender"]["id"])).access_token_encrypted is None


async def test_the_same_installation_event_twice_is_harmless(bot) -> None:
    created = payload("installation", "created")
    await bot.deliver("installation", created)
    await bot.deliver("installation", created)  # GitHub redelivered it under a new id
    assert await names(bot) == ["Codertocat/Hello-World"]
