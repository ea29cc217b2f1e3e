"""Every text a person reads uses human words: no page of the dashboard shows a raw stored value
(`in_progress`, `action_required`, `awaiting_confirmation`), an event or trigger name
(`check_run.requested_action`, `pull_request.synchronize`, `agent.run.updated`), a `\\u2014` escape or
raw JSON, whatever state its projects, pull requests, validations and agent runs are in.

What a person reads is the page's text outside <pre> (a log shows what the program printed, whatever it
is) and outside form values; attributes (classes, data-* for the scripts) are not read."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from bot.models import AGENT_AWAITING_CONFIRMATION, AGENT_COMPLETED, AGENT_FAILED
from tests.dashboard_support import Dashboard
from tests.queue_page_support import busy_queue, seed_queue
from tests.test_pr_overview import seed_overview
from tests.test_run_page import MARKDOWN_PLAN, audit, make_run

RAW = re.compile(
    r"\b(?:in_progress|action_required|timed_out|awaiting_confirmation|pr_open|requested_action|rerequested"
    r"|ready_for_review|check_run|check_suite|pull_request\.\w+|command\.\w+|agent\.run\.\w+|button\.\w+"
    r"|merge\.\w+|validation\.\w+|project\.\w+\.\w+"
    r"|merge_queue\.(?!(?:enabled|method|batch_size|max_parallel|flaky_retries)\b)\w+)\b"
    r"|\\u[0-9a-fA-F]{4}|\{\s*\"\w+\"\s*:")


class _Reader(HTMLParser):
    """The text of a page as a person reads it."""

    SKIP = {"pre", "script", "style", "textarea", "select", "template", "head"}

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self.depth += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP and self.depth:
            self.depth -= 1

    def handle_data(self, data: str) -> None:
        if not self.depth:
            self.parts.append(data)


def readable(page: str) -> str:
    reader = _Reader()
    reader.feed(page)
    return " ".join(" ".join(reader.parts).split())


@pytest.mark.parametrize(("text", "raw"), [
    ("State: in_progress", True), ("triggered by check_run.requested_action", True), ("A \\u2014 B", True),
    ("after merge_queue.updated", True), ("set merge_queue.enabled", False),
    ('details {"from": "planning"}', True), ("Running for 8m 20s", False), ("Waiting for /ok-to-test", False),
])
def test_the_check_finds_raw_values(text: str, raw: bool) -> None:
    assert bool(RAW.search(text)) is raw


async def test_no_page_shows_a_raw_value(dashboard: Dashboard) -> None:
    store = dashboard.services.store
    dashboard.fake.set_permission("acme/widgets", "alice", "admin")
    project = await store.projects.get_project_by_name("acme/widgets")
    validations = await seed_overview(store, project.id)
    waiting_run = await make_run(dashboard, AGENT_AWAITING_CONFIRMATION, plan_text=MARKDOWN_PLAN, plan_generated=True)
    done_run = await make_run(dashboard, AGENT_COMPLETED, pr_number=3)
    failed_run = await make_run(dashboard, AGENT_FAILED, reason="the validation still fails after 3 fix attempts")
    await audit(dashboard, "agent.run.updated", None, run_id=waiting_run.id,
                **{"from": "planning", "to": "awaiting_confirmation"})
    await audit(dashboard, "button.rerun", "alice", pr=3, head_sha="3" * 40, trigger="check_run.requested_action")
    await audit(dashboard, "merge.refused", "alice", pr=3, reason="the validation failed \u2014 2 tests failed")
    await audit(dashboard, "something.new.happened", "alice", detail="x")
    await seed_queue(dashboard, busy_queue())  # a PR testing, two retrying a flaky step, one waiting, one leaving

    pages = ["/", "/projects/acme/widgets", "/projects/acme/widgets/settings", "/projects/acme/widgets/audit",
             "/account", *(f"/projects/acme/widgets/runs/{run.id}" for run in (waiting_run, done_run, failed_run)),
             *(f"/validations/{v.id}" for v in validations.values()), "/projects/acme/widgets/queue"]
    seen = {}
    async with await dashboard.login("alice", installation_ids=[1]) as session:
        for path in pages:
            async with session.get(dashboard.url + path) as response:
                assert response.status == 200, (path, response.status)
                seen[path] = readable(await response.text())
    raw = {path: RAW.findall(text) for path, text in seen.items() if RAW.search(text)}
    assert not raw, raw
    assert "Waiting for confirmation" in seen[pages[5]] and "Failed" in seen[f"/validations/{validations[3].id}"]
