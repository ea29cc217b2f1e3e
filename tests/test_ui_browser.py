"""The UI check's Chromium in its own bubblewrap sandbox (pipeline/ui_check/browser.py): the wrapper's
arguments, and, from the host, what the processes of a running UI check are and can see."""

from __future__ import annotations

import os
import shlex
import sys
import tempfile
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from pipeline.sandbox.capabilities import SandboxCapabilities
from pipeline.sandbox.limits import Limits
from pipeline.sandbox.sandbox import Sandbox
from pipeline.ui_check.check import BrowserSetup, browser_isolation, browser_sandbox_gap, run_ui_check
from pipeline.ui_check.browser import (BROWSER_UID, HOME, RELAY_MOUNT, RELAY_PORT, bwrap_arguments, launcher_script,
                                       with_profile)
from pipeline.repo_config.ui_block import UiConfig, UiPage
from tests.browser import CHROMIUM, browser_missing
from tests.sandbox_support import needs_bwrap
from tests.test_sandbox import processes_matching
from tests.ui_app import PORT, URL, app_files

BROWSER_FLAG = "--proxy-bypass-list=<-loopback>"  # only the UI check's Chromium has it


def pairs(args: list[str], option: str) -> list[tuple[str, str]]:
    return [(args[i + 1], args[i + 2]) for i, a in enumerate(args) if a == option]


def test_chromium_gets_the_profile_the_app_made_instead_of_playwrights_in_either_spelling() -> None:
    assert with_profile(["--headless", "--user-data-dir=/private/p-1", "about:blank"], "/tmp/b/profile") == \
        ["--headless", "about:blank", "--user-data-dir=/tmp/b/profile"]
    assert with_profile(["--user-data-dir", "/private/p 2", "--remote-debugging-pipe"], "/tmp/b/profile") == \
        ["--remote-debugging-pipe", "--user-data-dir=/tmp/b/profile"]
    assert with_profile(["--remote-debugging-pipe"], "/tmp/b/profile") == \
        ["--remote-debugging-pipe", "--user-data-dir=/tmp/b/profile"]


def test_bwrap_arguments_are_an_allowlist_with_only_the_profile_writable() -> None:
    argv = ["--remote-debugging-pipe", "--user-data-dir=/tmp/playwright-profile-x", "--headless"]
    args = bwrap_arguments(chromium="/usr/bin/chromium", argv=argv, uid=BROWSER_UID, profile="/tmp/playwright-profile-x")
    end = args.index("--")
    options, command = args[:end], args[end + 1:]
    assert command == ["/usr/bin/chromium", *argv]  # Playwright's arguments untouched, after bwrap's
    for flag in ("--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--die-with-parent",
                 "--new-session", "--clearenv"):
        assert flag in options
    assert "--unshare-net" not in options and "--share-net" not in options  # without a relay: the host's network
    assert "--disable-userns" not in options  # Chromium's own sandbox creates namespaces
    assert pairs(options, "--cap-drop") and options[options.index("--cap-drop") + 1] == "ALL"
    assert options[options.index("--uid") + 1] == options[options.index("--gid") + 1] == str(BROWSER_UID)
    assert pairs(options, "--bind") == [("/tmp/playwright-profile-x", "/tmp/playwright-profile-x")]  # only it
    assert "--bind-try" not in options and "--dev-bind" not in options
    sources = [s for s, _ in pairs(options, "--ro-bind") + pairs(options, "--ro-bind-try")]
    assert "/usr" in sources and "/etc/fonts" in sources
    assert "/etc" not in sources and "/" not in sources and "/etc/ssl/private" not in sources
    assert not [s for s in sources if s.startswith(("/root", "/home", "/var/lib", "/run", "/work", "/srv", "/opt"))]
    assert "--tmpfs" in options and ("HOME", HOME) in pairs(options, "--setenv")
    assert options.index("--remount-ro") > options.index("--bind")


def test_with_a_relay_the_browser_gets_its_own_network_and_the_forwarder_starts_first() -> None:
    argv = ["--proxy-server=http://127.0.0.1:3128", "--user-data-dir=/tmp/p"]
    args = bwrap_arguments(chromium="/usr/bin/chromium", argv=argv, uid=BROWSER_UID, profile="/tmp/p",
                           relay="/tmp/codegenapp-browser-x/relay")
    end = args.index("--")
    options, command = args[:end], args[end + 1:]
    assert "--unshare-net" in options and "--share-net" not in options
    assert ("/tmp/codegenapp-browser-x/relay", RELAY_MOUNT) in pairs(options, "--ro-bind")
    assert command[:2] == ["/bin/sh", "-c"] and command[3:] == ["/usr/bin/chromium", *argv]
    assert command[2] == (f"/usr/bin/python3 -I {RELAY_MOUNT}/forwarder.py tcp:127.0.0.1:{RELAY_PORT} "
                          f'unix:{RELAY_MOUNT}/proxy.sock --detach 3>&- 4>&- && exec "$0" "$@"')


def test_bwrap_arguments_refuse_a_profile_that_is_not_a_plain_directory_path() -> None:
    for profile in ("relative/dir", "/", "/tmp", "/tmp/../etc"):
        with pytest.raises(ValueError):
            bwrap_arguments(chromium="/usr/bin/chromium", argv=[], uid=BROWSER_UID, profile=profile)


def test_the_launcher_quotes_its_arguments_and_passes_playwrights_through() -> None:
    script = launcher_script(bwrap="/usr/bin/bwrap", chromium="/opt/my chromium", uid=61001, profile="/tmp/b/profile")
    assert script.startswith(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -I ")
    assert "'/opt/my chromium'" in script and "--uid 61001" in script and "--profile /tmp/b/profile" in script
    assert script.endswith(' -- "$@"\n')


WORKING = SandboxCapabilities(bwrap="/usr/bin/bwrap", bwrap_works=True, user_namespace=True, pid_namespace=True,
                              net_namespace=True, dedicated_uid=True)


@pytest.mark.parametrize(("caps", "is_root", "gap"), [
    (WORKING, True, None),
    (replace(WORKING, dedicated_uid=False), False, None),  # not root: it runs as the app's own uid
    (replace(WORKING, dedicated_uid=False), True, "bubblewrap without a dedicated uid"),
    (replace(WORKING, pid_namespace=False, net_namespace=False), False,
     "bubblewrap without a pid namespace, a network namespace"),
    (SandboxCapabilities(bwrap_works=False, allow_unsandboxed=True), False, "no usable bubblewrap: sandbox mode=unsandboxed"),
    (SandboxCapabilities(bwrap_works=False), True, "no usable bubblewrap: sandbox mode=unavailable"),
])
def test_whether_the_browser_gets_its_sandbox_is_decided_from_the_probe(caps, is_root, gap) -> None:
    assert browser_sandbox_gap(caps, is_root=is_root) == gap


def test_without_a_working_bubblewrap_the_browser_is_started_directly_and_the_step_says_so(tmp_path: Path,
                                                                                          monkeypatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    unsandboxed = SandboxCapabilities(bwrap_works=False, allow_unsandboxed=True)
    isolation = browser_isolation(unsandboxed, "/usr/bin/chromium")
    assert (isolation.executable, isolation.chromium_sandbox) == ("/usr/bin/chromium", False)
    assert isolation.note.startswith("browser: NOT sandboxed (no usable bubblewrap: sandbox mode=unsandboxed)")
    assert (isolation.proxy_socket, isolation.proxy_port, isolation.directory) == (None, None, None)  # on 127.0.0.1
    assert list(tmp_path.iterdir()) == []  # no browser directory made


@needs_bwrap
@pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing()))
async def test_the_browser_of_a_running_ui_check_is_isolated_from_the_app(tmp_path: Path, monkeypatch) -> None:
    # TMPDIR below a 0700 directory, as `mktemp -d`, a service's private tmp or /run/user/N make it: the browser's
    # uid cannot pass it, so its profile and sockets must be elsewhere.
    monkeypatch.setenv("TMPDIR", tempfile.mkdtemp(dir=tmp_path))  # pytest's tmp_path is below a 0700 directory
    monkeypatch.setattr(tempfile, "tempdir", None)
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    key = data_dir / "app-private-key.pem"
    key.write_text("-----BEGIN PRIVATE KEY-----\n")
    marker = f"app-secret-{uuid.uuid4().hex}"
    monkeypatch.setenv("CODEGENAPP_TEST_SECRET", marker)  # in the app's environment, not the browser's
    workspace = tmp_path / "work"
    workspace.mkdir()
    for name, text in app_files().items():
        (workspace / name).write_text(text)
    sandbox = await Sandbox.probe()
    expected_uid = BROWSER_UID if os.geteuid() == 0 else os.getuid()
    seen: list[dict[str, object]] = []

    async def log_line(text: str) -> None:
        if not text.startswith("checking /"):
            return
        # The browser is up and about to load the page: look at its processes from the host.
        for pid in processes_matching(BROWSER_FLAG):
            try:
                argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0]
                status = Path(f"/proc/{pid}/status").read_text()
                environ = Path(f"/proc/{pid}/environ").read_bytes()
                root = f"/proc/{pid}/root"
                seen.append({
                    "argv0": argv0.decode(), "uids": [line.split()[1:] for line in status.splitlines()
                                                      if line.startswith("Uid:")][0],
                    "sees_chromium": os.path.exists(f"{root}/usr/lib/chromium/chromium"),
                    "sees_key": os.path.exists(f"{root}{key}"), "sees_data_dir": os.path.exists(f"{root}{data_dir}"),
                    "sees_workspace": os.path.exists(f"{root}{workspace}"),
                    "env_has_secret": marker.encode() in environ, "net": os.readlink(f"/proc/{pid}/ns/net")})
            except (FileNotFoundError, ProcessLookupError):
                continue

    outcome = await run_ui_check(sandbox, UiConfig(start=f"python3 server.py {PORT}", url=URL, pages=(UiPage("/"),)),
                                 workspace=workspace, env={}, limits=Limits(timeout_seconds=120),
                                 setup=BrowserSetup(chromium_path=CHROMIUM), log_line=log_line)
    assert outcome.problem is None and [p.status for p in outcome.pages] == [200]
    assert outcome.browser_note.startswith(f"browser: sandboxed (bubblewrap, uid {expected_uid}, no network but "
                                           "the proxy")
    browsers = [s for s in seen if str(s["argv0"]).endswith("/chromium/chromium")]
    assert browsers, seen
    for process in seen:  # bwrap and Chromium alike
        assert process["uids"] == [str(expected_uid)] * 4, process
        assert not process["env_has_secret"], process
    for process in browsers:
        assert process["net"] != os.readlink("/proc/self/ns/net"), process  # only its relay to the proxy
        assert process["sees_chromium"], process  # its root is readable from here: the checks below mean something
        assert not process["sees_key"] and not process["sees_data_dir"] and not process["sees_workspace"], process
    assert processes_matching(BROWSER_FLAG) == []  # stopped with the check


async def test_the_forwarder_relays_tcp_to_a_unix_socket_once_detached(tmp_path: Path) -> None:
    """The browser side of the relay: `--detach` returns only once it accepts (no waiting, no retry)."""
    import asyncio
    import socket
    import subprocess

    from pipeline.ui_check.check import FORWARDER

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"echo:" + await reader.readline())
        await writer.drain()
        writer.close()

    server = await asyncio.start_unix_server(answer, path=str(tmp_path / "proxy.sock"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = await asyncio.create_subprocess_exec("/usr/bin/python3", "-I", str(FORWARDER), f"tcp:127.0.0.1:{port}",
                                                f"unix:{tmp_path / 'proxy.sock'}", "--detach",
                                                stdout=subprocess.DEVNULL)
    assert await done.wait() == 0
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"hello\n")
        await writer.drain()
        assert await reader.read() == b"echo:hello\n"
        writer.close()
    finally:
        for pid in processes_matching(f"tcp:127.0.0.1:{port}"):
            os.kill(pid, 9)
        server.close()



async def ignore(text: str) -> None:
    pass


async def test_a_browser_that_is_not_there_fails_the_step_before_the_app_starts(tmp_path: Path) -> None:
    outcome = await run_ui_check(Sandbox(), UiConfig(start="false", url=URL), workspace=tmp_path, env={},
                                 limits=Limits(), setup=BrowserSetup(chromium_path="/usr/bin/no-such-chromium"),
                                 log_line=ignore)
    assert outcome.problem == ("the UI check could not start Chromium at /usr/bin/no-such-chromium (CHROMIUM_PATH): "
                               "there is no executable file there: install Debian's chromium package "
                               "(apt-get install chromium)")


@needs_bwrap
async def test_a_browser_that_does_not_start_fails_the_step_saying_why(tmp_path: Path) -> None:
    """A browser outside /usr: there on the host, not in its sandbox. The step says what ended the launch
    and what to do, not Playwright's "Target page, context or browser has been closed"."""
    from pipeline.ui_check.judge import step_result
    from pipeline.ui_check.proxy import Origin

    workspace = tmp_path / "work"
    workspace.mkdir()
    for name, text in app_files().items():
        (workspace / name).write_text(text)
    outside_usr = tmp_path / "chromium"
    outside_usr.write_text("#!/bin/sh\n")
    outside_usr.chmod(0o755)
    sandbox = await Sandbox.probe()
    if not sandbox.capabilities.sandboxed:
        pytest.skip("the sandbox does not work here: the browser would not be started through bwrap")
    ui = UiConfig(start=f"python3 server.py {PORT}", url=URL, pages=(UiPage("/"),))
    outcome = await run_ui_check(sandbox, ui, workspace=workspace, env={}, limits=Limits(timeout_seconds=60),
                                 setup=BrowserSetup(chromium_path=str(outside_usr)), log_line=ignore)
    why = (f"the UI check could not start Chromium at {outside_usr} (CHROMIUM_PATH): Chromium did not start: "
           f"{outside_usr}: 1: exec: {outside_usr}: not found (CHROMIUM_PATH must be Debian's "
           "chromium, under /usr (apt-get install chromium))")
    assert outcome.problem == why
    step = step_result(outcome, Origin.of(URL), enforce=False, duration=1.0)
    assert (step.status, step.detail) == ("failed", why)
    assert step.output_tail.startswith(why + "\n")
