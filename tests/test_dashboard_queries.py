"""What the dashboard's pages and live updates cost in SQL statements (issue 15): counted with a
SQLAlchemy listener, they do not grow with the number of pinned projects nor with the number of open
sockets. And the store's reads behind them: the latest validation of each head without its results, a
PR's validations asked of the database, running agent runs counted per project."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp
from sqlalchemy import Engine, event

from bot.models import PR_OPEN, utcnow
from bot.store import InstallationRef, RepoRef
from bot.store.agent_runs import NewRun
from dashboard.live import SHARED_STATUS
from tests.dashboard_support import Dashboard, start_dashboard
from tests.test_pr_overview import _snapshot, _validation, seed_overview

NAMES = [f"acme/repo-{n}" for n in range(5)]
BIG = {"steps": [{"name": "tests", "output": "x" * 60_000}]}


@contextmanager
def statements() -> Iterator[list[str]]:
    """Every SQL statement run while inside (on any engine of this process)."""
    seen: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(Engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", count)


async def five_projects(fake_github: Any, aiohttp_server: Any, make_settings: Any) -> Dashboard:
    """Five projects of installation 1, each with the seeded overview (#3 failing, ...) and 2 agent runs."""
    fake_github.add_installation(1, "acme", repos=[name.split("/")[1] for name in NAMES])
    dash = await start_dashboard(fake_github, aiohttp_server, make_settings, with_worker=False)
    await dash.record(1, *NAMES)
    store = dash.services.store
    for name in NAMES:
        project = await store.projects.get_project_by_name(name)
        await seed_overview(store, project.id)
        for goal in ("one", "two"):
            await store.agent_runs.create(NewRun(project_id=project.id, target_text=goal, source="api",
                                                 requested_by="alice", backend="codegen", auto_confirm=False,
                                                 max_fix_attempts=1))
    return dash


async def _pin(dash: Dashboard, names: list[str]) -> None:
    for name in NAMES:
        project = await dash.services.store.projects.get_project_by_name(name)
        await dash.services.store.projects.update_project(project.id, {"pinned": name in names})


async def test_the_home_page_costs_the_same_statements_for_one_or_five_pinned_projects(
        fake_github, aiohttp_server, make_settings) -> None:
    dash = await five_projects(fake_github, aiohttp_server, make_settings)
    counts = {}
    async with await dash.login("alice", installation_ids=[1]) as session:
        for pinned in (NAMES[:1], NAMES):
            await _pin(dash, pinned)
            async with session.get(dash.url + "/") as response:  # warm: the visible projects are cached
                assert response.status == 200
            with statements() as seen:
                async with session.get(dash.url + "/") as response:
                    page = await response.text()
            assert page.count('class="card"') == len(pinned)
            assert page.count("1 failing") == len(pinned) and page.count("2 running") == len(pinned)
            counts[len(pinned)] = len(seen)
    # Before issue 15: 4 statements more a pinned project (its overview's 3 and its agent runs).
    assert counts[5] == counts[1], counts
    assert counts[5] <= 6, counts


async def _subscribed(dash: Dashboard, count: int) -> None:
    """Until `count` sockets listen to the bus (each subscribes once its handshake is done), bounded."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while dash.services.bus.subscriber_count < count:
        assert loop.time() < deadline, f"{dash.services.bus.subscriber_count} of {count} sockets subscribed"
        await asyncio.sleep(0.01)


async def _status_event(dash: Dashboard, sockets: list[aiohttp.ClientWebSocketResponse], project_id: str) -> int:
    """The statements of one status-changing event as `sockets` all receive its project.status.updated."""
    with statements() as seen:
        dash.services.bus.publish("pr.updated", project_id=project_id, pr_number=3, state=PR_OPEN)
        for ws in sockets:
            assert (await ws.receive_json(timeout=10))["event"] == "pr.updated"
            status = await ws.receive_json(timeout=10)
            assert status["event"] == "project.status.updated"
            assert status["data"]["headline"] == "1 failing: #3" and status["data"]["running_runs"] == 2
            assert [f["pr_number"] for f in status["data"]["failing_prs"]] == [3]
    return len(seen)


async def test_a_status_event_is_computed_once_for_every_socket(fake_github, aiohttp_server, make_settings) -> None:
    dash = await five_projects(fake_github, aiohttp_server, make_settings)
    await _pin(dash, NAMES)
    project = await dash.services.store.projects.get_project_by_name(NAMES[2])
    shared = dash.app[SHARED_STATUS]
    async with await dash.login("alice", installation_ids=[1]) as session:
        one = await session.ws_connect(dash.url + "/api/v1/ws")
        await _subscribed(dash, 1)
        alone = await _status_event(dash, [one], project.id)
        others = [await session.ws_connect(dash.url + "/api/v1/ws") for _ in range(2)]
        await _subscribed(dash, 3)
        before = shared.computed
        three = await _status_event(dash, [one, *others], project.id)
        assert shared.computed - before == 1
        for ws in (one, *others):
            await ws.close()
    # once: the project, its overview's 3 and the running runs (and their transactions), not three times
    assert three == alone, (alone, three)
    assert three <= 6, three


async def _two_projects(store: Any) -> tuple[Any, Any]:
    await store.projects.upsert_installation(InstallationRef(id=1, account_login="acme"))
    await store.projects.upsert_projects(1, [RepoRef(id=10, full_name="acme/widgets"),
                                             RepoRef(id=11, full_name="acme/gadgets")])
    return (await store.projects.get_project_by_name("acme/widgets"),
            await store.projects.get_project_by_name("acme/gadgets"))


async def test_the_overview_reads_the_latest_validation_of_each_head_without_its_results(store) -> None:
    widgets, gadgets = await _two_projects(store)
    head = "a" * 40
    await store.tracked_pulls.record(widgets.id, _snapshot(1, head=head))
    await store.tracked_pulls.record(gadgets.id, _snapshot(1, head=head))
    old = await store.validations.create(project_id=widgets.id, pr_number=1, head_sha=head)
    assert await store.validations.start(old.id)
    assert await store.validations.complete(old.id, conclusion="failure", title="failed", results=BIG)
    newest = await store.validations.create(project_id=widgets.id, pr_number=1, head_sha=head)
    assert await store.validations.start(newest.id)
    assert await store.validations.complete(newest.id, conclusion="success", title="All checks passed", results=BIG)
    other = await _validation(store, gadgets.id, 1, head, "failure")

    found = await store.tracked_pulls.overviews([widgets.id, gadgets.id, "none"], closed_since=utcnow())
    assert [row.validation.id for row in found[widgets.id]] == [newest.id]
    assert [row.validation.id for row in found[gadgets.id]] == [other.id] and found["none"] == []
    row = found[widgets.id][0].validation
    assert (row.status, row.conclusion, row.title, row.pr_number) == ("completed", "success", "All checks passed", 1)
    assert row.test_results is None  # not read: up to 64 KB a step
    assert (await store.tracked_pulls.overview(widgets.id, closed_since=utcnow()))[0].validation.id == newest.id


async def test_a_prs_validations_and_the_running_agent_runs_are_asked_of_the_database(store) -> None:
    widgets, gadgets = await _two_projects(store)
    mine = [await _validation(store, widgets.id, 7, f"{n}" * 40, "failure") for n in range(3)]
    await _validation(store, widgets.id, 8, "9" * 40, "success")
    await _validation(store, gadgets.id, 7, "9" * 40, "success")
    listed = await store.validations.for_pr(widgets.id, 7)
    assert [v.id for v in listed] == [v.id for v in reversed(mine)]
    assert all(v.test_results is None and v.conclusion == "failure" for v in listed)
    assert [v.id for v in await store.validations.for_pr(widgets.id, 7, limit=1)] == [mine[-1].id]

    runs = [await store.agent_runs.create(NewRun(project_id=widgets.id, target_text=str(n), source="api",
                                                 requested_by=None, backend="codegen", auto_confirm=False,
                                                 max_fix_attempts=1)) for n in range(3)]
    assert await store.agent_runs.transition(runs[0].id, expect=("pending",), values={"status": "cancelled"})
    assert await store.agent_runs.running_counts([widgets.id, gadgets.id]) == {widgets.id: 2, gadgets.id: 0}
    assert await store.agent_runs.running_counts([]) == {}


async def test_the_live_poll_sends_the_running_steps_log_once(dashboard) -> None:
    """/validations/{id}/live sent the running step's output twice (`tail` and `log`); validation-live.js
    reads only `log`."""
    project = await dashboard.services.store.projects.get_project_by_name("acme/widgets")
    validations = dashboard.services.store.validations
    state = await validations.create(project_id=project.id, pr_number=7, head_sha="c" * 40)
    assert await validations.start(state.id)
    await validations.set_plan(state.id, [{"name": "tests", "stage": "validate"}])
    await validations.set_progress(state.id, {"steps": [], "current": "tests", "stage": "validate",
                                              "tail": "collected 12 items\ntest_app.py ....\n"})
    async with aiohttp.ClientSession() as session, \
            session.get(f"{dashboard.url}/validations/{state.id}/live") as response:
        live = await response.json()
    assert live["log"] == [[1, "collected 12 items"], [2, "test_app.py ...."]]
    assert "tail" not in live
