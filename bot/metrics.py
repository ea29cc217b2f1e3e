"""Every Prometheus metric the app exports, in one registry."""

from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)

DELIVERIES = Counter(
    "codegenapp_webhook_deliveries_total",
    "Webhook deliveries accepted and stored, by event.",
    ["event"],
    registry=REGISTRY,
)
DUPLICATE_DELIVERIES = Counter(
    "codegenapp_webhook_duplicates_total",
    "Deliveries whose X-GitHub-Delivery id was already stored.",
    registry=REGISTRY,
)
SIGNATURE_FAILURES = Counter(
    "codegenapp_webhook_signature_failures_total",
    "Deliveries refused because the signature was missing, sha1-only or wrong.",
    registry=REGISTRY,
)
REJECTED_DELIVERIES = Counter(
    "codegenapp_webhook_rejected_total",
    "Deliveries refused for a reason other than the signature.",
    ["reason"],
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "codegenapp_job_queue_depth",
    "Jobs waiting or running, by state (refreshed on scrape).",
    ["state"],
    registry=REGISTRY,
)
QUEUE_BY_KIND = Gauge(
    "codegenapp_job_queue_depth_by_kind",
    "Jobs by kind and state: queued (due or waiting to retry), ready (queued and due now), running "
    "(refreshed on scrape, across every process on the database).",
    ["kind", "state"],
    registry=REGISTRY,
)
QUEUE_OLDEST_READY_AGE = Gauge(
    "codegenapp_job_queue_oldest_ready_age_seconds",
    "How long the job due the longest has waited to be claimed; 0 when none is due (refreshed on scrape).",
    registry=REGISTRY,
)
WORKERS_LIVE = Gauge(
    "codegenapp_workers_live",
    "Workers whose heartbeat is recent, across every process on the database (refreshed on scrape).",
    registry=REGISTRY,
)
JOB_OUTCOMES = Counter(
    "codegenapp_jobs_total",
    "Finished job attempts, by kind and outcome (done, retry, dead, released; postponed: GitHub was failing or "
    "rate limited, tried again later without counting an attempt).",
    ["kind", "outcome"],
    registry=REGISTRY,
)
JOB_DURATION = Histogram(
    "codegenapp_job_duration_seconds",
    "Time a job attempt ran, by kind.",
    ["kind"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120, 600),
    registry=REGISTRY,
)
GITHUB_REQUESTS = Counter(
    "codegenapp_github_requests_total",
    "Requests made to the GitHub API, by method and response status (or 'error').",
    ["method", "status"],
    registry=REGISTRY,
)
GITHUB_RATE_LIMIT_REMAINING = Gauge(
    "codegenapp_github_rate_limit_remaining",
    "x-ratelimit-remaining from the latest GitHub response, by installation ('app' for the JWT).",
    ["installation"],
    registry=REGISTRY,
)
GITHUB_WRITES_DEFERRED = Counter(
    "codegenapp_github_writes_deferred_total",
    "Writes held back by the per-installation pacing.",
    registry=REGISTRY,
)
GITHUB_WRITES_COALESCED = Counter(
    "codegenapp_github_writes_coalesced_total",
    "Progress updates replaced by a newer update to the same resource before being sent.",
    registry=REGISTRY,
)

GITHUB_PAUSED = Gauge(
    "codegenapp_github_paused",
    "1 while GitHub work is paused because GitHub is failing, by scope: an installation id, 'app' for the "
    "App's own requests, 'all' for the whole app.",
    ["scope"],
    registry=REGISTRY,
)
GITHUB_REQUESTS_REFUSED = Counter(
    "codegenapp_github_requests_refused_total",
    "GitHub requests not sent, by reason: 'outage' (GitHub work paused) or 'rate_limit' (a wait beyond the "
    "longest one honoured).",
    ["reason"],
    registry=REGISTRY,
)
GITHUB_RATE_LIMIT_HOLDS = Counter(
    "codegenapp_github_rate_limit_holds_total",
    "Times an installation's GitHub requests were held for a rate limit (retry-after, x-ratelimit-reset).",
    registry=REGISTRY,
)

DELIVERIES_RECOVERED = Counter(
    "codegenapp_deliveries_recovered_total",
    "Deliveries fetched from the App's delivery log and stored, by source: 'recovered' (the recovery sweep "
    "found one the webhook never brought) or 'polled' (polling mode).",
    ["source"],
    registry=REGISTRY,
)
DELIVERIES_SKIPPED = Counter(
    "codegenapp_delivery_log_skipped_total",
    "Delivery-log entries the sweep could not ingest (no payload, not the shape its event promises).",
    registry=REGISTRY,
)
DELIVERY_SWEEPS = Counter(
    "codegenapp_delivery_log_sweeps_total",
    "Sweeps of the App's delivery log, by outcome (ok, failed).",
    ["outcome"],
    registry=REGISTRY,
)


def refresh_fleet(*, live_workers: int, queue: Mapping[str, Any]) -> None:
    """Set the scrape-time gauges from bot/fleet.py's view (a kind gone from the queue reads 0)."""
    WORKERS_LIVE.set(live_workers)
    for state in ("queued", "running", "dead"):
        QUEUE_DEPTH.labels(state).set(queue[state])
    QUEUE_OLDEST_READY_AGE.set(queue["oldest_ready_age_seconds"] or 0)
    QUEUE_BY_KIND.clear()
    for kind, counts in queue["by_kind"].items():
        QUEUE_BY_KIND.labels(kind, "queued").set(counts["queued"])
        QUEUE_BY_KIND.labels(kind, "ready").set(counts["ready_now"])
        QUEUE_BY_KIND.labels(kind, "running").set(counts["running"])


def render() -> bytes:
    return generate_latest(REGISTRY)
