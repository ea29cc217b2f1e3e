"""The OpenAPI 3.0 document of the JSON API (`GET /api/v1/openapi.json`), written by hand next to
dashboard/api.py; tests/test_api_openapi.py calls every route and checks requests and answers against it."""

from __future__ import annotations

import copy
from typing import Any

from bot.models import SUBJECT_MERGE_GROUP, SUBJECT_PULL_REQUEST, SUBJECT_QUEUE_CANDIDATE
from dashboard.queue_view import STATES as QUEUE_STATES
from pipeline.agents.backend import BACKENDS
from pipeline.repo_config.merge_queue_block import QUEUE_BOUNDS, QUEUE_METHODS

VERSION = "1.0.0"


def _s(type_: str, *, nullable: bool = False, **more: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": type_, **more}
    if nullable:
        schema["nullable"] = True
    return schema


def _obj(properties: dict[str, Any], *, required: list[str] | None = None, closed: bool = True) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": not closed}
    needed = list(properties) if required is None else required
    if needed:  # OpenAPI 3.0: `required` may not be empty
        schema["required"] = needed
    return schema


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


ID = _s("string", pattern="^[0-9a-f]{32}$")
DELIVERY_ID = _s("string", pattern="^[0-9A-Za-z._-]{1,64}$", description="the delivery's X-GitHub-Delivery")
WHEN = _s("string", format="date-time")
WHEN_OR_NULL = _s("string", format="date-time", nullable=True)
TEXT = _s("string", maxLength=20_000)
COMMANDS = _s("array", items=_s("string", maxLength=2_000, pattern="^[^\\r\\n]*$"), maxItems=50)

SETTINGS = {
    "repository_rules": TEXT, "planning_statement": TEXT, "agent_command": TEXT,
    "setup_commands": COMMANDS, "validate_commands": COMMANDS,
    "auto_merge_enabled": _s("boolean"), "auto_confirm_plans": _s("boolean"),
    "agent_backend": _s("string", nullable=True, enum=[*BACKENDS, None]),
    "max_fix_attempts": _s("integer", minimum=0, maximum=20),
}
# The project's merge queue settings: null is not set (the repository's file, else the default, applies)
QUEUE_SETTINGS = {
    "enabled": _s("boolean", nullable=True), "method": _s("string", nullable=True, enum=[*QUEUE_METHODS, None]),
    **{name: _s("integer", nullable=True, minimum=low, maximum=high) for name, (low, high) in QUEUE_BOUNDS.items()},
}
_QUEUE_NOTE = ("the merge queue's settings (a key set under merge_queue: in the repository's "
               ".github/codegenapp.yml wins); null: not set")

SCHEMAS: dict[str, Any] = {
    "Error": _obj({"error": _s("string")}),
    "Project": _obj({
        "id": ID, "name": _s("string", description="owner/repo"), "github_url": _s("string"),
        "default_branch": _s("string", nullable=True), "private": _s("boolean"),
        "installation_id": _s("integer", nullable=True), "pinned": _s("boolean"),
        "can_write": _s("boolean", description="may start and decide agent runs, re-run validations"),
        "can_manage": _s("boolean", description="may change the settings (admin or maintain)"),
        "settings": _ref("ProjectSettings"), "created_at": WHEN, "updated_at": WHEN_OR_NULL}),
    "ProjectSettings": _obj({**SETTINGS, "merge_queue": {**_obj(QUEUE_SETTINGS), "description": _QUEUE_NOTE}}),
    "ProjectSettingsChange": {**_obj({**SETTINGS, "merge_queue": {**_obj(QUEUE_SETTINGS, required=[]),
                                                                  "description": _QUEUE_NOTE + "; the sub-keys "
                                                                  "not sent keep their values"}}, required=[]),
                              "minProperties": 1,
                              "description": "The settings to change; the others keep their values. Checked "
                                             "as the settings page checks them (e.g. the local backend needs "
                                             "an agent command)."},
    "ProjectList": _obj({"projects": _s("array", items=_ref("Project"))}),
    "StartRun": _obj({"target_text": _s("string", minLength=1, pattern="\\S",
                                        description="what the agent should do")}),
    "Run": _obj({
        "id": ID, "project_id": ID, "target_text": _s("string"),
        "status": _s("string", enum=["pending", "planning", "awaiting_confirmation", "running", "pr_open",
                                     "validating", "fixing", "completed", "failed", "cancelled"]),
        "source": _s("string", description="api, pr_comment, fix_button, dashboard"),
        "requested_by": _s("string", nullable=True), "backend": _s("string", enum=["codegen", "local"]),
        "auto_confirm": _s("boolean"), "plan": _s("string", nullable=True), "plan_generated": _s("boolean"),
        "plan_decided_by": _s("string", nullable=True), "origin_pr_number": _s("integer", nullable=True),
        "pr_number": _s("integer", nullable=True), "pr_url": _s("string", nullable=True),
        "pr_created": _s("boolean"), "branch": _s("string", nullable=True), "fix_attempts": _s("integer"),
        "max_fix_attempts": _s("integer"), "validation_status": _s("string", nullable=True),
        "last_validation_id": _s("string", nullable=True), "reason": _s("string", nullable=True),
        "agent_url": _s("string", nullable=True), "created_at": WHEN, "updated_at": WHEN_OR_NULL,
        "completed_at": WHEN_OR_NULL}),
    "RunList": _obj({"runs": _s("array", items=_ref("Run"))}),
    "AgentSettings": _obj({
        "project_id": ID, "agent_backend": SETTINGS["agent_backend"],
        "effective_backend": _s("string", enum=list(BACKENDS)), "agent_command": _s("string"),
        "max_fix_attempts": _s("integer"), "auto_confirm_plans": _s("boolean"),
        "repository_rules": _s("string"), "planning_statement": _s("string"),
        "problem": _s("string", nullable=True, description="why agent runs cannot start (null: they can)")}),
    "AgentSettingsChange": {**_obj({key: SETTINGS[key] for key in (
        "agent_backend", "agent_command", "max_fix_attempts", "auto_confirm_plans", "repository_rules",
        "planning_statement")}, required=[])},
    "Step": _obj({
        "stage": _s("string"), "name": _s("string"), "status": _s("string"),
        "exit_code": _s("integer", nullable=True), "detail": _s("string", nullable=True),
        "duration_seconds": _s("number", nullable=True), "output_tail": _s("string", nullable=True)}),
    "Validation": _obj({
        "id": ID, "project_id": ID,
        "pr_number": _s("integer", description="the pull request; for a merge queue's commit, the last it merges"),
        "subject": _s("string", enum=[SUBJECT_PULL_REQUEST, SUBJECT_MERGE_GROUP, SUBJECT_QUEUE_CANDIDATE],
                      description="what was validated: a pull request's head, a group of GitHub's merge queue, "
                                  "or a candidate of the app's own merge queue"),
        "subject_ref": _s("string", nullable=True, description="the merge queue's ref of its commit (null for a "
                                                               "pull request's head)"),
        "head_sha": _s("string"),
        "base_sha": _s("string", nullable=True),
        "status": _s("string", enum=["queued", "in_progress", "completed", "superseded", "waiting"]),
        "conclusion": _s("string", nullable=True), "title": _s("string", nullable=True),
        "trigger": _s("string"), "is_fork": _s("boolean"), "author": _s("string", nullable=True),
        "agent_run_id": _s("string", nullable=True), "superseded_by": _s("string", nullable=True),
        "auto_merge_eligible": _s("boolean"), "steps": _s("array", items=_ref("Step")),
        "error": _s("string", nullable=True), "details_url": _s("string"), "created_at": WHEN,
        "started_at": WHEN_OR_NULL, "completed_at": WHEN_OR_NULL}),
    "QueueEntry": _obj({
        "position": _s("integer", nullable=True, minimum=1, description="1 is next to land; null: leaving"),
        "pr_number": _s("integer"), "title": _s("string", nullable=True), "author": _s("string", nullable=True),
        "head_sha": _s("string", description="the head that was queued"), "enqueued_at": WHEN,
        "enqueued_by": _s("string", description="a login, or auto-merge"),
        "state": _s("string", enum=list(QUEUE_STATES), description="waiting, or its candidate's state"),
        "label": _s("string", description="the state in words"),
        "candidate_id": _s("integer", nullable=True, description="the candidate testing it, if one"),
        "tested_with": _s("array", items=_s("integer"), description="the other PRs in that candidate")}),
    "QueueCandidate": _obj({
        "id": _s("integer"), "prs": _s("array", items=_s("integer"), description="its own batch, in queue order"),
        "ahead": _s("array", items=_s("integer"), description="the queued PRs merged before its batch"),
        "base_sha": _s("string", description="the base tip it is built on"),
        "state": _s("string", enum=[s for s in QUEUE_STATES if s not in ("waiting", "leaving")]),
        "label": _s("string", description="the state in words"), "attempt": _s("integer", minimum=1),
        "reason": _s("string", description="why it was built"),
        "failing_step": _s("string", nullable=True), "flaky_steps": _s("array", items=_s("string")),
        "landed": _s("array", items=_s("integer"), description="its PRs landed so far"),
        "reused_verdict": _s("boolean", description="passed on the PR's own validation of the same tree"),
        "created_at": WHEN}),
    "BranchQueue": _obj({
        "base_ref": _s("string"), "base_sha": _s("string", description="the base tip the queue knows"),
        "entries": _s("array", items=_ref("QueueEntry"), description="in queue order, then those leaving"),
        "candidates": _s("array", items=_ref("QueueCandidate"))}),
    "ProjectQueues": _obj({
        "project_id": ID,
        "enabled": _s("boolean", description="whether the queue is on (the file at the default branch's head, "
                                             "then the project's settings)"),
        "queues": _s("array", items=_ref("BranchQueue"), description="one per base branch, by name")}),
    "Dequeued": _obj({
        "project_id": ID, "pr_number": _s("integer"),
        "status": _s("string", enum=["dequeued"], description="it is leaving the queue: its check run and "
                                                              "comment say so once the queue has run")}),
    "DeliveryReplay": _obj({
        "delivery_id": DELIVERY_ID, "job_id": _s("integer", description="the job that handles it again"),
        "status": _s("string", enum=["queued"], description="the job's status"),
        "event": _s("string"), "action": _s("string", nullable=True),
        "repository": _s("string", nullable=True, description="owner/repo"),
        "pr_number": _s("integer", nullable=True, description="the pull request it is about, if one")}),
}


def _answer(description: str, schema: str = "Error") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


def _body(schema: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(schema)}}}


_PARAM = {"name": "id", "in": "path", "required": True, "schema": ID}
_UNAUTHORIZED = {"401": _answer("not logged in and no (valid) personal API token")}
_TOO_MANY = {"429": {**_answer("too many requests from this address (API_REQUESTS_PER_MINUTE)"), "headers": {
    "Retry-After": {"description": "seconds to wait", "required": True, "schema": _s("integer", minimum=1)}}}}
_HIDDEN = {"404": _answer("no such object, or the user may not see its project")}
_FORBIDDEN = {"403": _answer("the user lacks the access this needs")}
_BAD = {"400": _answer("the body or a parameter is not valid")}
_CONFLICT = {"409": _answer("not possible in the current state")}


def _op(summary: str, ok: str, schema: str, *, status: str = "200", body: str | None = None,
        errors: tuple[dict[str, Any], ...] = (), id_param: bool = True, **more: Any) -> dict[str, Any]:
    responses = {status: _answer(ok, schema), **_UNAUTHORIZED, **_TOO_MANY}
    for extra in errors:
        responses.update(extra)
    operation: dict[str, Any] = {"summary": summary, "responses": responses, **more}
    if id_param:
        operation["parameters"] = [_PARAM]
    if body is not None:
        operation["requestBody"] = _body(body)
    return operation


PATHS: dict[str, Any] = {
    # Projects come from the App's installations: POST /api/v1/projects and DELETE /api/v1/projects/{id}
    # are no operations (405 with Allow, like any other method a path does not have).
    "/api/v1/projects": {
        "get": _op("The projects the user can see", "the projects", "ProjectList", id_param=False),
    },
    "/api/v1/projects/{id}": {
        "get": _op("A project and its settings", "the project", "Project", errors=(_HIDDEN,)),
        "put": _op("Change the project's settings (needs admin or maintain)", "the changed project", "Project",
                   body="ProjectSettingsChange", errors=(_BAD, _FORBIDDEN, _HIDDEN, {"409": _answer(
                       "the settings do not go together with each other or the project's others (the local "
                       "agent backend needs an agent command), or a changed one is set in the repository's "
                       ".github/codegenapp.yml, which wins")})),
    },
    "/api/v1/projects/{id}/agent-run": {
        "post": _op("Start an agent run (needs write access)", "the new run (status pending)", "Run",
                    status="201", body="StartRun", errors=(_BAD, _FORBIDDEN, _HIDDEN, {
                        "409": _answer("the project cannot run agents now (the reason)"),
                        "503": _answer("agent runs are not set up on this app")})),
    },
    "/api/v1/projects/{id}/runs": {
        "get": {**_op("The project's agent runs, newest first", "the runs", "RunList", errors=(_BAD, _HIDDEN)),
                "parameters": [_PARAM, {"name": "limit", "in": "query", "required": False,
                                        "schema": _s("integer", minimum=1, maximum=200, default=50)}]},
    },
    "/api/v1/projects/{id}/queue": {
        "get": _op("The project's merge queues, one per base branch: the queued PRs in order and the candidates "
                   "being tested", "the queues", "ProjectQueues", errors=(_HIDDEN,)),
    },
    "/api/v1/projects/{id}/queue/{number}/dequeue": {
        "post": {**_op("Take a pull request out of its merge queue, as /dequeue does (needs write access)",
                       "the pull request is leaving the queue", "Dequeued", status="202",
                       errors=(_FORBIDDEN, {"404": _answer("no such project, the user may not see it, or the "
                                                           "pull request is not in a merge queue")},
                               {"503": _answer("the merge queue does not run on this app")})),
                 "parameters": [_PARAM, {"name": "number", "in": "path", "required": True,
                                         "schema": _s("integer", minimum=0)}]},
    },
    "/api/v1/projects/{id}/agent-settings": {
        "get": _op("The project's agent settings", "the agent settings", "AgentSettings", errors=(_HIDDEN,)),
        "patch": _op("Change agent settings (needs admin or maintain)", "the agent settings", "AgentSettings",
                     body="AgentSettingsChange", errors=(_BAD, _FORBIDDEN, _HIDDEN)),
    },
    "/api/v1/runs/{id}": {
        "get": _op("One agent run", "the run", "Run", errors=(_HIDDEN,)),
    },
    **{f"/api/v1/runs/{{id}}/{verb}": {
        "post": _op(summary, "the run after the change", "Run", errors=(_FORBIDDEN, _HIDDEN, _CONFLICT))}
       for verb, summary in (("confirm", "Confirm the run's plan (needs write access)"),
                             ("reject", "Reject the run's plan: the run ends (needs write access)"),
                             ("cancel", "Cancel the run (needs write access)"))},
    "/api/v1/validation/{id}": {
        "get": _op("One validation of a pull request's head", "the validation", "Validation", errors=(_HIDDEN,)),
    },
    "/api/v1/validation/{id}/retry": {
        "post": _op("Validate the pull request's current head again (needs write access)",
                    "the new validation", "Validation", status="202",
                    errors=(_FORBIDDEN, _HIDDEN, {"409": _answer("the pull request is closed or gone"),
                                                  "503": _answer("validation is not set up on this app")})),
    },
    "/api/v1/deliveries/{id}/replay": {
        "post": {**_op("Handle a stored webhook delivery again, from its stored payload (needs admin on its "
                       "repository); what was done already is not done twice",
                       "the job queued for it", "DeliveryReplay", status="202",
                       errors=(_FORBIDDEN, {"404": _answer("no such delivery, or not of a repository the user can "
                                                           "see")},
                               {"409": _answer("the delivery is being handled (one of its jobs is queued or "
                                               "running)"),
                                "503": _answer("replaying is not available on this app")})),
                 "parameters": [{"name": "id", "in": "path", "required": True, "schema": DELIVERY_ID}]},
    },
}


def document(public_url: str = "") -> dict[str, Any]:
    """The document (a fresh copy), with the server's address when known."""
    return {
        "openapi": "3.0.3",
        "info": {"title": "CodegenApp API", "version": VERSION,
                 "description": "Projects, agent runs and validations. Authenticate with the dashboard's "
                                "session cookie (state-changing requests then send the session's CSRF token "
                                "as X-CSRF-Token) or with a personal API token from the account page: "
                                "`Authorization: Bearer cga_...`. Errors are `{\"error\": \"...\"}`."},
        "servers": [{"url": public_url or "/"}],
        "security": [{"apiToken": []}, {"session": []}],
        "paths": copy.deepcopy(PATHS),
        "components": {
            "schemas": copy.deepcopy(SCHEMAS),
            "securitySchemes": {
                "apiToken": {"type": "http", "scheme": "bearer", "description": "a personal API token (cga_...)"},
                "session": {"type": "apiKey", "in": "cookie", "name": "cga_session"},
            },
        },
    }
