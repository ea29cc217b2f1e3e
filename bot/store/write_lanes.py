"""The write lanes of GitHub installations shared by every process on one PostgreSQL database
(`github_write_lanes`): which process sends an installation's writes now (a lease), the times of its writes
in the last hour and GitHub's hold on it. The rules live in bot/github/pacing.py, the use in
bot/github/client.py; `SharedWriteOwnership` is the `bot.github.write_lanes.WriteOwnership` the composition
root gives the GitHub client on PostgreSQL.

Taking a lane is an upsert that only updates a row that is free, expired or already this holder's, and
returns what the new owner needs (as `LeaseStore.acquire`); right after it, the owner's reserved write
slots are appended to the stored send times (see bot/github/write_lanes.py: a dead owner's unused
reservations count as sent for the next one; an owner that died between the two statements sent nothing).
Every lane statement commits by itself (`Database.write(alone=True)`): a taker refused waits on the row
lock only for its own statement, never inside a group-commit batch of other writes.

Lease times are the database's clock (`clock_timestamp()`, the time of the statement, not `now()`, the
time of its transaction), for setting and comparing expiry alike: the hosts' wall clocks never meet. (On
SQLite, where the app keeps its one process's lanes in memory and never uses this store, Python's clock
stands in.) The holder's own view of its lease runs on its monotonic clock from before the statement, a
lower bound of the row's."""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, Float, String, bindparam, case, func, literal, update

from bot.db import Database
from bot.models import GitHubWriteLane, utcnow
from bot.store.prepared import Prepared
from bot.store.sql import upsert_insert


@dataclass(frozen=True)
class LaneClaim:
    """A lane just taken: the send times (epoch seconds) and the hold (epoch) its last owners left."""

    sent_times: Sequence[float]
    hold_until: float | None


def _epoch(when: datetime | None) -> float | None:
    return None if when is None else when.timestamp()


def _at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _clock(is_sqlite: bool) -> tuple[Any, Any]:
    """SQL for (now, now + `b_ttl` seconds) on the database's clock; on SQLite the parameters `b_now` and
    `b_expires_at` (`_clock_params`)."""
    lane = GitHubWriteLane
    if is_sqlite:
        return bindparam("b_now", type_=lane.expires_at.type), bindparam("b_expires_at", type_=lane.expires_at.type)
    return func.clock_timestamp(), func.clock_timestamp() + func.make_interval(0, 0, 0, 0, 0, 0,
                                                                               bindparam("b_ttl", type_=Float))


def _clock_params(is_sqlite: bool, ttl: float) -> dict[str, Any]:
    if not is_sqlite:
        return {"b_ttl": float(ttl)}
    now = utcnow()
    return {"b_now": now, "b_expires_at": now + timedelta(seconds=ttl)}


def _statements(db: Database) -> tuple[Prepared, Prepared, Prepared]:
    """`acquire`'s upsert and its update of the send times, and `renew`'s update, built once."""
    lane = GitHubWriteLane
    now, expires_at = _clock(db.is_sqlite)
    installation, holder = bindparam("b_installation", type_=BigInteger), bindparam("b_holder", type_=String)
    take = upsert_insert(db, lane).values(installation_id=installation, holder=holder, expires_at=expires_at,
                                          sent_times=literal([], lane.sent_times.type))
    take = take.on_conflict_do_update(
        index_elements=["installation_id"], set_={"holder": holder, "expires_at": expires_at},
        where=(lane.holder.is_(None)) | (lane.expires_at.is_(None)) | (lane.expires_at < now) | (lane.holder == holder),
    ).returning(lane.sent_times, lane.hold_until)
    own = (lane.installation_id == installation, lane.holder == holder)
    sent = bindparam("b_sent", type_=lane.sent_times.type)
    reserve = update(lane).where(*own).values(sent_times=sent)
    renew = update(lane).where(*own).values(expires_at=expires_at, sent_times=sent).returning(lane.hold_until)
    return Prepared(take), Prepared(reserve), Prepared(renew)


class WriteLaneStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._take, self._reserve, self._renew = _statements(db)

    async def acquire(self, installation_id: int, holder: str, *, ttl: float,
                      reserved: Sequence[float] = ()) -> LaneClaim | None:
        """Take (or renew) the lane for `ttl` seconds if it is free, expired or `holder`'s own, storing the
        `reserved` send times (epoch) after those it finds; None if another holder's lease runs."""
        params = {"b_installation": installation_id, "b_holder": holder, **_clock_params(self._db.is_sqlite, ttl)}

        def run(conn):  # type: ignore[no-untyped-def]
            row = self._take.run(conn, params).first()
            if row is None:
                return None
            stored = list(row[0] or ())
            if reserved:
                self._reserve.run(conn, {"b_installation": installation_id, "b_holder": holder,
                                         "b_sent": stored + list(reserved)})
            return LaneClaim(stored, _epoch(row[1]))

        return await self._db.write(run, alone=True)

    async def renew(self, installation_id: int, holder: str, *, ttl: float,
                    sent_times: Sequence[float]) -> LaneClaim | None:
        """Extend `holder`'s lease by `ttl` from now, storing the send times so far (with the owner's
        reservations), and return the hold stored now (a hold another process met and recorded, which this one
        may not have heard of); None if the lane is no longer `holder`'s."""
        params = {"b_installation": installation_id, "b_holder": holder, "b_sent": list(sent_times),
                  **_clock_params(self._db.is_sqlite, ttl)}

        def run(conn):  # type: ignore[no-untyped-def]
            row = self._renew.run(conn, params).first()
            return None if row is None else LaneClaim((), _epoch(row[0]))

        return await self._db.write(run, alone=True)

    async def release(self, installation_id: int, holder: str, *, sent_times: Sequence[float],
                      hold_until: float | None) -> None:
        """Free `holder`'s lane, leaving its last hour's send times and the (later) hold."""
        lane = GitHubWriteLane
        values: dict[str, object] = {"holder": None, "expires_at": None, "sent_times": list(sent_times)}
        if hold_until is not None:
            values["hold_until"] = self._later_hold(_at(hold_until))
        stmt = update(lane).where(lane.installation_id == installation_id, lane.holder == holder).values(**values)
        await self._db.write(lambda conn: conn.execute(stmt), alone=True)

    async def record_hold(self, installation_id: int, until: float) -> None:
        """GitHub holds the installation until `until` (epoch), unless a later hold is already recorded."""
        lane = GitHubWriteLane
        when = _at(until)
        stmt = upsert_insert(self._db, lane).values(installation_id=installation_id, sent_times=[], hold_until=when)
        stmt = stmt.on_conflict_do_update(index_elements=["installation_id"],
                                          set_={"hold_until": self._later_hold(when)})
        await self._db.write(lambda conn: conn.execute(stmt), alone=True)

    @staticmethod
    def _later_hold(when: datetime):  # type: ignore[no-untyped-def]
        lane = GitHubWriteLane
        return case((lane.hold_until.is_(None) | (lane.hold_until < when), when), else_=lane.hold_until)


def process_holder() -> str:
    """This process among the others: host, pid and a random part (a pid is reused after a restart)."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(4)}"[:64]


class SharedWriteOwnership:
    """`bot.github.write_lanes.WriteOwnership` on the database: this process is `holder`."""

    shared = True

    def __init__(self, store: WriteLaneStore, *, lease_seconds: float, holder: str | None = None) -> None:
        self._store = store
        self.lease_seconds = lease_seconds
        self.holder = holder or process_holder()

    async def acquire(self, installation_id: int, reserved: Sequence[float] = ()) -> LaneClaim | None:
        return await self._store.acquire(installation_id, self.holder, ttl=self.lease_seconds, reserved=reserved)

    async def renew(self, installation_id: int, sent_times: Sequence[float]) -> LaneClaim | None:
        return await self._store.renew(installation_id, self.holder, ttl=self.lease_seconds, sent_times=sent_times)

    async def release(self, installation_id: int, sent_times: Sequence[float], hold_until: float | None) -> None:
        await self._store.release(installation_id, self.holder, sent_times=sent_times, hold_until=hold_until)

    async def share_hold(self, installation_id: int, until: float) -> None:
        await self._store.record_hold(installation_id, until)
