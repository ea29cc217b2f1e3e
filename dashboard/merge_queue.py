"""A project's merge queue page (`/projects/{owner}/{repo}/queue`): each base branch's queue, and its
branches alone (`/projects/{owner}/{repo}/queue/branches`, what live.js reloads on `merge_queue.updated`).
Also what `GET /api/v1/projects/{id}/queue` reads (dashboard/api.py).

A user with write access to the repository sees a Dequeue button on each queued PR: a POST with the CSRF
token (`/projects/{owner}/{repo}/queue/{number}/dequeue`; the API's `POST .../queue/{number}/dequeue`)
that goes through the queue's own `dequeue`, as `/dequeue` does, so the PR gets the same check run and
comment; audited as `merge_queue.dequeued`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from bot import labels
from bot.models import Project, utcnow
from bot.services import Services
from dashboard import auth
from dashboard.project_settings import MERGE_METHOD_WORDS, read_repo_file
from dashboard.pull_overview import ago
from dashboard.queue_view import BranchQueue, PullInfo, branch_queue, queued_prs
from dashboard.rendering import render, services_of
from pipeline.merge_queue.codec import queue_from_document
from pipeline.repo_config.reading import stored_settings
from pipeline.repo_config.settings_sources import resolve_settings


@dataclass(frozen=True)
class QueueSettings:
    """Whether the queue is on for the project, as the settings page resolves it (the file at the default
    branch's head, then the project's setting, then the default), and where that came from."""
    enabled: bool
    source: str  # in words: "set in .github/codegenapp.yml", "project setting", "default"
    method: str
    batch_size: int
    max_parallel: int


async def queue_settings(services: Services, project: Project) -> QueueSettings:
    repo_file = await read_repo_file(services, project)
    resolved = resolve_settings(repo_file.config, stored_settings(project))
    enabled = resolved["merge_queue.enabled"]
    return QueueSettings(enabled=bool(enabled.value), source=labels.setting_source(enabled.source),
                         method=resolved["merge_queue.method"].value,
                         batch_size=resolved["merge_queue.batch_size"].value,
                         max_parallel=resolved["merge_queue.max_parallel"].value)


async def branch_queues(services: Services, project: Project) -> list[BranchQueue]:
    """Every base branch's queue of the project, by branch name, with its PRs' titles and authors."""
    queues = [queue_from_document(stored.state) for stored in await services.store.merge_queues.of_project(project.id)]
    pulls: dict[int, PullInfo] = {}
    for number in sorted(queued_prs(queues)):
        tracked = await services.store.tracked_pulls.get(project.id, number)
        if tracked is not None:
            pulls[number] = PullInfo(tracked.title, tracked.author)
    return [branch_queue(queue, pulls) for queue in queues]


async def dequeue_pr(services: Services, project: Project, number: int, *, actor: str, source: str) -> bool:
    """Take PR `number` out of its queue as `/dequeue` does (the queue comments and completes its check run),
    and audit it; False when it is in no queue. `source`: "dashboard" or "api"."""
    queues = services.merge_queues
    if queues is None:
        raise web.HTTPServiceUnavailable(text="the merge queue does not run in this app")
    via = "the dashboard" if source == "dashboard" else "the API"
    if not await queues.dequeue(project, number, reason=f"dequeued from {via} by @{actor}"):
        return False
    await services.store.audit.record("merge_queue.dequeued", actor=actor, project_id=project.id,
                                      installation_id=project.installation_id,
                                      details={"pr": number, "source": source})
    return True


def _number(request: web.Request, key: str) -> int | None:
    raw = request.query.get(key, "")
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 10 else None


async def _context(request: web.Request) -> dict[str, Any]:
    services = services_of(request)
    project = await auth.require_project(request, request.match_info["owner"], request.match_info["repo"])
    branches = await branch_queues(services, project)
    now = utcnow()
    return {"project": project, "branches": [b for b in branches if not b.empty],
            "idle": [b for b in branches if b.empty], "queue": await queue_settings(services, project),
            "method_words": MERGE_METHOD_WORDS, "age": lambda then: ago(then, now),
            "can_dequeue": await auth.can_write(request, project) and services.merge_queues is not None,
            "dequeued": _number(request, "dequeued"), "not_queued": _number(request, "not_queued")}


async def queue_page(request: web.Request) -> web.Response:
    return await render(request, "merge_queue.html", **await _context(request))


async def queue_branches(request: web.Request) -> web.Response:
    """The branches' queues alone: what live.js puts in place of the page's."""
    return await render(request, "_merge_queue.html", **await _context(request))


async def dequeue(request: web.Request) -> web.Response:
    """The Dequeue button: back to the page, which says what happened."""
    services = services_of(request)
    project = await auth.require_project(request, request.match_info["owner"], request.match_info["repo"],
                                         write=True)
    user = await auth.require_user(request)
    number = int(request.match_info["number"])
    taken = await dequeue_pr(services, project, number, actor=user.login, source="dashboard")
    query = urlencode({"dequeued" if taken else "not_queued": number})
    raise web.HTTPSeeOther(f"/projects/{project.name}/queue?{query}")
