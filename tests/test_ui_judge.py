"""The UI check's judging and report text, on plain data (no browser)."""

import struct
import zlib

import pytest

from pipeline.ui_check.judge import (ConsoleEntry, PageObservation, RequestFailure, StepFailure, UiOutcome, Violation,
                               judge, page_problems, png_size, render, step_result)
from pipeline.ui_check.proxy import Origin

ORIGIN = Origin.of("http://127.0.0.1:8080")


def loaded(path: str = "/", **fields) -> PageObservation:
    values = {"status": 200, "load_seconds": 0.25, "accessibility": [], **fields}
    return PageObservation(path=path, url=f"http://127.0.0.1:8080{path}", **values)


def test_a_clean_page_passes() -> None:
    assert page_problems(loaded(), ORIGIN, enforce=True) == []
    assert judge([loaded("/"), loaded("/about")], ORIGIN, enforce=True) == (True, "2 pages passed")


def test_status_load_error_and_failed_step_are_named() -> None:
    assert page_problems(loaded(status=500), ORIGIN, enforce=False) == ["answered HTTP 500"]
    page = PageObservation(path="/", url="http://127.0.0.1:8080/", load_error="net::ERR_CONNECTION_RESET")
    assert page_problems(page, ORIGIN, enforce=False) == ["did not load: net::ERR_CONNECTION_RESET"]
    failed = loaded(failed_step=StepFailure(2, 'click button "Sign in"', 'no button named "Sign in" within 10 s'))
    assert page_problems(failed, ORIGIN, enforce=False) == \
        ['step 2 (click button "Sign in"): no button named "Sign in" within 10 s']
    own_text = loaded(failed_step=StepFailure(0, 'expect text "Hi"', 'text "Hi" not found on the page within 5 s'))
    assert page_problems(own_text, ORIGIN, enforce=False) == ['expect_text: text "Hi" not found on the page within 5 s']


def test_console_and_page_errors_fail() -> None:
    page = loaded(console_errors=[ConsoleEntry("chart is undefined", "http://127.0.0.1:8080/app.js")],
                  page_errors=["TypeError: x is not a function"])
    assert page_problems(page, ORIGIN, enforce=False) == [
        "uncaught error: TypeError: x is not a function",
        "console error: chart is undefined (http://127.0.0.1:8080/app.js)"]


def test_the_favicon_and_other_origins_are_not_errors_but_same_origin_failures_are() -> None:
    page = loaded(
        failed_requests=[RequestFailure("http://127.0.0.1:8080/favicon.ico", "HTTP 404"),
                         RequestFailure("https://cdn.example.com/lib.js", "net::ERR_BLOCKED_BY_CLIENT"),
                         RequestFailure("http://127.0.0.1:3001/health", "net::ERR_BLOCKED_BY_CLIENT"),
                         RequestFailure("http://127.0.0.1:8080/api/items", "HTTP 502"),
                         RequestFailure("http://127.0.0.1:8080/", "HTTP 200?")],  # the page itself: judged by status
        console_errors=[ConsoleEntry("Failed to load resource: the server responded with a status of 404",
                                     "http://127.0.0.1:8080/favicon.ico"),
                        ConsoleEntry("Failed to load resource: net::ERR_BLOCKED_BY_CLIENT",
                                     "https://cdn.example.com/lib.js"),
                        ConsoleEntry("Failed to load resource: the server responded with a status of 502",
                                     "http://127.0.0.1:8080/api/items")])
    assert page_problems(page, ORIGIN, enforce=False) == ["request failed: http://127.0.0.1:8080/api/items (HTTP 502)"]
    text = render([page], ORIGIN, enforce=False)
    assert "blocked (outside the app): https://cdn.example.com/lib.js, http://127.0.0.1:3001/health" in text


def test_a_resource_error_without_a_matching_request_still_counts() -> None:
    page = loaded(console_errors=[ConsoleEntry("Failed to load resource: net::ERR_FAILED",
                                               "http://127.0.0.1:8080/worker.js")])
    assert page_problems(page, ORIGIN, enforce=False) == \
        ["console error: Failed to load resource: net::ERR_FAILED (http://127.0.0.1:8080/worker.js)"]


VIOLATIONS = [Violation("image-alt", "critical", "Images must have alternative text", 2),
              Violation("color-contrast", "serious", "Elements must meet contrast ratio thresholds", 5),
              Violation("region", "moderate", "All page content should be contained by landmarks", 1)]


def test_accessibility_is_reported_by_impact_and_fails_only_when_enforced() -> None:
    page = loaded(accessibility=VIOLATIONS)
    assert page_problems(page, ORIGIN, enforce=False) == []
    assert page_problems(page, ORIGIN, enforce=True) == [
        "accessibility (critical): Images must have alternative text [image-alt, 2 element(s)]",
        "accessibility (serious): Elements must meet contrast ratio thresholds [color-contrast, 5 element(s)]"]
    assert page_problems(loaded(accessibility=VIOLATIONS[2:]), ORIGIN, enforce=True) == []
    assert "accessibility: 1 critical, 1 serious, 1 moderate (image-alt, color-contrast, region)" in \
        render([page], ORIGIN, enforce=False)


def test_the_step_names_failing_pages_and_adds_the_apps_output() -> None:
    outcome = UiOutcome(pages=[loaded("/"), loaded("/report", status=500), loaded("/x", accessibility=VIOLATIONS)],
                        app_output='"GET /report HTTP/1.1" 500 -\n')
    result = step_result(outcome, ORIGIN, enforce=False, duration=3.5)
    assert (result.name, result.stage, result.status) == ("UI check", "ui", "failed")
    assert result.detail == "1 of 3 pages failed: /report; accessibility: 1 critical, 1 serious, 1 moderate"
    assert result.output_tail.startswith("✓ / — HTTP 200, loaded in 0.2s\n")
    assert "✗ /report — HTTP 500" in result.output_tail
    assert result.output_tail.endswith("The app's output (last lines):\n\"GET /report HTTP/1.1\" 500 -\n")


def test_a_passing_step_and_an_unavailable_checker() -> None:
    clean = step_result(UiOutcome(pages=[loaded()]), ORIGIN, enforce=True, duration=1)
    assert (clean.status, clean.detail) == ("passed", "1 page passed; no accessibility violations")
    assert "The app's output" not in clean.output_tail
    stuck = PageObservation(path="/busy", url="http://127.0.0.1:8080/busy", status=200,
                            stalled="axe-core's accessibility check did not return within 60 s")
    partly = step_result(UiOutcome(pages=[loaded(), stuck]), ORIGIN, enforce=False, duration=1)
    assert (partly.status, partly.detail) == ("failed", "1 of 2 pages failed: /busy; no accessibility violations "
                                              "(axe-core ran on 1 of 2 pages)")
    assert "stopped answering: axe-core's accessibility check did not return within 60 s" in partly.output_tail
    stalled = step_result(UiOutcome(pages=[loaded()], problem="the UI check stopped, Chromium stalled: opening a "
                                    "page for /about did not return within 30 s (after 1 of 2 pages)"),
                          ORIGIN, enforce=False, duration=1)
    assert stalled.status == "failed" and stalled.detail.startswith("the UI check stopped, Chromium stalled")
    assert "✓ / — HTTP 200" in stalled.output_tail  # the page checked before it is reported too
    unchecked = PageObservation(path="/", url="http://127.0.0.1:8080/", status=200,
                                accessibility_note="not checked: axe-core is not installed on the app's host")
    result = step_result(UiOutcome(pages=[unchecked], accessibility_note="not checked: ..."), ORIGIN,
                         enforce=True, duration=1)
    assert (result.status, result.detail) == ("passed", "1 page passed; accessibility not checked")
    assert "accessibility: not checked: axe-core is not installed" in result.output_tail


def test_an_app_that_did_not_answer() -> None:
    result = step_result(UiOutcome(problem="the app did not answer at http://127.0.0.1:8080 within 2 s"), ORIGIN,
                         enforce=False, duration=2)
    assert (result.status, result.detail) == ("failed", "the app did not answer at http://127.0.0.1:8080 within 2 s")
    assert result.output_tail.endswith("The app printed nothing.\n")


def test_without_axe_core_accessibility_is_not_checked(tmp_path) -> None:
    from pipeline.ui_check.check import AXE_SCRIPT, axe_source
    assert axe_source(tmp_path / "missing.js") == (None, "not checked: axe-core is not installed on the app's host "
                                                         "(make install)")
    if AXE_SCRIPT.exists():
        script, note = axe_source(AXE_SCRIPT)
        assert note == "" and script.startswith("/*! axe v4.")


def test_png_size() -> None:
    ihdr = struct.pack(">IIBBBBB", 1280, 800, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    assert png_size(png) == (1280, 800)
    with pytest.raises(ValueError):
        png_size(b"GIF89a" + b"\0" * 30)
