"""Pure decisions for riding out a GitHub outage: a circuit breaker per scope (an installation, or
"app" for the App's own JWT requests) and one for the whole app.

A request that still fails after the client's retries (5xx answers, timeouts, network errors) opens its
scope's circuit: that scope's requests are refused at once (the worker tries their jobs again later
without counting an attempt) until the cool-down ends. Then one request goes as a probe (half-open)
while the others wait for its outcome: an answer closes the circuit, a failure opens it again for
twice as long, up to `max_cooldown`.

When a scope fails and no request of any scope was answered since the scope began failing, GitHub is
failing for the whole app: the app-wide circuit opens as well, and every scope waits for its probe. When that
probe is answered, the other open scopes probe at once instead of sleeping out their own cool-down.

Nothing here sleeps or reads a clock: every method takes `now` (the client's monotonic clock).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

WHOLE_APP = "all"  # the scope name of the app-wide circuit


class Verdict(enum.Enum):
    SEND = "send"  # closed: go ahead
    PROBE = "probe"  # the one request that finds out whether GitHub is back
    WAIT = "wait"  # a probe is out: wait for its outcome, then ask again
    REFUSE = "refuse"  # open: fail now; GitHub may be asked again in `retry_after` seconds


@dataclass(frozen=True)
class Admission:
    verdict: Verdict
    scope: str  # whose circuit decided: the request's own, or WHOLE_APP
    retry_after: float = 0.0
    reason: str = ""  # for REFUSE: what the failing requests met


@dataclass(frozen=True)
class Pause:
    """An open circuit, as /health shows it."""

    scope: str
    since: float  # when the request that opened it began
    retry_in: float  # seconds until the next probe may go (0 while one is out)
    probing: bool
    reason: str


@dataclass
class Circuit:
    since: float
    open_until: float
    cooldown: float
    reason: str
    probing: bool = False

    def admit(self, scope: str, now: float) -> Admission:
        if self.probing:
            return Admission(Verdict.WAIT, scope)
        if now < self.open_until:
            return Admission(Verdict.REFUSE, scope, self.open_until - now, self.reason)
        self.probing = True
        return Admission(Verdict.PROBE, scope)


class Outages:
    """The circuits of one GitHub client. A scope has an entry only while its circuit is open."""

    def __init__(self, *, min_cooldown: float = 5.0, max_cooldown: float = 60.0) -> None:
        if not 0 < min_cooldown <= max_cooldown:
            raise ValueError("cool-downs must be positive, the minimum not above the maximum")
        self.min_cooldown = min_cooldown
        self.max_cooldown = max_cooldown
        self.circuits: dict[str, Circuit] = {}
        self.last_answer: float | None = None  # when any request of any scope was last answered

    def admit(self, scope: str, now: float) -> Admission:
        """May a request of `scope` go now? The app-wide circuit decides first."""
        whole = self.circuits.get(WHOLE_APP)
        if whole is not None:  # its probe may be a request of any scope, paused or not
            return whole.admit(WHOLE_APP, now)
        own = self.circuits.get(scope)
        return own.admit(scope, now) if own is not None else Admission(Verdict.SEND, scope)

    def answered(self, scope: str, now: float) -> None:
        """GitHub answered a request of `scope` (whatever the status, short of a 5xx)."""
        self.last_answer = now
        self.circuits.pop(scope, None)
        if self.circuits.pop(WHOLE_APP, None) is not None:
            for circuit in self.circuits.values():  # GitHub is back: every paused scope may try now
                circuit.open_until = min(circuit.open_until, now)

    def failed(self, scope: str, now: float, admission: Admission, *, started: float, reason: str) -> None:
        """A request of `scope`, begun at `started`, met GitHub failing even after its retries."""
        self._fail(scope, now, probe=admission.verdict is Verdict.PROBE and admission.scope == scope,
                   started=started, reason=reason)
        if admission.verdict is Verdict.PROBE and admission.scope == WHOLE_APP:
            self._fail(WHOLE_APP, now, probe=True, started=started, reason=reason)
        elif WHOLE_APP not in self.circuits and (self.last_answer is None
                                                 or self.last_answer <= self.circuits[scope].since):
            self._fail(WHOLE_APP, now, probe=False, started=started, reason=reason)

    def abandoned(self, admission: Admission) -> None:
        """A probe ended without an outcome (cancelled, say): the next request probes instead."""
        circuit = self.circuits.get(admission.scope)
        if admission.verdict is Verdict.PROBE and circuit is not None:
            circuit.probing = False

    def paused_for(self, scope: str, now: float) -> float:
        """Seconds until a request of `scope` may go again (0: now)."""
        ends = [c.open_until for name, c in self.circuits.items() if name in (scope, WHOLE_APP)]
        return max([0.0, *(end - now for end in ends)])

    def pauses(self, now: float) -> list[Pause]:
        return [Pause(name, c.since, 0.0 if c.probing else max(0.0, c.open_until - now), c.probing, c.reason)
                for name, c in sorted(self.circuits.items(), key=lambda item: item[0] != WHOLE_APP)]

    def _fail(self, name: str, now: float, *, probe: bool, started: float, reason: str) -> None:
        circuit = self.circuits.get(name)
        if circuit is None:
            self.circuits[name] = Circuit(since=started, open_until=now + self.min_cooldown,
                                          cooldown=self.min_cooldown, reason=reason)
        elif probe:  # still failing: wait twice as long before the next probe
            circuit.cooldown = min(self.max_cooldown, circuit.cooldown * 2)
            circuit.open_until = now + circuit.cooldown
            circuit.probing = False
            circuit.reason = reason
        # else: a request sent before the circuit opened; it changes nothing
