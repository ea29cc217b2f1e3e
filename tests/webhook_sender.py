"""Sends webhook deliveries the way GitHub does: signed, with GitHub's headers, over real HTTP."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus

import aiohttp

from bot.config import WEBHOOK_PATH


def signature_256(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signature_1(body: bytes, secret: str) -> str:
    return "sha1=" + hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()


def github_headers(event: str, body: bytes, *, secret: str | None, delivery_id: str | None = None,
                   content_type: str = "application/json", sha1: bool = False, sha256: bool = True,
                   payload: dict[str, Any] | None = None) -> dict[str, str]:
    headers = {
        "Content-Type": content_type,
        "User-Agent": "GitHub-Hookshot/a1b2c3d",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery_id or str(uuid.uuid4()),
        "X-GitHub-Hook-ID": "123456",
    }
    installation = (payload or {}).get("installation") if isinstance(payload, dict) else None
    if isinstance(installation, dict) and "id" in installation:
        headers["X-GitHub-Hook-Installation-Target-Type"] = "integration"
        headers["X-GitHub-Hook-Installation-Target-ID"] = "12345"
    if secret is not None:
        if sha256:
            headers["X-Hub-Signature-256"] = signature_256(body, secret)
        if sha1:
            headers["X-Hub-Signature"] = signature_1(body, secret)
    return headers


@dataclass
class Answer:
    status: int
    body: Any


class WebhookSender:
    def __init__(self, session: aiohttp.ClientSession, base_url: str, secret: str) -> None:
        self.session = session
        self.url = base_url.rstrip("/") + WEBHOOK_PATH
        self.secret = secret

    async def send(self, event: str, payload: dict[str, Any] | bytes, *, delivery_id: str | None = None,
                   form_encoded: bool = False, secret: str | None | type[Ellipsis] = ...,
                   tamper: bool = False, **header_options: Any) -> Answer:
        if isinstance(payload, bytes):
            body, as_dict = payload, None
        elif form_encoded:
            body, as_dict = ("payload=" + quote_plus(json.dumps(payload))).encode(), payload
        else:
            body, as_dict = json.dumps(payload).encode(), payload
        content_type = "application/x-www-form-urlencoded" if form_encoded else "application/json"
        headers = github_headers(event, body, secret=self.secret if secret is ... else secret,  # type: ignore[arg-type]
                                 delivery_id=delivery_id, content_type=content_type, payload=as_dict,
                                 **header_options)
        if tamper:
            body = body[:-1] + (b" " if body[-1:] != b" " else b"\n")
        async with self.session.post(self.url, data=body, headers=headers) as response:
            try:
                answer = await response.json(content_type=None)
            except ValueError:
                answer = await response.text()
            return Answer(response.status, answer)
