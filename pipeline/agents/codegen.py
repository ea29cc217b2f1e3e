"""The Codegen API as an agent backend (https://docs.codegen.com/api-reference).

- `POST /v1/organizations/{org_id}/agent/run` `{prompt, metadata}` starts a run;
- `GET /v1/organizations/{org_id}/agent/run/{id}` is polled (at most 60 GETs per 30 s per organization:
  a sliding-window limiter waits for a free slot, process-wide);
- `POST /v1/organizations/{org_id}/agent/run/resume` `{agent_run_id, prompt}` sends a follow-up.

`Authorization: Bearer CODEGEN_API_KEY`. Status strings are compared case-insensitively: COMPLETE is
finished, FAILED / ERROR / CANCELLED failed, anything else (ACTIVE, RUNNING, PENDING, unknown newer
ones) not finished. The PR comes from `github_pull_requests` (its `url`; a `number` when given): only
a PR whose `url` is on the configured GitHub (GITHUB_URL) in the run's repository counts, and that `url`
is the link the dashboard shows (bot/links.py); the run's `web_url` is kept only when it is http(s). 401,
402, 403, 404 and 422 end the run with a reason; 429 waits for `Retry-After` (in the call when short,
else the run polls again after it); 5xx and network errors are retried by the run with backoff.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp

from bot.links import github_link, web_link
from pipeline.agents.backend import CODEGEN, AgentError, AgentStatus, AgentTarget, Handle, Mode

log = logging.getLogger(__name__)

GET_LIMIT = 60
GET_WINDOW_SECONDS = 30.0
MAX_INLINE_RETRY_AFTER = 10.0  # a 429 asking for longer comes back to the run as "poll later"
INLINE_RETRIES = 2
DEFAULT_RETRY_AFTER = 5.0
REQUEST_TIMEOUT_SECONDS = 60.0

FINISHED = frozenset({"complete", "completed"})
FAILED = frozenset({"failed", "error", "cancelled", "canceled"})
# how a failed run's status reads in its error ("Codegen reports that the run was cancelled"); else "failed"
FAILED_WORDS = {"error": "ended with an error", "cancelled": "was cancelled", "canceled": "was cancelled"}
_PULL_NUMBER = re.compile(r"/pulls?/(\d+)(?:[/?#]|$)")


class SlidingWindowLimiter:
    """At most `limit` acquisitions in any `window` seconds; `acquire` waits for a free slot."""

    def __init__(self, limit: int = GET_LIMIT, window: float = GET_WINDOW_SECONDS, *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._sleep = sleep
        self._times: deque[float] = deque()
        self._lock = asyncio.Lock()

    def wait_needed(self) -> float:
        """Seconds until a slot is free (0 when one is free now)."""
        now = self._clock()
        while self._times and self._times[0] <= now - self.window:
            self._times.popleft()
        if len(self._times) < self.limit:
            return 0.0
        return self._times[0] + self.window - now

    async def acquire(self) -> None:
        async with self._lock:
            while (delay := self.wait_needed()) > 0:
                await self._sleep(delay)
            self._times.append(self._clock())


def state_of(status: str | None) -> str:
    value = (status or "").strip().lower()
    if value in FINISHED:
        return "finished"
    if value in FAILED:
        return "failed"
    return "running"


def pull_number(item: Mapping[str, Any]) -> int | None:
    number = item.get("number")
    if isinstance(number, int) and not isinstance(number, bool) and number > 0:
        return number
    found = _PULL_NUMBER.search(str(item.get("url") or item.get("html_url") or ""))
    return int(found.group(1)) if found else None


def pick_pull_request(pulls: Any, repository: str | None, github_url: str) -> Mapping[str, Any] | None:
    """The run's PR: the newest of `github_pull_requests` whose `url` is a link on `github_url` (a
    `javascript:` or foreign URL would become a link on the dashboard), in the target repository (any
    when no repository is given)."""
    if not isinstance(pulls, list):
        return None
    candidates = [p for p in pulls if isinstance(p, Mapping) and pull_number(p) is not None
                  and github_link(p.get("url"), github_url) is not None]
    if repository:  # never a PR of another repository: the run would watch the wrong PR
        prefix = f"{github_url.rstrip('/')}/{repository}/pull/".lower()
        candidates = [p for p in candidates if str(p["url"]).lower().startswith(prefix)]
    return candidates[-1] if candidates else None


def status_from_response(data: Mapping[str, Any], *, mode: str | None, repository: str | None,
                         github_url: str) -> AgentStatus:
    raw = data.get("status")
    state = state_of(raw if isinstance(raw, str) else None)
    result = data.get("result") if isinstance(data.get("result"), str) else None
    summary = data.get("summary") if isinstance(data.get("summary"), str) else None
    pull = pick_pull_request(data.get("github_pull_requests"), repository, github_url)
    error = None
    if state == "failed":
        ended = FAILED_WORDS.get(str(raw).strip().lower(), "failed")
        error = f"Codegen reports that the run {ended}" + (
            f": {(result or summary or '').strip()[:500]}" if (result or summary) else "")
    return AgentStatus(
        state=state,  # type: ignore[arg-type]
        raw_status=str(raw) if raw is not None else None,
        plan_text=(result or summary) if mode == Mode.PLAN else None,
        pr_number=pull_number(pull) if pull else None,
        pr_url=str(pull["url"]) if pull else None,
        summary=summary or result,
        error=error,
        web_url=web_link(data.get("web_url")))


def _message(body: Any) -> str:
    if isinstance(body, Mapping):
        for key in ("detail", "message", "error"):
            value = body.get(key)
            if value:
                text = value if isinstance(value, str) else json.dumps(value)
                return text[:300]
    if isinstance(body, str):
        return body.strip()[:300]
    return ""


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class CodegenClient:
    """The HTTP client; one per app (its limiters are per organization)."""

    def __init__(self, http: aiohttp.ClientSession, *, base_url: str, api_key: str, org_id: str,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.org_id = str(org_id)
        self._sleep = sleep
        self._limiters: dict[str, SlidingWindowLimiter] = {}

    def limiter(self, org_id: str | None = None) -> SlidingWindowLimiter:
        org = org_id or self.org_id
        if org not in self._limiters:
            self._limiters[org] = SlidingWindowLimiter(sleep=self._sleep)
        return self._limiters[org]

    def _url(self, path: str) -> str:
        return f"{self.base_url}/v1/organizations/{self.org_id}{path}"

    async def create_run(self, prompt: str, metadata: Mapping[str, Any]) -> dict[str, Any]:
        return await self._request("POST", "/agent/run", {"prompt": prompt, "metadata": dict(metadata)},
                                   what="starting an agent run")

    async def get_run(self, run_id: int | str) -> dict[str, Any]:
        return await self._request("GET", f"/agent/run/{run_id}", None, what=f"agent run {run_id}")

    async def resume_run(self, run_id: int | str, prompt: str) -> dict[str, Any]:
        body = {"agent_run_id": int(run_id) if str(run_id).isdigit() else run_id, "prompt": prompt}
        return await self._request("POST", "/agent/run/resume", body, what=f"resuming agent run {run_id}")

    async def _request(self, method: str, path: str, body: dict[str, Any] | None, *, what: str) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.api_key}", "Accept": "application/json",
                   "User-Agent": "codegenapp"}
        for attempt in range(INLINE_RETRIES + 1):
            if method == "GET":
                await self.limiter().acquire()
            try:
                async with self.http.request(method, self._url(path), json=body, headers=headers,
                                             timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS)) as resp:
                    text = await resp.text()
                    status = resp.status
                    retry_after = _retry_after(resp.headers)
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise AgentError(f"Codegen could not be reached ({what}): {type(exc).__name__}: {exc}",
                                 terminal=False) from None
            try:
                data: Any = json.loads(text) if text else {}
            except ValueError:
                data = text
            if 200 <= status < 300:
                if not isinstance(data, dict):
                    raise AgentError(f"Codegen answered {what} with something that is not a JSON object",
                                     terminal=False, status=status)
                return data
            detail = _message(data)
            suffix = f": {detail}" if detail else ""
            if status == 429:
                wait = retry_after if retry_after is not None else DEFAULT_RETRY_AFTER * (attempt + 1)
                if wait <= MAX_INLINE_RETRY_AFTER and attempt < INLINE_RETRIES:
                    log.info("Codegen rate limit (%s): waiting %.1fs", what, wait)
                    await self._sleep(wait)
                    continue
                raise AgentError(f"Codegen rate limit reached ({what}); trying again in {wait:.0f}s",
                                 terminal=False, retry_after=wait, status=429)
            raise _error_for(status, what, suffix, self.org_id)
        raise AssertionError("unreachable")


def _error_for(status: int, what: str, suffix: str, org_id: str) -> AgentError:
    if status == 401:
        reason = f"Codegen rejected the API key (401) {what}: check CODEGEN_API_KEY{suffix}"
    elif status == 402:
        reason = (f"Codegen requires payment (402) {what}: the organization's plan or credits do not allow "
                  f"more agent runs{suffix}")
    elif status == 403:
        reason = (f"Codegen refused access (403) {what}: the API key's user may not run agents in organization "
                  f"{org_id}{suffix}")
    elif status == 404:
        reason = f"Codegen found nothing (404) {what}: check CODEGEN_ORG_ID ({org_id}){suffix}"
    elif status == 422:
        reason = f"Codegen rejected the request (422) {what}{suffix}"
    elif status >= 500 or status == 408:
        return AgentError(f"Codegen failed ({status}) {what}{suffix}", terminal=False, status=status)
    else:
        reason = f"Codegen answered {status} {what}{suffix}"
    return AgentError(reason, terminal=True, status=status)


class CodegenBackend:
    name = CODEGEN
    synchronous = False

    def __init__(self, client: CodegenClient, *, github_url: str) -> None:
        self.client = client
        self.github_url = github_url  # the only host a PR link may name

    async def start(self, prompt: str, mode: Mode, metadata: Mapping[str, Any],
                    target: AgentTarget) -> tuple[Handle, AgentStatus]:
        data = await self.client.create_run(prompt, metadata)
        run_id = data.get("id")
        if run_id is None:
            raise AgentError("Codegen started an agent run but did not say its id", terminal=True)
        handle: Handle = {"backend": CODEGEN, "id": run_id, "mode": str(mode), "repository": target.repository,
                          "web_url": web_link(data.get("web_url"))}
        return handle, status_from_response(data, mode=str(mode), repository=target.repository,
                                            github_url=self.github_url)

    async def poll(self, handle: Handle) -> AgentStatus:
        data = await self.client.get_run(handle["id"])
        return status_from_response(data, mode=handle.get("mode"), repository=handle.get("repository"),
                                    github_url=self.github_url)

    async def resume(self, handle: Handle, prompt: str, target: AgentTarget) -> tuple[Handle, AgentStatus]:
        data = await self.client.resume_run(handle["id"], prompt)
        new_handle = {**handle, "mode": str(Mode.EXECUTE), "id": data.get("id", handle["id"])}
        return new_handle, status_from_response(data, mode=str(Mode.EXECUTE), repository=target.repository,
                                                github_url=self.github_url)
