"""FakeCodegen: the Codegen agent API over real HTTP on 127.0.0.1, with scripted agent runs.

    fake = FakeCodegen(api_key="cg-key", org_id="77")
    await fake.start()                      # fake.url -> CODEGEN_API_URL
    fake.script = ScriptedAgent(fake_github, plan="1. do it", change={"a.py": "x"}, fixes=[{"a.py": "y"}])

Routes: `POST /v1/organizations/{org}/agent/run`, `GET .../agent/run/{id}`, `POST .../agent/run/resume`.
Every request needs `Authorization: Bearer <api_key>` (401 otherwise) and the org id (404 for another).
Runs answer as Codegen does: `{id, organization_id, status, created_at, web_url, result, summary,
source_type, github_pull_requests, metadata}`.

Scripts decide what a run does; `ScriptedAgent` is the usual one: in plan mode (`metadata.mode`) a run
is COMPLETE with the plan as `result` after `polls` GETs; in execute mode it then pushes `change` to a
branch of the fake GitHub's git repository and opens the PR there (or pushes to the PR's branch when
`metadata.pr_number` is set) and reports it in `github_pull_requests`; a resume pushes the next of
`fixes` to the PR's branch. `hold()` keeps runs ACTIVE until `release()`. `on_change` is called after
every push or PR (the test's webhook relay sends what GitHub would).

Fault injection: `fail_next(method, path_glob, status=..., times=..., headers=...)` (globs as in
FakeGitHub: `*` one segment, `**` any). Calls are recorded in `calls`; `wait_for_call` waits for one.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import pytest
from aiohttp import web

from tests.fakes.github import Fault, FakeGitHub

API_KEY = "cg-test-key-3b9c1f"
ORG_ID = "4711"

__all__ = ["FakeCodegen", "ScriptedAgent", "FakeRun", "fake_codegen", "API_KEY", "ORG_ID"]


@dataclass
class CodegenCall:
    method: str
    path: str
    headers: dict[str, str]
    json: Any
    status: int = 0


@dataclass
class FakeRun:
    id: int
    org_id: str
    prompt: str
    metadata: dict[str, Any]
    status: str = "ACTIVE"
    result: str | None = None
    summary: str | None = None
    pulls: list[dict[str, Any]] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)  # every prompt: the first, then each resume
    phase: str = "plan"  # plan | execute | fix
    polls_left: int = 1
    fixes_done: int = 0
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    @property
    def mode(self) -> str:
        return str(self.metadata.get("mode") or "execute")

    def as_json(self, base_url: str) -> dict[str, Any]:
        return {"id": self.id, "organization_id": int(self.org_id), "status": self.status,
                "created_at": self.created_at, "web_url": f"{base_url}/agent/trace/{self.id}",
                "result": self.result, "summary": self.summary, "source_type": "API",
                "github_pull_requests": list(self.pulls), "metadata": self.metadata}


@lru_cache(maxsize=256)
def _glob(pattern: str) -> re.Pattern[str]:
    translate = {"**": ".*", "*": "[^/]*", "?": "[^/]"}
    return re.compile("".join(translate.get(p, re.escape(p)) for p in re.split(r"(\*\*|\*|\?)", pattern)))


class FakeCodegen:
    def __init__(self, *, api_key: str = API_KEY, org_id: str = ORG_ID) -> None:
        self.api_key = api_key
        self.org_id = org_id
        self.url = ""
        self.runs: dict[int, FakeRun] = {}
        self.calls: list[CodegenCall] = []
        self.script: Any = None
        self._faults: list[Fault] = []
        self._ids = itertools.count(1001)
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ---- test helpers ---------------------------------------------------------------------------------

    def fail_next(self, method: str, pattern: str, *, status: int, times: int = 1,
                  headers: dict[str, str] | None = None, body: Any = None) -> None:
        self._faults.append(Fault(method.upper(), pattern, times, status, dict(headers or {}),
                                   body if body is not None else {"detail": f"injected {status}"}))

    def calls_to(self, method: str, pattern: str) -> list[CodegenCall]:
        return [c for c in self.calls if (method == "*" or c.method == method.upper())
                and _glob(pattern).fullmatch(c.path)]

    async def wait_for_call(self, method: str, pattern: str, *, count: int = 1, timeout: float = 10.0) -> CodegenCall:
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(
                    lambda: len(self.calls_to(method, pattern)) >= count), timeout)
            except TimeoutError:
                seen = "\n".join(f"  {c.method} {c.path} -> {c.status}" for c in self.calls) or "  (none)"
                raise TimeoutError(f"no call #{count} to {method} {pattern} within {timeout}s:\n{seen}") from None
        return self.calls_to(method, pattern)[count - 1]

    # ---- HTTP -------------------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        try:
            body = await request.json() if request.can_read_body else None
        except ValueError:
            body = None
        call = CodegenCall(request.method, request.path, {k.lower(): v for k, v in request.headers.items()}, body)
        try:
            response = await self._answer(request, call)
        except Exception as exc:  # noqa: BLE001 - a bug in the fake must show, not hang
            response = web.json_response({"detail": f"fake raised {exc!r}"}, status=500)
        call.status = response.status
        self.calls.append(call)
        async with self._changed:
            self._changed.notify_all()
        return response

    async def _answer(self, request: web.Request, call: CodegenCall) -> web.Response:
        if call.headers.get("authorization") != f"Bearer {self.api_key}":
            return web.json_response({"detail": "Invalid or missing API token"}, status=401)
        for fault in self._faults:
            if fault.remaining > 0 and (fault.method in ("*", call.method)) and _glob(fault.pattern).fullmatch(call.path):
                fault.remaining -= 1
                return web.json_response(fault.body, status=fault.status, headers=fault.headers)
        found = re.fullmatch(r"/v1/organizations/([^/]+)/agent/run(?:/(resume|\d+))?", call.path)
        if found is None:
            return web.json_response({"detail": "Not Found"}, status=404)
        org, tail = found.groups()
        if org != self.org_id:
            return web.json_response({"detail": f"Organization {org} not found"}, status=404)
        if call.method == "POST" and tail is None:
            return await self._create(call.json)
        if call.method == "POST" and tail == "resume":
            return await self._resume(call.json)
        if call.method == "GET" and tail and tail.isdigit():
            run = self.runs.get(int(tail))
            if run is None:
                return web.json_response({"detail": "Agent run not found"}, status=404)
            if self.script is not None:
                await self.script.on_poll(self, run)
            return web.json_response(run.as_json(self.url))
        return web.json_response({"detail": "Method Not Allowed"}, status=405)

    async def _create(self, body: Any) -> web.Response:
        if not isinstance(body, dict) or not isinstance(body.get("prompt"), str) or not body["prompt"]:
            return web.json_response({"detail": [{"loc": ["body", "prompt"], "msg": "field required"}]}, status=422)
        run = FakeRun(id=next(self._ids), org_id=self.org_id, prompt=body["prompt"],
                      metadata=dict(body.get("metadata") or {}), prompts=[body["prompt"]])
        run.phase = "plan" if run.mode == "plan" else "execute"
        self.runs[run.id] = run
        if self.script is not None:
            await self.script.on_start(self, run)
        return web.json_response(run.as_json(self.url))

    async def _resume(self, body: Any) -> web.Response:
        if not isinstance(body, dict) or not isinstance(body.get("prompt"), str):
            return web.json_response({"detail": "prompt is required"}, status=422)
        run = self.runs.get(int(body.get("agent_run_id") or 0))
        if run is None:
            return web.json_response({"detail": "Agent run not found"}, status=404)
        run.prompts.append(body["prompt"])
        run.phase = "fix"
        run.status = "ACTIVE"
        if self.script is not None:
            await self.script.on_resume(self, run)
        return web.json_response(run.as_json(self.url))


class ScriptedAgent:
    """A Codegen agent that plans, opens a PR with `change`, and answers each resume with the next fix."""

    def __init__(self, github: FakeGitHub, *, plan: str = "1. Change the greeting.\n2. Push it.",
                 change: dict[str, Any] | None = None, fixes: list[dict[str, Any]] | None = None,
                 polls: int = 1, on_change: Callable[[], None] | None = None, status_case: str = "upper") -> None:
        self.github = github
        self.plan = plan
        self.change = change or {"greeting.txt": "hello\n"}
        self.fixes = list(fixes or [])
        self.polls = polls
        self.on_change = on_change
        self.status_case = status_case
        self._released = asyncio.Event()
        self._released.set()

    def hold(self) -> None:
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    def _status(self, value: str) -> str:
        return value.lower() if self.status_case == "lower" else value

    async def on_start(self, fake: FakeCodegen, run: FakeRun) -> None:
        run.status = self._status("ACTIVE")
        run.polls_left = self.polls

    async def on_resume(self, fake: FakeCodegen, run: FakeRun) -> None:
        run.status = self._status("ACTIVE")
        run.polls_left = self.polls

    async def on_poll(self, fake: FakeCodegen, run: FakeRun) -> None:
        if run.status.upper() != "ACTIVE" or not self._released.is_set():
            return
        run.polls_left -= 1
        if run.polls_left > 0:
            return
        if run.phase == "plan":
            run.result = self.plan
        elif run.phase == "execute":
            self.push(run, self.change)
            run.result = "Opened a pull request."
        else:
            if run.fixes_done < len(self.fixes):
                self.push(run, self.fixes[run.fixes_done])
            run.fixes_done += 1
            run.result = "Pushed a fix."
        run.summary = run.result
        run.status = self._status("COMPLETE")

    def push(self, run: FakeRun, files: dict[str, Any]) -> None:
        meta = run.metadata
        full_name = str(meta["repository"])
        repo = self.github.git_repo(full_name)
        number = meta.get("pr_number") or (pull_number(run.pulls[-1]) if run.pulls else None)
        if number is None:  # a new PR from a new branch
            branch = f"codegen-bot/run-{run.id}"
            base = str(meta.get("base_branch") or "main")
            repo.commit(files, branch=branch, parent=base, message="agent change")
            number = 1 + max((n for (name, n) in self.github.pulls if name == full_name), default=0)
            pull = self.github.add_pull_from_repo(full_name, number, head_ref=branch, base_ref=base,
                                                  user_login="codegen-agent", title="Agent change")
            self.github.set_pull_files(full_name, number, list(files))
            run.pulls.append({"id": pull["id"], "created_at": run.created_at, "title": pull["title"],
                              "url": pull["html_url"], "head_branch_name": branch})
        else:
            pull = self.github.pulls[(full_name, int(number))]
            sha = repo.commit(files, branch=pull["head"]["ref"], message="agent fix")
            repo.set_ref(f"refs/pull/{number}/head", sha)
            pull["head"]["sha"] = sha
            self.github.set_pull_files(full_name, int(number), list(files))
            if not run.pulls:
                run.pulls.append({"id": pull["id"], "created_at": run.created_at, "title": pull["title"],
                                  "url": pull["html_url"], "head_branch_name": pull["head"]["ref"]})
        if self.on_change is not None:
            self.on_change()


def pull_number(item: dict[str, Any]) -> int | None:
    found = re.search(r"/pull/(\d+)", str(item.get("url") or ""))
    return int(found.group(1)) if found else None


@pytest.fixture
async def fake_codegen() -> AsyncIterator[FakeCodegen]:
    fake = FakeCodegen()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.close()
