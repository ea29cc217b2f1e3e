"""A command's merged stdout/stderr: captured with a cap (`Output`: head and tail kept, the middle
counted) and streamed, decoded, to the caller's `on_output` (`Streamer`). Masking secrets is the
caller's job (pipeline/validation/stages.py), on what it is given here.
"""

from __future__ import annotations

import asyncio
import codecs
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

READ_CHUNK = 64 * 1024


class Output:
    """Merged output with a cap: keeps the first quarter and the last three quarters of the budget."""

    def __init__(self, max_bytes: int) -> None:
        self.head_limit = max_bytes // 4
        self.tail_limit = max_bytes - self.head_limit
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def feed(self, data: bytes) -> None:
        self.total += len(data)
        room = self.head_limit - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data[-self.tail_limit:]
            excess = len(self.tail) - self.tail_limit
            if excess > 0:
                del self.tail[:excess]

    @property
    def dropped(self) -> int:
        return self.total - len(self.head) - len(self.tail)

    def render(self) -> str:
        head = self.head.decode("utf-8", errors="replace")
        tail = self.tail.decode("utf-8", errors="replace")
        if not self.dropped:
            return head + tail
        return f"{head}{omitted_note(self.dropped)}{tail}"


def omitted_note(dropped: int) -> str:
    """What `Output.render` puts between the head and the tail it kept, `dropped` bytes apart."""
    return f"\n… {dropped} bytes omitted …\n"


class Streamer:
    """Decodes output incrementally for the caller's on_output; a failing callback is disabled."""

    def __init__(self, callback: Callable[[str], Awaitable[None]] | None) -> None:
        self.callback = callback
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    async def send_bytes(self, chunk: bytes) -> None:
        if self.callback is not None:
            await self.send(self.decoder.decode(chunk))

    async def flush(self) -> None:
        if self.callback is not None:
            await self.send(self.decoder.decode(b"", final=True))

    async def send(self, text: str) -> None:
        if self.callback is None or not text:
            return
        try:
            await self.callback(text)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("sandbox: on_output callback failed; live output disabled for this run")
            self.callback = None


async def read_output(stream: asyncio.StreamReader | None, output: Output, streamer: Streamer) -> None:
    """Reads the merged stdout/stderr until its end into `output` and `streamer`."""
    assert stream is not None
    while chunk := await stream.read(READ_CHUNK):
        output.feed(chunk)
        await streamer.send_bytes(chunk)
