"""Pure decisions of the job queue (no I/O): when to retry, when to give up, which jobs were lost."""

from __future__ import annotations

import random
from collections.abc import Iterable

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


def exhausted_by_lease_expiry(attempts: int, max_attempts: int) -> bool:
    """A job re-claimed after its lease expired has already used an attempt each time it was claimed;
    one claimed beyond its budget (its worker kept dying) is dead-lettered without running again."""
    return attempts > max_attempts


def lost_leases(running: Iterable[int], still_held: set[int]) -> set[int]:
    """Jobs this worker runs whose lease another worker has taken over (it must stop them)."""
    return {job_id for job_id in running if job_id not in still_held}
