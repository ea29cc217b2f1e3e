"""The app's own merge queue, end to end over real HTTP and real git against the fake GitHub: `/queue`
builds candidates in the app's mirror, validates them in the sandbox without a check run on GitHub, lands
what passed with sha-pinned merges, and ejects the PR that breaks the base together with the ones ahead."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid

import pytest

from bot.events import wait_for
from bot.models import SUBJECT_QUEUE_CANDIDATE
from pipeline.report.comment import COMMENT_MARKER
from tests.merge_queue_support import (MAINTAINER, mirror_tree, process_running, queue_check_runs, queue_repo,
                                       stored_queue, until_idle, until_stored_idle)
from tests.sandbox_support import needs_bwrap
from tests.test_check_run_recovery import app_store, served  # noqa: F401 (fixtures: a served app, its database)

pytestmark = [needs_bwrap, pytest.mark.slow]

# Fails only when one.txt and two.txt are both there: #2 passes alone and breaks only on top of #1.
NOT_BOTH = ["test ! -f one.txt -o ! -f two.txt || { echo one and two break it together; exit 1; }"]


async def queued_by_comment(bot, repo, *numbers: int) -> None:
    for number in numbers:
        await bot.deliver("issue_comment", repo.comment(number, "/queue"), timeout=30)


async def successful_candidate_trees(bot, repo) -> set[str]:
    validations = await bot.store.validations.for_project(repo.project.id, limit=200)
    return {mirror_tree(bot, v.head_sha) for v in validations
            if v.subject == SUBJECT_QUEUE_CANDIDATE and v.conclusion == "success"}


async def test_the_pr_that_breaks_only_with_the_one_ahead_is_ejected_and_the_others_land(bot, fake_github) -> None:
    repo = await queue_repo(bot.store, fake_github, prs={1: {"one.txt": "1\n"}, 2: {"two.txt": "2\n"},
                                                   3: {"three.txt": "3\n"}}, validate=NOT_BOTH)
    with bot.services.bus.subscribe() as events:
        await queued_by_comment(bot, repo, 1, 2, 3)
        await until_idle(bot, events)

    merged = {m["number"]: m for m in fake_github.merges}
    assert sorted(merged) == [1, 3]
    assert [merged[n]["head_sha"] for n in (1, 3)] == [repo.pulls[1].head_sha, repo.pulls[3].head_sha]
    # every commit main got was validated: its tree is one a candidate passed on
    landed = repo.first_parents(repo.base_sha)
    assert len(landed) == 2
    assert {repo.tree(sha) for sha in landed} <= await successful_candidate_trees(bot, repo)
    # no check run on a candidate: only the PRs' "Merge queue" runs and nothing on commits GitHub lacks
    assert all(run["head_sha"] in {p.head_sha for p in repo.pulls.values()}
               for run in fake_github.check_runs.values() if run["name"] == "Merge queue")

    ejected = queue_check_runs(fake_github, repo.pulls[2].head_sha)[-1]
    assert (ejected["status"], ejected["conclusion"]) == ("completed", "failure")
    assert "failed with #1 merged ahead of it" in ejected["output"]["summary"]
    assert "one and two break it together" in ejected["output"]["summary"]  # the failing step's output tail
    said = [c["body"] for c in fake_github.comments.values() if c["body"].startswith("Ejected from the merge queue")]
    assert len(said) == 1 and "#1" in said[0]
    for number in (1, 3):
        run = queue_check_runs(fake_github, repo.pulls[number].head_sha)[-1]
        assert (run["status"], run["conclusion"]) == ("completed", "success"), run["output"]
    queue = await stored_queue(bot, repo)
    assert queue.entries == () and queue.candidates == ()
    assert MAINTAINER  # the maintainer queued them (write access)


async def test_queue_is_refused_with_the_reason_when_not_approved(bot, fake_github) -> None:
    repo = await queue_repo(bot.store, fake_github, prs={1: {"one.txt": "1\n"}}, validate=["true"])
    fake_github.set_branch_protection(repo.full_name, "main", {
        "required_pull_request_reviews": {"required_approving_review_count": 1},
        "required_status_checks": None})
    await bot.deliver("issue_comment", repo.comment(1, "/queue"), timeout=30)
    replies = [c["body"] for c in fake_github.comments.values() if "Not queued" in c["body"]]
    assert replies and "it is not approved" in replies[-1], replies
    assert await bot.store.merge_queues.load(repo.project.id, "main") is None

    fake_github.add_review(repo.full_name, 1, "reviewer")
    with bot.services.bus.subscribe() as events:
        await bot.deliver("issue_comment", repo.comment(1, "/queue"), timeout=30)
        await until_idle(bot, events)
    assert [m["number"] for m in fake_github.merges] == [1]


async def test_queue_is_refused_when_the_pr_has_conflicts(bot, fake_github) -> None:
    repo = await queue_repo(bot.store, fake_github, prs={1: {"one.txt": "1\n"}}, validate=["true"])
    fake_github.pulls[(repo.full_name, 1)].update(mergeable=False, mergeable_state="dirty")
    await bot.deliver("issue_comment", repo.comment(1, "/queue"), timeout=30)
    replies = [c["body"] for c in fake_github.comments.values() if "Not queued" in c["body"]]
    assert replies and "has conflicts with main" in replies[-1]
    assert fake_github.merges == []


# The candidate's workspace is a git repository whose head is the queue's merge commit.
SLOW_CANDIDATE = "git log -1 --format=%s | grep -q 'merge queue' && sleep 60 || true"


async def candidate_validations(bot, repo) -> list:
    return sorted((v for v in await bot.store.validations.for_project(repo.project.id, limit=200)
                   if v.subject == SUBJECT_QUEUE_CANDIDATE), key=lambda v: v.created_at)


async def test_a_push_to_a_queued_pr_takes_it_out(bot, fake_github) -> None:
    repo = await queue_repo(bot.store, fake_github, prs={1: {"one.txt": "1\n"}}, validate=[SLOW_CANDIDATE])
    queued_head = repo.pulls[1].head_sha
    with bot.services.bus.subscribe() as events:
        await bot.deliver("issue_comment", repo.comment(1, "/queue"), timeout=30)
        await wait_for(events, "validation.started", timeout=30, pr_number=None)
        repo.push_to_pull(1, {"one.txt": "changed\n"})
        await bot.deliver("pull_request", repo.pulls[1].payload("synchronize"), timeout=30)
        await until_idle(bot, events)
    assert fake_github.merges == []
    run = queue_check_runs(fake_github, queued_head)[-1]
    assert (run["status"], run["conclusion"]) == ("completed", "neutral")
    assert "a new commit" in run["output"]["summary"]
    said = [c["body"] for c in fake_github.comments.values() if c["body"].startswith("Taken out of the merge queue")]
    assert len(said) == 1 and "/queue` it again" in said[0]
    [candidate] = await candidate_validations(bot, repo)
    assert candidate.conclusion == "cancelled"


async def test_a_push_to_the_base_while_a_candidate_runs_restarts_it_on_the_new_tip(bot, fake_github) -> None:
    # slow only on the old base: the candidate rebuilt on the new tip (which has other.txt) passes at once
    repo = await queue_repo(bot.store, fake_github, prs={1: {"one.txt": "1\n"}}, validate=["test -f other.txt || sleep 60"])
    with bot.services.bus.subscribe() as events:
        await bot.deliver("issue_comment", repo.comment(1, "/queue"), timeout=30)
        await wait_for(events, "validation.started", timeout=30, pr_number=None)
        tip = repo.push_to_main({"other.txt": "someone else's\n"})
        await bot.deliver("push", repo.push_payload(repo.base_sha, tip), timeout=30)
        await until_idle(bot, events)
    assert [m["number"] for m in fake_github.merges] == [1]
    [landed] = repo.first_parents(tip)
    assert fake_github.git_repo(repo.full_name).git("rev-parse", f"{landed}^1").strip() == tip
    first, second = await candidate_validations(bot, repo)
    assert (first.base_sha, first.conclusion) == (repo.base_sha, "cancelled")
    assert "moved" in (first.title or "")
    assert (second.base_sha, second.conclusion) == (tip, "success")
    assert repo.tree(landed) == mirror_tree(bot, second.head_sha)


async def test_a_fork_prs_queue_run_gets_no_secrets(bot, fake_github) -> None:
    repo = await queue_repo(bot.store, fake_github, prs={1: {"one.txt": "1\n"}}, forks=frozenset({1}),
                            validate=['test -z "$API_TOKEN" || { echo got the secret; exit 1; }'])
    await bot.store.projects.set_secret(repo.project.id, "API_TOKEN", "tok-queue-secret-456")
    with bot.services.bus.subscribe() as events:
        await bot.deliver("issue_comment", repo.comment(1, "/queue"), timeout=30)
        await until_idle(bot, events)
    [candidate] = await candidate_validations(bot, repo)
    assert candidate.conclusion == "success", candidate.test_results
    [note] = [n for n in candidate.test_results["notes"] if "without the project's secrets" in n]
    assert "#1 comes from a fork" in note
    assert [m["number"] for m in fake_github.merges] == [1]


async def test_killed_while_landing_the_next_process_resumes_and_nothing_lands_twice(
        served, fake_github, app_store) -> None:
    app = await served()
    repo = await queue_repo(app_store, fake_github, prs={1: {"one.txt": "1\n"}, 2: {"two.txt": "2\n"}},
                            validate=["true"])
    landing = fake_github.hold_next("PUT", "/repos/*/*/pulls/1/merge")  # merged; the answer never reaches the app
    for number in (1, 2):  # in this order: each once the one before shows in the queue
        assert (await app.webhooks.send("issue_comment", repo.comment(number, "/queue"))).status == 202
        await fake_github.wait_until(lambda: queue_check_runs(fake_github, repo.pulls[number].head_sha), timeout=30)
    await asyncio.wait_for(landing.arrived.wait(), 60)
    await app.kill()
    landing.release()

    again = await served()
    both_done = lambda: all(runs and runs[-1]["status"] == "completed"  # noqa: E731
                            for runs in (queue_check_runs(fake_github, repo.pulls[n].head_sha) for n in (1, 2)))
    await fake_github.wait_until(lambda: len(fake_github.merges) == 2 and both_done(), timeout=90)
    assert [m["number"] for m in fake_github.merges] == [1, 2]
    assert len(fake_github.calls_to("PUT", "/repos/*/*/pulls/1/merge")) == 1  # looked up, not sent again
    for number in (1, 2):
        assert queue_check_runs(fake_github, repo.pulls[number].head_sha)[-1]["conclusion"] == "success"
    await until_stored_idle(app_store, repo.project.id)
    stored = await app_store.merge_queues.load(repo.project.id, "main")
    assert stored is not None and stored.state["entries"] == [] and stored.state["candidates"] == []
    assert await again.terminate() == 0  # stopped, its runs' disks unmounted


async def test_a_batch_that_fails_is_searched_and_only_the_culprit_is_ejected(bot, fake_github) -> None:
    # #3 breaks only on top of #1; tested as one batch of four, then split until #3 is named
    not_one_and_three = ["test ! -f one.txt -o ! -f three.txt || { echo one and three clash; exit 1; }"]
    repo = await queue_repo(bot.store, fake_github, prs={n: {f"{name}.txt": f"{n}\n"} for n, name in
                                                         ((1, "one"), (2, "two"), (3, "three"), (4, "four"))},
                            validate=not_one_and_three, queue={"batch_size": 4, "max_parallel": 2})
    with bot.services.bus.subscribe() as events:
        await queued_by_comment(bot, repo, 1, 2, 3, 4)
        await until_idle(bot, events)
    assert sorted(m["number"] for m in fake_github.merges) == [1, 2, 4]
    ejected = queue_check_runs(fake_github, repo.pulls[3].head_sha)[-1]
    assert ejected["conclusion"] == "failure" and "merged ahead of it" in ejected["output"]["summary"]
    assert "one and three clash" in ejected["output"]["summary"]
    landed = repo.first_parents(repo.base_sha)
    assert {repo.tree(sha) for sha in landed} <= await successful_candidate_trees(bot, repo)


async def test_fast_forward_pushes_the_tested_commits_themselves(bot, fake_github) -> None:
    repo = await queue_repo(bot.store, fake_github, prs={1: {"one.txt": "1\n"}, 2: {"two.txt": "2\n"}},
                            validate=["true"], queue={"method": "fast-forward"})
    with bot.services.bus.subscribe() as events:
        await queued_by_comment(bot, repo, 1, 2)
        await until_idle(bot, events)
    assert fake_github.calls_to("PUT", "/repos/*/*/pulls/*/merge") == []
    tested = {v.head_sha for v in await candidate_validations(bot, repo) if v.conclusion == "success"}
    assert repo.main() in tested
    assert set(repo.first_parents(repo.base_sha)) <= tested  # each commit main got is one the queue tested


async def test_a_refused_fast_forward_falls_back_to_merging_and_says_why(bot, fake_github) -> None:
    repo = await queue_repo(bot.store, fake_github, prs={1: {"one.txt": "1\n"}}, validate=["true"],
                            queue={"method": "fast-forward"})
    fake_github.block_app_pushes(repo.full_name, "main")
    with bot.services.bus.subscribe() as events:
        await queued_by_comment(bot, repo, 1)
        await until_idle(bot, events)
    assert [m["number"] for m in fake_github.merges] == [1]
    said = [c["body"] for c in fake_github.comments.values() if "refused the push" in c["body"]]
    assert len(said) == 1 and "merging it with the `merge` method instead" in said[0]


async def test_dequeue_by_command_and_by_button(bot, fake_github) -> None:
    repo = await queue_repo(bot.store, fake_github, prs={1: {"one.txt": "1\n"}, 2: {"two.txt": "2\n"}},
                            validate=[SLOW_CANDIDATE])
    with bot.services.bus.subscribe() as events:
        await queued_by_comment(bot, repo, 1, 2)
        await bot.deliver("issue_comment", repo.comment(1, "/dequeue"), timeout=30)
        await fake_github.wait_until(lambda: queue_check_runs(fake_github, repo.pulls[2].head_sha), timeout=30)
        [run] = queue_check_runs(fake_github, repo.pulls[2].head_sha)
        assert [a["identifier"] for a in run["actions"]] == ["dequeue"]
        click = repo.pulls[2].requested_action_payload(run, "dequeue", user=MAINTAINER)
        await bot.deliver("check_run", click, timeout=30)
        await until_idle(bot, events)
    assert fake_github.merges == []
    for number, who in ((1, MAINTAINER), (2, MAINTAINER)):
        run = queue_check_runs(fake_github, repo.pulls[number].head_sha)[-1]
        assert run["conclusion"] == "neutral" and f"dequeued by @{who}" in run["output"]["summary"]
    assert all(v.conclusion == "cancelled" for v in await candidate_validations(bot, repo))


async def test_a_step_that_fails_once_then_passes_is_noted_flaky_not_ejected(bot, fake_github) -> None:
    marker = f"sleep 3.{uuid.uuid4().int % 10**6:06d}"  # unique: the test kills the first run's, by its pid
    repo = await queue_repo(bot.store, fake_github, prs={1: {"one.txt": "1\n"}}, validate=[marker],
                            queue={"flaky_retries": 1})
    with bot.services.bus.subscribe() as events:
        await queued_by_comment(bot, repo, 1)
        await wait_for(events, "validation.started", timeout=30, pr_number=None)
        os.kill(await process_running(marker), signal.SIGKILL)
        await until_idle(bot, events, timeout=60)
    assert [m["number"] for m in fake_github.merges] == [1]
    first, retry = await candidate_validations(bot, repo)
    assert (first.conclusion, retry.conclusion) == ("failure", "success")
    said = [c["body"] for c in fake_github.comments.values() if "noted as flaky" in c["body"]]
    assert len(said) == 1


async def test_auto_merge_queues_a_green_pr_whose_own_verdict_is_reused(bot, fake_github) -> None:
    repo = await queue_repo(bot.store, fake_github, prs={1: {"one.txt": "1\n"}}, validate=["true"])
    await bot.store.projects.update_project(repo.project.id, {"auto_merge_enabled": True})
    with bot.services.bus.subscribe() as events:
        await bot.deliver("pull_request", repo.pulls[1].payload("opened"), timeout=30)
        await until_idle(bot, events)
    assert [m["number"] for m in fake_github.merges] == [1]
    # up to date with main and alone: the candidate's tree is the one its own validation passed on
    assert await candidate_validations(bot, repo) == []
    run = queue_check_runs(fake_github, repo.pulls[1].head_sha)[-1]
    assert run["conclusion"] == "success"
    [sticky] = [c["body"] for c in fake_github.comments.values() if c["body"].startswith(COMMENT_MARKER)]
    assert "**Merge queue:** Merged into main" in sticky  # its one line about the queue


async def test_closing_a_queued_pr_takes_it_out_saying_so(bot, fake_github) -> None:
    repo = await queue_repo(bot.store, fake_github, prs={1: {"one.txt": "1\n"}}, validate=[SLOW_CANDIDATE])
    with bot.services.bus.subscribe() as events:
        await bot.deliver("issue_comment", repo.comment(1, "/queue"), timeout=30)
        await wait_for(events, "validation.started", timeout=30, pr_number=None)
        fake_github.pulls[(repo.full_name, 1)]["state"] = "closed"
        await bot.deliver("pull_request", repo.pulls[1].payload("closed"), timeout=30)
        await until_idle(bot, events)
    run = queue_check_runs(fake_github, repo.pulls[1].head_sha)[-1]
    assert run["conclusion"] == "neutral" and "it was closed" in run["output"]["summary"]
    assert [v.conclusion for v in await candidate_validations(bot, repo)] == ["cancelled"]
