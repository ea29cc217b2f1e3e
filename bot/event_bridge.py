"""The event bus and the workers' wake-up across processes, through PostgreSQL LISTEN/NOTIFY.

With several processes on one PostgreSQL database (`serve --no-worker` web processes, `codegenapp worker`
processes), every process runs one PostgresEventBridge on two connections of its own, outside the
SQLAlchemy pool:

- sending: every event published on the local bus and every job wake-up is queued (publish stays
  synchronous and never waits) and the queue goes out in one round trip (`SELECT pg_notify(...) FROM
  unnest(...)`), in order: at once when nothing was sent for COALESCE_SECONDS, else at the end of that
  interval, with whatever was published meanwhile (under load: one statement for many turns of the loop). A message over NOTIFY's 8000 bytes is stored in
  event_payloads and only its id is sent; rows older than `retention_seconds` are deleted, at most once a
  minute, by a process that stores one (the index on created_at keeps that cheap), in a step of its
  own. If the connection fails before the NOTIFY statement succeeded, it reconnects and sends the batch
  (what it has not stored yet) again; once it succeeded (autocommit: committed, so delivered), nothing
  resends it, whatever fails after.
- listening: LISTEN on CHANNEL; another process's messages are delivered to the local bus (never relayed
  back), wake-ups to the local workers; a process's own messages are skipped by their origin. A dropped
  connection is noticed at once when the socket closes (asyncpg's termination callback) and otherwise by
  a keepalive query every `keepalive_seconds`; the bridge then reconnects with backoff and delivers
  RECONNECTED (bot/events.py) locally, and wakes the local workers for every kind: what was notified while
  it was away is lost, so the state kept from events is read again from the database (the worker claims
  what waits; the dashboard's live sockets send every project's status as the database has it).

Delivery is at most once per connection and nothing is replayed: the bus carries news, the database
stays the truth. SQLite needs none of this (one process): the app builds no bridge there.

Both loops outlive any error (a reconnect tries again, backing off, whatever a try raised), and `status()`
says whether both connections are up (/health's `event_bridge`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from datetime import UTC, datetime
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg

from bot.event_wire import WAKE, decode, encode, fits, own_prefix, reference
from bot.events import RECONNECTED, AppEvent, EventBus, JobWakeup

log = logging.getLogger(__name__)

CHANNEL = "codegenapp_events"
RECONNECT_DELAYS = (0.1, 0.5, 1.0, 2.0, 5.0)  # seconds between tries; the last repeats
MAX_PENDING = 10_000  # messages kept while the database is unreachable; the oldest go first
PRUNE_EVERY_SECONDS = 60.0
# Under load, messages wait up to this long to go out together with those published after them.
COALESCE_SECONDS = 0.01

_CONNECTION_ERRORS = (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


def _connection_failed(exc: Exception, connection: asyncpg.Connection | None) -> bool:
    """Whether `exc` means the connection is unusable (asyncpg may also say so with an InternalClientError
    when the server ended it mid-query)."""
    return isinstance(exc, (*_CONNECTION_ERRORS, ConnectionError)) or connection is None or connection.is_closed()


def asyncpg_dsn(database_url: str) -> str:
    """SQLAlchemy's URL (postgresql+asyncpg://...) as asyncpg takes it."""
    return database_url.replace("+asyncpg", "", 1)


class _Lost:
    """The inbox's notice that `connection` closed (stale once another connection listens)."""

    def __init__(self, connection: object) -> None:
        self.connection = connection


class _Outgoing:
    """One message of a batch being sent: its text, or (too large to be notified) its body until stored."""

    def __init__(self, sequence: int, text: str | None, body: str = "") -> None:
        self.sequence = sequence
        self.text = text
        self.body = body


class PostgresEventBridge:
    def __init__(self, dsn: str, bus: EventBus, wakeup: JobWakeup, *, channel: str = CHANNEL,
                 keepalive_seconds: float = 15.0, retention_seconds: float = 3600.0,
                 reconnect_delays: Sequence[float] = RECONNECT_DELAYS,
                 coalesce_seconds: float = COALESCE_SECONDS) -> None:
        self.dsn = dsn
        self.bus = bus
        self.wakeup = wakeup
        self.channel = channel
        self.keepalive_seconds = keepalive_seconds
        self.retention_seconds = retention_seconds
        self.reconnect_delays = tuple(reconnect_delays)
        self.coalesce_seconds = coalesce_seconds
        self._sent_at = float("-inf")  # when the last batch was taken to be sent
        self.origin = uuid.uuid4().hex[:16]
        self._own_prefix = own_prefix(self.origin)
        self.reconnects = 0  # how many times the listening connection came back (tests, logs)
        self.sender_reconnects = 0
        self._reconnecting: set[str] = set()  # "listener", "sender": the connections being replaced
        self._last_error: dict[str, str] | None = None
        self._stored = False  # a payload was stored since the last prune
        self._sequence = 0
        self._pending: deque[tuple[int, str, dict[str, Any]]] = deque(maxlen=MAX_PENDING)
        self._has_pending = asyncio.Event()
        self._inbox: asyncio.Queue[str | _Lost] = asyncio.Queue()
        self._idle = asyncio.Event()  # nothing queued and nothing being sent
        self._idle.set()
        self._listener: asyncpg.Connection | None = None
        self._sender: asyncpg.Connection | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._pruned_at = 0.0
        self._closing = False

    @property
    def listener_pid(self) -> int | None:
        """The server process of the listening connection (tests end it to test the reconnect)."""
        return self._listener.get_server_pid() if self._listener is not None else None

    def status(self) -> dict[str, object]:
        """For /health: whether both connections are up, how often they came back, and the last error met
        (its type only: a driver's message may name hosts or users). A bridge reconnecting is degraded, not
        down: what happens meanwhile reaches the other processes only through the database."""
        connected = not self._reconnecting and all(
            connection is not None and not connection.is_closed() for connection in (self._listener, self._sender))
        return {"connected": connected, "reconnecting": sorted(self._reconnecting),
                "reconnects": self.reconnects + self.sender_reconnects, "last_error": self._last_error}

    def _note_error(self, connection: str, exc: BaseException) -> None:
        self._last_error = {"connection": connection, "error": type(exc).__name__,
                            "at": datetime.now(UTC).isoformat(timespec="seconds")}

    async def start(self) -> None:
        """Connect and LISTEN (raises when the database cannot be reached: the app does not start), then
        relay the bus's and the wake-up's local messages."""
        self._listener = await self._listen()
        try:
            self._sender = await self._connect()
        except BaseException:
            self._listener.terminate()
            raise
        self.bus.relay_to(self._relay_event)
        self.wakeup.relay_to(self._relay_wake)
        self._tasks = [asyncio.create_task(self._send_loop(), name="event-bridge-send"),
                       asyncio.create_task(self._receive_loop(), name="event-bridge-receive")]

    async def close(self, *, grace: float = 2.0) -> None:
        """Send what is queued (waiting up to `grace` seconds), then close both connections."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), grace)
        self._closing = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for connection in (self._listener, self._sender):
            if connection is not None:
                with contextlib.suppress(*_CONNECTION_ERRORS):
                    await asyncio.wait_for(connection.close(), 1.0)
                connection.terminate()

    # sending

    def _relay_event(self, event: AppEvent) -> None:
        self._queue(event.name, event.data)

    def _relay_wake(self, kind: str) -> None:
        self._queue(WAKE, {"kind": kind})

    def _queue(self, name: str, data: dict[str, Any]) -> None:
        self._sequence += 1
        self._pending.append((self._sequence, name, data))
        self._idle.clear()
        self._has_pending.set()

    def _take_pending(self) -> list[tuple[int, str, dict[str, Any]]]:
        batch = list(self._pending)
        self._pending.clear()
        self._has_pending.clear()
        return batch

    async def _send_loop(self) -> None:
        while True:
            if not self._pending:
                self._idle.set()
            await self._has_pending.wait()
            # Busy, at most one NOTIFY statement every `coalesce_seconds`: what was published meanwhile goes
            # in it (a statement is a round trip, and under load a turn of the loop publishes an event or
            # two); a process that sent nothing for that long sends at once.
            if (wait := self._sent_at + self.coalesce_seconds - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            self._sent_at = time.monotonic()
            batch = self._take_pending()  # what was published up to this turn of the loop
            try:
                await self._send(self._encode(batch))
                await self._prune_if_due()
            except Exception:  # noqa: BLE001 - the loop must outlive any one batch, whatever broke
                log.exception("sending %d event(s) to the other processes failed; they are dropped", len(batch))

    def _encode(self, batch: list[tuple[int, str, dict[str, Any]]]) -> list[_Outgoing]:
        outgoing = []
        for sequence, name, data in batch:
            try:
                text = encode(self.origin, sequence, name, data)
            except Exception:  # noqa: BLE001 - one event that cannot be encoded does not hold back the others
                log.exception("event %r cannot be sent to the other processes", name)
                continue
            outgoing.append(_Outgoing(sequence, text) if fits(text) else _Outgoing(sequence, None, text))
        return outgoing

    async def _send(self, outgoing: list[_Outgoing]) -> None:
        """Send the batch, reconnecting until it went out. Once the NOTIFY statement succeeded (in autocommit:
        committed, so delivered) the batch is done and nothing resends it; a payload stored before a failure
        is not stored again. The one ambiguous case is the connection dying while the statement is in flight
        (executed, its answer lost): the batch is sent again then, as nothing tells whether it went out."""
        failures = 0
        while True:
            try:
                if self._sender is None or self._sender.is_closed():
                    raise ConnectionError("no connection to send on")
                for message in outgoing:
                    if message.text is None:
                        payload_id = await self._sender.fetchval(
                            "INSERT INTO event_payloads (body, created_at) VALUES ($1, now()) RETURNING id",
                            message.body)
                        message.text = reference(self.origin, message.sequence, payload_id)
                        self._stored = True
                await self._sender.execute("SELECT pg_notify($1, message) FROM unnest($2::text[]) AS message",
                                           self.channel, [message.text for message in outgoing])
                return
            except Exception as exc:  # noqa: BLE001 - classified just below
                if not _connection_failed(exc, self._sender):
                    raise
                log.warning("sending %d event(s) to the other processes failed (%s); reconnecting",
                            len(outgoing), exc)
                self._note_error("sender", exc)
                self._sender = await self._reconnect(self._sender, self._connect, failures, "sender")
                failures += 1

    async def _prune_if_due(self) -> None:
        """Delete the stored payloads past their retention, at most once a minute, after a send that stored
        one. A step of its own: its failure never resends what already went out (a dead connection is
        replaced by the next send)."""
        if not self._stored or time.monotonic() - self._pruned_at < PRUNE_EVERY_SECONDS:
            return
        self._pruned_at = time.monotonic()
        self._stored = False
        assert self._sender is not None
        try:
            await self._sender.execute(
                "DELETE FROM event_payloads WHERE created_at < now() - make_interval(secs => $1)",
                self.retention_seconds)
        except Exception as exc:  # noqa: BLE001 - the next prune deletes what this one left
            log.warning("pruning old event payloads failed (%s); the next prune deletes them", exc)
            self._note_error("sender", exc)
            if _connection_failed(exc, self._sender):
                self._sender = await self._reconnect(self._sender, self._connect, 0, "sender")

    # listening

    async def _connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.dsn)

    async def _listen(self) -> asyncpg.Connection:
        connection = await self._connect()
        try:
            connection.add_termination_listener(self._on_termination)
            await connection.add_listener(self.channel, self._on_notification)
        except BaseException:
            connection.terminate()
            raise
        return connection

    def _on_notification(self, _connection: object, _pid: int, _channel: str, payload: str) -> None:
        if payload.startswith(self._own_prefix):
            return  # this process's own message (every NOTIFY comes back to its sender): not even decoded
        self._inbox.put_nowait(payload)

    def _on_termination(self, connection: object) -> None:
        if not self._closing:
            self._inbox.put_nowait(_Lost(connection))

    async def _receive_loop(self) -> None:
        failures = 0
        while True:
            try:
                await self._receive_next()
                failures = 0
            except Exception:  # noqa: BLE001 - whatever broke, listening goes on (a dead loop would be silent)
                log.exception("the event bus's listening loop failed; going on")
                await asyncio.sleep(self.reconnect_delays[min(failures, len(self.reconnect_delays) - 1)])
                failures += 1

    async def _receive_next(self) -> None:
        try:
            item: str | _Lost | None = await asyncio.wait_for(self._inbox.get(), self.keepalive_seconds)
        except TimeoutError:
            item = None
        try:
            if isinstance(item, _Lost):
                if item.connection is not self._listener:
                    return  # the connection a reconnect already replaced
                raise ConnectionError("the listening connection was closed")
            if self._listener is None:
                raise ConnectionError("no listening connection")
            if item is None:
                await self._listener.fetchval("SELECT 1", timeout=self.keepalive_seconds)
            else:
                await self._receive(item)
        except Exception as exc:  # noqa: BLE001 - the loop must outlive any one notification
            if not _connection_failed(exc, self._listener):
                log.exception("handling a notification on %s failed", self.channel)
                return
            await self._relisten(exc)

    async def _receive(self, payload: str) -> None:
        try:
            message = decode(payload)
        except ValueError as exc:
            log.warning("ignored a notification on %s: %s", self.channel, exc)
            return
        if message.origin == self.origin:
            return
        if message.ref is not None:
            assert self._listener is not None
            body = await self._listener.fetchval("SELECT body FROM event_payloads WHERE id = $1", message.ref)
            if body is None:
                log.warning("event payload %s is gone (older than %.0f s?): event lost", message.ref,
                            self.retention_seconds)
                return
            try:
                message = decode(body)
            except ValueError as exc:
                log.warning("ignored event payload %s: %s", message.ref, exc)
                return
        if message.name == WAKE:
            kind = message.data.get("kind")
            self.wakeup.deliver(kind if isinstance(kind, str) else None)
        else:
            self.bus.deliver(AppEvent(message.name, message.data, remote=True))

    async def _relisten(self, why: BaseException) -> None:
        log.warning("the event bus's listening connection was lost (%s); reconnecting", why)
        self._note_error("listener", why)
        self._listener = await self._reconnect(self._listener, self._listen, 0, "listener")
        self.reconnects += 1
        log.info("the event bus listens again; what was sent meanwhile is read from the database")
        self.bus.deliver(AppEvent(RECONNECTED, {}))
        self.wakeup.deliver(None)

    async def _reconnect(self, old: asyncpg.Connection | None, connect: Callable[[], Awaitable[asyncpg.Connection]],
                         failures: int, which: str) -> asyncpg.Connection:
        """A new connection in place of `old`, trying until one comes, whatever each try raised (a wrong
        password, too many connections, a timeout...: each may pass), backing off between tries."""
        self._reconnecting.add(which)
        try:
            if old is not None:
                old.terminate()
            while True:
                await asyncio.sleep(self.reconnect_delays[min(failures, len(self.reconnect_delays) - 1)])
                try:
                    connection = await connect()
                except Exception as exc:  # noqa: BLE001 - any error: log it, back off, try again
                    failures += 1
                    self._note_error(which, exc)
                    if isinstance(exc, _CONNECTION_ERRORS):
                        log.warning("reconnecting to PostgreSQL for the event bus failed (%s); trying again", exc)
                    else:
                        log.exception("reconnecting to PostgreSQL for the event bus failed; trying again")
                    continue
                if which == "sender":
                    self.sender_reconnects += 1
                return connection
        finally:
            self._reconnecting.discard(which)
