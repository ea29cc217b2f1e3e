"""The block `codegenapp serve` logs at start (bot/startup_report.py, gathered in bot/app.py) and whether
GitHub can reach PUBLIC_URL (bot/reachability.py): pure tests, then the real `codegenapp serve` in setup
mode, registered through the dashboard and restarted."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any

import aiohttp
import pytest

from bot import app as app_module
from bot.app import AppNaming, read_app_naming, startup_facts
from bot.reachability import unreachable_reason
from bot.startup_report import INFO_TITLE, StartupFacts, database_description, startup_report
from tests.conftest import APP_ID
from tests.cli_support import ServedApp, cli_env
from tests.registration_support import register_app

SANDBOX_OK = {"mode": "bwrap", "sandboxed": True, "bwrap_version": "bubblewrap 0.8.0", "notes": [],
              "layers": {"seccomp": True, "net_namespace": True, "user_network": True, "dedicated_uid": True,
                         "cgroup_memory": True, "cgroup_pids": True}}


def block_of(facts: StartupFacts) -> str:
    """Both parts of the block, the INFO rows and the rows to act on (WARNING)."""
    report = startup_report(facts)
    return "\n".join(report.info + report.warnings)


def block(settings, **facts) -> str:  # type: ignore[no-untyped-def]
    return block_of(StartupFacts(settings=settings, **facts))


def row(text: str, label: str) -> str:
    [found] = re.findall(rf"^  {re.escape(label)} +(.*)$", text, flags=re.MULTILINE)
    return found


# ---- the block -----------------------------------------------------------------------------------

def test_setup_mode_says_what_is_missing_and_the_one_link_to_open(make_settings) -> None:
    settings = make_settings(APP_ID=None, PRIVATE_KEY=None, WEBHOOK_SECRET=None, PUBLIC_URL="http://127.0.0.1:3001")
    text = block(settings, setup_token="t0k3n", sandbox=SANDBOX_OK)
    assert row(text, "GitHub App") == ("not configured, setup mode (APP_ID, PRIVATE_KEY or PRIVATE_KEY_PATH, "
                                       "WEBHOOK_SECRET missing): webhooks answer 503 until an App is registered")
    assert row(text, "open").startswith("http://127.0.0.1:3001/?setup_token=t0k3n ")
    assert text.count("setup_token=") == 1
    assert row(text, "login") == "after registration (the App's OAuth credentials come with it)"


def test_a_configured_app_is_named_and_the_link_is_the_dashboard(make_settings) -> None:
    settings = make_settings(APP_ID="4242", PUBLIC_URL="https://codegen.example.com",
                             GITHUB_CLIENT_ID="Iv1.abc", GITHUB_CLIENT_SECRET="shh")
    registered = block(settings, app_name="codegenapp-acme", registered_here=True, setup_token=None)
    assert row(registered, "GitHub App") == "4242 (codegenapp-acme, registered from the dashboard)"
    assert row(block(settings), "GitHub App") == "4242 (from the environment)"
    assert row(block(settings, app_name="CodegenApp Acme", app_slug="codegenapp-acme"), "GitHub App") == (
        "4242 (CodegenApp Acme, https://github.com/apps/codegenapp-acme, from the environment)")
    assert row(registered, "open").startswith("https://codegen.example.com/ ")
    assert "setup_token" not in registered and "not configured" not in registered
    assert row(registered, "login") == "GitHub OAuth ready"
    assert "shh" not in registered


def test_login_without_both_oauth_credentials_is_not_ready(make_settings) -> None:
    text = block(make_settings(GITHUB_CLIENT_ID="Iv1.abc"))
    assert row(text, "login").startswith("not ready: set GITHUB_CLIENT_SECRET ")


def test_public_url_says_whether_github_can_reach_it(make_settings) -> None:
    public = row(block(make_settings(PUBLIC_URL="https://codegen.example.com")), "PUBLIC_URL")
    assert public == ("https://codegen.example.com: GitHub sends webhooks to "
                      "https://codegen.example.com/api/v1/webhooks/github")
    loopback = row(block(make_settings(PUBLIC_URL="http://127.0.0.1:3001", WEBHOOK_MODE="webhook")), "PUBLIC_URL")
    assert loopback.startswith("http://127.0.0.1:3001: GitHub cannot reach it (a loopback address), so no webhook")
    private = row(block(make_settings(PUBLIC_URL="http://192.168.1.20:3001", WEBHOOK_MODE="webhook")), "PUBLIC_URL")
    assert "GitHub cannot reach it (a private-range address)" in private


def test_in_polling_mode_an_unreachable_public_url_is_no_problem(make_settings) -> None:
    settings = make_settings(PUBLIC_URL="http://127.0.0.1:3001", WEBHOOK_MODE="poll")  # its default there
    report = startup_report(StartupFacts(settings=settings))
    assert "PUBLIC_URL" not in labels(report.warnings)
    assert row("\n".join(report.info), "PUBLIC_URL") == (
        "http://127.0.0.1:3001: GitHub cannot reach it (a loopback address); polling mode: events are read from "
        "the App's delivery log every 5 s")


@pytest.mark.parametrize("url, expected", [
    ("postgresql://app:s3cr%40t@db.example.com:5433/codegenapp?sslmode=require",
     "PostgreSQL at db.example.com:5433/codegenapp as app"),
    ("postgresql+asyncpg://app:s3cr%40t@db.example.com/codegenapp", "PostgreSQL at db.example.com/codegenapp as app"),
    ("postgresql+asyncpg:///codegenapp", "PostgreSQL at the local socket/codegenapp"),
    ("sqlite:////srv/data/codegenapp.db", "SQLite at /srv/data/codegenapp.db"),
    ("sqlite://", "SQLite in memory (nothing is kept)"),
])
def test_the_database_is_named_without_its_password(url: str, expected: str) -> None:
    assert database_description(url) == expected


def test_the_block_never_shows_the_database_password(make_settings) -> None:
    text = block(make_settings(DATABASE_URL="postgresql://app:hunter2-secret@db.example.com/codegenapp"))
    assert row(text, "database") == "PostgreSQL at db.example.com/codegenapp as app"
    assert "hunter2" not in text


def test_the_sandbox_names_its_layers_and_what_it_lacks(make_settings) -> None:
    settings = make_settings()
    lacking = {**SANDBOX_OK, "layers": {**SANDBOX_OK["layers"], "seccomp": False, "user_network": False}}
    text = row(block(settings, sandbox=lacking, workspaces={"bounded": False, "reason": "no loop devices"}), "sandbox")
    assert text == ("bubblewrap 0.8.0 with network namespace, a uid of its own, memory cgroup, process cgroup; "
                    "without seccomp, slirp4netns for setup's network, size-limited workspaces")
    full = row(block(settings, sandbox=SANDBOX_OK, workspaces={"bounded": True}), "sandbox")
    assert "without" not in full and full.endswith("size-limited workspaces")
    broken = {"mode": "unavailable", "sandboxed": False, "notes": ["bwrap not found"], "layers": {}}
    assert row(block(settings, sandbox=broken), "sandbox") == (
        "NOT working (bwrap not found): PR code will not be run; validations fail saying so")


def test_the_browser_line_says_whether_chromium_is_there(make_settings) -> None:
    settings = make_settings(CHROMIUM_PATH="/nowhere/chromium")
    assert row(block(settings, browser={"found": False}), "browser").startswith(
        "Chromium not found at /nowhere/chromium: the UI check cannot run")
    assert row(block(settings, browser={"found": True, "status": "checking"}), "browser").startswith(
        "Chromium at /nowhere/chromium for the UI check")


def test_agents_say_which_backend_runs_by_default(make_settings) -> None:
    assert row(block(make_settings(CODEGEN_API_KEY="k", CODEGEN_ORG_ID="42")), "agents").startswith(
        "Codegen (organization 42) by default")
    assert row(block(make_settings(CODEGEN_API_KEY="k")), "agents").startswith("Codegen needs CODEGEN_ORG_ID too")
    assert row(block(make_settings()), "agents").startswith("none by default")


# ---- what is logged at WARNING ------------------------------------------------------------------

def labels(lines: list[str]) -> list[str]:
    return [line.split()[0] if not line.startswith("  GitHub App") else "GitHub App" for line in lines[1:]]


def test_a_healthy_start_is_one_info_block_with_nothing_to_act_on(make_settings) -> None:
    settings = make_settings(PUBLIC_URL="https://codegen.example.com", GITHUB_CLIENT_ID="Iv1.abc",
                             GITHUB_CLIENT_SECRET="shh", CODEGEN_API_KEY="k", CODEGEN_ORG_ID="42")
    report = startup_report(StartupFacts(settings=settings, sandbox=SANDBOX_OK, browser={"found": True}))
    assert report.warnings == []
    assert labels(report.info) == ["GitHub App", "PUBLIC_URL", "database", "login", "agents", "sandbox", "browser",
                                   "jobs", "open"]


def test_the_rows_to_act_on_move_to_the_warning_part_and_show_once(make_settings) -> None:
    settings = make_settings(APP_ID=None, PRIVATE_KEY=None, WEBHOOK_SECRET=None, PUBLIC_URL="http://127.0.0.1:3001",
                             WEBHOOK_MODE="webhook", CODEGEN_API_KEY="k")
    broken = {"mode": "unavailable", "sandboxed": False, "notes": ["bwrap not found"], "layers": {}}
    report = startup_report(StartupFacts(settings=settings, setup_token="t0k3n", sandbox=broken,
                                         browser={"found": False}))
    assert report.warnings[0] == "CodegenApp needs attention:"
    assert labels(report.warnings) == ["GitHub App", "PUBLIC_URL", "agents", "sandbox", "browser", "open"]
    assert labels(report.info) == ["database", "login", "jobs"]
    assert row("\n".join(report.warnings), "open").startswith("http://127.0.0.1:3001/?setup_token=t0k3n ")


async def test_with_log_level_warning_the_link_and_the_problems_still_show(start_bot, caplog) -> None:
    caplog.set_level(logging.WARNING)
    await start_bot(APP_ID=None, PRIVATE_KEY=None, WEBHOOK_SECRET=None, PUBLIC_URL="http://127.0.0.1:3001",
                    WEBHOOK_MODE="webhook")
    [record] = [r for r in caplog.records if "CodegenApp" in r.getMessage()]
    assert record.levelno == logging.WARNING and record.name == "bot.app"
    text = record.getMessage()
    assert re.search(r"^  open +http://127\.0\.0\.1:3001/\?setup_token=\S+ ", text, flags=re.MULTILINE), text
    assert "GitHub cannot reach it (a loopback address)" in row(text, "PUBLIC_URL")
    assert "setup mode" in row(text, "GitHub App")
    assert "CodegenApp is starting:" not in text


async def test_at_info_the_block_and_the_warning_together_say_each_row_once(start_bot, caplog) -> None:
    caplog.set_level(logging.INFO)
    await start_bot(APP_ID=None, PRIVATE_KEY=None, WEBHOOK_SECRET=None, PUBLIC_URL="http://127.0.0.1:3001",
                    WEBHOOK_MODE="webhook")
    records = [r for r in caplog.records if r.name == "bot.app" and "CodegenApp" in r.getMessage()]
    assert [r.levelno for r in records] == [logging.INFO, logging.WARNING]
    text = "\n".join(r.getMessage() for r in records)
    for label in ("GitHub App", "PUBLIC_URL", "database", "login", "agents", "sandbox", "browser", "jobs", "open"):
        assert len(re.findall(rf"^  {label} ", text, flags=re.MULTILINE)) == 1, (label, text)
    assert text.count("setup_token=") == 1 and text.count("cannot reach") == 1


def _app_row(caplog) -> str:  # type: ignore[no-untyped-def]
    [record] = [r for r in caplog.records if r.name == "bot.app" and INFO_TITLE in r.getMessage()]
    return row(record.getMessage(), "GitHub App")


async def test_an_app_from_the_environment_is_named_as_github_shows_it(start_bot, fake_github, caplog) -> None:
    caplog.set_level(logging.INFO)
    await start_bot()
    slug = fake_github.app_slug
    assert _app_row(caplog) == (f"{APP_ID} (CodegenApp ({slug}), {fake_github.base_url}/apps/{slug}, "
                                "from the environment)")
    [call] = fake_github.calls_to("GET", "/app")
    assert call.headers["authorization"].lower().startswith("bearer ")  # as the App (JWT)


@pytest.mark.parametrize("status", [401, 404])
async def test_when_github_refuses_the_apps_credentials_the_block_warns(start_bot, fake_github, caplog,
                                                                       status: int) -> None:
    """A wrong private key (401) or APP_ID (404) is for the operator to fix: a row of the WARNING part."""
    caplog.set_level(logging.INFO)
    fake_github.fail_next("GET", "/app", status=status)
    await start_bot()
    [warning] = [r for r in caplog.records if r.name == "bot.app" and r.levelno == logging.WARNING
                 and "GitHub App" in r.getMessage()]
    assert row(warning.getMessage(), "GitHub App").startswith(
        f"{APP_ID} (from the environment): GitHub refused the App's credentials: GET /app answered {status} (")
    assert "check APP_ID and the private key" in warning.getMessage()
    assert not [r for r in caplog.records if INFO_TITLE in r.getMessage() and "GitHub App" in r.getMessage()]
    fake_github.take_errors()


async def test_a_github_that_does_not_answer_get_app_delays_the_start_by_the_bound_only(bot, fake_github) -> None:
    held = fake_github.hold_next("GET", "/app", before_handling=True)
    started = time.monotonic()
    try:
        naming = await read_app_naming(bot.services.settings, timeout=0.5)
    finally:
        held.release()
    assert time.monotonic() - started < 2.0
    assert held.arrived.is_set() and naming == AppNaming()
    unnamed = startup_facts(bot.services, runs_jobs=True, naming=naming)
    assert row(block_of(unnamed), "GitHub App") == f"{APP_ID} (from the environment)"
    named = startup_facts(bot.services, runs_jobs=True, naming=await read_app_naming(bot.services.settings))
    slug = fake_github.app_slug
    assert row(block_of(named), "GitHub App") == (f"{APP_ID} (CodegenApp ({slug}), {fake_github.base_url}/apps/{slug}, "
                                                  "from the environment)")


async def test_get_app_is_asked_while_the_services_are_built(start_bot, fake_github, caplog, monkeypatch) -> None:
    """The start asks GitHub for the App's name first and builds the services meanwhile. Here building them
    waits (bounded) until GET /app has reached GitHub, which answers only once they are built: a start that
    asked after building would fail; this one costs no wait and still names the App."""
    caplog.set_level(logging.INFO)
    held = fake_github.hold_next("GET", "/app", before_handling=True)
    build = app_module.build_services

    async def build_once_get_app_is_asked(*args: Any, **kwargs: Any) -> Any:
        await asyncio.wait_for(held.arrived.wait(), 10)
        try:
            return await build(*args, **kwargs)
        finally:
            held.release()

    monkeypatch.setattr(app_module, "build_services", build_once_get_app_is_asked)
    # GET /app is answered only once the services are built, which took over the 3 s bound on a loaded
    # machine: the bound is not what this test is about.
    monkeypatch.setattr(app_module, "APP_NAME_TIMEOUT_SECONDS", 60.0)
    await start_bot()
    slug = fake_github.app_slug
    assert _app_row(caplog) == f"{APP_ID} (CodegenApp ({slug}), {fake_github.base_url}/apps/{slug}, from the environment)"


# ---- reachability --------------------------------------------------------------------------------

@pytest.mark.parametrize("url, reason", [
    ("http://127.0.0.1:3001", "a loopback address"),
    ("http://[::1]:3001", "a loopback address"),
    ("http://localhost:3001", "a loopback name"),
    ("http://app.localhost", "a loopback name"),
    ("http://10.1.2.3", "a private-range address"),
    ("http://172.16.0.1", "a private-range address"),
    ("https://192.168.1.10", "a private-range address"),
    ("http://[fd00::1]", "a private-range address"),
    ("http://[::ffff:10.0.0.1]", "a private-range address"),
    ("http://169.254.10.1", "a link-local address"),
    ("http://[fe80::1]", "a link-local address"),
    ("http://100.64.0.1", "not a public address"),
    ("http://0.0.0.0:3001", "a listen-on-all address"),
    ("http://printer.local", "a local-network (mDNS) name"),
    ("https://ci.corp.internal", "an internal name"),
    ("http://buildbox:3001", "a name without a domain"),
])
def test_addresses_github_cannot_reach(url: str, reason: str) -> None:
    assert unreachable_reason(url) == reason


@pytest.mark.parametrize("url", ["https://codegen.example.com", "https://140.82.112.3", "http://[2606:4700::1]:8080",
                                 "https://Example.COM."])
def test_addresses_github_may_reach(url: str) -> None:
    assert unreachable_reason(url) is None


# ---- the real `codegenapp serve` -----------------------------------------------------------------

def _blocks(log: list[str]) -> list[str]:
    return [line for line in log if "CodegenApp is starting:" in line]


@pytest.mark.slow
async def test_serve_prints_one_block_and_after_registering_a_restart_warns_of_no_missing_app(
        tmp_path, fake_github) -> None:
    env = cli_env(tmp_path, GITHUB_API_URL=fake_github.api_url, GITHUB_URL=fake_github.base_url)
    first = await ServedApp(env).start(timeout=30)
    try:
        assert len(_blocks(first.log)) == 1, "".join(first.log)
        [link] = re.findall(r"^  open +(\S+)", "".join(first.log), flags=re.MULTILINE)
        assert link.startswith(f"{first.url}/?setup_token=")  # where it listens (serve --port), not PORT's default
        assert "".join(first.log).count("not configured") == 1
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
            callback = await register_app(browser, link)
        assert callback.status == 200 and "GitHub App registered" in callback.page, callback.page
    finally:
        assert await first.terminate() == 0

    second = await ServedApp(env, port=first.port).start(timeout=30)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(second.url + "/health") as response:
                assert (await response.json())["app_configured"] is True
    finally:
        assert await second.terminate() == 0
    log = "".join(second.log)
    assert len(_blocks(second.log)) == 1, log
    slug = fake_github.app_slug
    assert re.search(rf"^  GitHub App +{fake_github.app_id} \(CodegenApp \({slug}\), {re.escape(fake_github.base_url)}"
                     rf"/apps/{slug}, registered from the dashboard\)$", log, flags=re.MULTILINE), log
    assert "not configured" not in log and "answer 503" not in log and "setup_token" not in log
    assert re.search(rf"^  open +{re.escape(second.url)}/ ", log, flags=re.MULTILINE), log
