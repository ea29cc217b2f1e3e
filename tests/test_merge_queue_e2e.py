"""The app's own merge queue, end to end over real HTTP and real git against the fake GitHub: `/queue`
builds candidates in the app's mirror, validates them in the sandbox without a check run on GitHub, lands
what passed with sha-pinned merges, and ejects the PR that breaks the base together with the ones ahead."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid

import pytest

from bot import migrate
from bot.db import Database
from bot.events import wait_for
from bot.models import SUBJECT_QUEUE_CANDIDATE
from pipeline.merge_queue.rebuild import landing_key
from pipeline.merge_queue.service import BROKEN_BACKOFF_MAX_SECONDS, MergeQueueService
from pipeline.report.comment import COMMENT_MARKER
from pipeline.sandbox.sandbox import SandboxUnavailable
from tests.merge_queue_support import (MAINTAINER, comments_saying, mirror_tree, process_running, queue_check_runs,
                                       queue_repo, stored_queue, until_idle, until_stored_idle)
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
        await until_idle(bot, events, repo)

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
    assert ejected["details_url"].endswith(f"/projects/{repo.full_name}/queue")  # the queue's page
    said = comments_saying(fake_github, "Ejected from the merge queue")
    assert len(said) == 1 and "#1" in said[0]
    for number in (1, 3):
        run = queue_check_runs(fake_github, repo.pulls[number].head_sha)[-1]
        assert (run["status"], run["conclusion"]) == ("completed", "success"), run["output"]
        assert f"#{number}" not in run["output"]["summary"]  # "tested it together with" the others only
    queue = await stored_queue(bot, repo)
    assert queue.entries == () and queue.candidates == ()


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
        await until_idle(bot, events, repo)
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
        await until_idle(bot, events, repo)
    assert fake_github.merges == []
    run = queue_check_runs(fake_github, queued_head)[-1]
    assert (run["status"], run["conclusion"]) == ("completed", "neutral")
    assert "a new commit" in run["output"]["summary"]
    said = comments_saying(fake_github, "Taken out of the merge queue")
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
        await until_idle(bot, events, repo)
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
        await until_idle(bot, events, repo)
    [candidate] = await candidate_validations(bot, repo)
    assert candidate.conclusion == "success", candidate.test_results
    [note] = [n for n in candidate.test_results["notes"] if "without the project's secrets" in n]
    assert "#1 comes from a fork" in note
    assert [m["number"] for m in fake_github.merges] == [1]


NO_SECRET = ['test -z "$API_TOKEN" || { echo got the secret; exit 1; }']


async def test_a_same_repo_pr_tested_with_a_fork_pr_ahead_of_it_gets_no_secrets_either(bot, fake_github) -> None:
    repo = await queue_repo(bot.store, fake_github, prs={1: {"one.txt": "1\n"}, 2: {"two.txt": "2\n"}},
                            forks=frozenset({1}), validate=NO_SECRET)
    await bot.store.projects.set_secret(repo.project.id, "API_TOKEN", "tok-queue-secret-456")
    landing = fake_github.hold_next("PUT", "/repos/*/*/pulls/1/merge")  # #1 lands only once #2 is queued behind it
    with bot.services.bus.subscribe() as events:
        await queued_by_comment(bot, repo, 1, 2)
        await asyncio.wait_for(landing.arrived.wait(), 60)
        landing.release()
        await until_idle(bot, events, repo)
    assert [m["number"] for m in fake_github.merges] == [1, 2]
    candidates = await candidate_validations(bot, repo)
    assert [v.conclusion for v in candidates] == ["success", "success"], [v.test_results for v in candidates]
    [second] = [v for v in candidates if v.pr_number == 2]  # #2 merged on top of the fork's #1
    [note] = [n for n in second.test_results["notes"] if "without the project's secrets" in n]
    assert "#1 comes from a fork" in note


async def test_queue_is_refused_when_github_would_refuse_the_merge_after_testing(bot, fake_github) -> None:
    repo = await queue_repo(bot.store, fake_github, prs={1: {"one.txt": "1\n"}, 2: {"two.txt": "2\n"}},
                            validate=["true"])
    fake_github.set_branch_protection(repo.full_name, "main", {"required_status_checks": None})
    # the app may not read the protection (no Administration permission); GitHub says the PR is blocked
    fake_github.fail_next("GET", "/repos/*/*/branches/*/protection", status=403, times=2,
                          body={"message": "Resource not accessible by integration"})
    fake_github.pulls[(repo.full_name, 1)]["mergeable_state"] = "blocked"
    await bot.deliver("issue_comment", repo.comment(1, "/queue"), timeout=30)
    fake_github.repos[repo.full_name]["allow_merge_commit"] = False  # squash only, say
    await bot.deliver("issue_comment", repo.comment(2, "/queue"), timeout=30)
    replies = [c["body"] for c in fake_github.comments.values() if "Not queued" in c["body"]]
    assert len(replies) == 2, replies
    assert "GitHub says branch protection blocks merging it (the app cannot read" in replies[0]
    assert "does not allow merge commits" in replies[1]
    assert await bot.store.merge_queues.load(repo.project.id, "main") is None


async def test_fix_with_agent_on_an_ejected_pr_tells_the_agent_what_failed_and_with_what(bot, fake_github) -> None:
    repo = await queue_repo(bot.store, fake_github, prs={1: {"one.txt": "1\n"}, 2: {"two.txt": "2\n"}},
                            validate=NOT_BOTH)
    await bot.store.projects.update_project(repo.project.id, {"agent_backend": "local", "agent_command": "true"})
    with bot.services.bus.subscribe() as events:
        await queued_by_comment(bot, repo, 1, 2)
        await until_idle(bot, events, repo)
    ejected = queue_check_runs(fake_github, repo.pulls[2].head_sha)[-1]
    assert [a["identifier"] for a in ejected["actions"]] == ["fix"]
    click = repo.pulls[2].requested_action_payload(ejected, "fix", user=MAINTAINER)
    await bot.deliver("check_run", click, timeout=30)
    [run] = await bot.store.agent_runs.for_project(repo.project.id)
    await bot.services.agent_runs.cancel(run.id, by=MAINTAINER)
    # its own validation passed: the goal carries the failing step, the PR merged ahead and the output's tail
    assert run.origin_pr_number == 2 and "taken out of the merge queue" in run.target_text
    assert "failed with #1 merged ahead of it" in run.target_text
    assert "one and two break it together" in run.target_text


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
        await until_idle(bot, events, repo)
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
        await until_idle(bot, events, repo)
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
        await until_idle(bot, events, repo)
    assert [m["number"] for m in fake_github.merges] == [1]
    said = [c["body"] for c in fake_github.comments.values() if "refused the push" in c["body"]]
    assert len(said) == 1 and "merging it with the `merge` method instead" in said[0]


async def test_dequeue_by_command_and_by_button(bot, fake_github) -> None:
    repo = await queue_repo(bot.store, fake_github, prs={1: {"one.txt": "1\n"}, 2: {"two.txt": "2\n"}},
                            validate=[SLOW_CANDIDATE])
    with bot.services.bus.subscribe() as events:
        await queued_by_comment(bot, repo, 1, 2)
        await wait_for(events, "validation.started", timeout=30, pr_number=None)  # a candidate is under test
        await bot.deliver("issue_comment", repo.comment(1, "/dequeue"), timeout=30)
        await fake_github.wait_until(lambda: queue_check_runs(fake_github, repo.pulls[2].head_sha), timeout=30)
        [run] = queue_check_runs(fake_github, repo.pulls[2].head_sha)
        assert [a["identifier"] for a in run["actions"]] == ["dequeue"]
        click = repo.pulls[2].requested_action_payload(run, "dequeue", user=MAINTAINER)
        await bot.deliver("check_run", click, timeout=30)
        await until_idle(bot, events, repo)
    assert fake_github.merges == []
    for number, who in ((1, MAINTAINER), (2, MAINTAINER)):
        run = queue_check_runs(fake_github, repo.pulls[number].head_sha)[-1]
        assert run["conclusion"] == "neutral" and f"dequeued by @{who}" in run["output"]["summary"]
    candidates = await candidate_validations(bot, repo)
    assert candidates and all(v.conclusion == "cancelled" for v in candidates)
    [pressed] = [e for e in await bot.store.audit.list(project_id=repo.project.id)
                if e.action == "merge_queue.dequeued"]
    assert (pressed.actor, pressed.details["pr"], pressed.details["source"]) == (MAINTAINER, 2, "button")


async def test_a_step_that_fails_once_then_passes_is_noted_flaky_not_ejected(bot, fake_github) -> None:
    marker = f"sleep 3.{uuid.uuid4().int % 10**6:06d}"  # unique: the test kills the first run's, by its pid
    repo = await queue_repo(bot.store, fake_github, prs={1: {"one.txt": "1\n"}}, validate=[marker],
                            queue={"flaky_retries": 1})
    with bot.services.bus.subscribe() as events:
        await queued_by_comment(bot, repo, 1)
        await wait_for(events, "validation.started", timeout=30, pr_number=None)
        os.kill(await process_running(marker), signal.SIGKILL)
        await until_idle(bot, events, repo, timeout=60)
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
        await until_idle(bot, events, repo)
    assert [m["number"] for m in fake_github.merges] == [1]
    # up to date with main and alone: the candidate's tree is the one its own validation passed on
    assert await candidate_validations(bot, repo) == []
    run = queue_check_runs(fake_github, repo.pulls[1].head_sha)[-1]
    assert run["conclusion"] == "success"
    [sticky] = [c["body"] for c in fake_github.comments.values() if c["body"].startswith(COMMENT_MARKER)]
    assert "**Merge queue:** Merged into main" in sticky  # its one line about the queue


async def test_after_a_restart_the_check_run_found_again_says_where_the_pr_is_now(bot, fake_github) -> None:
    repo = await queue_repo(bot.store, fake_github, prs={1: {"one.txt": "1\n"}}, validate=[SLOW_CANDIDATE])
    with bot.services.bus.subscribe() as events:
        await bot.deliver("issue_comment", repo.comment(1, "/queue"), timeout=30)
        await wait_for(events, "validation.started", timeout=30, pr_number=None)
        [run] = queue_check_runs(fake_github, repo.pulls[1].head_sha)
        run["output"]["title"] = "what a process killed since had said"
        bot.services.merge_queues._shown.clear()  # a new process knows none of the check runs it shows
        await bot.services.merge_queues.kick(repo.project.id, "main", "restarted")
        await fake_github.wait_until(lambda: run["output"]["title"] == "1st in line for main: being tested",
                                     timeout=30)
        await bot.services.merge_queues.dequeue(repo.project, 1, reason="done")
        await until_idle(bot, events, repo)


async def test_closing_a_queued_pr_takes_it_out_saying_so(bot, fake_github) -> None:
    repo = await queue_repo(bot.store, fake_github, prs={1: {"one.txt": "1\n"}}, validate=[SLOW_CANDIDATE])
    with bot.services.bus.subscribe() as events:
        await bot.deliver("issue_comment", repo.comment(1, "/queue"), timeout=30)
        await wait_for(events, "validation.started", timeout=30, pr_number=None)
        fake_github.pulls[(repo.full_name, 1)]["state"] = "closed"
        await bot.deliver("pull_request", repo.pulls[1].payload("closed"), timeout=30)
        await until_idle(bot, events, repo)
    run = queue_check_runs(fake_github, repo.pulls[1].head_sha)[-1]
    assert run["conclusion"] == "neutral" and "it was closed" in run["output"]["summary"]
    assert [v.conclusion for v in await candidate_validations(bot, repo)] == ["cancelled"]


@pytest.mark.postgres
async def test_two_processes_never_land_one_candidate_twice(start_bot, fake_github, postgres_cluster) -> None:
    # a second service (another worker process's) on the same database while the first one's merge is in flight
    database_url = postgres_cluster.create_database()
    db = Database(database_url)
    await migrate.upgrade(db)
    await db.dispose()
    bot = await start_bot(DATABASE_URL=database_url)
    repo = await queue_repo(bot.store, fake_github, prs={1: {"one.txt": "1\n"}}, validate=["true"])
    first = bot.services.merge_queues
    second = MergeQueueService(bot.store, bot.services.github, bot.services.bus, bot.services.wakeup,
                               bot.services.validations, bot.services.merges, first.builder,
                               agent_configured=lambda project: False, public_url=first.public_url)
    landing = fake_github.hold_next("PUT", "/repos/*/*/pulls/1/merge", before_handling=True)
    with bot.services.bus.subscribe() as events:
        await queued_by_comment(bot, repo, 1)
        await asyncio.wait_for(landing.arrived.wait(), 60)
        # without the queue's lease its first round resumes the landing: it waits (behind the held PUT) to PUT again
        await asyncio.wait_for(second.run(repo.project.id, "main"), 15)
        landing.release()
        await until_idle(bot, events, repo)
    assert len(fake_github.calls_to("PUT", "/repos/*/*/pulls/1/merge")) == 1
    assert [m["number"] for m in fake_github.merges] == [1]
    run = queue_check_runs(fake_github, repo.pulls[1].head_sha)[-1]
    assert run["conclusion"] == "success", run["output"]


async def test_a_push_to_the_base_during_the_merge_is_reported_as_not_the_tested_tree(bot, fake_github) -> None:
    repo = await queue_repo(bot.store, fake_github, prs={1: {"one.txt": "1\n"}}, validate=["true"])
    landing = fake_github.hold_next("PUT", "/repos/*/*/pulls/1/merge", before_handling=True)
    with bot.services.bus.subscribe() as events:
        await queued_by_comment(bot, repo, 1)
        await asyncio.wait_for(landing.arrived.wait(), 60)  # the tree of main was checked: it is the tested one
        tip = repo.push_to_main({"other.txt": "someone else's\n"})
        landing.release()
        await until_idle(bot, events, repo)
    [merge] = fake_github.merges
    assert fake_github.git_repo(repo.full_name).commit_info(merge["sha"]).parents[0] == tip
    run = queue_check_runs(fake_github, repo.pulls[1].head_sha)[-1]
    assert run["conclusion"] == "neutral" and "not the tree tested" in run["output"]["title"], run["output"]
    said = [c["body"] for c in fake_github.comments.values() if "did not test" in c["body"]]
    assert len(said) == 1 and tip[:7] in said[0]
    audited = await bot.store.audit.list(project_id=repo.project.id)
    assert [a.details["pr"] for a in audited if a.action == "merge_queue.landed_untested"] == [1]


async def test_a_repository_with_nothing_to_validate_lands_its_queued_prs(bot, fake_github) -> None:
    repo = await queue_repo(bot.store, fake_github, prs={1: {"one.txt": "1\n"}}, validate=[])
    with bot.services.bus.subscribe() as events:
        await queued_by_comment(bot, repo, 1)
        await until_idle(bot, events, repo)
    assert [m["number"] for m in fake_github.merges] == [1]
    assert [v.conclusion for v in await candidate_validations(bot, repo)] == ["neutral"]


async def test_a_validation_that_could_not_run_keeps_the_pr_queued_and_is_tried_again(
        bot, fake_github, monkeypatch) -> None:
    repo = await queue_repo(bot.store, fake_github, prs={1: {"one.txt": "1\n"}}, validate=["true"])
    service = bot.services.merge_queues

    async def no_sandbox(*args, **kwargs):
        raise SandboxUnavailable("bubblewrap is gone")

    monkeypatch.setattr(bot.services.validations.runner, "run", no_sandbox)
    with bot.services.bus.subscribe() as events:
        await queued_by_comment(bot, repo, 1)
        await wait_for(events, "validation.completed", timeout=60, pr_number=None)
        saves = bot.store.merge_queues.save
        lost = []

        async def another_process_saved_first(*args, **kwargs):  # the round reads the queue again
            if not lost:
                lost.append(True)
                return False
            return await saves(*args, **kwargs)

        monkeypatch.setattr(bot.store.merge_queues, "save", another_process_saved_first)
        await asyncio.wait_for(service.run(repo.project.id, "main"), 30)  # the broken verdict is read
        assert lost
        queue = await stored_queue(bot, repo)
        assert [e.pr for e in queue.entries] == [1] and [c.status for c in queue.candidates] == ["testing"]
        [run] = queue_check_runs(fake_github, repo.pulls[1].head_sha)
        assert run["status"] != "completed"
        # the PR says why it waits, and when it is tried again; the audit log has it once
        assert "could not be tested: the sandbox is not available" in run["output"]["summary"], run["output"]
        assert "trying again in 1 min" in run["output"]["summary"]
        assert [e.action for e in await bot.store.audit.list(project_id=repo.project.id)
                if e.action.startswith("merge_queue.")] == ["merge_queue.could_not_test"]
        assert not [c for c in fake_github.comments.values() if "Ejected" in c["body"]]

        monkeypatch.undo()  # the sandbox is back; its backoff over, the candidate is built again
        monkeypatch.setattr(service, "clock", lambda: time.time() + BROKEN_BACKOFF_MAX_SECONDS)
        await service.kick(repo.project.id, "main", "test")
        await until_idle(bot, events, repo)
    assert [m["number"] for m in fake_github.merges] == [1]
    broken, passed = await candidate_validations(bot, repo)
    assert "sandbox is not available" in broken.test_results["error"] and passed.conclusion == "success"


@pytest.mark.parametrize("recorded", [False, True], ids=["nothing-recorded", "recorded-not-merged"])
async def test_a_landing_this_host_cannot_make_is_tested_again(bot, fake_github, monkeypatch, recorded: bool) -> None:
    from pipeline.merge_queue import decide, service as queue_service

    repo = await queue_repo(bot.store, fake_github, prs={1: {"one.txt": "1\n"}}, validate=["true"])
    restorer = bot.services.merge_queues.restorer
    monkeypatch.setattr(decide, "LAND_DEFER_SECONDS", 0)  # given up on at once, unless it may have begun
    monkeypatch.setattr(queue_service, "LAND_ELSEWHERE_RETRY_SECONDS", 0.2)
    if recorded:  # a landing of #1 recorded by a process killed before its merge: nothing merged, not begun
        assert await bot.store.merge_queues.claim_landing(repo.project.id, landing_key("main", 1), 1)
    tries: list[int] = []
    restore = restorer.restore

    async def not_on_this_host_at_first(full_name, queue, base_ref, candidate_id, sha, token):
        tries.append(candidate_id)  # as when the host that built it is gone and the rebuild here differs
        if len(tries) == 1:
            return f"{sha[:7]} is not in this host's mirror, and made again here it is another commit"
        return await restore(full_name, queue, base_ref, candidate_id, sha, token)

    monkeypatch.setattr(restorer, "restore", not_on_this_host_at_first)
    with bot.services.bus.subscribe() as events:
        await queued_by_comment(bot, repo, 1)
        await until_idle(bot, events, repo)
    assert tries == [1, 2]  # built again as candidate 2, which lands
    assert [m["number"] for m in fake_github.merges] == [1]
    assert [v.conclusion for v in await candidate_validations(bot, repo)] == ["success", "success"]
    assert queue_check_runs(fake_github, repo.pulls[1].head_sha)[-1]["conclusion"] == "success"


async def test_an_ejection_github_will_not_let_us_say_does_not_stall_the_prs_behind_it(bot, fake_github) -> None:
    repo = await queue_repo(bot.store, fake_github, prs={1: {"one.txt": "1\n"}, 2: {"two.txt": "2\n"}},
                            validate=["test ! -f one.txt"])
    fake_github.fail_always("POST", "/repos/acme/widgets/issues/1/comments", status=403)  # a locked PR
    with bot.services.bus.subscribe() as events:
        await queued_by_comment(bot, repo, 1, 2)
        await until_idle(bot, events, repo, 2, timeout=60)
    assert [m["number"] for m in fake_github.merges] == [2]
    queue = await stored_queue(bot, repo)
    assert queue.entries == () and queue.candidates == ()  # #1's ejection was given up on, not kept
    given_up = [e.details for e in await bot.store.audit.list(project_id=repo.project.id)
                if e.action == "merge_queue.announce_failed"]
    assert [(d["pr"], d["what"]) for d in given_up] == [(1, "eject")]


async def test_an_invalid_config_file_on_the_base_ejects_nobody_and_says_why(bot, fake_github) -> None:
    repo = await queue_repo(bot.store, fake_github, prs={1: {"one.txt": "1\n"}}, validate=["true"])
    broken = repo.push_to_main({".github/codegenapp.yml": "validate: [unclosed\n"})
    fake_github.set_file(repo.full_name, broken, ".github/codegenapp.yml", b"validate: [unclosed\n")
    with bot.services.bus.subscribe() as events:
        await queued_by_comment(bot, repo, 1)
        await wait_for(events, "validation.completed", timeout=60, pr_number=None)
        await asyncio.wait_for(bot.services.merge_queues.run(repo.project.id, "main"), 30)
    queue = await stored_queue(bot, repo)
    assert [(e.pr, e.state) for e in queue.entries] == [(1, "queued")]
    [run] = queue_check_runs(fake_github, repo.pulls[1].head_sha)
    assert run["status"] != "completed" and not comments_saying(fake_github, "Ejected")
    assert ".github/codegenapp.yml on the base is invalid" in run["output"]["summary"], run["output"]


async def test_a_queue_whose_wake_up_was_lost_goes_on_at_the_next_sweep(start_bot, fake_github) -> None:
    bot = await start_bot(MERGE_QUEUE_SWEEP_INTERVAL="1")
    bot.services.merge_queues._listener.cancel()  # the candidate's validation ends; no event advances the queue
    repo = await queue_repo(bot.store, fake_github, prs={1: {"one.txt": "1\n"}}, validate=["true"])
    with bot.services.bus.subscribe() as events:
        await queued_by_comment(bot, repo, 1)
        await until_idle(bot, events, timeout=30)
    assert [m["number"] for m in fake_github.merges] == [1]


async def test_a_fast_forward_refused_because_the_base_moved_is_tested_again_not_merged(bot, fake_github) -> None:
    repo = await queue_repo(bot.store, fake_github, prs={1: {"one.txt": "1\n"}}, validate=["sleep 1"],
                            queue={"method": "fast-forward"})
    with bot.services.bus.subscribe() as events:
        await queued_by_comment(bot, repo, 1)
        await wait_for(events, "validation.started", timeout=30, pr_number=None)
        # the same tree: the candidate still lands, but its commit no longer fast-forwards main
        tip = repo.push_to_main({"README.md": "# widgets\n"})
        assert repo.tree(tip) == repo.tree(repo.base_sha)
        await until_idle(bot, events, repo)
    assert fake_github.calls_to("PUT", "/repos/*/*/pulls/*/merge") == []
    assert not [c for c in fake_github.comments.values() if "method instead" in c["body"]]
    [landed] = repo.first_parents(tip)
    assert landed in {v.head_sha for v in await candidate_validations(bot, repo) if v.conclusion == "success"}
