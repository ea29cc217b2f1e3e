"""The PR overview: a PR's state decided from data (no I/O), the overview and the project cards over HTTP
(filters, truthful counts), and the tracking of PRs from real webhook deliveries of GitHub's examples."""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime, timedelta

import pytest

from bot.events import AppEvent, wait_for
from bot.github.types import PullRequest
from bot.models import (MERGE_FAILED, MERGE_MERGED, PR_CLOSED, PR_MERGED, PR_OPEN, PullRequestMerge,
                        TrackedPullRequest, ValidationState, utcnow)
from bot.store.tracked_pulls import PullSnapshot
from dashboard.live import described
from dashboard.pull_overview import ago, card_summary, pull_state
from handlers.pull_request import snapshot_of
from tests.ghfixtures import load_webhook, require_fixtures
from tests.pull_requests import INSTALLATION_ID, open_pull_request, record_project

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def pull(number: int = 1, *, head: str = "a" * 40, state: str = PR_OPEN) -> TrackedPullRequest:
    return TrackedPullRequest(project_id="p", number=number, head_sha=head, state=state, title="t", draft=False,
                              is_fork=False)


def validation(status: str, conclusion: str | None = None, *, head: str = "a" * 40, number: int = 1,
               created: datetime = NOW) -> ValidationState:
    return ValidationState(project_id="p", pr_number=number, head_sha=head, status=status, conclusion=conclusion,
                           created_at=created)


def merge(status: str, *, head: str = "a" * 40) -> PullRequestMerge:
    return PullRequestMerge(project_id="p", pr_number=1, head_sha=head, status=status)


# ---- the decision, without I/O -------------------------------------------------------------------------

@pytest.mark.parametrize("v, expected", [
    (None, "unvalidated"),
    (validation("queued"), "running"),
    (validation("in_progress"), "running"),
    (validation("waiting", "action_required"), "waiting"),
    (validation("completed", "success"), "ready"),
    (validation("completed", "failure"), "failing"),
    (validation("completed", "timed_out"), "failing"),
    (validation("completed", "neutral"), "unvalidated"),
    (validation("superseded", "cancelled"), "unvalidated"),
    (validation("completed", "success", head="b" * 40), "unvalidated"),  # an older head passed: not this one
])
def test_an_open_prs_state_comes_from_the_latest_validation_of_its_current_head(v, expected) -> None:
    assert pull_state(pull(), v, None) == expected


def test_merged_and_closed_win_over_any_validation() -> None:
    passed = validation("completed", "success")
    assert pull_state(pull(state=PR_MERGED), passed, None) == "merged"
    assert pull_state(pull(), passed, merge(MERGE_MERGED)) == "merged"  # the app merged it; GitHub's event may lag
    assert pull_state(pull(), passed, merge(MERGE_FAILED)) == "ready"
    assert pull_state(pull(state=PR_CLOSED), validation("completed", "failure"), None) == "closed"


def test_the_card_counts_each_state_and_shows_the_newest_validation_of_an_open_head() -> None:
    failing = (pull(3, head="3" * 40), validation("completed", "failure", head="3" * 40, number=3,
                                                  created=NOW - timedelta(minutes=5)), None)
    passing = (pull(4, head="4" * 40), validation("completed", "success", head="4" * 40, number=4, created=NOW), None)
    fork = (pull(5, head="5" * 40), validation("waiting", "action_required", head="5" * 40, number=5,
                                               created=NOW - timedelta(minutes=9)), None)
    running = (pull(6, head="6" * 40), validation("in_progress", head="6" * 40, number=6,
                                                  created=NOW - timedelta(minutes=7)), None)
    merged = (pull(7, head="7" * 40, state=PR_MERGED), validation("completed", "success", head="7" * 40, number=7,
                                                                  created=NOW + timedelta(minutes=1)), None)
    summary = card_summary([failing, passing, fork, running, merged])
    assert summary.validation is passing[1]  # newest among OPEN PRs: the merged #7 is not on the card
    assert (summary.failing, summary.validating, summary.waiting, summary.ready, summary.open) == (1, 1, 1, 1, 4)
    assert card_summary([]).validation is None


def test_the_cards_headline_says_the_worst_first_not_the_newest() -> None:
    """Issue 15, "The project card lies": #4 passed last while #3 fails; the card must not read "#4 Passed"."""
    def row(number: int, conclusion: str, minutes: int, *, state: str = PR_OPEN) -> tuple:
        head = f"{number}" * 40
        return (pull(number, head=head, state=state),
                validation("completed", conclusion, head=head, number=number, created=NOW + timedelta(minutes=minutes)),
                None)

    summary = card_summary([row(3, "failure", 0), row(4, "success", 5)])
    assert summary.headline == "1 failing: #3" and summary.validation.pr_number == 4  # the newest is kept too
    assert [v.pr_number for v in summary.failing_validations] == [3]
    many = card_summary([row(n, "failure" if n % 2 else "timed_out", n) for n in range(1, 6)] + [row(9, "success", 9)])
    assert many.headline == "5 failing: #5, #4, #3, …" and many.failing == 5  # newest failing first
    assert card_summary([row(4, "success", 5), row(3, "failure", 9, state=PR_CLOSED)]).headline == "#4 Passed"
    old_head_failed = (pull(3, head="3" * 40), validation("completed", "failure", head="e" * 40, number=3), None)
    assert card_summary([old_head_failed]).headline == "none yet"  # no verdict on its current head
    assert card_summary([old_head_failed]).headline_title == "Last validation"
    merged = card_summary([row(4, "success", 5, state=PR_MERGED)])  # its last PR just merged: not "none yet"
    assert (merged.headline_title, merged.headline) == ("Open pull requests", "none")
    assert (card_summary([]).headline_title, card_summary([]).headline) == ("Open pull requests", "none")


@pytest.mark.parametrize("seconds, expected", [(5, "just now"), (125, "2m ago"), (3 * 3600 + 59, "3h ago"),
                                               (2 * 86400 + 7, "2d ago"), (-30, "just now")])
def test_ages_read_as_words(seconds, expected) -> None:
    assert ago(NOW - timedelta(seconds=seconds), NOW) == expected
    assert ago(None, NOW) == ""


def test_a_closed_event_with_merged_true_records_a_merged_pr() -> None:
    require_fixtures()
    raw = load_webhook("pull_request", "closed")["pull_request"]
    raw = {**raw, "merged": True, "merged_at": raw["closed_at"]}
    snapshot = snapshot_of(PullRequest.parse(raw, source="test"), raw)
    assert (snapshot.state, snapshot.number, snapshot.head_ref, snapshot.author) == (PR_MERGED, 2, "changes",
                                                                                     "Codertocat")
    assert snapshot.updated_at == datetime(2019, 5, 15, 15, 21, 18, tzinfo=UTC)


async def test_recording_is_an_upsert_that_keeps_the_newer_event(store) -> None:
    from bot.store import InstallationRef, RepoRef
    await store.projects.upsert_installation(InstallationRef(id=1, account_login="acme"))
    await store.projects.upsert_projects(1, [RepoRef(id=10, full_name="acme/widgets")])
    project = await store.projects.get_project_by_name("acme/widgets")
    first = _snapshot(1, head="a" * 40, updated=NOW)
    assert await store.tracked_pulls.record(project.id, first)
    assert not await store.tracked_pulls.record(project.id, _snapshot(1, head="b" * 40, state=PR_CLOSED,
                                                                      updated=NOW - timedelta(seconds=1)))
    assert (await store.tracked_pulls.get(project.id, 1)).head_sha == "a" * 40
    assert await store.tracked_pulls.record(project.id, _snapshot(1, head="c" * 40, updated=NOW))  # same second
    assert await store.tracked_pulls.record(project.id, _snapshot(1, head="c" * 40, state=PR_CLOSED,
                                                                  updated=NOW + timedelta(seconds=1)))
    row = await store.tracked_pulls.get(project.id, 1)
    assert (row.head_sha, row.state, row.updated_at) == ("c" * 40, PR_CLOSED, NOW + timedelta(seconds=1))


async def _acme_project(store):  # type: ignore[no-untyped-def]
    from bot.store import InstallationRef, RepoRef
    await store.projects.upsert_installation(InstallationRef(id=1, account_login="acme"))
    await store.projects.upsert_projects(1, [RepoRef(id=10, full_name="acme/widgets")])
    return await store.projects.get_project_by_name("acme/widgets")


async def _begin(store, project_id: str, snapshot: PullSnapshot, claimer: str):  # type: ignore[no-untyped-def]
    """`begin` of the snapshot's head with its record of the PR written under the begin's lock."""
    return await store.validations.begin(
        project_id=project_id, pr_number=snapshot.number, head_sha=snapshot.head_sha, restart=False, base_sha=None,
        is_fork=False, author=None, trigger="pull_request.synchronize", claimer=claimer,
        record_pull=store.tracked_pulls.under_lock(project_id, snapshot))


async def test_begin_records_the_pr_under_its_lock_unless_a_newer_event_is_recorded(store) -> None:
    """PostgreSQL: the PR's record is written by the statement that takes begin's lock. A new PR and a newer
    event are recorded and begin; an older event changes nothing and begins nothing (None). SQLite records
    in a unit of its own: it is never given one."""
    project = await _acme_project(store)
    if not store.tracked_pulls.records_under_lock:
        assert store.db.is_sqlite
        with pytest.raises(AssertionError):
            await _begin(store, project.id, _snapshot(1, head="a" * 40, updated=NOW), "d1")
        assert await store.tracked_pulls.get(project.id, 1) is None
        return
    first = await _begin(store, project.id, _snapshot(1, head="a" * 40, updated=NOW), "d1")
    assert first is not None and first.recorded and first.validation.head_sha == "a" * 40
    assert (await store.tracked_pulls.get(project.id, 1)).head_sha == "a" * 40

    older = _snapshot(1, head="b" * 40, state=PR_CLOSED, updated=NOW - timedelta(seconds=1))
    assert await _begin(store, project.id, older, "d2") is None
    assert (await store.tracked_pulls.get(project.id, 1)).head_sha == "a" * 40
    assert [v.head_sha for v in await store.validations.for_pr(project.id, 1)] == ["a" * 40]

    newer = await _begin(store, project.id, _snapshot(1, head="c" * 40, updated=NOW + timedelta(seconds=1)), "d3")
    assert newer is not None and [v.head_sha for v in newer.ended] == ["a" * 40]
    row = await store.tracked_pulls.get(project.id, 1)
    assert (row.head_sha, row.updated_at) == ("c" * 40, NOW + timedelta(seconds=1))


@pytest.mark.postgres
async def test_the_pr_is_recorded_only_once_begins_lock_is_held(postgres_cluster) -> None:
    """PostgreSQL: another transaction holding the PR's begin lock holds up the record too (the lock is
    taken first, in the same statement), and the record is written once it is let go."""
    import asyncio

    import asyncpg

    from bot import migrate
    from bot.crypto import Crypto
    from bot.db import Database
    from bot.store import Store
    from bot.store.validations import begin_lock_key
    url = postgres_cluster.create_database()
    store = Store(Database(url), Crypto(Crypto.generate_key()))
    await migrate.upgrade(store.db)
    holder = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        project = await _acme_project(store)
        holding = holder.transaction()
        await holding.start()
        await holder.execute("SELECT pg_advisory_xact_lock($1)", begin_lock_key(project.id, 1))
        begun = asyncio.create_task(_begin(store, project.id, _snapshot(1, head="a" * 40, updated=NOW), "d1"))
        async with asyncio.timeout(10):  # until the begin waits for the lock
            while not await holder.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"):
                await asyncio.sleep(0.01)
        assert await holder.fetchval("SELECT count(*) FROM pull_requests") == 0 and not begun.done()
        await holding.commit()
        assert (await asyncio.wait_for(begun, 10)).recorded
        assert (await store.tracked_pulls.get(project.id, 1)).head_sha == "a" * 40
    finally:
        await holder.close()
        await store.close()


def test_live_events_name_their_repository_and_result_in_words() -> None:
    def described_as(name: str, **data) -> dict:
        return described(AppEvent(name, {"project_id": "p", "pr_number": 12, **data}), "acme/widgets")

    assert described_as("validation.completed", conclusion="success") == {
        "project_id": "p", "pr_number": 12, "conclusion": "success", "repository": "acme/widgets", "label": "Passed"}
    assert described_as("validation.completed", conclusion="action_required")["label"] == "Waiting for approval"
    assert described_as("validation.started")["label"] == "Running"
    assert described_as("agent.run.completed", status="completed")["label"] == "Done"
    assert "label" not in described_as("pr.updated", state="open")


# ---- the overview and the cards over HTTP --------------------------------------------------------------

def _snapshot(number: int, *, head: str, state: str = PR_OPEN, fork: bool = False, updated: datetime | None = None,
              title: str | None = None) -> PullSnapshot:
    now = utcnow()
    return PullSnapshot(number=number, title=title or f"Change number {number}", author="dev-alice", head_sha=head,
                        head_ref=f"feature-{number}", base_ref="main", is_fork=fork, draft=False, state=state,
                        opened_at=now - timedelta(hours=3), updated_at=updated or now,
                        closed_at=None if state == PR_OPEN else now)


async def _validation(store, project_id: str, number: int, head: str, how: str) -> ValidationState:
    state = await store.validations.create(project_id=project_id, pr_number=number, head_sha=head)
    if how == "waiting":
        assert await store.validations.wait_for_approval(state.id, title="Waiting for a maintainer: /ok-to-test")
    elif how != "queued":
        assert await store.validations.start(state.id)
        if how != "running":
            title = "All checks passed" if how == "success" else "2 tests failed"
            assert await store.validations.complete(state.id, conclusion=how, title=title, results={})
    return state


async def seed_overview(store, project_id: str) -> dict[int, ValidationState]:
    """#3 failing, #4 passing (validated last), #5 a fork waiting for /ok-to-test, #6 running, #7 whose older
    head passed but whose current head is not validated, #8 merged today, #9 closed a month ago."""
    heads = {n: f"{n}" * 40 for n in range(3, 10)}
    for number in (3, 4, 6, 7):
        await store.tracked_pulls.record(project_id, _snapshot(number, head=heads[number]))
    await store.tracked_pulls.record(project_id, _snapshot(5, head=heads[5], fork=True))
    await store.tracked_pulls.record(project_id, _snapshot(8, head=heads[8], state=PR_MERGED))
    await store.tracked_pulls.record(project_id, _snapshot(9, head=heads[9], state=PR_CLOSED,
                                                           updated=utcnow() - timedelta(days=30)))
    made = {6: await _validation(store, project_id, 6, heads[6], "running"),
            5: await _validation(store, project_id, 5, heads[5], "waiting"),
            7: await _validation(store, project_id, 7, "e" * 40, "success"),
            3: await _validation(store, project_id, 3, heads[3], "failure"),
            8: await _validation(store, project_id, 8, heads[8], "success")}
    made[4] = await _validation(store, project_id, 4, heads[4], "success")
    return made


def _shown_prs(page: str) -> list[int]:
    return [int(n) for n in re.findall(r'<tr data-pr="(\d+)"', page)]


def _text(page: str) -> str:
    """What a person reads of the page: its text, without markup or attributes."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))


async def test_overview_lists_prs_with_their_states_and_filters_work_without_js(dashboard) -> None:
    store = dashboard.services.store
    project = await store.projects.get_project_by_name("acme/widgets")
    made = await seed_overview(store, project.id)
    async with await dashboard.login("alice", installation_ids=[1]) as session:
        async with session.get(dashboard.url + "/projects/acme/widgets") as response:
            assert response.status == 200
            page = await response.text()
        assert _shown_prs(page) == [5, 7, 6, 4, 3, 8]  # open ones first, newest first; #9 closed long ago
        rows = dict(re.findall(r'<tr data-pr="(\d+)" data-state="(\w+)"', page))
        assert rows == {"3": "failing", "4": "ready", "5": "waiting", "6": "running", "7": "unvalidated",
                        "8": "merged"}
        text = _text(page)
        for words in ("Failing", "Ready to merge", "Waiting for /ok-to-test", "Running", "Not validated", "Merged",
                      "@dev-alice", "3h ago", "#3 Change number 3", "feature-3", "3333333", "Fork"):
            assert words in text, words
        assert f'href="/validations/{made[3].id}" data-field="pr-validation">Failed<' in page
        for raw in ("in_progress", "action_required", "success", "failure"):
            assert raw not in text, raw

        for state, expected in (("failing", [3]), ("ready", [4]), ("waiting", [5]), ("running", [6]),
                                ("unvalidated", [7]), ("merged", [8]), ("closed", []), ("no-such-state", None)):
            async with session.get(dashboard.url + "/projects/acme/widgets", params={"state": state}) as response:
                filtered = await response.text()
            assert _shown_prs(filtered) == (expected if expected is not None else [5, 7, 6, 4, 3, 8]), state
            if expected is not None:
                assert f'?state={state}#pulls" aria-current="page"' in filtered
            if expected == []:
                assert "No pull request is closed now." in _text(filtered)

        # the table alone, as live.js fetches it
        async with session.get(dashboard.url + "/projects/acme/widgets/pulls?state=running") as response:
            assert response.status == 200
            fragment = await response.text()
        assert _shown_prs(fragment) == [6] and "<html" not in fragment


async def test_cards_count_failing_validating_and_waiting_prs_truthfully(dashboard) -> None:
    store = dashboard.services.store
    project = await store.projects.get_project_by_name("acme/widgets")
    made = await seed_overview(store, project.id)
    await store.projects.update_project(project.id, {"pinned": True})
    async with await dashboard.login("alice", installation_ids=[1]) as session:
        async with session.get(dashboard.url + "/") as response:
            page = await response.text()
    card = page[page.index('class="card"'):]
    card = card[:card.index("</li>")]
    assert "acme/widgets" in card
    # the worst first: a failing #3 is not hidden by a passing #4 validated after it (issue 15)
    assert re.search(r'data-field="headline-title">Needs a fix<', card)
    headline = re.search(r'data-field="validation"><span[^>]*>([^<]+)</span>:\s*<a href="/validations/(\w+)">#(\d+)</a>',
                         card)
    assert headline is not None and headline.groups() == ("1 failing", made[3].id, "3")
    assert "1 failing: #3" in _text(card).replace(" :", ":")
    counts = dict(re.findall(r'data-field="(failing|active-prs|waiting|ready)">(\d+)<', card))
    # a failing #3 is not hidden by a passing #4; the fork waiting for /ok-to-test is not "validating"
    assert counts == {"failing": "1", "active-prs": "1", "waiting": "1", "ready": "1"}


# ---- tracking from real webhook deliveries -------------------------------------------------------------

def _at(payload: dict, when: str, **pull_changes) -> dict:
    """GitHub's example with the PR's `updated_at` (and other fields) set: a timeline of one PR."""
    payload = copy.deepcopy(payload)
    payload["pull_request"].update(updated_at=when, **pull_changes)
    payload.setdefault("installation", {"id": 1})
    return payload


@pytest.fixture
async def any_db_bot(start_bot, database_url):  # type: ignore[no-untyped-def]
    """The app on SQLite and on PostgreSQL (migrated first, as `codegenapp migrate` does): PostgreSQL records a
    validating event's PR in `begin`'s statement, SQLite in a unit of its own."""
    if not database_url.startswith("sqlite"):
        from bot import migrate
        from bot.db import Database
        db = Database(database_url)
        await migrate.upgrade(db)
        await db.dispose()
    return await start_bot(DATABASE_URL=database_url)


async def test_pull_request_events_are_tracked_and_older_ones_ignored(any_db_bot, fake_github) -> None:
    bot = any_db_bot
    require_fixtures()
    opened = load_webhook("pull_request", "opened")
    repo = opened["repository"]
    fake_github.add_installation(1, "Codertocat", repos=["Hello-World"])
    fake_github.add_pull("Codertocat/Hello-World", 2, head_sha=opened["pull_request"]["head"]["sha"],
                         base_sha=opened["pull_request"]["base"]["sha"], head_ref="changes", base_ref="master")

    async def tracked() -> TrackedPullRequest:
        project = await bot.store.projects.get_project_by_repo_id(repo["id"])
        found = await bot.store.tracked_pulls.get(project.id, 2)
        assert found is not None
        return found

    with bot.services.bus.subscribe() as events:
        await bot.deliver("pull_request", opened)
        row = await tracked()
        assert (row.state, row.title, row.author, row.head_sha[:7], row.head_ref, row.base_ref, row.draft) == (
            PR_OPEN, "Update the README with new information.", "Codertocat", "ec26c3e", "changes", "master", False)
        assert row.opened_at == datetime(2019, 5, 15, 15, 20, 33, tzinfo=UTC)
        await wait_for(events, "pr.updated", timeout=5, pr_number=2, state=PR_OPEN)

        await bot.deliver("pull_request", load_webhook("pull_request", "closed"))
        assert (await tracked()).state == PR_CLOSED
        await wait_for(events, "pr.updated", timeout=5, pr_number=2, state=PR_CLOSED)

        # The older `opened`, delivered late (another delivery id): the PR stays closed.
        await bot.deliver("pull_request", opened)
        assert (await tracked()).state == PR_CLOSED

    await bot.deliver("pull_request", _at(load_webhook("pull_request", "reopened"), "2019-05-15T15:22:00Z"))
    assert (await tracked()).state == PR_OPEN
    await bot.deliver("pull_request", _at(load_webhook("pull_request", "converted_to_draft.2"), "2019-05-15T15:23:00Z"))
    assert (await tracked()).draft is True
    await bot.deliver("pull_request", _at(load_webhook("pull_request", "synchronize"), "2019-05-15T15:24:00Z",
                                          head={**opened["pull_request"]["head"], "sha": "f" * 40},
                                          title="Update the README, again"))
    row = await tracked()
    assert (row.head_sha, row.title) == ("f" * 40, "Update the README, again")
    await bot.deliver("pull_request", _at(load_webhook("pull_request", "closed.2"), "2019-05-15T15:25:00Z",
                                          merged=True, merged_at="2019-05-15T15:25:00Z"))
    assert (await tracked()).state == PR_MERGED


async def test_a_late_event_validates_its_head_only_while_that_head_is_the_prs(any_db_bot, fake_github) -> None:
    """A `synchronize` handled after a newer `edited` of the same head still validates it; one of an
    older head, handled after the newer push (recovered from the delivery log, say), validates nothing
    and leaves the newer head's validation alone."""
    bot = any_db_bot
    scenario = open_pull_request(fake_github, config="validate:\n  - 'true'\n")
    project = await record_project(bot.store, scenario)
    current = scenario.head_sha

    def event(action: str, when: str, head: str) -> dict:
        payload = scenario.payload(action)
        payload["installation"] = {"id": INSTALLATION_ID}
        payload["pull_request"]["updated_at"] = when
        payload["pull_request"]["head"]["sha"] = head
        return payload

    await bot.deliver("pull_request", event("edited", "2030-01-01T10:05:00Z", current))
    await bot.deliver("pull_request", event("synchronize", "2030-01-01T10:04:00Z", current))
    [validation] = await bot.store.validations.for_pr(project.id, scenario.number)
    assert validation.head_sha == current

    older = "1" * 40
    await bot.deliver("pull_request", event("synchronize", "2030-01-01T10:01:00Z", older))
    validations = await bot.store.validations.for_pr(project.id, scenario.number)
    assert [v.head_sha for v in validations] == [current]  # nothing begun for the old head
    assert validations[0].status != "superseded"
