"""A small relay, run by the host's UI check on either side of a network namespace boundary: it
listens on one endpoint and relays each connection to another, `unix:PATH` or `tcp:HOST:PORT`.

    /usr/bin/python3 -I forwarder.py LISTEN TARGET [--detach]

- In the app's sandbox, next to the app under test: `unix:<socket in a directory the host can reach>`
  to `tcp:<the app's address in the sandbox's own network namespace>`.
- In the browser's sandbox (pipeline/ui_check/browser.py): `tcp:127.0.0.1:<port>` in the browser's own
  network namespace (where Chromium's proxy setting points) to `unix:<the host proxy's socket>`.

`--detach`: listen first, then go to the background (the caller may go on once this exits: the
endpoint is accepting). Standard library only (it runs with the sandbox's /usr/bin/python3),
bind-mounted read-only from the app's package. It is trusted code, but it runs with the
sandbox's privileges: the host treats whatever answers on the socket as untrusted (see pipeline/ui_check/proxy.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
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


def endpoint(spec: str) -> tuple[str, str, int]:
    """("unix", PATH, 0) or ("tcp", HOST, PORT) from `unix:PATH` or `tcp:HOST:PORT` (HOST may be `::1`)."""
    kind, _, rest = spec.partition(":")
    if kind == "unix" and rest:
        return "unix", rest, 0
    host, _, port = rest.rpartition(":")
    if kind == "tcp" and host and port.isdigit():
        return "tcp", host.strip("[]"), int(port)
    raise ValueError(f"not an endpoint (unix:PATH or tcp:HOST:PORT): {spec!r}")


def listen(spec: str) -> socket.socket:
    kind, address, port = endpoint(spec)
    if kind == "unix":
        with contextlib.suppress(FileNotFoundError):
            os.unlink(address)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(address)
    else:
        sock = socket.create_server((address, port), family=socket.AF_INET6 if ":" in address else socket.AF_INET)
    sock.listen(128)
    return sock


async def _open(spec: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    kind, address, port = endpoint(spec)
    if kind == "unix":
        return await asyncio.open_unix_connection(address)
    return await asyncio.open_connection(address, port)


async def _relay(target: str, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
    try:
        app_reader, app_writer = await _open(target)
    except OSError:  # not listening (yet): the other side sees the connection close and tries again
        client_writer.close()
        return
    try:
        await asyncio.gather(pipe(client_reader, app_writer), pipe(app_reader, client_writer))
    finally:
        for writer in (app_writer, client_writer):
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def serve(sock: socket.socket, target: str) -> None:
    handler = lambda r, w: _relay(target, r, w)  # noqa: E731
    if sock.family == socket.AF_UNIX:
        server = await asyncio.start_unix_server(handler, sock=sock)
    else:
        server = await asyncio.start_server(handler, sock=sock)
    async with server:
        await server.serve_forever()


def main(args: list[str]) -> None:
    detach = "--detach" in args
    listen_spec, target = [a for a in args if a != "--detach"]
    endpoint(target)
    sock = listen(listen_spec)
    if detach and os.fork() != 0:
        os._exit(0)  # the endpoint is accepting: the caller goes on
    asyncio.run(serve(sock, target))


if __name__ == "__main__":
    main(sys.argv[1:])
