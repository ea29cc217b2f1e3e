"""Pure decisions of the job queue (no I/O): when to retry (a bug, or GitHub unavailable), when to give up,
which jobs were lost."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

BASE_DELAY_SECONDS = 2.0
MAX_DELAY_SECONDS = 600.0


def retry_delay(attempts: int, max_attempts: int, *, rand: random.Random | None = None) -> float | None:
    """Seconds to wait before the next try after `attempts` failed tries, or None to dead-letter.

    Exponential (2 s, 4 s, 8 s, ... capped at 10 min) with +-20 % jitter so a burst of failures
    does not come back as a burst.
    """
    if attempts >= max_attempts:
        return None
    delay = min(MAX_DELAY_SECONDS, BASE_DELAY_SECONDS * 2 ** max(0, attempts - 1))
    jitter = (rand or random).uniform(0.8, 1.2)
    return delay * jitter


OUTAGE_DEFAULT_DELAY_SECONDS = 30.0  # when GitHub's unavailability says nothing of when to come back
OUTAGE_MIN_DELAY_SECONDS = 1.0


def outage_delay(*, retry_after: float | None, failing_for: float, budget: float,
                 rand: random.Random | None = None) -> float | None:
    """Seconds until a job that met GitHub unavailable runs again, its attempt not counted; None once
    `budget` seconds have passed since the job's first failure (it then fails like any other error).

    Never before GitHub may be asked again (`retry_after`), and up to 20 % later so that the jobs a
    pause turned away do not all come back at the same instant.
    """
    if failing_for >= budget:
        return None
    delay = OUTAGE_DEFAULT_DELAY_SECONDS if retry_after is None else retry_after
    delay = min(MAX_DELAY_SECONDS, max(OUTAGE_MIN_DELAY_SECONDS, delay))
    return delay * (rand or random).uniform(1.0, 1.2)


def exhausted_by_lease_expiry(attempts: int, max_attempts: int) -> bool:
    """A job re-claimed after its lease expired has already used an attempt each time it was claimed;
    one claimed beyond its budget (its worker kept dying) is dead-lettered without running again."""
    return attempts > max_attempts


def lost_leases(running: Iterable[int], still_held: set[int]) -> set[int]:
    """Jobs this worker runs whose lease another worker has taken over (it must stop them)."""
    return {job_id for job_id in running if job_id not in still_held}


# Background jobs (validations, agent runs) yield the event loop to a burst of webhooks: each webhook
# job ends with the user-visible `in_progress` check run, which should not wait behind the tail of
# another PR's validation. Outside a burst they start as soon as the webhook lane is idle (a lone
# PR's validation does not wait), and the yielding is bounded, so background work never starves.
QUIET_SECONDS = 0.1
MAX_DEFER_SECONDS = 5.0


def in_burst(arrivals: Sequence[float], *, quiet: float = QUIET_SECONDS) -> bool:
    """Webhook jobs are arriving in a burst: the last two started less than `quiet` apart."""
    return len(arrivals) >= 2 and arrivals[-1] - arrivals[-2] < quiet


def background_may_start(*, now: float, urgent_busy: bool, last_urgent_at: float | None,
                         deferred_since: float | None, burst: bool = True, quiet: float = QUIET_SECONDS,
                         max_defer: float = MAX_DEFER_SECONDS) -> bool:
    """May the worker start background jobs now? Not while webhook jobs run; during a burst, only once
    it has been quiet for `quiet` seconds; and always once background work has been held back for
    `max_defer` seconds."""
    if deferred_since is not None and now - deferred_since >= max_defer:
        return True
    if urgent_busy:
        return False
    if not burst:
        return True
    return last_urgent_at is None or now - last_urgent_at >= quiet


def background_wait(*, now: float, last_urgent_at: float | None, deferred_since: float | None,
                    burst: bool = True, quiet: float = QUIET_SECONDS, max_defer: float = MAX_DEFER_SECONDS) -> float:
    """Seconds until `background_may_start` can next turn true without anything else happening (the
    webhook lane going idle wakes the worker by itself)."""
    waits = []
    if last_urgent_at is not None and burst:
        waits.append(last_urgent_at + quiet - now)
    if deferred_since is not None:
        waits.append(deferred_since + max_defer - now)
    return max(0.0, min(waits)) if waits else 0.0


CLAIM_RETRY_FIRST_SECONDS = 0.1
CLAIM_RETRY_MAX_SECONDS = 2.0


def claim_retry_delay(failures: int) -> float:
    """Seconds before claiming again after `failures` claims failed in a row (the database briefly away):
    soon, so that a wake-up met meanwhile is not left for the fallback poll, doubling up to a cap so that a
    database down for long is not hammered."""
    return min(CLAIM_RETRY_MAX_SECONDS, CLAIM_RETRY_FIRST_SECONDS * 2 ** max(0, failures))
