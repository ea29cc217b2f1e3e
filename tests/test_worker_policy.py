import random

from worker.policy import (background_may_start, background_wait, claim_retry_delay, exhausted_by_lease_expiry,
                           in_burst, lost_leases, outage_delay, retry_delay)


def test_a_failed_claim_is_tried_again_soon_then_less_often() -> None:
    assert [claim_retry_delay(n) for n in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0]
    assert claim_retry_delay(50) == 2.0


def test_retry_delay_grows_and_stops_at_max_attempts() -> None:
    rand = random.Random(1)
    delays = [retry_delay(n, 5, rand=rand) for n in range(1, 6)]
    assert delays[-1] is None
    numbers = [d for d in delays if d is not None]
    assert all(1.6 <= d <= 2.4 * 2 ** i for i, d in enumerate(numbers))
    assert numbers == sorted(numbers)


def test_retry_delay_is_capped() -> None:
    assert retry_delay(30, 100, rand=random.Random(0)) <= 600 * 1.2


def test_github_unavailable_waits_until_github_may_be_asked_again_within_the_budget() -> None:
    rand = random.Random(3)
    delays = [outage_delay(retry_after=40.0, failing_for=600.0, budget=3600.0, rand=rand) for _ in range(50)]
    assert all(40.0 <= d <= 48.0 for d in delays) and len(set(delays)) > 1  # spread, never early
    assert 30.0 <= outage_delay(retry_after=None, failing_for=0.0, budget=3600.0) <= 36.0
    assert 1.0 <= outage_delay(retry_after=0.0, failing_for=0.0, budget=3600.0) <= 1.2
    assert outage_delay(retry_after=7200.0, failing_for=0.0, budget=3600.0) <= 600 * 1.2
    assert outage_delay(retry_after=5.0, failing_for=3600.0, budget=3600.0) is None  # spent: counts as a failure


def test_lease_expiry_budget() -> None:
    assert not exhausted_by_lease_expiry(5, 5)
    assert exhausted_by_lease_expiry(6, 5)


def test_lost_leases() -> None:
    assert lost_leases([1, 2, 3], {1, 3}) == {2}


def test_background_jobs_wait_while_webhook_jobs_are_busy_or_just_were() -> None:
    assert background_may_start(now=10.0, urgent_busy=False, last_urgent_at=None, deferred_since=None)
    assert not background_may_start(now=10.0, urgent_busy=True, last_urgent_at=10.0, deferred_since=9.0)
    # quiet for less than 100 ms: still waiting; after it: may start
    assert not background_may_start(now=10.05, urgent_busy=False, last_urgent_at=10.0, deferred_since=9.0)
    assert background_may_start(now=10.2, urgent_busy=False, last_urgent_at=10.0, deferred_since=9.0)


def test_background_jobs_never_wait_longer_than_the_bound() -> None:
    assert background_may_start(now=15.0, urgent_busy=True, last_urgent_at=15.0, deferred_since=10.0)
    assert not background_may_start(now=14.9, urgent_busy=True, last_urgent_at=14.9, deferred_since=10.0)


def test_background_wait_is_the_nearest_moment_they_may_start() -> None:
    assert abs(background_wait(now=10.0, last_urgent_at=9.95, deferred_since=6.0) - 0.05) < 1e-9
    assert abs(background_wait(now=10.0, last_urgent_at=10.0, deferred_since=5.05) - 0.05) < 1e-9
    assert background_wait(now=10.0, last_urgent_at=None, deferred_since=None) == 0.0
    assert background_wait(now=10.0, last_urgent_at=1.0, deferred_since=None) == 0.0


def test_outside_a_burst_background_jobs_start_as_soon_as_the_webhook_lane_is_idle() -> None:
    assert not in_burst([])
    assert not in_burst([5.0])
    assert not in_burst([5.0, 9.0])  # a lone PR event: its validation starts at once
    assert in_burst([5.0, 5.03])
    assert background_may_start(now=10.01, urgent_busy=False, last_urgent_at=10.0, deferred_since=None,
                                burst=False)
    assert not background_may_start(now=10.01, urgent_busy=True, last_urgent_at=10.0, deferred_since=None,
                                    burst=False)
    assert not background_may_start(now=10.01, urgent_busy=False, last_urgent_at=10.0, deferred_since=None,
                                    burst=True)


def test_outside_a_burst_only_the_bound_is_waited_for() -> None:
    # the lane going idle wakes the worker; no quiet period to wait out
    assert abs(background_wait(now=10.0, last_urgent_at=10.0, deferred_since=9.0, burst=False) - 4.0) < 1e-9
    assert background_wait(now=10.0, last_urgent_at=10.0, deferred_since=None, burst=False) == 0.0
