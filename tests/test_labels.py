"""The words people read for stored values (bot/labels.py)."""

import pytest

from bot import labels


@pytest.mark.parametrize(("status", "conclusion", "label"), [
    ("queued", None, "Queued"), ("in_progress", None, "Running"), ("waiting", None, "Waiting for approval"),
    ("completed", "success", "Passed"), ("completed", "failure", "Failed"),
    ("completed", "action_required", "Action required"), ("completed", "timed_out", "Timed out"),
    ("completed", "brand_new_value", "Brand new value"), ("superseded", None, "Superseded"),
])
def test_validation_states_read_as_words(status: str, conclusion: str | None, label: str) -> None:
    assert labels.validation_state(status, conclusion) == label


@pytest.mark.parametrize(("seconds", "text"), [
    (0.42, "0.4s"), (12.4, "12s"), (60, "1m"), (500, "8m 20s"), (3600, "1h"), (3900, "1h 5m"),
    (float("nan"), "0.0s"), (float("inf"), "0.0s"), (-3, "0.0s"), (None, "0.0s"), (9.94, "9.9s"), (9.96, "10s"),
    (59.6, "1m"), (72.3, "1m 12s"), (3599.6, "1h"),
])
def test_durations_read_like_github_actions(seconds: float | None, text: str) -> None:
    assert labels.duration(seconds) == text


def test_who_triggered_a_run_reads_as_a_sentence() -> None:
    assert labels.triggered("command.validate", "dev-alice") == "by @dev-alice via /validate"
    assert labels.triggered("pull_request.synchronize", None) == "via a push"
    assert labels.trigger("check_run.requested_action") == "a check-run button"
    assert "_" not in labels.trigger("something_new.happened") and "." not in labels.trigger("x.y")
    assert labels.agent_status("awaiting_confirmation") == "Waiting for confirmation"
