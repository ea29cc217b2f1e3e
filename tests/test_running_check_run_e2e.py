"""While a validation runs, its check run says how long it has been running, not the finished steps'
total (issue 15: "Total time: 1.6 s" after minutes): a real run, its in_progress updates as the fake
GitHub receives them."""

from __future__ import annotations

import re

import pytest

from bot.events import wait_for
from tests.pull_requests import open_pull_request
from tests.sandbox_support import needs_bwrap

pytestmark = [needs_bwrap, pytest.mark.slow]  # progress is reported every 3 s (stages.py progress_interval)

RUNNING_FOR = re.compile(r"^Running for (?:(\d+)m )?(\d+(?:\.\d)?)s$", flags=re.MULTILINE)


def running_for(summary: str) -> float | None:
    """The seconds of "Running for 1m 5s" in a check run's summary (labels.duration's words), or None."""
    found = RUNNING_FOR.search(summary)
    return None if found is None else int(found.group(1) or 0) * 60 + float(found.group(2))


async def test_a_running_check_run_says_running_for_a_growing_time(bot, fake_github) -> None:
    # prints every second, so that each progress update has news (an unchanged tail sends none)
    config = (f"validate:\n  - 'true'\n  - name: slow tests\n"
              f"    run: for i in $(seq 1 120); do echo tick $i; sleep 1; done\n")
    scenario = open_pull_request(fake_github, config=config)
    with bot.services.bus.subscribe() as events:
        await bot.webhooks.send("pull_request", scenario.payload("opened"))
        started = await wait_for(events, "validation.started", head_sha=scenario.head_sha)
        state = await bot.store.validations.get(started.data["validation_id"])
        updates = f"/repos/*/*/check-runs/{state.check_run_id}"

        def running() -> list[tuple[float, float, str]]:
            """(when the fake received it, seconds it says, its summary) of each update saying "Running for"."""
            return [(call.at, seconds, call.json["output"]["summary"]) for call in fake_github.calls_to("PATCH", updates)
                    if (call.json or {}).get("output") and (seconds := running_for(call.json["output"]["summary"]))
                    is not None]

        # two updates of the slow step, at least 3 s apart (the progress interval)
        await fake_github.wait_until(lambda: len([r for r in running() if "slow tests" in r[2]]) >= 2, timeout=60)
        project = await bot.store.projects.get_project(state.project_id)
        await bot.services.validations.cancel(project, await bot.store.validations.get(state.id), reason="test over")
        await wait_for(events, "validation.completed", validation_id=state.id, timeout=30)

    slow = [r for r in running() if "slow tests" in r[2]]
    (first_at, first, first_summary), (second_at, second, _) = slow[:2]
    assert "Total time" not in first_summary and "running…" in first_summary
    assert second > first, slow
    # it grows with the clock: as much as the time between the two updates (the fake's clock, to 1 s)
    assert abs((second - first) - (second_at - first_at)) < 1.0, (first, second, second_at - first_at)
