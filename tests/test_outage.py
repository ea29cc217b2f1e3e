"""Pure tests of bot.github.outage: the circuits that pause GitHub work while GitHub fails."""

import pytest

from bot.github.outage import WHOLE_APP, Admission, Outages, Verdict


def fail(outages: Outages, scope: str, now: float, admission: Admission, *, started: float | None = None) -> None:
    outages.failed(scope, now, admission, started=now if started is None else started, reason="GitHub answered 502")


def test_closed_until_a_request_fails_after_its_retries() -> None:
    outages = Outages()
    assert outages.admit("1", 0.0).verdict is Verdict.SEND
    outages.admit("1", 1.0)
    outages.answered("1", 1.0)
    assert outages.pauses(1.0) == []


def test_a_failure_pauses_the_scope_then_one_probe_goes_and_the_rest_wait_for_it() -> None:
    outages = Outages(min_cooldown=5.0, max_cooldown=60.0)
    first = outages.admit("1", 1.0)
    outages.admit("2", 2.0)
    outages.answered("2", 2.0)
    fail(outages, "1", 4.0, first, started=1.0)  # "2" was answered meanwhile: only "1" pauses

    refused = outages.admit("1", 6.0)
    assert (refused.verdict, refused.scope, refused.retry_after, refused.reason) == (
        Verdict.REFUSE, "1", 3.0, "GitHub answered 502")
    assert outages.admit("2", 6.0).verdict is Verdict.SEND  # other installations go on
    probe = outages.admit("1", 9.0)
    assert (probe.verdict, probe.scope) == (Verdict.PROBE, "1")
    assert outages.admit("1", 9.0).verdict is Verdict.WAIT
    [pause] = outages.pauses(9.5)
    assert (pause.scope, pause.since, pause.retry_in, pause.probing) == ("1", 1.0, 0.0, True)

    outages.answered("1", 9.5)
    assert outages.admit("1", 9.5).verdict is Verdict.SEND and outages.pauses(9.5) == []


def test_each_failed_probe_doubles_the_wait_up_to_the_maximum() -> None:
    outages = Outages(min_cooldown=5.0, max_cooldown=30.0)
    first = outages.admit("1", 0.0)
    outages.admit("2", 0.5)
    outages.answered("2", 0.5)
    now = 1.0
    fail(outages, "1", now, first, started=0.0)
    waits = []
    for _ in range(5):
        now += outages.circuits["1"].open_until - now
        probe = outages.admit("1", now)
        assert probe.verdict is Verdict.PROBE
        fail(outages, "1", now, probe)
        waits.append(outages.admit("1", now).retry_after)
    assert waits == [10.0, 20.0, 30.0, 30.0, 30.0]


def test_a_request_sent_before_the_pause_changes_nothing_when_it_fails_too() -> None:
    outages = Outages(min_cooldown=5.0)
    early, first = outages.admit("1", 1.0), outages.admit("1", 1.0)
    outages.admit("2", 1.5)
    outages.answered("2", 1.5)
    fail(outages, "1", 2.0, first, started=1.0)
    fail(outages, "1", 3.0, early, started=1.0)
    assert outages.admit("1", 3.0) == Admission(Verdict.REFUSE, "1", 4.0, "GitHub answered 502")  # as it was


def test_an_abandoned_probe_lets_the_next_request_probe() -> None:
    outages = Outages()
    first = outages.admit("1", 1.0)
    outages.admit("2", 1.5)
    outages.answered("2", 1.5)
    fail(outages, "1", 2.0, first, started=1.0)
    probe = outages.admit("1", 10.0)
    assert probe == Admission(Verdict.PROBE, "1")
    outages.abandoned(probe)  # cancelled: no news of GitHub
    assert outages.admit("1", 10.0) == Admission(Verdict.PROBE, "1")


def test_when_nothing_was_answered_since_a_scope_began_failing_the_whole_app_pauses() -> None:
    outages = Outages(min_cooldown=5.0)
    outages.admit("1", 0.0)
    outages.answered("1", 0.0)
    fail(outages, "1", 4.0, outages.admit("1", 1.0), started=1.0)
    assert [p.scope for p in outages.pauses(4.0)] == [WHOLE_APP, "1"]
    refused = outages.admit("2", 5.0)  # even an installation that never failed
    assert (refused.verdict, refused.scope) == (Verdict.REFUSE, WHOLE_APP)

    probe = outages.admit("2", 9.0)  # the whole app's probe may be any installation's request
    assert (probe.verdict, probe.scope) == (Verdict.PROBE, WHOLE_APP)
    assert outages.admit("1", 9.0).verdict is Verdict.WAIT
    outages.answered("2", 9.5)
    # GitHub is back: the paused installation probes now instead of sleeping out its own pause.
    assert outages.admit("1", 9.5) == Admission(Verdict.PROBE, "1")


def test_a_failed_probe_of_the_whole_app_keeps_it_paused_longer() -> None:
    outages = Outages(min_cooldown=5.0, max_cooldown=60.0)
    fail(outages, "1", 1.0, outages.admit("1", 1.0))
    probe = outages.admit("2", 6.0)
    fail(outages, "2", 6.0, probe)
    assert outages.admit("3", 6.0).retry_after == 10.0
    assert {p.scope for p in outages.pauses(6.0)} == {WHOLE_APP, "1", "2"}


def test_cooldowns_must_make_sense() -> None:
    with pytest.raises(ValueError):
        Outages(min_cooldown=0.0)
    with pytest.raises(ValueError):
        Outages(min_cooldown=10.0, max_cooldown=5.0)


def test_how_long_a_scope_stays_paused_counts_the_whole_app_too() -> None:
    outages = Outages(min_cooldown=5.0, max_cooldown=60.0)
    assert outages.paused_for("1", 0.0) == 0.0
    fail(outages, "1", 1.0, outages.admit("1", 1.0))
    assert outages.paused_for("1", 2.0) == 4.0 and outages.paused_for("2", 2.0) == 4.0  # the whole app
    outages.admit("2", 6.0)  # the whole app's probe
    outages.answered("2", 6.5)
    assert outages.paused_for("1", 6.5) == 0.0  # GitHub answered: "1" may probe now
