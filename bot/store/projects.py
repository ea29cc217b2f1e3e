"""Installations, projects (one per repository), project secrets and users' tokens."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from bot.crypto import Crypto
from bot.db import Database
from bot.models import Installation, Project, ProjectSecret, User, new_id, utcnow
from bot.store.dialect import upsert_insert

SECRET_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")
MAX_SECRET_BYTES = 64 * 1024


class InvalidSecret(ValueError):
    pass


@dataclass(frozen=True)
class RepoRef:
    """What a webhook tells about a repository."""

    id: int
    full_name: str
    private: bool = False
    default_branch: str | None = None


@dataclass(frozen=True)
class InstallationRef:
    id: int
    account_login: str
    account_id: int | None = None
    account_type: str | None = None
    repository_selection: str | None = None
    permissions: dict[str, Any] | None = None
    events: list[str] | None = None
    suspended_at: datetime | None = None


class ProjectStore:
    def __init__(self, db: Database, crypto: Crypto, *, github_url: str) -> None:
        self._db = db
        self._crypto = crypto
        self._github_url = github_url.rstrip("/")

    # installations
    async def upsert_installation(self, ref: InstallationRef, *, only_if_missing: bool = False) -> None:
        values: dict[str, Any] = {"id": ref.id, "account_login": ref.account_login, "account_id": ref.account_id,
                                  "account_type": ref.account_type, "repository_selection": ref.repository_selection,
                                  "permissions": ref.permissions or {}, "events": ref.events or [],
                                  "suspended_at": ref.suspended_at, "deleted_at": None,
                                  "created_at": utcnow(), "updated_at": utcnow()}
        stmt = upsert_insert(self._db, Installation).values(values)
        if only_if_missing:
            stmt = stmt.on_conflict_do_nothing(index_elements=["id"])
        else:
            changing = {k: v for k, v in values.items() if k not in ("id", "created_at")}
            stmt = stmt.on_conflict_do_update(index_elements=["id"], set_=changing)
        async with self._db.write() as session:
            await session.execute(stmt)

    async def mark_installation_deleted(self, installation_id: int) -> list[str]:
        """Forget an uninstalled installation; its projects are archived, not deleted. Returns their names."""
        now = utcnow()
        async with self._db.write() as session:
            await session.execute(update(Installation).where(Installation.id == installation_id)
                                  .values(deleted_at=now, updated_at=now))
            result = await session.execute(
                update(Project).where(Project.installation_id == installation_id, Project.archived_at.is_(None))
                .values(archived_at=now, updated_at=now).returning(Project.name))
            return list(result.scalars())

    async def set_installation_suspended(self, installation_id: int, suspended_at: datetime | None) -> None:
        async with self._db.write() as session:
            await session.execute(update(Installation).where(Installation.id == installation_id)
                                  .values(suspended_at=suspended_at, updated_at=utcnow()))

    async def get_installation(self, installation_id: int) -> Installation | None:
        async with self._db.read() as session:
            return await session.get(Installation, installation_id)

    # projects
    async def upsert_projects(self, installation_id: int, repos: list[RepoRef], *,
                              only_if_missing: bool = False) -> None:
        """Record repositories as projects (renames followed by repository id; archived ones come back)."""
        if not repos:
            return
        now = utcnow()
        async with self._db.write() as session:
            for repo in repos:
                values: dict[str, Any] = {
                    "id": new_id(), "installation_id": installation_id, "github_repo_id": repo.id,
                    "name": repo.full_name, "github_url": f"{self._github_url}/{repo.full_name}",
                    "private": repo.private, "default_branch": repo.default_branch,
                    "repository_rules": "", "setup_commands": [], "validate_commands": [],
                    "auto_merge_enabled": False, "auto_confirm_plans": False, "planning_statement": "",
                    "pinned": True, "created_at": now, "updated_at": now}
                stmt = upsert_insert(self._db, Project).values(values)
                if only_if_missing:
                    stmt = stmt.on_conflict_do_nothing(index_elements=["github_repo_id"])
                else:
                    changing = {"installation_id": installation_id, "name": repo.full_name,
                                "github_url": values["github_url"], "private": repo.private,
                                "archived_at": None, "updated_at": now}
                    if repo.default_branch:
                        changing["default_branch"] = repo.default_branch
                    stmt = stmt.on_conflict_do_update(index_elements=["github_repo_id"], set_=changing)
                await session.execute(stmt)

    async def archive_projects(self, repo_ids: list[int]) -> list[str]:
        if not repo_ids:
            return []
        now = utcnow()
        async with self._db.write() as session:
            result = await session.execute(
                update(Project).where(Project.github_repo_id.in_(repo_ids), Project.archived_at.is_(None))
                .values(archived_at=now, updated_at=now).returning(Project.name))
            return list(result.scalars())

    async def list_projects(self, *, include_archived: bool = False) -> list[Project]:
        stmt = select(Project).order_by(Project.name)
        if not include_archived:
            stmt = stmt.where(Project.archived_at.is_(None))
        async with self._db.read() as session:
            return list((await session.execute(stmt)).scalars())

    async def get_project_by_name(self, full_name: str) -> Project | None:
        async with self._db.read() as session:
            return (await session.execute(
                select(Project).where(Project.name == full_name).order_by(Project.archived_at.is_not(None))
            )).scalars().first()

    # secrets
    async def set_secret(self, project_id: str, name: str, value: str) -> None:
        if not SECRET_NAME.fullmatch(name):
            raise InvalidSecret(f"secret name {name!r} must match [A-Z_][A-Z0-9_]*")
        if len(value.encode()) > MAX_SECRET_BYTES:
            raise InvalidSecret(f"secret {name} is larger than 64 KiB")
        stmt = (upsert_insert(self._db, ProjectSecret)
                .values(project_id=project_id, name=name, value_encrypted=self._crypto.encrypt(value),
                        updated_at=utcnow()))
        stmt = stmt.on_conflict_do_update(index_elements=["project_id", "name"],
                                          set_={"value_encrypted": stmt.excluded.value_encrypted,
                                                "updated_at": stmt.excluded.updated_at})
        async with self._db.write() as session:
            await session.execute(stmt)

    async def secret_names(self, project_id: str) -> list[tuple[str, datetime]]:
        async with self._db.read() as session:
            rows = await session.execute(select(ProjectSecret.name, ProjectSecret.updated_at)
                                         .where(ProjectSecret.project_id == project_id)
                                         .order_by(ProjectSecret.name))
            return [(name, updated) for name, updated in rows]

    async def secret_values(self, project_id: str) -> dict[str, str]:
        async with self._db.read() as session:
            rows = await session.execute(select(ProjectSecret.name, ProjectSecret.value_encrypted)
                                         .where(ProjectSecret.project_id == project_id))
            return {name: self._crypto.decrypt(token) for name, token in rows}

    # users
    async def forget_user_tokens(self, user_id: int) -> bool:
        async with self._db.write() as session:
            result = await session.execute(
                update(User).where(User.id == user_id)
                .values(access_token_encrypted=None, refresh_token_encrypted=None, token_expires_at=None,
                        updated_at=utcnow())
                .returning(User.id))
            return result.scalar_one_or_none() is not None

    async def save_user(self, user_id: int, login: str, *, access_token: str | None) -> None:
        token = self._crypto.encrypt(access_token) if access_token else None
        stmt = upsert_insert(self._db, User).values(id=user_id, login=login, access_token_encrypted=token,
                                                    created_at=utcnow(), updated_at=utcnow())
        stmt = stmt.on_conflict_do_update(index_elements=["id"], set_={
            "login": login, "access_token_encrypted": token, "updated_at": utcnow()})
        async with self._db.write() as session:
            await session.execute(stmt)

    async def get_user(self, user_id: int) -> User | None:
        async with self._db.read() as session:
            return await session.get(User, user_id)

