"""Reading the parts of webhook payloads the handlers use, tolerating fields that older deliveries lack."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bot.store import InstallationRef, RepoRef


def parse_time(value: Any) -> datetime | None:
    if isinstance(value, str) and value:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    return None


def installation_ref(installation: dict[str, Any], *, fallback_login: str | None = None) -> InstallationRef:
    account = installation.get("account") or {}
    return InstallationRef(
        id=installation["id"],
        account_login=account.get("login") or fallback_login or f"installation-{installation['id']}",
        account_id=account.get("id"),
        account_type=account.get("type"),
        repository_selection=installation.get("repository_selection"),
        permissions=installation.get("permissions"),
        events=installation.get("events"),
        suspended_at=parse_time(installation.get("suspended_at")),
    )


def repo_ref(repo: dict[str, Any]) -> RepoRef:
    return RepoRef(id=repo["id"], full_name=repo["full_name"], private=bool(repo.get("private", False)),
                   default_branch=repo.get("default_branch"))


def sender_login(data: dict[str, Any]) -> str | None:
    sender = data.get("sender")
    return sender.get("login") if isinstance(sender, dict) else None
