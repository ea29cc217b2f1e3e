"""Group commit: many concurrent writers share one transaction (and, on PostgreSQL, concurrent lookups of the
same kind share one statement: `flush` may as well read).

Each transaction has a fixed cost whatever it holds (BEGIN, COMMIT and its WAL write, SQLAlchemy's
per-transaction work; on PostgreSQL a round trip), so requests that arrive while one is being written
join the next one. On SQLite `Database.write` also groups the units of work of one turn of the event
loop; this batching is what makes a batch one round trip on PostgreSQL, and lets a flush see all its
items at once (the delivery store's duplicate check). Nothing waits for a timer: a lone request is
flushed at once, by a drainer task (tried: flushing a lone request in the caller's own task lost the
batching under load, 110 → 260 µs per delivery at 32 at once).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger(__name__)


class GroupCommit(Generic[T, R]):
    def __init__(self, flush: Callable[[list[T]], Awaitable[Sequence[R]]], *, max_batch: int = 256) -> None:
        self._flush = flush
        self._max_batch = max_batch
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._drainer: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain())
        # The write goes on even if the caller is cancelled: shield the shared transaction.
        return await asyncio.shield(future)

    async def _drain(self) -> None:
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            await self._flush_batch(batch)

    async def _flush_batch(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._flush([item for item, _ in batch])
        except Exception as exc:  # noqa: BLE001 - one bad item must not fail the others
            if len(batch) == 1:
                _settle(batch[0][1], exc=exc)
                return
            log.warning("group commit of %d items failed (%s); retrying one by one", len(batch), exc)
            for entry in batch:
                await self._flush_batch([entry])
            return
        for (_, future), result in zip(batch, results, strict=True):
            _settle(future, result=result)

    async def close(self) -> None:
        if self._drainer is not None:
            await self._drainer


def _settle(future: asyncio.Future[R], *, result: R | None = None, exc: BaseException | None = None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)  # type: ignore[arg-type]
