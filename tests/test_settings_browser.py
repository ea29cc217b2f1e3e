"""The settings and account pages in a real headless Chromium (Debian's /usr/bin/chromium): what the
repository's file sets is read-only, the agent fields follow the chosen backend, deleting a secret asks
first, a new API token is copied with its button, and the Revoke column's header is for screen readers
only. Screenshots at 1280 and 390 px: tests/artifacts/settings-*.png and account-*.png."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from bot.store import RepoRef
from tests.browser import screenshot, watch_csp

pytestmark = pytest.mark.slow

CONFIG = """\
validate:
  - pytest -q
  - name: types
    run: python -m mypy src
timeout_minutes: 20
auto_merge: {method: squash}
env: {NODE_ENV: test}
merge_queue: {batch_size: 4}
"""
WIDTHS = {"desktop": 1280, "phone": 390}


async def _log_in(page, dashboard) -> None:  # type: ignore[no-untyped-def]
    dashboard.fake.approve_oauth_as("alice", installation_ids=[1])
    await page.goto(dashboard.url + "/auth/login")
    assert page.url == dashboard.url + "/"


async def _no_sideways_scroll(page, where: str) -> None:  # type: ignore[no-untyped-def]
    width = await page.evaluate("document.documentElement.scrollWidth")
    viewport = await page.evaluate("window.innerWidth")
    assert width <= viewport, f"{where} scrolls sideways ({width}px in {viewport}px)"


async def test_settings_show_what_wins_and_ask_before_deleting(browser, dashboard) -> None:
    from playwright.async_api import expect

    store = dashboard.services.store
    dashboard.fake.set_permission("acme/widgets", "alice", "admin")
    dashboard.fake.set_file("acme/widgets", "main", ".github/codegenapp.yml", CONFIG)
    await store.projects.upsert_projects(1, [RepoRef(id=dashboard.fake.repos["acme/widgets"]["id"],
                                                     full_name="acme/widgets", default_branch="main")])
    project = await store.projects.get_project_by_name("acme/widgets")
    await store.projects.update_project(project.id, {"setup_commands": ["python -m pip install -e '.[dev]'"],
                                                     "repository_rules": "Small commits."})
    await store.projects.set_secret(project.id, "DEPLOY_KEY", "never-shown")
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    refused = watch_csp(page)
    await _log_in(page, dashboard)
    await page.goto(dashboard.url + "/projects/acme/widgets/settings")

    validate = page.get_by_label("Validate commands")
    assert await validate.get_attribute("readonly") is not None
    assert await validate.input_value() == "pytest -q\npython -m mypy src"
    await expect(page.locator("#validate_commands-source")).to_have_text("set in .github/codegenapp.yml")
    await expect(page.locator("#setup_commands-source")).to_have_text("project setting")
    await expect(page.locator("#auto_merge_enabled-source")).to_have_text("default")
    # Validation, then Agents and merging (with the merge rows the file alone sets), then Secrets
    assert await page.locator("h2").all_text_contents() == ["Validation", "Agents and merging", "Secrets"]
    merging, validation = (page.get_by_role("region", name=name) for name in ("Agents and merging", "Validation"))
    for label in ("Merge method", "Delete the branch after merging"):
        await expect(merging.locator("dt", has_text=label)).to_be_visible()
        await expect(validation.locator("dt", has_text=label)).to_have_count(0)
    await expect(merging.locator("dt:has-text('Merge method') + dd")).to_contain_text(
        "squash and merge set in .github/codegenapp.yml")
    await expect(validation.locator("dt", has_text="Timeout")).to_be_visible()
    # the merge queue's keys: editable, but the one the file sets
    batch = merging.get_by_label("PRs tested together (batch size)")
    assert await batch.is_disabled() and await batch.input_value() == "4"
    await expect(page.locator("[id='merge_queue.batch_size-source']")).to_have_text("set in .github/codegenapp.yml")
    for label in ("Merge queue", "How the queue lands a PR", "Candidates tested at once"):
        assert await merging.get_by_label(label, exact=True).is_enabled(), label

    # the agent fields of the chosen backend only
    backend = page.get_by_label("Agent backend")
    await backend.select_option("local")
    await expect(page.get_by_label("Agent command")).to_be_visible()
    await expect(page.get_by_label("Max fix attempts")).to_be_visible()
    await backend.select_option("none")
    await expect(page.get_by_label("Agent command")).to_be_hidden()
    await expect(page.get_by_label("Planning statement")).to_be_hidden()
    await backend.select_option("codegen")
    await expect(page.get_by_label("Agent command")).to_be_hidden()
    await expect(page.get_by_label("Planning statement")).to_be_visible()

    await page.reload()  # within REPO_FILE_SECONDS: the file read before, and the page says when
    await expect(page.locator("[data-field=file-age]")).to_contain_text("The file was read ")
    for name, width in WIDTHS.items():
        await page.set_viewport_size({"width": width, "height": 900})
        await screenshot(page, f"settings-{name}")
        await _no_sideways_scroll(page, f"the settings page at {width}px")

    # deleting a secret asks first
    await page.get_by_role("button", name="Delete DEPLOY_KEY").click()
    await expect(page.get_by_role("heading", name="Delete the secret DEPLOY_KEY?")).to_be_visible()
    await screenshot(page, "settings-delete-secret-phone")
    assert await store.projects.secret_values(project.id) == {"DEPLOY_KEY": "never-shown"}
    await page.get_by_role("button", name="Delete DEPLOY_KEY").click()
    await expect(page.get_by_text("No secrets.")).to_be_visible()
    assert await store.projects.secret_values(project.id) == {}

    # saving keeps what the file sets as it was stored, and saves the rest
    await page.get_by_label("Setup commands").fill("make deps")
    await page.get_by_label("Agent backend").select_option("local")
    await page.get_by_label("Agent command").fill("my-agent --goal-file GOAL")
    await page.get_by_label("Merge queue", exact=True).check()
    await page.get_by_label("How the queue lands a PR").select_option("squash")
    await page.get_by_label("Candidates tested at once").fill("2")
    await page.get_by_role("button", name="Save settings").click()
    await expect(page.get_by_text("Settings saved.")).to_be_visible()
    saved = await store.projects.get_project_by_name("acme/widgets")
    assert (saved.setup_commands, saved.validate_commands, saved.agent_backend) == (["make deps"], [], "local")
    assert saved.merge_queue == {"enabled": True, "method": "squash", "max_parallel": 2}
    await expect(page.locator("[id='merge_queue.max_parallel-source']")).to_have_text("project setting")
    await screenshot(page, "settings-saved-phone")
    await _no_sideways_scroll(page, "the saved settings page at 390px")
    await context.close()
    assert refused == []


async def test_a_new_token_is_copied_and_its_expiry_shown(browser, dashboard) -> None:
    from playwright.async_api import expect

    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=dashboard.url)
    page = await context.new_page()
    refused = watch_csp(page)
    await _log_in(page, dashboard)
    await page.goto(dashboard.url + "/account")
    await page.get_by_label("Token name").fill("deploy pipeline")
    await page.get_by_label("Expires after").select_option("7")
    await page.get_by_role("button", name="Create API token").click()
    token = await page.locator("#new-token").text_content()
    assert token and token.startswith("cga_")
    await page.get_by_role("button", name="Copy").click()
    await expect(page.locator("#copy-status")).to_have_text("Copied.")
    assert await page.evaluate("navigator.clipboard.readText()") == token
    row = page.get_by_role("row", name="deploy pipeline")
    week = (datetime.now(UTC) + timedelta(days=7)).strftime("%Y-%m-%d")
    await expect(row.get_by_role("cell").nth(2)).to_have_text(re.compile(rf"^{week} \d\d:\d\d UTC$"))
    # the buttons' column is headed for screen readers only
    header = page.get_by_role("columnheader", name="Revoke")
    await expect(header).to_have_count(1)
    box = await header.locator("span").bounding_box()
    assert box is not None and box["width"] <= 1 and box["height"] <= 1
    for name, width in WIDTHS.items():
        await page.set_viewport_size({"width": width, "height": 800})
        await screenshot(page, f"account-{name}")
        await _no_sideways_scroll(page, f"the account page at {width}px")
    await context.close()
    assert refused == []
