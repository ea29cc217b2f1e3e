"""The settings page shows the effective configuration: the pure resolver (file, project settings,
defaults -> value and source per key), then over HTTP against the fake GitHub: a key the repository's
file sets is read-only and names the file, a project value and a default say so, an unreachable GitHub
or an invalid file is said, a change to a file-set key is refused, deleting a secret asks first, and
API tokens expire."""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from cachetools import TTLCache

from bot.models import Project
from bot.services import REPO_FILE_SECONDS
from dashboard import account, auth
from dashboard.project_settings import keep_file_keys, shown_lines
from pipeline.repo_config.effective import effective_config
from pipeline.repo_config.merge_queue_block import MergeQueueSettings
from pipeline.repo_config.parse import parse_repo_config
from pipeline.repo_config.reading import project_settings
from pipeline.repo_config.settings_sources import (DEFAULT, FILE, FILE_KEY_OF, PROJECT, PROJECT_DEFAULTS,
                                                   QUEUE_SETTING_KEYS, resolve_settings)
from tests.dashboard_support import csrf_of

CONFIG = ".github/codegenapp.yml"
STORED = {"setup_commands": ["pip install -e ."], "validate_commands": ["make check"], "auto_merge_enabled": True,
          "repository_rules": "Be brief.", "max_fix_attempts": 3, "agent_backend": None}


# ---- the resolver (pure) ------------------------------------------------------------------------------

def test_nothing_set_is_the_default_everywhere() -> None:
    resolved = resolve_settings(None, {})
    assert {key: r.source for key, r in resolved.items()} == {key: DEFAULT for key in resolved}
    assert resolved["validate_commands"].value == () and resolved["auto_merge_enabled"].value is False
    assert resolved["timeout_minutes"].value == 30 and resolved["merge_method"].value == "merge"
    assert resolved["max_fix_attempts"].value == 3


def test_project_values_are_the_projects_and_defaults_stay_defaults() -> None:
    resolved = resolve_settings(None, STORED)
    assert resolved["setup_commands"].value == ("pip install -e .",)
    assert [s.run for s in resolved["validate_commands"].value] == ["make check"]
    assert {k: resolved[k].source for k in ("setup_commands", "validate_commands", "auto_merge_enabled",
                                            "repository_rules")} == dict.fromkeys(
        ("setup_commands", "validate_commands", "auto_merge_enabled", "repository_rules"), PROJECT)
    # stored values equal to the default (3 fix attempts, no backend) count as not set
    assert resolved["max_fix_attempts"].source == DEFAULT and resolved["agent_backend"].source == DEFAULT


def test_a_key_the_file_sets_wins_even_when_empty() -> None:
    file = parse_repo_config("setup: []\nvalidate:\n  - pytest -q\n  - name: types\n    run: mypy src\n"
                             "timeout_minutes: 12\n")
    resolved = resolve_settings(file, STORED)
    assert resolved["setup_commands"].value == () and resolved["setup_commands"].from_file
    assert [s.run for s in resolved["validate_commands"].value] == ["pytest -q", "mypy src"]
    assert resolved["validate_commands"].source == FILE
    assert resolved["auto_merge_enabled"].source == PROJECT  # the file does not set it
    assert (resolved["timeout_minutes"].value, resolved["timeout_minutes"].source) == (12, FILE)
    assert resolved["repository_rules"].source == PROJECT  # the file cannot set it


def test_a_merge_method_alone_leaves_the_switch_to_the_project() -> None:
    resolved = resolve_settings(parse_repo_config("auto_merge: {method: squash}"), {"auto_merge_enabled": False})
    assert (resolved["auto_merge_enabled"].value, resolved["auto_merge_enabled"].source) == (False, DEFAULT)
    assert (resolved["merge_method"].value, resolved["merge_method"].source) == ("squash", FILE)
    off = resolve_settings(parse_repo_config("auto_merge: false"), STORED)["auto_merge_enabled"]
    assert (off.value, off.source) == (False, FILE)


def test_the_merge_queue_sub_keys_each_say_where_they_come_from() -> None:
    defaults = resolve_settings(None, STORED)
    assert {key: (defaults[key].value, defaults[key].source) for key in QUEUE_SETTING_KEYS} == {
        "merge_queue.enabled": (False, DEFAULT), "merge_queue.method": ("merge", DEFAULT),
        "merge_queue.batch_size": (1, DEFAULT), "merge_queue.max_parallel": (3, DEFAULT),
        "merge_queue.flaky_retries": (1, DEFAULT)}
    resolved = resolve_settings(parse_repo_config("merge_queue: {enabled: true, batch_size: 4}"), STORED)
    assert {key: (resolved[key].value, resolved[key].source) for key in QUEUE_SETTING_KEYS} == {
        "merge_queue.enabled": (True, FILE), "merge_queue.method": ("merge", DEFAULT),
        "merge_queue.batch_size": (4, FILE), "merge_queue.max_parallel": (3, DEFAULT),
        "merge_queue.flaky_retries": (1, DEFAULT)}
    assert shown_lines("merge_queue.method", "fast-forward") == ["fast-forward to the tested commit"]
    assert shown_lines("merge_queue.enabled", True) == ["on"] and shown_lines("merge_queue.batch_size", 4) == ["4"]


@pytest.mark.parametrize("text", ["", "validate: [pytest]", "setup: [make]\nauto_merge: true", "auto_merge: false"])
@pytest.mark.parametrize("stored", [{}, STORED, {**STORED, "setup_commands": ["  ", ""]}])
def test_the_page_shows_what_a_validation_uses(text: str, stored: dict) -> None:
    """Validations merge with reading.project_settings(Project); the page resolves from the same values."""
    file = parse_repo_config(text)
    project = Project(**{**PROJECT_DEFAULTS, **stored})
    used = effective_config(file, project_settings(project))
    resolved = resolve_settings(file, stored)
    for key, file_key in FILE_KEY_OF.items():
        assert resolved[key].value == getattr(used, file_key)
        assert resolved[key].from_file == (used.sources[file_key] == "repository")


def test_the_defaults_are_the_models() -> None:
    columns = Project.__table__.columns
    for key, default in PROJECT_DEFAULTS.items():
        column_default = columns[key].default
        model = None if column_default is None else column_default.arg
        model = model(None) if callable(model) else model  # list: a factory (SQLAlchemy passes a context)
        assert (model or None) == (default or None), key


def test_a_file_key_keeps_its_stored_value_and_a_change_is_refused() -> None:
    stored = {"setup_commands": ["make"], "validate_commands": ["old"], "auto_merge_enabled": False}
    values = {"setup_commands": ["make"], "validate_commands": [], "auto_merge_enabled": False, "repository_rules": ""}
    assert keep_file_keys(values, {"setup_commands": "make"}, stored, {"validate_commands", "auto_merge_enabled"}) == []
    assert values == {"setup_commands": ["make"], "repository_rules": ""}  # not offered: the stored value stays

    values = {"validate_commands": ["new"], "auto_merge_enabled": True}
    problems = keep_file_keys(values, {"validate_commands": "new", "auto_merge_enabled": "on"}, stored,
                              {"validate_commands", "auto_merge_enabled"})
    assert problems == [f"Auto-merge is set in {CONFIG} on the default branch: change it there (a value saved "
                        "here would be ignored)",
                        f"Validate commands is set in {CONFIG} on the default branch: change it there (a value "
                        "saved here would be ignored)"]


def test_values_read_as_words() -> None:
    file = parse_repo_config("env: {CI: true}\nsetup_network: false\nauto_merge: {method: rebase}\n")
    resolved = resolve_settings(file, {})
    assert shown_lines("env", resolved["env"].value) == ["CI=true"]
    assert shown_lines("setup_network", resolved["setup_network"].value) == ["no network"]
    assert shown_lines("merge_method", resolved["merge_method"].value) == ["rebase and merge"]
    assert shown_lines("timeout_minutes", 30) == ["30 minutes"] and shown_lines("ui", None) == []


def test_token_expiry() -> None:
    now = datetime(2026, 12, 7, 1, 0, tzinfo=UTC)
    assert account.token_expiry("never", now) is None
    assert account.token_expiry("7", now) == now + timedelta(days=7)
    with pytest.raises(KeyError):
        account.token_expiry("365", now)
    assert not auth.token_expired(None, now) and not auth.token_expired(now + timedelta(seconds=1), now)
    assert auth.token_expired(now, now)
    assert account.expiry_text(None, now) == "never"
    assert account.expiry_text(now + timedelta(days=30), now) == "2027-01-06 01:00 UTC"
    assert account.expiry_text(now - timedelta(days=1), now) == "expired 2026-12-06 01:00 UTC"


# ---- over HTTP -------------------------------------------------------------------------------------------

SETTINGS = "/projects/acme/widgets/settings"


async def _page(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(url) as response:
        assert response.status == 200, response.status
        return await response.text()


def _textarea(page: str, key: str) -> str:
    found = re.search(rf'<textarea id="{key}"[^>]*>', page)
    assert found, f"no textarea {key}"
    return found.group(0)


async def test_a_key_the_file_sets_is_read_only_and_names_the_file(dashboard) -> None:
    dashboard.fake.set_permission("acme/widgets", "alice", "admin")
    dashboard.fake.set_file("acme/widgets", "main", CONFIG, "validate:\n  - pytest -q\n  - ruff check .\n")
    project = await dashboard.services.store.projects.get_project_by_name("acme/widgets")
    await dashboard.services.store.projects.update_project(project.id, {"setup_commands": ["pip install -e ."],
                                                                        "validate_commands": ["make ignored"]})
    async with await dashboard.login("alice", installation_ids=[1]) as session:
        page = await _page(session, dashboard.url + SETTINGS)
        box = _textarea(page, "validate_commands")
        assert "readonly" in box and "name=" not in box  # shown, not sent
        assert "pytest -q\nruff check .</textarea>" in page and "make ignored" not in page
        link = f'<a href="{dashboard.fake.base_url}/acme/widgets/blob/HEAD/{CONFIG}"><code>{CONFIG}</code></a>'
        assert re.search(r'id="validate_commands-source">set in ' + re.escape(link), page)
        setup = _textarea(page, "setup_commands")
        assert 'name="setup_commands"' in setup and "readonly" not in setup
        assert 'id="setup_commands-source">project setting<' in page and "pip install -e .</textarea>" in page
        assert 'id="auto_merge_enabled-source">default<' in page
        assert re.search(r"<dt>Timeout</dt>\s*<dd>30 minutes\s*<span[^>]*>default<", page)

        # saving the form as shown keeps the stored value; a changed value is refused, saying why
        token = await csrf_of(session, dashboard.url + SETTINGS)
        form = {"csrf_token": token, "setup_commands": "make deps", "max_fix_attempts": "3"}
        async with session.post(dashboard.url + SETTINGS, data=form) as response:
            assert response.status == 200 and "Settings saved." in await response.text()
        stored = await dashboard.services.store.projects.get_project_by_name("acme/widgets")
        assert (stored.setup_commands, stored.validate_commands) == (["make deps"], ["make ignored"])
        async with session.post(dashboard.url + SETTINGS, data={**form, "validate_commands": "make other"}) as response:
            page = await response.text()
        assert response.status == 400
        assert f"Validate commands is set in {CONFIG} on the default branch: change it there" in page
    stored = await dashboard.services.store.projects.get_project_by_name("acme/widgets")
    assert stored.validate_commands == ["make ignored"]
    dashboard.fake.assert_clean()


def _control(page: str, key: str) -> str:
    """The form control (its opening tag) of `key` on the settings page."""
    found = re.search(rf'<(?:input|select)[^>]*id="{re.escape(key)}"[^>]*>', page, re.S)
    assert found, f"no control {key}"
    return found.group(0)


def _source(page: str, key: str) -> str:
    found = re.search(rf'id="{re.escape(key)}-source">(.*?)</span>', page, re.S)
    assert found, f"no source of {key}"
    return re.sub(r"<[^>]+>", "", found.group(1))


def _selected(page: str, key: str) -> str:
    select = page.split(f'<select id="{key}"', 1)[1].split("</select>", 1)[0]
    return re.findall(r'<option value="([^"]+)" selected>', select)[0]


QUEUE_FORM = {"merge_queue.method": "merge", "merge_queue.batch_size": "1", "merge_queue.max_parallel": "3",
              "merge_queue.flaky_retries": "1"}  # the queue's fields at their defaults, as the page sends them


async def test_the_merge_queue_settings_are_editable_unless_the_file_sets_them(dashboard) -> None:
    dashboard.fake.set_permission("acme/widgets", "alice", "admin")
    dashboard.fake.set_file("acme/widgets", "main", CONFIG,
                            "merge_queue:\n  enabled: true\n  method: fast-forward\n  batch_size: 4\n")
    async with await dashboard.login("alice", installation_ids=[1]) as session:
        page = await _page(session, dashboard.url + SETTINGS)
        assert "merge_queue" not in page.split('id="agents-heading"', 1)[0]  # under Agents and merging only
        for key in ("merge_queue.enabled", "merge_queue.method", "merge_queue.batch_size"):  # shown, not sent
            assert "disabled" in _control(page, key) and "name=" not in _control(page, key), key
            assert _source(page, key) == f"set in {CONFIG}", key
        assert "checked" in _control(page, "merge_queue.enabled")
        assert _selected(page, "merge_queue.method") == "fast-forward"
        assert 'value="4"' in _control(page, "merge_queue.batch_size")
        for key, shown in (("merge_queue.max_parallel", "3"), ("merge_queue.flaky_retries", "1")):
            control = _control(page, key)
            assert f'name="{key}"' in control and f'value="{shown}"' in control and "disabled" not in control
            assert _source(page, key) == "default"
        assert 'min="1" max="10"' in _control(page, "merge_queue.max_parallel")

        token = await csrf_of(session, dashboard.url + SETTINGS)
        form = {"csrf_token": token, "max_fix_attempts": "3", "merge_queue.max_parallel": "5",
                "merge_queue.flaky_retries": "0"}
        async with session.post(dashboard.url + SETTINGS, data=form) as response:
            page = await response.text()
            assert response.status == 200 and "Settings saved." in page
        assert _source(page, "merge_queue.max_parallel") == "project setting"
        assert 'value="5"' in _control(page, "merge_queue.max_parallel")
        stored = await dashboard.services.store.projects.get_project_by_name("acme/widgets")
        assert stored.merge_queue == {"max_parallel": 5, "flaky_retries": 0}

        # a key the file sets is refused; a value out of bounds too, saying the bounds; nothing is saved
        for change, said in (({"merge_queue.batch_size": "8"}, f"PRs tested together (batch size) is set in "
                                                               f"{CONFIG} on the default branch: change it there"),
                             ({"merge_queue.max_parallel": "11"}, "Candidates tested at once must be a whole number "
                                                                  "from 1 to 10, got &#39;11&#39;"),
                             ({"merge_queue.flaky_retries": "two"}, "Retries of a failing step (flaky) must be a "
                                                                    "whole number from 0 to 3, got &#39;two&#39;")):
            async with session.post(dashboard.url + SETTINGS, data={**form, **change}) as response:
                page = await response.text()
            assert response.status == 400 and said in page, (change, page)
    stored = await dashboard.services.store.projects.get_project_by_name("acme/widgets")
    assert stored.merge_queue == {"max_parallel": 5, "flaky_retries": 0}
    events = (await dashboard.services.store.audit.page(stored.id)).events
    assert [e.details["changed"] for e in events if e.action == "project.settings.updated"] == [["merge_queue"]]


async def test_the_queue_turned_on_in_the_settings_is_what_the_queue_uses(dashboard) -> None:
    """Without a file, the page turns the queue on: the queue's page says so, and the settings a queue run
    reads (project_settings, as pipeline/merge_queue/service.py reads them) are those."""
    dashboard.fake.set_permission("acme/widgets", "alice", "admin")
    async with await dashboard.login("alice", installation_ids=[1]) as session:
        page = await _page(session, dashboard.url + SETTINGS)
        assert "checked" not in _control(page, "merge_queue.enabled")
        assert _selected(page, "merge_queue.method") == "merge" and _source(page, "merge_queue.method") == "default"
        token = await csrf_of(session, dashboard.url + SETTINGS)
        form = {"csrf_token": token, "max_fix_attempts": "3", **QUEUE_FORM, "merge_queue.enabled": "on",
                "merge_queue.method": "squash", "merge_queue.batch_size": "4"}
        async with session.post(dashboard.url + SETTINGS, data=form) as response:
            page = await response.text()
            assert response.status == 200 and "Settings saved." in page
        assert "checked" in _control(page, "merge_queue.enabled") and _selected(page, "merge_queue.method") == "squash"
        stored = await dashboard.services.store.projects.get_project_by_name("acme/widgets")
        assert stored.merge_queue == {"enabled": True, "method": "squash", "batch_size": 4}
        assert effective_config(None, project_settings(stored)).merge_queue == MergeQueueSettings(
            enabled=True, method="squash", batch_size=4)
        queue_page = await _page(session, dashboard.url + "/projects/acme/widgets/queue")
        assert "The merge queue is <strong>on</strong> for this project (project setting)" in queue_page
        assert "testing up to 4 PRs together" in queue_page

        # back to the defaults: nothing is stored, and the page says "default" again
        async with session.post(dashboard.url + SETTINGS, data={"csrf_token": token, "max_fix_attempts": "3",
                                                                  **QUEUE_FORM}) as response:
            page = await response.text()
        assert _source(page, "merge_queue.enabled") == _source(page, "merge_queue.batch_size") == "default"
    stored = await dashboard.services.store.projects.get_project_by_name("acme/widgets")
    assert stored.merge_queue is None


async def test_without_a_file_project_values_and_defaults_are_shown(dashboard) -> None:
    dashboard.fake.set_permission("acme/widgets", "alice", "admin")
    project = await dashboard.services.store.projects.get_project_by_name("acme/widgets")
    await dashboard.services.store.projects.update_project(project.id, {"auto_merge_enabled": True})
    async with await dashboard.login("alice", installation_ids=[1]) as session:
        page = await _page(session, dashboard.url + SETTINGS)
    assert f"The repository has no <code>{CONFIG}</code> on its default branch" in page
    assert 'id="auto_merge_enabled-source">project setting<' in page
    assert 'id="validate_commands-source">default<' in page and "readonly" not in page
    assert [c.path for c in dashboard.fake.calls_to("GET", f"/repos/acme/widgets/contents/{CONFIG}")] != []


async def test_an_invalid_file_and_an_unreachable_github_are_said(dashboard) -> None:
    dashboard.fake.set_permission("acme/widgets", "alice", "admin")
    dashboard.fake.set_file("acme/widgets", "main", CONFIG, "validate: [pytest]\ntimeout: 5\n")
    async with await dashboard.login("alice", installation_ids=[1]) as session:
        page = await _page(session, dashboard.url + SETTINGS)
        assert "is invalid:</strong>" in page and "timeout" in page and "Validations fail until it is fixed" in page
        assert 'name="validate_commands"' in page  # the project's value, editable

        dashboard.services.repo_files.clear()  # as after REPO_FILE_SECONDS
        dashboard.fake.fail_next("GET", f"/repos/acme/widgets/contents/{CONFIG}", status=502, times=10)
        page = await _page(session, dashboard.url + SETTINGS)
        assert "GitHub could not be reached</strong>" in page and 'name="validate_commands"' in page
        # a failed read is not kept: the next view asks GitHub again (asserted on the cache itself: the
        # next read may meet the client's pause after those 502s, which says "could not be reached" too)
        assert len(dashboard.services.repo_files) == 0
        dashboard.fake.clear_faults()


async def test_views_and_saves_within_the_ttl_read_the_file_once_and_say_when(dashboard) -> None:
    fake, path = dashboard.fake, f"/repos/acme/widgets/contents/{CONFIG}"
    fake.set_permission("acme/widgets", "alice", "admin")
    fake.set_file("acme/widgets", "main", CONFIG, "validate:\n  - pytest -q\n")
    now = [1000.0]
    dashboard.services.repo_files = TTLCache(1024, REPO_FILE_SECONDS, timer=lambda: now[0])
    project = await dashboard.services.store.projects.get_project_by_name("acme/widgets")
    async with await dashboard.login("alice", installation_ids=[1]) as session:
        first = await _page(session, dashboard.url + SETTINGS)
        once = len(fake.calls_to("GET", path))
        assert once >= 1 and 'data-field="file-age"' not in first
        now[0] += 12
        fake.set_file("acme/widgets", "main", CONFIG, "validate:\n  - make check\n")  # a push meanwhile
        second = await _page(session, dashboard.url + SETTINGS)
        assert len(fake.calls_to("GET", path)) == once
        assert "pytest -q</textarea>" in second
        assert ("The file was read 12 s ago; this page reads it again after 30 s, so a push since then may not "
                "show yet.") in second

        token = await csrf_of(session, dashboard.url + SETTINGS)
        form = {"csrf_token": token, "validate_commands": "make other", "max_fix_attempts": "3"}
        async with session.post(dashboard.url + SETTINGS, data=form) as response:  # refused by the kept file
            assert response.status == 400 and "Validate commands is set in" in await response.text()
        async with session.put(f"{dashboard.url}/api/v1/projects/{project.id}", json={"setup_commands": ["make"]},
                               headers={"X-CSRF-Token": token}) as response:
            assert response.status == 200, await response.text()
        assert len(fake.calls_to("GET", path)) == once

        now[0] += REPO_FILE_SECONDS
        third = await _page(session, dashboard.url + SETTINGS)
    assert len(fake.calls_to("GET", path)) == 2 * once
    assert "make check</textarea>" in third and 'data-field="file-age"' not in third


async def test_deleting_a_secret_asks_first(dashboard) -> None:
    dashboard.fake.set_permission("acme/widgets", "alice", "admin")
    store = dashboard.services.store
    project = await store.projects.get_project_by_name("acme/widgets")
    await store.projects.set_secret(project.id, "DEPLOY_KEY", "value-1")
    async with await dashboard.login("alice", installation_ids=[1]) as session:
        page = await _page(session, dashboard.url + SETTINGS)
        ask = "/projects/acme/widgets/secrets/DEPLOY_KEY/delete"
        assert f'<form method="get" action="{ask}"><button class="danger" type="submit"' in page
        question = await _page(session, dashboard.url + ask)
        assert "Delete the secret <code>DEPLOY_KEY</code>?" in question
        assert f'<form class="actions" method="post" action="{ask}">' in question
        assert await store.projects.secret_values(project.id) == {"DEPLOY_KEY": "value-1"}  # asking deletes nothing
        async with session.get(dashboard.url + "/projects/acme/widgets/secrets/NOPE/delete") as response:
            assert response.status == 404
        token = await csrf_of(session, dashboard.url + ask)
        async with session.post(dashboard.url + ask, data={"csrf_token": token}) as response:
            assert response.status == 200 and "DEPLOY_KEY" not in await response.text()
    assert await store.projects.secret_values(project.id) == {}


async def test_an_expired_token_no_longer_authenticates(dashboard) -> None:
    store, fake = dashboard.services.store, dashboard.fake
    async with await dashboard.login("alice", installation_ids=[1]) as session:
        token = await csrf_of(session, dashboard.url + "/account")
        async with session.post(dashboard.url + "/account/tokens",
                                data={"csrf_token": token, "name": "ci", "expiry": "7"}) as response:
            page = await response.text()
        async with session.post(dashboard.url + "/account/tokens",
                                data={"csrf_token": token, "name": "x", "expiry": "forever"}) as response:
            assert response.status == 400 and "Expiry must be one of: 7 days, 30 days, 90 days, No expiry" in (
                await response.text())
    fresh = re.search(r'id="new-token">(cga_[^<]+)<', page).group(1)
    week = (datetime.now(UTC) + timedelta(days=7)).strftime("%Y-%m-%d")
    assert f"it expires {week}" in page and f'<td data-label="Expires">{week}' in page
    user_id = int(fake.users["alice"]["id"])
    expired = auth.API_TOKEN_PREFIX + secrets.token_urlsafe(32)
    await store.projects.create_api_token(user_id, "old", expired,
                                          expires_at=datetime.now(UTC) - timedelta(minutes=1))
    async with aiohttp.ClientSession() as client:
        for bearer, status in ((fresh, 200), (expired, 401)):
            async with client.get(dashboard.url + "/api/v1/projects",
                                  headers={"Authorization": f"Bearer {bearer}"}) as response:
                assert response.status == status, bearer
    async with await dashboard.login("alice", installation_ids=[1]) as session:
        page = await _page(session, dashboard.url + "/account")
    assert re.search(r'<td data-label="Expires" class="expired">expired \d{4}-\d\d-\d\d \d\d:\d\d UTC</td>', page)


async def test_the_api_refuses_a_change_the_file_would_override(dashboard) -> None:
    """PUT /api/v1/projects/{id} checks the same file as the page: a changed file-set key is a 409 saying
    where to change it; a key the file leaves alone is saved."""
    dashboard.fake.set_permission("acme/widgets", "alice", "admin")
    dashboard.fake.set_file("acme/widgets", "main", CONFIG, "validate:\n  - pytest -q\n")
    project = await dashboard.services.store.projects.get_project_by_name("acme/widgets")
    async with await dashboard.login("alice", installation_ids=[1]) as session:
        token = await csrf_of(session, dashboard.url + SETTINGS)
        url = f"{dashboard.url}/api/v1/projects/{project.id}"
        headers = {"X-CSRF-Token": token}
        async with session.put(url, json={"validate_commands": ["make other"]}, headers=headers) as response:
            answer = await response.json()
        assert response.status == 409, answer
        assert f"Validate commands is set in {CONFIG} on the default branch" in answer["error"]
        async with session.put(url, json={"setup_commands": ["make deps"]}, headers=headers) as response:
            assert response.status == 200, await response.text()
    stored = await dashboard.services.store.projects.get_project_by_name("acme/widgets")
    assert (stored.setup_commands, stored.validate_commands) == (["make deps"], [])


async def test_the_api_sets_the_merge_queue_settings_but_not_those_the_file_sets(dashboard) -> None:
    dashboard.fake.set_permission("acme/widgets", "alice", "admin")
    dashboard.fake.set_file("acme/widgets", "main", CONFIG, "merge_queue:\n  batch_size: 4\n")
    project = await dashboard.services.store.projects.get_project_by_name("acme/widgets")
    async with await dashboard.login("alice", installation_ids=[1]) as session:
        headers = {"X-CSRF-Token": await csrf_of(session, dashboard.url + SETTINGS)}
        url = f"{dashboard.url}/api/v1/projects/{project.id}"

        async def put(body: dict) -> tuple[int, dict]:
            async with session.put(url, json=body, headers=headers) as response:
                return response.status, await response.json()

        status, answer = await put({"merge_queue": {"enabled": True, "max_parallel": 2}})
        assert status == 200, answer
        assert answer["settings"]["merge_queue"] == {"enabled": True, "method": None, "batch_size": None,
                                                     "max_parallel": 2, "flaky_retries": None}
        status, answer = await put({"merge_queue": {"batch_size": 8}})
        assert status == 409 and f"PRs tested together (batch size) is set in {CONFIG}" in answer["error"], answer
        status, answer = await put({"merge_queue": {"max_parallel": 20}})
        assert status == 400 and "Candidates tested at once must be a whole number from 1 to 10" in answer["error"]
        for wrong in ({"merge_queue": {"bogus": 1}}, {"merge_queue": {"enabled": "yes"}}, {"merge_queue": 3},
                      {"merge_queue": {"max_parallel": True}}):
            status, answer = await put(wrong)
            assert status == 400, (wrong, answer)
        status, answer = await put({"merge_queue": {"max_parallel": None}, "auto_merge_enabled": True})
        assert status == 200 and answer["settings"]["merge_queue"]["max_parallel"] is None
        assert answer["settings"]["merge_queue"]["enabled"] is True  # the sub-keys not sent keep their values
    stored = await dashboard.services.store.projects.get_project_by_name("acme/widgets")
    assert stored.merge_queue == {"enabled": True} and stored.auto_merge_enabled
