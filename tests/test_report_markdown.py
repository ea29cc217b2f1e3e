"""The check run's output and the PR comments rendered as GitHub renders Markdown (GFM: CommonMark with
tables and strikethrough, HTML on), for every case a maintainer meets: passed, failed, failed with
findings, running, neutral and waiting. The structure is checked on the HTML (a real table, folded
output in <details>), and what a person reads carries no raw value nor escape."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from markdown_it import MarkdownIt

from bot.models import AGENT_AWAITING_CONFIRMATION, AGENT_CANCELLED, AGENT_COMPLETED, AGENT_FAILED, AgentRun
from pipeline.agents.comments import context_comment, outcome_comment, plan_comment
from pipeline.merge_queue.decide import Position
from pipeline.merge_queue.report import (ejected_comment, ejected_output, finished_line, landed_output,
                                         queue_comment_line, queued_output, removed_output)
from pipeline.report.check_run import check_run_output, in_progress_output, waiting_output
from pipeline.report.comment import (COMMENT_MARKER, LISTED_FINDINGS, PreviousResult, fit_comment, render_comment,
                                     render_not_run_comment, render_running_comment)
from pipeline.results import Annotation, StepResult
from pipeline.validation.gate import fork_gate
from tests.browser import screenshot

SHA = "3f2a9c1d8e7b6a5f4e3d2c1b0a9f8e7d6c5b4a39"
DETAILS = "https://app.example/validations/7f3e"
SHOTS = [("/", "https://app.example/validations/7f3e/screenshots/a.png")]
RAW = re.compile(r"\\u[0-9a-fA-F]{4}|\b(in_progress|action_required|timed_out|requested_action|pr_comment|"
                 r"fix_button|awaiting_confirmation|pr_open|check_run\.|pull_request\.|command\.)")
GFM = MarkdownIt("commonmark", {"html": True}).enable("table").enable("strikethrough")


def step(name: str, status: str = "passed", stage: str = "validate", seconds: float = 1.0, **kw) -> StepResult:
    return StepResult(name=name, stage=stage, status=status, duration_seconds=seconds, **kw)


PASSED = [step("checkout", stage="checkout", seconds=0.4, detail="3f2a9c1"),
          step("pip install -e .", stage="setup", status="restored", seconds=1.2),
          step("pytest", seconds=500, output_tail="297 passed in 4.21s\n")]
FAILED = [step("checkout", stage="checkout", seconds=0.4),
          step("pytest", "failed", seconds=72.3, exit_code=1,
               output_tail="\n".join(f"test_{i} PASSED" for i in range(80)) + "\nE   assert 1 == 2\nFAILED test_x.py"),
          step("UI check", "skipped", stage="ui", seconds=0)]
FINDINGS = [Annotation("app.py", n, n, "failure", f"line too long ({80 + n} > 79 <characters>)", title="E501")
            for n in range(1, 57)] + [Annotation("lib/x_y.py", 3, 3, "warning", "unused *import*", title="F401")]
WITH_FINDINGS = [step("checkout", stage="checkout"), step("pytest"),
                 step("ruff", "failed", stage="analysis", seconds=2.5,
                      detail=f"{len(FINDINGS) - 1} findings on changed lines",
                      output_tail="app.py:1 E501 line too long\n")]
PREVIOUS = PreviousResult("failure", "1234abc9" * 5, "pytest failed — 2 of 3 steps passed")


class Structure(HTMLParser):
    """The elements of rendered HTML (with their nesting) and the text a person reads."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []
        self.open: list[str] = []
        self.nested: set[tuple[str, str]] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for outer in self.open:
            self.nested.add((outer, tag))
        if tag not in ("br", "hr", "img", "input"):
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self.open:
            del self.open[len(self.open) - 1 - self.open[::-1].index(tag):]

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def rendered(markdown: str) -> tuple[str, Structure]:
    html = GFM.render(markdown)
    structure = Structure()
    structure.feed(html)
    return html, structure


def readable(markdown: str) -> str:
    """What a person reads of the Markdown: its rendered text (the hidden marker is a comment, not text)."""
    return "".join(rendered(markdown)[1].text)


def assert_words_only(markdown: str) -> None:
    text = readable(markdown)
    assert not RAW.search(text), RAW.search(text)
    assert not RAW.search(markdown.replace(COMMENT_MARKER, "")), "a raw value or escape in the Markdown itself"


def assert_table(structure: Structure, rows: int) -> None:
    assert {("table", "thead"), ("table", "tbody"), ("thead", "th"), ("tbody", "td")} <= structure.nested
    assert structure.tags.count("tr") == rows + 1  # the header row and one a step


def comments() -> dict[str, str]:
    return {
        "passed": fit_comment(render_comment(PASSED, head_sha=SHA, conclusion="success", details_url=DETAILS,
                                             screenshots=SHOTS, previous=PREVIOUS)),
        "failed": fit_comment(render_comment(FAILED, head_sha=SHA, conclusion="failure", details_url=DETAILS,
                                             notes=["setup restored from snapshot"])),
        "findings": fit_comment(render_comment(WITH_FINDINGS, head_sha=SHA, conclusion="failure",
                                               details_url=DETAILS, findings=FINDINGS, previous=PREVIOUS)),
        "running": render_running_comment(head_sha=SHA, details_url=DETAILS, previous=PREVIOUS),
        "neutral": fit_comment(render_comment([step("lint", "skipped")], head_sha=SHA, conclusion="neutral",
                                              details_url=DETAILS)),
        "waiting": render_not_run_comment(
            "Waiting for a maintainer: /ok-to-test",
            waiting_output("this PR comes from a fork and its author has no write access", SHA)["summary"],
            previous=PREVIOUS),
    }


def test_a_failed_run_shows_a_table_its_folded_output_tail_and_the_previous_result() -> None:
    body = comments()["failed"]
    html, structure = rendered(body)
    assert_table(structure, rows=3)
    assert ("details", "summary") in structure.nested and ("details", "pre") in structure.nested
    assert '<td style="text-align:center">✗</td>' in html and "<code>pytest</code> failed (exit 1)" in html
    assert "1m 12s" in html
    summary = re.search(r"<summary>(.*?)</summary>", html, re.S)[1]
    assert summary == "✗ <code>pytest</code> failed: last 60 lines"
    pre = re.search(r"<pre><code[^>]*>(.*?)</code></pre>", html, re.S)[1]
    assert pre.endswith("E   assert 1 == 2\nFAILED test_x.py\n") and len(pre.splitlines()) == 60
    assert "test_0 PASSED" not in pre  # the head is on the details page
    assert_words_only(body)


def test_findings_are_a_list_failures_first_fifty_at_most_then_a_count() -> None:
    body = comments()["findings"]
    html, structure = rendered(body)
    assert_table(structure, rows=3)
    assert "<strong>57 findings on changed lines</strong>" in html
    items = re.findall(r"<li>(.*?)</li>", html, re.S)
    assert len(items) == LISTED_FINDINGS
    assert items[0] == ("✗ <code>app.py:1</code> <code>E501</code> line too long (81 &gt; 79 "
                        "&lt;characters&gt;)")
    assert "F401" not in html  # the warning comes after the 56 failures, past the fifty listed
    assert "… and 7 more in the check run's annotations." in readable(body)
    assert html.count("<details>") == 1  # the listed findings past the first ten; ruff's output says the same
    assert "<sub>Previous: ✗ Failed on <code>1234abc</code> — pytest failed</sub>" in html
    assert_words_only(body)


def test_a_few_findings_and_the_notes_are_two_lists() -> None:
    body = render_comment(WITH_FINDINGS, head_sha=SHA, conclusion="failure", findings=FINDINGS[:3],
                          notes=["fork PR: run without the project's secrets"])
    html, structure = rendered(body)
    lists = re.findall(r"<ul>(.*?)</ul>", html, re.S)
    assert [item.count("<li>") for item in lists] == [3, 1]
    assert "details" not in structure.tags  # ruff failed by its findings: they say why, not its output
    assert "<strong>3 findings on changed lines</strong>" in html


@pytest.mark.parametrize("case", ["passed", "failed", "findings", "running", "neutral", "waiting"])
def test_every_comment_renders_as_github_shows_it(case: str) -> None:
    body = comments()[case]
    html, structure = rendered(body)
    print(f"--- {case} ---\n{html}")
    assert body.startswith(COMMENT_MARKER + "\n") and html.startswith(COMMENT_MARKER)  # hidden, found again
    assert "h3" in structure.tags
    assert structure.tags.count("details") == len(re.findall(r"^</details>$", body, re.M))  # all closed
    assert_words_only(body)
    if case in ("running", "waiting"):
        assert "table" not in structure.tags and "Previous: ✗ Failed on" in readable(body)
    if case == "running":
        assert "Validating 3f2a9c1…" in readable(body) and f'href="{DETAILS}"' in html
    if case == "passed":
        assert "details" not in structure.tags and f'href="{SHOTS[0][1]}"' in html
        assert "8m 20s" in html and "restored from a snapshot" in html


@pytest.mark.parametrize("case", ["passed", "failed", "findings", "running", "neutral", "waiting"])
def test_every_check_run_output_renders_with_a_table_and_words(case: str) -> None:
    if case == "running":
        output = in_progress_output(FAILED[:1], "pytest", "collecting ...\n", current_stage="validate",
                                    elapsed=500)
        rows = 2
    elif case == "waiting":
        output = {**waiting_output(fork_gate(fork=True, author_role="read", head_approved=False).reason, SHA),
                  "text": ""}
        rows = 0
    else:
        steps = {"passed": PASSED, "failed": FAILED, "findings": WITH_FINDINGS,
                 "neutral": [step("lint", "skipped")]}[case]
        conclusion = {"passed": "success", "neutral": "neutral"}.get(case, "failure")
        output = check_run_output(steps, head_sha=SHA, conclusion=conclusion, details_url=DETAILS)
        rows = len(steps)
    assert "\n" not in output["title"] and len(output["title"]) <= 255
    for part in ("title", "summary", "text"):
        assert_words_only(output[part])
    html, structure = rendered(output["summary"])
    print(f"--- {case} ---\n{output['title']}\n{html}\n{GFM.render(output['text'])}")
    if rows:
        assert_table(structure, rows=rows)
    if case in ("failed", "findings"):
        assert "pre" in rendered(output["text"])[1].tags
    if case == "running":
        assert "Running for 8m 20s" in readable(output["summary"])


QUEUE_TAIL = "collected 3 items\n```\nE   assert 'one' and 'two'\nFAILED test_both.py - <b>not bold</b>\n"
QUEUE_STEP = "pytest <b>-k both</b>"


def queue_outputs() -> dict[str, dict[str, str]]:
    """The "Merge queue" check run's output in each state a maintainer meets."""
    return {
        "queued": queued_output(Position(3, None, (), "waiting"), "main"),
        "testing": queued_output(Position(2, 7, (12, 13), "testing"), "main"),
        "passed": queued_output(Position(2, 7, (12,), "passed"), "main"),
        "deferred": queued_output(Position(1, 7, (), "landing", land_deferred=True), "main"),
        "landed": landed_output("main", SHA, 14, (12, 14)),
        "ejected": ejected_output(f"`{QUEUE_STEP}` failed with #12 merged ahead of it", QUEUE_STEP, QUEUE_TAIL),
        "conflict": ejected_output("it conflicts with #12, ahead of it", "merge", "CONFLICT (add/add): app.py\n"),
        "removed": removed_output("a new commit (3f2a9c1) was pushed to it; `/queue` it again when it is ready"),
    }


@pytest.mark.parametrize("case", ["queued", "testing", "passed", "deferred", "landed", "ejected", "conflict",
                                  "removed"])
def test_the_merge_queue_check_run_and_comment_line_read_as_words(case: str) -> None:
    output = queue_outputs()[case]
    assert "\n" not in output["title"] and len(output["title"]) <= 255 and "`" not in output["title"]
    html, structure = rendered(output["summary"])
    line = finished_line(output["title"]) if case in ("landed", "ejected", "conflict", "removed") else \
        queue_comment_line(output["summary"].split(".\n")[0])
    line_html, _ = rendered(line)
    print(f"--- {case} ---\n{output['title']}\n{html}\n{line_html}")
    for markdown in (output["title"], output["summary"], line):
        assert_words_only(markdown)
    # a PR's position is an ordinal: "#3" would link to PR 3; "#12" is PR 12, tested with it
    assert not re.search(r"#\d+ in", readable(line)) and readable(line).count("Merge queue") == 1
    assert "<b>" not in html and "<b>" not in line_html  # a step's name is shown, never markup
    expected = {"queued": "3rd in line for main: waiting to be tested",
                "testing": "2nd in line for main: being tested with #12, #13",
                "passed": "2nd in line for main: passed, lands after the PR ahead of it",
                "deferred": "1st in line for main: passed, waiting for a worker that has the tested commit to merge "
                            "it (tested again if none can)",
                "landed": "Merged into main as 3f2a9c1: the merge queue tested it together with #12.",
                "ejected": "Failing step: pytest <b>-k both</b>",
                "conflict": "Taken out of the merge queue: it conflicts with #12, ahead of it.",
                "removed": "Taken out of the merge queue: a new commit (3f2a9c1) was pushed to it; /queue it"}[case]
    assert expected in readable(output["summary"])
    if case == "ejected":
        assert "E   assert 'one' and 'two'\n" in re.search(r"<pre><code[^>]*>(.*?)</code></pre>", html, re.S)[1]
        assert readable(line).strip() == ("Merge queue: Ejected: pytest <b>-k both</b> failed with #12 merged "
                                          "ahead of it")
    if case == "conflict":
        assert output["title"] == "Ejected: conflicts with #12, ahead of it" and "Failing step" not in html


def test_the_ejection_comment_folds_the_whole_tail_and_names_the_step_as_text() -> None:
    body = ejected_comment("main", f"`{QUEUE_STEP}` failed with #12 merged ahead of it", QUEUE_STEP, QUEUE_TAIL)
    html, structure = rendered(body)
    print(html)
    assert ("details", "summary") in structure.nested and ("details", "pre") in structure.nested
    summary = re.search(r"<summary>(.*?)</summary>", html, re.S)[1]
    assert summary == "Output of <code>pytest &lt;b&gt;-k both&lt;/b&gt;</code>"
    pre = re.search(r"<pre><code[^>]*>(.*?)</code></pre>", html, re.S)[1]
    assert pre.endswith("```\nE   assert 'one' and 'two'\n"
                        "FAILED test_both.py - &lt;b&gt;not bold&lt;/b&gt;\n")  # the ``` in it closes nothing
    assert structure.tags.count("details") == 1 and "b" not in structure.tags
    assert readable(body).startswith("Ejected from the merge queue of main: pytest <b>-k both</b> failed with #12")
    assert_words_only(body)


def run_of(status: str, **values) -> AgentRun:
    fields = dict(id="0f" * 16, project_id="p1", target_text="Greet the world in greeting.txt\nand say so",
                  status=status, source="pr_comment", requested_by="dev-alice", plan_text="1. Write it.\n```py\nx",
                  plan_decided_by=None, pr_number=12, fix_attempts=0, max_fix_attempts=3, reason=None,
                  validation_status=None)
    return AgentRun(**{**fields, **values})


@pytest.mark.parametrize("case", ["plan", "confirmed", "rejected", "context", "done", "human", "cancelled"])
def test_agent_comments_render_as_short_markdown_with_words(case: str) -> None:
    url = "https://app.example/projects/acme/widgets/runs/" + "0f" * 16
    if case == "plan":
        marker, body = plan_comment(run_of(AGENT_AWAITING_CONFIRMATION), url)
    elif case == "confirmed":
        marker, body = plan_comment(run_of("running", plan_decided_by="carol"), url)
    elif case == "rejected":
        marker, body = plan_comment(run_of(AGENT_CANCELLED, plan_decided_by="carol",
                                           reason="plan rejected by carol"), url)
    elif case == "context":
        marker, body = context_comment(run_of("pr_open", source="dashboard", plan_decided_by="carol"), url)
    elif case == "done":
        marker, body = outcome_comment(run_of(AGENT_COMPLETED, reason="the validation passed", fix_attempts=1,
                                              validation_status="success"), url)
    elif case == "human":
        marker, body = outcome_comment(run_of(AGENT_FAILED, reason="the validation still fails after 3 fix "
                                              "attempt(s)", fix_attempts=3, validation_status="failure"), url,
                                       needs_human=True)
    else:
        marker, body = outcome_comment(run_of(AGENT_CANCELLED, reason="cancelled by dev-alice"), url)
    html, structure = rendered(body)
    print(f"--- {case} ---\n{html}")
    assert body.startswith(marker + "\n") and marker.startswith("<!-- codegenapp:agent-") and "0f" * 16 in marker
    assert f'href="{url}"' in html and "h3" in structure.tags
    assert_words_only(body)
    text = readable(body)
    assert "x\n```" in body or case in ("done", "human", "cancelled")  # the plan's open fence is closed
    expected = {"plan": "/plan confirm", "confirmed": "Plan confirmed by @carol", "rejected": "Plan rejected by @carol",
                "context": "asked by @dev-alice via the dashboard", "done": "Agent run done",
                "human": "A human is needed", "cancelled": "Agent run cancelled"}[case]
    assert expected in text
    if case in ("confirmed", "rejected", "context"):
        assert ("details", "pre") in structure.nested  # the plan, folded
    if case == "done":
        assert "Fix attempts: 1 of 3; last validation: passed." in text


@pytest.mark.slow
async def test_the_comments_as_a_browser_shows_them(browser) -> None:
    """Every comment rendered and shown at a desktop and a phone's width (tests/artifacts/comment-*.png)."""
    style = ("body{font:14px -apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:880px;margin:16px auto;"
             "padding:0 12px;color:#1f2328}table{border-collapse:collapse;display:block;overflow:auto}"
             "td,th{border:1px solid #d1d9e0;padding:6px 13px}pre{background:#f6f8fa;padding:12px;overflow:auto}"
             "code{background:#eff1f3;padding:.1em .3em;border-radius:4px}pre code{background:none}"
             "section{border:1px solid #d1d9e0;border-radius:6px;padding:0 16px;margin:16px 0}")
    url = "https://app.example/projects/acme/widgets/runs/" + "0f" * 16
    agent = [plan_comment(run_of(AGENT_AWAITING_CONFIRMATION), url)[1],
             context_comment(run_of("pr_open", plan_decided_by="carol"), url)[1],
             outcome_comment(run_of(AGENT_FAILED, reason="the validation still fails after 3 fix attempt(s)",
                                    fix_attempts=3, validation_status="failure"), url, needs_human=True)[1]]
    html = "".join(f"<section>{GFM.render(body)}</section>" for body in [*comments().values(), *agent])
    page = await browser.new_page()
    for width in (1280, 390):
        await page.set_viewport_size({"width": width, "height": 900})
        await page.set_content(f"<!doctype html><meta charset=utf-8><style>{style}</style>{html}")
        await screenshot(page, f"comment-{width}")
        overflowing = await page.evaluate("document.documentElement.scrollWidth > window.innerWidth")
        assert not overflowing
        hidden = await page.evaluate("[...document.querySelectorAll('details pre')].every(e => !e.checkVisibility())")
        assert hidden  # the failing output is folded until asked for
