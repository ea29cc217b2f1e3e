"""The live-update WebSocket `/api/v1/ws`."""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from bot import labels
from bot.events import RECONNECTED, AppEvent
from bot.services import Services
from dashboard import auth
from dashboard.projects import live_status
from dashboard.rendering import services_of

LIVE_EVENTS = ("project.status.updated", "agent.run.started", "agent.run.updated", "agent.run.completed",
               "pr.created", "pr.updated", "validation.started", "validation.completed", "notification.new",
               "merge.merged", "merge_queue.updated")
# After these, the project's card and PR overview change: a `project.status.updated` follows them.
CHANGES_STATUS = frozenset({"validation.started", "validation.completed", "pr.updated", "merge.merged"})
WEBSOCKETS = web.AppKey("dashboard_websockets", set)


class SharedStatus:
    """`live_status` computed once per (project, event) and shared by every socket that forwards the
    event: each socket gets the same AppEvent object from the bus, so that object names the event. The
    last `size` are kept (with their event, so that an id is never reused while it is a key); a socket
    further behind computes its own."""

    def __init__(self, size: int = 64) -> None:
        self._size = size
        self._found: OrderedDict[tuple[str, int], tuple[AppEvent, asyncio.Future[dict[str, Any]]]] = OrderedDict()
        self.computed = 0  # how many times live_status ran (the tests' count)

    async def of(self, services: Services, event: AppEvent, project_id: str | None = None) -> dict[str, Any]:
        """The status of `project_id` (default: the event's project) after `event`."""
        project_id = project_id or event.data["project_id"]
        key = (project_id, id(event))
        found = self._found.get(key)
        if found is None or found[0] is not event:
            self.computed += 1
            future = asyncio.ensure_future(live_status(services, project_id))
            future.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved, if nobody waits
            self._found[key] = found = (event, future)
            while len(self._found) > self._size:
                self._found.popitem(last=False)
        return await asyncio.shield(found[1])  # one socket closing does not cancel the others' status


SHARED_STATUS = web.AppKey("dashboard_shared_status", SharedStatus)


async def websocket(request: web.Request) -> web.StreamResponse:
    """Pushes `{"event": name, "data": {...}}` for the bus's events about projects the user may see.
    A browser's handshake must come from the dashboard's own pages (`Origin` is PUBLIC_URL's, or the
    address the request itself was sent to, as when PUBLIC_URL is left to its default and the app is
    reached on another port or host name): the session cookie goes along from any site's page, so
    another site could otherwise listen in.

    When the bus's listening connection came back (RECONNECTED: another process's events of the gap are
    lost), the socket re-reads from the database which projects the user may see and sends a
    `project.status.updated` for each, as `live_status` reads it now (cards, PR overview, running
    validations): the page shows the present state again; the single events of the gap are not replayed."""
    origin = request.headers.get("Origin")
    own = (services_of(request).settings.public_url, f"{request.scheme}://{request.host}")
    if origin is not None and not any(same_origin(origin, url) for url in own):
        raise web.HTTPForbidden(text=f"live updates are only for this app's own pages, not {origin[:100]!r}")
    user = await auth.authenticate(request)
    if user is None:
        raise web.HTTPUnauthorized(text="log in first")
    names = {p.id: p.name for p in await auth.visible_projects(request)}
    ws = web.WebSocketResponse(heartbeat=30)
    await ws.prepare(request)
    request.app[WEBSOCKETS].add(ws)
    services = services_of(request)
    shared = request.app[SHARED_STATUS]
    try:
        with services.bus.subscribe() as queue:
            reader = asyncio.ensure_future(ws.receive())
            while not ws.closed:
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({reader, getter}, return_when=asyncio.FIRST_COMPLETED)
                if reader in done:
                    getter.cancel()
                    message = reader.result()
                    if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                        break
                    reader = asyncio.ensure_future(ws.receive())
                    continue
                event: AppEvent = getter.result()
                if event.name == RECONNECTED:
                    names = {p.id: p.name for p in await auth.visible_projects(request)}
                    for project_id in names:
                        await ws.send_json({"event": "project.status.updated",
                                            "data": await shared.of(services, event, project_id)})
                    continue
                name = names.get(event.data.get("project_id"))  # type: ignore[arg-type]
                if event.name not in LIVE_EVENTS or name is None:
                    continue
                await ws.send_json({"event": event.name, "data": described(event, name)})
                if event.name in CHANGES_STATUS:
                    await ws.send_json({"event": "project.status.updated",
                                        "data": await shared.of(services, event)})
            reader.cancel()
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        request.app[WEBSOCKETS].discard(ws)
    return ws


def same_origin(origin: str, public_url: str) -> bool:
    """Whether an `Origin` header names PUBLIC_URL's origin (scheme, host, port; default ports alike)."""
    def key(url: str) -> tuple[str, str, int | None] | None:
        try:
            parts = urlsplit(url.strip())
            port = parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower())
        except ValueError:
            return None
        return (parts.scheme.lower(), (parts.hostname or "").lower(), port) if parts.hostname else None

    found = key(origin)
    return found is not None and found == key(public_url)


def described(event: AppEvent, repository: str) -> dict[str, Any]:
    """The event's data as JSON, with what a person reads of it: its repository, and a validation's
    result in words (`label`)."""
    data = json.loads(json.dumps(event.data, default=str))
    data["repository"] = repository
    if event.name == "validation.completed":
        waiting = data.get("conclusion") == "action_required"  # the fork gate: the run waits, it did not fail
        data["label"] = labels.validation_state("waiting") if waiting else labels.conclusion(data.get("conclusion"))
    elif event.name == "validation.started":
        data["label"] = labels.validation_state("in_progress")
    elif event.name.startswith("agent.run.") and isinstance(data.get("status"), str):
        data["label"] = labels.agent_status(data["status"])
    return data


async def close_websockets(app: web.Application) -> None:
    for ws in list(app[WEBSOCKETS]):
        await ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"server shutdown")
