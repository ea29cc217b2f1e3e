"""Installations, projects (one per repository), project secrets and users' tokens."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import hashlib

from cachetools import TTLCache
from sqlalchemy import Connection, String, any_, bindparam, delete, select, update
from sqlalchemy.dialects import postgresql

from bot.crypto import Crypto
from bot.db import Database
from bot.models import ApiToken, Installation, Project, ProjectSecret, User, new_id, utcnow
from bot.store.batch import GroupCommit
from bot.store.prepared import Prepared
from bot.store.sql import entities, entity, first_from_rows, from_rows, upsert_insert, with_scalar_defaults

SECRET_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")
# What the dashboard may change on a project (dashboard/project_settings.py checks the values).
PROJECT_SETTINGS = frozenset({"repository_rules", "setup_commands", "validate_commands", "auto_merge_enabled",
                              "auto_confirm_plans", "planning_statement", "agent_backend", "agent_command",
                              "max_fix_attempts", "pinned", "merge_queue"})
MAX_SECRET_BYTES = 64 * 1024
_PROJECT_COLUMNS = tuple(Project.__table__.c)
# A project and its secrets, a row a secret (one row of None secret without any).
_WITH_SECRETS = (select(*_PROJECT_COLUMNS, ProjectSecret.name.label("secret_name"),
                        ProjectSecret.value_encrypted.label("secret_value"))
                 .outerjoin(ProjectSecret, ProjectSecret.project_id == Project.id))
_WITH_SECRETS_OF = Prepared(_WITH_SECRETS.where(Project.id == bindparam("b_id")))
# PostgreSQL: those of several projects at once.
_WITH_SECRETS_OF_ALL = Prepared(_WITH_SECRETS.where(Project.id == any_(bindparam("b_ids",
                                                                                 type_=postgresql.ARRAY(String)))))
_BY_REPO_ID = Prepared(select(*_PROJECT_COLUMNS).where(Project.github_repo_id == bindparam("b_repo")).limit(1))
# How stale the webhook path's copy of a project may be (another process may archive or rename it;
# this one forgets its copies at once). Settings are always read fresh where they are used.
RECENT_PROJECT_SECONDS = 10.0
# How stale a process's copy of a user's session epoch may be. This process raises its copy at once on
# logout and revoke; another process (a second web process, a standalone worker handling the revoke)
# lets a session it ended through for at most this long in this one.
SESSION_EPOCH_SECONDS = 5.0


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


@dataclass(frozen=True)
class ApiTokenHolder:
    """Whose personal API token it is, and when it expires (None: never)."""

    user: User
    expires_at: datetime | None


class ProjectStore:
    def __init__(self, db: Database, crypto: Crypto, *, github_url: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._db = db
        self._crypto = crypto
        self._github_url = github_url.rstrip("/")
        self._recent_by_repo_id: TTLCache[int, Project] = TTLCache(maxsize=4096, ttl=RECENT_PROJECT_SECONDS,
                                                                  timer=clock)
        self._session_epochs: TTLCache[int, int] = TTLCache(maxsize=10_000, ttl=SESSION_EPOCH_SECONDS, timer=clock)
        # The first record of an installation or repository a process sees (`only_if_missing`).
        self._add_installation = Prepared(upsert_insert(db, Installation)
                                          .on_conflict_do_nothing(index_elements=["id"]))
        self._add_project = Prepared(upsert_insert(db, Project)
                                     .on_conflict_do_nothing(index_elements=["github_repo_id"]))
        # PostgreSQL: every validation job reads its project with its secrets; those read meanwhile go in one
        # round trip (SQLite reads in process, one statement each).
        self._with_secrets: GroupCommit[str, list[Any]] | None = (
            None if db.is_sqlite else GroupCommit(self._read_with_secrets))

    # installations
    async def upsert_installation(self, ref: InstallationRef, *, only_if_missing: bool = False) -> None:
        values: dict[str, Any] = {"id": ref.id, "account_login": ref.account_login, "account_id": ref.account_id,
                                  "account_type": ref.account_type, "repository_selection": ref.repository_selection,
                                  "permissions": ref.permissions or {}, "events": ref.events or [],
                                  "suspended_at": ref.suspended_at, "deleted_at": None,
                                  "created_at": utcnow(), "updated_at": utcnow()}
        if only_if_missing:  # the first event of each installation a process sees: prepared
            row = with_scalar_defaults(Installation, values)
            await self._db.write(lambda conn: self._add_installation.run(conn, row))
            return
        changing = {k: v for k, v in values.items() if k not in ("id", "created_at")}
        stmt = upsert_insert(self._db, Installation).values(values).on_conflict_do_update(index_elements=["id"],
                                                                                          set_=changing)
        await self._db.write(lambda conn: conn.execute(stmt))

    async def mark_installation_deleted(self, installation_id: int) -> list[str]:
        """Forget an uninstalled installation; its projects are archived, not deleted. Returns their names."""
        self._recent_by_repo_id.clear()
        now = utcnow()

        def work(conn: Connection) -> list[str]:
            conn.execute(update(Installation).where(Installation.id == installation_id)
                         .values(deleted_at=now, updated_at=now))
            return list(conn.execute(
                update(Project).where(Project.installation_id == installation_id, Project.archived_at.is_(None))
                .values(archived_at=now, updated_at=now).returning(Project.name)).scalars())

        return await self._db.write(work)

    async def set_installation_suspended(self, installation_id: int, suspended_at: datetime | None) -> None:
        stmt = (update(Installation).where(Installation.id == installation_id)
                .values(suspended_at=suspended_at, updated_at=utcnow()))
        await self._db.write(lambda conn: conn.execute(stmt))

    async def get_installation(self, installation_id: int) -> Installation | None:
        return await self._db.read(lambda conn: entity(conn, select(Installation)
                                                       .where(Installation.id == installation_id)))

    # projects
    async def upsert_projects(self, installation_id: int, repos: list[RepoRef], *,
                              only_if_missing: bool = False) -> None:
        """Record repositories as projects (renames followed by repository id; archived ones come back)."""
        self._recent_by_repo_id.clear()
        if not repos:
            return
        now = utcnow()
        rows = [{"id": new_id(), "installation_id": installation_id, "github_repo_id": repo.id,
                 "name": repo.full_name, "github_url": f"{self._github_url}/{repo.full_name}",
                 "private": repo.private, "default_branch": repo.default_branch,
                 "repository_rules": "", "setup_commands": [], "validate_commands": [],
                 "auto_merge_enabled": False, "auto_confirm_plans": False, "planning_statement": "",
                 "pinned": True, "created_at": now, "updated_at": now} for repo in repos]
        if only_if_missing:  # the first event of each repository a process sees: prepared
            new_rows = [with_scalar_defaults(Project, row) for row in rows]
            await self._db.write(lambda conn: self._add_project.run_many(conn, new_rows))
            return
        statements = []
        for repo, values in zip(repos, rows, strict=True):
            changing = {"installation_id": installation_id, "name": repo.full_name,
                        "github_url": values["github_url"], "private": repo.private,
                        "archived_at": None, "updated_at": now}
            if repo.default_branch:
                changing["default_branch"] = repo.default_branch
            statements.append(upsert_insert(self._db, Project).values(values)
                              .on_conflict_do_update(index_elements=["github_repo_id"], set_=changing))

        def work(conn: Connection) -> None:
            for stmt in statements:
                conn.execute(stmt)

        await self._db.write(work)

    async def archive_projects(self, repo_ids: list[int]) -> list[str]:
        self._recent_by_repo_id.clear()
        if not repo_ids:
            return []
        now = utcnow()
        stmt = (update(Project).where(Project.github_repo_id.in_(repo_ids), Project.archived_at.is_(None))
                .values(archived_at=now, updated_at=now).returning(Project.name))
        return await self._db.write(lambda conn: list(conn.execute(stmt).scalars()))

    async def list_projects(self, *, include_archived: bool = False) -> list[Project]:
        stmt = select(Project).order_by(Project.name)
        if not include_archived:
            stmt = stmt.where(Project.archived_at.is_(None))
        return await self._db.read(lambda conn: entities(conn, stmt))

    async def active_projects(self) -> list[Project]:
        """The projects not archived whose installation is neither deleted nor suspended, by
        installation, then name (the resync goes installation by installation)."""
        stmt = (select(Project).join(Installation, Installation.id == Project.installation_id)
                .where(Project.archived_at.is_(None), Installation.deleted_at.is_(None),
                       Installation.suspended_at.is_(None))
                .order_by(Project.installation_id, Project.name))
        return await self._db.read(lambda conn: entities(conn, stmt))

    async def get_project_by_name(self, full_name: str) -> Project | None:
        stmt = select(Project).where(Project.name == full_name).order_by(Project.archived_at.is_not(None))
        return await self._db.read(lambda conn: entity(conn, stmt))

    async def get_project_by_repo_id(self, github_repo_id: int, *, recent: bool = False) -> Project | None:
        """With `recent`, a copy up to RECENT_PROJECT_SECONDS old will do (for who the project is, not
        its settings): every pull request event of a busy repository would read the same row."""
        if recent and (found := self._recent_by_repo_id.get(github_repo_id)) is not None:
            return found
        params = {"b_repo": github_repo_id}
        project = await self._db.read(lambda conn: first_from_rows(Project, _BY_REPO_ID.run(conn, params).mappings()))
        if project is not None:
            self._recent_by_repo_id[github_repo_id] = project
        return project

    async def get_project(self, project_id: str) -> Project | None:
        return await self._db.read(lambda conn: entity(conn, select(Project).where(Project.id == project_id)))

    async def project_with_secrets(self, project_id: str) -> tuple[Project | None, dict[str, str]]:
        """`get_project` and `secret_values` in one statement (one round trip on PostgreSQL): what
        running a validation reads of its project. No project: (None, {})."""
        if self._with_secrets is not None:
            rows = await self._with_secrets.submit(project_id)
        else:
            params = {"b_id": project_id}
            rows = await self._db.read(lambda conn: _WITH_SECRETS_OF.run(conn, params).mappings())
        if not rows:
            return None, {}
        secrets = {row["secret_name"]: self._crypto.decrypt(row["secret_value"])
                   for row in rows if row["secret_name"] is not None}
        return from_rows(Project, rows[:1])[0], secrets

    async def _read_with_secrets(self, project_ids: list[str]) -> list[list[Any]]:
        """PostgreSQL: `project_with_secrets`'s rows of several projects in one statement."""
        params = {"b_ids": list(dict.fromkeys(project_ids))}
        rows = await self._db.read(lambda conn: _WITH_SECRETS_OF_ALL.run(conn, params).mappings())
        return [[row for row in rows if row["id"] == project_id] for project_id in project_ids]

    async def close(self) -> None:
        if self._with_secrets is not None:
            await self._with_secrets.close()

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
        await self._db.write(lambda conn: conn.execute(stmt))

    async def secret_names(self, project_id: str) -> list[tuple[str, datetime]]:
        stmt = (select(ProjectSecret.name, ProjectSecret.updated_at).where(ProjectSecret.project_id == project_id)
                .order_by(ProjectSecret.name))
        return await self._db.read(lambda conn: [(name, updated) for name, updated in conn.execute(stmt)])

    async def secret_values(self, project_id: str) -> dict[str, str]:
        stmt = select(ProjectSecret.name, ProjectSecret.value_encrypted).where(ProjectSecret.project_id == project_id)
        rows = await self._db.read(lambda conn: conn.execute(stmt).all())
        return {name: self._crypto.decrypt(token) for name, token in rows}

    # users
    async def forget_user_tokens(self, user_id: int, *, end_sessions: bool = False) -> bool:
        """Forget the user's GitHub tokens (and with `end_sessions`, end their dashboard sessions in the
        same statement); False when there is no such user."""
        values: dict[str, Any] = {"access_token_encrypted": None, "refresh_token_encrypted": None,
                                  "token_expires_at": None, "updated_at": utcnow()}
        if end_sessions:
            values["session_epoch"] = User.session_epoch + 1
        stmt = update(User).where(User.id == user_id).values(values).returning(User.session_epoch)
        epoch = await self._db.write(lambda conn: conn.execute(stmt).scalar_one_or_none())
        if epoch is not None:
            self._remember_epoch(user_id, epoch)
        return epoch is not None

    async def save_user(self, user_id: int, login: str, *, access_token: str | None) -> int:
        """Record a login; returns the user's session epoch, read fresh (the new session carries it)."""
        token = self._crypto.encrypt(access_token) if access_token else None
        stmt = upsert_insert(self._db, User).values(id=user_id, login=login, access_token_encrypted=token,
                                                    created_at=utcnow(), updated_at=utcnow())
        stmt = stmt.on_conflict_do_update(index_elements=["id"], set_={
            "login": login, "access_token_encrypted": token, "updated_at": utcnow()}).returning(User.session_epoch)
        epoch: int = await self._db.write(lambda conn: conn.execute(stmt).scalar_one())
        return self._remember_epoch(user_id, epoch)

    async def session_epoch(self, user_id: int) -> int | None:
        """The user's session epoch (their dashboard sessions issued at a lower one are over); None when
        there is no such user. A copy up to SESSION_EPOCH_SECONDS old will do: it is read on every
        request of a signed-in browser."""
        if (found := self._session_epochs.get(user_id)) is not None:
            return found
        stmt = select(User.session_epoch).where(User.id == user_id)
        epoch = await self._db.read(lambda conn: conn.execute(stmt).scalar_one_or_none())
        return None if epoch is None else self._remember_epoch(user_id, epoch)

    async def end_sessions(self, user_id: int) -> int | None:
        """End every dashboard session of the user (raise the epoch); the new epoch, None for no such user."""
        stmt = (update(User).where(User.id == user_id)
                .values(session_epoch=User.session_epoch + 1, updated_at=utcnow()).returning(User.session_epoch))
        epoch = await self._db.write(lambda conn: conn.execute(stmt).scalar_one_or_none())
        return None if epoch is None else self._remember_epoch(user_id, epoch)

    def _remember_epoch(self, user_id: int, epoch: int) -> int:
        # Epochs only grow: a read that started before a raise and ends after it must not bring back the old one.
        epoch = max(epoch, self._session_epochs.get(user_id, epoch))
        self._session_epochs[user_id] = epoch
        return epoch

    async def get_user(self, user_id: int) -> User | None:
        return await self._db.read(lambda conn: entity(conn, select(User).where(User.id == user_id)))


    async def user_access_token(self, user_id: int) -> str | None:
        """The user's GitHub token (decrypted), or None when there is none (never logged in, revoked)."""
        stmt = select(User.access_token_encrypted).where(User.id == user_id)
        token = await self._db.read(lambda conn: conn.execute(stmt).scalar_one_or_none())
        return self._crypto.decrypt(token) if token else None

    # the dashboard's changes
    async def update_project(self, project_id: str, values: dict[str, Any]) -> Project | None:
        unknown = set(values) - PROJECT_SETTINGS
        if unknown:
            raise ValueError(f"not project settings: {', '.join(sorted(unknown))}")
        self._recent_by_repo_id.clear()  # its copies carry the settings too
        stmt = update(Project).where(Project.id == project_id).values(**values, updated_at=utcnow()).returning(Project.id)

        def work(conn: Connection) -> Project | None:
            if conn.execute(stmt).scalar_one_or_none() is None:
                return None
            return entity(conn, select(Project).where(Project.id == project_id))

        return await self._db.write(work)

    async def delete_secret(self, project_id: str, name: str) -> bool:
        stmt = (delete(ProjectSecret).where(ProjectSecret.project_id == project_id, ProjectSecret.name == name)
                .returning(ProjectSecret.id))
        return await self._db.write(lambda conn: conn.execute(stmt).scalar_one_or_none() is not None)

    # personal API tokens (only their SHA-256 is stored)
    @staticmethod
    def hash_api_token(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    async def create_api_token(self, user_id: int, name: str, token: str, *,
                               expires_at: datetime | None = None) -> ApiToken:
        """`expires_at` None: the token never expires (until revoked)."""
        row = {"id": new_id(), "user_id": user_id, "name": name, "token_hash": self.hash_api_token(token),
               "created_at": utcnow(), "expires_at": expires_at}
        stmt = upsert_insert(self._db, ApiToken).values(row)
        await self._db.write(lambda conn: conn.execute(stmt))
        return ApiToken(**row)

    async def api_tokens(self, user_id: int) -> list[ApiToken]:
        stmt = select(ApiToken).where(ApiToken.user_id == user_id).order_by(ApiToken.created_at)
        return await self._db.read(lambda conn: entities(conn, stmt))

    async def delete_api_token(self, user_id: int, token_id: str) -> bool:
        stmt = delete(ApiToken).where(ApiToken.user_id == user_id, ApiToken.id == token_id).returning(ApiToken.id)
        return await self._db.write(lambda conn: conn.execute(stmt).scalar_one_or_none() is not None)

    async def user_for_api_token(self, token: str) -> ApiTokenHolder | None:
        """The token's user and when the token expires (the caller decides whether it still counts; its
        use is recorded either way)."""
        digest = self.hash_api_token(token)
        found = select(ApiToken.user_id, ApiToken.expires_at).where(ApiToken.token_hash == digest)

        def work(conn: Connection) -> ApiTokenHolder | None:
            row = conn.execute(found).one_or_none()
            if row is None:
                return None
            conn.execute(update(ApiToken).where(ApiToken.token_hash == digest).values(last_used_at=utcnow()))
            user = entity(conn, select(User).where(User.id == row.user_id))
            return None if user is None else ApiTokenHolder(user, row.expires_at)

        return await self._db.write(work)
