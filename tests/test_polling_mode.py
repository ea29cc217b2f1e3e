"""Polling mode (WEBHOOK_MODE=poll): no public URL; the App's delivery log, read every POLL_INTERVAL, is how
events arrive. Chosen by default when GitHub cannot reach PUBLIC_URL."""

from __future__ import annotations

import time

import pytest

from bot.config import ConfigError, load_settings
from bot.events import wait_for
from bot.models import DELIVERY_POLLED
from tests.conftest import WEBHOOK_SECRET
from tests.delivery_log_support import (delivery_log_health, jobs_per_delivery, nowhere, pull_requests,
                                        stored_sources, swept)

POLL_INTERVAL = 0.5
SLACK = 5.0  # "the poll interval plus a few seconds" (3 s was missed once with the 2 cores fully loaded)


@pytest.mark.parametrize(("public_url", "mode"), [
    ("http://127.0.0.1:3001", "poll"), ("http://localhost:3001", "poll"), ("http://192.168.1.20:3001", "poll"),
    ("http://laptop:3001", "poll"), ("https://codegen.example.com", "webhook"),
])
def test_the_mode_follows_whether_github_can_reach_public_url(make_settings, public_url, mode) -> None:  # type: ignore[no-untyped-def]
    assert make_settings(WEBHOOK_MODE=None, PUBLIC_URL=public_url).webhook_mode == mode


def test_the_mode_and_intervals_can_be_set(make_settings) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(WEBHOOK_MODE="Poll", PUBLIC_URL="https://codegen.example.com", POLL_INTERVAL="2.5",
                             SWEEP_INTERVAL="60")
    assert (settings.webhook_mode, settings.poll_interval, settings.sweep_interval) == ("poll", 2.5, 60.0)
    assert make_settings(WEBHOOK_MODE="webhook").webhook_mode == "webhook"
    with pytest.raises(ConfigError) as refused:
        make_settings(WEBHOOK_MODE="smee", POLL_INTERVAL="0", SWEEP_INTERVAL="-1")
    assert refused.value.problems == ["WEBHOOK_MODE must be webhook or poll, got 'smee'",
                                      "SWEEP_INTERVAL must be at least 0, got -1",
                                      "POLL_INTERVAL must be a number of seconds of at least 0.1, got '0'"]


@pytest.mark.parametrize(("public_url", "mode"), [("http://127.0.0.1:3001", "poll"),
                                                   ("https://codegen.example.com", "webhook")])
def test_an_empty_webhook_mode_in_dotenv_means_the_default(tmp_path, app_private_key, public_url, mode) -> None:  # type: ignore[no-untyped-def]
    """`WEBHOOK_MODE=` left empty in .env (as .env.example's blanks are) is the default, not an error."""
    dotenv = tmp_path / ".env"
    dotenv.write_text(f"WEBHOOK_MODE=\nPUBLIC_URL={public_url}\n")
    settings = load_settings({"DATA_DIR": str(tmp_path / "data"), "APP_ID": "1", "PRIVATE_KEY": app_private_key,
                              "WEBHOOK_SECRET": WEBHOOK_SECRET}, dotenv_path=dotenv)
    assert settings.webhook_mode == mode
    assert load_settings({"DATA_DIR": str(tmp_path / "data"), "WEBHOOK_MODE": "  ", "PUBLIC_URL": public_url},
                         dotenv_path=None).webhook_mode == mode


async def test_a_pr_opened_on_github_is_validated_within_the_poll_interval(start_bot, fake_github) -> None:  # type: ignore[no-untyped-def]
    fake_github.webhook_secret, fake_github.webhook_url = WEBHOOK_SECRET, nowhere()  # GitHub cannot reach the app
    bot = await start_bot(WEBHOOK_MODE=None, POLL_INTERVAL=str(POLL_INTERVAL))  # PUBLIC_URL is loopback: polls
    assert bot.services.settings.webhook_mode == "poll"
    await swept(bot)  # the app is up and has read the (empty) log once
    [scenario] = pull_requests(fake_github, 1)
    with bot.services.bus.subscribe() as events:
        entry = await fake_github.deliver("pull_request", scenario.payload("opened"))
        created = time.monotonic()
        assert entry["status"] == "failed to connect to host"  # which does no harm
        await wait_for(events, "validation.started", head_sha=scenario.head_sha, timeout=POLL_INTERVAL + SLACK)
    assert time.monotonic() - created < POLL_INTERVAL + SLACK
    [run] = [r for r in fake_github.check_runs.values() if r["head_sha"] == scenario.head_sha]
    assert run["status"] == "in_progress"
    assert await stored_sources(bot.store, [entry["guid"]]) == {entry["guid"]: DELIVERY_POLLED}
    assert await jobs_per_delivery(bot.store, [entry["guid"]]) == {entry["guid"]: 1}
    assert fake_github.redelivery_requests == []
    health = await delivery_log_health(bot)
    assert (health["mode"], health["interval_seconds"], health["failed"]) == ("poll", POLL_INTERVAL, False)


async def test_a_delivery_that_appears_in_the_log_late_is_still_polled(start_bot, fake_github) -> None:  # type: ignore[no-untyped-def]
    """GitHub's log can lag: an entry listed after newer ones were polled is found all the same."""
    fake_github.webhook_secret = WEBHOOK_SECRET
    bot = await start_bot(WEBHOOK_MODE="poll", POLL_INTERVAL=str(POLL_INTERVAL))
    await swept(bot)
    first, second = pull_requests(fake_github, 2)
    with bot.services.bus.subscribe() as events:
        fake_github.log_delay = 2 * POLL_INTERVAL + 0.5  # the first lags behind...
        late = await fake_github.deliver("pull_request", first.payload())
        fake_github.log_delay = 0.0
        prompt = await fake_github.deliver("pull_request", second.payload())  # ...the second, newer, does not
        await wait_for(events, "validation.started", head_sha=second.head_sha, timeout=POLL_INTERVAL + SLACK)
        await wait_for(events, "validation.started", head_sha=first.head_sha, timeout=3 * POLL_INTERVAL + SLACK)
    guids = [late["guid"], prompt["guid"]]
    assert await jobs_per_delivery(bot.store, guids) == {g: 1 for g in guids}
