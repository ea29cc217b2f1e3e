"""Reading the parts of webhook payloads the handlers use: what a handler cannot do without is read with
`required`, which names the missing field (`MalformedDelivery`, a permanent error: the delivery is dead at
once instead of being retried); fields that older deliveries lack are tolerated.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple

from gidgethub import sansio

from bot.errors import PermanentError
from bot.github.errors import UnexpectedResponse, describe
from bot.github.types import PullRequest
from bot.store import InstallationRef, RepoRef
from pipeline.validation.subjects import parse_group_ref


class MalformedDelivery(PermanentError):
    """A delivery without a field its handler reads, or with one of another type. Every delivery of an
    event comes in the same shape, so handling it again cannot help."""

    def __init__(self, event: sansio.Event, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        action = event.data.get("action") if isinstance(event.data, Mapping) else None
        name = f"{event.event}.{action}" if isinstance(action, str) else event.event
        super().__init__(f"{name} delivery {event.delivery_id} {problem}. GitHub sends it in every such delivery, "
                         "so this one is not handled and not retried: compare it with the App's Recent Deliveries "
                         "(its Advanced settings on GitHub) and redeliver it from there if GitHub's copy is whole")


def required(event: sansio.Event, path: str, kind: type | None = None) -> Any:
    """The payload's value at the dotted `path` (list items by index: "repositories.0.id"), not null and,
    with `kind`, of that type; else MalformedDelivery naming the path and what is there instead."""
    value: Any = event.data
    walked: list[str] = []
    for part in path.split("."):
        if isinstance(value, Mapping) and value.get(part) is not None:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            where = f" (`{'.'.join(walked)}` is {describe(value)})" if walked else ""
            raise MalformedDelivery(event, path, f"has no `{path}`{where}")
        walked.append(part)
    if kind is not None and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
        raise MalformedDelivery(event, path, f"has `{path}` as {describe(value)}, not {kind.__name__}")
    return value


def pull_request_of(event: sansio.Event) -> PullRequest:
    """The delivery's `pull_request`, typed; MalformedDelivery naming a field it lacks."""
    pull_request = required(event, "pull_request", dict)
    repository = required(event, "repository.full_name", str)
    try:
        return PullRequest.parse(pull_request, source=f"delivery {event.delivery_id}", repository=repository)
    except UnexpectedResponse as exc:
        required(event, f"pull_request.{exc.missing.strip('`')}")  # raises, naming the field in the payload
        raise


class MergeGroup(NamedTuple):
    """A `merge_group` delivery's group: its head on a merge queue's branch, its base, and the PR its
    branch is named for (the last it merges)."""
    head_ref: str
    head_sha: str
    base_sha: str
    pr_number: int


def merge_group_of(event: sansio.Event) -> MergeGroup:
    """The delivery's `merge_group`; MalformedDelivery naming a field it lacks, or a head ref that is no
    merge queue's branch."""
    head_ref = required(event, "merge_group.head_ref", str)
    parsed = parse_group_ref(head_ref)
    if parsed is None:
        raise MalformedDelivery(event, "merge_group.head_ref",
                                f"has `merge_group.head_ref` {head_ref!r}, not a merge queue's branch")
    return MergeGroup(head_ref, required(event, "merge_group.head_sha", str),
                      required(event, "merge_group.base_sha", str), parsed.pr_number)


def repo_refs(event: sansio.Event, key: str) -> list[RepoRef]:
    """The repositories listed under `key` ("repositories", "repositories_added"); none when it is absent."""
    listed = event.data.get(key) or []
    for i in range(len(listed)):
        required(event, f"{key}.{i}.id", int)
        required(event, f"{key}.{i}.full_name", str)
    return [repo_ref(repo) for repo in listed]


def installation_of(event: sansio.Event) -> InstallationRef:
    required(event, "installation.id", int)
    return installation_ref(event.data["installation"])


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


def shape_problem(event_name: str, delivery_id: str, payload: Mapping[str, Any]) -> str | None:
    """Why a delivery is not the shape its event promises, as the handlers read it (None: it is). The
    delivery-log sweep skips such an entry with this reason instead of storing a job that would die."""
    event = sansio.Event(dict(payload), event=event_name, delivery_id=delivery_id)
    try:
        _PROMISED.get(event_name, lambda _event: None)(event)
    except MalformedDelivery as exc:
        problem = exc.problem
    except UnexpectedResponse as exc:
        problem = f"has no usable {exc.missing} in `pull_request`"
    else:
        return None
    action = payload.get("action")
    return f"a {event_name}{'.' + action if isinstance(action, str) else ''} delivery that {problem}"


_PROMISED: dict[str, Callable[[sansio.Event], object]] = {
    "pull_request": pull_request_of,
    "check_run": lambda event: required(event, "check_run.head_sha", str),
    "check_suite": lambda event: required(event, "check_suite.head_sha", str),
    "issue_comment": lambda event: (required(event, "issue.number", int), required(event, "comment.id", int)),
    "installation": installation_of,
    "installation_repositories": installation_of,
    "merge_group": merge_group_of,
}


def sender_login(data: dict[str, Any]) -> str | None:
    sender = data.get("sender")
    return sender.get("login") if isinstance(sender, dict) else None
