"""Webhook ingress: verify, parse, store with its job in one transaction, acknowledge.

Nothing is handled inside the request; the worker runs handlers from the stored delivery.

Abuse (bot/guard/): with WEBHOOK_GITHUB_ADDRESSES_ONLY, a request from outside GitHub's webhook addresses
is refused (403) before anything else. Refused requests (unsigned, badly signed, from outside) count
against the client's WEBHOOK_REFUSALS_PER_MINUTE: past it they get 429 and are logged once, and an
unsigned one is answered before its body is read. A validly signed delivery is never limited.
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import orjson
from aiohttp import web

from bot import metrics
from bot.guard.request_guard import GUARD, RequestGuard
from bot.db import disk_full, failure_cause
from bot.logs import delivery_id_var
from bot.models import DELIVERY_WEBHOOK, JOB_WEBHOOK
from bot.services import SERVICES, Services
from bot.store import ClaimedJob, IncomingDelivery, StoredDelivery
from pipeline.deliveries.service import Ingested

log = logging.getLogger(__name__)

MAX_DELIVERY_ID_LENGTH = 64
MAX_GITHUB_ID = 2**63 - 1  # GitHub's ids are positive 64-bit integers, as are the database's columns
_HEADER_TOKEN = re.compile(r"[!-~]{1,64}")  # X-GitHub-Event, X-GitHub-Delivery: printable ASCII
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
SLOT_WAIT_SECONDS = 2.0  # well inside GitHub's 10 s delivery timeout


class WebhookRejected(Exception):
    def __init__(self, status: int, reason: str, *, metric: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.metric = metric


@dataclass(frozen=True)
class ParsedDelivery:
    id: str
    event: str
    action: str | None
    installation_id: int | None
    payload_json: str
    payload: dict[str, Any]


def signed_digest(headers: Mapping[str, str]) -> str:
    """The hex digest of `X-Hub-Signature-256: sha256=<64 hex digits>` (lower case), or refused: what
    is checked without reading the body."""
    signature = headers.get("X-Hub-Signature-256")
    if not signature:
        if headers.get("X-Hub-Signature"):
            raise WebhookRejected(401, "only a sha1 signature (X-Hub-Signature) was sent; "
                                       "X-Hub-Signature-256 is required", metric="signature")
        raise WebhookRejected(401, "the delivery is not signed (no X-Hub-Signature-256)", metric="signature")
    algorithm, _, digest = signature.partition("=")
    if algorithm != "sha256" or not _SHA256_HEX.fullmatch(digest):
        raise WebhookRejected(401, "X-Hub-Signature-256 is not of the form sha256=<64 hex digits>",
                              metric="signature")
    return digest.lower()


def verify_signature(body: bytes, digest: str, secrets: tuple[str, ...]) -> None:
    """Accept only a digest (from `signed_digest`) made with one of the configured secrets (rotation)."""
    for secret in secrets:
        expected = hmac.digest(secret.encode(), body, "sha256").hex()
        if hmac.compare_digest(expected, digest):
            return
    raise WebhookRejected(401, "the signature does not match the webhook secret", metric="signature")


def parse_delivery(body: bytes, headers: Mapping[str, str]) -> ParsedDelivery:
    event = headers.get("X-GitHub-Event", "").strip()
    delivery_id = headers.get("X-GitHub-Delivery", "").strip()
    if not event:
        raise WebhookRejected(400, "missing X-GitHub-Event header", metric="malformed")
    if not _HEADER_TOKEN.fullmatch(event):
        raise WebhookRejected(400, "X-GitHub-Event must be at most 64 printable ASCII characters",
                              metric="malformed")
    if not delivery_id or len(delivery_id) > MAX_DELIVERY_ID_LENGTH:
        raise WebhookRejected(400, "missing or overlong X-GitHub-Delivery header", metric="malformed")
    if not _HEADER_TOKEN.fullmatch(delivery_id):
        raise WebhookRejected(400, "X-GitHub-Delivery must be printable ASCII", metric="malformed")
    content_type = headers.get("Content-Type", "application/json").split(";")[0].strip().lower()
    try:
        if content_type == "application/json":
            text = body.decode("utf-8")
        elif content_type == "application/x-www-form-urlencoded":
            form = parse_qs(body.decode("ascii"), strict_parsing=True)
            if len(form.get("payload", [])) != 1:
                raise WebhookRejected(400, "form-encoded delivery without exactly one payload field",
                                      metric="malformed")
            text = form["payload"][0]
        else:
            raise WebhookRejected(415, f"unsupported content type {content_type!r}; "
                                       "expected application/json or application/x-www-form-urlencoded",
                                  metric="content_type")
        payload = orjson.loads(text)
    except (UnicodeDecodeError, ValueError) as exc:
        raise WebhookRejected(400, f"body is not valid JSON: {exc}", metric="malformed") from exc
    if not isinstance(payload, dict):
        raise WebhookRejected(400, "payload is not a JSON object", metric="malformed")
    action = payload.get("action") if isinstance(payload.get("action"), str) else None
    if action is not None and (len(action) > 64 or "\x00" in action):
        raise WebhookRejected(400, "action must be at most 64 characters", metric="malformed")
    installation = payload.get("installation")
    installation_id = installation.get("id") if isinstance(installation, dict) else None
    if not isinstance(installation_id, int) or isinstance(installation_id, bool):
        installation_id = None
    elif not 1 <= installation_id <= MAX_GITHUB_ID:
        raise WebhookRejected(400, f"installation.id {installation_id} is not a GitHub id "
                                   f"(a whole number from 1 to 2^63-1)", metric="malformed")
    return ParsedDelivery(delivery_id, event, action, installation_id, text, payload)


def _reject(exc: WebhookRejected) -> web.Response:
    if exc.metric == "signature":
        metrics.SIGNATURE_FAILURES.inc()
    else:
        metrics.REJECTED_DELIVERIES.labels(exc.metric).inc()
    log.warning("webhook refused (%d): %s", exc.status, exc.reason)
    return web.json_response({"error": exc.reason}, status=exc.status)


def _refuse(guard: RequestGuard, request: web.Request, exc: WebhookRejected) -> web.Response:
    """A refusal that counts against the client's limit: past it, 429, logged once until it passes."""
    client, verdict = guard.take(guard.webhook_refusals, request)
    if verdict.allowed:
        return _reject(exc)
    metrics.REJECTED_DELIVERIES.labels("rate_limited").inc()
    if verdict.first_refusal:
        log.warning("webhook requests from %s refused too often (last: %s): answering 429, not logging each",
                    client, exc.reason)
    return web.json_response({"error": f"too many refused webhook requests from this address ({exc.reason}); "
                                       "try again later"},
                             status=429, headers={"Retry-After": str(verdict.retry_seconds)})


def _not_stored(exc: Exception) -> web.Response:
    """503, never 500: GitHub records the delivery as failed, to be redelivered once it can be stored."""
    reason = "the disk is full" if disk_full(exc) else "a database error"
    metrics.REJECTED_DELIVERIES.labels("not_stored").inc()
    cause = failure_cause(exc)
    log.error("delivery not stored (%s): %s: %s", reason, type(cause).__name__, cause)
    return web.json_response({"error": f"the delivery could not be stored ({reason}); it can be redelivered"},
                             status=503)


async def receive(request: web.Request) -> web.StreamResponse:
    services: Services = request.app[SERVICES]
    settings = services.settings
    if not settings.app_configured:
        missing = ", ".join(settings.missing_app_settings)
        return web.json_response({"error": f"the GitHub App is not configured: set {missing} "
                                           "(see README, or open / to register the App)"}, status=503)
    guard = request.app[GUARD]
    if guard.hook_sources is not None:
        client = guard.client(request)
        allowed = guard.hook_sources.allows(client)
        if allowed is None:
            return web.json_response({"error": "GitHub's webhook addresses (GET /meta) are not known yet; "
                                               "try again shortly"}, status=503,
                                     headers={"Retry-After": str(round(guard.hook_sources.retry_seconds))})
        if not allowed:
            return _refuse(guard, request, WebhookRejected(
                403, f"{client} is not one of GitHub's webhook addresses (hooks of GET /meta)", metric="source"))
    try:
        digest = signed_digest(request.headers)
    except WebhookRejected as exc:
        return _refuse(guard, request, exc)  # whatever the body says: not read
    if request.content_length is not None and request.content_length > settings.max_webhook_bytes:
        return _reject(WebhookRejected(413, f"body larger than {settings.max_webhook_bytes} bytes",
                                       metric="too_large"))
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _reject(WebhookRejected(413, f"body larger than {settings.max_webhook_bytes} bytes",
                                       metric="too_large"))
    try:
        verify_signature(body, digest, settings.webhook_secrets)
    except WebhookRejected as exc:
        return _refuse(guard, request, exc)
    try:
        delivery = parse_delivery(body, request.headers)
    except WebhookRejected as exc:
        return _reject(exc)
    delivery_id_var.set(delivery.id)

    if delivery.event == "ping":
        log.info("ping from hook %s", delivery.payload.get("hook_id"))
        return web.json_response({"status": "pong", "zen": delivery.payload.get("zen")})

    try:
        stored = await store_delivery(services, delivery, slot_wait=SLOT_WAIT_SECONDS)
    except Exception as exc:
        return _not_stored(exc)
    if stored.duplicate:
        return web.json_response({"status": "duplicate", "delivery": delivery.id}, status=200)
    return web.json_response({"status": "accepted", "delivery": delivery.id}, status=202)


async def store_delivery(services: Services, delivery: ParsedDelivery, *, slot_wait: float | None,
                         source: str = DELIVERY_WEBHOOK) -> StoredDelivery:
    """Store a parsed delivery with its `webhook` job in one transaction and hand the job to this process's
    worker, or find it a duplicate (its X-GitHub-Delivery is stored: nothing runs). The one way in for
    a delivery, received here or fetched from the App's delivery log (pipeline/deliveries)."""
    # Backpressure: when this process's worker has no free webhook slot, the delivery waits (briefly,
    # before it is stored) for one, so a burst is handled as it arrives instead of piling up a queue
    # that every later delivery waits behind. After `slot_wait` it is stored and queued anyway. The
    # delivery-log sweep's deliveries (slot_wait None) never take a slot: they are queued, so that they never
    # run ahead of a live delivery waiting for a slot or in the queue (the sweep bounds that queue).
    settings = services.settings
    worker = services.worker
    lease_owner = worker.worker_id if worker is not None and slot_wait is not None and \
        await worker.reserve(JOB_WEBHOOK, timeout=slot_wait) else None
    try:
        stored = await services.store.deliveries.store(IncomingDelivery(
            id=delivery.id, event=delivery.event, action=delivery.action,
            installation_id=delivery.installation_id, payload=delivery.payload_json, parsed=delivery.payload,
            job_kind=JOB_WEBHOOK,
            max_attempts=settings.job_max_attempts, lease_owner=lease_owner,
            lease_seconds=settings.job_lease_seconds, source=source))
    except BaseException:
        if lease_owner is not None:
            worker.cancel_reservation(JOB_WEBHOOK)  # type: ignore[union-attr]
        raise
    if stored.duplicate:
        if lease_owner is not None:
            worker.cancel_reservation(JOB_WEBHOOK)  # type: ignore[union-attr]
        metrics.DUPLICATE_DELIVERIES.inc()
        return stored

    metrics.DELIVERIES.labels(delivery.event).inc()
    if lease_owner is not None:
        assert stored.job_id is not None
        worker.run_reserved(ClaimedJob(stored.job_id, JOB_WEBHOOK, delivery.id, {}, 1,  # type: ignore[union-attr]
                                       settings.job_max_attempts))
    else:
        _wake(services)  # any worker: this process's, or (on PostgreSQL, by NOTIFY) another process's
    return stored


def _wake(services: Services) -> None:
    if services.wakeup is not None:
        services.wakeup.wake(JOB_WEBHOOK)  # this process's worker, and the other processes' ones
    elif services.worker is not None:
        services.worker.wake(JOB_WEBHOOK)


async def ingest_logged(services: Services, guid: str, event: str, payload: dict[str, Any],
                        source: str) -> Ingested:
    """A delivery fetched from the App's delivery log, ingested exactly as a received one: the same checks
    of its event, id, action and installation (`parse_delivery`; no signature: it came over the App's
    authenticated API call) and the same `store_delivery` with its dedupe by X-GitHub-Delivery."""
    headers = {"X-GitHub-Event": event, "X-GitHub-Delivery": guid, "Content-Type": "application/json"}
    try:
        body = orjson.dumps(payload)
    except TypeError as exc:  # an integer beyond 64 bits, a lone surrogate: no column takes it
        return Ingested(accepted=False, rejected=f"the payload cannot be stored as JSON: {exc}")
    try:
        delivery = parse_delivery(body, headers)
    except WebhookRejected as exc:
        metrics.REJECTED_DELIVERIES.labels(exc.metric).inc()
        return Ingested(accepted=False, rejected=exc.reason)
    if delivery.event == "ping":
        return Ingested(accepted=False)
    stored = await store_delivery(services, delivery, slot_wait=None, source=source)
    return Ingested(accepted=not stored.duplicate)
