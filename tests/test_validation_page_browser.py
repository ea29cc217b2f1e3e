"""The validation page in a real headless Chromium (Debian's /usr/bin/chromium) against the real
server: a running run follows its steps live and reloads when it ends, a failed run opens its failing
step with its findings, UI-check screenshots open full size, and waiting and neutral runs say what to
do; at 1280 and at 390 pixels wide, with nothing wider than the screen and no CSP violation.
Screenshots: tests/artifacts/validation-*.png."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from pipeline.ui_check.screenshots import screenshots_dir
from tests.browser import screenshot, watch_csp
from tests.dashboard_support import dashboard  # noqa: F401 - the fixture
from tests.test_validation_page import (failed_with_findings, new_validation, recorded_findings, running_validation,
                                        step)

pytestmark = pytest.mark.slow

WIDTHS = {"desktop": 1280, "mobile": 390}


async def show(browser: Any, url: str, name: str) -> list[Any]:
    """Open `url` at each width, screenshot it as validation-<name>-<width>.png, and check that nothing
    is wider than the screen and no CSP violation happened; returns the pages (still open)."""
    pages = []
    for label, width in WIDTHS.items():
        page = await browser.new_page(viewport={"width": width, "height": 900})
        refused = watch_csp(page)
        await page.goto(url)
        await screenshot(page, f"validation-{name}-{label}")
        overflow = await page.evaluate("document.documentElement.scrollWidth")
        assert overflow <= width, f"{name} at {width}px is {overflow}px wide"
        assert refused == [], refused
        pages.append(page)
    return pages


async def test_a_running_validation_follows_its_steps_live(browser, dashboard) -> None:  # noqa: F811
    from playwright.async_api import expect

    validations = dashboard.services.store.validations
    state = await running_validation(dashboard)
    tail = "".join(f"npm http fetch GET 200 https://registry.npmjs.org/package-{n} 41ms (cache hit)\n"
                   for n in range(60))
    await validations.set_progress(state.id, {
        "steps": [step("checkout", "checkout", "passed", 1.2), step("pip install -e .", "setup", "passed", 500.0)],
        "current": "npm ci", "stage": "setup", "tail": tail})
    url = f"{dashboard.url}/validations/{state.id}"
    desktop, mobile = await show(browser, url, "running")
    await expect(desktop.locator("#step-3 .state")).to_have_text("Running")
    await expect(desktop.locator("#step-4 .state")).to_have_text("Pending")

    # the next step starts: the page follows without a reload
    await validations.set_progress(state.id, {
        "steps": [step("checkout", "checkout", "passed", 1.2), step("pip install -e .", "setup", "passed", 500.0),
                  step("npm ci", "setup", "passed", 31.0)],
        "current": "unit tests", "stage": "validate", "tail": "collected 12 items\ntest_app.py ....\n"})
    await expect(desktop.locator("#step-4 .state")).to_have_text("Running", timeout=10_000)
    await expect(desktop.locator("#step-4 .log .line")).to_have_count(2)
    await expect(desktop.locator("#step-4 .log .line").first).to_have_text("1collected 12 items")
    await expect(desktop.locator("#step-3 .duration")).to_have_text("31s")
    assert await desktop.locator("#step-4 details").get_attribute("open") is not None
    assert await desktop.locator("#step-3 details").get_attribute("open") is None  # passed: closed

    # the run ends: the page shows its report
    assert await validations.complete(state.id, conclusion="failure", title="unit tests failed", results={
        "steps": [step("checkout", "checkout", "passed", 1.2),
                  step("unit tests", "validate", "failed", 3.0, "E  assert 2 == 3\n")]})
    await expect(mobile.locator("#run-state")).to_have_text("Failed", timeout=10_000)
    await expect(mobile.locator("#step-2 details")).to_have_attribute("open", "")


async def test_a_failed_validation_with_findings(browser, dashboard) -> None:  # noqa: F811
    validations = dashboard.services.store.validations
    state = await new_validation(dashboard, trigger="command.validate", triggered_by="dev-alice")
    assert await validations.start(state.id)
    steps = failed_with_findings()
    assert await validations.complete(state.id, conclusion="failure", title="ruff: 3 findings on changed lines",
                                      results={"steps": steps, "findings": recorded_findings(steps),
                                               "notes": ["setup restored from snapshot"]})
    desktop, mobile = await show(browser, f"{dashboard.url}/validations/{state.id}", "failed")
    for page in (desktop, mobile):
        assert await page.locator("#step-6 details").get_attribute("open") is not None
        assert await page.locator("#step-6 .findings li").count() == 4
        assert await page.locator("#step-6 .findings li.warning").inner_text() == \
            "pkg/util.py:20 D103 Missing docstring warning"
        assert await page.locator("#step-2 .findings li").count() == 0
        assert await page.get_by_text("by @dev-alice via /validate").is_visible()
    # the link back to the project (which asks for a login there)
    assert await desktop.locator("#project-link").get_attribute("href") == "/projects/acme/widgets"


async def test_ui_check_screenshots_open_full_size(browser, dashboard) -> None:  # noqa: F811
    from playwright.async_api import expect

    validations = dashboard.services.store.validations
    state = await new_validation(dashboard)
    assert await validations.start(state.id)
    folder = screenshots_dir(dashboard.services.settings.data_dir, state.id)
    folder.mkdir(parents=True)
    painter = await browser.new_page(viewport={"width": 1280, "height": 800})
    await painter.set_content("<h1 style='font: 64px sans-serif; color: #0969da'>Widgets home</h1>")
    shots = []
    for path in ("/", "/settings"):
        file = f"{uuid.uuid4().hex}.png"
        await painter.screenshot(path=str(folder / file))
        shots.append({"path": path, "file": file, "width": 1280, "height": 800})
    assert await validations.complete(state.id, conclusion="success", title="Passed", results={
        "steps": [step("checkout", "checkout", "passed", 1.0), step("UI check", "ui", "passed", 14.0, "checked /\n")],
        "screenshots": shots})
    desktop, mobile = await show(browser, f"{dashboard.url}/validations/{state.id}", "screenshots")
    thumb = mobile.locator("#step-2 img.thumb").first
    await expect(thumb).to_be_visible()  # a passed UI check is open: its screenshots show without a click
    assert await thumb.evaluate("image => image.naturalWidth") == 1280  # served, and shown smaller
    assert (await thumb.bounding_box())["width"] < 200
    await screenshot(mobile, "validation-screenshots-open-mobile")
    async with mobile.context.expect_page() as opened:
        await thumb.click()
    full = await opened.value
    assert full.url.endswith(f"/validations/{state.id}/screenshots/{shots[0]['file']}")


async def test_waiting_and_neutral_runs_say_what_to_do(browser, dashboard) -> None:  # noqa: F811
    validations = dashboard.services.store.validations
    waiting = await new_validation(dashboard, is_fork=True, author="mallory")
    assert await validations.wait_for_approval(waiting.id, title="Waiting for a maintainer: /ok-to-test")
    for page in await show(browser, f"{dashboard.url}/validations/{waiting.id}", "waiting"):
        assert "comments /ok-to-test" in await page.locator("#notice").inner_text()

    neutral = await new_validation(dashboard)
    assert await validations.start(neutral.id)
    assert await validations.complete(neutral.id, conclusion="neutral", title="Nothing to validate", results={})
    for page in await show(browser, f"{dashboard.url}/validations/{neutral.id}", "neutral"):
        assert "run: pytest -q" in await page.locator("#notice pre").inner_text()
