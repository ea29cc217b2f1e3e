"""The delivery-log sweep backs off through the running app (pipeline/deliveries/service.py `_loop`): a rate
limit's Retry-After is waited out before the log is listed again, GitHub failing again and again is asked
ever less often, and a sweep that fails while taking its lease (the database away) counts as a failed
sweep too: it backs off and /health says so. The app polls (WEBHOOK_MODE=poll) every POLL_INTERVAL against
the fake GitHub; each test waits on the fake's recorded calls or the app's events, with a bound."""

from __future__ import annotations

from typing import Any

import pytest

from bot.events import wait_for
from tests.delivery_log_support import delivery_log_health, last_sweep, swept

POLL_INTERVAL = 0.2
LOG = "/app/hook/deliveries"
RETRY_AFTER = 2


async def _polling(start_bot: Any) -> Any:
    bot = await start_bot(WEBHOOK_MODE="poll", POLL_INTERVAL=str(POLL_INTERVAL))
    await swept(bot)  # up, and it has read the (empty) log once
    return bot


@pytest.mark.parametrize("status", [429, 403])
async def test_a_rate_limited_listing_is_not_asked_again_before_retry_after(start_bot, fake_github, status) -> None:  # type: ignore[no-untyped-def]
    bot = await _polling(start_bot)
    listed = len(fake_github.calls_to("GET", LOG))
    if status == 403:
        fake_github.rate_limit_next("GET", LOG, retry_after=RETRY_AFTER)  # the secondary rate limit
    else:
        fake_github.fail_next("GET", LOG, status=429, headers={"Retry-After": str(RETRY_AFTER)})
    limited = await fake_github.wait_for_call("GET", LOG, count=listed + 1, timeout=10)
    assert (limited.status, limited.injected) == (status, True)
    following = await fake_github.wait_for_call("GET", LOG, count=listed + 2, timeout=RETRY_AFTER + 10)
    assert following.at - limited.at >= RETRY_AFTER, "listed again before Retry-After was over"
    assert following.status == 200
    assert following.at - limited.at < RETRY_AFTER + 5  # and not much later: polling goes on
    await bot.services.delivery_log.stop()


@pytest.mark.slow  # GitHub failing is waited out as it would be: ~20 s of backoff
async def test_github_failing_again_and_again_is_asked_ever_less_often(start_bot, fake_github) -> None:  # type: ignore[no-untyped-def]
    bot = await _polling(start_bot)
    listed = len(fake_github.calls_to("GET", LOG))
    with bot.services.bus.subscribe() as events:
        fake_github.fail_next("GET", LOG, status=502, times=1_000)
        await wait_for(events, "delivery_log.failed", timeout=30)
        calls = 6  # the client's retries of the first sweep, then the sweeps of the backoff
        await fake_github.wait_for_call("GET", LOG, count=listed + calls, timeout=60)
    failing = fake_github.calls_to("GET", LOG)[listed:listed + calls]
    assert {call.status for call in failing} == {502}
    gaps = [later.at - earlier.at for earlier, later in zip(failing, failing[1:])]
    assert gaps[-1] >= 2 * gaps[0] and gaps[-1] >= 5.0, gaps  # not every POLL_INTERVAL: backing off
    assert max(gaps[:2]) < min(gaps[-2:]), gaps  # the gaps grow
    assert bot.services.delivery_log.failures >= 2
    health = await delivery_log_health(bot)
    assert health["failed"] is True and "502" in health["error"]
    await bot.services.delivery_log.stop()
    fake_github.clear_faults()
    fake_github.take_errors()


async def test_a_sweep_that_cannot_take_its_lease_is_a_failed_sweep(start_bot, fake_github, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The database refusing the lease fails the sweep: counted (the backoff), recorded for /health."""
    bot = await _polling(start_bot)
    sweep = bot.services.delivery_log
    leases = bot.store.leases

    async def refused(*args: Any, **kwargs: Any) -> bool:
        raise ConnectionError("the database went away")

    with bot.services.bus.subscribe() as events:
        monkeypatch.setattr(leases, "acquire", refused)
        failed = await wait_for(events, "delivery_log.failed", timeout=10)
    assert "ConnectionError: the database went away" in failed.data["error"]
    assert sweep.failures >= 1
    last = await last_sweep(bot.store)
    assert last is not None and last["ok"] is False and "the database went away" in last["error"]
    health = await delivery_log_health(bot)
    assert health["failed"] is True and "ConnectionError" in health["error"]
    listed = len(fake_github.calls_to("GET", LOG))
    monkeypatch.undo()  # the database is back: the next sweep waits out the backoff (5 s), then succeeds
    with bot.services.bus.subscribe() as events:
        await wait_for(events, "delivery_log.swept", timeout=15)
    assert sweep.failures == 0 and len(fake_github.calls_to("GET", LOG)) > listed
    await sweep.stop()
