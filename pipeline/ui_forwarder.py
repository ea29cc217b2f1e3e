"""Runs INSIDE the sandbox, next to the app under test: relays each connection made to a Unix socket
(in a directory the host can reach) to the app's TCP address in the sandbox's own network namespace.

    /usr/bin/python3 -I ui_forwarder.py SOCKET_PATH HOST PORT

Standard library only (it runs with the sandbox's /usr/bin/python3), bind-mounted read-only from the
app's package. It is trusted code, but it runs with the PR's privileges: the host treats whatever
answers on the socket as untrusted (see pipeline/ui_proxy.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys

CHUNK = 64 * 1024


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until end of file, then half-close (the host's proxy uses it too)."""
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        writer.close()


async def _relay(host: str, port: int, client_reader: asyncio.StreamReader,
                 client_writer: asyncio.StreamWriter) -> None:
    try:
        app_reader, app_writer = await asyncio.open_connection(host, port)
    except OSError:  # not listening (yet): the host sees the connection close and tries again
        client_writer.close()
        return
    try:
        await asyncio.gather(pipe(client_reader, app_writer), pipe(app_reader, client_writer))
    finally:
        for writer in (app_writer, client_writer):
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def main(socket_path: str, host: str, port: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(socket_path)
    server = await asyncio.start_unix_server(lambda r, w: _relay(host, port, r, w), path=socket_path)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
