"""The UI check: start the PR's app in the sandbox, drive its pages in headless Chromium, take
screenshots, run axe-core, and say what failed (the judging itself is pure: pipeline/ui_check/judge.py).

Network path (PR code never gets a way out; see pipeline/ui_check/proxy.py):

    Chromium (its own bwrap, uid 61001, no network but) --TCP 127.0.0.1:3128--> forwarder.py (same bwrap)
        --Unix socket in a per-run directory--> AppProxy (host, only the app's origin, only with this run's
        credential) --Unix socket in the workspace--> forwarder.py (sandbox) --TCP--> the app at `ui.url`
        (sandbox)

(Unsandboxed fallback: Chromium on the host, AppProxy on 127.0.0.1:<ephemeral>.)

The browser's profile, its launcher and the relay directory are in a directory made for it, where its
uid can reach them whatever TMPDIR and DATA_DIR are (pipeline/ui_check/browser_dir.py). A launch that
fails says why (pipeline/ui_check/launch_failure.py); /health reports one real launch made at start
(pipeline/ui_check/launch_check.py).

The app and the forwarder run in one `Sandbox.background` process: the sandbox's rules, no network
(its own loopback only). Chromium is Debian's (`CHROMIUM_PATH`), never a downloaded build, run in a
bubblewrap sandbox of its own as uid 61001 with Chromium's own sandbox on (pipeline/ui_check/browser.py), launched
with the proxy for every URL including loopback ones (`<-loopback>`), so page JavaScript cannot reach
the host's own ports; a context route aborts any request to another origin as well. The app, the
proxy and the browser are always stopped when the stage ends, on a timeout or a cancel too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.sandbox.capabilities import SandboxCapabilities
from pipeline.sandbox.limits import Limits
from pipeline.sandbox.ownership import fresh_dir
from pipeline.sandbox.process import BackgroundProcess
from pipeline.sandbox.sandbox import Sandbox
from pipeline.ui_check.browser import BROWSER_UID, PROXY_SOCKET, RELAY_PORT, write_launcher
from pipeline.ui_check.browser_dir import BrowserDir, NoBrowserDirectory, make_browser_dir
from pipeline.repo_config.ui_block import UiConfig, UiPage, UiStep
from pipeline.results import Screenshot
from pipeline.ui_check.judge import (ConsoleEntry, PageObservation, RequestFailure, StepFailure, UiOutcome, Violation,
                                     png_size, same_origin)
from pipeline.ui_check.launch_failure import launch_failure
from pipeline.ui_check.proxy import AppProxy, Credential, Origin, SandboxSocket

log = logging.getLogger(__name__)

DEFAULT_CHROMIUM = "/usr/bin/chromium"
BROWSER_FLAGS = ["--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--disable-quic", "--disable-dev-shm-usage"]
# A Chromium started directly by root (the unsandboxed fallback, and the tests' trusted dashboard pages): Chromium
# refuses to run its own sandbox as root. In bubblewrap it runs as BROWSER_UID and keeps its sandbox on.
CHROMIUM_ARGS = ["--no-sandbox", *BROWSER_FLAGS]
AXE_SCRIPT = Path(__file__).resolve().parent / "vendor" / "axe.min.js"
FORWARDER = Path(__file__).resolve().parent / "forwarder.py"
SOCKET_DIR = ".codegenapp-ui"
SOCKET_NAME = "app.sock"
VIEWPORT = {"width": 1280, "height": 800}
MAX_SCREENSHOT_HEIGHT = 4000
PAGE_LOAD_SECONDS = 30
EXPECT_TEXT_SECONDS = 5
SETTLE_SECONDS = 2  # after the steps: let late requests and console messages arrive
READY_POLL_SECONDS = 0.2
# Every other call into the browser (its driver starting, a context, a page, a script, closing) that has no
# timeout of its own: one that stalls fails the page or the check, saying which, instead of holding the run
# until its deadline.
BROWSER_CALL_SECONDS = 30
AXE_SECONDS = 60
OUTPUT_TAIL_CHARS = 4000

Log = Callable[[str], Awaitable[None]]


class BrowserStalled(Exception):
    """A call into the browser did not return within its bound."""


async def _within(seconds: float, what: str, awaitable: Awaitable[Any]) -> Any:
    try:
        async with asyncio.timeout(seconds):
            return await awaitable
    except TimeoutError:
        raise BrowserStalled(f"{what} did not return within {seconds:g} s") from None


@dataclass(frozen=True)
class BrowserSetup:
    """Where the host's parts are: the browser, the accessibility checker, and where screenshots go
    (None: they are not kept)."""

    chromium_path: str = DEFAULT_CHROMIUM
    screenshots_dir: Path | None = None
    axe_script: Path = AXE_SCRIPT


def app_command(ui: UiConfig, socket_path: str) -> str:
    """The sandbox's command line: the forwarder in the background, the app's start command in the
    foreground (when it exits, the sandbox ends)."""
    origin = Origin.of(ui.url)
    return (f"/usr/bin/python3 -I {FORWARDER} unix:{socket_path} tcp:{origin.host}:{origin.port} &\n"
            f"{ui.start}\n")


def axe_source(path: Path) -> tuple[str | None, str]:
    """(the script, "") or (None, why accessibility is not checked)."""
    try:
        return path.read_text(encoding="utf-8"), ""
    except OSError:
        return None, "not checked: axe-core is not installed on the app's host (make install)"


async def run_ui_check(sandbox: Sandbox, ui: UiConfig, *, workspace: Path, env: Mapping[str, str], limits: Limits,
                       setup: BrowserSetup, log_line: Log) -> UiOutcome:
    """Start the app, wait until it answers, check every page. Cancel-safe: the app, the proxy and the
    browser are gone when this returns or raises."""
    outcome = UiOutcome()
    if (missing := missing_browser(setup.chromium_path)) is not None:
        outcome.problem = cannot_start(setup.chromium_path, missing)
        return outcome
    origin = Origin.of(ui.url)
    fresh_dir(workspace / SOCKET_DIR)
    sock = SandboxSocket(workspace / SOCKET_DIR, SOCKET_NAME)
    command = app_command(ui, f"{SOCKET_DIR}/{SOCKET_NAME}")  # relative to the checkout, sandboxed or not
    try:
        async with contextlib.AsyncExitStack() as stack:
            app = await stack.enter_async_context(sandbox.background(
                command, workspace=workspace, env=env, limits=limits, on_output=log_line, read_only_binds=[FORWARDER]))
            # After the app started: the sandbox has been probed, the browser's isolation follows from it.
            try:
                isolation = browser_isolation(sandbox.capabilities, setup.chromium_path)
            except NoBrowserDirectory as exc:
                outcome.problem = cannot_start(setup.chromium_path, str(exc))
                outcome.app_output = app.output()[-OUTPUT_TAIL_CHARS:]
                return outcome
            stack.callback(isolation.remove)
            proxy = await stack.enter_async_context(AppProxy(origin, sock.connect, unix_path=isolation.proxy_socket))
            isolation.hand_over_socket()
            await log_line(f"started: {ui.start}\nwaiting for {ui.url} (at most {ui.ready_timeout_seconds} s)\n")
            started = time.monotonic()
            problem = await wait_until_ready(sock.connect, origin, app, ui.ready_timeout_seconds)
            if problem is not None:
                outcome.problem = problem
            else:
                await log_line(f"{ui.url} answered after {time.monotonic() - started:.1f} s\n")
                await _check_pages(isolation, ui, origin, isolation.proxy_port or proxy.port, proxy.credential, setup,
                                   outcome, log_line)
            if proxy.blocked:  # mostly Chromium's own background requests
                log.debug("ui check: the proxy refused %s", list(proxy.blocked))
            outcome.app_output = app.output()[-OUTPUT_TAIL_CHARS:]
    finally:
        sock.close()
    return outcome


async def wait_until_ready(connect: Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]],
                           origin: Origin, app: BackgroundProcess, seconds: float) -> str | None:
    """None once an HTTP request to the app's root gets any HTTP answer; else why not."""
    deadline = time.monotonic() + seconds
    request = (f"GET / HTTP/1.1\r\nHost: {origin.authority}\r\nUser-Agent: CodegenApp-ui-check\r\n"
               "Connection: close\r\n\r\n").encode()
    while time.monotonic() < deadline:
        if not app.running:
            return f"the app exited (status {app.exit_code}) before answering at {origin}"
        try:
            reader, writer = await connect()
        except OSError:
            reader = writer = None
        if reader is not None and writer is not None:
            try:
                writer.write(request)
                await writer.drain()
                line = await asyncio.wait_for(reader.readline(), max(0.1, deadline - time.monotonic()))
                if line.startswith(b"HTTP/"):
                    return None
            except (OSError, TimeoutError):
                pass
            finally:
                writer.close()
        await asyncio.sleep(READY_POLL_SECONDS)
    return f"the app did not answer at {origin} within {seconds:g} s"


@dataclass(frozen=True)
class BrowserIsolation:
    """How Chromium is started: what Playwright executes, with which flags, where the proxy is for it,
    and the line the step's output gets about it."""

    executable: str
    args: list[str]
    chromium_sandbox: bool
    note: str
    uid: int | None = None  # the browser's uid, when bubblewrap runs it
    proxy_socket: str | None = None  # the host proxy listens there, not on TCP (the browser has no other network)
    proxy_port: int | None = None  # the proxy's port as the browser sees it (its relay's, in its own namespace)
    directory: BrowserDir | None = None  # the launcher, the relay and the profile (removed after the run)

    def hand_over_socket(self) -> None:
        """Once the proxy listens: its socket to the browser's uid (the relay directory stays root's)."""
        if self.proxy_socket is not None and self.uid is not None and os.geteuid() == 0:
            os.chmod(self.proxy_socket, 0o600)  # only root writes in the relay directory: no link to follow
            os.chown(self.proxy_socket, self.uid, self.uid)

    def remove(self) -> None:
        if self.directory is not None:
            self.directory.remove()


def browser_sandbox_gap(caps: SandboxCapabilities, *, is_root: bool) -> str | None:
    """Why Chromium could not get its bubblewrap sandbox on this host, or None when it can: bubblewrap
    working with user, pid and network namespaces, and, as root, the switch to a dedicated uid."""
    if not (caps.sandboxed and caps.bwrap):
        return f"no usable bubblewrap: sandbox mode={caps.mode}"
    missing = [name for name, present in (("a user namespace", caps.user_namespace),
                                          ("a pid namespace", caps.pid_namespace),
                                          ("a network namespace", caps.net_namespace),
                                          ("a dedicated uid", caps.dedicated_uid or not is_root)) if not present]
    return "bubblewrap without " + ", ".join(missing) if missing else None


def browser_isolation(caps: SandboxCapabilities, chromium_path: str) -> BrowserIsolation:
    """Chromium in bubblewrap, in a network namespace of its own with a relay to the proxy, when the PR
    sandbox's probe found what that needs (`browser_sandbox_gap`); otherwise directly, saying so.
    Sandboxed, it gets a fresh browser directory (`remove` it after the run); NoBrowserDirectory when
    there is no place its uid can reach."""
    is_root = os.geteuid() == 0
    if (gap := browser_sandbox_gap(caps, is_root=is_root)) is not None:
        return BrowserIsolation(chromium_path, list(CHROMIUM_ARGS), False,
                                f"browser: NOT sandboxed ({gap}): Chromium "
                                f"runs as uid {os.geteuid()} with --no-sandbox and can read what the app can")
    uid = BROWSER_UID if is_root else os.getuid()
    directory = make_browser_dir(uid, FORWARDER)
    try:
        launcher = write_launcher(directory.root, bwrap=caps.bwrap, chromium=chromium_path, uid=uid,
                                  profile=directory.profile, relay=directory.relay)
    except BaseException:
        directory.remove()
        raise
    return BrowserIsolation(launcher, list(BROWSER_FLAGS), True,
                            f"browser: sandboxed (bubblewrap, uid {uid}, no network but the proxy, Chromium's own "
                            "sandbox on, no access to the app's files)",
                            uid=uid, proxy_socket=os.path.join(directory.relay, PROXY_SOCKET), proxy_port=RELAY_PORT,
                            directory=directory)


async def launch(playwright: Any, isolation: BrowserIsolation, *, args: list[str] | None = None,
                 **options: Any) -> Any:
    """Chromium as `isolation` says, headless (the UI check's launch, and the one /health reports)."""
    return await playwright.chromium.launch(executable_path=isolation.executable, headless=True,
                                            chromium_sandbox=isolation.chromium_sandbox,
                                            args=[*isolation.args, *(args or [])], **options)


def cannot_start(chromium_path: str, why: str) -> str:
    return f"the UI check could not start Chromium at {chromium_path} (CHROMIUM_PATH): {why}"


def missing_browser(chromium_path: str) -> str | None:
    if os.path.isfile(chromium_path) and os.access(chromium_path, os.X_OK):
        return None
    return "there is no executable file there: install Debian's chromium package (apt-get install chromium)"


async def _check_pages(isolation: BrowserIsolation, ui: UiConfig, origin: Origin, proxy_port: int,
                       credential: Credential, setup: BrowserSetup, outcome: UiOutcome, log_line: Log) -> None:
    # Playwright is imported where a UI check runs, not at start: the web process that never runs one
    # does not carry it (its peak memory is a benchmark target, bench/README.md).
    from playwright.async_api import Error as PlaywrightError

    axe, note = axe_source(setup.axe_script)
    outcome.accessibility_note = note
    async with contextlib.AsyncExitStack() as stack:
        outcome.browser_note = isolation.note
        await log_line(isolation.note + "\n")
        try:
            playwright = await _start_driver(stack)
        except BrowserStalled as exc:
            outcome.problem = f"the UI check could not start Playwright's driver: {exc}"
            log.warning("%s", outcome.problem)
            return
        try:
            browser = await launch(
                playwright, isolation,
                # Playwright answers the proxy's 407 with these; they are never on a command line.
                proxy={"server": f"http://127.0.0.1:{proxy_port}", "username": credential.username,
                       "password": credential.password},
                # Playwright already forces loopback through the proxy; this keeps it so whatever its environment.
                args=["--proxy-bypass-list=<-loopback>"])
        except PlaywrightError as exc:
            outcome.problem = cannot_start(setup.chromium_path, launch_failure(exc.message))
            log.warning("%s", outcome.problem)
            return
        try:
            context = await _within(BROWSER_CALL_SECONDS, "opening a browser context", browser.new_context(
                viewport=VIEWPORT, service_workers="block", accept_downloads=False))
            await _within(BROWSER_CALL_SECONDS, "opening a browser context", context.route("**/*", _only(origin)))
            for page_config in ui.pages:
                await log_line(f"checking {page_config.path}\n")
                observation = await _check_page(context, ui, page_config, axe, setup.screenshots_dir)
                observation.accessibility_note = observation.accessibility_note or note
                outcome.pages.append(observation)
        except BrowserStalled as exc:
            after = f" (after {len(outcome.pages)} of {len(ui.pages)} pages)" if outcome.pages else ""
            outcome.problem = f"the UI check stopped, Chromium stalled: {exc}{after}"
            log.warning("%s", outcome.problem)
        finally:
            with contextlib.suppress(Exception):  # a browser that does not close goes with the driver
                await asyncio.wait_for(browser.close(), BROWSER_CALL_SECONDS)


_late_stops: set[asyncio.Future[Any]] = set()


async def _start_driver(stack: contextlib.AsyncExitStack) -> Any:
    """Playwright's driver, stopped when `stack` closes; BrowserStalled when it does not start within its
    bound. Its start is not cancelled half way (that would leave its process running): one given up on (a
    timeout, the run cancelled) is stopped once it has started."""
    from playwright.async_api import async_playwright

    manager = async_playwright()
    starting = asyncio.ensure_future(manager.__aenter__())
    try:
        await asyncio.wait({starting}, timeout=BROWSER_CALL_SECONDS)  # neither cancels nor raises on a timeout
        if not starting.done():
            raise BrowserStalled(f"its start did not return within {BROWSER_CALL_SECONDS:g} s")
    except BaseException:  # given up on: a timeout, or the run was cancelled
        starting.add_done_callback(lambda task: _stop_late(task, manager))
        raise
    playwright = starting.result()  # or its own error
    stack.push_async_exit(manager)
    return playwright


def _stop_late(started: asyncio.Future[Any], manager: Any) -> None:
    if started.cancelled() or started.exception() is not None:
        return
    stopping = asyncio.ensure_future(manager.__aexit__(None, None, None))
    _late_stops.add(stopping)  # kept until done: a task nobody holds may be collected
    stopping.add_done_callback(_late_stops.discard)


def _only(origin: Origin) -> Callable[[Any], Awaitable[None]]:
    async def guard(route: Any) -> None:
        if same_origin(route.request.url, origin):
            await route.continue_()
        else:
            await route.abort("blockedbyclient")
    return guard


async def _check_page(context: Any, ui: UiConfig, config: UiPage, axe: str | None,
                      screenshots_dir: Path | None) -> PageObservation:
    from playwright.async_api import Error as PlaywrightError

    url = ui.page_url(config)
    seen = PageObservation(path=config.path, url=url)
    page = await _within(BROWSER_CALL_SECONDS, f"opening a page for {config.path}", context.new_page())
    page.on("console", lambda m: seen.console_errors.append(ConsoleEntry(m.text, (m.location or {}).get("url", "")))
            if m.type == "error" else None)
    page.on("pageerror", lambda e: seen.page_errors.append(_first_line(getattr(e, "message", str(e)))))
    page.on("requestfailed", lambda r: seen.failed_requests.append(RequestFailure(r.url, r.failure or "failed")))
    page.on("response", lambda r: seen.failed_requests.append(RequestFailure(r.url, f"HTTP {r.status}"))
            if r.status >= 400 else None)
    try:
        started = time.monotonic()
        try:
            response = await page.goto(url, wait_until="load", timeout=PAGE_LOAD_SECONDS * 1000)
            seen.status = response.status if response is not None else None
        except PlaywrightError as exc:
            seen.load_error = _first_line(exc.message)
        seen.load_seconds = time.monotonic() - started
        try:
            if seen.load_error is None:
                seen.failed_step = await _run_steps(page, config)
                with contextlib.suppress(PlaywrightError):
                    await page.wait_for_load_state("networkidle", timeout=SETTLE_SECONDS * 1000)
                if axe is not None and (seen.status or 0) < 400:  # an error page's accessibility is noise
                    seen.accessibility = await _accessibility(page, axe)
                    if seen.accessibility is None:
                        seen.accessibility_note = "not checked: axe-core could not run on this page"
            if screenshots_dir is not None:
                seen.screenshot = await _screenshot(page, config.path, screenshots_dir)
        except BrowserStalled as exc:  # the page's own script holds it (an endless loop): the page fails
            seen.stalled = str(exc)
            seen.accessibility_note = seen.accessibility_note or "not checked: the page stopped answering"
    finally:
        with contextlib.suppress(PlaywrightError, TimeoutError):
            await asyncio.wait_for(page.close(), BROWSER_CALL_SECONDS)
    return seen


async def _run_steps(page: Any, config: UiPage) -> StepFailure | None:
    from playwright.async_api import Error as PlaywrightError

    steps: list[tuple[int, UiStep]] = []
    if config.expect_text is not None:
        steps.append((0, UiStep("expect_text", text=config.expect_text)))
    steps += list(enumerate(config.steps, start=1))
    for index, step in steps:
        seconds = EXPECT_TEXT_SECONDS if step.kind == "expect_text" else step.timeout_seconds
        try:
            await _run_step(page, step, seconds * 1000)
        except PlaywrightError as exc:
            return StepFailure(index, step.describe(), _step_message(step, exc, seconds))
    return None


async def _run_step(page: Any, step: UiStep, timeout_ms: float) -> None:
    if step.kind == "fill":
        await page.get_by_label(step.label).fill(step.value, timeout=timeout_ms)
    elif step.kind == "click" and step.role:
        await page.get_by_role(step.role, name=step.name).click(timeout=timeout_ms)
    elif step.kind == "click":
        await page.get_by_text(step.text).first.click(timeout=timeout_ms)
    else:  # expect_text, wait_for
        await page.get_by_text(step.text).first.wait_for(state="visible", timeout=timeout_ms)


def _step_message(step: UiStep, exc: Exception, seconds: float) -> str:
    message = _first_line(getattr(exc, "message", str(exc)))
    if "Timeout" in message and "exceeded" in message:
        what = {"fill": f'no field labelled "{step.label}"',
                "click": f'no {step.role} named "{step.name}"' if step.role else f'no element with text "{step.text}"',
                }.get(step.kind, f'text "{step.text}" not found on the page')
        return f"{what} within {seconds:g} s"
    return message


def _first_line(text: str) -> str:
    return (text or "").strip().split("\n", 1)[0][:500]


_AXE_RUN = """async () => {
  const result = await window.axe.run(document, {resultTypes: ["violations"]});
  return result.violations.map(v => ({rule: v.id, impact: v.impact || "minor", help: v.help,
                                      nodes: v.nodes.length, help_url: v.helpUrl || ""}));
}"""


async def _accessibility(page: Any, axe: str) -> list[Violation] | None:
    from playwright.async_api import Error as PlaywrightError

    try:
        found = await _within(AXE_SECONDS, "axe-core's accessibility check", _run_axe(page, axe))
    except PlaywrightError as exc:
        log.warning("axe-core failed on %s: %s", page.url, _first_line(exc.message))
        return None
    return [Violation(rule=str(v["rule"]), impact=str(v["impact"]), help=str(v["help"]), nodes=int(v["nodes"]),
                      help_url=str(v["help_url"])) for v in found]


async def _run_axe(page: Any, axe: str) -> Any:
    # Through the DevTools protocol, not a <script> tag: the page's Content-Security-Policy still
    # applies to the page itself.
    await page.evaluate("() => {\n" + axe + "\n}")
    return await page.evaluate(_AXE_RUN)


async def _screenshot(page: Any, path: str, directory: Path) -> Screenshot | None:
    from playwright.async_api import Error as PlaywrightError

    directory.mkdir(parents=True, exist_ok=True)
    name = f"{secrets.token_hex(16)}.png"
    try:
        height = await _within(BROWSER_CALL_SECONDS, "measuring the page for its screenshot",
                               page.evaluate("() => document.documentElement.scrollHeight"))
        clip = {"x": 0, "y": 0, "width": VIEWPORT["width"], "height": max(1, min(int(height), MAX_SCREENSHOT_HEIGHT))}
        data = await page.screenshot(full_page=True, clip=clip, timeout=PAGE_LOAD_SECONDS * 1000)
    except PlaywrightError as exc:
        log.warning("no screenshot of %s: %s", path, _first_line(exc.message))
        return None
    (directory / name).write_bytes(data)
    width, height = png_size(data)
    return Screenshot(path=path, file=name, width=width, height=height)
