"""The UI check end to end: a signed pull_request event, the PR's web app started in the real
sandbox, driven by Debian's Chromium through the proxy, reported on the check run, screenshots
served by the app. The app is tests/ui_app.py, in a real git repository served by the fake GitHub."""

from __future__ import annotations

import shutil
import subprocess
import uuid

import pytest
from aiohttp import web

from bot.events import wait_for
from pipeline.ui_check.check import AXE_SCRIPT
from pipeline.ui_check.judge import png_size
from tests.browser import ARTIFACTS, browser_missing
from tests.pull_requests import check_run, open_pull_request, validate
from tests.sandbox_support import needs_bwrap
from tests.ui_app import ABOUT, LOGIN, URL, app_files, page, reach_page, ui_config

pytestmark = [
    needs_bwrap,
    pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing())),
]

PUBLIC_URL = "https://codegenapp.example.com"
# A run here takes 5-10 s. A stuck one meets one of the UI check's own bounds first (ready 20 s, the driver
# and the launch 30 s each, a page load 30 s, axe-core 60 s) and completes with the check's account of what
# stalled, which the assertions print, instead of the test's bare timeout.
UI_RUN_SECONDS = 180
BROWSER_FLAG = "--proxy-bypass-list=<-loopback>"  # only the UI check's Chromium has it
PAGES = """\
    - path: /
      expect_text: Welcome to widgets
    - path: /login
      steps:
        - fill: {label: Email, value: a@example.com}
        - click: {role: button, name: Sign in}
        - expect_text: Signed in as a@example.com
    - /about
"""


def step(state, name: str = "UI check") -> dict:
    [found] = [s for s in state.test_results["steps"] if s["name"] == name]
    return found


async def fetch(bot, url: str) -> tuple[int, bytes, str]:
    async with bot.webhooks.session.get(url.replace(PUBLIC_URL, bot.url)) as response:
        return response.status, await response.read(), response.headers.get("Content-Type", "")


async def test_a_passing_pr_gets_screenshots_github_can_show(start_bot, fake_github) -> None:
    bot = await start_bot(PUBLIC_URL=PUBLIC_URL)
    scenario = open_pull_request(fake_github, config=ui_config(PAGES), base_files=app_files(),
                                 head_files={"about.html": ABOUT.replace("1999", "2001")})
    state = await validate(bot, scenario, timeout=UI_RUN_SECONDS)
    run = check_run(fake_github, state)
    assert run["conclusion"] == "success", run["output"]
    ui = step(state)
    assert (ui["stage"], ui["status"]) == ("ui", "passed")
    assert ui["detail"].startswith("3 pages passed")
    assert "`UI check` | ✓ passed — 3 pages passed" in run["output"]["summary"]
    assert "✓ /login — HTTP 200, loaded in" in ui["output_tail"]
    if AXE_SCRIPT.exists():
        assert "accessibility: no violations" in ui["output_tail"]

    images = fake_github.check_runs[state.check_run_id]["images"]
    assert [i["caption"] for i in images] == ["/", "/login", "/about"]
    assert all(i["image_url"].startswith(f"{PUBLIC_URL}/validations/{state.id}/screenshots/") for i in images)
    assert f"[`/login`]({images[1]['image_url']})" in run["output"]["summary"]
    for image in images:
        status, data, content_type = await fetch(bot, image["image_url"])  # no login
        assert (status, content_type) == (200, "image/png")
        assert png_size(data) == (1280, 800)  # a PNG of the viewport's width
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "ui-check-login.png").write_bytes((await fetch(bot, images[1]["image_url"]))[1])

    token = images[0]["image_url"].rsplit("/", 1)[1]
    altered = images[0]["image_url"].replace(token, ("0" if token[0] != "0" else "1") + token[1:])
    assert (await fetch(bot, altered))[0] == 404
    assert (await fetch(bot, images[0]["image_url"].replace(".png", ".PNG")))[0] == 404
    status, html, _ = await fetch(bot, run["details_url"])
    assert status == 200 and f'src="/validations/{state.id}/screenshots/{token}"'.encode() in html


@pytest.mark.slow  # the missing text is waited for (5 s)
@pytest.mark.skipif(not AXE_SCRIPT.exists(), reason="axe-core is not vendored: make install")
async def test_a_pr_that_breaks_pages_fails_naming_page_step_and_error(bot, fake_github) -> None:
    pages = PAGES + "    - /report\n"
    pixel = "data:image/gif;base64,R0lGODlhAQABAAAAACw="
    broken = {"index.html": page("Widgets", "<h1>Widgets</h1>"),
              "about.html": page("About", "<h1>About</h1>", "console.error('about: chart data is undefined');"),
              "login.html": LOGIN.replace("</form>", f'</form>\n<img src="{pixel}">'),  # no alt text
              "report.txt": None}
    scenario = open_pull_request(fake_github, config=ui_config(pages, accessibility="enforce"),
                                 base_files=app_files(), head_files=broken)
    state = await validate(bot, scenario, timeout=UI_RUN_SECONDS)
    run = check_run(fake_github, state)
    assert run["conclusion"] == "failure"
    assert run["output"]["title"] == "UI check failed — 2 of 3 steps passed"
    assert "4 of 4 pages failed: /, /login, /about and 1 more" in run["output"]["summary"]
    text = run["output"]["text"]
    assert '✗ / — HTTP 200' in text
    assert 'expect_text: text "Welcome to widgets" not found on the page within 5 s' in text
    assert "✗ /login" in text and "accessibility (critical): Images must have alternative text [image-alt" in text
    assert "✗ /about" in text and "console error: about: chart data is undefined" in text
    assert "✗ /report — HTTP 500" in text and "answered HTTP 500" in text
    assert "The app's output (last lines):" in text and '"GET /report HTTP/1.1" 500' in text


@pytest.mark.slow  # waits out axe-core's bound on the stuck page (3 s here)
@pytest.mark.skipif(not AXE_SCRIPT.exists(), reason="axe-core is not vendored: make install")
async def test_a_page_whose_script_never_yields_fails_and_the_next_page_is_still_checked(bot, fake_github,
                                                                                        monkeypatch) -> None:
    from pipeline.ui_check import check

    monkeypatch.setattr(check, "AXE_SECONDS", 3)
    stuck = page("Busy", "<h1>Busy</h1>", "addEventListener('load', () => setTimeout(() => { for (;;) {} }, 50));")
    scenario = open_pull_request(fake_github, config=ui_config("    - /busy\n    - /about\n"),
                                 base_files=app_files(**{"busy.html": stuck}))
    state = await validate(bot, scenario, timeout=UI_RUN_SECONDS)
    run = check_run(fake_github, state)
    assert run["conclusion"] == "failure"
    assert "1 of 2 pages failed: /busy; no accessibility violations (axe-core ran on 1 of 2 pages)" in \
        run["output"]["summary"]
    text = run["output"]["text"]
    assert "✗ /busy — HTTP 200" in text
    assert "stopped answering: axe-core's accessibility check did not return within 3 s" in text
    assert "✓ /about — HTTP 200" in text  # the stuck page was closed and the check went on


async def test_a_driver_that_does_not_start_in_time_fails_the_check_and_is_stopped_once_up(
        bot, fake_github, monkeypatch) -> None:
    from pipeline.ui_check import check
    from tests.scale_support import wait_until
    from tests.test_sandbox import own_processes

    def drivers() -> set[int]:  # Playwright's (`node ... run-driver`) that this test process started
        return set(own_processes("run-driver"))

    before = drivers()
    monkeypatch.setattr(check, "BROWSER_CALL_SECONDS", 0.1)  # started (~20 ms), not yet up (~0.5 s)
    scenario = open_pull_request(fake_github, config=ui_config("    - /about\n"), base_files=app_files())
    state = await validate(bot, scenario, timeout=UI_RUN_SECONDS)
    run = check_run(fake_github, state)
    assert run["conclusion"] == "failure"
    assert "the UI check could not start Playwright's driver: its start did not return within 0.1 s" in \
        run["output"]["text"]

    async def none_left() -> bool:
        return not drivers() - before

    async def left() -> str:
        return f"left running: {drivers() - before}"

    await wait_until(none_left, timeout=30, describe=left)


@pytest.mark.slow  # waits out ready_timeout_seconds
async def test_an_app_that_never_answers_fails_and_is_stopped(bot, fake_github) -> None:
    marker = f"sleep 300.{uuid.uuid4().int % 10**6:06d}"
    config = ui_config("    - /\n", start=f"echo starting the app; {marker}").replace(
        "ready_timeout_seconds: 20", "ready_timeout_seconds: 2")
    scenario = open_pull_request(fake_github, config=config, base_files=app_files())
    state = await validate(bot, scenario, timeout=UI_RUN_SECONDS)
    run = check_run(fake_github, state)
    assert run["conclusion"] == "failure"
    assert f"the app did not answer at {URL} within 2 s" in run["output"]["text"]
    assert "starting the app" in run["output"]["text"]  # its output, to see why
    assert subprocess.run(["pgrep", "-f", marker], capture_output=True).stdout == b"", "the app was not stopped"


async def test_the_app_and_its_page_cannot_reach_the_host(bot, fake_github, aiohttp_server) -> None:
    hits: list[str] = []

    async def canary(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(text="reached")

    app = web.Application()
    app.router.add_get("/{tail:.*}", canary)
    canary_server = await aiohttp_server(app)
    ports = [canary_server.port, int(bot.url.rsplit(":", 1)[1]), int(fake_github.api_url.split(":")[2].split("/")[0])]
    waits = "".join(f"        - wait_for: \"js -> {p}: blocked\"\n        - wait_for: \"server -> {p}: blocked\"\n"
                    for p in ports)
    config = ui_config(f"    - path: /reach\n      steps:\n{waits}",
                       extra=f"env:\n  HOST_PORTS: \"{','.join(map(str, ports))}\"\n")
    scenario = open_pull_request(fake_github, config=config, base_files=app_files(**{"reach.html": reach_page(ports)}))
    state = await validate(bot, scenario, timeout=UI_RUN_SECONDS)
    run = check_run(fake_github, state)
    assert run["conclusion"] == "success", run["output"]  # every wait_for "blocked" was met
    assert hits == []
    ui = step(state)
    assert f"blocked (outside the app): http://127.0.0.1:{ports[0]}/health" in ui["output_tail"]


@pytest.mark.slow  # the run is caught in the middle of its UI check (progress comes every 3 s)
async def test_a_cancelled_run_stops_the_app_and_the_browser(bot, fake_github) -> None:
    from tests.test_sandbox import processes_matching

    marker = f"uimark{uuid.uuid4().hex[:10]}"
    config = ui_config("    - path: /slow\n      steps:\n        - wait_for: {text: ready, timeout_seconds: 120}\n",
                       start=f"python3 server.py 8080 --tag={marker}")
    scenario = open_pull_request(fake_github, config=config,
                                 base_files=app_files(**{"slow.html": page("Slow", "<h1>Loading</h1>")}))
    with bot.services.bus.subscribe() as events:
        await bot.webhooks.send("pull_request", scenario.payload("opened"))
        started = await wait_for(events, "validation.started", head_sha=scenario.head_sha)
        validation_id = started.data["validation_id"]
        tail = ""
        while "checking /slow" not in tail:  # the browser is on the page, waiting for "ready"
            await wait_for(events, "validation.progress", validation_id=validation_id, step="UI check", timeout=60)
            tail = (await bot.store.validations.get(validation_id)).test_results["live"]["tail"]
        assert processes_matching(marker) and processes_matching(BROWSER_FLAG)
        fake_github.pulls[(scenario.full_name, scenario.number)]["state"] = "closed"
        await bot.deliver("pull_request", scenario.payload("closed"))  # cancels it, as a new head does
        await wait_for(events, "job.finished", kind="validate", timeout=30)
    assert processes_matching(marker) == [], "the cancelled run's app is still running"
    assert processes_matching(BROWSER_FLAG) == [], "the cancelled run's browser is still running"
    state = await bot.store.validations.get(validation_id)
    assert (state.status, state.conclusion) == ("superseded", "cancelled")


@pytest.mark.slow  # a whole validation with its UI check (~14 s)
async def test_a_private_tmpdir_and_a_data_dir_elsewhere_leave_the_browser_working(start_bot, fake_github, monkeypatch):
    """TMPDIR below a 0700 directory (a service's private tmp, `mktemp -d`, /run/user/N) and DATA_DIR on
    another filesystem below one too: the sandboxed browser, as its own uid, still starts, and /health
    says so from a real launch."""
    import asyncio
    import os
    import tempfile

    outside = tempfile.mkdtemp(prefix="cg-private-", dir="/tmp")  # pytest's tmp_path is already below a 0700 one
    elsewhere = tempfile.mkdtemp(prefix="cg-data-", dir="/dev/shm")  # a tmpfs: another filesystem
    try:
        for private in (outside, elsewhere):
            os.chmod(private, 0o700)
        os.mkdir(f"{outside}/tmp")
        monkeypatch.setenv("TMPDIR", f"{outside}/tmp")
        monkeypatch.setattr(tempfile, "tempdir", None)
        bot = await start_bot(DATA_DIR=f"{elsewhere}/data")
        assert bot.services.browser.describe()["status"] in ("checking", "ok")  # not waited for at start
        scenario = open_pull_request(fake_github, config=ui_config("    - /about\n"), base_files=app_files())
        state = await validate(bot, scenario, timeout=UI_RUN_SECONDS)
        run = check_run(fake_github, state)
        assert run["conclusion"] == "success", run["output"]
        assert "browser: sandboxed (bubblewrap, uid " in step(state)["output_tail"]

        assert await asyncio.to_thread(bot.services.browser.wait, 60)
        async with bot.webhooks.session.get(bot.url + "/health") as response:
            browser = (await response.json())["browser"]
        assert (browser["status"], browser["sandboxed"]) == ("ok", True), browser
        assert not browser["directory"].startswith(outside)
        assert [n for n in os.listdir(f"{outside}/tmp") if n.startswith(("codegenapp-browser-", "playwright"))] == []
    finally:
        shutil.rmtree(outside, ignore_errors=True)
        shutil.rmtree(elsewhere, ignore_errors=True)
