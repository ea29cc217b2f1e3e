"""The dashboard's agent-run pages: launching a run from the project page (needs write access), the run
page (status, plan, Confirm / Reject, PR link, the validations of its PR, a live log over the WebSocket),
and its Confirm / Reject / Cancel forms (CSRF-checked by the session middleware)."""

from __future__ import annotations

from aiohttp import web

from bot.models import AGENT_AWAITING_CONFIRMATION, AGENT_TERMINAL
from bot.services import SERVICES, Services
from dashboard import auth
from dashboard.api import decide_run
from dashboard.projects import project_page
from dashboard.rendering import render
from pipeline.agents.service import AgentRunRefused

_ID = "{run_id:[0-9a-f]{32}}"
LOG_LINES = 200


def setup(app: web.Application) -> None:
    app.router.add_post("/projects/{owner}/{repo}/runs", launch)
    app.router.add_get(f"/projects/{{owner}}/{{repo}}/runs/{_ID}", run_page)
    for verb in ("confirm", "reject", "cancel"):
        app.router.add_post(f"/projects/{{owner}}/{{repo}}/runs/{_ID}/{verb}", _decide(verb))


async def launch(request: web.Request) -> web.StreamResponse:
    services: Services = request.app[SERVICES]
    project = await auth.require_project(request, request.match_info["owner"], request.match_info["repo"],
                                         write=True)
    user = await auth.require_user(request)
    goal = str((await request.post()).get("target_text", "")).replace("\r\n", "\n")
    if not goal.strip():
        return await project_page(request, status=400, problem="Target text: say what the agent should do.")
    try:
        run = await services.agent_runs.start(project, goal, source="dashboard", requested_by=user.login)
    except AgentRunRefused as exc:
        return await project_page(request, status=409, problem=f"No agent run: {exc}", goal=goal)
    raise web.HTTPSeeOther(f"/projects/{project.name}/runs/{run.id}")


async def run_page(request: web.Request) -> web.Response:
    services: Services = request.app[SERVICES]
    project = await auth.require_project(request, request.match_info["owner"], request.match_info["repo"])
    run = await services.store.agent_runs.get(request.match_info["run_id"])
    if run is None or run.project_id != project.id:
        raise web.HTTPNotFound(text="no such agent run")
    validations = []
    if run.pr_number is not None:
        validations = [v for v in await services.store.validations.for_project(project.id, limit=200)
                       if v.pr_number == run.pr_number]
    log = [e for e in reversed(await services.store.audit.list(project_id=project.id, limit=1000))
           if (e.details or {}).get("run_id") == run.id][-LOG_LINES:]
    return await render(request, "run.html", project=project, run=run, validations=validations, log=log,
                        write=await auth.can_write(request, project),
                        awaiting=run.status == AGENT_AWAITING_CONFIRMATION, finished=run.status in AGENT_TERMINAL)


def _decide(verb: str):  # type: ignore[no-untyped-def]
    async def handler(request: web.Request) -> web.StreamResponse:
        project = await auth.require_project(request, request.match_info["owner"], request.match_info["repo"],
                                             write=True)
        run_id = request.match_info["run_id"]
        run = await request.app[SERVICES].store.agent_runs.get(run_id)
        if run is None or run.project_id != project.id:
            raise web.HTTPNotFound(text="no such agent run")
        await decide_run(request, run_id, verb)
        raise web.HTTPSeeOther(f"/projects/{project.name}/runs/{run_id}")

    handler.__name__ = f"{verb}_run_page"
    return handler
