"""The JSON API checked against its OpenAPI document (`GET /api/v1/openapi.json`): every /api/v1 route
is described, and every route is called, its request bodies and answers validated against the document
with openapi-schema-validator (as the HTTP fake in tests/fakes/github/ checks what the app sends GitHub)."""

from __future__ import annotations

import re
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from openapi_schema_validator import OAS30Validator, oas30_format_checker
from referencing import Registry, Specification
from sqlalchemy import update

from bot.events import wait_for
from bot.models import SUBJECT_MERGE_GROUP, ValidationState
from dashboard.api import add_routes
from dashboard.openapi import document
from pipeline.merge_queue.codec import encode, queue_from_document
from tests.api_support import api_token_for
from tests.pull_requests import open_pull_request, record_project, seed_validation
from tests.queue_page_support import busy_queue
from tests.test_replay import finish_jobs

URI = "urn:codegenapp:api"
UNDOCUMENTED = {"/api/v1/ws", "/api/v1/openapi.json", "/api/v1/webhooks/github"}


class Checked:
    """Calls the API and checks each request body and answer against the document."""

    def __init__(self, bot: Any, doc: dict[str, Any]) -> None:
        self.bot, self.doc = bot, doc
        self.registry: Registry[Any] = Registry().with_resource(URI, Specification.OPAQUE.create_resource(doc))
        self.seen: set[tuple[str, str, int]] = set()

    def errors(self, pointer: str, value: Any) -> list[str]:
        validator = OAS30Validator({"$ref": f"{URI}#{pointer}"}, registry=self.registry,
                                   format_checker=oas30_format_checker)
        return [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(value)]

    async def __call__(self, method: str, path: str, body: Any = None, *, token: str | None = None,
                       valid_body: bool = True) -> tuple[int, Any]:
        template = re.sub(r"/[0-9a-f]{32}(?=/|$)", "/{id}", path.split("?")[0])
        template = re.sub(r"^/api/v1/deliveries/[^/]+", "/api/v1/deliveries/{id}", template)  # a GUID
        template = re.sub(r"/queue/\d+/", "/queue/{number}/", template)
        operation = self.doc["paths"][template][method.lower()]
        escaped = template.replace("~", "~0").replace("/", "~1")
        base = f"/paths/{escaped}/{method.lower()}"
        if body is not None and valid_body:
            assert "requestBody" in operation, f"{method} {template} takes no body"
            assert not self.errors(f"{base}/requestBody/content/application~1json/schema", body), body
        headers = {"Authorization": f"Bearer {token or self.bot.token}"}
        async with self.bot.webhooks.session.request(method, self.bot.url + path, json=body,
                                                     headers=headers) as response:
            status, answer = response.status, await response.json()
            assert response.content_type == "application/json"
        assert str(status) in operation["responses"], f"{method} {template} answered undocumented {status}: {answer}"
        problems = self.errors(f"{base}/responses/{status}/content/application~1json/schema", answer)
        assert not problems, f"{method} {template} {status}: {problems}\n{answer}"
        self.seen.add((method, template, status))
        return status, answer


@pytest.fixture
async def checked(start_bot, fake_github):
    bot = await start_bot()
    bot.scenario = open_pull_request(fake_github, config="validate:\n  - test -f app.py\n")
    bot.project = await record_project(bot.store, bot.scenario)
    bot.token = await api_token_for(bot.store, fake_github, "alice", role="admin")
    async with bot.webhooks.session.get(bot.url + "/api/v1/openapi.json") as response:
        assert response.status == 200
        doc = await response.json()
    return Checked(bot, doc)


def test_the_document_is_well_formed() -> None:
    """openapi-spec-validator is not a dependency: the schemas are valid, every $ref resolves, every
    operation has a summary and JSON answers."""
    doc = document("http://127.0.0.1")
    assert doc["openapi"].startswith("3.0.")
    for schema in doc["components"]["schemas"].values():
        OAS30Validator.check_schema(schema)

    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            return ([node["$ref"]] if "$ref" in node else []) + [r for v in node.values() for r in refs(v)]
        return [r for v in node for r in refs(v)] if isinstance(node, list) else []

    for ref in refs(doc):
        target: Any = doc
        for part in ref.removeprefix("#/").split("/"):
            target = target[part]
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            assert operation["summary"] and operation["responses"], (method, path)
            for answer in operation["responses"].values():
                assert "application/json" in answer["content"], (method, path)


async def test_every_route_is_documented(checked) -> None:
    app = web.Application()
    add_routes(app)
    app_routes = set()
    for route in app.router.routes():
        path = route.resource.canonical if route.resource else ""
        if not path.startswith("/api/v1") or path in UNDOCUMENTED or route.method == "HEAD":
            continue
        app_routes.add((route.method.lower(), re.sub(r"\{id:[^}]*\}", "{id}", path)))
    documented = {(method, path) for path, item in checked.doc["paths"].items() for method in item}
    assert app_routes == documented


async def test_every_route_answers_as_documented(checked, fake_github) -> None:
    bot, call = checked.bot, checked
    project = bot.project
    reader = await api_token_for(bot.store, fake_github, "rita", role="read")
    nobody = "0" * 32

    # projects
    status, listing = await call("GET", "/api/v1/projects")
    assert [p["name"] for p in listing["projects"]] == ["acme/widgets"] and listing["projects"][0]["can_manage"]
    for method, path, allowed in (("POST", "/api/v1/projects", {"GET", "HEAD"}),
                                  ("DELETE", f"/api/v1/projects/{project.id}", {"GET", "HEAD", "PUT"})):
        async with bot.webhooks.session.request(method, bot.url + path,
                                                headers={"Authorization": f"Bearer {bot.token}"}) as response:
            assert response.status == 405 and set(response.headers["Allow"].split(",")) == set(allowed)
            assert "install the App" in (await response.json())["error"]
    status, shown = await call("GET", f"/api/v1/projects/{project.id}")
    assert status == 200 and shown["settings"]["max_fix_attempts"] == 3
    assert (await call("GET", f"/api/v1/projects/{nobody}"))[0] == 404
    status, changed = await call("PUT", f"/api/v1/projects/{project.id}", {
        "setup_commands": ["test -f app.py", "true"], "auto_confirm_plans": True,
        "agent_backend": "local", "agent_command": "false", "repository_rules": "Small <b>changes</b>."})
    assert status == 200, changed
    assert changed["settings"]["setup_commands"] == ["test -f app.py", "true"]
    status, changed = await call("PUT", f"/api/v1/projects/{project.id}", {"merge_queue": {"enabled": True,
                                                                                           "batch_size": 4}})
    assert status == 200 and changed["settings"]["merge_queue"]["batch_size"] == 4
    status, problem = await call("PUT", f"/api/v1/projects/{project.id}", {"merge_queue": {"batch_size": 40}},
                                 valid_body=False)
    assert status == 400 and "from 1 to 32" in problem["error"]
    status, problem = await call("PUT", f"/api/v1/projects/{project.id}", {"validate_commands": ["make check"]})
    assert status == 409 and "set in .github/codegenapp.yml" in problem["error"]  # the repository's file wins
    assert changed["settings"]["auto_confirm_plans"] and changed["settings"]["agent_backend"] == "local"
    status, problem = await call("PUT", f"/api/v1/projects/{project.id}",
                                 {"agent_command": "", "max_fix_attempts": 99}, valid_body=False)
    assert status == 400 and "Agent command is needed" in problem["error"] and "Max fix attempts" in problem["error"]
    status, problem = await call("PUT", f"/api/v1/projects/{project.id}", {"agent_command": " "})
    assert status == 409 and "Agent command is needed" in problem["error"]  # valid alone, not with "local"
    status, problem = await call("PUT", f"/api/v1/projects/{project.id}", {"agent_backend": ""}, valid_body=False)
    assert status == 400 and "agent_backend must be one of" in problem["error"]  # "" is the page's "default"
    status, problem = await call("PUT", f"/api/v1/projects/{project.id}", {}, valid_body=False)
    assert status == 400 and "at least one setting" in problem["error"]  # minProperties: 1
    status, problem = await call("PUT", f"/api/v1/projects/{project.id}", {"colour": "blue"}, valid_body=False)
    assert status == 400 and "'colour'" in problem["error"]
    assert (await call("PUT", f"/api/v1/projects/{project.id}", {"pinned": False}, token=reader,
                       valid_body=False))[0] == 403
    assert (await call("PUT", f"/api/v1/projects/{project.id}", {"max_fix_attempts": 1}, token=reader))[0] == 403

    # agent settings
    settings = f"/api/v1/projects/{project.id}/agent-settings"
    status, agent = await call("GET", settings)
    assert agent["effective_backend"] == "local" and agent["problem"] is None
    status, agent = await call("PATCH", settings, {"max_fix_attempts": 2, "auto_confirm_plans": False})
    assert status == 200 and agent["max_fix_attempts"] == 2
    assert (await call("PATCH", settings, {"max_fix_attempts": -1}, valid_body=False))[0] == 400
    assert (await call("PATCH", settings, {"max_fix_attempts": 1}, token=reader))[0] == 403

    # validations
    seeded = await seed_validation(bot.store, bot.scenario, conclusion="success")
    status, shown = await call("GET", f"/api/v1/validation/{seeded.id}")
    assert status == 200 and shown["conclusion"] == "success" and shown["pr_number"] == bot.scenario.number
    assert shown["details_url"].endswith(f"/validations/{seeded.id}")
    assert (await call("GET", f"/api/v1/validation/{nobody}"))[0] == 404
    assert (await call("POST", f"/api/v1/validation/{seeded.id}/retry", token=reader))[0] == 403
    group = await seed_validation(bot.store, bot.scenario, conclusion="failure")
    await bot.store.db.write(lambda conn: conn.execute(update(ValidationState).where(
        ValidationState.id == group.id).values(subject=SUBJECT_MERGE_GROUP)))
    status, problem = await call("POST", f"/api/v1/validation/{group.id}/retry")
    assert status == 409 and "merge queue" in problem["error"]  # its queue decides, not a retry of PR #n
    with bot.services.bus.subscribe() as events:
        status, again = await call("POST", f"/api/v1/validation/{seeded.id}/retry")
        assert status == 202 and again["id"] != seeded.id and again["trigger"] == "api.retry"
        assert (await bot.store.validations.get(again["id"])).triggered_by == "alice"
        await wait_for(events, "validation.completed", timeout=60, validation_id=again["id"])
    status, done = await call("GET", f"/api/v1/validation/{again['id']}")
    assert done["status"] == "completed" and done["conclusion"] == "success"
    assert [s["status"] for s in done["steps"] if s["stage"] == "validate"] == ["passed"]
    # agent runs (kept pending: nothing advances them)
    await bot.services.worker.stop()
    start = f"/api/v1/projects/{project.id}/agent-run"
    status, run = await call("POST", start, {"target_text": "Add a health endpoint"})
    assert status == 201 and run["requested_by"] == "alice"
    assert (await call("POST", start, {"target_text": ""}, valid_body=False))[0] == 400
    assert (await call("POST", start, {"target_text": "x"}, token=reader))[0] == 403
    assert (await call("POST", f"/api/v1/projects/{nobody}/agent-run", {"target_text": "x"}))[0] == 404
    status, runs = await call("GET", f"/api/v1/projects/{project.id}/runs?limit=5")
    assert [r["id"] for r in runs["runs"]] == [run["id"]]
    assert (await call("GET", f"/api/v1/projects/{project.id}/runs?limit=x"))[0] == 400
    for outside in ("0", "201", "-1", "1e3"):  # the document's range is 1 to 200
        status, problem = await call("GET", f"/api/v1/projects/{project.id}/runs?limit={outside}")
        assert status == 400 and "from 1 to 200" in problem["error"], (outside, problem)
    assert (await call("GET", f"/api/v1/runs/{run['id']}"))[1]["target_text"] == "Add a health endpoint"
    assert (await call("GET", f"/api/v1/runs/{nobody}"))[0] == 404
    assert (await call("POST", f"/api/v1/runs/{run['id']}/confirm"))[0] == 409
    assert (await call("POST", f"/api/v1/runs/{run['id']}/reject"))[0] == 409
    assert (await call("POST", f"/api/v1/runs/{run['id']}/cancel", token=reader))[0] == 403
    status, cancelled = await call("POST", f"/api/v1/runs/{run['id']}/cancel")
    assert status == 200 and cancelled["status"] == "cancelled"
    assert (await call("POST", f"/api/v1/runs/{nobody}/confirm"))[0] == 404

    # replaying a delivery (the worker is stopped: a replay's job stays queued)
    sent = await bot.webhooks.send("pull_request", bot.scenario.payload("labeled"))
    await finish_jobs(bot.store, fail=set())
    delivery = f"/api/v1/deliveries/{sent.body['delivery']}/replay"
    assert (await call("POST", delivery, token=reader))[0] == 403
    status, replayed = await call("POST", delivery)
    assert status == 202 and replayed["status"] == "queued" and replayed["action"] == "labeled"
    assert (await call("POST", delivery))[0] == 409
    assert (await call("POST", "/api/v1/deliveries/no-such-delivery/replay"))[0] == 404

    audit = [(e.action, e.actor) for e in await bot.store.audit.list(project_id=project.id)]
    assert ("validation.retried", "alice") in audit and ("project.settings.updated", "alice") in audit
    assert ("delivery.replayed", "alice") in audit

    # without a token
    async with bot.webhooks.session.get(bot.url + "/api/v1/projects") as response:
        assert response.status == 401 and "error" in await response.json()


async def test_the_merge_queue_answers_as_documented(checked, fake_github) -> None:
    """Each base branch's queue, in order, with its candidates; read access is enough, no access is 404."""
    bot, call = checked.bot, checked
    project = bot.project
    status, empty = await call("GET", f"/api/v1/projects/{project.id}/queue")
    assert status == 200 and empty == {"project_id": project.id, "enabled": False, "queues": []}
    assert await bot.store.merge_queues.save(project.id, "main", encode(busy_queue()), version=0, active=True)
    reader = await api_token_for(bot.store, fake_github, "rita", role="read")
    status, shown = await call("GET", f"/api/v1/projects/{project.id}/queue", token=reader)
    assert status == 200
    [main] = shown["queues"]
    assert [(e["position"], e["pr_number"], e["state"]) for e in main["entries"]] == [
        (1, 11, "testing"), (2, 12, "retrying"), (3, 13, "retrying"), (4, 14, "waiting"), (None, 15, "leaving")]
    assert [(c["prs"], c["ahead"], c["state"], c["label"]) for c in main["candidates"]] == [
        ([11], [], "testing", "Testing"), ([12, 13], [11], "retrying", "Retrying flaky step “pytest”")]
    assert (await call("GET", f"/api/v1/projects/{'0' * 32}/queue"))[0] == 404
    outsider = await api_token_for(bot.store, fake_github, "eve", installation_ids=[])  # sees no installation
    assert (await call("GET", f"/api/v1/projects/{project.id}/queue", token=outsider))[0] == 404

    # dequeuing: write access, and only a queued PR; audited
    dequeue = f"/api/v1/projects/{project.id}/queue/14/dequeue"
    assert (await call("POST", dequeue, token=reader))[0] == 403
    assert (await call("POST", dequeue, token=outsider))[0] == 404
    status, dequeued = await call("POST", dequeue)
    assert status == 202 and dequeued == {"project_id": project.id, "pr_number": 14, "status": "dequeued"}
    entry = queue_from_document((await bot.store.merge_queues.load(project.id, "main")).state).entry(14)
    assert entry is None or entry.leave_reason == "dequeued from the API by @alice"
    status, problem = await call("POST", f"/api/v1/projects/{project.id}/queue/99/dequeue")
    assert status == 404 and "#99 is not in a merge queue" in problem["error"]
    events = (await bot.store.audit.page(project.id)).events
    assert [(e.actor, e.details) for e in events if e.action == "merge_queue.dequeued"] == [
        ("alice", {"pr": 14, "source": "api"})]


async def test_every_error_under_the_api_is_json(checked) -> None:
    """The router's 404 (an unknown path, an id that is no id) and 405, and the CSRF refusal of a
    cookie session, are `{"error": ...}` like the API's own errors (they were text/plain)."""
    bot = checked.bot
    auth = {"Authorization": f"Bearer {bot.token}"}
    for method, path, status in (("GET", "/api/v1/nothing-here", 404), ("GET", "/api/v1/projects/%C2%84", 404),
                                 ("GET", "/api/v1", 404), ("PATCH", "/api/v1/projects", 405),
                                 ("DELETE", f"/api/v1/runs/{'0' * 32}", 405)):
        async with bot.webhooks.session.request(method, bot.url + path, headers=auth) as response:
            assert response.status == status, (method, path)
            assert response.content_type == "application/json", (method, path)
            assert (await response.json())["error"], (method, path)
            if status == 405:
                assert response.headers["Allow"]
    session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    async with session:
        async with session.get(bot.url + "/") as response:  # an (anonymous) session cookie
            assert response.status == 200
        async with session.put(f"{bot.url}/api/v1/projects/{bot.project.id}", json={"pinned": True}) as response:
            assert response.status == 403 and response.content_type == "application/json"
            assert "CSRF" in (await response.json())["error"]
