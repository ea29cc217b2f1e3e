"""Event handlers: one gidgethub Router per concern, composed here (the bedevere shape)."""

from __future__ import annotations

import logging
from gidgethub import routing, sansio

from bot.services import Services
from bot.store import ClaimedJob

from handlers import agent_prs
from handlers import authorization
from handlers import checks
from handlers import commands
from handlers import installation
from handlers import merge_group
from handlers import merge_queue
from handlers import pull_request
from handlers.context import EventContext
from handlers.payloads import installation_ref, repo_ref

log = logging.getLogger(__name__)

router = routing.Router(installation.router, authorization.router, pull_request.router, merge_group.router,
                        merge_queue.router, checks.router, commands.router, agent_prs.router)

# Events the installation handlers record completely themselves.
_SELF_RECORDING = {"installation", "installation_repositories"}


async def record_unseen_installation(event: sansio.Event, ctx: EventContext) -> None:
    """An event from an installation we missed (the app was down for installation.created) still
    works: the installation and the repository's project are recorded from the payload."""
    if event.event in _SELF_RECORDING or ctx.installation_id is None:
        return
    repository = event.data.get("repository")
    repo_id = repository.get("id") if isinstance(repository, dict) and "full_name" in repository else None
    seen = ctx.services.seen_repositories
    if (ctx.installation_id, repo_id) in seen:
        return
    owner = repository.get("owner", {}).get("login") if isinstance(repository, dict) else None
    store = ctx.services.store.projects
    await store.upsert_installation(installation_ref(event.data["installation"], fallback_login=owner),
                                    only_if_missing=True)
    if repo_id is not None:
        await store.upsert_projects(ctx.installation_id, [repo_ref(repository)], only_if_missing=True)
    seen[(ctx.installation_id, repo_id)] = True


async def handle_delivery(services: Services, job: ClaimedJob) -> None:
    assert job.delivery_id is not None
    delivery = await services.store.deliveries.get(job.delivery_id)
    if delivery is None:
        raise LookupError(f"delivery {job.delivery_id} is not stored")
    log.debug("handling %s%s", delivery.event, f".{delivery.action}" if delivery.action else "")
    await handle_event(services, sansio.Event(delivery.data(), event=delivery.event, delivery_id=delivery.id))


async def handle_event(services: Services, event: sansio.Event) -> None:
    ctx = EventContext(services, event)
    await record_unseen_installation(event, ctx)
    await router.dispatch(event, ctx)
