"""Pure tests of bot.github.pacing: no I/O, no clock, no event loop."""

from collections import deque

import pytest

from bot.github.pacing import (
    PRIORITY_CHECK_RUN,
    PRIORITY_NORMAL,
    PRIORITY_PROGRESS,
    WriteQueue,
    backoff_delay,
    coalesce_key,
    is_write,
    next_write_time,
    prune_sent_times,
    primary_limit_wait,
    rate_limit_wait,
    write_priority,
)

BASE = "http://127.0.0.1:8080/api/v3"
CHECK_RUNS = f"{BASE}/repos/o/r/check-runs"
RUN_7 = f"{BASE}/repos/o/r/check-runs/7"
RUN_8 = f"{BASE}/repos/o/r/check-runs/8"
COMMENT_5 = f"{BASE}/repos/o/r/issues/comments/5"
NEW_COMMENT = f"{BASE}/repos/o/r/issues/3/comments"
LABELS = f"{BASE}/repos/o/r/issues/3/labels"


# --- next_write_time ------------------------------------------------------------------------


def simulate(n: int, per_minute: int = 80, per_hour: int = 500) -> list[float]:
    """Send n writes as early as allowed, starting at t=0; returns the send times."""
    sent: deque[float] = deque()
    times = []
    now = 0.0
    for _ in range(n):
        now = next_write_time(sent, now, per_minute, per_hour)
        sent.append(now)
        times.append(now)
        prune_sent_times(sent, now)
    return times


def max_in_window(times: list[float], window: float) -> int:
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] <= t - window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def test_empty_history_sends_now():
    assert next_write_time(deque(), 12.5, 80, 500) == 12.5


def test_80_per_minute_then_waits_for_the_oldest_to_leave_the_minute():
    sent = deque([0.0] * 79)
    assert next_write_time(sent, 1.0, 80, 500) == 1.0  # the 80th may go now
    sent.append(0.0)
    assert next_write_time(sent, 1.0, 80, 500) == 60.0  # the 81st waits for t=0 to leave the minute
    assert next_write_time(sent, 75.0, 80, 500) == 75.0


def test_minute_window_uses_the_80th_most_recent_write():
    sent = deque([0.0] * 40 + [30.0] * 40)
    assert next_write_time(sent, 31.0, 80, 500) == 60.0
    sent.append(60.0)  # those at t=0 have left the minute: 41 in (0, 60]
    assert next_write_time(sent, 60.0, 80, 500) == 60.0
    sent.extend([60.0] * 39)  # 40 at t=30 and 40 at t=60: the 80th most recent is at t=30
    assert next_write_time(sent, 60.0, 80, 500) == 90.0


def test_schedule_never_exceeds_80_a_minute_nor_500_an_hour():
    times = simulate(500)
    assert max_in_window(times, 60.0) == 80
    assert max_in_window(times, 3600.0) == 500
    # Bursts of 80, one per minute: the 500th goes out in the 7th minute.
    assert times[79] == 0.0 and times[80] == 60.0 and times[160] == 120.0
    assert times[499] == 360.0


def test_long_run_stays_within_both_windows():
    times = simulate(1300)
    assert max_in_window(times, 60.0) == 80
    assert max_in_window(times, 3600.0) == 500
    assert times[500] == 3600.0 and times[1000] == 7200.0


def test_501st_write_waits_for_the_hour():
    sent: deque[float] = deque()
    now = 0.0
    for _ in range(500):
        now = next_write_time(sent, now, 80, 500)
        sent.append(now)
    assert now == 360.0
    # The hour window now blocks: the 500th most recent write went out at t=0.
    assert next_write_time(sent, 400.0, 80, 500) == 3600.0
    prune_sent_times(sent, 3600.0)
    assert len(sent) == 420  # the 80 sent at t=0 left the hour
    assert next_write_time(sent, 3600.0, 80, 500) == 3600.0


def test_limits_are_configurable():
    sent = deque([10.0, 11.0])
    assert next_write_time(sent, 11.0, 2, 500) == 70.0
    assert next_write_time(sent, 11.0, 80, 2) == 3610.0
    with pytest.raises(ValueError):
        next_write_time(sent, 11.0, 0, 500)


def test_prune_keeps_what_the_hour_window_sees():
    sent = deque([0.0, 1.0, 3599.0])
    prune_sent_times(sent, 3601.0)
    assert list(sent) == [3599.0]


# --- priorities and keys --------------------------------------------------------------------


@pytest.mark.parametrize(
    "method,url,body,expected",
    [
        ("POST", CHECK_RUNS, {"name": "ci", "head_sha": "abc"}, PRIORITY_CHECK_RUN),
        ("PATCH", RUN_7, {"status": "completed", "conclusion": "success"}, PRIORITY_CHECK_RUN),
        ("PATCH", RUN_7, {"conclusion": "failure"}, PRIORITY_CHECK_RUN),
        ("PATCH", RUN_7, {"status": "completed"}, PRIORITY_CHECK_RUN),
        ("PATCH", RUN_7, {"status": "in_progress", "output": {"title": "t", "summary": "s"}}, PRIORITY_PROGRESS),
        ("PATCH", COMMENT_5, {"body": "50%"}, PRIORITY_PROGRESS),
        ("POST", NEW_COMMENT, {"body": "hi"}, PRIORITY_NORMAL),
        ("POST", LABELS, {"labels": ["x"]}, PRIORITY_NORMAL),
        ("DELETE", COMMENT_5, None, PRIORITY_NORMAL),
        ("PUT", f"{BASE}/repos/o/r/pulls/3/merge", {}, PRIORITY_NORMAL),
        ("post", "/repos/o/r/check-runs", {}, PRIORITY_CHECK_RUN),  # relative path, lower case
        ("POST", "/repos/o/r/check-runs/7/rerequest", {}, PRIORITY_NORMAL),
    ],
)
def test_write_priority(method, url, body, expected):
    assert write_priority(method, url, body) == expected


def test_coalesce_key():
    assert coalesce_key("PATCH", RUN_7, {"status": "in_progress"}) == "PATCH /api/v3/repos/o/r/check-runs/7"
    assert coalesce_key("PATCH", RUN_7 + "?x=1", {"status": "in_progress"}) == coalesce_key("PATCH", RUN_7, {})
    assert coalesce_key("PATCH", COMMENT_5, {"body": "x"}) == "PATCH /api/v3/repos/o/r/issues/comments/5"
    assert coalesce_key("PATCH", RUN_7, {"conclusion": "success"}) is not None  # may absorb progress
    assert coalesce_key("PATCH", RUN_7, {"output": {"title": "t", "summary": "s", "annotations": [{}]}}) is None
    assert coalesce_key("POST", CHECK_RUNS, {"name": "x"}) is None
    assert coalesce_key("PATCH", f"{BASE}/repos/o/r/pulls/3", {"title": "x"}) is None
    assert coalesce_key("PATCH", RUN_7, None) is None
    assert coalesce_key("DELETE", COMMENT_5, None) is None


def test_is_write():
    assert not is_write("GET", RUN_7)
    assert is_write("POST", NEW_COMMENT, {"body": "x"})
    assert is_write("DELETE", COMMENT_5)
    assert not is_write("POST", f"{BASE}/graphql", {"query": "query { viewer { login } }"})
    assert is_write("POST", f"{BASE}/graphql", {"query": "  mutation { addComment }"})


# --- WriteQueue -----------------------------------------------------------------------------


def pop_all(q: WriteQueue) -> list:
    return [e.payloads for e in q.drain()]


def test_priority_order_then_fifo():
    q: WriteQueue[str] = WriteQueue()
    q.push("PATCH", RUN_7, {"status": "in_progress"}, "progress7")
    q.push("POST", NEW_COMMENT, {"body": "a"}, "comment-a")
    q.push("POST", CHECK_RUNS, {"name": "one"}, "create-1")
    q.push("POST", LABELS, {"labels": ["b"]}, "labels-b")
    q.push("PATCH", RUN_8, {"conclusion": "success"}, "complete8")
    q.push("POST", CHECK_RUNS, {"name": "two"}, "create-2")
    assert len(q) == 6
    assert [e.payloads[0] for e in q] == ["create-1", "complete8", "create-2", "comment-a", "labels-b", "progress7"]
    assert pop_all(q) == [["create-1"], ["complete8"], ["create-2"], ["comment-a"], ["labels-b"], ["progress7"]]
    assert len(q) == 0 and q.pop() is None and not q


def test_fifo_within_a_priority_across_many():
    q: WriteQueue[int] = WriteQueue()
    for i in range(50):
        q.push("POST", f"{BASE}/repos/o/r/issues/{i}/comments", {"body": str(i)}, i)
    assert [p[0] for p in pop_all(q)] == list(range(50))


def test_progress_updates_coalesce_to_the_latest():
    q: WriteQueue[str] = WriteQueue()
    q.push("POST", NEW_COMMENT, {"body": "first"}, "c")
    e1, c1 = q.push("PATCH", RUN_7, {"status": "in_progress", "output": {"title": "1", "summary": "10%"}}, "p1")
    e2, c2 = q.push("PATCH", RUN_7, {"output": {"title": "2", "summary": "50%"}}, "p2")
    e3, c3 = q.push("PATCH", RUN_7, {"output": {"title": "3", "summary": "90%"}}, "p3")
    assert (c1, c2, c3) == (False, True, True)
    assert e1 is e2 is e3 and e1.coalesced == 2
    assert len(q) == 2
    assert q.pop().payloads == ["c"]
    sent = q.pop()
    assert sent.payloads == ["p1", "p2", "p3"]  # every caller rides on the one write
    # What sending all three in order would leave: status from the first, output from the last.
    assert sent.body == {"status": "in_progress", "output": {"title": "3", "summary": "90%"}}
    assert q.pop() is None


def test_comment_edits_coalesce_per_comment():
    q: WriteQueue[str] = WriteQueue()
    other = f"{BASE}/repos/o/r/issues/comments/6"
    q.push("PATCH", COMMENT_5, {"body": "a"}, "a")
    q.push("PATCH", other, {"body": "x"}, "x")
    q.push("PATCH", COMMENT_5, {"body": "b"}, "b")
    assert [(e.path, e.body, e.payloads) for e in q.drain()] == [
        (COMMENT_5, {"body": "b"}, ["a", "b"]),
        (other, {"body": "x"}, ["x"]),
    ]


def test_completion_absorbs_queued_progress_and_goes_first():
    q: WriteQueue[str] = WriteQueue()
    q.push("POST", NEW_COMMENT, {"body": "hi"}, "comment")
    q.push("PATCH", RUN_7, {"output": {"title": "t", "summary": "50%"}}, "progress")
    entry, coalesced = q.push("PATCH", RUN_7, {"conclusion": "success"}, "done")
    assert coalesced and entry.priority == PRIORITY_CHECK_RUN
    first = q.pop()
    assert first.payloads == ["progress", "done"]
    assert first.body == {"output": {"title": "t", "summary": "50%"}, "conclusion": "success"}
    assert q.pop().payloads == ["comment"]


def test_progress_never_overwrites_a_queued_completion():
    q: WriteQueue[str] = WriteQueue()
    q.push("PATCH", RUN_7, {"conclusion": "success"}, "done")
    _, coalesced = q.push("PATCH", RUN_7, {"output": {"title": "late", "summary": "s"}}, "late")
    assert not coalesced
    assert pop_all(q) == [["done"], ["late"]]


def test_no_coalescing_across_another_write_to_the_same_resource():
    q: WriteQueue[str] = WriteQueue()
    q.push("PATCH", COMMENT_5, {"body": "a"}, "a")
    q.push("DELETE", COMMENT_5, None, "delete")
    _, coalesced = q.push("PATCH", COMMENT_5, {"body": "b"}, "b")
    assert not coalesced
    # The DELETE promoted the edit queued before it: same-resource order is kept.
    assert pop_all(q) == [["a"], ["delete"], ["b"]]


def test_annotated_updates_are_never_dropped():
    q: WriteQueue[str] = WriteQueue()
    ann = {"output": {"title": "t", "summary": "s", "annotations": [{"path": "a.py"}]}}
    q.push("PATCH", RUN_7, ann, "ann1")
    _, c1 = q.push("PATCH", RUN_7, {"output": {"title": "t", "summary": "s2"}}, "plain")
    _, c2 = q.push("PATCH", RUN_7, ann, "ann2")
    assert not c1 and not c2
    assert pop_all(q) == [["ann1"], ["plain"], ["ann2"]]


def test_important_write_promotes_earlier_writes_to_its_resource():
    q: WriteQueue[str] = WriteQueue()
    q.push("POST", NEW_COMMENT, {"body": "x"}, "comment")
    q.push("PATCH", RUN_7, {"output": {"title": "t", "summary": "s", "annotations": [{}]}}, "annotated")
    q.push("PATCH", RUN_7, {"conclusion": "failure"}, "complete")
    # The completion must not overtake the annotated update of the same run, so both go first.
    assert pop_all(q) == [["annotated"], ["complete"], ["comment"]]


def test_coalesced_entry_keeps_its_place_in_line():
    q: WriteQueue[str] = WriteQueue()
    q.push("PATCH", COMMENT_5, {"body": "1"}, "e1")
    q.push("PATCH", RUN_7, {"status": "in_progress"}, "r1")
    q.push("PATCH", COMMENT_5, {"body": "2"}, "e2")
    assert pop_all(q) == [["e1", "e2"], ["r1"]]


def test_queue_interleaves_pops_and_pushes():
    q: WriteQueue[str] = WriteQueue()
    q.push("PATCH", RUN_7, {"status": "in_progress"}, "p1")
    assert q.pop().payloads == ["p1"]
    # Already sent: a new update is a new write.
    entry, coalesced = q.push("PATCH", RUN_7, {"status": "in_progress"}, "p2")
    assert not coalesced and entry.payloads == ["p2"]
    assert q.peek() is entry
    assert pop_all(q) == [["p2"]]


# --- retries --------------------------------------------------------------------------------


def test_backoff_is_exponential_jittered_and_capped():
    assert backoff_delay(1, 0.0) == 0.5
    assert backoff_delay(1, 0.999) < 1.0
    assert backoff_delay(2, 0.0) == 1.0
    assert backoff_delay(3, 0.5) == 3.0
    assert backoff_delay(20, 0.999, cap=60.0) < 60.0
    assert backoff_delay(20, 0.0, cap=60.0) == 30.0


def test_a_spent_primary_limit_waits_for_its_reset_whatever_the_status():
    spent = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1030"}
    assert primary_limit_wait(spent, 1000.0) == 31.0  # +1 s: the reset is rounded to the second
    assert primary_limit_wait({"X-Ratelimit-Remaining": "0", "X-Ratelimit-Reset": "990"}, 1000.0) == 1.0
    assert primary_limit_wait({"x-ratelimit-remaining": "1", "x-ratelimit-reset": "1030"}, 1000.0) is None
    assert primary_limit_wait({"x-ratelimit-remaining": "0"}, 1000.0) is None
    assert primary_limit_wait({"x-ratelimit-remaining": "0", "x-ratelimit-reset": "soon"}, 1000.0) is None


def test_rate_limit_waits():
    assert rate_limit_wait(403, {"retry-after": "7"}, b"", 1000.0) == 7.0
    assert rate_limit_wait(429, {"Retry-After": "3"}, b"", 1000.0) == 3.0
    reset = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1030"}
    assert rate_limit_wait(403, reset, b"", 1000.0) == 31.0
    assert rate_limit_wait(403, {**reset, "retry-after": "2"}, b"", 1000.0) == 2.0  # retry-after wins
    assert rate_limit_wait(403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "900"}, b"", 1000.0) == 1.0
    # A 429 without headers, or a 403 saying so: GitHub says wait at least a minute.
    assert rate_limit_wait(429, {}, b"", 0.0) == 60.0
    assert rate_limit_wait(403, {}, b'{"message": "You have exceeded a secondary rate limit"}', 0.0) == 60.0
    # A plain permission 403 is not retried.
    assert rate_limit_wait(403, {"x-ratelimit-remaining": "4999"}, b'{"message": "Forbidden"}', 0.0) is None
    assert rate_limit_wait(500, {"retry-after": "1"}, b"", 0.0) is None


def test_a_margin_keeps_clear_of_githubs_window() -> None:
    sent = deque([0.0] * 80)
    assert next_write_time(sent, 1.0, 80, 500, margin=1.0) == 61.0
