"""pipeline.report and pipeline.results: check-run output, annotations from SARIF, changed lines and the sticky comment."""

from __future__ import annotations

import copy
import json
import random
import re

import pytest

from pipeline.report.annotations import AllLines, annotation_batches, annotations_on_changed_lines, changed_lines
from pipeline.report.check_run import (
    check_run_images,
    check_run_output,
    conclusion_for,
    in_progress_output,
    superseded_reason,
)
from pipeline.report.comment import COMMENT_MARKER, fit_comment, render_comment
from pipeline.report.sarif import SarifError, parse_sarif
from pipeline.report.text import clean_output, fence_for, keep_tail
from pipeline.results import Annotation, StepResult

SHA = "3f2a9c1d8e7b6a5f4e3d2c1b0a9f8e7d6c5b4a39"


def step(name: str, status: str = "passed", stage: str = "validate", seconds: float = 1.0, **kw) -> StepResult:
    return StepResult(name=name, stage=stage, status=status, duration_seconds=seconds, **kw)


def nbytes(text: str) -> int:
    return len(text.encode("utf-8"))


def fences_balanced(markdown: str) -> bool:
    """CommonMark fenced code blocks: every opened fence is closed in the same text."""
    state = None
    for line in markdown.split("\n"):
        line = line.rstrip("\r")
        match = re.fullmatch(r" {0,3}(`{3,}|~{3,})(.*)", line)
        if state is None and match and not (match[1][0] == "`" and "`" in match[2]):
            state = match[1]
        elif state is not None and match and match[1][0] == state[0] and len(match[1]) >= len(state) \
                and not match[2].strip():
            state = None
    return state is None


def code_blocks(markdown: str) -> list[str]:
    """The contents of the fenced code blocks, CommonMark style."""
    blocks, state, lines = [], None, []
    for line in markdown.split("\n"):
        match = re.fullmatch(r" {0,3}(`{3,}|~{3,})(.*)", line)
        if state is None and match and not (match[1][0] == "`" and "`" in match[2]):
            state, lines = match[1], []
        elif state is not None and match and match[1][0] == state[0] and len(match[1]) >= len(state) \
                and not match[2].strip():
            blocks.append("\n".join(lines))
            state = None
        elif state is not None:
            lines.append(line)
    return blocks


# --- conclusion ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("statuses", "flags", "expected"), [
    (["passed", "passed"], {}, "success"),
    (["restored", "passed", "skipped"], {}, "success"),
    ([], {}, "neutral"),
    (["skipped", "skipped"], {}, "neutral"),
    (["restored"], {}, "neutral"),
    (["passed", "failed", "passed"], {}, "failure"),
    (["passed", "timed_out"], {}, "timed_out"),
    (["passed", "failed"], {"timed_out": True}, "timed_out"),
    (["passed", "cancelled"], {}, "cancelled"),
    (["failed"], {"cancelled": True}, "cancelled"),
    (["timed_out"], {"cancelled": True}, "cancelled"),
    ([], {"action_required": True, "cancelled": True}, "action_required"),
])
def test_conclusion_for(statuses: list[str], flags: dict[str, bool], expected: str) -> None:
    steps = [step(f"s{i}", status) for i, status in enumerate(statuses)]
    assert conclusion_for(steps, **flags) == expected


def test_step_result_and_annotation_check_their_values() -> None:
    with pytest.raises(ValueError, match="stage"):
        step("x", stage="deploy")
    with pytest.raises(ValueError, match="status"):
        step("x", status="ok")
    with pytest.raises(ValueError, match="annotation_level"):
        Annotation("a.py", 1, 1, "error", "m")
    with pytest.raises(ValueError, match="line range"):
        Annotation("a.py", 3, 2, "notice", "m")


# --- titles ----------------------------------------------------------------------------------------

FOUR = [step("checkout", stage="checkout", seconds=0.4), step("pip install", "restored", "setup", 1.2),
        step("pytest", "failed", seconds=72.3, exit_code=1, output_tail="E   assert 1 == 2\nFAILED test_x.py\n"),
        step("ruff", seconds=3)]


def title(steps: list[StepResult], conclusion: str, **kw) -> str:
    return check_run_output(steps, head_sha=SHA, conclusion=conclusion, details_url=None, **kw)["title"]


def test_titles_say_what_happened() -> None:
    assert title(FOUR, "failure") == "pytest failed — 3 of 4 steps passed"
    passed = [step("a"), step("b"), step("c"), step("d")]
    assert title(passed, "success") == "All 4 steps passed"
    assert title([*passed[:3], step("d", "skipped")], "success") == "All 3 steps passed (1 skipped)"
    assert title([step("pytest")], "success") == "pytest passed"
    assert title([], "cancelled", reason=superseded_reason("abc1234def5678")) == "Cancelled: superseded by abc1234"
    assert title([], "cancelled") == "Cancelled"
    timed = [step("checkout", stage="checkout"), step("npm ci", "timed_out", "setup", 1800)]
    assert title(timed, "timed_out", timeout_minutes=30) == "Timed out in setup after 30 min"
    assert title([], "timed_out") == "Timed out in the run"
    assert title([], "action_required") == "Waiting for a maintainer: /ok-to-test"
    assert title([], "neutral") == "Nothing to validate"
    assert title([], "neutral", reason="No validate commands configured") == "No validate commands configured"


def test_failure_titles_name_the_failing_steps() -> None:
    setup = [step("checkout", stage="checkout"), step("npm ci", "failed", "setup"), step("jest", "skipped")]
    assert title(setup, "failure") == "npm ci failed in setup — 1 of 3 steps passed"
    two = [step("a", "failed"), step("b", "failed"), step("c")]
    assert title(two, "failure") == "a and b failed — 1 of 3 steps passed"
    three = [step("a", "failed"), step("b", "failed"), step("c", "failed")]
    assert title(three, "failure") == "a and 2 more failed — 0 of 3 steps passed"
    assert title([step("a")], "failure", reason="3 new findings") == "3 new findings — 1 of 1 steps passed"
    assert len(title([step("x" * 500, "failed")], "failure")) <= 255
    ui = [step("checkout", stage="checkout"), step("pytest"), step("UI check", "failed", "ui")]
    assert title(ui, "failure") == "UI check failed — 2 of 3 steps passed"


SHOTS = [("/", "https://app.example.com/validations/v/screenshots/a.png"),
         ("/log in (x)", "https://app.example.com/validations/v/screenshots/b.png")]


def test_screenshots_are_linked_and_given_as_check_run_images() -> None:
    output = check_run_output([step("UI check", stage="ui")], head_sha=SHA, conclusion="success", details_url=None,
                              screenshots=SHOTS)
    assert output["summary"].endswith("Screenshots: [`/`](https://app.example.com/validations/v/screenshots/a.png)"
                                      " · [`/log in (x)`](https://app.example.com/validations/v/screenshots/b.png)\n")
    body = render_comment([step("UI check", stage="ui")], head_sha=SHA, conclusion="success", screenshots=SHOTS)
    assert "[`/`](https://app.example.com/validations/v/screenshots/a.png)" in body
    assert check_run_images(SHOTS) == [
        {"alt": "Screenshot of /", "image_url": SHOTS[0][1], "caption": "/"},
        {"alt": "Screenshot of /log in (x)", "image_url": SHOTS[1][1], "caption": "/log in (x)"}]
    assert "Screenshots" not in check_run_output([step("a")], head_sha=SHA, conclusion="success",
                                                 details_url=None)["summary"]


def test_unknown_conclusion_is_refused() -> None:
    with pytest.raises(ValueError, match="conclusion"):
        title([], "exploded")


# --- summary ---------------------------------------------------------------------------------------

def test_summary_is_a_readable_table_with_notes_and_link() -> None:
    output = check_run_output(FOUR, head_sha=SHA, conclusion="failure", details_url="https://app.example/runs/7",
                              notes=["setup restored from snapshot"])
    summary = output["summary"]
    assert summary.startswith("Commit `3f2a9c1` · [Full log](https://app.example/runs/7)\n")
    assert "| Stage | Step | Result | Duration |" in summary
    assert "| checkout | `checkout` | ✓ passed | 0.4s |" in summary
    assert "| setup | `pip install` | ✓ restored | 1.2s |" in summary
    assert "| validate | `pytest` | ✗ failed (exit 1) | 1m 12s |" in summary
    assert "Total time: 1m 17s" in summary
    assert summary.rstrip().endswith("- setup restored from snapshot")


def test_table_cells_cannot_be_broken_by_names_or_details() -> None:
    steps = [step("a | b", detail="killed | out of memory\nsecond line", status="failed", exit_code=137),
             step("`tick` @org/team", status="skipped"), step("", seconds=2)]
    summary = check_run_output(steps, head_sha=SHA, conclusion="failure", details_url=None)["summary"]
    rows = [line for line in summary.splitlines() if line.startswith("| ")]
    assert all(row.replace("\\|", "").count("|") == 5 for row in rows)
    assert "`a \\| b`" in summary and "killed \\| out of memory second line" in summary
    assert "`` `tick` @org/team ``" in summary  # the mention sits in a code span: nobody is notified
    assert "| validate | `` `tick` @org/team `` | skipped | — |" in summary


def test_no_steps_and_no_text_when_nothing_failed() -> None:
    output = check_run_output([], head_sha=SHA, conclusion="neutral", details_url=None)
    assert "No steps ran." in output["summary"] and output["text"] == ""
    assert check_run_output([step("a")], head_sha=SHA, conclusion="success", details_url=None)["text"] == ""


def test_huge_summary_is_cut_within_the_limit() -> None:
    output = check_run_output([step("a")], head_sha=SHA, conclusion="success", details_url=None,
                              notes=["é" * 50_000, "x" * 50_000])
    assert nbytes(output["summary"]) <= 65535
    assert "was cut to fit GitHub's limit" in output["summary"]
    assert output["summary"].startswith("Commit `3f2a9c1`")


# --- text: the failing output ----------------------------------------------------------------------

def test_failing_output_is_in_a_code_block_it_cannot_break_out_of() -> None:
    nasty = "before\n```\n# Heading injected?\n````python\n`````\nafter"
    steps = [step("pytest", "failed", exit_code=2, output_tail=nasty)]
    text = check_run_output(steps, head_sha=SHA, conclusion="failure", details_url=None)["text"]
    assert text.startswith("### `pytest` (validate) failed with exit code 2\n")
    assert "``````text\n" in text  # six backticks: longer than the five inside
    assert code_blocks(text) == [nasty]
    assert fences_balanced(text)
    assert fence_for("no backticks") == "```" and fence_for("a ``` b ```` c") == "`````"


def test_output_is_cleaned_for_display() -> None:
    raw = "\x1b[1;31mFAILED\x1b[0m t.py\r\nDownloading 10%\rDownloading 100%\r\nbell\x07 nul\x00 tab\tok\r\n" \
          "\x1b]0;title\x07done \udcff end"
    assert clean_output(raw) == "FAILED t.py\nDownloading 100%\nbell nul tab\tok\ndone \ufffd end"
    text = check_run_output([step("t", "failed", output_tail=raw)], head_sha=SHA, conclusion="failure",
                            details_url=None)["text"]
    assert "\x1b" not in text and "\r" not in text
    text.encode("utf-8")  # no lone surrogates left


def test_huge_output_keeps_the_tail_and_says_how_much_was_cut() -> None:
    lines = [f"line {i:06d} {'é' * 20}" for i in range(20_000)]
    output = "\n".join(lines) + "\nFAILED: the real error is here\n"
    text = check_run_output([step("pytest", "failed", exit_code=1, output_tail=output)], head_sha=SHA,
                            conclusion="failure", details_url=None)["text"]
    assert nbytes(text) <= 65535
    assert text.rstrip().endswith("FAILED: the real error is here\n```")
    (block,) = code_blocks(text)
    shown = block.split("\n")
    assert shown[0].startswith("line ") and shown[0] == lines[int(shown[0][5:11])]  # starts on a whole line
    cut = int(shown[0][5:11])
    assert f"*{cut:,} earlier lines (".replace(",", "") in text.replace(",", "")
    assert "cut — the end of the output follows.*" in text


def test_one_huge_line_without_newlines_is_cut_mid_line_without_breaking_characters() -> None:
    output = "🙂" * 40_000  # 160 KB, one line
    text = check_run_output([step("x", "failed", output_tail=output)], head_sha=SHA, conclusion="failure",
                            details_url=None)["text"]
    assert nbytes(text) <= 65535
    (block,) = code_blocks(text)
    assert set(block) == {"🙂"}
    assert "1 earlier line (" in text


def test_several_failing_steps_share_the_space_fairly() -> None:
    big = "\n".join(f"big {i}" for i in range(30_000)) + "\nBIG END"
    two = "\n".join(f"two {i}" for i in range(30_000)) + "\nTWO END"
    steps = [step("small", "failed", output_tail="small output\nSMALL END"),
             step("big1", "failed", output_tail=big), step("big2", "timed_out", output_tail=two),
             step("quiet", "failed")]
    text = check_run_output(steps, head_sha=SHA, conclusion="failure", details_url=None)["text"]
    assert nbytes(text) <= 65535
    blocks = code_blocks(text)
    assert blocks[0] == "small output\nSMALL END"
    assert blocks[1].endswith("\nbig 29999\nBIG END") and blocks[2].endswith("\ntwo 29999\nTWO END")
    assert abs(nbytes(blocks[1]) - nbytes(blocks[2])) < 200
    assert nbytes(text) > 65535 - 1500  # the space is used
    assert "### `big2` (validate) timed out" in text
    assert "### `quiet` (validate) failed\n\n*(no output)*" in text


def test_many_failing_steps_show_the_first_ten() -> None:
    steps = [step(f"s{i}", "failed", output_tail=f"out {i}") for i in range(15)]
    text = check_run_output(steps, head_sha=SHA, conclusion="failure", details_url=None)["text"]
    assert len(code_blocks(text)) == 10 and "*5 more failing steps: see the table.*" in text


def test_keep_tail_counts_lines_and_bytes() -> None:
    assert keep_tail("abc", 10) == ("abc", 0, 0)
    kept, lines, size = keep_tail("one\ntwo\nthree\n", 8)
    assert (kept, lines, size) == ("three\n", 2, 8)
    kept, lines, size = keep_tail("aaaaaaaaaa", 4)
    assert (kept, lines, size) == ("aaaa", 1, 6)


# --- live output -----------------------------------------------------------------------------------

def test_in_progress_output() -> None:
    done = [step("checkout", stage="checkout"), step("npm ci", stage="setup", seconds=40)]
    output = in_progress_output(done, "jest", "PASS a.test.js\nRUNS b.test.js", current_stage="validate")
    assert output["title"] == "Running jest — 2 steps done"
    assert "| validate | `jest` | running… | — |" in output["summary"]
    assert output["text"].startswith("### Live output of `jest` (validate)")
    assert code_blocks(output["text"]) == ["PASS a.test.js\nRUNS b.test.js"]
    assert "Total time" not in output["summary"]  # the finished steps' 40 s is not how long it has run
    assert "Running for 8m 20s" in in_progress_output(done, "jest", "", elapsed=500)["summary"]
    assert in_progress_output([], None, "")["title"] == "Starting"
    assert in_progress_output([], None, "")["text"] == ""
    failed = in_progress_output([step("a", "failed")], "b", "")
    assert failed["title"] == "Running b — 1 step done, 1 failed" and failed["text"] == ""
    huge = in_progress_output([], "x", "y" * 200_000 + "\nlast")
    assert nbytes(huge["text"]) <= 65535 and huge["text"].rstrip().endswith("last\n```")


# --- annotations -----------------------------------------------------------------------------------

def test_annotation_batches_use_github_field_names_and_limits() -> None:
    annotations = [Annotation(f"f{i}.py", i + 1, i + 1, "warning", f"m{i}", title="T", start_column=3, end_column=9)
                   for i in range(120)]
    batches = annotation_batches(annotations)
    assert [len(b) for b in batches] == [50, 50, 20]
    assert batches[0][0] == {"path": "f0.py", "start_line": 1, "end_line": 1, "annotation_level": "warning",
                             "message": "m0", "title": "T", "start_column": 3, "end_column": 9}
    multi = annotation_batches([Annotation("a.py", 1, 3, "failure", "", start_column=2, end_column=1,
                                           raw_details="d" * 100_000, title="t" * 300)], size=1)[0][0]
    assert "start_column" not in multi and "end_column" not in multi  # only on a single line
    assert multi["message"] == "(no message)"
    assert len(multi["title"]) == 255 and nbytes(multi["raw_details"]) <= 64000
    single = annotation_batches([Annotation("a.py", 2, 2, "notice", "m", start_column=5, end_column=2)])[0][0]
    assert (single["start_column"], single["end_column"]) == (5, 5)
    assert annotation_batches([]) == []
    for bad in (0, 51):
        with pytest.raises(ValueError):
            annotation_batches(annotations, size=bad)


# ruff 0.17.6 `ruff check --output-format sarif .` in /workspace (the sandbox's checkout), fixes and rule
# descriptions trimmed.
RUFF_SARIF = json.dumps({
    "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
    "runs": [{"results": [
        {"level": "error", "locations": [{"physicalLocation": {
            "artifactLocation": {"uri": "file:///workspace/pkg/mod.py"},
            "region": {"endColumn": 11, "endLine": 2, "startColumn": 1, "startLine": 1}}}],
         "message": {"text": "Import block is un-sorted or un-formatted"}, "ruleId": "I001"},
        {"level": "error", "locations": [{"physicalLocation": {
            "artifactLocation": {"uri": "file:///workspace/pkg/mod.py"},
            "region": {"endColumn": 10, "endLine": 1, "startColumn": 8, "startLine": 1}}}],
         "message": {"text": "`os` imported but unused"}, "ruleId": "F401"},
        {"level": "error", "locations": [{"physicalLocation": {
            "artifactLocation": {"uri": "file:///workspace/pkg/mod.py"},
            "region": {"endColumn": 6, "endLine": 5, "startColumn": 5, "startLine": 5}}}],
         "message": {"text": "Local variable `y` is assigned to but never used"}, "ruleId": "F841"},
        {"level": "error", "locations": [{"physicalLocation": {
            "artifactLocation": {"uri": "file:///workspace/top.py"},
            "region": {"endColumn": 12, "endLine": 1, "startColumn": 8, "startLine": 1}}}],
         "message": {"text": "`json` imported but unused"}, "ruleId": "F401"}],
        "tool": {"driver": {"informationUri": "https://github.com/astral-sh/ruff", "name": "ruff", "rules": [
            {"id": "F401", "defaultConfiguration": {"enabled": True, "level": "error"},
             "helpUri": "https://docs.astral.sh/ruff/rules/unused-import",
             "shortDescription": {"text": "`{name}` imported but unused"}},
            {"id": "F841", "helpUri": "https://docs.astral.sh/ruff/rules/unused-variable"},
            {"id": "I001", "helpUri": "https://docs.astral.sh/ruff/rules/unsorted-imports"}],
            "version": "0.17.6"}}}],
    "version": "2.1.0"}, indent=2)


def sarif(results: list[dict], **run) -> str:
    return json.dumps({"version": "2.1.0", "runs": [{"tool": {"driver": {"name": "t"}}, "results": results, **run}]})


def result(uri: str = "src/a.py", region: dict | None = None, **extra) -> dict:
    location: dict = {"artifactLocation": {"uri": uri}}
    if region is not None:
        location["region"] = region
    return {"message": {"text": "msg"}, "locations": [{"physicalLocation": location}], **extra}


def test_parse_ruff_sarif() -> None:
    annotations = parse_sarif(RUFF_SARIF, workspace_prefix="/workspace/")
    assert annotations == [
        Annotation("pkg/mod.py", 1, 2, "failure", "Import block is un-sorted or un-formatted", title="I001",
                   raw_details="https://docs.astral.sh/ruff/rules/unsorted-imports"),
        Annotation("pkg/mod.py", 1, 1, "failure", "`os` imported but unused", title="F401",
                   raw_details="https://docs.astral.sh/ruff/rules/unused-import", start_column=8, end_column=9),
        Annotation("pkg/mod.py", 5, 5, "failure", "Local variable `y` is assigned to but never used", title="F841",
                   raw_details="https://docs.astral.sh/ruff/rules/unused-variable", start_column=5, end_column=5),
        Annotation("top.py", 1, 1, "failure", "`json` imported but unused", title="F401",
                   raw_details="https://docs.astral.sh/ruff/rules/unused-import", start_column=8, end_column=11),
    ]
    for prefix in ("/workspace", "file:///workspace/", "/workspace//"):
        assert [a.path for a in parse_sarif(RUFF_SARIF, workspace_prefix=prefix)][-1] == "top.py"
    assert parse_sarif(RUFF_SARIF) == []  # absolute paths outside the (empty) prefix cannot be repository paths


def test_sarif_without_results() -> None:
    assert parse_sarif('{"version": "2.1.0", "runs": []}') == []
    assert parse_sarif(sarif([])) == []
    assert parse_sarif(json.dumps({"version": "2.1.0", "runs": [{"tool": {"driver": {"name": "t"}}}]})) == []
    assert parse_sarif(json.dumps({"version": "2.1.0", "runs": [{"results": None}]})) == []


def test_sarif_regions() -> None:
    annotations = parse_sarif(sarif([
        result("a.py"),                                          # no region: the first line
        result("b.py", {"startLine": 7}),                        # no endLine: one line
        result("c.py", {"charOffset": 10, "charLength": 3}),     # offsets only: the first line
        result("d.py", {"startLine": 3, "endLine": 4, "startColumn": 2, "endColumn": 5}),
        result("e.py", {"startLine": 3, "startColumn": 4}),
    ]))
    assert [(a.path, a.start_line, a.end_line, a.start_column, a.end_column) for a in annotations] == [
        ("a.py", 1, 1, None, None), ("b.py", 7, 7, None, None), ("c.py", 1, 1, None, None),
        ("d.py", 3, 4, None, None), ("e.py", 3, 3, 4, None)]


def test_sarif_levels_kinds_and_suppressions() -> None:
    rules = {"rules": [{"id": "R1", "defaultConfiguration": {"level": "note"}}, {"id": "R2"}]}
    annotations = parse_sarif(sarif([
        result("error.py", level="error"), result("warning.py", level="warning"), result("note.py", level="note"),
        result("none.py", level="none"), result("default.py"), result("rule-default.py", ruleId="R1"),
        result("rule-index.py", ruleIndex=0), result("rule-2.py", ruleId="R2"),
        result("review.py", kind="review"), result("pass.py", kind="pass"), result("na.py", kind="notApplicable"),
        result("suppressed.py", suppressions=[{"kind": "inSource"}]),
        result("rejected-suppression.py", suppressions=[{"kind": "external", "status": "rejected"}]),
        result("absent.py", baselineState="absent"), result("new.py", baselineState="new"),
    ], tool={"driver": {"name": "t", **rules}}))
    assert {a.path: a.annotation_level for a in annotations} == {
        "error.py": "failure", "warning.py": "warning", "note.py": "notice", "none.py": "notice",
        "default.py": "warning", "rule-default.py": "notice", "rule-index.py": "notice", "rule-2.py": "warning",
        "review.py": "notice", "rejected-suppression.py": "warning", "new.py": "warning"}
    assert {a.path: a.title for a in annotations}["rule-index.py"] == "R1"


def test_sarif_messages() -> None:
    rule = {"id": "R", "messageStrings": {"m": {"text": "Use {0} instead of {1} ({{literal}}) {5}"}},
            "shortDescription": {"text": "short"}}
    annotations = parse_sarif(sarif([
        {**result("a.py"), "ruleId": "R", "message": {"id": "m", "arguments": ["x", 2]}},
        {**result("b.py"), "message": {"markdown": "**bold**"}},
        {**result("c.py"), "ruleId": "R", "message": {}},
        {**result("d.py"), "ruleId": "Q", "message": {"text": ""}},
        {**result("e.py"), "message": {"text": "{0} and {1}", "arguments": ["one"]}},
    ], tool={"driver": {"name": "t", "rules": [rule]}}))
    assert [a.message for a in annotations] == ["Use x instead of 2 ({literal}) {5}", "**bold**", "short", "Q",
                                                "one and {1}"]


def test_sarif_paths() -> None:
    annotations = parse_sarif(sarif([
        result("file:///workspace/dir/with%20space.py"), result("./src/./x.py"), result("src/../y.py"),
        result("file:///etc/passwd"), result("../outside.py"), result("https://example.com/a.py"),
        result("file://localhost/workspace/host.py"), result("/workspace"),
        {**result("rel.py"), "locations": [{"physicalLocation": {"artifactLocation": {"uri": "rel.py",
                                                                                      "uriBaseId": "SRC"}}}]},
        {**result(), "locations": [{"physicalLocation": {"artifactLocation": {"index": 0}}}]},
        {**result(), "locations": []}, {**result(), "locations": [{"logicalLocations": [{"name": "f"}]}]},
    ], originalUriBaseIds={"SRC": {"uri": "file:///workspace/lib/"}},
        artifacts=[{"location": {"uri": "file:///workspace/indexed.py"}}]), workspace_prefix="/workspace")
    assert [a.path for a in annotations] == ["dir/with space.py", "src/x.py", "y.py", "host.py", "lib/rel.py",
                                             "indexed.py"]


@pytest.mark.parametrize(("text", "fragment"), [
    ("", "empty"),
    ("warning: something\n{}", "not JSON"),
    ("[1, 2]", "must be an object"),
    ('{"version": "2.0.0", "runs": []}', "version"),
    ('{"version": "2.1.0"}', 'no "runs"'),
    ('{"version": "2.1.0", "runs": {}}', "runs must be an array"),
    ('{"version": "2.1.0", "runs": [{"results": {}}]}', "runs[0].results must be an array"),
    ('{"version": "2.1.0", "runs": [{"results": [1]}]}', "runs[0].results[0] must be an object"),
    (sarif([result(region={"startLine": 0})]), "startLine must be a positive integer, got 0"),
    (sarif([result(region={"startLine": "5"})]), 'startLine must be a positive integer, got "5"'),
    (sarif([result(region={"startLine": True})]), "startLine must be a positive integer"),
    (sarif([result(region={"startLine": 5, "endLine": 4})]), "endLine is before its startLine"),
    (sarif([result(region={"startLine": 5, "startColumn": -1})]), "startColumn"),
    (sarif([result(level="fatal")]), "level must be error, warning, note or none"),
    (sarif([result(level=["error"])]), "level must be"),
    (sarif([{"locations": []}]), "message must be an object"),
    (sarif([result(region=[1])]), "region must be an object"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
])
def test_invalid_sarif(text: str, fragment: str) -> None:
    with pytest.raises(SarifError) as caught:
        parse_sarif(text)
    assert fragment in str(caught.value)


def test_mutated_sarif_only_ever_raises_sarif_error() -> None:
    rng = random.Random(99)
    base = json.loads(RUFF_SARIF)
    junk = [None, 0, -1, 1.5, True, "", "x", [], {}, [None], {"a": 1}, "file:///workspace/../x", 10**30]

    def mutate(node: object, depth: int = 0) -> object:
        if isinstance(node, dict) and node:
            key = rng.choice(list(node))
            if rng.random() < 0.3 or depth > 8:
                node[key] = rng.choice(junk)
            elif rng.random() < 0.1:
                del node[key]
            else:
                node[key] = mutate(node[key], depth + 1)
        elif isinstance(node, list) and node:
            i = rng.randrange(len(node))
            node[i] = rng.choice(junk) if rng.random() < 0.3 else mutate(node[i], depth + 1)
        return node

    for _ in range(800):
        doc = copy.deepcopy(base)
        for _ in range(rng.randint(1, 3)):
            mutate(doc)
        try:
            for a in parse_sarif(json.dumps(doc), workspace_prefix="/workspace/"):
                annotation_batches([a])
        except SarifError:
            pass


# --- changed lines ---------------------------------------------------------------------------------

PATCH = "\n".join([
    "@@ -1,4 +1,5 @@ import os",
    " import os",
    "-import sys",
    "+import json",
    "+import re",
    " ",
    " def f():",
    "@@ -20,3 +21,4 @@ def g():",
    "     a = 1",
    "-    b = 2",
    "+    b = 3",
    "     return a",
    "+# end",
    "\\ No newline at end of file",
])


def test_changed_lines_from_multi_hunk_patches() -> None:
    assert changed_lines([{"filename": "a.py", "patch": PATCH}]) == {"a.py": {2, 3, 22, 24}}


def test_changed_lines_edge_cases() -> None:
    files = [
        {"filename": "new.py", "status": "added", "patch": "@@ -0,0 +1,3 @@\n+a\n+b\n+c"},
        {"filename": "deleted-lines.py", "patch": "@@ -5,2 +4,0 @@\n-x\n-y"},
        {"filename": "short.py", "patch": "@@ -1 +1 @@\n-a\n+b"},
        {"filename": "crlf.py", "patch": "@@ -1,3 +1,3 @@\r\n a\r\n-b\r\n+B\r\n c\r\n"},
        {"filename": "stripped-context.py", "patch": "@@ -1,3 +1,4 @@\n a\n\n+new\n c"},
        {"filename": "sep.py", "patch": "@@ -1,2 +1,3 @@\n a\u2028still line 1\n+added\n b"},
        {"filename": "empty-patch.py", "status": "modified", "patch": ""},
        {"filename": "new/name.py", "previous_filename": "old/name.py", "status": "renamed",
         "patch": "@@ -10,2 +10,3 @@\n x\n+y\n z"},
        {"filename": "pure/rename.py", "previous_filename": "a/rename.py", "status": "renamed", "changes": 0},
        {"filename": "image.png", "status": "modified", "changes": 2},
        {"filename": "huge.min.js", "status": "modified", "additions": 90000, "changes": 90000},
        {"filename": "gone.py", "status": "removed", "changes": 10},
        {"status": "modified", "patch": "@@ -1 +1 @@\n+x"},
    ]
    changed = changed_lines(files)
    assert changed["new.py"] == {1, 2, 3}
    assert changed["deleted-lines.py"] == set()
    assert changed["short.py"] == {1}
    assert changed["crlf.py"] == {2}
    assert changed["stripped-context.py"] == {3}
    assert changed["sep.py"] == {2}
    assert changed["empty-patch.py"] == set()
    assert changed["new/name.py"] == {11} and "old/name.py" not in changed
    assert changed["pure/rename.py"] == set()
    assert isinstance(changed["image.png"], AllLines) and 12345 in changed["image.png"]
    assert changed["image.png"] and changed["image.png"] != set() and set() != changed["image.png"]
    assert changed["image.png"] == AllLines()
    assert isinstance(changed["huge.min.js"], AllLines)
    assert changed["gone.py"] == set()
    assert len(changed) == 12


def test_patch_lines_after_the_hunk_are_not_counted() -> None:
    patch = "@@ -1,1 +1,2 @@\n a\n+b\n+++ b/not-part-of-the-hunk\n--- a/x"
    assert changed_lines([{"filename": "a", "patch": patch}])["a"] == {2}


def test_annotations_on_changed_lines() -> None:
    changed = changed_lines([{"filename": "a.py", "patch": PATCH}, {"filename": "bin.dat", "changes": 1}])
    annotations = [Annotation("a.py", 2, 2, "failure", "on an added line"),
                   Annotation("a.py", 1, 1, "failure", "on context"),
                   Annotation("a.py", 4, 30, "warning", "range overlapping line 22"),
                   Annotation("a.py", 25, 100_000, "warning", "large range, no overlap"),
                   Annotation("a.py", 1, 1_000_000, "notice", "huge range with overlap"),
                   Annotation("other.py", 2, 2, "failure", "file not in the PR"),
                   Annotation("bin.dat", 7, 7, "notice", "no patch: kept")]
    kept = annotations_on_changed_lines(annotations, changed)
    assert [a.message for a in kept] == ["on an added line", "range overlapping line 22", "huge range with overlap",
                                         "no patch: kept"]


def test_sarif_to_changed_line_annotations_end_to_end() -> None:
    files = [{"filename": "pkg/mod.py", "status": "modified", "patch": "@@ -4,2 +4,3 @@\n def f(x):\n+    y = 1\n"
              "     return x == None"}]
    annotations = parse_sarif(RUFF_SARIF, workspace_prefix="/workspace/")
    kept = annotations_on_changed_lines(annotations, changed_lines(files))
    assert [a.title for a in kept] == ["F841"]
    (batch,) = annotation_batches(kept)
    assert batch[0]["path"] == "pkg/mod.py" and batch[0]["annotation_level"] == "failure"


# --- sticky comment --------------------------------------------------------------------------------

def test_render_comment() -> None:
    body = render_comment(FOUR, head_sha=SHA, conclusion="failure", check_run_url="https://github.com/o/r/runs/1",
                          details_url="https://app.example/runs/7", notes=["setup restored from snapshot"])
    assert body.startswith(COMMENT_MARKER + "\n### ✗ Validation failed\n\n")
    assert ("`pytest` failed — 3 of 4 steps passed · commit `3f2a9c1` · [check run](https://github.com/o/r/runs/1)"
            " · [details and full log](https://app.example/runs/7)") in body
    assert "| ✗ | `pytest` failed (exit 1) | 1m 12s |" in body
    assert "* setup restored from snapshot" in body
    assert code_blocks(body) == ["E   assert 1 == 2\nFAILED test_x.py"]
    passed = render_comment([step("a")], head_sha=SHA, conclusion="success")
    assert "### ✓ Validation passed" in passed and "```" not in passed and "[check run]" not in passed
    waiting = render_comment([], head_sha=SHA, conclusion="action_required")
    assert "### Validation is waiting for a maintainer" in waiting and "/ok-to-test" in waiting


def test_a_short_comment_is_kept_as_it_is() -> None:
    body = render_comment(FOUR, head_sha=SHA, conclusion="failure")
    assert fit_comment(body) == body
    assert fit_comment("hello") == COMMENT_MARKER + "\nhello"
    assert fit_comment("") == COMMENT_MARKER + "\n"


def numbered_output(n: int, width: int = 0) -> str:
    return "\n".join(f"out {i:06d}{'x' * width}" for i in range(n))


def test_a_long_comment_keeps_the_tail() -> None:
    output = numbered_output(200, width=2000) + "\nTHE END"  # its last lines, as the comment keeps, are too long
    body = render_comment([step("pytest", "failed", output_tail=output)], head_sha=SHA, conclusion="failure")
    part = fit_comment(body)
    assert nbytes(part) <= 65536 and fences_balanced(part) and part.startswith(COMMENT_MARKER)
    assert "| ✗ | `pytest` failed | 1.0s |" in part and part.rstrip().endswith("</details>")
    (block,) = code_blocks(part)
    assert re.match(r"… \d+ lines omitted …\nout \d{6}x{2000}\n", block)
    assert block.endswith("\nout 000199" + "x" * 2000 + "\nTHE END")


def test_tiny_limits() -> None:
    body = render_comment([step("x", "failed", output_tail=numbered_output(100, width=100) + "\nTHE END")],
                          head_sha=SHA, conclusion="failure")
    part = fit_comment(body, limit=3000)
    assert nbytes(part) <= 3000 and "THE END\n```\n" in part and "lines omitted" in part
    with pytest.raises(ValueError):
        fit_comment(body, limit=50)


def test_a_huge_single_line_and_unicode_are_cut_safely() -> None:
    output = "🙂é" * 100_000 + "\nTAIL"
    body = render_comment([step("x", "failed", output_tail=output)], head_sha=SHA, conclusion="failure")
    part = fit_comment(body)
    assert nbytes(part) <= 65536 and fences_balanced(part)  # nbytes encodes it: no lone surrogate was left
    (block,) = code_blocks(part)
    assert block.endswith("🙂é\nTAIL")
    assert re.match(r"… 1 line omitted …\n(🙂|é)", block)


def test_random_bodies_keep_every_invariant() -> None:
    rng = random.Random(2024)
    pieces = ["text", "```", "````js", "~~~", "`````", "   ```", "| a | b |", "🙂" * 50, "é" * 300, "x" * 3000,
              "", "```not-a-closer```", "\r", "<!-- codegenapp:validation -->"]
    for _ in range(60):
        lines = [rng.choice(pieces) + (str(rng.random()) if rng.random() < 0.5 else "")
                 for _ in range(rng.randint(0, 400))]
        body = "\n".join(lines)
        limit = rng.choice([600, 1000, 4096])
        comment = fit_comment(body, limit=limit)
        assert comment.startswith(COMMENT_MARKER)
        assert nbytes(comment) <= limit
        if fences_balanced(body):
            assert fences_balanced(comment)
