"""The resync of open pull requests (pipeline/resync): what it decides, without I/O; the store's part;
and the real app over HTTP against the fake GitHub: a PR of which no delivery ever arrived is validated,
a second resync starts nothing, the PR overview's table follows GitHub, a failing repository does not
stop the others, and two app instances on one database never resync at once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from bot import migrate
from bot.crypto import Crypto
from bot.db import Database
from bot.events import wait_for
from bot.github.types import ListedPull, PullRequest
from bot.labels import trigger
from bot.models import PR_CLOSED, PR_OPEN
from bot.store import InstallationRef, RepoRef, Store
from bot.store.tracked_pulls import PullSnapshot
from pipeline.resync.decision import installation_share, needs_validation, plan_repository
from pipeline.resync.service import LEASE, STATE_KEY, snapshot
from tests.fakes.github import FakeGitHub
from tests.pull_requests import INSTALLATION_ID, open_pull_request, record_project

T0 = datetime(2026, 1, 1, tzinfo=UTC)
VALIDATION_TIMEOUT = 60.0


def listed(number: int, *, head: str | None = None, draft: bool = False, updated: int = 0) -> ListedPull:
    pull = PullRequest(repository="acme/widgets", number=number, state="open", head_sha=head or f"{number:040x}",
                       head_ref=f"branch-{number}", base_sha="b" * 40, base_ref="main", fork=False, draft=draft,
                       author="octocat", title=f"PR {number}")
    return ListedPull(pull, created_at=T0, updated_at=T0 + timedelta(minutes=updated))


# ---- the decision, without I/O ---------------------------------------------------------------------------

def test_a_draft_is_not_validated_but_is_recorded() -> None:
    plan = plan_repository([listed(1, draft=True)], validated=set(), tracked_open={}, complete=True, budget=50)
    assert plan.start == () and plan.left_over == 0
    assert [item.pull.number for item in plan.record] == [1]


def test_a_head_with_a_validation_is_skipped_and_a_new_head_of_the_same_pr_is_not() -> None:
    old, new = listed(1, head="a" * 40), listed(2, head="c" * 40)
    validated = {(1, "a" * 40), (2, "b" * 40)}  # #2 was validated at an earlier head
    plan = plan_repository([old, new], validated=validated, tracked_open={}, complete=True, budget=50)
    assert [pull.number for pull in plan.start] == [2]
    assert not needs_validation(old.pull, validated) and needs_validation(new.pull, validated)


def test_the_same_head_in_another_pr_is_validated_there_too() -> None:
    plan = plan_repository([listed(2, head="a" * 40)], validated={(1, "a" * 40)}, tracked_open={},
                           complete=True, budget=50)
    assert [pull.number for pull in plan.start] == [2]


def test_the_bound_is_respected_most_recently_updated_first() -> None:
    pulls = [listed(1, updated=5), listed(2, updated=30), listed(3, updated=10)]
    plan = plan_repository(pulls, validated=set(), tracked_open={}, complete=True, budget=2)
    assert [pull.number for pull in plan.start] == [2, 3]
    assert plan.left_over == 1 and plan.cut_short
    spent = plan_repository(pulls, validated=set(), tracked_open={}, complete=True, budget=0)
    assert spent.start == () and spent.left_over == 3
    assert len(spent.record) == 3  # the table is kept true beyond the bound


def test_each_installation_gets_a_fair_share_of_the_bound() -> None:
    assert [installation_share(50, left) for left in (1, 2, 3)] == [50, 25, 17]
    assert installation_share(3, 5) == 1 and installation_share(0, 2) == 0 and installation_share(5, 0) == 0

    def run(wanting: list[int], bound: int) -> list[int]:
        """What a run starts per installation, installation by installation, as the service shares it."""
        started: list[int] = []
        for left, want in zip(range(len(wanting), 0, -1), wanting):
            started.append(min(want, installation_share(bound - sum(started), left)))
        return started

    # a backlog of 500 on the first installation leaves the others their share; what one leaves unused
    # goes to those after it; the bound is never exceeded
    assert run([500, 3, 40], 50) == [17, 3, 30]
    assert run([500, 500], 50) == [25, 25]
    assert run([1, 1, 500], 50) == [1, 1, 48]
    assert sum(run([7] * 60, 50)) == 50


def test_closed_detection_only_on_a_complete_listing() -> None:
    tracked = {1: T0, 7: T0 - timedelta(days=1)}
    complete = plan_repository([listed(1)], validated=set(), tracked_open=tracked, complete=True, budget=50)
    assert complete.close == {7: T0 - timedelta(days=1)}
    cut = plan_repository([listed(1)], validated=set(), tracked_open=tracked, complete=False, budget=50)
    assert cut.close == {}
    assert [pull.number for pull in cut.start] == [1]  # what was listed is still validated


def test_only_what_the_table_lacks_or_holds_older_is_recorded() -> None:
    same, newer, unknown = listed(1, updated=0), listed(2, updated=10), listed(3)
    plan = plan_repository([same, newer, unknown], validated=set(), tracked_open={1: T0, 2: T0},
                           complete=True, budget=50)
    assert sorted(item.pull.number for item in plan.record) == [2, 3]


def test_the_snapshot_of_a_listed_pr() -> None:
    item = listed(4, draft=True, updated=3)
    assert snapshot(item) == PullSnapshot(number=4, title="PR 4", author="octocat", head_sha=item.pull.head_sha,
                                          head_ref="branch-4", base_ref="main", is_fork=False, draft=True,
                                          state=PR_OPEN, opened_at=T0, updated_at=T0 + timedelta(minutes=3),
                                          closed_at=None)


def test_the_trigger_reads_as_words() -> None:
    assert trigger("resync") == "a resync"


# ---- the store's part ------------------------------------------------------------------------------------

async def _project(store: Store, installation_id: int, full_name: str, repo_id: int) -> Any:
    await store.projects.upsert_installation(InstallationRef(id=installation_id, account_login=full_name.split("/")[0]))
    await store.projects.upsert_projects(installation_id, [RepoRef(id=repo_id, full_name=full_name,
                                                                    default_branch="main")])
    return await store.projects.get_project_by_repo_id(repo_id)


async def test_the_active_projects_leave_out_archived_deleted_and_suspended_ones(store: Store) -> None:
    await _project(store, 1, "one/a", 11)
    await _project(store, 1, "one/archived", 12)
    await store.projects.archive_projects([12])
    await _project(store, 2, "two/suspended", 21)
    await store.projects.set_installation_suspended(2, T0)
    await _project(store, 3, "three/deleted", 31)
    await store.projects.mark_installation_deleted(3)
    await _project(store, 0, "zero/b", 1)
    assert [p.name for p in await store.projects.active_projects()] == ["zero/b", "one/a"]


async def test_validated_heads_and_close_missed_compare_and_set(store: Store) -> None:
    project = await _project(store, 1, "acme/widgets", 11)
    await store.validations.create(project_id=project.id, pr_number=1, head_sha="a" * 40)
    assert await store.validations.validated_heads(project.id, ["a" * 40, "b" * 40]) == {(1, "a" * 40)}
    for number in (1, 2, 3):
        await store.tracked_pulls.record(project.id, snapshot(listed(number)))
    seen = await store.tracked_pulls.open_pulls(project.id)
    assert seen == {1: T0, 2: T0, 3: T0}
    # an event moves #3 on after the resync read the table: it is left alone
    await store.tracked_pulls.record(project.id, snapshot(listed(3, updated=1)))
    closed = await store.tracked_pulls.close_missed(project.id, {2: seen[2], 3: seen[3]}, closed_at=T0)
    assert closed == [2]
    row = await store.tracked_pulls.get(project.id, 2)
    assert row.state == PR_CLOSED and row.closed_at == T0 and row.updated_at == T0  # the close event still applies
    assert (await store.tracked_pulls.get(project.id, 3)).state == PR_OPEN


# ---- the real app, over HTTP, against the fake GitHub ---------------------------------------------------

def _track(project_id: str, number: int) -> PullSnapshot:
    return PullSnapshot(number=number, title="gone", author="octocat", head_sha="d" * 40, head_ref="gone",
                        base_ref="main", is_fork=False, draft=False, state=PR_OPEN, opened_at=T0, updated_at=T0,
                        closed_at=None)


async def test_a_pull_request_without_any_delivery_is_validated_after_a_resync(
        start_bot: Callable[..., Any], fake_github: FakeGitHub) -> None:
    bot = await start_bot()
    scenario = open_pull_request(fake_github, config=None)  # on GitHub; no webhook is ever sent
    draft = fake_github.add_pull(scenario.full_name, 900, head_sha="e" * 40, base_sha=scenario.base_sha,
                                 head_ref="wip", draft=True)
    project = await record_project(bot.store, scenario)
    await bot.store.tracked_pulls.record(project.id, _track(project.id, 77))  # closed while the app was away
    assert bot.services.resync is not None

    with bot.services.bus.subscribe() as events:
        report = await bot.services.resync.run_once()
        done = await wait_for(events, "validation.completed", timeout=VALIDATION_TIMEOUT, head_sha=scenario.head_sha)
    assert report is not None and not report.failed and not report.cut_short
    assert (report.started, report.open_pulls, report.recorded, report.closed) == (1, 2, 2, 1)
    validation = await bot.store.validations.get(done.data["validation_id"])
    assert (validation.pr_number, validation.trigger) == (scenario.number, "resync")
    [check_run] = [run for run in fake_github.check_runs.values() if run["head_sha"] == scenario.head_sha]
    assert check_run["external_id"] == validation.id and check_run["status"] == "completed"
    assert not [run for run in fake_github.check_runs.values() if run["head_sha"] == draft["head"]["sha"]]

    # the PR overview's table holds the PRs as GitHub lists them, and the missed close
    row = await bot.store.tracked_pulls.get(project.id, scenario.number)
    assert (row.state, row.head_sha, row.draft) == (PR_OPEN, scenario.head_sha, False)
    assert (await bot.store.tracked_pulls.get(project.id, 900)).draft
    assert (await bot.store.tracked_pulls.get(project.id, 77)).state == PR_CLOSED

    # a second resync starts nothing new, records nothing new
    posts = len(fake_github.calls_to("POST", "/repos/*/*/check-runs"))
    again = await bot.services.resync.run_once()
    assert again is not None and (again.started, again.recorded, again.closed) == (0, 0, 0)
    assert len(fake_github.calls_to("POST", "/repos/*/*/check-runs")) == posts
    assert len(await bot.store.validations.for_pr(project.id, scenario.number)) == 1


async def test_more_open_pull_requests_than_a_page_are_all_validated(
        start_bot: Callable[..., Any], fake_github: FakeGitHub) -> None:
    """150 open PRs: two pages of the listing (100 a page), each PR's head validated, within the bound."""
    bot = await start_bot(RESYNC_MAX_STARTS="200", GITHUB_WRITES_PER_MINUTE="100000",
                          GITHUB_WRITES_PER_HOUR="1000000")
    scenario = open_pull_request(fake_github, config=None)
    heads = {scenario.number: scenario.head_sha}
    for number in range(scenario.number + 1, scenario.number + 150):
        pull = fake_github.add_pull(scenario.full_name, number, head_sha=f"{number:040x}", base_sha=scenario.base_sha,
                                    head_ref=f"branch-{number}")
        heads[number] = pull["head"]["sha"]
    project = await record_project(bot.store, scenario)

    report = await asyncio.wait_for(bot.services.resync.run_once(), VALIDATION_TIMEOUT)
    assert report is not None and not report.failed and not report.cut_short
    assert (report.open_pulls, report.started, report.recorded) == (150, 150, 150)
    listings = fake_github.calls_to("GET", f"/repos/{scenario.full_name}/pulls")
    assert [call.query.get("page", "1") for call in listings] == ["1", "2"]
    assert all(call.query["per_page"] == "100" for call in listings)
    assert await bot.store.validations.validated_heads(project.id, list(heads.values())) == set(heads.items())
    checked = {run["head_sha"] for run in fake_github.check_runs.values()}
    assert checked == set(heads.values())
    assert len(await bot.store.tracked_pulls.open_pulls(project.id)) == 150


async def test_a_head_pushed_over_since_the_listing_is_not_validated(
        start_bot: Callable[..., Any], fake_github: FakeGitHub) -> None:
    """GitHub listed head A, but a webhook recorded a newer push (head B) before the resync got to start A:
    starting A would end B's run. Nothing is started; the PR's next event validates B."""
    bot = await start_bot()
    scenario = open_pull_request(fake_github, config=None)
    project = await record_project(bot.store, scenario)
    newer = PullSnapshot(number=scenario.number, title="pushed again", author="octocat", head_sha="b" * 40,
                         head_ref="feature", base_ref="main", is_fork=False, draft=False, state=PR_OPEN,
                         opened_at=T0, updated_at=datetime(2099, 1, 1, tzinfo=UTC), closed_at=None)
    assert await bot.store.tracked_pulls.record(project.id, newer)
    report = await bot.services.resync.run_once()
    assert report is not None and report.started == 0 and not report.failed
    assert await bot.store.validations.for_pr(project.id, scenario.number) == []
    assert not fake_github.calls_to("POST", "/repos/*/*/check-runs")


async def test_the_resync_at_start_is_bounded_and_shown_on_health(
        start_bot: Callable[..., Any], make_settings: Callable[..., Any], fake_github: FakeGitHub) -> None:
    first = open_pull_request(fake_github, config=None)
    second = open_pull_request(fake_github, config=None)
    settings = make_settings()
    db = Database(settings.database_url)  # the project is known from an earlier run of the app
    await migrate.upgrade(db)
    earlier = Store(db, Crypto(Crypto.generate_key()))
    await record_project(earlier, first)
    await earlier.close()

    bot = await start_bot(RESYNC_INTERVAL="3600", RESYNC_MAX_STARTS="1")
    with bot.services.bus.subscribe() as events:
        if await bot.store.app_state.get(STATE_KEY) is None:
            await wait_for(events, "resync.finished", timeout=VALIDATION_TIMEOUT)
        [validation] = await bot.store.validations.for_project((await bot.store.projects.list_projects())[0].id)
        if validation.completed_at is None:  # let it end before the app stops
            await wait_for(events, "validation.completed", timeout=VALIDATION_TIMEOUT, validation_id=validation.id)
    assert validation.trigger == "resync"
    state = await bot.store.app_state.get(STATE_KEY)
    assert (state["started"], state["left_over"], state["cut_short"], state["failed"]) == (1, 1, True, False)
    started = [run["head_sha"] for run in fake_github.check_runs.values()]
    assert len(started) == 1 and started[0] in (first.head_sha, second.head_sha)

    async with aiohttp.ClientSession() as http, http.get(f"{bot.url}/health") as answer:
        health = await answer.json()
    assert health["resync"]["last_run"] == state["finished_at"]
    assert (health["resync"]["started"], health["resync"]["cut_short"], health["resync"]["failed"]) == (1, True, False)
    assert health["resync"]["interval_seconds"] == 3600 and health["resync"]["max_starts"] == 1


@pytest.mark.slow  # the failing repository's request is tried 4 times, then GitHub work pauses 5 s
async def test_a_repository_answering_5xx_does_not_stop_the_others(
        start_bot: Callable[..., Any], fake_github: FakeGitHub) -> None:
    bot = await start_bot()
    fake_github.add_installation(1001, "beta", repos=["beta/broken"])  # resynced first: a lower installation id
    broken = await _project(bot.store, 1001, "beta/broken", fake_github.repos["beta/broken"]["id"])
    await bot.store.tracked_pulls.record(broken.id, _track(broken.id, 5))
    scenario = open_pull_request(fake_github, config=None)
    await record_project(bot.store, scenario)
    fake_github.fail_next("GET", "/repos/beta/broken/pulls", status=502, times=50)

    with bot.services.bus.subscribe() as events:
        report = await asyncio.wait_for(bot.services.resync.run_once(), VALIDATION_TIMEOUT)
        await wait_for(events, "validation.completed", timeout=VALIDATION_TIMEOUT, head_sha=scenario.head_sha)
    assert report is not None and report.failed and report.started == 1
    assert [failure.split(":")[0] for failure in report.failures] == ["beta/broken"]
    assert (await bot.store.tracked_pulls.get(broken.id, 5)).state == PR_OPEN  # an incomplete listing proves nothing
    assert (await bot.store.app_state.get(STATE_KEY))["failed"] is True


async def test_two_app_instances_on_one_database_never_resync_at_once(
        start_bot: Callable[..., Any], fake_github: FakeGitHub, tmp_path: Any) -> None:
    shared = f"sqlite:///{tmp_path / 'shared.db'}"
    one = await start_bot(DATABASE_URL=shared)
    two = await start_bot(DATABASE_URL=shared)
    scenario = open_pull_request(fake_github, config=None)
    await record_project(one.store, scenario)
    listing = fake_github.hold_next("GET", f"/repos/{scenario.full_name}/pulls", before_handling=True)

    first = asyncio.create_task(one.services.resync.run_once())
    await asyncio.wait_for(listing.arrived.wait(), 10)  # `one` holds the lease and is listing
    assert await two.store.leases.holder(LEASE) == one.services.resync.holder
    assert await two.services.resync.run_once() is None  # refused: nothing listed, nothing started
    listing.release()
    report = await asyncio.wait_for(first, 30)
    assert len(fake_github.calls_to("GET", f"/repos/{scenario.full_name}/pulls")) == 1  # `two` listed nothing
    assert report is not None and report.started == 1
    assert await two.store.leases.holder(LEASE) is None  # released at the end

    after = await two.services.resync.run_once()  # free again: `two` resyncs, and finds the head validated
    assert after is not None and after.started == 0
    assert len([run for run in fake_github.check_runs.values() if run["head_sha"] == scenario.head_sha]) == 1
