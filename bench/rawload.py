"""A lean HTTP/1.1 load generator for the benchmarks: pre-built requests over keep-alive connections.

aiohttp's client costs ~0.3 ms of CPU per request here, as much as the server it measures, and shares
the machine's two cores with it; this sends bytes built beforehand and reads only the status line and
Content-Length of each answer, as wrk does, so the server gets the CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence


def build_request(host: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items() if name.lower() not in ("host", "content-length")]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.answer: asyncio.Future[int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).lower().split(b"\r\n")
        length = 0
        for line in head[1:]:
            name, _, value = line.partition(b":")
            if name == b"content-length":
                length = int(value)
        if len(self.buffer) < end + 4 + length:
            return
        status = int(head[0][9:12])
        del self.buffer[:end + 4 + length]
        if self.answer is not None and not self.answer.done():
            self.answer.set_result(status)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.answer is not None and not self.answer.done():
            self.answer.set_exception(exc or ConnectionError("the server closed the connection"))

    async def send(self, request: bytes) -> int:
        self.answer = asyncio.get_running_loop().create_future()
        self.transport.write(request)  # type: ignore[union-attr]
        return await self.answer


async def send_all(host: str, port: int | Sequence[int], requests: Iterator[tuple[object, bytes]],
                   concurrency: int, on_answer: Callable[[object, float, float, int], None], *,
                   before_next: Callable[[object], Awaitable[None]] | None = None) -> None:
    """Send every request over `concurrency` keep-alive connections, one at a time on each; call
    `on_answer(key, sent_at, answered_at, status)` (time.monotonic()) for each, then await
    `before_next(key)`, when given, before that connection sends its next request. Several ports: the
    connections go to them in turn (at least one each), and no more than `concurrency` requests are
    in flight at once, so at `concurrency` 1 the requests alternate between the servers."""
    loop = asyncio.get_running_loop()
    ports = [port] if isinstance(port, int) else list(port)
    count = max(concurrency, len(ports))
    connections = [(await loop.create_connection(_Connection, host, ports[i % len(ports)]))[1] for i in range(count)]
    in_flight = asyncio.Semaphore(concurrency) if count > concurrency else contextlib.nullcontext()

    async def drive(connection: _Connection) -> None:
        for key, request in requests:
            async with in_flight:
                sent = time.monotonic()
                status = await connection.send(request)
                on_answer(key, sent, time.monotonic(), status)
                if before_next is not None:
                    await before_next(key)

    try:
        await asyncio.gather(*(drive(connection) for connection in connections))
    finally:
        for connection in connections:
            if connection.transport is not None:
                connection.transport.close()
