"""The audit log in words: every kind the code records has a sentence (collected from the source, so a
new kind without one fails here), sentences link the PR, validation and run and never show a raw value,
a secret or a settings text; the store's filters and keyset paging (SQLite and PostgreSQL); and the page
over HTTP with its filter form and its Newer / Older links."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from typing import Any

import pytest

from bot.models import AuditEvent
from bot.store import Store
from bot.store.audit import AuditPage
from dashboard.audit import by_day, paging_links
from dashboard.audit_sentences import KINDS, GROUPS, Where, filter_choices, kind_title, selected_actions, sentence
from pipeline.commands.parse import COMMANDS
from pipeline.validation.buttons import ACTIONS
from tests.dashboard_support import start_dashboard
from tests.test_run_page import visible_text

ROOT = Path(__file__).resolve().parent.parent
WHERE = Where("acme/widgets", "https://github.com")
SHA = "3f2a9c1d" * 5
RUN = "a" * 32
VALIDATION = "b" * 32
RAW = re.compile(r"\b[a-z]+_[a-z_]+\b|\\u[0-9a-f]{4}|[{}]|\b[a-z_]+\.[a-z_]+\.?[a-z_]*\b")


# ---- every kind the code records ----------------------------------------------------------------------------
# The first argument of each `….audit(…)`, `….audit.record(…)` and `….\_audit(…)` call, followed through
# the functions that pass it on (`_audit(self, action, …)` → what its callers pass); f-strings expanded
# by what they are built from: `command.{name}` → the commands, `button.{id}` → the buttons,
# `installation.{action}` → the actions its handler is registered for.

PACKAGES = ("bot", "handlers", "pipeline", "dashboard", "worker")
EXPANSIONS = {"command.": sorted(COMMANDS), "button.": sorted(ACTIONS)}
Function = ast.FunctionDef | ast.AsyncFunctionDef


@dataclass
class Site:
    path: Path
    call: ast.Call
    function: Function | None


def _calls(node: ast.AST, function: Function | None = None) -> Iterator[tuple[ast.Call, Function | None]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Call):
            yield child, function
        yield from _calls(child, child if isinstance(child, Function) else function)


def _is_audit_call(call: ast.Call) -> bool:
    func = call.func
    if not isinstance(func, ast.Attribute):
        return False
    target = func.value
    on_audit = (isinstance(target, ast.Attribute) and target.attr == "audit") or \
               (isinstance(target, ast.Name) and target.id == "audit")
    return func.attr in ("audit", "_audit") or (func.attr == "record" and on_audit)


def _called(call: ast.Call) -> str | None:
    return call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", None)


class KindCollector:
    def __init__(self) -> None:
        self.sites = [Site(path, call, function) for package in PACKAGES
                      for path in sorted((ROOT / package).rglob("*.py"))
                      for call, function in _calls(ast.parse(path.read_text(), str(path)))]

    def kinds(self) -> set[str]:
        found: set[str] = set()
        for site in self.sites:
            if _is_audit_call(site.call):
                assert site.call.args, f"{site.path}:{site.call.lineno}: an audit call without its kind"
                found |= self.resolve(site.call.args[0], site)
        return found

    def resolve(self, node: ast.expr, site: Site, depth: int = 0) -> set[str]:
        where = f"{site.path.relative_to(ROOT)}:{node.lineno}"
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return {node.value}
        if isinstance(node, ast.IfExp):
            return self.resolve(node.body, site, depth) | self.resolve(node.orelse, site, depth)
        if isinstance(node, ast.JoinedStr):
            return self._expand(node, site, where)
        if isinstance(node, ast.Name) and site.function is not None and depth < 5:
            return self._through_parameter(node.id, site, depth, where)
        raise AssertionError(f"{where}: this test cannot tell the audit kind {ast.unparse(node)!r}; teach it")

    def _expand(self, node: ast.JoinedStr, site: Site, where: str) -> set[str]:
        assert len(node.values) == 2 and isinstance(node.values[0], ast.Constant), \
            f"{where}: an f-string kind of a shape this test does not know: {ast.unparse(node)!r}"
        prefix = node.values[0].value
        if prefix in EXPANSIONS:
            return {prefix + name for name in EXPANSIONS[prefix]}
        decorators = site.function.decorator_list if site.function else []
        actions = {k.value.value for d in decorators if isinstance(d, ast.Call) for k in d.keywords
                   if k.arg == "action" and isinstance(k.value, ast.Constant)}
        assert actions, f"{where}: cannot expand {ast.unparse(node)!r}"
        return {prefix + action for action in actions}

    def _through_parameter(self, name: str, site: Site, depth: int, where: str) -> set[str]:
        function = site.function
        assert function is not None
        params = [a.arg for a in function.args.args]
        assert name in params, f"{where}: the audit kind {name!r} is not a parameter of {function.name}"
        index = params.index(name) - (1 if params[0] == "self" else 0)
        callers = [s for s in self.sites if _called(s.call) == function.name and s.call is not site.call]
        assert callers, f"{where}: nothing calls {function.name}"
        found: set[str] = set()
        for caller in callers:
            keyword = next((k.value for k in caller.call.keywords if k.arg == name), None)
            argument = keyword if keyword is not None else caller.call.args[index]
            found |= self.resolve(argument, caller, depth + 1)
        return found


RECORDED = sorted(KindCollector().kinds())
# every detail any kind records, with values a person must never see raw
SAMPLE: dict[str, Any] = {
    "pr": 12, "head_sha": SHA, "run_id": RUN, "validation_id": VALIDATION, "reason": "the validation passed",
    "from": "awaiting_confirmation", "to": "running", "status": "completed", "fix_attempts": 2,
    "source": "pr_comment", "backend": "codegen", "auto_confirm": False, "conclusion": "action_required",
    "title": "ruff: 3 findings on changed lines", "by": "def4567", "base": "main", "method": "squash",
    "trigger": "check_run.requested_action", "error": "Head branch was modified", "status_code": 409,
    "merge_commit_sha": "9" * 40, "branch": "feature/x", "auto_merge": True, "role": "read", "needed": "write",
    "commands": ["merge"], "args": ["squash"], "comment": 5, "check_run": 9, "changed": ["setup_commands"],
    "name": "DEPLOY_KEY", "account": "acme", "repositories": ["acme/a", "acme/b"], "archived_projects": ["acme/a"],
    "tokens_forgotten": 2, "expiry": "No expiry", "app_id": 1, "slug": "codegenapp", "url": "https://github.com/acme/widgets/pull/12",
}


def test_the_collector_finds_the_kinds_of_each_way_of_recording() -> None:
    assert {"merge.merged", "merge.refused"} <= set(RECORDED)  # self._audit(action, …) in pipeline/merge
    assert {"agent.plan.confirmed", "agent.run.cancelled"} <= set(RECORDED)  # passed on by _user_changed
    assert {f"command.{name}" for name in COMMANDS} <= set(RECORDED)  # f"command.{command.name}"
    assert {"installation.created", "installation.unsuspend"} <= set(RECORDED)  # the handler's registrations
    assert {"project.secret.added", "project.secret.replaced"} <= set(RECORDED)  # a conditional expression
    assert {"secret.set", "dashboard.login", "validation.completed"} <= set(RECORDED)


@pytest.mark.parametrize("action", RECORDED)
def test_every_recorded_kind_has_a_sentence_without_raw_values(action: str) -> None:
    assert action in KINDS, f"{action} is recorded by the app but has no sentence in dashboard/audit_sentences.py"
    said = sentence(action, "alice", SAMPLE, WHERE)
    text = said.text
    assert text and not RAW.findall(text.replace("acme/widgets", "")), (action, text, RAW.findall(text))
    for raw in ("check_run", "requested_action", "action_required", "awaiting_confirmation", "pr_comment", "None"):
        assert raw not in text, (action, text)
    assert all(part.text for part in said.parts)
    assert KINDS[action].group in GROUPS and not RAW.search(kind_title(action))


def test_sentences_link_the_pull_request_the_validation_and_the_run() -> None:
    merged = sentence("merge.merged", "alice", {"pr": 12, "head_sha": SHA, "base": "main", "method": "squash",
                                                "trigger": "command.merge"}, WHERE)
    assert merged.text == "@alice merged #12 at 3f2a9c1 into main (squash) via /merge"
    pr = next(p for p in merged.parts if p.text == "#12")
    assert pr.href == "https://github.com/acme/widgets/pull/12"
    assert next(p for p in merged.parts if p.text == "3f2a9c1").code

    done = sentence("validation.completed", None, {"pr": 12, "head_sha": SHA, "conclusion": "failure",
                                                   "title": "ruff: 3 findings", "validation_id": VALIDATION}, WHERE)
    assert done.text == "Validation of 3f2a9c1 on #12: Failed · ruff: 3 findings"
    assert done.parts[0].href == f"/validations/{VALIDATION}"

    updated = sentence("agent.run.updated", None, {"run_id": RUN, "from": "validating", "to": "fixing",
                                                   "reason": "the validation failed"}, WHERE)
    assert updated.text == "The agent run went from Validating to Fixing: the validation failed"
    assert [p.href for p in updated.parts if p.href] == [f"/projects/acme/widgets/runs/{RUN}"]
    # on the run's own page it is not linked to itself
    on_its_page = sentence("agent.run.updated", None, {"run_id": RUN, "to": "fixing"},
                           Where("acme/widgets", "https://github.com", run_id=RUN))
    assert not any(p.href for p in on_its_page.parts)

    # a link only ever to the configured GitHub, the app's pages, and only for well-formed ids
    odd = sentence("validation.retried", "alice", {"pr": 3, "validation_id": "../../x"}, WHERE)
    assert [p.href for p in odd.parts if p.href] == ["https://github.com/acme/widgets/pull/3"]
    outside = sentence("merge.merged", None, {"pr": 3}, Where(None))
    assert not any(p.href for p in outside.parts) and outside.text == "The app merged #3"


def test_button_and_trigger_names_read_as_words() -> None:
    pressed = sentence("button.rerun", "bob", {"pr": 7, "head_sha": SHA, "check_run": 99}, WHERE)
    assert pressed.text == "@bob pressed Re-run on the check run of 3f2a9c1 on #7"
    refused = sentence("merge.refused", "bob", {"pr": 7, "reason": "the validation of 3f2a9c1 failed",
                                                "trigger": "button.merge"}, WHERE)
    assert refused.text == "Did not merge #7: the validation of 3f2a9c1 failed (asked by @bob via the Merge button)"
    denied = sentence("command.refused", "eve", {"pr": 7, "role": "read", "needed": "write", "button": "fix"}, WHERE)
    assert denied.text == "@eve may not press Fix with agent on #7 (their access: read; write is needed)"


def test_secrets_and_settings_texts_are_never_shown() -> None:
    token = "ghp_" + "A1b2C3d4" * 5
    failed = sentence("merge.failed", None, {"pr": 1, "error": f"push refused for https://x:{token}@github.com"},
                      WHERE)
    assert token not in failed.text and "***" in failed.text
    settings = sentence("project.agent_settings", "alice",
                        {"repository_rules": "the rules text", "agent_command": "(changed)", "max_fix_attempts": 4},
                        WHERE)
    assert settings.text == "@alice changed the agent settings: agent command, max fix attempts, repository rules"
    secret = sentence("project.secret.added", "alice", {"name": "DEPLOY_KEY", "value": "s3cr3t-value"}, WHERE)
    assert secret.text == "@alice added the secret DEPLOY_KEY" and "s3cr3t" not in secret.text
    created = sentence("api_token.created", "alice", {"name": "ci", "expiry": "30 days"}, WHERE)
    assert created.text == "@alice created the API token ci (expires after 30 days)"
    long_reason = sentence("agent.run.updated", None, {"to": "failed", "reason": "x " * 500}, WHERE)
    assert len(long_reason.text) < 300 and long_reason.text.endswith("…")


def test_an_unknown_kind_reads_as_words_with_its_links() -> None:
    said = sentence("agent.run.teleported", "alice", {"pr": 4, "run_id": RUN, "payload": {"a": 1}}, WHERE)
    assert said.text == "@alice: agent run teleported on #4 (agent run)"
    assert sentence("cosmic_ray.flipped", None, {}, WHERE).text == "Cosmic ray flipped"
    assert sentence("x.y", None, None, WHERE).text == "X y"  # details may be missing
    assert kind_title("cosmic_ray.flipped") == "Cosmic ray flipped"


def test_the_merge_queue_giving_up_on_a_pr_and_not_testing_one_read_as_sentences() -> None:
    said = sentence("merge_queue.announce_failed", "merge-queue",
                    {"pr": 4, "base_ref": "main", "what": "eject", "why": "403: Resource not accessible"}, WHERE)
    assert said.text == ("The merge queue of main could not tell #4 why it left the queue, and went on: "
                         "403: Resource not accessible")
    said = sentence("merge_queue.could_not_test", "merge-queue",
                    {"pr": 4, "base_ref": "main", "why": "the sandbox is not available"}, WHERE)
    assert said.text == "The merge queue of main could not test #4 and tries again later: the sandbox is not available"


def test_the_kind_filter_offers_groups_and_kinds_in_words() -> None:
    choices = filter_choices()
    groups = [group for group, _, _ in choices]
    assert "access" not in groups and groups[:3] == ["agent", "validation", "merge"]  # no project-less kinds
    titles = [title for _, _, kinds in choices for _, title in kinds]
    assert "Merged" in titles and "/validate command" in titles and not any(RAW.search(t) for t in titles)
    assert set(selected_actions("merge")) == {"merge.merged", "merge.failed", "merge.refused",
                                              "merge.branch_deleted", "auto_merge.set", "merge_queue.landed_untested",
                                              "merge_queue.announce_failed", "merge_queue.could_not_test"}
    assert selected_actions("merge-refused") == ["merge.refused"] and selected_actions("") is None
    assert selected_actions("some.new_kind") == ["some.new_kind"]  # a kind this module does not know yet
    values = [value for _, _, kinds in filter_choices(project=False) for value, _ in kinds]
    assert len(values) == len(KINDS) and all(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", v) for v in values)


def test_events_are_grouped_by_day_and_paging_keeps_the_filters() -> None:
    from datetime import datetime, timezone

    def event(id_: int, day: int) -> AuditEvent:
        return AuditEvent(id=id_, at=datetime(2026, 12, day, 9, 30, tzinfo=timezone.utc), action="dashboard.login",
                          actor="alice", details={})

    days = by_day([event(3, 7), event(2, 7), event(1, 6)], WHERE)
    assert [day for day, _ in days] == ["Monday 7 December 2026", "Sunday 6 December 2026"]
    assert [len(rows) for _, rows in days] == [2, 1]
    page = AuditPage([event(9, 7), event(8, 7)], newer=True, older=True)
    assert paging_links(page, {"kind": "merge", "actor": "alice"}) == {
        "newer": "?kind=merge&actor=alice&after=9", "older": "?kind=merge&actor=alice&before=8"}
    assert paging_links(AuditPage([], newer=True, older=False), {}) == {"newer": "?", "older": None}


# ---- the store: filters and keyset paging ---------------------------------------------------------------------

async def _record_many(store: Store, project_id: str, n: int) -> None:
    for i in range(n):
        actor = "alice" if i % 2 else "Bob"
        action = "merge.merged" if i % 3 == 0 else "command.validate"
        await store.audit.record(action, actor=actor, project_id=project_id, details={"pr": i})


async def test_pages_filters_and_run_events(store: Store) -> None:
    await _record_many(store, "p1", 120)
    await store.audit.record("dashboard.login", actor="alice", project_id="p2")

    first = await store.audit.page("p1")
    assert len(first.events) == 50 and (first.newer, first.older) == (False, True)
    assert [e.details["pr"] for e in first.events[:2]] == [119, 118]
    second = await store.audit.page("p1", before=first.events[-1].id)
    assert second.events[0].details["pr"] == 69 and (second.newer, second.older) == (True, True)
    last = await store.audit.page("p1", before=second.events[-1].id)
    assert len(last.events) == 20 and last.events[-1].details["pr"] == 0 and (last.newer, last.older) == (True, False)
    back = await store.audit.page("p1", after=last.events[0].id)
    assert [e.id for e in back.events] == [e.id for e in second.events]
    past = await store.audit.page("p1", before=last.events[-1].id)
    assert (past.events, past.newer, past.older) == ([], True, False)

    merges = await store.audit.page("p1", actions=["merge.merged"], actor="BOB")  # logins: any case
    assert {(e.action, e.actor) for e in merges.events} == {("merge.merged", "Bob")}
    assert [e.details["pr"] for e in merges.events] == list(range(114, -1, -6))
    assert (await store.audit.page("p1", actions=[])).events == []
    assert await store.audit.actors("p1") == ["Bob", "alice"] or await store.audit.actors("p1") == ["alice", "Bob"]

    await store.audit.record("agent.run.updated", project_id="p1", details={"run_id": RUN, "to": "running"})
    await store.audit.record("agent.run.updated", project_id="p1", details={"run_id": "c" * 32, "to": "running"})
    await store.audit.record("validation.completed", project_id="p1", details={"pr": 5, "conclusion": "success"})
    await store.audit.record("validation.completed", project_id="p2", details={"pr": 5, "conclusion": "success"})
    mine = await store.audit.for_run("p1", RUN, pr_number=5, kinds_of_pr=["validation.completed"])
    assert [(e.action, e.details.get("run_id")) for e in mine] == [("agent.run.updated", RUN),
                                                                   ("validation.completed", None)]
    assert [e.action for e in await store.audit.for_run("p1", RUN)] == ["agent.run.updated"]


# ---- the page over HTTP ---------------------------------------------------------------------------------------

async def test_the_audit_page_reads_as_sentences_filters_and_pages(aiohttp_server, make_settings,
                                                                   fake_github) -> None:
    fake_github.add_installation(1, "acme", repos=["widgets"])
    dash = await start_dashboard(fake_github, aiohttp_server, make_settings, with_worker=False)
    await dash.record(1, "acme/widgets")
    store = dash.services.store
    project = await store.projects.get_project_by_name("acme/widgets")
    await store.audit.record("validation.completed", project_id=project.id, details={
        "pr": 12, "head_sha": SHA, "conclusion": "failure", "title": "pytest failed", "validation_id": VALIDATION})
    await store.audit.record("merge.refused", actor="alice", project_id=project.id, details={
        "pr": 12, "head_sha": SHA, "trigger": "check_run.requested_action", "reason": "the validation failed"})
    await store.audit.record("agent.run.updated", project_id=project.id, details={
        "run_id": RUN, "from": "awaiting_confirmation", "to": "running", "reason": None})
    await store.audit.record("project.agent_settings", actor="bob", project_id=project.id, details={
        "planning_statement": "TOP-SECRET-PLANNING", "agent_command": "(changed)"})
    for i in range(55):
        await store.audit.record("command.validate", actor="carol", project_id=project.id,
                                 details={"pr": 100 + i, "args": [], "comment": i})

    async with await dash.login("alice", installation_ids=[1]) as session:
        url = dash.url + "/projects/acme/widgets/audit"
        async with session.get(url) as response:
            assert response.status == 200
            page = await response.text()
        text = visible_text(page)
        assert "@carol commented /validate on #154" in text and "#105" in text and "#104" not in text  # 50 a page
        assert "Older →" in text and "Newer" not in text
        assert "<select" in page and 'name="actor"' in page  # the filter works without script: a GET form

        older = re.search(r'href="(\?before=\d+)"', page)
        assert older, "no link to older events"
        async with session.get(url + unescape(older.group(1))) as response:
            page = await response.text()
        text = visible_text(page)
        assert "@carol commented /validate on #104" in text and "#154" not in text and "← Newer" in text
        assert "Validation of 3f2a9c1 on #12: Failed · pytest failed" in text
        assert f'href="/validations/{VALIDATION}"' in page
        assert 'href="https://github.com/acme/widgets/pull/12"' not in page  # the fake's GitHub is not github.com
        assert f'href="{fake_github.base_url}/acme/widgets/pull/12"' in page
        assert "Did not merge #12: the validation failed (asked by @alice via a check-run button)" in text
        assert f'href="/projects/acme/widgets/runs/{RUN}"' in page
        assert "went from Waiting for confirmation to Working" in text
        assert "@bob changed the agent settings: agent command, planning statement" in text
        assert "TOP-SECRET-PLANNING" not in page
        for raw in ("check_run.requested_action", "merge.refused", "agent.run.updated", "awaiting_confirmation",
                    "validation.completed", "{", "\\u"):
            assert raw not in text, raw
        newer = re.search(r'href="(\?after=\d+)"', page)
        assert newer
        async with session.get(url + unescape(newer.group(1))) as response:
            assert "@carol commented /validate on #154" in visible_text(await response.text())

        async with session.get(url, params={"kind": "merge", "actor": "@Alice"}) as response:
            page = await response.text()
        text = visible_text(page)
        assert "Did not merge #12" in text and "carol" not in text and "Validation of" not in text
        assert '<option value="merge" selected>' in page and 'value="Alice"' in page and "Clear" in text
        async with session.get(url, params={"kind": "validation-finished"}) as response:
            page = await response.text()
        text = visible_text(page)
        assert "Validation of 3f2a9c1" in text and "Did not merge" not in text
        assert '<option value="validation-finished" selected>Validation finished</option>' in page
        for kind in KINDS:  # no event name anywhere in the page, the filter's values included
            assert f'"{kind}"' not in page and f">{kind}<" not in page, kind
        async with session.get(url, params={"actor": "nobody"}) as response:
            assert "Nothing matches this filter" in visible_text(await response.text())
        async with session.get(url, params={"before": "x", "after": "-1"}) as response:
            assert response.status == 200  # a bad position is the first page
