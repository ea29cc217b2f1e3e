"""The UI check's proxy: which requests it takes (pure), and the real relay over a Unix socket."""

import asyncio
import base64
import os
import socket
from pathlib import Path

import pytest

from pipeline.ui_check.proxy import AppProxy, Credential, Origin, SandboxSocket, decide, decide_request, rewrite_head
from pipeline.ui_check.screenshots import publicly_reachable, screenshot_file, screenshots_dir

ORIGIN = Origin.of("http://127.0.0.1:8080")
CREDENTIAL = Credential("ui-check", "s3cret-token")


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def auth_line(credential: Credential) -> bytes:
    return f"Proxy-Authorization: {basic(credential.username, credential.password)}\r\n".encode()


@pytest.mark.parametrize(("method", "target", "allowed", "path"), [
    ("GET", "http://127.0.0.1:8080/", True, "/"),
    ("GET", "http://127.0.0.1:8080", True, "/"),
    ("POST", "http://127.0.0.1:8080/login?next=%2F", True, "/login?next=%2F"),
    ("GET", "http://127.0.0.1:3001/health", False, ""),
    ("GET", "http://localhost:8080/", False, ""),  # another origin, even if it resolves alike
    ("GET", "https://127.0.0.1:8080/", False, ""),
    ("GET", "http://user@127.0.0.1:8080/", False, ""),
    ("GET", "/relative", False, ""),
    ("GET", "http://127.0.0.1:99999/", False, ""),
    ("CONNECT", "127.0.0.1:8080", True, ""),
    ("CONNECT", "127.0.0.1:5432", False, ""),
    ("CONNECT", "accounts.google.com:443", False, ""),
])
def test_only_the_apps_origin_is_taken(method: str, target: str, allowed: bool, path: str) -> None:
    decision = decide(method, target, ORIGIN)
    assert decision.allowed is allowed
    if allowed:
        assert decision.tunnel is (method == "CONNECT") and decision.target == path


@pytest.mark.parametrize(("authorization", "accepted"), [
    (basic("ui-check", "s3cret-token"), True),
    ("basic " + basic("ui-check", "s3cret-token").split()[1], True),  # the scheme in any case
    (None, False),
    ("", False),
    (basic("ui-check", "s3cret-tokem"), False),
    (basic("ui-check", "s3cret-token "), False),
    (basic("other", "s3cret-token"), False),
    (basic("", "ui-check:s3cret-token"), False),
    ("Bearer s3cret-token", False),
    ("Basic", False),
    ("Basic not*base64", False),
    ("Basic dWktY2hlY2s6czNjcmV0LXRva2V", False),  # cut short
])
def test_the_credential_is_basic_with_exactly_that_user_and_password(authorization: str | None,
                                                                      accepted: bool) -> None:
    assert CREDENTIAL.accepts(authorization) is accepted


@pytest.mark.parametrize(("head", "allowed", "challenge"), [
    (b"GET http://127.0.0.1:8080/ HTTP/1.1\r\nHost: a\r\n" + auth_line(CREDENTIAL), True, False),
    (b"CONNECT 127.0.0.1:8080 HTTP/1.1\r\nproxy-authorization:" + auth_line(CREDENTIAL).split(b":", 1)[1],
     True, False),
    (b"GET http://127.0.0.1:3001/ HTTP/1.1\r\nHost: a\r\n" + auth_line(CREDENTIAL), False, False),  # 403
    (b"GET http://127.0.0.1:8080/ HTTP/1.1\r\nHost: a\r\n", False, True),
    (b"CONNECT 127.0.0.1:8080 HTTP/1.1\r\n", False, True),
    (b"GET http://127.0.0.1:8080/ HTTP/1.1\r\n" + auth_line(Credential("ui-check", "guess")), False, True),
    (b"GET http://127.0.0.1:3001/ HTTP/1.1\r\n", False, True),  # nothing about the origin without it
    (b"GET http://127.0.0.1:8080/ HTTP/1.1\r\n" + auth_line(CREDENTIAL) * 2, False, True),  # one header only
    (b"GET http://127.0.0.1:8080/ HTTP/1.1\r\nAuthorization: " + basic("ui-check", "s3cret-token").encode()
     + b"\r\n", False, True),  # the app's header is not the proxy's
])
def test_the_credential_comes_before_the_origin(head: bytes, allowed: bool, challenge: bool) -> None:
    _, decision = decide_request(head + b"\r\n", ORIGIN, CREDENTIAL)
    assert (decision.allowed, decision.challenge) == (allowed, challenge)


def test_each_proxy_has_its_own_credential_and_never_shows_it() -> None:
    first, second = AppProxy(ORIGIN, _no_app), AppProxy(ORIGIN, _no_app)
    assert first.credential.password != second.credential.password
    assert len(first.credential.password) >= 40  # 32 random bytes
    assert first.credential.password not in repr(first.credential)


async def _no_app() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    raise AssertionError("nothing may be relayed")


def test_the_request_head_loses_proxy_and_hop_by_hop_headers() -> None:
    head = (b"GET http://127.0.0.1:8080/a?b=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nProxy-Connection: keep-alive\r\n"
            b"Proxy-Authorization: Basic eDp5\r\nConnection: keep-alive\r\nAccept: text/html\r\n\r\n")
    assert rewrite_head(head, "/a?b=1") == (b"GET /a?b=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAccept: text/html\r\n"
                                            b"Connection: close\r\n\r\n")


async def _app_socket(directory: Path, seen: list[bytes]) -> asyncio.Server:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
        await writer.drain()
        writer.close()

    return await asyncio.start_unix_server(answer, path=str(directory / "app.sock"))


async def _ask(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return answer


async def test_the_proxy_relays_the_app_and_refuses_the_rest(tmp_path: Path) -> None:
    seen: list[bytes] = []
    server = await _app_socket(tmp_path, seen)
    sock = SandboxSocket(tmp_path, "app.sock")
    try:
        async with server, AppProxy(ORIGIN, sock.connect) as proxy:
            auth = auth_line(proxy.credential)
            ok = await _ask(proxy.port, b"GET http://127.0.0.1:8080/x HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n" + auth
                            + b"\r\n")
            refused = await _ask(proxy.port, b"GET http://127.0.0.1:3001/ HTTP/1.1\r\nHost: x\r\n" + auth + b"\r\n")
    finally:
        sock.close()
    assert ok.startswith(b"HTTP/1.1 200 OK") and ok.endswith(b"hello")
    # the app never sees the credential
    assert seen == [b"GET /x HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nConnection: close\r\n\r\n"]
    assert refused.startswith(b"HTTP/1.1 403") and b"only reaches http://127.0.0.1:8080" in refused
    assert list(proxy.blocked) == ["GET http://127.0.0.1:3001/"]


async def test_a_link_planted_in_place_of_the_socket_is_never_followed(tmp_path: Path) -> None:
    host = tmp_path / "host"
    host.mkdir()
    seen: list[bytes] = []
    server = await _app_socket(host, seen)  # a host service PR code would like to reach
    sandbox_dir = tmp_path / "sandbox"
    sandbox_dir.mkdir()
    sock = SandboxSocket(sandbox_dir, "app.sock")
    os.symlink(host / "app.sock", sandbox_dir / "app.sock")
    (tmp_path / "not-a-socket").write_text("x")
    try:
        with pytest.raises(OSError):
            await sock.connect()
        os.unlink(sandbox_dir / "app.sock")
        os.symlink(tmp_path, sandbox_dir / "app.sock")
        with pytest.raises(OSError):
            await sock.connect()
        os.unlink(sandbox_dir / "app.sock")
        os.link(tmp_path / "not-a-socket", sandbox_dir / "app.sock")
        with pytest.raises(OSError):
            await sock.connect()
        async with server, AppProxy(ORIGIN, sock.connect) as proxy:
            answer = await _ask(proxy.port, b"GET http://127.0.0.1:8080/ HTTP/1.1\r\nHost: a\r\n"
                                + auth_line(proxy.credential) + b"\r\n")
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 502") and seen == []


async def test_without_the_runs_credential_the_proxy_answers_407_and_reaches_nothing(tmp_path: Path) -> None:
    seen: list[bytes] = []
    server = await _app_socket(tmp_path, seen)
    sock = SandboxSocket(tmp_path, "app.sock")
    connects = 0

    async def counting_connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        nonlocal connects
        connects += 1
        return await sock.connect()

    get = b"GET http://127.0.0.1:8080/ HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
    connect = b"CONNECT 127.0.0.1:8080 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
    try:
        async with server, AppProxy(ORIGIN, counting_connect) as proxy, \
                AppProxy(ORIGIN, counting_connect) as other_run:
            answers = [await _ask(proxy.port, request + b"\r\n" + b"hello app") for request in (
                get, connect,
                get + auth_line(Credential(proxy.credential.username, "guess")),
                connect + auth_line(Credential(proxy.credential.username, "guess")),
                get + auth_line(other_run.credential),  # another run's credential is no good here
                get + f"Proxy-Authorization: Bearer {proxy.credential.password}\r\n".encode(),
                get + f"Authorization: {basic(proxy.credential.username, proxy.credential.password)}\r\n".encode(),
            )]
            challenged = proxy.challenged
    finally:
        sock.close()
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 407 Proxy Authentication Required\r\n")
        assert b'\r\nProxy-Authenticate: Basic realm="codegenapp-ui"\r\n' in answer
        assert b"hello" not in answer
    assert (challenged, connects, seen, list(proxy.blocked)) == (len(answers), 0, [], [])


async def test_the_directory_is_the_one_opened_even_if_it_is_swapped(tmp_path: Path) -> None:
    (tmp_path / "ui").mkdir()
    sock = SandboxSocket(tmp_path / "ui", "app.sock")
    os.rename(tmp_path / "ui", tmp_path / "moved")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(tmp_path / "moved" / "app.sock"))
    listener.listen()
    os.symlink(tmp_path / "elsewhere", tmp_path / "ui")
    try:
        _, writer = await sock.connect()  # still the directory it opened
        writer.close()
    finally:
        sock.close()
        listener.close()


def test_screenshot_addresses(tmp_path: Path) -> None:
    vid = "a" * 32
    directory = screenshots_dir(tmp_path, vid)
    directory.mkdir(parents=True)
    (directory / ("b" * 32 + ".png")).write_bytes(b"png")
    assert screenshot_file(tmp_path, vid, "b" * 32 + ".png") == directory / ("b" * 32 + ".png")
    for name in ("c" * 32 + ".png", "../../x.png", "b" * 31 + ".png", "B" * 32 + ".png", "b" * 32 + ".PNG"):
        assert screenshot_file(tmp_path, vid, name) is None
    assert screenshot_file(tmp_path, "../" + "a" * 29, "b" * 32 + ".png") is None


@pytest.mark.parametrize(("url", "public"), [
    ("https://codegenapp.example.com", True), ("http://203.0.113.9:3001", False), ("http://8.8.8.8", True),
    ("http://127.0.0.1:3001", False), ("http://localhost:3001", False), ("http://10.0.0.5", False),
    ("http://[::1]:3001", False), ("http://app.localhost", False)])
def test_images_only_for_an_address_github_can_fetch(url: str, public: bool) -> None:
    assert publicly_reachable(url) is public
