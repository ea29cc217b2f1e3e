"""What the validation page shows, decided from the stored validation as plain data (no I/O): every
step with its state and duration, which ones are open, their logs (bounded, numbered), the last lines
of a passing validate or analysis step (its summary shows the last, pytest's "297 passed in 4.21s",
while the step is folded), an analysis step's findings, and what a waiting or neutral run asks of a
person. dashboard/validation.py renders it (templates/validation.html) and serves its live part as JSON."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from markupsafe import Markup, escape

from bot import labels
from bot.models import seconds_between
from pipeline.report.text import PASSING_TAIL_LINES, last_lines
from pipeline.results import LISTED_FINDINGS

LOG_LINES = 500  # of a step's log shown at first; "Show all" shows the rest
LEVEL_ORDER = {"failure": 0, "warning": 1, "notice": 2}
LEVEL_WORDS = {"failure": "fails the check", "warning": "warning", "notice": "notice"}
FAILED_STATES = ("failed", "timed_out")
STAGE_WORDS = {"checkout": "checkout", "setup": "setup", "validate": "validate", "analysis": "analysis",
               "ui": "UI check"}
ICONS = labels.STEP_MARKS
CONFIG_EXAMPLE = """\
setup:
  - pip install -e .
validate:
  - name: tests
    run: pytest -q
  - name: lint
    run: ruff check .
"""
# a slash command or the config file's path, in a text a person reads: kept on one line, as code
_CODE_WORDS = re.compile(r"(?<![\w/])(/[a-z][a-z-]*[a-z]|\.github/codegenapp\.yml)(?![\w/-])")


@dataclass(frozen=True)
class Finding:
    """One analysis finding: where (file:line), which rule, what, and its level (a failure fails the check)."""

    where: str
    rule: str
    message: str
    level: str = "failure"

    @property
    def level_label(self) -> str:
        return LEVEL_WORDS.get(self.level, self.level)


@dataclass(frozen=True)
class StepRow:
    key: str  # the row's anchor, `step-3`
    name: str
    stage: str
    state: str  # pending, running, or a StepResult status
    duration: str  # "8m 20s"; "" while pending
    detail: str = ""
    note: str = ""  # a hint for the reader, such as why an offline step may have failed
    log: list[tuple[int, str]] = field(default_factory=list)  # (line number, text), the last LOG_LINES
    log_lines: int = 0  # how many lines the log has in all
    findings: list[Finding] = field(default_factory=list)
    more_findings: str = ""  # "... and 12 more": what the list leaves out
    open: bool = False
    tail: list[str] = field(default_factory=list)  # a passing validate or analysis step's last lines, cleaned

    @property
    def last_line(self) -> str:
        """What the folded row says it printed last ("297 passed in 4.21s"); "" when nothing."""
        return self.tail[-1] if self.tail else ""

    @property
    def state_label(self) -> str:
        return labels.step_state(self.state)

    @property
    def stage_label(self) -> str:
        """The stage, unless the step's name says it already (`checkout`, `UI check`)."""
        words = STAGE_WORDS.get(self.stage, self.stage)
        return "" if words.lower() == self.name.lower() else words

    @property
    def icon(self) -> str:
        return ICONS.get(self.state, "•")

    @property
    def log_cut(self) -> bool:
        return self.log_lines > len(self.log)

    def as_json(self) -> dict[str, Any]:
        """For the live poll (validation-live.js): what changes while the run goes on."""
        return {"key": self.key, "name": self.name, "state": self.state, "state_label": self.state_label,
                "icon": self.icon, "duration": self.duration}


@dataclass(frozen=True)
class Notice:
    """Why a run did not run its steps, and what a person can do about it."""

    kind: str  # waiting, no_config, error
    heading: str
    text: str
    example: str = ""


def numbered_lines(text: str, *, limit: int | None = LOG_LINES) -> tuple[list[tuple[int, str]], int]:
    """The last `limit` lines of `text` (all with None), numbered from 1 at its first line, and how many
    lines it has."""
    lines = text.rstrip("\n").split("\n") if text.strip() else []
    start = 0 if limit is None else max(0, len(lines) - limit)
    return [(number, line) for number, line in enumerate(lines[start:], start=start + 1)], len(lines)


_FINDING = re.compile(r"^(?P<path>[^\s:][^:\n]*):(?P<line>\d+) (?P<rest>.+)$")
_RULE = re.compile(r"^[A-Za-z][\w./:-]*$")
_MORE = re.compile(r"^\.\.\. and \d+ more\b")


def _looks_like_rule(token: str) -> bool:
    """A rule id such as E501, no-unused-vars or python.lang.audit (a message's first word is none)."""
    return bool(_RULE.match(token)) and (any(c.isdigit() or c in "-./" for c in token) or token.isupper())


def _listed_findings(step: Mapping[str, Any]) -> tuple[list[Finding], str, int]:
    """The failing findings an analysis step's verdict listed at the top of its output
    (pipeline/validation/analysis_verdict.py: `path:line rule message` a line, "... and N more", then a
    blank line), what the list left out, and how many lines of the output the listing takes."""
    if step.get("stage") != "analysis" or step.get("status") != "failed" or "finding" not in str(step.get("detail")):
        return [], "", 0
    found: list[Finding] = []
    more, used = "", 0
    for line in str(step.get("output_tail", "")).split("\n"):
        if _MORE.match(line):
            more, used = line, used + 1
            continue
        match = _FINDING.match(line)
        if match is None:
            break
        first, _, rest = match["rest"].partition(" ")
        rule, message = (first, rest) if rest and _looks_like_rule(first) else ("", match["rest"])
        found.append(Finding(f"{match['path']}:{match['line']}", rule, message))
        used += 1
    return found, more, used


def findings_of(step: Mapping[str, Any], recorded: Sequence[Mapping[str, Any]] = ()) -> tuple[list[Finding], str]:
    """An analysis step's findings, failing ones first, and what the list leaves out ("... and 12
    more"): those the run recorded for it (`recorded`: pipeline/report/local.py's finding_json), else
    the failing ones its verdict listed in its output."""
    if step.get("stage") != "analysis":
        return [], ""
    if recorded:
        ordered = sorted(recorded, key=lambda f: LEVEL_ORDER.get(str(f.get("level")), len(LEVEL_ORDER)))
        found = [Finding(f"{f.get('path')}:{f.get('line')}", str(f.get("rule") or ""),
                         " ".join(str(f.get("message", "")).split()), str(f.get("level") or "failure"))
                 for f in ordered]
        left = len(found) - LISTED_FINDINGS
        return found[:LISTED_FINDINGS], f"... and {left} more (see the check run's annotations)" if left > 0 else ""
    found, more, _ = _listed_findings(step)
    return found, more


def _log_of(step: Mapping[str, Any]) -> str:
    """The step's output, without the findings its verdict listed at its top (the page lists them)."""
    text = str(step.get("output_tail") or "")
    _, _, used = _listed_findings(step)
    return "\n".join(text.split("\n")[used:]).lstrip("\n") if used else text


def with_code(text: str) -> Markup:
    """`text`, escaped, with its slash commands (`/ok-to-test`) and the config file's path as code that
    does not break across lines (a narrow screen would break `/ok-to-test` at its hyphens)."""
    parts = _CODE_WORDS.split(text)
    return Markup("").join(escape(part) if index % 2 == 0 else Markup('<code class="nowrap">%s</code>') % part
                           for index, part in enumerate(parts))


def passing_tail(step: Mapping[str, Any], count: int = PASSING_TAIL_LINES) -> list[str]:
    """The last lines a passing validate or analysis step printed (its stored output is masked, as a
    failing step's is), cleaned for display; [] for any other step."""
    if step.get("status") != "passed" or step.get("stage") not in ("validate", "analysis"):
        return []
    return last_lines(str(step.get("output_tail") or ""), count)


def _finished_row(index: int, step: Mapping[str, Any], recorded: Sequence[Mapping[str, Any]], *,
                  full_logs: bool) -> StepRow:
    findings, more = findings_of(step, recorded)
    log, total = numbered_lines(_log_of(step), limit=None if full_logs else LOG_LINES)
    status = str(step.get("status", "passed"))
    seconds = step.get("duration_seconds")
    took = "" if status == "skipped" and not seconds else labels.duration(seconds)
    return StepRow(f"step-{index}", str(step.get("name", "")), str(step.get("stage", "")), status, took,
                   str(step.get("detail") or ""), str(step.get("note") or ""),
                   log, total, findings, more, open=status in FAILED_STATES or shows_screenshots(step),
                   tail=passing_tail(step))


def shows_screenshots(step: Mapping[str, Any]) -> bool:
    """A passed UI check: its body holds the run's screenshots (validation.html), so it is open, where the
    other passing steps are closed; they are what a person opens a green run's page to see."""
    return step.get("stage") == "ui" and step.get("status") == "passed"


def _recorded_for(step: Mapping[str, Any], findings: Sequence[Mapping[str, Any]],
                  analysis_steps: Sequence[str]) -> list[Mapping[str, Any]]:
    """The run's stored findings that `step` found: those naming it; of a result stored before findings
    named their step, all of them when it was the only analysis step (with several, its page falls back
    to the failing findings its output lists)."""
    if step.get("stage") != "analysis":
        return []
    name = step.get("name")
    return [f for f in findings
            if f.get("step") == name or (not f.get("step") and len(analysis_steps) == 1)]


def _key(step: Mapping[str, Any]) -> tuple[str, str]:
    return str(step.get("stage", "")), str(step.get("name", ""))


def step_rows(steps: Sequence[Mapping[str, Any]], *, planned: Iterable[Mapping[str, Any]] = (),
              current: str | None = None, current_stage: str | None = None, current_elapsed: float | None = None,
              current_tail: str = "", running: bool = True, full_logs: bool = False,
              findings: Sequence[Mapping[str, Any]] = ()) -> list[StepRow]:
    """Every step of a run in order: those that ended (`steps`, as stored), the one running, then the
    planned ones still to come, pending. Of a run that ended without finishing (cancelled or
    superseded), the step that was running is cancelled and those to come were skipped. The failing
    steps, the running one and a passed UI check (its screenshots) are open; the others closed.
    `findings`: the run's, each under the analysis step its "step" names (_recorded_for)."""
    analysis_steps = [str(s.get("name")) for s in steps
                      if s.get("stage") == "analysis" and s.get("status") != "skipped"]
    rows = [_finished_row(index, step, _recorded_for(step, findings, analysis_steps), full_logs=full_logs)
            for index, step in enumerate(steps, start=1)]
    to_come = Counter(_key(p) for p in planned)
    to_come.subtract(_key(step) for step in steps)
    if current:
        to_come[(current_stage or "", current)] -= 1
        log, total = numbered_lines(current_tail)
        rows.append(StepRow(f"step-{len(rows) + 1}", current, current_stage or "",
                            "running" if running else "cancelled",
                            labels.duration(current_elapsed), log=log, log_lines=total, open=running))
    for step in planned:
        key = _key(step)
        if to_come[key] > 0:
            to_come[key] -= 1
            rows.append(StepRow(f"step-{len(rows) + 1}", key[1], key[0], "pending" if running else "skipped", ""))
    return rows


def elapsed_seconds(since: str | datetime | None, now: datetime) -> float | None:
    """Seconds from `since` (a datetime, or one as ISO text) to `now`; None when unknown."""
    if isinstance(since, str):
        try:
            since = datetime.fromisoformat(since)
        except ValueError:
            return None
    return None if since is None else seconds_between(since, now)


def notice_for(*, status: str, conclusion: str | None, title: str | None, has_steps: bool,
               author: str | None, repository: str, head_sha: str, error: str | None,
               config_path: str = ".github/codegenapp.yml", of_pull_request: bool = True) -> Notice | None:
    """Why the run shows no steps and what to do: a fork waiting for `/ok-to-test`, nothing to validate
    (no config), or an error that stopped it before its steps. `of_pull_request`: False for a merge
    queue's commit, which a new queueing validates again, not /validate."""
    if status == "waiting":
        person = f"@{author}" if author else "its author"
        return Notice("waiting", "Waiting for a maintainer to approve this run",
                      f"This pull request comes from a fork, and {person} has no write access to {repository}, "
                      f"so its code does not run until someone with write access comments /ok-to-test on the "
                      f"pull request. The approval holds for {head_sha[:7]} only: a new push needs a new "
                      "/ok-to-test.")
    if status == "completed" and conclusion == "neutral" and not has_steps:
        again = ("comment /validate on the pull request" if of_pull_request
                 else "add the pull request to the merge queue again")
        return Notice("no_config", "Nothing to validate",
                      f"{repository} has no {config_path} on its base branch, and the project's settings name no "
                      f"commands. Add the file to the default branch, for example (every key is optional), "
                      f"then {again}:", CONFIG_EXAMPLE)
    if error and not has_steps:
        return Notice("error", title or "The validation could not run", error)
    return None
