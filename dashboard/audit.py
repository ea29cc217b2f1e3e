"""A project's audit log page: its events as sentences (dashboard/audit_sentences.py) with links to the
PR, validation or agent run, filtered by kind and by who (query parameters: a plain form, no script
needed), 50 a page with links to newer and older ones (keyset paging on the event's id)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from bot.models import AuditEvent
from bot.store.audit import AuditPage
from dashboard import auth
from dashboard.audit_sentences import (GROUPS, Sentence, Where, choice_title, filter_choices, selected_actions,
                                       sentence)
from dashboard.rendering import render, services_of

MAX_FILTER_LENGTH = 100


def _position(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() and len(value) < 19 else None


def by_day(events: Iterable[AuditEvent], where: Where) -> list[tuple[str, list[tuple[datetime, Sentence]]]]:
    """The events under a heading per day ("Monday 7 December 2026"), newest first as given."""
    days: list[tuple[str, list[tuple[datetime, Sentence]]]] = []
    for event in events:
        day = f"{event.at:%A} {event.at.day} {event.at:%B %Y}"
        if not days or days[-1][0] != day:
            days.append((day, []))
        days[-1][1].append((event.at, sentence(event.action, event.actor, event.details, where)))
    return days


def paging_links(page: AuditPage, filters: dict[str, str]) -> dict[str, str | None]:
    """The Newer and Older links of a page, keeping the filters."""
    def link(**position: int) -> str:
        return "?" + urlencode({**filters, **position}) if filters or position else "?"

    if not page.events:  # paged past an end
        return {"newer": link() if page.newer else None, "older": None}
    return {"newer": link(after=page.events[0].id) if page.newer else None,
            "older": link(before=page.events[-1].id) if page.older else None}


async def audit_page(request: web.Request) -> web.Response:
    project = await auth.require_project(request, request.match_info["owner"], request.match_info["repo"])
    services = services_of(request)
    kind = request.query.get("kind", "").strip()[:MAX_FILTER_LENGTH]
    actor = request.query.get("actor", "").strip().lstrip("@")[:MAX_FILTER_LENGTH]
    filters = {key: value for key, value in (("kind", kind), ("actor", actor)) if value}
    page = await services.store.audit.page(project.id, actions=selected_actions(kind or None), actor=actor or None,
                                           before=_position(request.query.get("before")),
                                           after=_position(request.query.get("after")))
    where = Where(project.name, services.settings.github_url)
    choices: list[Any] = filter_choices()
    known = set(GROUPS) | {value for _, _, kinds in choices for value, _ in kinds}
    unknown_kind = kind if kind and kind not in known else None
    return await render(request, "audit.html", project=project, days=by_day(page.events, where),
                        choices=choices, kind=kind, actor=actor, actors=await services.store.audit.actors(project.id),
                        unknown_kind=(unknown_kind, choice_title(unknown_kind)) if unknown_kind else None,
                        filtered=bool(filters), paging=paging_links(page, filters))
