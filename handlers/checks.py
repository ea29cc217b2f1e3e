"""Re-run requests from GitHub's Checks UI ("Re-run" on our check run or the whole suite)."""

from __future__ import annotations

from typing import Any

from gidgethub import routing, sansio

from handlers.context import EventContext
from pipeline.validation import pull_request_ref

router = routing.Router()


def _ours(ctx: EventContext, app: dict[str, Any] | None) -> bool:
    return bool(app) and str(app.get("id")) == str(ctx.services.settings.app_id)


async def _rerun(ctx: EventContext, head_sha: str, pull_requests: list[dict[str, Any]], trigger: str) -> None:
    project = await ctx.project()
    if ctx.installation_id is None or project is None or ctx.services.validations is None:
        return
    numbers = [pr["number"] for pr in pull_requests if isinstance(pr, dict) and "number" in pr]
    if not numbers:  # GitHub leaves the list empty for forks: find the PR from our own record
        known = await ctx.services.store.validations.latest_for_head(project.id, head_sha)
        numbers = [known.pr_number] if known is not None else []
    for number in numbers:
        pull = await ctx.gh.getitem(f"/repos/{project.name}/pulls/{number}")
        if pull["state"] != "open" or pull["head"]["sha"] != head_sha:
            continue  # the PR moved on; its newer head has its own run
        await ctx.services.validations.start(ctx.gh, project, pull_request_ref(ctx.event.data["repository"], pull),
                                             trigger=trigger, restart=True)


@router.register("check_run", action="rerequested")
async def check_run_rerequested(event: sansio.Event, ctx: EventContext) -> None:
    check_run = event.data["check_run"]
    if _ours(ctx, check_run.get("app")):
        await _rerun(ctx, check_run["head_sha"], check_run.get("pull_requests") or [], "check_run.rerequested")


@router.register("check_suite", action="rerequested")
async def check_suite_rerequested(event: sansio.Event, ctx: EventContext) -> None:
    suite = event.data["check_suite"]
    if _ours(ctx, suite.get("app")):
        await _rerun(ctx, suite["head_sha"], suite.get("pull_requests") or [], "check_suite.rerequested")
