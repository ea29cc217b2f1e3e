"""``ServerMixin``: the aiohttp server and the request pipeline of the fake.

One catch-all route (``_handle``) records every request as a ``Call`` and dispatches it: web flows
(OAuth, App manifests: ``apps.py``) and git over smart HTTP (``git.py``) outside ``/api/v3``; under it,
routing by the REST description (``rest.py``), authentication (``auth.py``), body validation, fault
injection (``fail_next``, ``rate_limit_next``), the primary rate limit, then the handler registered with
``@_handles`` (in the resource modules) or the description's example; a request may be held before or
after its handler runs (``hold_next``: a slow GitHub, or one that did the work but whose answer is late).
Also the test-facing API for calls: ``calls_to``, ``wait_for_call``, ``wait_until``,
``errors``/``take_errors``/``assert_clean``.

Methods of the composed ``FakeGitHub`` it dispatches to: ``_authenticate`` (``auth.py``),
``_web_flow_handler`` (``apps.py``), ``_serve_git``/``_git_text`` (``git.py``).
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Self, TypeVar
from urllib.parse import unquote

import orjson
from aiohttp import web

from tests.fakes.github.auth import _looks_like_jwt
from tests.fakes.github.common import (
    DOCS_URL,
    Call,
    Fault,
    RateLimitBucket,
    _copy,
    _dumps,
    _GitHubError,
    _handles,
    _HANDLERS,
    _reason,
    _Reply,
    _Request,
)
from tests.fakes.github.inflight import WRITE_METHODS, WritesInFlight
from tests.fakes.github.rest import _Route, _Router
from tests.fakes.github.state import FakeState

API_PREFIX = "/api/v3"
SECONDARY_RATE_LIMIT_DOCS = (
    "https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api#about-secondary-rate-limits"
)
SECONDARY_RATE_LIMIT_MESSAGE = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. "
    "If you reach out to GitHub Support for help, please include the request ID {request_id}."
)
RATE_LIMIT = 5000
ANONYMOUS_RATE_LIMIT = 60
_BODY_METHODS = ("POST", "PATCH", "PUT")
# Smart HTTP paths of a repository: /{owner}/{repo}[.git]/{info/refs,git-upload-pack,git-receive-pack}
_GIT_PATH = re.compile(
    r"/(?P<owner>[A-Za-z0-9_.-]+)/(?P<repo>[A-Za-z0-9_.-]+?)(?:\.git)?"
    r"/(?P<service>info/refs|git-upload-pack|git-receive-pack)"
)


@lru_cache(maxsize=512)
def _glob_regex(pattern: str) -> re.Pattern[str]:
    translate = {"**": ".*", "*": "[^/]*", "?": "[^/]"}
    pieces = re.split(r"(\*\*|\*|\?)", pattern)
    return re.compile("".join(translate.get(p, re.escape(p)) for p in pieces))


def _call_matches(call: Call, method: str, path_pattern: str) -> bool:
    return (method == "*" or method.upper() == call.method) and bool(_glob_regex(path_pattern).fullmatch(call.path))


@dataclass
class Hold:
    """Requests held by ``hold_next``: ``arrived`` is set when one comes in; each is answered on
    ``release()``, or after ``seconds`` when given (a slow GitHub). ``drop()`` lets a request held
    ``before_handling`` go without doing it (it never reached GitHub: its sender died first)."""

    method: str
    pattern: str
    remaining: int
    before_handling: bool
    seconds: float | None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    released: asyncio.Event = field(default_factory=asyncio.Event)
    dropped: bool = False

    def release(self) -> None:
        self.released.set()

    def drop(self) -> None:
        self.dropped = True
        self.released.set()

    async def wait(self) -> None:
        self.arrived.set()
        try:
            await asyncio.wait_for(self.released.wait(), self.seconds)
        except TimeoutError:
            pass


_Injected = TypeVar("_Injected", Fault, Hold)


def _take_first(injected: list[_Injected], call: Call) -> _Injected | None:
    """The first of `injected` (faults, holds) for `call`, one of its uses taken."""
    for entry in injected:
        if entry.remaining > 0 and _call_matches(call, entry.method, entry.pattern):
            entry.remaining -= 1
            return entry
    return None


class ServerMixin(FakeState):
    """Lifecycle, call recording, fault injection and the request pipeline (see the module docstring)."""

    _router: _Router
    _runner: web.AppRunner | None
    calls: list[Call]
    _changed: asyncio.Condition
    _faults: list[Fault]
    _holds: list[Hold]
    _acknowledged: set[int]
    writes_in_flight: WritesInFlight  # installation-token writes in flight at once (inflight.py)
    write_delay: float  # seconds each such write is held, so that concurrent ones overlap here

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"
        self.api_url = self.base_url + API_PREFIX

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._git_root is not None:
            shutil.rmtree(self._git_root, ignore_errors=True)
            self._git_root = None
            self._git_repos.clear()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ calls and errors

    def calls_to(self, method: str, path_pattern: str) -> list[Call]:
        return [call for call in self.calls if _call_matches(call, method, path_pattern)]

    async def wait_for_call(self, method: str, path_pattern: str, *, count: int = 1, timeout: float = 5.0) -> Call:
        """The ``count``-th call matching, waiting (without polling) until it has been answered."""

        def arrived() -> bool:
            return len(self.calls_to(method, path_pattern)) >= count

        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(arrived), timeout)
            except TimeoutError:
                seen = "\n".join(f"  {c.describe()}" for c in self.calls) or "  (none)"
                raise TimeoutError(
                    f"no call #{count} to {method} {path_pattern} within {timeout}s; calls seen:\n{seen}"
                ) from None
        return self.calls_to(method, path_pattern)[count - 1]

    async def wait_until(self, condition: Callable[[], bool], *, timeout: float = 5.0) -> None:
        """Until ``condition()`` holds, checked after each call the fake answers."""
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(condition), timeout)
            except TimeoutError:
                raise TimeoutError(f"the condition did not hold within {timeout}s") from None

    def errors(self) -> list[str]:
        """Problems not yet acknowledged, one line per call."""
        return [
            f"{call.describe()}: {'; '.join(call.errors)}"
            for call in self.calls
            if call.errors and id(call) not in self._acknowledged
        ]

    def take_errors(self) -> list[str]:
        """Return the problems seen so far and acknowledge them, for tests that provoke them."""
        found = self.errors()
        self._acknowledged.update(id(call) for call in self.calls if call.errors)
        return found

    def assert_clean(self) -> None:
        problems = self.errors()
        if problems:
            raise AssertionError("FakeGitHub received requests GitHub would reject:\n" + "\n".join(problems))

    # ------------------------------------------------------------------ fault injection

    def fail_next(
        self,
        method: str,
        path_pattern: str,
        *,
        status: int = 502,
        times: int = 1,
        headers: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        if body is None and status not in (204, 304):
            body = {"message": _reason(status), "documentation_url": DOCS_URL}
        self._faults.append(Fault(method.upper(), path_pattern, times, status, dict(headers or {}), body))

    def fail_always(self, method: str, path_pattern: str, *, status: int = 502) -> None:
        """Every matching request fails with `status` (a locked PR, an archived repository) until
        ``clear_faults()``."""
        self.fail_next(method, path_pattern, status=status, times=sys.maxsize)

    def rate_limit_next(self, method: str, path_pattern: str, *, retry_after: int = 1, times: int = 1) -> None:
        """GitHub's secondary rate limit: 403, Retry-After, and its message (remaining stays > 0)."""
        message = SECONDARY_RATE_LIMIT_MESSAGE.format(request_id=secrets.token_hex(8).upper())
        body = {"message": message, "documentation_url": SECONDARY_RATE_LIMIT_DOCS}
        self.fail_next(
            method, path_pattern, status=403, times=times, headers={"Retry-After": str(retry_after)}, body=body
        )

    def clear_faults(self) -> None:
        """GitHub is well again: injected answers not yet given are dropped."""
        self._faults = []

    def hold_next(self, method: str, path_pattern: str, *, before_handling: bool = False,
                  seconds: float | None = None, times: int = 1) -> Hold:
        """Hold the next ``times`` requests matching until released (or for ``seconds``): after their
        handler ran (the work is done, the answer is late) or, ``before_handling``, before it (nothing is
        done until then; a request whose sender died meanwhile is still done once released)."""
        hold = Hold(method.upper(), path_pattern, times, before_handling, seconds)
        self._holds.append(hold)
        return hold

    def _take_hold(self, call: Call) -> Hold | None:
        hold = _take_first(self._holds, call)
        self._holds = [h for h in self._holds if h.remaining > 0]
        return hold

    def _take_fault(self, call: Call) -> _Reply | None:
        fault = _take_first(self._faults, call)
        self._faults = [f for f in self._faults if f.remaining > 0]
        if fault is None:
            return None
        call.injected = True
        return _Reply(fault.status, _copy(fault.body), dict(fault.headers))

    # ------------------------------------------------------------------ request pipeline

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        full_path = unquote(request.rel_url.raw_path)
        is_api = full_path == API_PREFIX or full_path.startswith(API_PREFIX + "/")
        call = Call(
            method=request.method,
            path=(full_path[len(API_PREFIX) :] or "/") if is_api else full_path,
            query=dict(request.query),
            headers={k.lower(): v for k, v in request.headers.items()},
            json=None,
            at=time.monotonic(),
        )
        if not is_api and (web_flow := self._web_flow_handler(request.method, full_path)) is not None:
            try:
                await request.read()
                web_response = await web_flow(request, call)
            except Exception as exc:  # a bug in the fake must fail the test, not hang or vanish
                call.errors.append(f"FakeGitHub raised {exc!r}:\n{traceback.format_exc()}")
                web_response = web.Response(status=500, text="Server Error")
            call.status = web_response.status
            self.calls.append(call)
            async with self._changed:
                self._changed.notify_all()
            return web_response
        if not is_api and (found := _GIT_PATH.fullmatch(full_path)):
            try:
                git_response = await self._serve_git(request, call, found)
            except Exception as exc:  # a bug in the fake must fail the test, not hang or vanish
                call.errors.append(f"FakeGitHub raised {exc!r}:\n{traceback.format_exc()}")
                git_response = self._git_text(500, "Server Error")
            call.status = git_response.status
            self.calls.append(call)
            async with self._changed:
                self._changed.notify_all()
            return git_response
        bucket = self._bucket(call.headers.get("authorization", ""))
        try:
            reply = await self._process(request, call, bucket) if is_api else self._not_api(call)
        except Exception as exc:  # a bug in the fake must fail the test, not hang or vanish
            call.errors.append(f"FakeGitHub raised {exc!r}:\n{traceback.format_exc()}")
            reply = _Reply(500, {"message": "Server Error"})
        if call.operation != "GET /rate_limit":
            bucket.consume()
        call.status = reply.status
        response = self._response(reply, bucket)
        self.calls.append(call)
        async with self._changed:
            self._changed.notify_all()
        return response

    def _not_api(self, call: Call) -> _Reply:
        call.errors.append(f"not under {API_PREFIX}: nothing is served there yet")
        return _Reply(404, {"message": "Not Found"})

    async def _process(self, request: web.Request, call: Call, bucket: RateLimitBucket) -> _Reply:
        body_problem = await self._read_body(request, call)
        fault = self._take_fault(call)
        matched = self._router.match(call.method, call.path)
        if matched is None:
            call.errors.append(f"no operation in GitHub's REST description matches {call.method} {call.path}")
            return fault or _Reply(404, {"message": "Not Found", "documentation_url": DOCS_URL, "status": "404"})
        route, params = matched
        call.operation = route.name
        try:
            principal, repo = self._authenticate(call, route, params)
            if body_problem is not None:
                raise body_problem
            self._validate_body(call, route)
        except _GitHubError as error:
            if error.record:
                call.errors.append(error.describe())
            return fault or error.reply()
        if fault is not None:
            return fault
        if bucket.remaining <= 0 and route.template != "/rate_limit":
            who = f"installation ID {principal.installation_id}" if principal.installation_id else "this credential"
            return _GitHubError(403, f"API rate limit exceeded for {who}.").reply()
        installation_write = principal.kind == "installation" and call.method in WRITE_METHODS
        if installation_write:
            self.writes_in_flight.enter(principal.installation_id, call)
        try:
            hold = self._take_hold(call)
            if hold is not None and hold.before_handling:
                await hold.wait()
                if hold.dropped:
                    return _Reply(502, {"message": "Server Error"})
            if installation_write and self.write_delay:
                await asyncio.sleep(self.write_delay)
            reply = self._run_handler(_Request(request, call, route, params, principal, repo))
            if hold is not None and not hold.before_handling:
                await hold.wait()
            return reply
        finally:
            if installation_write:
                self.writes_in_flight.leave(principal.installation_id, call)

    async def _read_body(self, request: web.Request, call: Call) -> _GitHubError | None:
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge as exc:
            return _GitHubError(413, "Request body too large", record=True, detail=exc.text)
        if not raw:
            return None
        try:
            call.json = orjson.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            call.json = raw.decode("utf-8", "replace")
            return _GitHubError(400, "Problems parsing JSON", record=True, detail=str(exc))
        return None

    def _validate_body(self, call: Call, route: _Route) -> None:
        if self.spec is None or not self.validate_bodies or call.method not in _BODY_METHODS:
            return
        present = call.json is not None
        errors = self.spec.body_errors(route.method, route.template, call.json, present=present)
        if errors:
            raise _GitHubError(422, "Invalid request.", errors=errors, record=True)

    def _run_handler(self, request: _Request) -> _Reply:
        name = _HANDLERS.get((request.route.method, request.route.template))
        try:
            return getattr(self, name)(request) if name else self._default_reply(request.route)
        except _GitHubError as error:
            if error.record:
                request.call.errors.append(error.describe())
            return error.reply()

    def _default_reply(self, route: _Route) -> _Reply:
        if self.spec is None:
            return _Reply(204)
        status = self.spec.success_status(route.method, route.template) or 204
        try:
            return _Reply(status, self.spec.example(route.method, route.template, status))
        except KeyError:
            return _Reply(status)

    def _response(self, reply: _Reply, bucket: RateLimitBucket) -> web.Response:
        headers = {
            **bucket.headers(),
            "x-github-request-id": secrets.token_hex(8).upper(),
            "x-github-api-version-selected": "2022-11-28",
            **reply.headers,
        }
        if reply.raw is not None:
            return web.Response(status=reply.status, body=reply.raw, content_type=reply.content_type, headers=headers)
        if reply.body is None:
            return web.Response(status=reply.status, headers=headers)
        return web.json_response(reply.body, status=reply.status, headers=headers, dumps=_dumps)

    def _bucket(self, authorization: str) -> RateLimitBucket:
        credential = authorization.partition(" ")[2].strip()
        key = "app" if _looks_like_jwt(credential) else credential or "anonymous"
        if key not in self.rate_limits:
            limit = ANONYMOUS_RATE_LIMIT if key == "anonymous" else RATE_LIMIT
            self.rate_limits[key] = RateLimitBucket(limit, limit, int(time.time()) + 3600)
        return self.rate_limits[key]

    # ------------------------------------------------------------------ handlers: rate limit

    @_handles("GET /rate_limit")
    def _get_rate_limit(self, request: _Request) -> _Reply:
        authorization = request.call.headers.get("authorization", "")
        core = self._bucket(authorization).as_dict()
        overview = self._example("GET", "/rate_limit", 200)
        overview.setdefault("resources", {})["core"] = core
        overview["rate"] = core
        return _Reply(200, overview)
