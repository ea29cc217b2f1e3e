"""The merge queue's page (`/projects/{owner}/{repo}/queue`) and its JSON (`GET /api/v1/projects/{id}/queue`):
the view decided from a stored queue without I/O, then over real HTTP with queues seeded straight into the
store (the running queue is not needed): the PRs in order and the candidates in words, the empty state, a
live update over the WebSocket, who may see it, and the page in Chromium at 1280 and 390 px
(tests/artifacts/merge-queue-*.png)."""

from __future__ import annotations

import dataclasses
import html
import re
from typing import Any

import aiohttp
import pytest
from sqlalchemy import update

from bot.events import wait_for
from bot.models import SUBJECT_QUEUE_CANDIDATE, Project
from dashboard.queue_view import branch_json, branch_queue
from pipeline.merge_queue.codec import encode, queue_from_document
from pipeline.merge_queue.model import (BUILDING, CANCELLING, EJECTED, FAILED, LANDING, LEAVING, MERGE_STEP,
                                        OBSOLETE, PASSED, REMOVED, RETRYING, TESTING)
from tests.api_support import api_token_for
from tests.browser import logged_in_page, screenshot
from tests.conftest import WEBHOOK_SECRET, BotUnderTest
from tests.dashboard_support import Dashboard, csrf_of, start_dashboard
from tests.merge_queue_support import MAINTAINER, comments_saying, queue_check_runs, queue_repo, until_idle
from tests.pull_requests import INSTALLATION_ID
from tests.queue_page_support import BASE_SHA, PULLS, busy_queue, candidate, seed_queue
from tests.sandbox_support import needs_bwrap
from tests.test_human_words import RAW, readable
from tests.test_merge_queue_e2e import SLOW_CANDIDATE
from tests.webhook_sender import WebhookSender


# ---- the view, pure ----------------------------------------------------------------------------------

def test_the_queued_prs_come_in_order_with_their_candidates_state_in_words() -> None:
    view = branch_queue(busy_queue(), PULLS)
    rows = [(e.position, e.pr, e.state, e.words, e.tested_with) for e in view.entries]
    assert rows == [
        (1, 11, TESTING, "Testing", ()),
        (2, 12, RETRYING, "Retrying flaky step “pytest”", (11, 13)),
        (3, 13, RETRYING, "Retrying flaky step “pytest”", (11, 12)),
        (4, 14, "waiting", "Waiting for a free slot", ()),
        (None, 15, LEAVING, "Leaving: a new commit (5555555) was pushed to it; /queue it again", ())]
    assert view.entries[0].title == "Add the health endpoint" and view.entries[0].head == "1111111"
    assert view.entries[4].title == "" and view.entries[4].author is None  # not tracked: the number alone
    assert view.candidates[1].ahead_queued == (11,)
    landed = dataclasses.replace(busy_queue(), entries=busy_queue().entries[1:])  # #11 landed: no longer ahead
    assert branch_queue(landed, PULLS).candidates[1].ahead_queued == ()
    assert [(c.id, c.prs, c.ahead, c.base, c.words) for c in view.candidates] == [
        (1, (11,), (), "bbbbbbb", "Testing"), (2, (12, 13), (11,), "bbbbbbb", "Retrying flaky step “pytest”")]


@pytest.mark.parametrize(("changes", "words"), [
    ({"status": BUILDING}, "Building"),
    ({"status": FAILED, "failing_step": "pytest"}, "Failed at step “pytest”"),
    ({"status": FAILED, "failing_step": MERGE_STEP, "conflict_pr": 11}, "Merge conflict at #11"),
    ({"status": PASSED}, "Passed"),
    ({"status": PASSED, "reused_verdict": True}, "Passed (its own validation reused)"),
    ({"status": LANDING}, "Landing"),
    ({"status": LANDING, "landed": (11,)}, "Landing (#11 landed)"),
    ({"status": LANDING, "land_deferred_since": 1_000.0}, "Landing: waiting for a worker that has the tested commit"),
    ({"status": OBSOLETE, "obsolete_reason": "main moved to abcdef1: rebuilding on the new tip"},
     "Being cancelled: main moved to abcdef1: rebuilding on the new tip"),
])
def test_each_candidate_state_reads_as_words(changes: dict[str, Any], words: str) -> None:
    queue = dataclasses.replace(busy_queue(), candidates=(candidate(1, (11,), (), **changes),))
    [shown] = branch_queue(queue, PULLS).candidates
    assert shown.words == words and not RAW.search(words)


def test_an_ejection_or_removal_being_said_shows_as_leaving_and_a_cancel_being_done_as_being_cancelled() -> None:
    busy = busy_queue()
    ejected = dataclasses.replace(busy.entries[0], state=EJECTED, leave_reason="`pytest` failed on main with it merged")
    queue = dataclasses.replace(busy, entries=(ejected, *busy.entries[1:4],
                                               dataclasses.replace(busy.entries[4], state=REMOVED)),
                                candidates=(dataclasses.replace(busy.candidates[0], status=CANCELLING,
                                                                obsolete_reason="#11 was ejected"),
                                            busy.candidates[1]))
    view = branch_queue(queue, PULLS)
    assert [(e.position, e.pr, e.state) for e in view.entries] == [
        (1, 12, RETRYING), (2, 13, RETRYING), (3, 14, "waiting"), (None, 11, LEAVING), (None, 15, LEAVING)]
    assert view.entries[3].words == "Leaving: pytest failed on main with it merged"
    assert (view.candidates[0].state, view.candidates[0].words) == (OBSOLETE, "Being cancelled: #11 was ejected")
    assert view.candidates[1].ahead_queued == ()  # #11 is not queued any more


def test_the_json_names_each_entry_and_candidate() -> None:
    answer = branch_json(branch_queue(busy_queue(), PULLS))
    assert answer["base_ref"] == "main" and answer["base_sha"] == BASE_SHA
    assert [(e["position"], e["pr_number"], e["state"]) for e in answer["entries"]] == [
        (1, 11, "testing"), (2, 12, "retrying"), (3, 13, "retrying"), (4, 14, "waiting"), (None, 15, "leaving")]
    assert answer["entries"][1]["enqueued_by"] == "auto-merge" and answer["entries"][4]["title"] is None
    assert answer["candidates"][1] == {
        "id": 2, "prs": [12, 13], "ahead": [11], "base_sha": BASE_SHA, "state": "retrying",
        "label": "Retrying flaky step “pytest”", "attempt": 2, "reason": "testing again", "failing_step": "pytest",
        "flaky_steps": [], "landed": [], "reused_verdict": False,
        "created_at": answer["candidates"][1]["created_at"]}


# ---- over HTTP ---------------------------------------------------------------------------------------

async def turn_queue_on(dash: Dashboard, project: Project) -> None:
    await dash.services.store.db.write(lambda conn: conn.execute(
        update(Project).where(Project.id == project.id).values(merge_queue={"enabled": True, "batch_size": 2})))


def _text(page: str) -> str:
    """The page's words as a person reads them in a row (markup dropped, spaces collapsed)."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", page)).split())


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with session.get(url) as response:
        return response.status, await response.text()


async def test_the_page_shows_each_prs_place_and_what_is_being_tested(dashboard: Dashboard) -> None:
    project = await seed_queue(dashboard, busy_queue())
    await turn_queue_on(dashboard, project)
    async with await dashboard.login("alice", installation_ids=[1]) as session:
        status, page = await _get(session, dashboard.url + "/projects/acme/widgets/queue")
        assert status == 200
        text = _text(page)
        assert re.findall(r'<tr data-pr="(\d+)" data-state="(\w+)"', page) == [
            ("11", "testing"), ("12", "retrying"), ("13", "retrying"), ("14", "waiting"), ("15", "leaving")]
        for words in ("Into main at bbbbbbb", "Position 1 #11 Add the health endpoint @dev-alice 1111111",
                      "by auto-merge", "Retrying flaky step “pytest” with #11, #13",
                      "Waiting for a free slot", "Leaving: a new commit (5555555) was pushed to it; /queue it again",
                      "#12, #13 on top of #11, built on bbbbbbb", "attempt 2", "testing again",
                      "Fix the <b>login</b>", "The merge queue is on for this project (project setting)",
                      "testing up to 2 PRs together and 3 candidates at once"):
            assert words in text, (words, text)
        assert re.search(r"1111111 queued 1\dm ago by @mona Testing", text), text
        assert "<b>login</b>" not in page  # escaped
        assert not RAW.search(readable(page))
        status, fragment = await _get(session, dashboard.url + "/projects/acme/widgets/queue/branches")
        assert status == 200 and "<html" not in fragment and 'data-pr="14"' in fragment
        # reachable from the project page and its card
        status, project_page = await _get(session, dashboard.url + "/projects/acme/widgets")
        assert project_page.count('href="/projects/acme/widgets/queue"') == 2  # the navigation and the card


async def test_an_empty_queue_says_how_to_queue_a_pr_and_whether_the_queue_is_on(dashboard: Dashboard) -> None:
    async with await dashboard.login("alice", installation_ids=[1]) as session:
        status, page = await _get(session, dashboard.url + "/projects/acme/widgets/queue")
        assert status == 200
        text = _text(page)
        assert "Nothing is queued." in text and "comment /queue on it" in text
        assert "The merge queue is off for this project (default)" in text
        assert "/queue is refused until merge_queue.enabled is set to true" in text

        project = await dashboard.services.store.projects.get_project_by_name("acme/widgets")
        await turn_queue_on(dashboard, project)
        emptied = dataclasses.replace(busy_queue(), entries=(), candidates=())  # everything landed
        await seed_queue(dashboard, emptied)
        status, page = await _get(session, dashboard.url + "/projects/acme/widgets/queue")
        text = _text(page)
        assert "Nothing is queued for main." in text and "The merge queue is on" in text
        assert "a PR whose validation passes joins the queue" in text and "is refused" not in text
        assert "<table" not in page


async def test_a_saved_queue_reaches_the_page_over_the_websocket(dashboard: Dashboard) -> None:
    project = await seed_queue(dashboard, busy_queue())
    async with await dashboard.login("alice", installation_ids=[1]) as session:
        async with session.ws_connect(dashboard.url + "/api/v1/ws") as ws:
            landed = dataclasses.replace(busy_queue(), entries=busy_queue().entries[1:4],
                                         candidates=busy_queue().candidates[1:])
            assert await dashboard.services.store.merge_queues.save(project.id, "main", encode(landed), version=1,
                                                                    active=True)
            # what pipeline/merge_queue/service.py publishes after each save
            dashboard.services.bus.publish("merge_queue.updated", project_id=project.id, base_ref="main",
                                           active=True, queued=[12, 13, 14], base_sha=BASE_SHA)
            message = await ws.receive_json(timeout=10)
        assert message["event"] == "merge_queue.updated"
        assert message["data"]["base_ref"] == "main" and message["data"]["repository"] == "acme/widgets"
        # what live.js then fetches
        status, fragment = await _get(session, dashboard.url + "/projects/acme/widgets/queue/branches")
    assert status == 200 and re.findall(r'<tr data-pr="(\d+)"', fragment) == ["12", "13", "14"]


async def test_the_queue_is_hidden_from_a_user_who_cannot_see_the_project(dashboard: Dashboard) -> None:
    project = await seed_queue(dashboard, busy_queue())
    dashboard.fake.add_installation(2, "other", repos=["thing"])
    await dashboard.record(2, "other/thing")
    token = await api_token_for(dashboard.services.store, dashboard.fake, "eve", full_name="other/thing",
                                role="admin", installation_ids=[2])
    async with await dashboard.login("eve", installation_ids=[2]) as session:
        for path in ("/projects/acme/widgets/queue", "/projects/acme/widgets/queue/branches",
                     f"/api/v1/projects/{project.id}/queue"):
            status, _ = await _get(session, dashboard.url + path)
            assert status == 404, path
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as client:
        status, answer = await _get(client, f"{dashboard.url}/api/v1/projects/{project.id}/queue")
        assert status == 404 and "no such project" in answer
    async with aiohttp.ClientSession() as anonymous:
        status, _ = await _get(anonymous, f"{dashboard.url}/api/v1/projects/{project.id}/queue")
        assert status == 401


# ---- the Dequeue button -------------------------------------------------------------------------------

def _dequeue_buttons(page: str) -> list[str]:
    return re.findall(r'action="/projects/acme/widgets/queue/(\d+)/dequeue"', page)


async def _dequeued_events(dashboard: Dashboard, project: Project) -> list[tuple[str | None, Any]]:
    events = (await dashboard.services.store.audit.page(project.id)).events
    return [(e.actor, e.details) for e in events if e.action == "merge_queue.dequeued"]


async def test_the_dequeue_button_is_for_writers_and_needs_the_csrf_token(dashboard: Dashboard) -> None:
    project = await seed_queue(dashboard, busy_queue())
    dashboard.fake.set_permission("acme/widgets", "mona", "write")
    queue_url = dashboard.url + "/projects/acme/widgets/queue"
    async with await dashboard.login("rita", installation_ids=[1]) as reader:  # read access
        status, page = await _get(reader, queue_url)
        assert status == 200 and _dequeue_buttons(page) == [] and "Dequeue" not in page
        token = await csrf_of(reader, dashboard.url + "/account")
        async with reader.post(queue_url + "/14/dequeue", data={"csrf_token": token},
                               allow_redirects=False) as response:
            assert response.status == 403 and "write access" in await response.text()
    async with await dashboard.login("mona", installation_ids=[1]) as writer:
        status, page = await _get(writer, queue_url)
        assert _dequeue_buttons(page) == ["11", "12", "13", "14"]  # not #15: it is leaving already
        assert 'aria-label="Dequeue #14"' in page
        for refused in ({}, {"csrf_token": "wrong"}):
            async with writer.post(queue_url + "/14/dequeue", data=refused, allow_redirects=False) as response:
                assert response.status == 403 and "CSRF" in await response.text()
    stored = await dashboard.services.store.merge_queues.load(project.id, "main")
    assert stored is not None and stored.version == 1  # as seeded: nothing was dequeued
    assert await _dequeued_events(dashboard, project) == []


async def test_the_dequeue_button_takes_the_pr_out_and_is_audited(dashboard: Dashboard) -> None:
    project = await seed_queue(dashboard, busy_queue())
    dashboard.fake.set_permission("acme/widgets", "mona", "write")
    queue_url = dashboard.url + "/projects/acme/widgets/queue"
    async with await dashboard.login("mona", installation_ids=[1]) as writer:
        token = await csrf_of(writer, queue_url)
        async with writer.post(queue_url + "/14/dequeue", data={"csrf_token": token}) as response:
            page = await response.text()
        assert response.status == 200 and str(response.url) == queue_url + "?dequeued=14"
        assert "#14 is being taken out of the merge queue" in _text(page)
        assert "14" not in _dequeue_buttons(page)  # leaving (or gone, once the queue has run)
        entry = queue_from_document((await dashboard.services.store.merge_queues.load(project.id, "main")).state) \
            .entry(14)
        assert entry is None or (entry.state, entry.leave_reason) == (LEAVING, "dequeued from the dashboard by @mona")

        async with writer.post(queue_url + "/99/dequeue", data={"csrf_token": token}) as response:
            page = await response.text()
        assert response.status == 200 and "#99 is not in a merge queue" in _text(page)
    assert await _dequeued_events(dashboard, project) == [("mona", {"pr": 14, "source": "dashboard"})]
    async with await dashboard.login("mona", installation_ids=[1]) as writer:
        status, audit = await _get(writer, dashboard.url + "/projects/acme/widgets/audit")
    assert "@mona took #14 out of the merge queue from the dashboard" in _text(audit)


@needs_bwrap
@pytest.mark.slow
async def test_dequeue_from_the_dashboard_says_so_on_the_pr_like_the_command(fake_github, aiohttp_server,
                                                                              make_settings) -> None:
    """A real queue (`/queue` delivered as a webhook, a candidate under test): the button goes through the
    same service as `/dequeue`, so the PR's "Merge queue" check run completes as neutral and a comment
    says who took it out; the candidate's validation is cancelled."""
    dash = await start_dashboard(fake_github, aiohttp_server, make_settings)
    repo = await queue_repo(dash.services.store, fake_github, prs={1: {"one.txt": "1\n"}}, validate=[SLOW_CANDIDATE])
    async with await dash.login(MAINTAINER, installation_ids=[INSTALLATION_ID]) as session:
        bot = BotUnderTest(dash.url, dash.services, WebhookSender(session, dash.url, WEBHOOK_SECRET))
        with dash.services.bus.subscribe() as events:
            await bot.deliver("issue_comment", repo.comment(1, "/queue"), timeout=30)
            await wait_for(events, "validation.started", timeout=60)  # the candidate is under test
            queue_url = f"{dash.url}/projects/{repo.full_name}/queue"
            token = await csrf_of(session, queue_url)
            async with session.post(queue_url + "/1/dequeue", data={"csrf_token": token}) as response:
                assert response.status == 200 and "#1 is being taken out" in _text(await response.text())
            await until_idle(bot, events, repo)
        status, page = await _get(session, queue_url)
    assert status == 200 and 'data-pr="1"' not in page and "Nothing is queued for main." in _text(page)
    run = queue_check_runs(fake_github, repo.pulls[1].head_sha)[-1]
    assert (run["status"], run["conclusion"]) == ("completed", "neutral")
    assert f"dequeued from the dashboard by @{MAINTAINER}" in run["output"]["summary"]
    said = comments_saying(fake_github, "Taken out of the merge queue")
    assert said == [f"Taken out of the merge queue: dequeued from the dashboard by @{MAINTAINER}."]
    candidates = [v for v in await dash.services.store.validations.for_project(repo.project.id, limit=50)
                  if v.subject == SUBJECT_QUEUE_CANDIDATE]
    assert candidates and all(v.conclusion == "cancelled" for v in candidates)
    assert fake_github.merges == []


# ---- in Chromium ---------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_the_page_updates_live_and_reads_well_at_1280_and_390(browser, dashboard: Dashboard) -> None:
    from playwright.async_api import expect

    project = await seed_queue(dashboard, busy_queue())
    await turn_queue_on(dashboard, project)
    await dashboard.services.store.projects.update_project(project.id, {"pinned": True})
    dashboard.fake.set_permission("acme/widgets", "alice", "write")  # sees the Dequeue buttons
    dashboard.fake.approve_oauth_as("alice", installation_ids=[1])
    page, refused = await logged_in_page(browser, dashboard.url)
    await page.get_by_role("link", name="See the queue").click()  # from the card of a pinned project
    await page.wait_for_url(re.compile(r"/projects/acme/widgets/queue$"))
    await expect(page.get_by_text("live", exact=True)).to_be_visible()
    await page.evaluate("window.__notReloaded = true")
    rows = page.locator("table.queue tbody tr")
    await expect(rows).to_have_count(5)
    await expect(page.get_by_role("button", name=re.compile(r"^Dequeue #"))).to_have_count(4)
    await screenshot(page, "merge-queue-1280")

    # #11 lands: the queue is saved and announced, and the page follows without a reload
    landed = dataclasses.replace(busy_queue(), entries=busy_queue().entries[1:4],
                                 candidates=(dataclasses.replace(busy_queue().candidates[1], status=PASSED),))
    assert await dashboard.services.store.merge_queues.save(project.id, "main", encode(landed), version=1,
                                                            active=True)
    dashboard.services.bus.publish("merge_queue.updated", project_id=project.id, base_ref="main", active=True,
                                   queued=[12, 13, 14], base_sha=BASE_SHA)
    await expect(rows).to_have_count(3, timeout=10_000)
    await expect(rows.first.locator('[data-field="queue-state"]')).to_have_text("Passed")
    assert await page.evaluate("window.__notReloaded") is True

    await page.set_viewport_size({"width": 390, "height": 844})
    await page.reload()
    await expect(rows).to_have_count(3)
    await screenshot(page, "merge-queue-390")
    await expect(page.locator('[data-candidate="2"] .what')).to_have_text("#12, #13, built on bbbbbbb")  # #11 landed
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the queue page scrolls sideways at phone width ({width}px)"
    # Each row's button sits inside its row, within the screen. Read in one go: on connecting, the page
    # fetches the queue again (what changed while it was away) and swaps the box's rows for identical ones.
    boxes = await page.evaluate("""numbers => numbers.map(n => {
        const row = document.querySelector(`tr[data-pr="${n}"]`);
        const button = row && row.querySelector(`button[aria-label="Dequeue #${n}"]`);
        return button && [row.getBoundingClientRect().toJSON(), button.getBoundingClientRect().toJSON()];
    })""", [12, 13, 14])
    for number, pair in zip((12, 13, 14), boxes, strict=True):
        assert pair, f"#{number} has no row with its Dequeue button"
        row, button = pair
        assert row["y"] <= button["y"] and button["y"] + button["height"] <= row["y"] + row["height"], (number, pair)
        assert button["x"] >= 0 and button["x"] + button["width"] <= 390, (number, pair)

    # Dequeue from the page: the form posts with the CSRF token, the page says so and the row leaves
    await page.get_by_role("button", name="Dequeue #14").click()
    await page.wait_for_url(re.compile(r"/queue\?dequeued=14$"))
    await expect(page.locator('[data-field="dequeued"]')).to_contain_text("#14 is being taken out of the merge queue")
    await expect(page.locator('tr[data-pr="14"]')).to_have_attribute("data-state", "leaving")
    await expect(page.get_by_role("button", name="Dequeue #14")).to_have_count(0)
    await screenshot(page, "merge-queue-dequeued-390")
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390

    # everything landed: the page says how to queue a PR
    emptied = dataclasses.replace(busy_queue(), entries=(), candidates=())
    dequeued = await dashboard.services.store.merge_queues.load(project.id, "main")
    assert await dashboard.services.store.merge_queues.save(project.id, "main", encode(emptied),
                                                            version=dequeued.version, active=False)
    dashboard.services.bus.publish("merge_queue.updated", project_id=project.id, base_ref="main", active=False,
                                   queued=[], base_sha=BASE_SHA)
    await expect(page.locator('[data-field="queue-empty"]')).to_contain_text("Nothing is queued for main.",
                                                                              timeout=10_000)
    await screenshot(page, "merge-queue-empty-390")
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390
    await page.context.close()
    assert refused == []
