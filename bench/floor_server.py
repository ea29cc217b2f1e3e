"""The floor under `ingest.py`: the least any app can do per delivery, with the same two HTTP exchanges.

Started by `ingest.py --floor` in place of `codegenapp serve`, with the same environment. For each
webhook it checks the signature, parses the JSON, waits for one of 32 slots (the app's backpressure),
answers 202 (nothing is stored), and then creates the `in_progress` check run at the fake GitHub with an installation token (one per installation,
cached), through one aiohttp client session. No database, no job, no pacing, no validation: what is
left is aiohttp's cost of one request in and one request out, which bounds what `codegenapp serve` can
reach on this machine. `/metrics` counts the check runs created, as the app's job counter does.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import sys
import time
from pathlib import Path

import aiohttp
import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bot.config import WEBHOOK_PATH  # noqa: E402

API = os.environ["GITHUB_API_URL"].rstrip("/")
SECRET = os.environ["WEBHOOK_SECRET"].encode()
APP_ID = os.environ["APP_ID"]
PRIVATE_KEY = serialization.load_pem_private_key(os.environ["PRIVATE_KEY"].encode(), None)  # once: ~35 ms


class Floor:
    def __init__(self) -> None:
        self.session: aiohttp.ClientSession | None = None
        self.tokens: dict[int, str] = {}
        self.created = 0
        self.tasks: set[asyncio.Task] = set()
        self.slots = asyncio.Semaphore(32)  # as the app's webhook lane: at most 32 check runs pending

    async def token(self, installation_id: int) -> str:
        if installation_id not in self.tokens:
            now = int(time.time())
            app_jwt = jwt.encode({"iat": now - 60, "exp": now + 540, "iss": APP_ID}, PRIVATE_KEY, algorithm="RS256")
            async with self.session.post(f"{API}/app/installations/{installation_id}/access_tokens",
                                         headers={"Authorization": f"Bearer {app_jwt}",
                                                  "Accept": "application/vnd.github+json"}) as response:
                self.tokens[installation_id] = (await response.json())["token"]
        return self.tokens[installation_id]

    async def create_check_run(self, payload: dict) -> None:
        try:
            await self._create_check_run(payload)
        finally:
            self.slots.release()

    async def _create_check_run(self, payload: dict) -> None:
        token = await self.token(payload["installation"]["id"])
        body = {"name": "CodegenApp", "head_sha": payload["pull_request"]["head"]["sha"], "status": "in_progress"}
        async with self.session.post(f"{API}/repos/{payload['repository']['full_name']}/check-runs", json=body,
                                     headers={"Authorization": f"token {token}",
                                              "Accept": "application/vnd.github+json"}) as response:
            await response.read()
        self.created += 1

    async def webhook(self, request: web.Request) -> web.Response:
        body = await request.read()
        expected = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, request.headers.get("X-Hub-Signature-256", "")):
            return web.Response(status=401)
        await self.slots.acquire()  # backpressure before the ack, as the app does
        task = asyncio.create_task(self.create_check_run(json.loads(body)))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return web.Response(status=202, text="accepted")

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(text=f'codegenapp_jobs_total{{kind="webhook",outcome="done"}} {self.created}\n')

    async def open(self, app: web.Application) -> None:
        self.session = aiohttp.ClientSession()

    async def close(self, app: web.Application) -> None:
        await self.session.close()


def main() -> None:
    floor = Floor()
    app = web.Application()
    app.on_startup.append(floor.open)
    app.on_cleanup.append(floor.close)
    app.router.add_post(WEBHOOK_PATH, floor.webhook)
    app.router.add_get("/health", floor.health)
    app.router.add_get("/metrics", floor.metrics)
    web.run_app(app, host="127.0.0.1", port=int(os.environ["PORT"]), access_log=None, print=None)


if __name__ == "__main__":
    main()
