"""The recovery sweep of the App's delivery log (pipeline/deliveries): deliveries GitHub failed to make
while the app was down are fetched from the log and handled exactly once; the sweep's pure decisions
(where to stop paging, what to fetch, what a fetched delivery must look like); malformed and fuzzed
log entries are skipped and recorded; a webhook arriving during the sweep of its guid is stored once;
two processes never sweep at once; the sweep never asks GitHub to redeliver; a recovered backlog never
holds up a live delivery (the sweep waits while the webhook queue is full)."""

from __future__ import annotations

import asyncio
import copy
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from bot.events import wait_for
from bot.github.client import GitHubFailing
from bot.github.hook_deliveries import DeliveryDetail, HookDeliveries, LoggedDelivery, UnreadableEntry, read_entry
from bot import webhooks
from bot.models import DELIVERY_RECOVERED, DELIVERY_WEBHOOK, JOB_WEBHOOK
from bot.store import IncomingDelivery
from handlers.payloads import shape_problem
from pipeline.deliveries.service import DeliveryLogSweep, Ingested
from pipeline.deliveries.sweep import (HORIZON, LATE_MARGIN, MAX_BACKOFF_SECONDS, STOP_HORIZON, STOP_KNOWN,
                                       STOP_LOOKBACK, STOP_MARK, SweepMark, first_sweep_since, ingest_order,
                                       judge_page, payload_problem, retry_delay)
from tests.check_run_support import check_runs_of
from tests.conftest import WEBHOOK_SECRET
from tests.delivery_log_support import (delivery_log_health, jobs_per_delivery, last_sweep, nowhere,
                                        pull_requests, stored_sources, swept)

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def logged(n: int, *, minutes_ago: float = 0.0, event: str = "pull_request", guid: str | None = None
           ) -> LoggedDelivery:
    return LoggedDelivery(id=n, guid=guid or f"guid-{n}", delivered_at=NOW - timedelta(minutes=minutes_ago),
                          event=event, action="opened", redelivery=False, status="OK", installation_id=1,
                          repository_id=2)


# ---- the pure decisions ------------------------------------------------------------------------------

def test_unknown_guids_are_fetched_and_a_page_of_known_ones_ends_the_first_sweep() -> None:
    page = [logged(3), logged(2), logged(1)]
    verdict = judge_page(page, {"guid-2"}, mark=SweepMark(), now=NOW)
    assert [e.id for e in verdict.fetch] == [3, 1] and verdict.stop is None
    assert verdict.newest == NOW

    known_page = judge_page(page, {"guid-1", "guid-2", "guid-3"}, mark=SweepMark(), now=NOW)
    assert known_page.fetch == () and known_page.stop == STOP_KNOWN


def test_with_a_stop_point_a_known_page_does_not_end_the_sweep_but_the_stop_point_does() -> None:
    """A sweep cut short ingested the newest part of an outage only if it went oldest first; with a stop
    point recorded, known pages above it are paged through and the sweep ends at the point."""
    mark = SweepMark(NOW - timedelta(minutes=30))
    known = judge_page([logged(9, minutes_ago=1), logged(8, minutes_ago=2)], {"guid-9", "guid-8"}, mark=mark, now=NOW)
    assert known.stop is None
    below = judge_page([logged(7, minutes_ago=31), logged(6, minutes_ago=33), logged(5, minutes_ago=40)], set(),
                       mark=mark, now=NOW)
    # within LATE_MARGIN of the point an entry may have appeared late: still fetched
    assert [e.id for e in below.fetch] == [7] and below.stop == STOP_MARK
    assert LATE_MARGIN < timedelta(minutes=3)


def test_the_three_day_horizon_ends_the_sweep() -> None:
    verdict = judge_page([logged(2, minutes_ago=10), logged(1, minutes_ago=HORIZON.total_seconds() / 60 + 1)],
                         set(), mark=SweepMark(), now=NOW)
    assert [e.id for e in verdict.fetch] == [2] and verdict.stop == STOP_HORIZON


def test_the_first_sweep_of_a_new_database_looks_back_only_so_far() -> None:
    hour = timedelta(hours=1)
    since = first_sweep_since(SweepMark(), anything_known=False, now=NOW, lookback=hour)
    assert since == NOW - hour
    assert first_sweep_since(SweepMark(), anything_known=True, now=NOW, lookback=hour) is None
    assert first_sweep_since(SweepMark(NOW), anything_known=False, now=NOW, lookback=hour) is None
    verdict = judge_page([logged(3, minutes_ago=10), logged(2, minutes_ago=120), logged(1, minutes_ago=130)],
                         set(), mark=SweepMark(), now=NOW, since=since)
    assert [e.id for e in verdict.fetch] == [3] and verdict.stop == STOP_LOOKBACK


def test_pings_redeliveries_and_guids_taken_earlier_are_not_fetched_again() -> None:
    page = [logged(5, guid="a"), logged(4, event="ping"), logged(3, guid="a"), logged(2, guid="b")]
    verdict = judge_page(page, set(), mark=SweepMark(), now=NOW, taken={"b"})
    assert [e.id for e in verdict.fetch] == [5]


def test_unreadable_entries_with_an_id_and_guid_are_to_be_recorded_others_ignored() -> None:
    page = [UnreadableEntry(7, "g7", None, "no event"), UnreadableEntry(None, None, None, "not an object"),
            UnreadableEntry(6, "known", "push", "no delivered_at")]
    verdict = judge_page(page, {"known"}, mark=SweepMark(), now=NOW)
    assert [e.guid for e in verdict.unreadable] == ["g7"] and verdict.stop is None


def test_ingestion_goes_oldest_first_and_the_stop_point_only_moves_forward() -> None:
    assert [e.id for e in ingest_order([logged(3, minutes_ago=1), logged(1, minutes_ago=5),
                                        logged(2, minutes_ago=5)])] == [1, 2, 3]
    mark = SweepMark(NOW)
    assert mark.advanced_to(NOW - timedelta(hours=1)) == mark
    assert mark.advanced_to(None) == mark
    later = mark.advanced_to(NOW + timedelta(seconds=1))
    assert SweepMark.from_state(later.to_state()) == later
    assert SweepMark.from_state({"floor": "yesterday"}) == SweepMark() == SweepMark.from_state(None)


def test_what_a_fetched_delivery_must_be() -> None:
    entry = logged(1)
    good = {"action": "opened"}
    assert payload_problem(entry, DeliveryDetail(1, {"X-GitHub-Delivery": "guid-1"}, good)) is None
    assert "no longer" in payload_problem(entry, None)
    assert "no payload" in payload_problem(entry, DeliveryDetail(1, {}, None))
    assert "not a JSON object" in payload_problem(entry, DeliveryDetail(1, {}, [1, 2]))
    assert "X-GitHub-Delivery" in payload_problem(entry, DeliveryDetail(1, {"X-GitHub-Delivery": "other"}, good))
    assert "X-GitHub-Event" in payload_problem(entry, DeliveryDetail(1, {"x-github-event": "push"}, good))
    assert "action" in payload_problem(entry, DeliveryDetail(1, {}, {"action": "closed"}))


def test_listed_entries_are_read_leniently() -> None:
    item = {"id": 5, "guid": "g", "delivered_at": "2026-12-07T12:00:00Z", "event": "push", "action": None,
            "redelivery": False, "status": "OK", "status_code": 202, "installation_id": 1, "repository_id": None}
    assert read_entry(item) == LoggedDelivery(5, "g", NOW, "push", None, False, "OK", 1, None)
    assert read_entry({**item, "delivered_at": "soon", "id": True}) == UnreadableEntry(
        None, "g", "push", "the log entry has no usable id, delivered_at")
    assert read_entry([1]).reason == "the entry is a list of 1, not an object"


def test_a_failed_sweep_waits_longer_each_time_within_bounds() -> None:
    assert retry_delay(300, 0) == 300
    assert [retry_delay(5, n) for n in (1, 2, 3)] == [5, 10, 20]
    assert retry_delay(300, 10) == MAX_BACKOFF_SECONDS
    assert retry_delay(5, 1, retry_after=120) == 120


def test_the_shape_a_pull_request_event_promises(fake_github) -> None:  # type: ignore[no-untyped-def]
    [scenario] = pull_requests(fake_github, 1)
    payload = scenario.payload()
    assert shape_problem("pull_request", "g", payload) is None
    del payload["pull_request"]["head"]["sha"]
    assert shape_problem("pull_request", "g", payload).startswith(
        "a pull_request.opened delivery that has no `pull_request.head.sha` (`pull_request.head` is an object")
    assert shape_problem("installation", "g", {"action": "created"}) == \
        "a installation.created delivery that has no `installation.id`"
    assert shape_problem("star", "g", {}) is None  # nothing promised that the app reads


async def test_known_guids_are_stored_deliveries_and_skipped_entries(store) -> None:  # type: ignore[no-untyped-def]
    await store.deliveries.store(IncomingDelivery(id="stored", event="push", action=None, installation_id=None,
                                                  payload="{}", job_kind="webhook", max_attempts=1,
                                                  source=DELIVERY_RECOVERED))
    await store.delivery_log.skip("bad", log_id=7, event="push", reason="no payload")
    await store.delivery_log.skip("bad", log_id=8, event="push", reason="recorded once: the first reason stays")
    assert await store.delivery_log.known(["stored", "bad", "new", "stored"]) == {"stored", "bad"}
    assert await store.delivery_log.known([f"g{i}" for i in range(1200)]) == set()  # in chunks
    [skipped] = await store.delivery_log.skipped()
    assert (skipped.guid, skipped.log_id, skipped.event, skipped.reason) == ("bad", 7, "push", "no payload")


# ---- end to end: the app over HTTP, the fake GitHub's delivery log -----------------------------------

async def test_deliveries_that_failed_while_the_app_was_stopped_are_validated_once_at_start(
        start_bot, fake_github) -> None:  # type: ignore[no-untyped-def]
    fake_github.webhook_secret, fake_github.webhook_url = WEBHOOK_SECRET, nowhere()  # the app is not running
    scenarios = pull_requests(fake_github, 3)
    entries = [await fake_github.deliver("pull_request", s.payload("opened")) for s in scenarios]
    assert {e["status"] for e in entries} == {"failed to connect to host"}
    guids = [e["guid"] for e in entries]

    bot = await start_bot(SWEEP_INTERVAL="300")  # sweeps at start, then every 5 minutes
    last = await swept(bot)
    assert (last["ok"], last["ingested"], last["skipped"]) == (True, 3, 0)
    await fake_github.wait_until(lambda: all(check_runs_of(fake_github, s.head_sha) for s in scenarios), timeout=30)
    assert await stored_sources(bot.store, guids) == {g: DELIVERY_RECOVERED for g in guids}
    assert await jobs_per_delivery(bot.store, guids) == {g: 1 for g in guids}

    # a later sweep finds nothing new: each was handled exactly once
    report = await bot.services.delivery_log.sweep()
    assert (report.ingested, report.duplicates) == (0, 0) and report.stopped_at in (STOP_MARK, "the end of the log")
    assert all(len(check_runs_of(fake_github, s.head_sha)) == 1 for s in scenarios)
    # GitHub was never asked to redeliver: the app had what it needed
    assert fake_github.redelivery_requests == [] and fake_github.calls_to("POST", "/app/hook/deliveries/*/attempts") == []
    assert [c.query.get("per_page") for c in fake_github.calls_to("GET", "/app/hook/deliveries")] == ["100", "100"]

    async with bot.webhooks.session.get(f"{bot.url}/metrics") as response:
        text = await response.text()
    assert 'codegenapp_deliveries_recovered_total{source="recovered"}' in text
    health = await delivery_log_health(bot)
    assert (health["mode"], health["failed"], health["error"], health["interval_seconds"]) == \
        ("webhook", False, None, 300)
    assert health["last_run"] is not None


async def test_a_webhook_arriving_while_the_sweep_fetches_its_guid_is_stored_once(
        start_bot, fake_github) -> None:  # type: ignore[no-untyped-def]
    bot = await start_bot()  # no sweep of its own: the test runs it
    fake_github.webhook_secret = WEBHOOK_SECRET
    [scenario] = pull_requests(fake_github, 1)
    entry = await fake_github.deliver("pull_request", scenario.payload())  # no webhook URL: it failed
    fetching = fake_github.hold_next("GET", "/app/hook/deliveries/*", before_handling=True)
    sweep = asyncio.create_task(bot.services.delivery_log.sweep())
    await asyncio.wait_for(fetching.arrived.wait(), 10)
    with bot.services.bus.subscribe() as events:
        answer = await bot.webhooks.send("pull_request", scenario.payload(), delivery_id=entry["guid"])
        assert answer.status == 202  # GitHub's redelivery (or the late original) got there first
        fetching.release()
        report = await asyncio.wait_for(sweep, 10)
        await wait_for(events, "job.finished", delivery_id=entry["guid"], timeout=30)
    assert (report.ingested, report.duplicates, report.skipped) == (0, 1, 0)
    assert await stored_sources(bot.store, [entry["guid"]]) == {entry["guid"]: DELIVERY_WEBHOOK}
    assert await jobs_per_delivery(bot.store, [entry["guid"]]) == {entry["guid"]: 1}
    assert len(check_runs_of(fake_github, scenario.head_sha)) == 1


async def test_a_recovered_backlog_never_holds_up_a_live_delivery(
        start_bot, fake_github, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Twenty deliveries missed, the webhook slot held: the sweep stores no more than `max_queued` queued jobs
    and waits. A live delivery sent then is queued behind those few, not behind the whole backlog, and the
    sweep ends once the queue drains."""
    monkeypatch.setattr(webhooks, "SLOT_WAIT_SECONDS", 0.0)  # the live delivery is queued, not handed a slot
    bot = await start_bot(WEBHOOK_CONCURRENCY="1")
    fake_github.webhook_secret = WEBHOOK_SECRET
    sweeper, worker = bot.services.delivery_log, bot.services.worker
    sweeper.max_queued = 5
    gate, entered = asyncio.Event(), asyncio.Event()
    handle = worker.handlers[JOB_WEBHOOK]

    async def held(job):  # type: ignore[no-untyped-def]
        entered.set()
        await gate.wait()
        await handle(job)

    monkeypatch.setitem(worker.handlers, JOB_WEBHOOK, held)
    missed = [(await fake_github.deliver("star", {"action": "created"}))["guid"] for _ in range(20)]
    with bot.services.bus.subscribe() as events:
        sweep = asyncio.create_task(sweeper.sweep())
        await asyncio.wait_for(entered.wait(), 10)  # the oldest is running (held); then five queue, no more
        await wait_for(events, "delivery_log.waiting", queued=5, ingested=6, timeout=10)
        assert len(await stored_sources(bot.store, missed)) == 6 and not sweep.done()
        assert await bot.store.jobs.queued(JOB_WEBHOOK) == 5
        live = str(uuid.uuid4())
        assert (await bot.webhooks.send("star", {"action": "created"}, delivery_id=live)).status == 202
        gate.set()
        finished: list[str] = []
        async with asyncio.timeout(30):
            while len(finished) < 21:
                event = await wait_for(events, "job.finished", kind=JOB_WEBHOOK)
                assert event.data["outcome"] == "done"
                finished.append(event.data["delivery_id"])
        report = await asyncio.wait_for(sweep, 10)
    assert finished.index(live) == 6  # behind the running one and the five queued, ahead of the other 14
    assert finished[:6] == missed[:6] and sorted(finished) == sorted([*missed, live])
    assert (report.ingested, report.duplicates, report.skipped) == (20, 0, 0)
    assert await jobs_per_delivery(bot.store, missed) == {g: 1 for g in missed}


async def test_malformed_log_entries_are_recorded_as_skipped_and_do_not_stop_the_sweep(
        start_bot, fake_github) -> None:  # type: ignore[no-untyped-def]
    bot = await start_bot()
    fake_github.webhook_secret = WEBHOOK_SECRET
    [scenario] = pull_requests(fake_github, 1)
    good = await fake_github.deliver("pull_request", scenario.payload())  # the oldest: ingested last... first
    no_payload = await fake_github.deliver("pull_request", scenario.payload("edited"))
    no_payload["request"]["payload"] = None
    not_an_object = await fake_github.deliver("issue_comment", {"action": "created"})
    not_an_object["request"]["payload"] = ["a", "list"]
    headless = await fake_github.deliver("pull_request", scenario.payload("reopened"))
    del headless["request"]["payload"]["pull_request"]["head"]
    refused = await fake_github.deliver("pull_request", {**scenario.payload("closed"),
                                                         "installation": {"id": 2**63}})
    dateless = await fake_github.deliver("push", {"ref": "refs/heads/main"})
    dateless["delivered_at"] = "a while ago"

    report = await bot.services.delivery_log.sweep()
    assert (report.ingested, report.skipped) == (1, 5)
    skipped = {s.guid: s for s in await bot.store.delivery_log.skipped()}
    assert set(skipped) == {e["guid"] for e in (no_payload, not_an_object, headless, refused, dateless)}
    assert "no payload" in skipped[no_payload["guid"]].reason
    assert "not a JSON object" in skipped[not_an_object["guid"]].reason
    assert "has no `pull_request.head.sha`" in skipped[headless["guid"]].reason
    assert "installation.id" in skipped[refused["guid"]].reason
    assert "delivered_at" in skipped[dateless["guid"]].reason
    assert skipped[headless["guid"]].log_id == headless["id"] and skipped[headless["guid"]].event == "pull_request"
    assert await stored_sources(bot.store, [good["guid"]]) == {good["guid"]: DELIVERY_RECOVERED}
    # skipped once: the next sweep neither fetches nor records them again
    fetched = len(fake_github.calls_to("GET", "/app/hook/deliveries/*"))
    again = await bot.services.delivery_log.sweep()
    assert (again.ingested, again.skipped) == (0, 0)
    assert len(fake_github.calls_to("GET", "/app/hook/deliveries/*")) == fetched


async def test_two_app_instances_on_one_database_never_sweep_at_once(start_bot, fake_github) -> None:  # type: ignore[no-untyped-def]
    first, second = await start_bot(), await start_bot()  # one DATA_DIR: one SQLite database
    fake_github.webhook_secret = WEBHOOK_SECRET
    [scenario] = pull_requests(fake_github, 1)
    entry = await fake_github.deliver("pull_request", scenario.payload())
    listing = fake_github.hold_next("GET", "/app/hook/deliveries", before_handling=True)
    sweeping = asyncio.create_task(first.services.delivery_log.sweep())
    await asyncio.wait_for(listing.arrived.wait(), 10)
    assert await second.services.delivery_log.sweep() is None  # the lease is the first one's
    assert len(fake_github.calls_to("GET", "/app/hook/deliveries")) == 0  # only the held one, unanswered
    listing.release()
    report = await asyncio.wait_for(sweeping, 10)
    assert report is not None and report.ingested == 1
    after = await second.services.delivery_log.sweep()  # free again: it sweeps, and finds it known
    assert after is not None and (after.ingested, after.duplicates) == (0, 0)
    assert await jobs_per_delivery(first.store, [entry["guid"]]) == {entry["guid"]: 1}


async def test_a_sweep_github_refuses_is_reported_in_health_and_the_next_one_recovers(
        start_bot, fake_github) -> None:  # type: ignore[no-untyped-def]
    bot = await start_bot()
    fake_github.fail_next("GET", "/app/hook/deliveries", status=401,
                          body={"message": "'Expiration time' claim ('exp') is too far in the future"})
    with pytest.raises(Exception):
        await bot.services.delivery_log.sweep()
    last = await last_sweep(bot.store)
    assert last is not None and last["ok"] is False and "401" in last["error"]
    health = await delivery_log_health(bot)  # a failed sweep is reported, it does not make the app unhealthy
    assert health["failed"] is True and "401" in health["error"]
    assert await bot.services.delivery_log.sweep() is not None
    assert (await last_sweep(bot.store))["ok"] is True


async def test_a_sweep_cut_short_resumes_from_where_it_got_to_past_pages_of_known_deliveries(
        start_bot, fake_github) -> None:  # type: ignore[no-untyped-def]
    """Four deliveries missed; the sweep ingests the two oldest, then GitHub refuses it. Live webhooks arrive
    meanwhile, a whole page of them, all known: the next sweep still goes past them to the two it lacks."""
    bot = await start_bot()
    bot.services.delivery_log.per_page = 2
    fake_github.webhook_secret = WEBHOOK_SECRET
    scenarios = pull_requests(fake_github, 6)
    missed = [await fake_github.deliver("pull_request", s.payload()) for s in scenarios[:4]]
    fake_github.fail_next("GET", f"/app/hook/deliveries/{missed[2]['id']}", status=401,
                          body={"message": "A JSON web token could not be decoded"})
    with pytest.raises(Exception):
        await bot.services.delivery_log.sweep()
    guids = [e["guid"] for e in missed]
    assert set(await stored_sources(bot.store, guids)) == set(guids[:2])
    assert (await bot.store.app_state.get("delivery_log_sweep"))["floor"] is not None  # how far it got

    fake_github.webhook_url = bot.webhooks.url  # the app is reachable again: two live deliveries
    live = [await fake_github.deliver("pull_request", s.payload()) for s in scenarios[4:]]
    assert {e["status"] for e in live} == {"OK"}
    report = await bot.services.delivery_log.sweep()
    assert report.ingested == 2 and report.pages >= 2  # past the first page, all of it known
    everything = guids + [e["guid"] for e in live]
    assert await jobs_per_delivery(bot.store, everything) == {g: 1 for g in everything}
    assert await stored_sources(bot.store, guids[2:]) == {g: DELIVERY_RECOVERED for g in guids[2:]}


async def test_a_new_database_ingests_only_the_first_lookback_of_the_apps_history(
        start_bot, fake_github) -> None:  # type: ignore[no-untyped-def]
    """A new database against an App with history: a command of two hours ago (a merge, an agent run) is
    not run again; what GitHub failed to deliver ten minutes ago is."""
    fake_github.webhook_secret, fake_github.webhook_url = WEBHOOK_SECRET, nowhere()
    old, recent = pull_requests(fake_github, 2)
    entries = [await fake_github.deliver("pull_request", s.payload()) for s in (old, recent)]
    now = datetime.now(UTC)
    for entry, age in zip(entries, (timedelta(hours=2), timedelta(minutes=10)), strict=True):
        entry["delivered_at"] = (now - age).isoformat().replace("+00:00", "Z")
    bot = await start_bot()  # SWEEP_FIRST_LOOKBACK: 3600 by default
    report = await bot.services.delivery_log.sweep()
    assert (report.ingested, report.skipped, report.stopped_at) == (1, 0, STOP_LOOKBACK)
    guids = [e["guid"] for e in entries]
    assert await stored_sources(bot.store, guids) == {guids[1]: DELIVERY_RECOVERED}
    assert await bot.store.delivery_log.known(guids) == {guids[1]}


async def test_a_delivery_github_refuses_is_skipped_with_the_reason_and_the_sweep_goes_on(
        start_bot, fake_github) -> None:  # type: ignore[no-untyped-def]
    """A 403 or 422 on one delivery (not a rate limit) is that delivery's: asking again will not help. It is
    recorded as skipped; the deliveries after it are ingested, and the next sweep does not stop on it."""
    bot = await start_bot()
    fake_github.webhook_secret = WEBHOOK_SECRET
    scenarios = pull_requests(fake_github, 3)
    missed = [await fake_github.deliver("pull_request", s.payload()) for s in scenarios]
    fake_github.fail_next("GET", f"/app/hook/deliveries/{missed[0]['id']}", status=403,
                          body={"message": "Resource not accessible by integration"})
    fake_github.fail_next("GET", f"/app/hook/deliveries/{missed[1]['id']}", status=422)
    report = await bot.services.delivery_log.sweep()
    assert (report.ingested, report.skipped) == (1, 2)
    skipped = {s.guid: s.reason for s in await bot.store.delivery_log.skipped()}
    assert "403" in skipped[missed[0]["guid"]] and "not accessible" in skipped[missed[0]["guid"]]
    assert "422" in skipped[missed[1]["guid"]]
    assert await stored_sources(bot.store, [missed[2]["guid"]]) == {missed[2]["guid"]: DELIVERY_RECOVERED}
    again = await bot.services.delivery_log.sweep()
    assert (again.ingested, again.skipped) == (0, 0)


class _FailingLog(HookDeliveries):
    """A delivery log of `entries` whose client fails (5xx through its retries) on fetching `failing`."""

    def __init__(self, entries: list[LoggedDelivery], failing: int) -> None:
        super().__init__(self)  # type: ignore[arg-type]  # its own client: getitem below
        self.entries, self.failing = entries, failing

    async def pages(self, *, per_page: int = 100):  # type: ignore[no-untyped-def,override]
        yield list(self.entries)

    async def getitem(self, url: str, variables: dict[str, str]) -> dict[str, Any]:
        if variables["delivery_id"] == str(self.failing):
            raise GitHubFailing("GitHub answered 502", "GET", f"https://api.github.com/app/hook/deliveries/{self.failing}", 4)
        return {"request": {"headers": {}, "payload": {"action": "opened"}}}


async def test_a_delivery_github_keeps_failing_on_is_skipped_after_three_sweeps(store) -> None:  # type: ignore[no-untyped-def]
    """A 5xx that outlives the client's retries fails the sweep (it is transient, as a rule), but the third
    sweep in a row that fails on the same delivery skips it, so that it cannot stop every later one."""
    now = datetime.now(UTC)
    entries = [LoggedDelivery(id=n, guid=f"g{n}", delivered_at=now - timedelta(minutes=10 - n), event="pull_request",
                              action="opened", redelivery=False, status="failed", installation_id=1, repository_id=2)
               for n in (1, 2)]
    ingested: list[str] = []

    async def ingest(guid: str, event: str, payload: dict[str, Any], source: str) -> Ingested:
        ingested.append(guid)
        return Ingested(accepted=True)

    sweeper = DeliveryLogSweep(store, lambda: _FailingLog(entries, failing=1), ingest=ingest,  # type: ignore[arg-type,return-value]
                               shape_problem=lambda *_: None, source=DELIVERY_RECOVERED, interval=0)
    for _ in range(2):
        with pytest.raises(GitHubFailing):
            await sweeper.sweep()
    assert ingested == [] and await store.delivery_log.skipped() == []
    report = await sweeper.sweep()
    assert (report.ingested, report.skipped) == (1, 1) and ingested == ["g2"]
    [skipped] = await store.delivery_log.skipped()
    assert skipped.guid == "g1" and "3 sweeps in a row" in skipped.reason and "502" in skipped.reason


# ---- fuzzed log entries ------------------------------------------------------------------------------

JSON = st.recursive(st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
                    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
                    max_leaves=8)
PATHS = st.sampled_from([(), ("pull_request",), ("pull_request", "head"), ("pull_request", "head", "sha"),
                         ("pull_request", "base"), ("pull_request", "number"), ("repository",),
                         ("repository", "full_name"), ("installation",), ("installation", "id"), ("action",)])
ENTRY_FIELDS = st.sampled_from(["guid", "event", "action", "delivered_at", "id", "installation_id"])


@st.composite
def breakages(draw: st.DrawFn) -> dict[str, Any]:
    """How one log entry is broken: a payload path set to a random value, a list field, a header."""
    return {"path": draw(PATHS), "value": draw(JSON), "field": draw(st.none() | ENTRY_FIELDS),
            "field_value": draw(JSON), "header": draw(st.none() | st.sampled_from(["X-GitHub-Delivery",
                                                                                    "X-GitHub-Event"]))}


def _break(entry: dict[str, Any], how: dict[str, Any]) -> None:
    payload = entry["request"]["payload"]
    *parents, last = how["path"] or (None,)
    if last is None:
        entry["request"]["payload"] = how["value"]
    else:
        for key in parents:
            payload = payload[key]
        payload[last] = how["value"]
    if how["field"] is not None:
        value = how["field_value"]
        # a time GitHub would never list out of order (before the 3-day horizon) would end the sweep early
        entry[how["field"]] = f"x{value}" if how["field"] == "delivered_at" and isinstance(value, str) else value
    if how["header"] is not None:
        entry["request"]["headers"][how["header"]] = str(how["value"])[:40]


async def test_fuzzed_log_entries_never_stop_the_sweep(start_bot, fake_github) -> None:  # type: ignore[no-untyped-def]
    """Each example breaks a few entries at random; the sweep must end, ingest the whole entry logged after
    them, and leave every readable guid known (stored or skipped), never fetched twice."""
    bot = await start_bot(WORKER_CONCURRENCY="1")
    fake_github.webhook_secret = WEBHOOK_SECRET
    [scenario] = pull_requests(fake_github, 1)
    loop = asyncio.get_running_loop()

    async def example(hows: list[dict[str, Any]]) -> None:
        for how in hows:
            payload = copy.deepcopy(scenario.payload("edited"))
            entry = await fake_github.deliver("pull_request", payload, guid=str(uuid.uuid4()))
            _break(entry, how)
        sentinel = await fake_github.deliver("pull_request", scenario.payload("labeled"))
        report = await bot.services.delivery_log.sweep()
        assert report is not None
        assert await stored_sources(bot.store, [sentinel["guid"]]) == {sentinel["guid"]: DELIVERY_RECOVERED}
        readable = [e["guid"] for e in fake_github.hook_deliveries
                    if isinstance(read_entry({k: e.get(k) for k in ("id", "guid", "delivered_at", "event")}),
                                  LoggedDelivery) and e["event"] != "ping"]
        known = await bot.store.delivery_log.known(readable)
        assert known == set(readable)

    @settings(max_examples=40, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(st.lists(breakages(), min_size=1, max_size=3))
    def run(hows: list[dict[str, Any]]) -> None:
        asyncio.run_coroutine_threadsafe(example(hows), loop).result(timeout=60)

    await asyncio.to_thread(run)
    assert fake_github.redelivery_requests == []
