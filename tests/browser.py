"""Playwright (Python, async) driving Debian's Chromium headless: the `browser` fixture.

Never `playwright install`: the browser is the system's `/usr/bin/chromium` (the Makefile installs the
`chromium` package). Without it the tests that use `browser` are skipped, saying so.

The fixture is function-scoped: the tests are async and each runs on its own event loop (the bot and
the fake GitHub are served on it), and a Playwright browser is bound to the loop that started it.
Starting one costs ~0.4 s (driver 0.25 s + launch 0.15 s).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pipeline.ui_check.check import CHROMIUM_ARGS, DEFAULT_CHROMIUM

CHROMIUM = os.environ.get("CHROMIUM_PATH", DEFAULT_CHROMIUM)
ARTIFACTS = Path(__file__).parent / "artifacts"

__all__ = ["browser", "ARTIFACTS", "screenshot", "browser_missing", "watch_csp", "logged_in_page"]


def browser_missing() -> str | None:
    """Why no browser test can run here, or None."""
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        return f"{CHROMIUM} is missing: install Debian's chromium package (make install does, as root)"
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "playwright is not installed: make install"
    return None


@pytest.fixture
async def browser() -> AsyncIterator[object]:
    """A headless Chromium (playwright.async_api.Browser)."""
    reason = browser_missing()
    if reason is not None:
        print(f"skipping browser test: {reason}")
        pytest.skip(reason)
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            await chromium.close()


async def screenshot(page: object, name: str) -> Path:
    """Save a full-page screenshot as tests/artifacts/<name>.png (gitignored) and return its path."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)  # type: ignore[attr-defined]
    return path


def watch_csp(page: object) -> list[str]:
    """The Content-Security-Policy violations the page will report (Chromium says so on its console)."""
    refused: list[str] = []
    page.on("console", lambda message: refused.append(message.text)  # type: ignore[attr-defined]
            if "Content Security Policy" in message.text else None)
    return refused


async def logged_in_page(browser: object, url: str, *, width: int = 1280,
                         height: int = 900) -> tuple[object, list[str]]:
    """A page of a new browser context `width` x `height`, logged in to the dashboard at `url` (whoever
    the fake GitHub approves the OAuth login as: `approve_oauth_as`), and the CSP violations it will report."""
    context = await browser.new_context(viewport={"width": width, "height": height})  # type: ignore[attr-defined]
    page = await context.new_page()
    refused = watch_csp(page)
    await page.goto(url + "/auth/login")
    return page, refused
