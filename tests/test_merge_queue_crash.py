"""The app's own merge queue when a run dies half way, end to end over real HTTP and real git against the
fake GitHub: an ejection or removal whose comment GitHub refused is said (once) when the queue runs again,
with its check run completed once and the cancel that came after it done; and a landing claimed but killed
before its merge reached GitHub lands exactly once in the next process."""

from __future__ import annotations

import asyncio

import pytest

from bot.events import wait_for
from bot.models import SUBJECT_QUEUE_CANDIDATE
from pipeline.merge_queue import decide
from tests.merge_queue_support import (comments_saying, queue_check_runs, queue_repo, stored_queue, until_idle,
                                       until_stored_idle)
from tests.sandbox_support import needs_bwrap
from tests.test_check_run_recovery import app_store, served  # noqa: F401 (fixtures: a served app, its database)
from tests.test_merge_queue_e2e import SLOW_CANDIDATE

pytestmark = [needs_bwrap, pytest.mark.slow]

COMMENTS_ON_1 = "/repos/*/*/issues/1/comments"


def refused_comments(fake_github) -> list[str]:
    """The bodies of the comments on #1 GitHub refused (the injected failure)."""
    return [str((call.json or {}).get("body")) for call in fake_github.calls_to("POST", COMMENTS_ON_1) if call.injected]


async def test_an_ejection_whose_comment_failed_is_said_once_when_the_queue_runs_again(bot, fake_github,
                                                                                      monkeypatch) -> None:
    monkeypatch.setattr(decide, "ANNOUNCE_BACKOFF_SECONDS", 1.0)
    repo = await queue_repo(bot.store, fake_github, prs={1: {"one.txt": "1\n"}},
                            validate=["echo the tests break; exit 1"])
    # every try of the GitHub client fails: the queue tries the ejection again after its own backoff
    fake_github.fail_next("POST", COMMENTS_ON_1, status=502, times=4)
    with bot.services.bus.subscribe() as events:
        await bot.deliver("issue_comment", repo.comment(1, "/queue"), timeout=30)
        await until_idle(bot, events, repo)

    *refused_calls, said_again = fake_github.calls_to("POST", COMMENTS_ON_1)
    assert len(refused_calls) == 4 and said_again.at - refused_calls[-1].at >= 1.0  # not at once
    refused = refused_comments(fake_github)
    assert len(refused) == 4 and all("Ejected from the merge queue" in body for body in refused)
    said = comments_saying(fake_github, "Ejected from the merge queue")
    assert len(said) == 1 and "the tests break" in said[0]
    [run] = queue_check_runs(fake_github, repo.pulls[1].head_sha)  # completed again, not made twice
    assert (run["status"], run["conclusion"]) == ("completed", "failure")
    assert fake_github.merges == []
    queue = await stored_queue(bot, repo)
    assert queue.entries == () and queue.candidates == ()


async def test_a_removal_whose_comment_failed_is_said_once_and_the_cancel_after_it_is_done(bot, fake_github) -> None:
    repo = await queue_repo(bot.store, fake_github, prs={1: {"one.txt": "1\n"}}, validate=[SLOW_CANDIDATE])
    with bot.services.bus.subscribe() as events:
        await bot.deliver("issue_comment", repo.comment(1, "/queue"), timeout=30)
        await wait_for(events, "validation.started", timeout=30, pr_number=None)
        fake_github.fail_next("POST", COMMENTS_ON_1, status=502)  # `Remove` fails once: tried again
        await bot.deliver("issue_comment", repo.comment(1, "/dequeue"), timeout=30)
        await until_idle(bot, events, repo)

    [refused] = refused_comments(fake_github)
    assert "Taken out of the merge queue" in refused
    said = comments_saying(fake_github, "Taken out of the merge queue")
    assert said == ["Taken out of the merge queue: dequeued by @mona."]
    [run] = queue_check_runs(fake_github, repo.pulls[1].head_sha)
    assert (run["status"], run["conclusion"]) == ("completed", "neutral")
    candidates = [v for v in await bot.store.validations.for_project(repo.project.id, limit=50)
                  if v.subject == SUBJECT_QUEUE_CANDIDATE]
    assert [v.conclusion for v in candidates] == ["cancelled"]  # not left running its 60 s
    queue = await stored_queue(bot, repo)
    assert queue.entries == () and queue.candidates == ()


async def test_killed_after_claiming_a_landing_before_its_merge_reached_github_it_lands_once(
        served, fake_github, app_store) -> None:
    app = await served()
    repo = await queue_repo(app_store, fake_github, prs={1: {"one.txt": "1\n"}}, validate=["true"])
    put = "/repos/*/*/pulls/1/merge"
    landing = fake_github.hold_next("PUT", put, before_handling=True)  # claimed; the PUT not done yet
    assert (await app.webhooks.send("issue_comment", repo.comment(1, "/queue"))).status == 202
    await asyncio.wait_for(landing.arrived.wait(), 60)
    await app.kill()
    landing.drop()  # it never reached GitHub
    await fake_github.wait_until(lambda: len(fake_github.calls_to("PUT", put)) == 1, timeout=10)
    assert fake_github.merges == []

    again = await served()  # finds the claim without a merge, and GitHub saying #1 is not merged: sends it
    finished = lambda: [r["status"] for r in queue_check_runs(fake_github, repo.pulls[1].head_sha)] == [  # noqa: E731
        "completed"]
    await fake_github.wait_until(lambda: bool(fake_github.merges) and finished(), timeout=120)
    assert [m["number"] for m in fake_github.merges] == [1]
    assert len(fake_github.calls_to("PUT", put)) == 2  # the dropped one, then the one that merged
    assert queue_check_runs(fake_github, repo.pulls[1].head_sha)[-1]["conclusion"] == "success"
    await until_stored_idle(app_store, repo.project.id)
    stored = await app_store.merge_queues.load(repo.project.id, "main")
    assert stored is not None and stored.state["entries"] == [] and stored.state["candidates"] == []
    assert await again.terminate() == 0
