"""A project's merge queue as the dashboard reads it, seeded straight into the store (no running queue):
a busy queue of main with its PRs tracked (tests/test_merge_queue_page.py, tests/test_human_words.py,
tests/test_api_openapi.py)."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from bot.models import Project, utcnow
from bot.store.tracked_pulls import PullSnapshot
from dashboard.queue_view import PullInfo
from pipeline.merge_queue.codec import encode
from pipeline.merge_queue.model import LEAVING, RETRYING, TESTING, Candidate, Entry, Queue
from tests.dashboard_support import Dashboard

BASE_SHA = "b" * 40


def queued_at() -> float:
    """When the busy queue's PRs were queued, from now: the first PR (seq 1) has waited 14 minutes. Read
    when a queue is built, not at import: a long test run would otherwise age it."""
    return time.time() - 15 * 60


HEADS = {n: f"{n % 10}" * 40 for n in range(11, 16)}


def _entry(pr: int, seq: int, **more: Any) -> Entry:
    return Entry(**{"pr": pr, "head_sha": HEADS[pr], "seq": seq, "enqueued_at": queued_at() + 60 * seq,
                    "enqueued_by": "mona", **more})


def candidate(cid: int, prs: tuple[int, ...], ahead: tuple[int, ...], **more: Any) -> Candidate:
    return Candidate(id=cid, prs=prs, ahead=ahead, heads=tuple(HEADS[p] for p in ahead + prs), base_sha=BASE_SHA,
                     base_tree="t" * 40, created_at=queued_at() + 600, **more)


def busy_queue() -> Queue:
    """#11 tested alone; #12 and #13 tested together on top of it, their `pytest` re-run as flaky; #14
    waiting for a slot; #15 leaving (a push)."""
    return Queue(repo="acme/widgets", base_ref="main", base_sha=BASE_SHA, base_tree="t" * 40,
                 entries=(_entry(11, 1), _entry(12, 2, enqueued_by="auto-merge"), _entry(13, 3), _entry(14, 4),
                          _entry(15, 5, state=LEAVING,
                                 leave_reason="a new commit (5555555) was pushed to it; `/queue` it again")),
                 candidates=(candidate(1, (11,), (), status=TESTING),
                             candidate(2, (12, 13), (11,), status=RETRYING, failing_step="pytest", retries_used=1,
                                        attempt=2, reason="testing again")),
                 next_seq=6, next_candidate_id=3)


PULLS = {11: PullInfo("Add the health endpoint", "dev-alice"), 12: PullInfo("Faster start", "dev-bob"),
         13: PullInfo("Fix the <b>login</b>", "dev-carol"), 14: PullInfo("Docs", "dev-alice")}


async def seed_queue(dash: Dashboard, queue: Queue) -> Project:
    """`queue` stored as main's queue of acme/widgets, its PRs tracked with their titles and authors."""
    store = dash.services.store
    project = await store.projects.get_project_by_name("acme/widgets")
    now = utcnow()
    for number, info in PULLS.items():
        await store.tracked_pulls.record(project.id, PullSnapshot(
            number=number, title=info.title, author=info.author, head_sha=HEADS[number], head_ref=f"pr-{number}",
            base_ref="main", is_fork=False, draft=False, state="open", opened_at=now - timedelta(hours=1),
            updated_at=now, closed_at=None))
    assert await store.merge_queues.save(project.id, queue.base_ref, encode(queue), version=0, active=True)
    return project
