"""Where the UI check's sandboxed browser works (pipeline/ui_check/browser_dir.py), what a failed launch
says (launch_failure.py), and /health's browser entry from one real launch (launch_check.py)."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.sandbox.capabilities import SandboxCapabilities
from pipeline.sandbox.sandbox import Sandbox
from pipeline.ui_check.browser import BROWSER_UID
from pipeline.ui_check.browser_dir import NoBrowserDirectory, make_browser_dir, unreachable_because
from pipeline.ui_check.check import FORWARDER
from pipeline.ui_check.launch_check import BrowserHealth, LaunchResult, launch_in_child
from pipeline.ui_check.launch_failure import launch_failure
from tests.browser import CHROMIUM, browser_missing
from tests.sandbox_support import needs_bwrap

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the browser gets a uid of its own only when the app is root")


def private_dir(parent: Path) -> Path:
    """A directory below a 0700 one, like `mktemp -d`'s, a service's private tmp or /run/user/N."""
    (parent / "private").mkdir(mode=0o700)
    os.chmod(parent / "private", 0o700)
    (parent / "private" / "tmp").mkdir()
    return parent / "private" / "tmp"


@pytest.fixture
def public_tmp() -> Iterator[Path]:
    """A directory every user can reach (pytest's own tmp_path is below a 0700 one), with a short path."""
    path = Path(tempfile.mkdtemp(prefix="cg-test-", dir="/tmp"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path)


def mode_and_owner(path: str) -> tuple[str, int]:
    st = os.stat(path)
    return f"{stat.S_IMODE(st.st_mode):04o}", st.st_uid


@needs_root
def test_a_private_tmpdir_is_passed_over_for_one_the_browser_can_reach(public_tmp: Path) -> None:
    private, shared = private_dir(public_tmp), public_tmp / "shared"
    shared.mkdir()
    assert unreachable_because(str(private), BROWSER_UID) == \
        f"{public_tmp / 'private'} is mode 0700, owner uid 0: uid {BROWSER_UID} cannot pass it"
    directory = make_browser_dir(BROWSER_UID, FORWARDER, bases=[str(private), str(shared)])
    try:
        assert os.path.dirname(directory.root) == str(shared) and os.listdir(private) == []
        assert mode_and_owner(directory.root) == ("0711", 0)  # passable, not listable
        assert mode_and_owner(directory.relay) == ("0711", 0)
        assert mode_and_owner(os.path.join(directory.relay, "forwarder.py")) == ("0644", 0)
        assert mode_and_owner(directory.profile) == ("0700", BROWSER_UID)  # the only place it writes
        assert unreachable_because(directory.profile, BROWSER_UID) is None
    finally:
        directory.remove()
    assert not os.path.exists(directory.root)


@needs_root
def test_without_a_reachable_place_the_error_names_each_and_what_to_do(public_tmp: Path) -> None:
    private = private_dir(public_tmp)
    too_long = public_tmp / ("x" * 80)
    too_long.mkdir()
    with pytest.raises(NoBrowserDirectory) as raised:
        make_browser_dir(BROWSER_UID, FORWARDER, bases=[str(private), str(too_long)])
    assert str(raised.value) == (
        f"no directory for the browser's profile and sockets that uid {BROWSER_UID} can reach ("
        f"{private}: {public_tmp / 'private'} is mode 0700, owner uid 0: uid {BROWSER_UID} cannot pass it; "
        f"{too_long}: too long a path for the proxy's Unix socket): set TMPDIR to a directory whose every parent "
        "is searchable by others (o+x), such as /var/tmp")


# What Playwright 1.x raises when the launcher's bwrap cannot start Chromium (shortened: the real message
# repeats the ~1,500-character command line in both logs).
BWRAP_DENIED = """BrowserType.launch: Target page, context or browser has been closed
Browser logs:

<launching> /tmp/x/codegenapp-browser-e9hi42vy/chromium --disable-field-trial-config --headless
<launched> pid=18891
[pid=18891][err] bwrap: Can't find source path /tmp/x/codegenapp-browser-e9hi42vy/relay: Permission denied
Call log:
  - <launching> /tmp/x/codegenapp-browser-e9hi42vy/chromium --disable-field-trial-config --headless
  - <launched> pid=18891
  - [pid=18891][err] bwrap: Can't find source path /tmp/x/codegenapp-browser-e9hi42vy/relay: Permission denied
  - [pid=18891] <gracefully close start>
  - [pid=18891] <process did exit: exitCode=1, signal=null>
  - [pid=18891] finished temporary directories cleanup
"""


def test_a_failed_launch_says_what_ended_it_and_what_to_do() -> None:
    assert launch_failure(BWRAP_DENIED) == (
        "Chromium did not start: bwrap: Can't find source path "
        "/tmp/x/codegenapp-browser-e9hi42vy/relay: Permission denied (the browser's uid cannot reach it: every "
        "directory above it must be searchable by others (o+x))")
    no_userns = BWRAP_DENIED.replace("bwrap: Can't find source path /tmp/x/codegenapp-browser-e9hi42vy/relay: "
                                     "Permission denied", "bwrap: No permissions to creating new namespace, likely "
                                     "because the kernel does not allow non-privileged user namespaces")
    assert "(unprivileged user namespaces look disabled on this host: allow them (sysctl " in launch_failure(no_userns)
    chromium_noise = ("[pid=7][err] [1206/101010.1:ERROR:bus.cc(407)] Failed to connect to the bus\n"
                      "[pid=7][err] /usr/lib/chromium/chromium: error while loading shared libraries: libnss3.so\n"
                      "  - [pid=7] <process did exit: exitCode=127, signal=null>\n")
    assert launch_failure("BrowserType.launch: Target closed\n" + chromium_noise) == (
        "Chromium did not start: /usr/lib/chromium/chromium: error while loading shared "
        "libraries: libnss3.so (reinstall Debian's chromium package)")
    long_tmpdir = ("[pid=7][err] [7:7:1206/230223.8:FATAL:chrome/browser/process_singleton_posix.cc:315] Socket path "
                   "too long: /tmp/lll/org.chromium.Chromium.wFNSje/SingletonSocket\n"
                   "[pid=7] <process did exit: exitCode=null, signal=SIGABRT>\n")
    assert launch_failure("BrowserType.launch: Target closed\n" + long_tmpdir).endswith(
        "Socket path too long: /tmp/lll/org.chromium.Chromium.wFNSje/SingletonSocket (set TMPDIR to a shorter path)")
    assert launch_failure("BrowserType.launch: Target closed\n  - [pid=7] <process did exit: exitCode=null, "
                          "signal=SIGKILL>\n") == (
        "Chromium stopped before it was ready without saying why (signal SIGKILL): check that CHROMIUM_PATH is "
        "Debian's chromium and that `chromium --headless --version` works")
    assert launch_failure("BrowserType.launch: Target closed\n  - [pid=7] <process did exit: exitCode=1, "
                          "signal=null>\n").startswith("Chromium stopped before it was ready without saying why (exit "
                                                       "code 1): ")
    assert launch_failure("BrowserType.launch: Timeout 30000ms exceeded.\nCall log: ...") == \
        "Chromium did not start in time (BrowserType.launch: Timeout 30000ms exceeded.): the host may be overloaded"
    assert launch_failure("BrowserType.launch: something else") == "BrowserType.launch: something else"


WORKING = SandboxCapabilities(bwrap="/usr/bin/bwrap", bwrap_works=True, user_namespace=True, pid_namespace=True,
                              net_namespace=True, dedicated_uid=True)


def test_health_says_checking_until_the_one_launch_is_known_and_apps_of_a_process_share_it(tmp_path: Path) -> None:
    release, launches = threading.Event(), []
    executable = tmp_path / "chromium"
    executable.write_text("#!/bin/sh\n")
    executable.chmod(0o755)

    def check(chromium: str, caps: SandboxCapabilities) -> LaunchResult:
        launches.append(chromium)
        release.wait(10)
        return LaunchResult(ok=True, sandboxed=True, seconds=0.812, directory="/tmp")

    first, second = BrowserHealth(str(executable), WORKING, check=check), BrowserHealth(str(executable), WORKING,
                                                                                        check=check)
    first.start()
    second.start()
    assert first.describe() == {"chromium": str(executable), "found": True, "status": "checking"}
    release.set()
    assert first.wait(10) and second.wait(10)
    assert launches == [str(executable)]  # one launch for both
    assert second.describe() == {"chromium": str(executable), "found": True, "status": "ok", "sandboxed": True,
                                 "directory": "/tmp", "launch_seconds": 0.81}


def test_health_reports_a_failed_launch_with_its_reason(tmp_path: Path) -> None:
    def check(chromium: str, caps: SandboxCapabilities) -> LaunchResult:
        return LaunchResult(ok=False, sandboxed=True, error="Chromium exited with code 1 before it was ready: bwrap: …")

    health = BrowserHealth(str(tmp_path / "chromium"), WORKING, check=check)
    health.start()
    assert health.wait(10)
    assert health.describe() == {"chromium": str(tmp_path / "chromium"), "found": False, "status": "failed",
                                 "sandboxed": False, "error": "Chromium exited with code 1 before it was ready: bwrap: …"}


def test_a_missing_browser_is_not_launched_and_health_says_what_to_install(tmp_path: Path) -> None:
    result = launch_in_child(str(tmp_path / "chromium"), WORKING)
    assert result == LaunchResult(ok=False, error="there is no executable file there: install Debian's chromium "
                                                  "package (apt-get install chromium), or set CHROMIUM_PATH")


@needs_bwrap
@pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing()))
async def test_the_launch_check_starts_the_sandboxed_browser_under_a_private_tmpdir(public_tmp: Path,
                                                                                      monkeypatch) -> None:
    private = private_dir(public_tmp)
    monkeypatch.setenv("TMPDIR", str(private))
    monkeypatch.setattr(tempfile, "tempdir", None)
    caps = (await Sandbox.probe()).capabilities
    if not caps.sandboxed:
        pytest.skip(f"no sandbox on this host ({caps.summary()}): the sandboxed launch cannot be tried")
    result = launch_in_child(CHROMIUM, caps)
    assert result.ok, result
    assert result.sandboxed and result.directory is not None
    assert not result.directory.startswith(str(public_tmp))  # not below the private directory
    assert os.listdir(private) == []  # Playwright's own profile directory was removed, nothing of ours left
