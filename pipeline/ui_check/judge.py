"""What the UI check saw, and whether it passes: pure functions of plain data (no browser, no I/O).

Rules, per page:

* the page loaded, with an HTTP status below 400;
* every step ran (the first failing step ends the page's flow and is named);
* no uncaught page error and no console error;
* the page kept answering: a call into it that does not return in time (its script in an endless loop,
  say) fails it as "stopped answering";
* no failed request to the app's own origin: a network error or a status of 400 or more. A failed
  `/favicon.ico` is not an error (browsers ask for it whether the app has one or not), and neither
  is a request to any other origin: those are blocked on purpose (the app under test has no network)
  and only listed;
* accessibility (axe-core): violations are listed by impact; with `accessibility: enforce` a critical
  or serious one fails the page. When the checker is not installed, that is said, and nothing fails.

Console messages Chromium writes for a failed load ("Failed to load resource: ...") are about a
request: they count through the request rules above, not as console errors of their own.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from bot import labels
from pipeline.results import Screenshot, StepResult
from pipeline.ui_check.proxy import Origin

IMPACTS = ("critical", "serious", "moderate", "minor")
ENFORCED_IMPACTS = ("critical", "serious")
RESOURCE_ERROR = "Failed to load resource"
MAX_LISTED = 10  # console errors, requests, violations shown per page
STEP_NAME = "UI check"


@dataclass(frozen=True)
class StepFailure:
    index: int  # 1-based; 0 is the page's own expect_text
    description: str
    message: str


@dataclass(frozen=True)
class ConsoleEntry:
    text: str
    url: str = ""  # where it came from (for a failed load: the resource)


@dataclass(frozen=True)
class RequestFailure:
    url: str
    reason: str  # "HTTP 404" or a network error such as "net::ERR_CONNECTION_RESET"


@dataclass(frozen=True)
class Violation:
    rule: str
    impact: str
    help: str
    nodes: int
    help_url: str = ""


@dataclass
class PageObservation:
    path: str
    url: str
    status: int | None = None
    load_error: str | None = None
    load_seconds: float = 0.0
    failed_step: StepFailure | None = None
    console_errors: list[ConsoleEntry] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed_requests: list[RequestFailure] = field(default_factory=list)
    accessibility: list[Violation] | None = None  # None: not checked
    accessibility_note: str = ""
    screenshot: Screenshot | None = None
    stalled: str | None = None  # a call into the loaded page that did not return (its script kept it busy)


@dataclass
class UiOutcome:
    pages: list[PageObservation] = field(default_factory=list)
    problem: str | None = None  # the app did not answer, the browser did not start or stalled: the check failed
    app_output: str = ""  # its output's tail
    accessibility_note: str = ""  # why accessibility was not checked
    browser_note: str = ""  # how the browser was isolated (pipeline/ui_check/check.py browser_isolation)

    @property
    def screenshots(self) -> list[Screenshot]:
        return [p.screenshot for p in self.pages if p.screenshot is not None]


def is_favicon(url: str) -> bool:
    return urlsplit(url).path == "/favicon.ico"


def same_origin(url: str, origin: Origin) -> bool:
    """Whether `url` is on `origin` (a URL that does not parse is not)."""
    try:
        return Origin.of(url) == origin
    except ValueError:
        return False


def failed_requests(page: PageObservation, origin: Origin) -> list[RequestFailure]:
    """The page's failed requests that count: to the app's origin, not the favicon, not the page itself
    (its status is judged on its own)."""
    return [r for r in page.failed_requests
            if same_origin(r.url, origin) and not is_favicon(r.url) and r.url != page.url]


def blocked_requests(page: PageObservation, origin: Origin) -> list[str]:
    """Requests to other origins (refused on purpose), each once."""
    return list(dict.fromkeys(r.url for r in page.failed_requests if not same_origin(r.url, origin)))


def console_errors(page: PageObservation, origin: Origin) -> list[ConsoleEntry]:
    requested = {r.url for r in page.failed_requests}
    kept = []
    for entry in page.console_errors:
        if entry.text.startswith(RESOURCE_ERROR) and (
                is_favicon(entry.url) or entry.url in requested or not same_origin(entry.url, origin)):
            continue
        kept.append(entry)
    return kept


def violations_by_impact(violations: Sequence[Violation]) -> dict[str, list[Violation]]:
    grouped: dict[str, list[Violation]] = {impact: [] for impact in IMPACTS}
    for v in violations:
        grouped.setdefault(v.impact if v.impact in IMPACTS else "minor", []).append(v)
    return {impact: found for impact, found in grouped.items() if found}


def page_problems(page: PageObservation, origin: Origin, *, enforce: bool) -> list[str]:
    """Why the page fails, one sentence each; empty when it passes."""
    problems = []
    if page.load_error is not None:
        problems.append(f"did not load: {page.load_error}")
    elif page.status is not None and page.status >= 400:
        problems.append(f"answered HTTP {page.status}")
    if page.failed_step is not None:
        step = page.failed_step
        where = "expect_text" if step.index == 0 else f"step {step.index} ({step.description})"
        problems.append(f"{where}: {step.message}")
    if page.stalled is not None:
        problems.append(f"stopped answering: {page.stalled}")
    problems += [f"uncaught error: {e}" for e in page.page_errors[:MAX_LISTED]]
    problems += [f"console error: {_console(e)}" for e in console_errors(page, origin)[:MAX_LISTED]]
    problems += [f"request failed: {r.url} ({r.reason})" for r in failed_requests(page, origin)[:MAX_LISTED]]
    if enforce and page.accessibility:
        serious = [v for v in page.accessibility if v.impact in ENFORCED_IMPACTS]
        problems += [f"accessibility ({v.impact}): {v.help} [{v.rule}, {v.nodes} element(s)]" for v in serious]
    return problems


def _console(entry: ConsoleEntry) -> str:
    return entry.text + (f" ({entry.url})" if entry.url and entry.url not in entry.text else "")


def judge(pages: Sequence[PageObservation], origin: Origin, *, enforce: bool) -> tuple[bool, str]:
    """(passed, the step's detail: "3 pages passed", "1 of 3 pages failed: /login")."""
    failing = [p.path for p in pages if page_problems(p, origin, enforce=enforce)]
    if not failing:
        return True, f"{len(pages)} page{'s' if len(pages) != 1 else ''} passed"
    listed = ", ".join(failing[:3]) + (f" and {len(failing) - 3} more" if len(failing) > 3 else "")
    return False, f"{len(failing)} of {len(pages)} pages failed: {listed}"


def render(pages: Sequence[PageObservation], origin: Origin, *, enforce: bool) -> str:
    """The UI step's text: each page with its status, load time, problems, blocked requests and
    accessibility summary."""
    blocks = []
    for page in pages:
        problems = page_problems(page, origin, enforce=enforce)
        status = f"HTTP {page.status}" if page.status is not None else "no response"
        mark = "✗" if problems else "✓"
        lines = [f"{mark} {page.path} — {status}, loaded in {labels.duration(page.load_seconds)}"]
        lines += [f"  {p}" for p in problems]
        blocked = blocked_requests(page, origin)
        if blocked:
            lines.append(f"  blocked (outside the app): {', '.join(blocked[:MAX_LISTED])}"
                         + (f" and {len(blocked) - MAX_LISTED} more" if len(blocked) > MAX_LISTED else ""))
        lines.append(f"  accessibility: {accessibility_summary(page)}")
        blocks.append("\n".join(lines))
    return "\n".join(blocks) + "\n"


def accessibility_summary(page: PageObservation) -> str:
    if page.accessibility is None:
        return page.accessibility_note or "not checked"
    if not page.accessibility:
        return "no violations"
    grouped = violations_by_impact(page.accessibility)
    counts = ", ".join(f"{len(found)} {impact}" for impact, found in grouped.items())
    rules = ", ".join(v.rule for found in grouped.values() for v in found)
    return f"{counts} ({rules})"


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) of a PNG; ValueError when `data` is not one."""
    if len(data) < 24 or data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ValueError("not a PNG image")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def step_result(outcome: UiOutcome, origin: Origin, *, enforce: bool, duration: float) -> StepResult:
    """The UI check as one step of the run: its status, a one-line detail and the text a maintainer
    reads (each page, and the app's output when something failed)."""
    app_output = outcome.app_output.strip()
    output_section = f"\nThe app's output (last lines):\n{app_output}\n" if app_output else \
        "\nThe app printed nothing.\n"
    if outcome.browser_note:
        output_section += f"\n{outcome.browser_note}\n"
    if outcome.problem is not None:  # with the pages checked before it, if any
        checked = f"\n{render(outcome.pages, origin, enforce=enforce)}" if outcome.pages else ""
        return StepResult(STEP_NAME, "ui", "failed", duration,
                          output_tail=f"{outcome.problem}\n{checked}{output_section}", detail=outcome.problem)
    passed, detail = judge(outcome.pages, origin, enforce=enforce)
    counts = accessibility_counts(outcome.pages)
    checked = sum(p.accessibility is not None for p in outcome.pages)
    ran_on = f" (axe-core ran on {checked} of {len(outcome.pages)} pages)" if checked < len(outcome.pages) else ""
    if counts:
        detail += f"; accessibility: {counts}{ran_on}"
    elif checked:
        detail += f"; no accessibility violations{ran_on}"
    elif outcome.accessibility_note:
        detail += "; accessibility not checked"
    text = render(outcome.pages, origin, enforce=enforce)
    if not passed:
        text += output_section
    elif outcome.browser_note:
        text += f"\n{outcome.browser_note}\n"
    return StepResult(STEP_NAME, "ui", "passed" if passed else "failed", duration, output_tail=text, detail=detail)


def accessibility_counts(pages: Sequence[PageObservation]) -> str:
    """"2 serious, 1 moderate" over all pages ("" when none was found or nothing was checked)."""
    grouped = violations_by_impact([v for p in pages for v in p.accessibility or ()])
    return ", ".join(f"{len(found)} {impact}" for impact, found in grouped.items())
