"""The event bus and the workers' wake-up across processes (bot/event_bridge.py, bot/event_wire.py):
two bridges on one real PostgreSQL database stand for two processes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from bot import migrate
from bot.crypto import Crypto
from bot.db import Database
from bot.event_bridge import PostgresEventBridge, asyncpg_dsn
from bot.event_wire import NOTIFY_MAX_BYTES, Received, decode, encode, fits, own_prefix, reference
from bot.events import RECONNECTED, AppEvent, EventBus, JobWakeup, wait_for
from bot.models import PR_OPEN, utcnow
from bot.store import ClaimedJob, Store
from bot.store.tracked_pulls import PullSnapshot
from tests.check_run_support import begin_validation, check_runs_of
from tests.cli_support import ServedApp, cli_env, codegenapp, worker_process
from tests.conftest import APP_ID, WEBHOOK_SECRET
from tests.fakes.github import FakeGitHub
from tests.pg import free_port
from tests.pull_requests import INSTALLATION_ID, open_pull_request, record_project
from worker.runner import Worker

ARRIVAL_BOUND = 1.0  # seconds: the "a dashboard sees a worker's event within a second"


# the wire format (pure)

def test_a_message_round_trips_and_unjsonable_values_travel_as_text() -> None:
    when = datetime(2026, 12, 7, 4, 0, tzinfo=UTC)
    text = encode("me", 1, "validation.completed", {"project_id": "p", "at": when, "n": 2**70, "none": None})
    assert decode(text) == Received("me", "validation.completed",
                                    {"project_id": "p", "at": when.isoformat(), "n": 2**70, "none": None})
    assert decode(reference("me", 2, 17)) == Received("me", ref=17)


def test_equal_events_of_one_batch_stay_two_notifications() -> None:
    assert encode("me", 1, "pr.updated", {"x": 1}) != encode("me", 2, "pr.updated", {"x": 1})


def test_only_payloads_below_notifys_limit_fit() -> None:
    assert fits(encode("me", 1, "e", {"body": "x" * 7000}))
    assert not fits(encode("me", 1, "e", {"body": "x" * NOTIFY_MAX_BYTES}))
    assert not fits(encode("me", 1, "e", {"body": "é" * 4000}))  # 8000 bytes in 4000 characters


def test_every_message_a_process_sends_begins_with_its_own_prefix_and_no_other_does() -> None:
    """What lets a listener skip its own process's notifications without decoding them."""
    mine = own_prefix("me")
    sent = [encode("me", 1, "pr.updated", {"x": 1}), encode("me", 2, "big", {"n": 2**70}), reference("me", 3, 17)]
    assert all(text.startswith(mine) for text in sent)
    assert not any(text.startswith(mine) for text in (encode("meow", 1, "e", {}), encode("m", 1, "e", {}),
                                                      reference("other", 1, 2)))
    assert all(decode(text).origin == "me" for text in sent)


@pytest.mark.parametrize("text", ["not json", "[]", '{"e": "x", "d": {}}', '{"o": "me"}', '{"o": "me", "ref": "1"}',
                                  '{"o": "me", "e": "x", "d": []}'])
def test_what_is_not_a_message_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        decode(text)


def test_the_bus_relays_what_is_published_here_and_not_what_it_delivers() -> None:
    bus, wakeup = EventBus(), JobWakeup()
    relayed: list[object] = []
    woken: list[str | None] = []
    bus.relay_to(relayed.append)
    wakeup.relay_to(relayed.append)
    wakeup.listen(woken.append)
    with bus.subscribe() as queue:
        bus.publish("local", a=1)
        bus.deliver(AppEvent("remote", {"b": 2}))
        wakeup.wake("validate")
        wakeup.deliver("webhook")
        assert [queue.get_nowait().name for _ in range(queue.qsize())] == ["local", "remote"]
    assert relayed == [AppEvent("local", {"a": 1}), "validate"]
    assert woken == ["validate", "webhook"]


async def test_a_dashboard_socket_reads_every_projects_status_again_after_a_reconnect(dashboard) -> None:  # type: ignore[no-untyped-def]
    store = dashboard.services.store
    project = await store.projects.get_project_by_name("acme/widgets")
    async with await dashboard.login("alice", installation_ids=[1]) as session:
        async with session.ws_connect(dashboard.url + "/api/v1/ws") as ws:
            # Another process started a validation while this one was not listening: no event came.
            await store.tracked_pulls.record(project.id, PullSnapshot(
                number=1, title="change", author="octocat", head_sha="a" * 40, head_ref="feature", base_ref="main",
                is_fork=False, draft=False, state=PR_OPEN, opened_at=utcnow(), updated_at=utcnow(), closed_at=None))
            began = await begin_validation(store, project.id, "delivery-elsewhere")
            dashboard.services.bus.deliver(AppEvent(RECONNECTED, {}))
            message = await ws.receive_json(timeout=5)
    assert message["event"] == "project.status.updated"
    assert message["data"]["project_id"] == project.id
    assert message["data"]["validation"]["id"] == began.validation.id


async def test_a_job_retried_runs_again_when_due_not_at_the_fallback_poll(store: Store) -> None:
    failed_once: list[int] = []

    async def flaky(job: ClaimedJob) -> None:
        if not failed_once:
            failed_once.append(job.id)
            raise ValueError("once")

    wakeup = JobWakeup()
    worker = Worker(store, {"flaky": flaky}, bus=EventBus(), wakeup=wakeup, poll_interval=3600)
    with worker.bus.subscribe() as events:
        await worker.start()
        try:
            job_id = await store.jobs.enqueue("flaky", max_attempts=3)
            wakeup.wake("flaky")
            assert (await wait_for(events, "job.finished", timeout=5)).data["outcome"] == "retry"
            finished = await wait_for(events, "job.finished", timeout=5)  # retry_delay(1): 2 s +- 20 %
        finally:
            await worker.stop()
    assert finished.data == {"job_id": job_id, "kind": "flaky", "outcome": "done", "delivery_id": None, "attempts": 2}


# two bridges on PostgreSQL

class Process:
    """What one process of the app has of the bridge: its bus, its wake-up, its bridge."""

    def __init__(self, dsn: str) -> None:
        self.bus = EventBus()
        self.wakeup = JobWakeup()
        self.woken: asyncio.Queue[str | None] = asyncio.Queue()
        self.wakeup.listen(self.woken.put_nowait)
        self.bridge = PostgresEventBridge(dsn, self.bus, self.wakeup, keepalive_seconds=2.0,
                                          reconnect_delays=(0.05, 0.2))


@pytest.fixture
async def dsn(postgres_cluster) -> AsyncIterator[str]:  # type: ignore[no-untyped-def]
    url = postgres_cluster.create_database()
    db = Database(url)
    await migrate.upgrade(db)  # event_payloads
    await db.dispose()
    yield asyncpg_dsn(url)


@pytest.fixture
async def processes(dsn: str) -> AsyncIterator[Callable[[], object]]:
    started: list[Process] = []

    async def start() -> Process:
        process = Process(dsn)
        await process.bridge.start()
        started.append(process)
        return process

    yield start
    for process in started:
        await process.bridge.close()


async def no_more(queue: asyncio.Queue[AppEvent], seconds: float = 0.3) -> list[str]:
    """What else arrives within `seconds` (a round trip to PostgreSQL and back takes milliseconds)."""
    await asyncio.sleep(seconds)
    return [queue.get_nowait().name for _ in range(queue.qsize())]


@pytest.mark.postgres
async def test_an_event_published_in_one_process_arrives_in_the_other_once(processes) -> None:
    a, b = await processes(), await processes()
    with a.bus.subscribe() as on_a, b.bus.subscribe() as on_b:
        started = time.monotonic()
        a.bus.publish("validation.completed", project_id="p1", validation_id="v1", conclusion="success")
        a.bus.publish("validation.completed", project_id="p1", validation_id="v1", conclusion="success")
        a.bus.publish("github.hold", installation_id=7, until=datetime(2026, 12, 7, tzinfo=UTC))
        first = await wait_for(on_b, "validation.completed", timeout=ARRIVAL_BOUND)
        took = time.monotonic() - started
        assert first.data == {"project_id": "p1", "validation_id": "v1", "conclusion": "success"} and first.remote
        assert (await wait_for(on_b, "validation.completed", timeout=ARRIVAL_BOUND)).data == first.data
        hold = await wait_for(on_b, "github.hold", timeout=ARRIVAL_BOUND)
        assert hold.data == {"installation_id": 7, "until": "2026-12-07T00:00:00+00:00"}
        assert await no_more(on_b) == []
        # A has its own three events once each: its notifications come back to it and are skipped.
        own = [on_a.get_nowait() for _ in range(on_a.qsize())]
        assert [(e.name, e.remote) for e in own] == [("validation.completed", False)] * 2 + [("github.hold", False)]
        assert await no_more(on_a) == []
    print(f"cross-process arrival: {took * 1000:.1f} ms")


@pytest.mark.postgres
async def test_an_event_over_notifys_limit_arrives_whole(processes, dsn) -> None:
    a, b = await processes(), await processes()
    log = "line of a long log\n" * 2000  # ~38 kB
    with b.bus.subscribe() as on_b:
        a.bus.publish("validation.progress", project_id="p1", log=log)
        a.bus.publish("validation.progress", project_id="p1", log="short")  # after the long one, in order
        arrived = await wait_for(on_b, "validation.progress", timeout=ARRIVAL_BOUND)
        assert arrived.data == {"project_id": "p1", "log": log}
        assert (await wait_for(on_b, "validation.progress", timeout=ARRIVAL_BOUND)).data["log"] == "short"
    connection = await asyncpg.connect(dsn)
    try:
        assert await connection.fetchval("SELECT count(*) FROM event_payloads") == 1
    finally:
        await connection.close()


@pytest.mark.postgres
async def test_old_event_payloads_are_pruned_when_a_new_one_is_stored(processes, dsn) -> None:
    a, b = await processes(), await processes()
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute("INSERT INTO event_payloads (body, created_at) VALUES ('old', now() - interval '2 hours'),"
                                 " ('recent', now() - interval '10 minutes')")
        with b.bus.subscribe() as on_b:
            a.bus.publish("big", body="x" * 9000)
            await wait_for(on_b, "big", timeout=ARRIVAL_BOUND)
        await asyncio.wait_for(a.bridge._idle.wait(), 5)  # the prune follows the send, on the same connection
        assert sorted(await connection.fetchval("SELECT array_agg(body) FROM event_payloads")) == \
            ["recent", encode(a.bridge.origin, 1, "big", {"body": "x" * 9000})]
    finally:
        await connection.close()


@pytest.mark.postgres
async def test_a_job_queued_in_one_process_wakes_the_workers_of_the_other(processes) -> None:
    a, b = await processes(), await processes()
    a.wakeup.wake("validate")
    assert await asyncio.wait_for(b.woken.get(), ARRIVAL_BOUND) == "validate"
    assert await a.woken.get() == "validate"  # its own, directly, and only once
    await asyncio.sleep(0.3)
    assert a.woken.empty() and b.woken.empty()


@pytest.mark.postgres
async def test_a_listener_whose_connection_dies_reconnects_and_says_so(processes, dsn) -> None:
    a, b = await processes(), await processes()
    killer = await asyncpg.connect(dsn)
    try:
        with b.bus.subscribe() as on_b:
            old_pid = b.bridge.listener_pid
            assert await killer.fetchval("SELECT pg_terminate_backend($1)", old_pid)
            await wait_for(on_b, RECONNECTED, timeout=5)
            assert await asyncio.wait_for(b.woken.get(), 1) is None  # its workers claim whatever waits
            assert b.bridge.listener_pid != old_pid and b.bridge.reconnects == 1
            a.bus.publish("after", n=1)
            a.wakeup.wake("webhook")
            assert (await wait_for(on_b, "after", timeout=ARRIVAL_BOUND)).data == {"n": 1}
            assert await asyncio.wait_for(b.woken.get(), ARRIVAL_BOUND) == "webhook"
            # A's sending connection dies too: it reconnects and sends what was published meanwhile.
            sender_pid = a.bridge._sender.get_server_pid()
            assert await killer.fetchval("SELECT pg_terminate_backend($1)", sender_pid)
            a.bus.publish("after the sender died", n=2)
            assert (await wait_for(on_b, "after the sender died", timeout=5)).data == {"n": 2}
    finally:
        await killer.close()


@pytest.mark.postgres
async def test_a_connection_lost_after_the_notify_went_out_never_sends_the_batch_again(processes, dsn) -> None:
    a, b = await processes(), await processes()
    saboteur = await asyncpg.connect(dsn)
    try:
        # The prune after the send (its first stored payload) ends its own connection: the NOTIFY before it
        # had succeeded (autocommit: committed, so delivered).
        await saboteur.execute("""
            CREATE FUNCTION end_my_connection() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); RETURN NULL; END $$;
            CREATE TRIGGER prune_dies BEFORE DELETE ON event_payloads
                FOR EACH STATEMENT EXECUTE FUNCTION end_my_connection();""")
        with b.bus.subscribe() as on_b:
            a.bus.publish("big", body="x" * 9000)
            a.bus.publish("small", n=1)
            assert (await wait_for(on_b, "big", timeout=ARRIVAL_BOUND)).data == {"body": "x" * 9000}
            assert (await wait_for(on_b, "small", timeout=ARRIVAL_BOUND)).data == {"n": 1}
            await asyncio.wait_for(a.bridge._idle.wait(), 5)
            assert await no_more(on_b) == []  # once each
            assert a.bridge.status()["last_error"]["connection"] == "sender"
            a.bus.publish("after", n=2)  # on the connection that replaced it
            assert (await wait_for(on_b, "after", timeout=5)).data == {"n": 2}
            assert await no_more(on_b) == []
        assert await saboteur.fetchval("SELECT count(*) FROM event_payloads") == 1
    finally:
        await saboteur.close()


@pytest.mark.postgres
async def test_a_payload_stored_before_the_connection_died_is_not_stored_again(processes, dsn) -> None:
    a, b = await processes(), await processes()
    saboteur = await asyncpg.connect(dsn)
    try:
        # The second payload's insert ends its connection once (a sequence: its count survives the rollback).
        await saboteur.execute("""
            CREATE SEQUENCE inserts;
            CREATE FUNCTION end_my_connection_once() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN IF nextval('inserts') = 2 THEN PERFORM pg_terminate_backend(pg_backend_pid()); END IF;
                  RETURN NEW; END $$;
            CREATE TRIGGER second_insert_dies BEFORE INSERT ON event_payloads
                FOR EACH ROW EXECUTE FUNCTION end_my_connection_once();""")
        with b.bus.subscribe() as on_b:
            a.bus.publish("big", n=1, body="x" * 9000)
            a.bus.publish("big", n=2, body="y" * 9000)
            assert (await wait_for(on_b, "big", timeout=5)).data["n"] == 1
            assert (await wait_for(on_b, "big", timeout=5)).data["n"] == 2
            assert await no_more(on_b) == []
        assert await saboteur.fetchval("SELECT count(*) FROM event_payloads") == 2
    finally:
        await saboteur.close()


async def _until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "not within the bound"
        await asyncio.sleep(0.02)


class FailingConnects:
    """The bridge's `_connect`, failing with `error` while `failing` is set: an error the reconnect did not
    expect (asyncpg's InternalClientError is neither an OSError nor a PostgresError)."""

    def __init__(self, bridge: PostgresEventBridge, error: Exception) -> None:
        self.connect = bridge._connect
        self.error = error
        self.failing = True
        self.failed = 0
        bridge._connect = self  # type: ignore[method-assign]

    async def __call__(self) -> asyncpg.Connection:
        if self.failing:
            self.failed += 1
            raise self.error
        return await self.connect()


@pytest.mark.postgres
async def test_both_loops_outlive_an_unexpected_error_while_reconnecting_and_say_they_are_down(
        processes, dsn) -> None:
    a, b = await processes(), await processes()
    killer = await asyncpg.connect(dsn)
    try:
        assert b.bridge.status() == {"connected": True, "reconnecting": [], "reconnects": 0, "last_error": None}
        b_connects = FailingConnects(b.bridge, asyncpg.exceptions.InternalClientError("unexpected"))
        a_connects = FailingConnects(a.bridge, asyncpg.exceptions.InternalClientError("unexpected"))
        with b.bus.subscribe() as on_b:
            assert await killer.fetchval("SELECT pg_terminate_backend($1)", b.bridge.listener_pid)
            assert await killer.fetchval("SELECT pg_terminate_backend($1)", a.bridge._sender.get_server_pid())
            a.bus.publish("meanwhile", n=1)
            await _until(lambda: b_connects.failed >= 2 and a_connects.failed >= 2)
            status = b.bridge.status()
            assert status["connected"] is False and status["reconnecting"] == ["listener"]
            assert status["last_error"]["error"] == "InternalClientError"
            assert a.bridge.status()["reconnecting"] == ["sender"]
            b_connects.failing = a_connects.failing = False
            await wait_for(on_b, RECONNECTED, timeout=5)
            # A's batch went out once its sender was back; whether B listened again by then is a race.
            await asyncio.wait_for(a.bridge._idle.wait(), 5)
            a.bus.publish("after", n=2)
            assert (await wait_for(on_b, "after", timeout=ARRIVAL_BOUND)).data == {"n": 2}
        assert b.bridge.status()["connected"] and b.bridge.status()["reconnects"] == 1
        assert a.bridge.status()["connected"] and a.bridge.status()["reconnects"] == 1
    finally:
        await killer.close()


@pytest.mark.postgres
async def test_health_says_the_bridge_is_reconnecting_and_stays_200(
        postgres_cluster, aiohttp_client, make_settings, fake_github: FakeGitHub) -> None:  # type: ignore[no-untyped-def]
    from bot.app import create_app
    from bot.services import SERVICES

    database_url = postgres_cluster.create_database()
    db = Database(database_url)
    await migrate.upgrade(db)
    await db.dispose()
    settings = make_settings(DATABASE_URL=database_url, GITHUB_API_URL=fake_github.api_url,
                             GITHUB_URL=fake_github.base_url)
    client = await aiohttp_client(create_app(settings, with_worker=False))
    bridge = client.app[SERVICES].event_bridge
    async with client.get("/health") as response:
        assert response.status == 200
        assert (await response.json())["event_bridge"] == {"connected": True, "reconnecting": [], "reconnects": 0,
                                                            "last_error": None}
    connects = FailingConnects(bridge, asyncpg.exceptions.TooManyConnectionsError("too many"))
    killer = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        assert await killer.fetchval("SELECT pg_terminate_backend($1)", bridge.listener_pid)
    finally:
        await killer.close()
    await _until(lambda: connects.failed >= 1)
    async with client.get("/health") as response:
        assert response.status == 200
        health = await response.json()
    assert health["status"] == "ok"
    assert health["event_bridge"]["connected"] is False and health["event_bridge"]["reconnecting"] == ["listener"]
    assert health["event_bridge"]["last_error"]["error"] == "TooManyConnectionsError"
    connects.failing = False
    await _until(lambda: bridge.status()["connected"])
    async with client.get("/health") as response:
        assert (await response.json())["event_bridge"]["reconnects"] == 1


class FreezableProxy:
    """A TCP proxy to PostgreSQL whose `freeze` stops every connection open then without closing it: a
    network that went silent, which no socket error announces."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.frozen: set[asyncio.StreamWriter] = set()
        self._open: set[asyncio.StreamWriter] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    def freeze(self) -> None:
        self.frozen |= self._open

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection(*self.target)
        self._open.add(client_writer)

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while data := await reader.read(65536):
                if client_writer in self.frozen:
                    await asyncio.Event().wait()  # swallowed, and nothing more moves
                writer.write(data)

        await asyncio.gather(pipe(client_reader, server_writer), pipe(server_reader, client_writer),
                             return_exceptions=True)

    async def close(self) -> None:
        self.server.close()
        for writer in self._open:
            writer.close()


@pytest.mark.postgres
async def test_a_listener_whose_network_goes_silent_notices_by_its_keepalive_and_reconnects(processes, dsn) -> None:
    a = await processes()
    host_port = dsn.split("@", 1)[1].split("/", 1)[0]
    proxy = FreezableProxy(host_port.split(":")[0], int(host_port.split(":")[1]))
    port = await proxy.start()
    b = Process(dsn.replace(host_port, f"127.0.0.1:{port}"))
    b.bridge.keepalive_seconds = 0.5
    await b.bridge.start()
    try:
        with b.bus.subscribe() as on_b:
            proxy.freeze()
            a.bus.publish("while silent", n=1)  # lost: nothing reaches B
            await wait_for(on_b, RECONNECTED, timeout=5)  # a keepalive went unanswered
            a.bus.publish("after", n=2)
            assert (await wait_for(on_b, "after", timeout=ARRIVAL_BOUND)).data == {"n": 2}
    finally:
        await b.bridge.close(grace=0.1)
        await proxy.close()


# end to end: `serve --no-worker` and `codegenapp worker` on one database

@pytest.mark.slow
@pytest.mark.postgres
async def test_a_dashboard_on_a_web_process_sees_the_validation_a_worker_process_ran(
        postgres_cluster, tmp_path: Path, app_private_key: str, fake_github: FakeGitHub) -> None:  # type: ignore[no-untyped-def]
    database_url = postgres_cluster.create_database()
    port = free_port()
    env = cli_env(tmp_path, HOME=str(tmp_path), LANG="C.UTF-8", DATABASE_URL=database_url, APP_ID=str(APP_ID),
                  PRIVATE_KEY=app_private_key, WEBHOOK_SECRET=WEBHOOK_SECRET, HOST="127.0.0.1",
                  PUBLIC_URL=f"http://127.0.0.1:{port}", GITHUB_API_URL=fake_github.api_url,
                  GITHUB_URL=fake_github.base_url, GITHUB_CLIENT_ID=fake_github.client_id,
                  GITHUB_CLIENT_SECRET=fake_github.client_secret, LOG_LEVEL="INFO", RESYNC_INTERVAL="0",
                  SWEEP_INTERVAL="0", WEBHOOK_MODE="webhook",
                  JOB_POLL_INTERVAL="3600")  # a worker that polled would not see the job for an hour
    migrated = codegenapp("migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    scenario = open_pull_request(fake_github, config=None)
    store = Store(Database(database_url), Crypto(Crypto.generate_key()))
    try:
        project = await record_project(store, scenario)
    finally:
        await store.close()
    fake_github.approve_oauth_as("octocat", installation_ids=[INSTALLATION_ID])

    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        web = await ServedApp(env, "--no-worker", port=port, session=session).start()
        worker = await worker_process(env).start()  # its first claim, at start, finds nothing
        try:
            async with session.get(web.url + "/auth/login") as response:
                assert response.status == 200 and str(response.url) == web.url + "/", response.url
            async with session.ws_connect(web.url + "/api/v1/ws") as ws:
                started = time.monotonic()
                assert web.webhooks is not None
                assert (await web.webhooks.send("pull_request", scenario.payload("opened"))).status == 202
                completed = await asyncio.wait_for(_next_event(ws, "validation.completed"), 60)
                arrived = time.monotonic()
                took = arrived - started
        finally:
            await worker.stop()
            await web.stop()
    assert completed["project_id"] == project.id and completed["pr_number"] == scenario.number
    assert completed["repository"] == scenario.full_name
    [run] = check_runs_of(fake_github, scenario.head_sha)
    assert run["conclusion"] == "neutral"  # run by the worker process: the web process has no worker
    # The worker's last act before it publishes: completing the check run. Its event reached the socket on
    # the web process within a second of it (the bound; measured: a few milliseconds).
    [completing] = [call for call in fake_github.calls_to("PATCH", f"/repos/{scenario.full_name}/check-runs/*")
                    if (call.json or {}).get("status") == "completed"]
    assert arrived - completing.at < 1.0, arrived - completing.at
    print(f"delivery to the web process -> validation.completed from the worker process on its socket: {took:.2f} s")


async def _next_event(ws: aiohttp.ClientWebSocketResponse, name: str) -> dict[str, Any]:
    while True:
        message = await ws.receive_json()
        if message["event"] == name:
            return message["data"]
