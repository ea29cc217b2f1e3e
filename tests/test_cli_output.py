"""What `codegenapp` prints: the help with examples, and `codegenapp validate`'s report for a terminal
(pipeline/report/terminal.py), as JSON (pipeline/report/local.py) and as Markdown; the last lines a
passing step keeps and the note on a step that tried the network it has not (pipeline/network_note.py).
The renderers are tested as pure functions; the command in a real process, on a pseudo-terminal too."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pipeline.network_note import network_note
from pipeline.repo_config.effective import EffectiveConfig
from pipeline.report.local import UNKNOWN_STEP, LocalRun, findings_by_step, json_report
from pipeline.report.terminal import report_format, terminal_report, use_colour
from pipeline.report.text import last_lines
from pipeline.results import Annotation, Screenshot, StepResult
from pipeline.validation.stages import planned_steps, setup_step_names
from tests.cli_support import cli_env, codegenapp, codegenapp_in_terminal
from tests.sandbox_support import needs_bwrap
from tests.test_local_run import commit
from tests.ui_app import app_files, ui_config

ANSI = re.compile(r"\x1b\[[0-9;]*m")
PYTEST_OUTPUT = "".join(f"tests/test_{i}.py ....\n" for i in range(8)) + "\x1b[32m==== 297 passed in 4.21s ====\x1b[0m\n"
OFFLINE = "Traceback (most recent call last):\nurllib.error.URLError: <urlopen error [Errno -3] " \
          "Temporary failure in name resolution>\n"


def finding(line: int, rule: str, message: str, level: str = "failure") -> Annotation:
    return Annotation("app.py", line, line, level, message, title=rule)


def a_run(steps: list[StepResult], *, findings: dict[str, list[Annotation]] | None = None,
          screenshots: list[tuple[Screenshot, str]] | None = None, conclusion: str = "failure") -> LocalRun:
    return LocalRun(sha="0123456789abcdef0123456789abcdef01234567", title="pytest failed — 2 of 3 steps passed",
                    conclusion=conclusion, steps=steps, notes=["setup saved as a snapshot for the next validation"],
                    findings=findings or {}, screenshots=screenshots or [], elapsed=512.0)


STEPS = [StepResult("checkout", "checkout", "passed", 0.3, detail="0123456"),
         StepResult("npm ci", "setup", "passed", 62.0, 0, "added 812 packages in 61s\n"),
         StepResult("pytest", "validate", "passed", 500.0, 0, PYTEST_OUTPUT),
         StepResult("curl example.com", "validate", "failed", 0.1, 6, "curl: (6) Could not resolve host: example.com\n"),
         StepResult("ruff", "analysis", "failed", 1.2, None, "app.py:3 E501 Line too long", "1 finding on changed lines"),
         StepResult("UI check", "ui", "skipped", 0.0, detail="validate did not pass")]


def row_of(lines: list[str], name: str) -> int:
    """The index of the step row of `name`."""
    return next(i for i, line in enumerate(lines) if line[2:3] in ("✓", "✗", "–") and f"  {name}  " in line)


def rows(report: str) -> list[str]:
    """The step rows of a terminal report (after the blank line under the header, up to the next blank line)."""
    body = report.split("\n\n")[1]
    return [line for line in body.split("\n") if line[2:3] in ("✓", "✗", "–")]


# --- the terminal form ---------------------------------------------------------------------------

def test_aligned_columns_durations_as_people_read_them_and_no_colour_when_off() -> None:
    report = terminal_report(a_run(STEPS), colour=False)
    assert "\x1b" not in report
    assert report.startswith("✗ pytest failed — 2 of 3 steps passed\n  commit 0123456 · 8m 32s\n")
    table = rows(report)
    assert [row[2] for row in table] == ["✓", "✓", "✓", "✗", "✗", "–"]
    states = [row.index(word) for row, word in zip(table, ["Passed", "Passed", "Passed", "Failed (exit 6)", "Failed",
                                                             "Skipped"], strict=True)]
    assert len(set(states)) == 1  # the state column starts at the same place on every row
    names = [row.index(name) for row, name in zip(table, ["checkout", "npm ci", "pytest", "curl", "ruff", "UI check"],
                                                  strict=True)]
    assert len(set(names[1:])) == 1
    durations = {"0.3s": 0, "1m 2s": 1, "8m 20s": 2, "0.1s": 3, "1.2s": 4, "—": 5}
    ends = [table[i].index(took) + len(took) for took, i in durations.items()]
    assert len(set(ends)) == 1  # right-aligned
    assert table[5].endswith("validate did not pass")


def test_colour_marks_and_states_when_on() -> None:
    report = terminal_report(a_run(STEPS), colour=True)
    assert "\x1b[32m\x1b[1m✓\x1b[0m" in report and "\x1b[31m\x1b[1m✗\x1b[0m" in report
    assert report.startswith("\x1b[31m\x1b[1m✗ pytest failed")
    assert ANSI.sub("", report) == terminal_report(a_run(STEPS), colour=False)  # colour changes nothing else


def test_a_passing_step_shows_its_last_lines_cleaned_and_a_failing_one_the_end_of_its_output() -> None:
    report = terminal_report(a_run(STEPS))
    lines = report.split("\n")
    pytest_row = row_of(lines, "pytest")
    under = lines[pytest_row + 1:pytest_row + 6]
    assert [line.strip() for line in under] == ["│ tests/test_4.py ....", "│ tests/test_5.py ....",
                                                "│ tests/test_6.py ....", "│ tests/test_7.py ....",
                                                "│ ==== 297 passed in 4.21s ===="]
    assert "test_3.py" not in report
    assert under[0].index("│") == lines[pytest_row].index("pytest")  # under the step's name

    long_failure = StepResult("pytest", "validate", "failed", 3.0, 1, "".join(f"line {i}\n" for i in range(100)))
    failed = terminal_report(a_run([long_failure]))
    assert "… 70 earlier lines\n" in failed and "│ line 70\n" in failed and "│ line 99\n" in failed
    assert "line 69\n" not in failed


def test_findings_under_their_step_and_a_count_past_fifty() -> None:
    found = [finding(3, "E501", "Line too long (120 > 100)"), finding(7, "F401", "`os` imported   but unused", "warning")]
    report = terminal_report(a_run(STEPS, findings={"ruff": found}))
    lines = report.split("\n")
    ruff_row = row_of(lines, "ruff")
    assert [line.strip() for line in lines[ruff_row + 1:ruff_row + 3]] == [
        "app.py:3 E501 Line too long (120 > 100)", "app.py:7 F401 `os` imported but unused"]
    assert lines[ruff_row + 3].lstrip().startswith("–")  # then the next step
    assert "app.py:3 E501 Line too long" not in report.split("\n", ruff_row + 1)[-1].split("app.py:3", 1)[1]

    coloured = terminal_report(a_run(STEPS, findings={"ruff": found}), colour=True)
    assert "\x1b[31mapp.py:3\x1b[0m E501" in coloured and "\x1b[33mapp.py:7\x1b[0m F401" in coloured

    many = terminal_report(a_run(STEPS, findings={"ruff": [finding(n, "E1", "bad") for n in range(1, 61)]}))
    assert "app.py:50 E1 bad" in many and "app.py:51 E1" not in many and "… and 10 more" in many

    unplaced = terminal_report(a_run(STEPS, findings={UNKNOWN_STEP: found}))
    assert "\nFindings (2)\n  app.py:3 E501 Line too long (120 > 100)\n" in unplaced


def test_screenshot_files_and_notes_follow_the_steps() -> None:
    shots = [(Screenshot("/", "a" * 32 + ".png", 1280, 720), "/home/me/.cache/codegenapp/screenshots/0123/a.png"),
             (Screenshot("/settings/profile", "b" * 32 + ".png", 1280, 900), "/home/me/.cache/b.png")]
    report = terminal_report(a_run(STEPS, screenshots=shots), colour=False)
    assert report.endswith("\nNotes\n  - setup saved as a snapshot for the next validation\n\nScreenshots\n"
                           "  /                  /home/me/.cache/codegenapp/screenshots/0123/a.png\n"
                           "  /settings/profile  /home/me/.cache/b.png\n")


def test_the_network_note_is_shown_under_the_step_wrapped_to_the_terminal() -> None:
    report = terminal_report(a_run(STEPS), width=80)
    lines = report.split("\n")
    curl_row = row_of(lines, "curl example.com")
    note = lines[curl_row + 2:row_of(lines, "ruff")]
    assert note[0].strip().startswith("note: This step has no network by design")
    assert all(len(line) <= 80 for line in note) and len(note) > 1
    assert "Could not resolve host" in " ".join(note) and "setup" in " ".join(note)


def test_colour_only_on_a_terminal_without_no_color() -> None:
    assert use_colour({"TERM": "xterm-256color"}, True)
    assert not use_colour({}, False)
    assert not use_colour({"NO_COLOR": "1"}, True)
    assert use_colour({"NO_COLOR": ""}, True)  # set but empty: no-color.org says colours stay
    assert not use_colour({"TERM": "dumb"}, True)
    assert report_format(None, True) == "text" and report_format(None, False) == "markdown"
    assert report_format("json", True) == "json" and report_format("text", False) == "text"


# --- the data: last lines, the network note, setup names, findings by step, JSON ------------------

def test_last_lines_are_the_cleaned_end_of_the_output() -> None:
    assert last_lines(PYTEST_OUTPUT)[-1] == "==== 297 passed in 4.21s ===="
    assert last_lines("a\n\n\nb\n  \n", 5) == ["a", "b"]
    assert last_lines("progress 10%\rprogress 100%\ndone\n") == ["progress 100%", "done"]
    assert last_lines("x" * 500)[0].endswith("…") and len(last_lines("x" * 500)[0]) == 240
    assert last_lines("") == [] and last_lines("a\n", 0) == []


@pytest.mark.parametrize("output", [
    "socket.gaierror: [Errno -3] Temporary failure in name resolution",
    "ssh: Could not resolve hostname github.com: Name or service not known",
    "curl: (6) Could not resolve host: example.com",
    "fatal: unable to access 'https://github.com/a/b/': Could not resolve host: github.com",
    "socket.gaierror: getaddrinfo failed",
    "npm ERR! request to https://registry.npmjs.org/left-pad failed, reason: getaddrinfo ENOTFOUND registry.npmjs.org",
    "npm ERR! code EAI_AGAIN",
    "WARNING: Retrying ... NewConnectionError('<pip._vendor.urllib3.connection.HTTPSConnection object>: "
    "Failed to establish a new connection: [Errno -3] Temporary failure in name resolution')",
    "psycopg.OperationalError: connection failed: Connection refused",
    "Error: connect ECONNREFUSED 127.0.0.1:5432",
    "OSError: [Errno 101] Network is unreachable",
    "dial tcp: lookup proxy.golang.org on [::1]:53: read udp: connection refused",
])
def test_the_network_note_is_a_function_of_a_failed_offline_steps_output(output: str) -> None:
    note = network_note("validate", "failed", f"collecting...\n{output}\n")
    assert note.startswith("This step has no network by design: validate steps run offline")
    assert "Move downloads" in note and "to setup" in note
    assert network_note("analysis", "timed_out", output)


def test_no_network_note_without_a_sign_for_a_step_with_network_or_for_a_passing_step() -> None:
    assert network_note("validate", "failed", "AssertionError: assert 1 == 2\n") == ""
    assert network_note("setup", "failed", "Could not resolve host: pypi.org") == ""  # setup has the network
    assert network_note("validate", "passed", "warning: Connection refused, retried: ok") == ""
    assert network_note("ui", "failed", "Connection refused") == ""


def test_a_step_result_carries_the_note_however_it_is_made() -> None:
    step = StepResult("pip install -r req.txt", "validate", "failed", 1.0, 1, "Could not resolve host: pypi.org\n")
    assert step.note.startswith("This step has no network by design")
    assert step.__dict__["note"] == step.note  # stored with the run's results (service.py keeps step.__dict__)
    assert StepResult(**step.__dict__) == step  # and read back
    assert StepResult("tests", "validate", "passed", 1.0, 0, "Could not resolve host").note == ""
    assert StepResult("tests", "validate", "failed", 1.0, 1, "x", note="told otherwise").note == "told otherwise"


def test_setup_steps_are_named_after_their_commands() -> None:
    commands = ["pip install -r requirements.txt", "npm ci", "npm ci",
                "python -m venv .venv && .venv/bin/pip install --requirement requirements-dev.txt",
                "\n  make   deps\nmake more\n"]
    names = setup_step_names(commands)
    assert names == ["pip install -r requirements.txt", "npm ci", "npm ci (2)",
                     "python -m venv .venv && .venv/bin/pip i…", "make deps"]
    assert setup_step_names(["npm ci"]) == ["npm ci"]
    # one naming for the runner, the planned steps (the validation page) and every report
    assert [p["name"] for p in planned_steps(EffectiveConfig(setup=tuple(commands)))][1:6] == names


def test_findings_belong_to_the_one_analysis_step_or_to_none_when_several_ran() -> None:
    found = [finding(1, "E1", "x")]
    one = [*STEPS[:4], StepResult("mypy", "analysis", "skipped", 0.0), STEPS[4]]
    assert findings_by_step(one, found) == {"ruff": found}
    two = [*STEPS[:4], StepResult("mypy", "analysis", "passed", 1.0), STEPS[4]]
    assert findings_by_step(two, found) == {UNKNOWN_STEP: found}
    assert findings_by_step(STEPS, []) == {}


def test_the_json_report_has_the_documented_shape() -> None:
    shots = [(Screenshot("/", "a" * 32 + ".png", 1280, 720), "/tmp/shots/a.png")]
    document = json.loads(json_report(a_run(STEPS, findings={"ruff": [finding(3, "E501", "Line too long")]},
                                            screenshots=shots)))
    assert set(document) == {"format", "commit", "conclusion", "title", "duration_seconds", "duration", "notes",
                             "steps", "findings", "screenshots"}
    assert (document["format"], document["conclusion"], document["duration"]) == (1, "failure", "8m 32s")
    pytest_step = document["steps"][2]
    assert pytest_step == {"name": "pytest", "stage": "validate", "state": "passed", "exit_code": 0,
                           "duration_seconds": 500.0, "duration": "8m 20s", "detail": "", "note": "",
                           "tail": "tests/test_4.py ....\ntests/test_5.py ....\ntests/test_6.py ....\n"
                                   "tests/test_7.py ....\n==== 297 passed in 4.21s ====", "findings": []}
    curl = document["steps"][3]
    assert curl["state"] == "failed" and curl["exit_code"] == 6 and "no network by design" in curl["note"]
    assert curl["tail"] == "curl: (6) Could not resolve host: example.com"
    assert document["steps"][4]["findings"] == [{"path": "app.py", "line": 3, "end_line": 3, "level": "failure",
                                                  "rule": "E501", "message": "Line too long"}]
    assert document["findings"][0]["step"] == "ruff"
    assert document["screenshots"] == [{"page": "/", "file": "/tmp/shots/a.png", "width": 1280, "height": 720}]


# --- the command, as a process -------------------------------------------------------------------

def test_codegenapp_alone_prints_the_help_with_examples(tmp_path: Path) -> None:
    result = codegenapp(env=cli_env(tmp_path))
    assert result.returncode == 1 and result.stderr == ""  # as git does: help, and 1 since nothing was done
    assert result.stdout.startswith("usage: codegenapp")
    for command in ("serve", "worker", "migrate", "projects", "validate", "secrets"):
        assert f"\n    {command} " in result.stdout
    examples = result.stdout.split("\nexamples:\n", 1)[1]
    assert "codegenapp validate --format json" in examples and "codegenapp serve" in examples
    helped = codegenapp("validate", "--help", env=cli_env(tmp_path))
    assert helped.returncode == 0 and "--format {text,markdown,json}" in helped.stdout
    assert "NO_COLOR" in helped.stdout and "examples:" in helped.stdout


def test_validate_as_json_that_could_not_start_still_prints_a_document(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    nowhere = codegenapp("validate", str(tmp_path / "nowhere"), "--format", "json", "--no-snapshots", env=env)
    commit(tmp_path / "bad", {".github/codegenapp.yml": "validate: 3\n", "app.py": "x = 1\n"})
    invalid = codegenapp("validate", str(tmp_path / "bad"), "--format", "json", "--no-snapshots", env=env)
    for result in (nowhere, invalid):
        assert result.returncode == 2, result
        document = json.loads(result.stdout)
        assert set(document) == {"format", "error"} and document["format"] == 1
        assert document["error"] and f"codegenapp: {document['error']}" in result.stderr


CONFIG = """\
setup:
  - mkdir -p .venv && touch .venv/ready
  - echo "installed 3 packages"
validate:
  - name: tests
    run: "for i in 1 2 3 4 5 6 7; do echo line $i; done; echo '==== 297 passed in 4.21s ===='"
  - python3 -c "import socket; socket.getaddrinfo('pypi.org', 443)"
analysis:
  - cat report.sarif
"""
SARIF = json.dumps({"version": "2.1.0", "runs": [{"tool": {"driver": {"name": "ruff"}}, "results": [
    {"ruleId": "E501", "level": "error", "message": {"text": "Line too long (120 > 100)"},
     "locations": [{"physicalLocation": {"artifactLocation": {"uri": "app.py"}, "region": {"startLine": 1}}}]}]}]})


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    commit(path, {".github/codegenapp.yml": CONFIG, "report.sarif": SARIF, "app.py": "x = 1\n"})
    return path


@needs_bwrap
def test_validate_as_json_and_as_markdown(repo: Path, tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    result = codegenapp("validate", str(repo), "--format", "json", "--no-snapshots", env=env)
    assert result.returncode == 1, result.stderr
    assert "running tests (validate)" in result.stderr and "running echo \"installed 3 packages\" (setup)" in result.stderr
    document = json.loads(result.stdout)
    steps = {step["name"]: step for step in document["steps"]}
    assert [(s["stage"], s["name"], s["state"]) for s in document["steps"]] == [
        ("checkout", "checkout", "passed"), ("setup", "mkdir -p .venv && touch .venv/ready", "passed"),
        ("setup", 'echo "installed 3 packages"', "passed"), ("validate", "tests", "passed"),
        ("validate", "python3", "failed"), ("analysis", "cat", "failed")]
    assert steps["tests"]["tail"].endswith("line 7\n==== 297 passed in 4.21s ====")
    assert steps["python3"]["note"].startswith("This step has no network by design")
    assert steps["cat"]["findings"][0]["rule"] == "E501" and document["conclusion"] == "failure"
    assert document["commit"] == (repo / ".git/refs/heads/main").read_text().strip()

    markdown = codegenapp("validate", str(repo), "--format", "markdown", "--no-snapshots", env=env)
    assert markdown.returncode == 1
    assert markdown.stdout.startswith(document["title"] + "\n") and "| Stage | Step | Result | Duration |" in markdown.stdout
    assert "\x1b" not in markdown.stdout and "app.py:1: failure: Line too long" in markdown.stdout
    piped = codegenapp("validate", str(repo), "--no-snapshots", env=env)  # not a terminal: Markdown by default
    assert piped.stdout.split("\n", 1)[0] == document["title"]


@needs_bwrap
def test_validate_on_a_terminal_is_coloured_unless_no_color(repo: Path, tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    code, shown, stderr = codegenapp_in_terminal("validate", str(repo), env=env, columns=90)
    assert code == 1, stderr
    assert "\x1b[32m\x1b[1m✓\x1b[0m" in shown and "\x1b[31m\x1b[1m✗\x1b[0m" in shown
    plain = ANSI.sub("", shown)
    assert "| Stage |" not in plain  # not the Markdown
    assert re.search(r"✓  validate  tests +Passed +\d+\.\ds\n +│ line 4\n", plain)
    assert "│ ==== 297 passed in 4.21s ====\n" in plain
    assert "note: This step has no network by design" in plain
    assert re.search(r"✗  analysis  cat +Failed +\d+\.\ds  1 finding on changed lines\n +app\.py:1 E501 Line too long",
                     plain)
    assert all(len(line) <= 90 for line in plain.split("\n") if "note" in line or "network" in line)

    code, no_colour, _ = codegenapp_in_terminal("validate", str(repo), env={**env, "NO_COLOR": "1"})
    assert code == 1 and "\x1b" not in no_colour and "✓  validate  tests" in no_colour
    code, forced_markdown, _ = codegenapp_in_terminal("validate", str(repo), "--format", "markdown", env=env)
    assert "| Stage | Step | Result | Duration |" in forced_markdown and "\x1b[" not in forced_markdown


@needs_bwrap
@pytest.mark.slow
def test_validate_keeps_the_ui_checks_screenshots_per_commit_and_lists_their_files(tmp_path: Path) -> None:
    repo = tmp_path / "site"
    sha = commit(repo, {**app_files(), ".github/codegenapp.yml": ui_config("    - path: /\n    - path: /about\n")})
    env = cli_env(tmp_path)
    shots = tmp_path / "shots"
    stale = shots / sha[:12] / "old.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"an earlier run's")

    result = codegenapp("validate", str(repo), "--format", "json", "--screenshots", str(shots), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    listed = json.loads(result.stdout)["screenshots"]
    assert [shot["page"] for shot in listed] == ["/", "/about"]
    for shot in listed:
        assert Path(shot["file"]).parent == shots / sha[:12]
        assert Path(shot["file"]).read_bytes().startswith(b"\x89PNG") and shot["width"] == 1280
    assert not stale.exists()  # the commit's directory was emptied first

    code, shown, stderr = codegenapp_in_terminal("validate", str(repo), env={**env, "NO_COLOR": "1"})
    assert code == 0, stderr
    default_dir = tmp_path / "cache" / "codegenapp" / "screenshots" / sha[:12]
    listing = shown.split("\nScreenshots\n", 1)[1].strip().split("\n")
    assert [line.split()[0] for line in listing] == ["/", "/about"]
    assert all(Path(line.split()[1]).parent == default_dir and Path(line.split()[1]).is_file() for line in listing)
