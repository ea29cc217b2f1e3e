"""A GitHub outage end to end: GitHub answers 502 to everything for longer than the old retry window
(which dead-lettered acknowledged deliveries after about 30 s of tries), then recovers, and the
delivery acknowledged meanwhile still gets its PR validated.

Time is injected so ten minutes of outage take no time: the GitHub client's clock and sleep (backoff
inside a request, the pause before a probe), and the job queue's `utcnow` (when a postponed job is due).
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

from bot import models
from bot.events import wait_for
from tests.pull_requests import INSTALLATION_ID, open_pull_request
from tests.sandbox_support import needs_bwrap

pytestmark = needs_bwrap

STEP = 75.0  # longer than the longest pause before a probe (60 s) and a postponed job's jitter (+20 %)


class TimeMachine:
    """The GitHub client's monotonic clock and the job queue's wall clock, moved together by the test
    (and the client's sleeps return at once, moving its clock)."""

    def __init__(self) -> None:
        self.now = time.monotonic()
        self.offset = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)

    def utcnow(self):  # type: ignore[no-untyped-def]
        return models.utcnow() + timedelta(seconds=self.offset)

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.offset += seconds


async def test_an_acknowledged_delivery_outlives_a_github_outage_and_its_pr_is_validated(
    start_bot, fake_github, monkeypatch
) -> None:
    bot = await start_bot(GITHUB_OUTAGE_BUDGET_HOURS="3")
    assert bot.services.worker.outage_budget_seconds == 3 * 3600
    clock = TimeMachine()
    clients = bot.services.github.clients
    clients._clock, clients._sleep = clock, clock.sleep
    monkeypatch.setattr("bot.store.jobs.utcnow", clock.utcnow)
    monkeypatch.setattr("worker.runner.utcnow", clock.utcnow)
    scenario = open_pull_request(fake_github, config="validate:\n  - grep -q changed app.py\n")
    fake_github.fail_next("*", "**", status=502, times=10**6)  # GitHub down, tokens and all

    with bot.services.bus.subscribe() as events:
        answer = await bot.webhooks.send("pull_request", scenario.payload("opened"))
        assert answer.status == 202
        delivery = answer.body["delivery"]
        postponements = 0
        while clock.offset < 600:  # ten minutes of outage
            finished = await wait_for(events, "job.finished", timeout=10, delivery_id=delivery)
            assert finished.data["outcome"] == "postponed", finished.data
            postponements += 1
            [job] = await bot.store.jobs.for_delivery(delivery)
            assert job.attempts == 0 and job.status == "queued"
            if postponements == 1:
                await expect_pause_reported(bot)
            clock.advance(STEP)
            bot.services.worker.wake()

        fake_github.clear_faults()  # GitHub is back
        finished = await wait_for(events, "job.finished", timeout=10, delivery_id=delivery)
        assert finished.data["outcome"] == "done"
        done = await wait_for(events, "validation.completed", timeout=60, head_sha=scenario.head_sha)

    state = await bot.store.validations.get(done.data["validation_id"])
    run = fake_github.check_runs[state.check_run_id]
    assert (run["status"], run["conclusion"]) == ("completed", "success")
    assert clients.status() == {"ok": True, "paused": [], "rate_limited": []}
    fake_github.take_errors()  # the injected 502s


async def expect_pause_reported(bot) -> None:  # type: ignore[no-untyped-def]
    async with bot.webhooks.session.get(bot.url + "/health") as response:
        health = await response.json()
    assert response.status == 200  # the app is fine; GitHub is not
    github = health["github"]
    assert not github["ok"]
    assert [(p["scope"], p["reason"]) for p in github["paused"]] == [
        ("all", "GitHub answered 502"), ("app", "GitHub answered 502"), (str(INSTALLATION_ID), "GitHub answered 502")]
    async with bot.webhooks.session.get(bot.url + "/metrics") as response:
        text = await response.text()
    assert 'codegenapp_github_paused{scope="all"} 1.0' in text
