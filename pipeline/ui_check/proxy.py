"""The browser's only way to the app under test: an HTTP proxy on the host's loopback that serves
exactly one origin (the `ui.url` of the config) by relaying into the sandbox, and refuses anything else.

    Chromium --proxy--> AppProxy (host) --unix socket--> forwarder.py (sandbox) --tcp--> the app (sandbox)

AppProxy listens on a Unix socket that only the browser's own sandbox reaches (through its relay, see
pipeline/ui_check/browser.py), or, when the browser is not sandboxed, on 127.0.0.1:ephemeral.

The Unix socket lives in a directory of the workspace, which PR code can write: it could plant a
symbolic link there pointing at a host socket. So the socket is reached through a directory file
descriptor the host opened before the app started, without following links, and must be a socket
(`SandboxSocket`). Whatever answers is untrusted; the proxy only ever connects to that one socket, so
the origin check decides what the browser may ask for, never where bytes go.

Other local processes can reach 127.0.0.1 too (another PR's setup step shares the host's loopback), so
each proxy has a fresh random credential (`Credential`) that every request and CONNECT must carry as
`Proxy-Authorization: Basic ...`; without it the answer is 407 and nothing is relayed. Only Chromium is
given it (Playwright answers the challenge), and the header never reaches the app.
"""

from __future__ import annotations

import asyncio
import collections
import base64
import binascii
import contextlib
import errno
import hmac
import os
import secrets
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from pipeline.ui_check.forwarder import pipe

HEAD_LIMIT = 64 * 1024
CHUNK = 64 * 1024
REALM = "codegenapp-ui"
BLOCKED_KEPT = 100  # refused requests remembered for the log
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "proxy-authorization", "proxy-authenticate", "te",
               "trailer", "upgrade"}

Connect = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


@dataclass(frozen=True)
class Origin:
    scheme: str
    host: str  # lower case, IPv6 without brackets
    port: int

    @classmethod
    def of(cls, url: str) -> "Origin":
        parts = urlsplit(url)
        if parts.hostname is None:
            raise ValueError(f"{url!r} has no host")
        return cls(parts.scheme.lower(), parts.hostname.lower(), parts.port or (443 if parts.scheme == "https" else 80))

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.authority}"


@dataclass(frozen=True)
class Credential:
    """One UI run's proxy credential. The password is never part of its repr, so it cannot end up in a
    log line or a report by way of the object."""

    username: str
    password: str = field(repr=False)

    @classmethod
    def fresh(cls) -> "Credential":
        return cls("ui-check", secrets.token_urlsafe(32))

    def accepts(self, authorization: str | None) -> bool:
        """Whether a `Proxy-Authorization` value is `Basic` with exactly this username and password
        (compared in constant time)."""
        scheme, _, token = (authorization or "").strip().partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            given = base64.b64decode(token.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(given, f"{self.username}:{self.password}".encode())


@dataclass(frozen=True)
class Decision:
    allowed: bool
    tunnel: bool = False  # CONNECT: relay raw bytes after "200 Connection established"
    target: str = ""  # origin-form request target for a plain request
    challenge: bool = False  # no or wrong credentials: 407, whatever was asked for


def decide(method: str, target: str, origin: Origin) -> Decision:
    """Whether a proxy request (`CONNECT host:port`, or `GET http://host:port/path`) is for the app."""
    if method.upper() == "CONNECT":
        try:
            asked = Origin.of(f"{origin.scheme}://{target}")
        except ValueError:
            return Decision(False)
        return Decision(asked.host == origin.host and asked.port == origin.port, tunnel=True)
    try:
        parts = urlsplit(target)
        asked = Origin.of(target)
    except ValueError:
        return Decision(False)
    if asked != origin or parts.username is not None or parts.password is not None:
        return Decision(False)
    path = parts.path or "/"
    return Decision(True, target=path + (f"?{parts.query}" if parts.query else ""))


def header_values(head: bytes, name: str) -> list[str]:
    """Every value of header `name` (any case) in a request head."""
    wanted = name.lower()
    found = []
    for line in head.decode("latin-1").split("\r\n")[1:]:
        key, colon, value = line.partition(":")
        if colon and key.strip().lower() == wanted:
            found.append(value.strip())
    return found


def decide_request(head: bytes, origin: Origin, credential: Credential) -> tuple[str, Decision]:
    """("METHOD target", what to do) for a whole request head: the credential first (one
    `Proxy-Authorization` header, and the right one), then the origin (`decide`)."""
    method, target, _ = (head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2) + ["", ""])[:3]
    asked = f"{method} {target}"
    authorization = header_values(head, "proxy-authorization")
    if len(authorization) != 1 or not credential.accepts(authorization[0]):
        return asked, Decision(False, challenge=True)
    return asked, decide(method, target, origin)


def rewrite_head(head: bytes, target: str) -> bytes:
    """The request head as the app should get it: origin-form target, no proxy or hop-by-hop headers,
    one request per connection."""
    lines = head.decode("latin-1").split("\r\n")
    method, _, version = lines[0].split(" ", 2)
    kept = [line for line in lines[1:] if line and line.split(":", 1)[0].strip().lower() not in _HOP_BY_HOP]
    return "\r\n".join([f"{method} {target} {version}", *kept, "Connection: close", "", ""]).encode("latin-1")


def _reply(status: str, text: str, extra: str = "") -> bytes:
    body = text.encode()
    return (f"HTTP/1.1 {status}\r\n{extra}Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n\r\n").encode() + body


CHALLENGE = _reply("407 Proxy Authentication Required", "CodegenApp's UI check proxy needs its credential\n",
                   f'Proxy-Authenticate: Basic realm="{REALM}"\r\n')


class SandboxSocket:
    """Connects to `name` in a directory the sandbox can write, never following a link planted there."""

    def __init__(self, directory: str | os.PathLike[str], name: str) -> None:
        self.dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        self.name = name

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        fd = os.open(self.name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.dir_fd)
        try:
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                raise OSError(errno.ENOTSOCK, f"{self.name} is not a socket")
            # /proc/self/fd/N names the very inode opened above: no path lookup happens again.
            return await asyncio.open_unix_connection(f"/proc/self/fd/{fd}", limit=CHUNK)
        finally:
            os.close(fd)

    def close(self) -> None:
        if self.dir_fd >= 0:
            os.close(self.dir_fd)
            self.dir_fd = -1


class AppProxy:
    """`async with AppProxy(origin, connect) as proxy:` serves on 127.0.0.1:`proxy.port` (or on the Unix
    socket `unix_path`, for the browser's sandbox) to whoever has
    `proxy.credential` (fresh for each proxy); `blocked` lists what was refused for its origin (method
    and target), in order; `challenged` counts requests answered 407."""

    def __init__(self, origin: Origin, connect: Connect, *, unix_path: str | None = None) -> None:
        self.origin = origin
        self.unix_path = unix_path  # listen there instead of on 127.0.0.1 (the browser's sandbox relays to it)
        self.connect = connect
        self.credential = Credential.fresh()
        self.blocked: collections.deque[str] = collections.deque(maxlen=BLOCKED_KEPT)  # a page may spam
        self.challenged = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> "AppProxy":
        if self.unix_path is not None:
            self._server = await asyncio.start_unix_server(self._handle, self.unix_path, limit=HEAD_LIMIT)
        else:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, limit=HEAD_LIMIT)
            self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._serve(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        asked, decision = decide_request(head, self.origin, self.credential)
        if decision.challenge:  # Chromium's requests often get this first, then come again with it
            self.challenged += 1
            writer.write(CHALLENGE)
            await writer.drain()
            return
        if not decision.allowed:
            self.blocked.append(asked[:300])
            writer.write(_reply("403 Forbidden", f"CodegenApp's UI check only reaches {self.origin}\n"))
            await writer.drain()
            return
        try:
            app_reader, app_writer = await self.connect()
        except OSError as exc:
            writer.write(_reply("502 Bad Gateway", f"the app is not reachable: {exc.strerror or exc}\n"))
            await writer.drain()
            return
        try:
            if decision.tunnel:
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                app_writer.write(rewrite_head(head, decision.target))
            # Raw relay until the app closes: every byte goes to the app's socket and nowhere else.
            upstream = asyncio.create_task(pipe(reader, app_writer))
            await pipe(app_reader, writer)
            upstream.cancel()
            await asyncio.gather(upstream, return_exceptions=True)
        finally:
            app_writer.close()
            with contextlib.suppress(OSError):
                await app_writer.wait_closed()
