import random

from worker.policy import exhausted_by_lease_expiry, lost_leases, retry_delay


def test_retry_delay_grows_and_stops_at_max_attempts() -> None:
    rand = random.Random(1)
    delays = [retry_delay(n, 5, rand=rand) for n in range(1, 6)]
    assert delays[-1] is None
    numbers = [d for d in delays if d is not None]
    assert all(1.6 <= d <= 2.4 * 2 ** i for i, d in enumerate(numbers))
    assert numbers == sorted(numbers)


def test_retry_delay_is_capped() -> None:
    assert retry_delay(30, 100, rand=random.Random(0)) <= 600 * 1.2


def test_lease_expiry_budget() -> None:
    assert not exhausted_by_lease_expiry(5, 5)
    assert exhausted_by_lease_expiry(6, 5)


def test_lost_leases() -> None:
    assert lost_leases([1, 2, 3], {1, 3}) == {2}
