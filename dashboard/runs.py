"""The dashboard's agent-run pages: launching a run from the project page (needs write access), the run
page (a stepper of where the run is, its plan as sanitised markdown with Confirm / Reject, links to the
agent's own page, the PR and its validation, the validations of its PR, and its events in words, redrawn
live by static/run.js), and its Confirm / Reject / Cancel forms (CSRF-checked by the session middleware)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aiohttp import web

from bot import labels
from bot.links import github_link, web_link
from bot.models import AGENT_AWAITING_CONFIRMATION, AGENT_TERMINAL, AgentRun, AuditEvent, Project, ValidationState
from bot.services import SERVICES, Services
from dashboard import auth
from dashboard.api import decide_run
from dashboard.audit_sentences import Where, kinds_of_group, sentence
from dashboard.markdown import render_markdown
from dashboard.projects import project_page
from dashboard.rendering import render
from dashboard.run_stepper import RunSnapshot, steps
from pipeline.agents.backend import CODEGEN
from pipeline.agents.machine import MERGED_REASON
from pipeline.agents.service import AgentRunRefused

_ID = "{run_id:[0-9a-f]{32}}"
LOG_LINES = 200
# events about the run's PR that its log shows besides its own
PR_KINDS = tuple(kinds_of_group("validation") + kinds_of_group("merge"))
# said already by the event of the person who caused it, or by the status change before it
_REPEATS = ("agent.run.completed",)
BACKENDS = {"codegen": "Codegen agent", "local": "Local agent command"}


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


def shown_in_log(events: Iterable[AuditEvent]) -> list[AuditEvent]:
    """The run's events a person needs: a status change a person caused follows their own event
    ("@alice confirmed the plan"), and the run's end follows its last status change."""
    return [e for e in events
            if e.action not in _REPEATS and not (e.action == "agent.run.updated" and e.actor)]


def ended_from(run: AgentRun, events: Iterable[AuditEvent]) -> str | None:
    """The status an ended run was in before it ended, from its status changes."""
    found = None
    for event in events:
        details = event.details or {}
        if event.action == "agent.run.updated" and details.get("to") == run.status:
            found = details.get("from")
    return found if isinstance(found, str) else None


def snapshot(run: AgentRun, events: list[AuditEvent]) -> RunSnapshot:
    merged = run.reason == MERGED_REASON or any(e.action == "merge.merged" for e in events)
    return RunSnapshot(status=run.status, auto_confirm=run.auto_confirm, has_plan=bool(run.plan_text),
                       pr_number=run.pr_number, fix_attempts=run.fix_attempts,
                       max_fix_attempts=run.max_fix_attempts, pr_merged=merged,
                       ended_from=ended_from(run, events) if run.status in AGENT_TERMINAL else None)


def run_links(run: AgentRun, project: Project, github_url: str,
              latest: ValidationState | None) -> list[dict[str, Any]]:
    """The links of the run page's header: the agent's own page, the PR on GitHub, its validation."""
    links = []
    agent_url = web_link((run.agent_handle or {}).get("web_url")) if run.backend == CODEGEN else None
    if agent_url:
        links.append({"text": "Codegen run", "href": agent_url, "external": True, "field": "run-agent"})
    if run.pr_number is not None:
        pr_url = github_link(run.pr_url, github_url) or github_link(
            f"{github_url.rstrip('/')}/{project.name}/pull/{run.pr_number}", github_url)
        if pr_url:
            links.append({"text": f"Pull request #{run.pr_number}", "href": pr_url, "external": True,
                          "field": "run-pr"})
    if latest is not None:
        links.append({"text": f"Validation: {labels.validation_state(latest.status, latest.conclusion)}",
                      "href": f"/validations/{latest.id}", "external": False, "field": "run-validation"})
    return links


async def run_page(request: web.Request) -> web.Response:
    services: Services = request.app[SERVICES]
    project = await auth.require_project(request, request.match_info["owner"], request.match_info["repo"])
    run = await services.store.agent_runs.get(request.match_info["run_id"])
    if run is None or run.project_id != project.id:
        raise web.HTTPNotFound(text="no such agent run")
    validations = []
    if run.pr_number is not None:
        validations = await services.store.validations.for_pr(project.id, run.pr_number)
    events = await services.store.audit.for_run(project.id, run.id, pr_number=run.pr_number, since=run.created_at,
                                                kinds_of_pr=PR_KINDS, limit=LOG_LINES)
    github_url = services.settings.github_url
    where = Where(project.name, github_url, run_id=run.id)
    log = [(e.at, sentence(e.action, e.actor, e.details, where)) for e in shown_in_log(events)]
    return await render(request, "run.html", project=project, run=run, validations=validations, log=log,
                        steps=steps(snapshot(run, events)), plan=render_markdown(run.plan_text),
                        links=run_links(run, project, github_url, validations[0] if validations else None),
                        labels=labels, backend=BACKENDS.get(run.backend, f"{run.backend} agent"), write=await auth.can_write(request, project),
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
