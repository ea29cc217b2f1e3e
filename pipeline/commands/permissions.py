"""A user's role on a repository, from GitHub, cached briefly: who may run commands, press buttons,
and whether a fork's author may run without /ok-to-test."""

from __future__ import annotations

from collections.abc import MutableMapping

from gidgethub import BadRequest
from gidgethub.abc import GitHubAPI

from pipeline.decisions import role_of


async def repository_role(gh: GitHubAPI, cache: MutableMapping[tuple[str, str], str], full_name: str,
                          login: str) -> str:
    """admin, maintain, write, triage, read or none (not a collaborator, or not a user GitHub knows)."""
    key = (full_name.lower(), login.lower())
    role = cache.get(key)
    if role is None:
        try:
            answer = await gh.getitem(f"/repos/{full_name}/collaborators/{{username}}/permission",
                                      {"username": login})
            role = role_of(answer)
        except BadRequest as exc:
            if exc.status_code != 404:
                raise
            role = "none"
        cache[key] = role
    return role
