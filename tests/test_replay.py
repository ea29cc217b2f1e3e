"""Replaying a stored delivery (issue 16, part 4): the pure decisions of pipeline/deliveries/replay.py, the
store's listing and queueing, and over real HTTP against the fake GitHub: a failed delivery replayed is
handled, a replayed `pull_request.opened` of a head already validated starts nothing new, who may replay
(the JSON API, the deliveries page, CSRF, the audit log), and `codegenapp deliveries list|replay` run as a
real process."""

from __future__ import annotations

import copy
import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.config import load_settings
from bot.crypto import Crypto
from bot.db import Database
from bot.delivery_cli import table
from bot.events import wait_for
from bot.models import (JOB_AGENT_RUN, JOB_DEAD, JOB_DONE, JOB_QUEUED, JOB_RUNNING, JOB_VALIDATE, JOB_WEBHOOK,
                        utcnow)
from bot.store import IncomingDelivery, InstallationRef, RepoRef, Store
from bot.store.deliveries import ListedDelivery
from handlers.commands import claim_holder, command_claim, command_done
from pipeline.deliveries.replay import (FAILED, HANDLED, QUEUED, RETRYING, RUNNING, UNHANDLED, delivery_state,
                                        pull_request_number, refusal, view_of)
from tests.agent_support import record_project as record_agent_project
from tests.api_support import api_token_for
from tests.check_run_support import CHECK_RUNS
from tests.cli_support import cli_env, codegenapp
from tests.conftest import WEBHOOK_SECRET
from tests.dashboard_support import csrf_of, start_dashboard
from tests.ghfixtures import load_webhook
from tests.pull_requests import INSTALLATION_ID, open_pull_request, record_project
from tests.webhook_sender import WebhookSender

PASSING = "validate:\n  - test -f app.py\n"


# ---- the decisions, without I/O ----------------------------------------------------------------------

@pytest.mark.parametrize(("status", "attempts", "error", "state"), [
    (None, None, None, UNHANDLED), (JOB_DONE, 1, None, HANDLED), (JOB_DEAD, 5, "boom", FAILED),
    (JOB_RUNNING, 1, None, RUNNING), (JOB_QUEUED, 0, None, QUEUED), (JOB_QUEUED, 1, "boom", RETRYING),
    (JOB_QUEUED, 0, "GitHub unavailable", RETRYING)])
def test_a_delivery_reads_as_its_newest_job(status: str | None, attempts: int | None, error: str | None,
                                            state: str) -> None:
    assert delivery_state(status, attempts, error) == state


def test_the_pull_request_a_delivery_is_about() -> None:
    opened = load_webhook("pull_request", "opened")
    assert pull_request_number("pull_request", opened) == opened["number"] == 2
    suite = load_webhook("check_suite", "rerequested")
    assert pull_request_number("check_suite", suite) == suite["check_suite"]["pull_requests"][0]["number"]
    assert pull_request_number("check_run", load_webhook("check_run", "rerequested")) is None  # no PR listed
    issue = load_webhook("issue_comment", "created")
    assert pull_request_number("issue_comment", issue) is None  # a comment on an issue
    on_pr = copy.deepcopy(issue)
    on_pr["issue"]["pull_request"] = {"url": "https://api.github.com/repos/o/r/pulls/1"}
    assert pull_request_number("issue_comment", on_pr) == 1
    assert pull_request_number("installation", load_webhook("installation", "created")) is None
    assert pull_request_number("pull_request", {"number": "7", "pull_request": []}) is None  # not the shape


def _listed(payload: dict[str, Any], *, event: str = "pull_request", action: str | None = "opened",
            status: str | None = JOB_DONE, error: str | None = None, jobs: int = 1) -> ListedDelivery:
    return ListedDelivery(id="d-1", event=event, action=action, installation_id=INSTALLATION_ID,
                          received_at=utcnow(), source="webhook", payload=json.dumps(payload), job_id=9,
                          job_status=status, attempts=1, max_attempts=5, error=error, finished_at=None, jobs=jobs)


def test_a_delivery_as_a_person_reads_it() -> None:
    opened = load_webhook("pull_request", "opened")
    view = view_of(_listed(opened, status=JOB_DEAD, jobs=3,
                           error="Traceback (most recent call last):\n  ...\nLookupError: token=abc no such thing\n"),
                   redact=lambda text: text.replace("abc", "***"))
    assert (view.what, view.repository, view.pr_number, view.state_words) == (
        "Pull request opened", "Codertocat/Hello-World", 2, "Failed")
    assert view.error_summary == "LookupError: token=*** no such thing" and "abc" not in (view.error or "")
    assert view.replayed == 2 and view.source_words == "webhook"
    assert view_of(_listed(opened, error="an old try's error")).error is None  # handled: no error shown
    assert view_of(_listed({"zen": "x"}, event="installation", action="created")).repository is None
    assert view_of(_listed({}, status=None)).state_words == "Not handled"


def test_a_command_comment_is_claimed_by_its_id_and_body_and_held_by_its_job() -> None:
    claim = command_claim(2**63 - 1, "/agent do it")
    assert len(claim) <= 64 and claim == command_claim(2**63 - 1, "/agent do it")
    assert claim != command_claim(2**63 - 1, "/agent do it better")  # an edit's new body: a new claim
    done = command_done(2**63 - 1, "/agent do it")
    assert len(done) <= 64 and done != claim and done != command_done(2**63 - 1, "/agent do it better")
    assert claim_holder(41, "d-1") == "job:41" != claim_holder(42, "d-1")  # a replay is another job
    assert claim_holder(None, "d-1") == "delivery:d-1"


def test_a_delivery_being_handled_is_not_replayed_again_meanwhile() -> None:
    opened = load_webhook("pull_request", "opened")
    for status in (JOB_QUEUED, JOB_RUNNING):
        reason = refusal(view_of(_listed(opened, status=status)))
        assert reason is not None and "being handled already" in reason and "job 9" in reason
    for status in (JOB_DONE, JOB_DEAD, None):
        assert refusal(view_of(_listed(opened, status=status))) is None


def test_the_terminal_table_has_a_column_each_and_a_failed_ones_error_below_it() -> None:
    opened = load_webhook("pull_request", "opened")
    rows = table([view_of(_listed(opened, jobs=2)),
                  view_of(_listed({"installation": {"id": 1}}, event="installation", action="created",
                                  status=JOB_DEAD, error="PermanentError: no `installation.account`"))]).splitlines()
    assert rows[0].split() == ["ID", "RECEIVED", "(UTC)", "EVENT", "REPOSITORY", "PR", "STATUS", "SOURCE"]
    assert "Pull request opened" in rows[1] and "Codertocat/Hello-World" in rows[1] and "#2" in rows[1]
    assert "Handled (replayed 1x)" in rows[1] and rows[1].rstrip().endswith("webhook")
    assert "Installation created" in rows[2] and "Failed" in rows[2]
    assert rows[3] == "    error: PermanentError: no `installation.account`"
    assert rows[1].index("Pull request") == rows[0].index("EVENT")  # the columns line up


# ---- the store ---------------------------------------------------------------------------------------

def _payload(repo_id: int, full_name: str, number: int) -> str:
    return json.dumps({"action": "opened", "number": number, "pull_request": {"number": number},
                       "repository": {"id": repo_id, "full_name": full_name}, "installation": {"id": 1}})


async def _stored(store: Store, delivery_id: str, payload: str, *, event: str = "pull_request",
                  action: str | None = "opened") -> None:
    stored = await store.deliveries.store(IncomingDelivery(id=delivery_id, event=event, action=action,
                                                           installation_id=1, payload=payload,
                                                           job_kind=JOB_WEBHOOK, max_attempts=1))
    assert not stored.duplicate


async def finish_jobs(store: Store, *, fail: set[str], error: str = "boom\nRuntimeError: it broke") -> None:
    """Claim every queued webhook job: those of deliveries in `fail` die with `error`, the others are done."""
    for job in await store.jobs.claim("test", limit=100, lease_seconds=60, kinds=frozenset({JOB_WEBHOOK})):
        if job.delivery_id in fail:
            assert await store.jobs.fail("test", job.id, error=error, retry_at=None)
        else:
            assert await store.jobs.complete_many("test", [job.id]) == {job.id}


async def test_listing_a_repositorys_deliveries_and_queueing_one_again(store: Store) -> None:
    await _stored(store, "a-1", _payload(77, "octo/widgets", 1))
    await _stored(store, "b-1", _payload(88, "octo/gadgets", 2))
    await _stored(store, "a-2", _payload(77, "octo/widgets", 3))
    await _stored(store, "i-1", json.dumps({"action": "created", "installation": {"id": 1}}), event="installation",
                  action="created")
    await finish_jobs(store, fail={"a-2"})

    widgets = await store.deliveries.listing(repository_id=77)
    assert [(d.id, d.job_status) for d in widgets] == [("a-2", JOB_DEAD), ("a-1", JOB_DONE)]  # newest first
    assert widgets[0].error == "boom\nRuntimeError: it broke" and widgets[0].jobs == 1
    assert [d.id for d in await store.deliveries.listing(repository_id=77, failed=True)] == ["a-2"]
    assert [d.id for d in await store.deliveries.listing()] == ["i-1", "a-2", "b-1", "a-1"]
    assert [d.id for d in await store.deliveries.listing(limit=2, offset=1)] == ["a-2", "b-1"]

    job_id, pending = await store.deliveries.queue_again("a-2", max_attempts=4)
    assert job_id is not None and pending is None
    job = await store.jobs.get(job_id)
    assert (job.kind, job.delivery_id, job.status, job.max_attempts) == (JOB_WEBHOOK, "a-2", JOB_QUEUED, 4)
    again = await store.deliveries.listed("a-2")
    assert again is not None and (again.job_id, again.job_status, again.jobs) == (job_id, JOB_QUEUED, 2)
    assert await store.deliveries.listing(repository_id=77, failed=True) == []  # its newest job is queued
    # while it is queued (or running), a second replay queues nothing
    assert await store.deliveries.queue_again("a-2", max_attempts=4) == (None, job_id)
    assert await store.deliveries.queue_again("nothing", max_attempts=4) == (None, None)
    await finish_jobs(store, fail=set())
    third, _ = await store.deliveries.queue_again("a-2", max_attempts=4)
    assert third is not None and third != job_id and (await store.deliveries.listed("a-2")).jobs == 3


async def test_beginning_again_for_a_delivery_whose_validation_ended_starts_nothing(store: Store) -> None:
    """What makes a replayed `pull_request.opened` idempotent in the store: `begin` for the same delivery
    (its id is the claimer) after the validation it began has ended joins nothing, records nothing and
    ends nothing; a restart (Re-run, /validate) validates again."""
    await store.projects.upsert_installation(InstallationRef(id=1, account_login="octo"))
    await store.projects.upsert_projects(1, [RepoRef(77, "octo/widgets")])
    project = await store.projects.get_project_by_repo_id(77)

    async def begin(**more: Any) -> Any:
        values = dict(project_id=project.id, pr_number=1, head_sha="a" * 40, restart=False, base_sha="b" * 40,
                      is_fork=False, author="octocat", trigger="pull_request.opened", claimer="delivery-1")
        return await store.validations.begin(**{**values, **more})

    first = await begin()
    assert first.claimed and first.recorded
    assert await store.validations.start(first.validation.id)
    assert await store.validations.complete(first.validation.id, conclusion="failure", title="1 failed", results={})
    again = await begin()
    assert (again.validation.id, again.claimed, again.recorded, again.ended) == (first.validation.id, False, False, [])
    restarted = await begin(restart=True, claimer="rerun-1")  # a Re-run draws a claimer of its own
    assert restarted.recorded and restarted.validation.id != first.validation.id


# ---- over real HTTP ----------------------------------------------------------------------------------

async def _deliver(bot: Any, event: str, payload: dict[str, Any], *, timeout: float = 30) -> str:
    """Send a delivery and wait until its job has finished; its id."""
    with bot.services.bus.subscribe() as events:
        answer = await bot.webhooks.send(event, payload)
        assert answer.status == 202, answer
        await wait_for(events, "job.finished", timeout=timeout, delivery_id=answer.body["delivery"])
    return str(answer.body["delivery"])


async def _replay_over_api(bot: Any, delivery_id: str, token: str) -> tuple[int, Any]:
    async with bot.webhooks.session.post(f"{bot.url}/api/v1/deliveries/{delivery_id}/replay",
                                         headers={"Authorization": f"Bearer {token}"}) as response:
        return response.status, await response.json()


def _head_check_runs(fake: Any, head_sha: str) -> list[dict[str, Any]]:
    return [run for run in fake.check_runs.values() if run["head_sha"] == head_sha]


@pytest.mark.slow
async def test_a_failed_delivery_replayed_is_handled(start_bot, fake_github) -> None:
    bot = await start_bot(JOB_MAX_ATTEMPTS="1")
    scenario = open_pull_request(fake_github, config=PASSING)
    project = await record_project(bot.store, scenario)
    admin = await api_token_for(bot.store, fake_github, "alice", role="admin")
    fake_github.fail_next("POST", CHECK_RUNS, status=422)  # GitHub refuses the check run: the job dies
    delivery_id = await _deliver(bot, "pull_request", scenario.payload("opened"))
    [failed] = await bot.services.replays.page(repository_id=project.github_repo_id, failed=True)
    assert (failed.id, failed.state_words, failed.pr_number) == (delivery_id, "Failed", scenario.number)
    assert failed.error_summary and not _head_check_runs(fake_github, scenario.head_sha)

    with bot.services.bus.subscribe() as events:
        status, answer = await _replay_over_api(bot, delivery_id, admin)
        assert status == 202, answer
        assert answer == {"delivery_id": delivery_id, "job_id": answer["job_id"], "status": "queued",
                          "event": "pull_request", "action": "opened", "repository": "acme/widgets",
                          "pr_number": scenario.number}
        finished = await wait_for(events, "job.finished", timeout=30, job_id=answer["job_id"])
        assert finished.data["outcome"] == "done"
        done = await wait_for(events, "validation.completed", timeout=60, head_sha=scenario.head_sha)
    [run] = _head_check_runs(fake_github, scenario.head_sha)
    assert run["conclusion"] == "success" and run["external_id"] == done.data["validation_id"]
    handled = await bot.services.replays.get(delivery_id)
    assert handled is not None and (handled.state, handled.jobs, handled.error) == (HANDLED, 2, None)
    [event] = [e for e in await bot.store.audit.list(project_id=project.id) if e.action == "delivery.replayed"]
    assert (event.actor, event.delivery_id, event.details["job_id"], event.details["pr"]) == (
        "alice", delivery_id, answer["job_id"], scenario.number)


@pytest.mark.slow
async def test_a_replayed_opened_of_a_validated_head_starts_nothing_new(bot, fake_github) -> None:
    scenario = open_pull_request(fake_github, config=PASSING)
    project = await record_project(bot.store, scenario)
    admin = await api_token_for(bot.store, fake_github, "alice", role="admin")
    with bot.services.bus.subscribe() as events:
        answer = await bot.webhooks.send("pull_request", scenario.payload("opened"))
        assert answer.status == 202
        await wait_for(events, "validation.completed", timeout=60, head_sha=scenario.head_sha)
        await wait_for(events, "job.finished", timeout=30, kind="validate")
    delivery_id = answer.body["delivery"]
    [run] = _head_check_runs(fake_github, scenario.head_sha)
    before = len(fake_github.calls)

    with bot.services.bus.subscribe() as events:
        status, replayed = await _replay_over_api(bot, delivery_id, admin)
        assert status == 202, replayed
        finished = await wait_for(events, "job.finished", timeout=30, job_id=replayed["job_id"])
    assert finished.data["outcome"] == "done"
    assert _head_check_runs(fake_github, scenario.head_sha) == [run]  # exactly one check run, unchanged
    assert not [c for c in fake_github.calls[before:] if c.method != "GET" and "access_tokens" not in c.path], \
        "the replay wrote to GitHub"
    assert len(await bot.store.validations.for_pr(project.id, scenario.number)) == 1
    assert (await bot.services.replays.get(delivery_id)).jobs == 2


async def _replay_and_wait(bot: Any, delivery_id: str) -> None:
    """The operator's replay (`codegenapp deliveries replay`), until its job has finished."""
    with bot.services.bus.subscribe() as events:
        replayed = await bot.services.replays.replay(delivery_id, actor="cli")
        finished = await wait_for(events, "job.finished", timeout=30, job_id=replayed.job_id)
    assert finished.data["outcome"] == "done"


def _app_replies(fake: Any, number: int) -> list[str]:
    return [c["body"] for _, c in sorted(fake.comments.items())
            if c["user"]["type"] == "Bot" and c["issue_url"].endswith(f"/issues/{number}")]


def _reactions(fake: Any, comment_id: int) -> list[str]:
    return [r["content"] for r in fake.reactions if r["comment_id"] == comment_id]


async def _nothing(job: Any) -> None:
    return None


async def test_a_replayed_agent_comment_starts_no_second_run_and_says_nothing(start_bot, fake_github,
                                                                            monkeypatch) -> None:
    bot = await start_bot()
    monkeypatch.setitem(bot.services.worker.handlers, JOB_AGENT_RUN, _nothing)  # the run is not advanced here
    scenario = open_pull_request(fake_github, config=PASSING)
    fake_github.set_permission(scenario.full_name, "wes", "write")
    project = await record_agent_project(bot, fake_github, agent_backend="local", agent_command="true")
    payload = scenario.comment_payload("/agent make the tests faster", user="wes")
    delivery_id = await _deliver(bot, "issue_comment", payload)
    [run] = await bot.store.agent_runs.for_project(project.id)
    await bot.services.agent_runs.cancel(run.id, by="wes")  # the run is over: a new /agent would start one
    replies, reactions = _app_replies(fake_github, scenario.number), _reactions(fake_github, payload["comment"]["id"])
    assert any("started" in reply for reply in replies) and reactions == ["eyes", "+1"]

    await _replay_and_wait(bot, delivery_id)
    assert [r.id for r in await bot.store.agent_runs.for_project(project.id)] == [run.id]
    assert _app_replies(fake_github, scenario.number) == replies
    assert _reactions(fake_github, payload["comment"]["id"]) == reactions
    assert (await bot.services.replays.get(delivery_id)).jobs == 2  # it was handled again: its commands not
    assert [e.action for e in await bot.store.audit.list(project_id=project.id)].count("command.agent") == 1


async def test_a_replayed_validate_comment_starts_nothing_new(start_bot, fake_github, monkeypatch) -> None:
    bot = await start_bot()
    monkeypatch.setitem(bot.services.worker.handlers, JOB_VALIDATE, _nothing)  # started, never run
    scenario = open_pull_request(fake_github, config=PASSING)
    fake_github.set_permission(scenario.full_name, "wes", "write")
    project = await record_project(bot.store, scenario)
    payload = scenario.comment_payload("/validate", user="wes")
    delivery_id = await _deliver(bot, "issue_comment", payload)
    [validation] = await bot.store.validations.for_pr(project.id, scenario.number)
    assert validation.trigger == "command.validate"
    runs, calls = _head_check_runs(fake_github, scenario.head_sha), len(fake_github.calls)

    await _replay_and_wait(bot, delivery_id)
    assert [v.id for v in await bot.store.validations.for_pr(project.id, scenario.number)] == [validation.id]
    assert _head_check_runs(fake_github, scenario.head_sha) == runs
    assert not [c for c in fake_github.calls[calls:] if c.method != "GET" and "access_tokens" not in c.path], \
        "the replay wrote to GitHub"


async def test_a_command_whose_job_died_runs_when_its_delivery_is_replayed(start_bot, fake_github,
                                                                          monkeypatch) -> None:
    """The comment's claim is the handling job's only while it handles it: a job that dies (here GitHub refuses
    its 👀) leaves the command to the replay, which runs it."""
    bot = await start_bot(JOB_MAX_ATTEMPTS="1")
    monkeypatch.setitem(bot.services.worker.handlers, JOB_VALIDATE, _nothing)  # started, never run
    scenario = open_pull_request(fake_github, config=PASSING)
    fake_github.set_permission(scenario.full_name, "wes", "write")
    project = await record_project(bot.store, scenario)
    payload = scenario.comment_payload("/validate", user="wes")
    fake_github.fail_next("POST", "/repos/*/*/issues/comments/*/reactions", status=422)
    delivery_id = await _deliver(bot, "issue_comment", payload)
    assert (await bot.services.replays.get(delivery_id)).state == FAILED
    assert await bot.store.validations.for_pr(project.id, scenario.number) == []

    await _replay_and_wait(bot, delivery_id)
    [validation] = await bot.store.validations.for_pr(project.id, scenario.number)
    assert validation.trigger == "command.validate"
    assert _reactions(fake_github, payload["comment"]["id"]) == ["eyes", "+1"]
    await _replay_and_wait(bot, delivery_id)  # handled now: a second replay runs it no more
    assert len(await bot.store.validations.for_pr(project.id, scenario.number)) == 1
    assert _reactions(fake_github, payload["comment"]["id"]) == ["eyes", "+1"]


async def test_who_may_replay_over_the_api(start_bot, fake_github) -> None:
    bot = await start_bot()
    await bot.services.worker.stop()  # the jobs stay as they are: this is about who may queue one
    scenario = open_pull_request(fake_github, config=PASSING)
    project = await record_project(bot.store, scenario)
    answer = await bot.webhooks.send("pull_request", scenario.payload("opened"))
    assert answer.status == 202
    delivery_id = answer.body["delivery"]
    await finish_jobs(bot.store, fail={delivery_id})
    tokens = {role: await api_token_for(bot.store, fake_github, f"user-{role}", role=role)
              for role in ("read", "write", "maintain", "admin")}
    fake_github.add_installation(99, "olga", repos=["other"])
    outsider = await api_token_for(bot.store, fake_github, "olga", role="admin", full_name="olga/other",
                                   installation_ids=[99])
    for role in ("read", "write", "maintain"):  # issue 16: "for an admin of its repository or the operator"
        status, refused = await _replay_over_api(bot, delivery_id, tokens[role])
        assert status == 403 and refused["error"].endswith("needs admin on the repository"), (role, refused)
    for token in (outsider, tokens["admin"]):
        assert (await _replay_over_api(bot, "no-such-delivery", token))[0] == 404
    assert (await _replay_over_api(bot, delivery_id, outsider))[0] == 404  # a repository they cannot see
    status, replayed = await _replay_over_api(bot, delivery_id, tokens["admin"])
    assert status == 202 and replayed["status"] == "queued"
    status, refused = await _replay_over_api(bot, delivery_id, tokens["admin"])  # its job is still queued
    assert status == 409 and "being handled already" in refused["error"]
    async with bot.webhooks.session.post(f"{bot.url}/api/v1/deliveries/{delivery_id}/replay") as response:
        assert response.status == 401
    audit = [(e.action, e.actor) for e in await bot.store.audit.list(project_id=project.id)]
    assert audit.count(("delivery.replayed", "user-admin")) == 1 and len(
        [a for a in audit if a[0] == "delivery.replayed"]) == 1


async def test_the_deliveries_page_is_for_admins_and_its_replay_needs_the_csrf_token(
        fake_github, aiohttp_server, make_settings) -> None:
    dash = await start_dashboard(fake_github, aiohttp_server, make_settings, with_worker=False)
    scenario = open_pull_request(fake_github, config=PASSING)
    project = await record_project(dash.services.store, scenario)
    async with aiohttp.ClientSession() as plain:
        sent = await WebhookSender(plain, dash.url, WEBHOOK_SECRET).send("pull_request", scenario.payload("opened"))
        assert sent.status == 202
    delivery_id = sent.body["delivery"]
    await finish_jobs(dash.services.store, fail={delivery_id})
    page = f"{dash.url}/projects/acme/widgets/deliveries"
    replay = f"{page}/{delivery_id}/replay"

    for role in ("read", "write", "maintain"):
        fake_github.set_permission("acme/widgets", f"user-{role}", role)
        async with await dash.login(f"user-{role}", installation_ids=[INSTALLATION_ID]) as session:
            async with session.get(page) as response:
                assert response.status == 403 and "need admin on the repository" in await response.text()
            async with session.get(f"{dash.url}/projects/acme/widgets") as response:
                assert 'href="/projects/acme/widgets/deliveries"' not in await response.text()
            token = await csrf_of(session, f"{dash.url}/account")
            async with session.post(replay, data={"csrf_token": token}, allow_redirects=False) as response:
                assert response.status == 403

    fake_github.set_permission("acme/widgets", "alice", "admin")
    async with await dash.login("alice", installation_ids=[INSTALLATION_ID]) as session:
        async with session.get(f"{dash.url}/projects/acme/widgets") as response:
            assert 'href="/projects/acme/widgets/deliveries"' in await response.text()
        async with session.get(page + "?failed=1") as response:
            html = await response.text()
            assert response.status == 200
            assert f'data-delivery="{delivery_id}" data-state="failed"' in html and "Pull request opened" in html
            assert '<p class="delivery-error">it broke</p>' in html and f"#{scenario.number}" in html
            assert "boom" not in html and "RuntimeError" not in html  # no traceback, no exception class
        async with session.post(replay, data={}, allow_redirects=False) as response:
            assert response.status == 403 and "CSRF" in await response.text()
        assert (await dash.services.store.deliveries.listed(delivery_id)).jobs == 1  # nothing queued
        token = await csrf_of(session, page)
        async with session.post(replay, data={"csrf_token": token}, allow_redirects=False) as response:
            assert response.status == 303
            assert response.headers["Location"] == f"/projects/acme/widgets/deliveries?replayed={delivery_id}"
        async with session.get(page + f"?replayed={delivery_id}") as response:
            html = await response.text()
            assert "Replaying pull request opened" in html and 'data-state="queued"' in html
            assert "being handled" in html
        async with session.post(replay, data={"csrf_token": token}) as response:  # its job is queued still
            assert response.status == 409 and "being handled already" in await response.text()
        async with session.post(f"{page}/no-such-delivery/replay", data={"csrf_token": token}) as response:
            assert response.status == 404
        async with session.get(f"{dash.url}/projects/acme/widgets/audit") as response:
            text = " ".join(re.sub(r"<[^>]+>", "", await response.text()).split())
            assert f"@alice replayed a delivery (pull request opened) on #{scenario.number}: it is handled again" in text
    [event] = [e for e in await dash.services.store.audit.list(project_id=project.id)
               if e.action == "delivery.replayed"]
    assert (event.actor, event.delivery_id) == ("alice", delivery_id)


# ---- the command line --------------------------------------------------------------------------------

async def _cli_store(env: dict[str, str]) -> Store:
    settings = load_settings(env, dotenv_path=None)
    return Store(Database(settings.database_url), Crypto(settings.encryption_key))


@pytest.mark.slow  # ten runs of the command, ~1 s each (several where the machine is busy)
async def test_the_operator_lists_and_replays_from_the_command_line(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    assert codegenapp("migrate", env=env).returncode == 0
    assert codegenapp("deliveries", "list", env=env).stdout == "no deliveries stored yet\n"
    store = await _cli_store(env)
    try:
        await store.projects.upsert_installation(InstallationRef(id=1, account_login="octo"))
        await store.projects.upsert_projects(1, [RepoRef(77, "octo/widgets"), RepoRef(88, "octo/gadgets")])
        await _stored(store, "7a1c0a3e-0000-4000-8000-000000000001", _payload(77, "octo/widgets", 12))
        await _stored(store, "7a1c0a3e-0000-4000-8000-000000000002", _payload(88, "octo/gadgets", 3))
        await finish_jobs(store, fail={"7a1c0a3e-0000-4000-8000-000000000001"})
    finally:
        await store.close()
    failed_id = "7a1c0a3e-0000-4000-8000-000000000001"

    listing = codegenapp("deliveries", "list", env=env)
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[0].split() == ["ID", "RECEIVED", "(UTC)", "EVENT", "REPOSITORY", "PR", "STATUS", "SOURCE"]
    assert "octo/gadgets" in lines[1] and "Handled" in lines[1]
    assert failed_id in lines[2] and "Pull request opened" in lines[2] and "#12" in lines[2] and "Failed" in lines[2]
    assert lines[3] == "    error: RuntimeError: it broke"
    only_failed = codegenapp("deliveries", "list", "--failed", "--repo", "octo/widgets", "--limit", "5", env=env)
    assert [line.split()[0] for line in only_failed.stdout.splitlines()[1:] if not line.startswith(" ")] == [failed_id]
    assert "no failed deliveries" in codegenapp("deliveries", "list", "--failed", "--repo", "octo/gadgets",
                                                env=env).stdout
    unknown_repo = codegenapp("deliveries", "list", "--repo", "octo/nothing", env=env)
    assert unknown_repo.returncode == 1 and "no project for octo/nothing" in unknown_repo.stderr
    assert codegenapp("deliveries", "list", "--limit", "0", env=env).returncode == 2

    replayed = codegenapp("deliveries", "replay", failed_id, env=env)
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout.startswith("queued job ") and f"delivery {failed_id} again: Pull request opened " \
                                                         "(octo/widgets, #12)" in replayed.stdout
    job_id = int(replayed.stdout.split()[2])
    again = codegenapp("deliveries", "replay", failed_id, env=env)
    assert again.returncode == 1 and f"being handled already (queued, job {job_id})" in again.stderr
    missing = codegenapp("deliveries", "replay", "no-such-delivery", env=env)
    assert missing.returncode == 1 and "no stored delivery no-such-delivery" in missing.stderr

    store = await _cli_store(env)
    try:
        job = await store.jobs.get(job_id)
        assert (job.kind, job.delivery_id, job.status) == (JOB_WEBHOOK, failed_id, JOB_QUEUED)
        assert job.created_at > utcnow() - timedelta(minutes=5)
        project = await store.projects.get_project_by_name("octo/widgets")
        [event] = [e for e in await store.audit.list(project_id=project.id) if e.action == "delivery.replayed"]
        assert (event.actor, event.delivery_id, event.details["job_id"]) == ("cli", failed_id, job_id)
    finally:
        await store.close()
    listing = codegenapp("deliveries", "list", "--repo", "octo/widgets", env=env)
    assert "Queued (replayed 1x)" in listing.stdout
