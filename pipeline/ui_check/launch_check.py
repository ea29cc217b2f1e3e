"""The UI check's browser as /health reports it: one real launch, made at start, the way the UI check
launches it (pipeline/ui_check/check.py `browser_isolation` and `launch`: in its bubblewrap sandbox, as
its uid, from a browser directory of its own), then a page evaluated, so Chromium's own sandbox is
exercised too. Not a guess from the sandbox's capabilities: a private TMPDIR, a missing library or
disabled user namespaces only show when Chromium is started.

The launch runs in a child process (`python3 -I launch_check.py`, this file): the web process never
imports Playwright (its memory is a benchmark target, bench/README.md). A thread waits for it, so
neither start-up nor an event loop waits; until it is known, /health says "checking". The result
depends only on the host, so it is kept for the life of the process, per (Chromium, sandbox decision,
TMPDIR): every app a process builds (the tests build many) shares one launch.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

if __name__ == "__main__":  # run as a script (`python3 -I`): the project root is three directories up
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipeline.sandbox.capabilities import SandboxCapabilities  # noqa: E402
from pipeline.ui_check.browser_dir import NoBrowserDirectory  # noqa: E402
from pipeline.ui_check.check import browser_isolation, browser_sandbox_gap, launch, missing_browser  # noqa: E402
from pipeline.ui_check.launch_failure import launch_failure  # noqa: E402

log = logging.getLogger(__name__)

LAUNCH_SECONDS = 30  # Playwright's own launch timeout
CHILD_SECONDS = 90  # the whole child: Python, Playwright's driver, the launch, a page, closing
_CHILD_ENV = ("PATH", "HOME", "LANG", "TMPDIR", "TMP", "TEMP")  # not the app's secrets


@dataclass(frozen=True)
class LaunchResult:
    ok: bool
    sandboxed: bool = False  # in its bubblewrap sandbox
    not_sandboxed_because: str | None = None
    error: str | None = None  # why it did not start, for an operator
    seconds: float | None = None
    directory: str | None = None  # where its browser directories are made

    def describe(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"status": "ok" if self.ok else "failed", "sandboxed": self.ok and self.sandboxed}
        for key in ("not_sandboxed_because", "error", "directory"):
            if getattr(self, key) is not None:
                entry[key] = getattr(self, key)
        if self.seconds is not None:
            entry["launch_seconds"] = round(self.seconds, 2)
        return entry


Check = Callable[[str, SandboxCapabilities], LaunchResult]


class BrowserHealth:
    """/health's browser entry: whether the executable is there, and the result of the one launch
    (`start` begins it in the background; "checking" until it is known)."""

    def __init__(self, chromium_path: str, capabilities: SandboxCapabilities, *, check: Check | None = None) -> None:
        self.chromium_path = chromium_path
        self.capabilities = capabilities
        self.check = check or launch_in_child
        self._launch: _Launch | None = None

    def start(self) -> None:
        gap = browser_sandbox_gap(self.capabilities, is_root=os.geteuid() == 0)
        key = (self.check, self.chromium_path, self.capabilities.bwrap, gap, tempfile.gettempdir())
        with _LAUNCHES_LOCK:
            if key not in _LAUNCHES:
                _LAUNCHES[key] = _Launch(lambda: self.check(self.chromium_path, self.capabilities))
            self._launch = _LAUNCHES[key]

    def describe(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"chromium": self.chromium_path, "found": missing_browser(self.chromium_path) is None}
        result = self._launch.result if self._launch is not None else None
        return {**entry, **(result.describe() if result is not None else {"status": "checking"})}

    def wait(self, timeout: float) -> bool:
        """Blocks until the launch's result is known (True) or `timeout` seconds passed."""
        return self._launch is not None and self._launch.known.wait(timeout)


class _Launch:
    """One launch in a thread of its own; `result` once `known`."""

    def __init__(self, run: Callable[[], LaunchResult]) -> None:
        self.result: LaunchResult | None = None
        self.known = threading.Event()
        threading.Thread(target=self._run, args=(run,), name="browser-launch-check", daemon=True).start()

    def _run(self, run: Callable[[], LaunchResult]) -> None:
        try:
            result = run()
        except Exception as exc:  # noqa: BLE001 - reported, whatever broke
            log.exception("the browser launch check broke")
            result = LaunchResult(ok=False, error=f"the launch check broke: {type(exc).__name__}: {exc}")
        if result.ok:
            log.info("the UI check's browser started%s in %.1f s", " in its sandbox" if result.sandboxed else
                     f" NOT sandboxed ({result.not_sandboxed_because})", result.seconds or 0)
        else:
            log.warning("the UI check's browser does not start: %s", result.error)
        self.result = result
        self.known.set()


_LAUNCHES: dict[tuple[object, ...], _Launch] = {}
_LAUNCHES_LOCK = threading.Lock()


def launch_in_child(chromium_path: str, capabilities: SandboxCapabilities) -> LaunchResult:
    """The launch, in a child process (blocking; run in a thread), given only a few harmless variables."""
    if (missing := missing_browser(chromium_path)) is not None:
        return LaunchResult(ok=False, error=f"{missing}, or set CHROMIUM_PATH")
    command = [sys.executable, "-I", os.path.abspath(__file__), chromium_path,
               json.dumps(dataclasses.asdict(capabilities))]
    child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env={k: v for k, v in os.environ.items() if k in _CHILD_ENV}, start_new_session=True)
    try:
        out, err = child.communicate(timeout=CHILD_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.communicate()
        return LaunchResult(ok=False, error=f"the launch did not finish within {CHILD_SECONDS} s")
    try:
        return LaunchResult(**json.loads(out.decode().strip().splitlines()[-1]))
    except (IndexError, ValueError, TypeError):
        last = (err.decode(errors="replace").strip().splitlines() or [f"exit code {child.returncode}"])[-1]
        return LaunchResult(ok=False, error=f"the launch check failed: {last[:300]}")


async def try_launch(chromium_path: str, capabilities: SandboxCapabilities) -> LaunchResult:
    """Chromium started as the UI check starts it, a page evaluated, Chromium closed."""
    from playwright.async_api import Error as PlaywrightError
    from playwright.async_api import async_playwright

    gap = browser_sandbox_gap(capabilities, is_root=os.geteuid() == 0)
    started = time.monotonic()
    try:
        isolation = browser_isolation(capabilities, chromium_path)
    except NoBrowserDirectory as exc:
        return LaunchResult(ok=False, not_sandboxed_because=gap, error=str(exc))
    try:
        async with async_playwright() as playwright:
            try:
                browser = await launch(playwright, isolation, timeout=LAUNCH_SECONDS * 1000)
            except PlaywrightError as exc:
                return LaunchResult(ok=False, not_sandboxed_because=gap, error=launch_failure(exc.message))
            try:
                page = await browser.new_page()
                await page.evaluate("1 + 1")  # a renderer runs: Chromium's own sandbox works in there
            except PlaywrightError as exc:
                return LaunchResult(ok=False, not_sandboxed_because=gap,
                                    error=f"Chromium started but could not show a page: {launch_failure(exc.message)}")
            finally:
                await browser.close()
    finally:
        isolation.remove()
    directory = os.path.dirname(isolation.directory.root) if isolation.directory is not None else None
    return LaunchResult(ok=True, sandboxed=isolation.chromium_sandbox, not_sandboxed_because=gap,
                        seconds=time.monotonic() - started, directory=directory)


def main(args: list[str]) -> None:
    chromium_path, capabilities = args
    fields = json.loads(capabilities)
    caps = SandboxCapabilities(**{**fields, "notes": tuple(fields.get("notes", ()))})
    print(json.dumps(dataclasses.asdict(asyncio.run(try_launch(chromium_path, caps)))))


if __name__ == "__main__":
    main(sys.argv[1:])
