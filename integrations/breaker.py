"""A circuit breaker per endpoint: after ``failures`` failures in a row the circuit opens and the
endpoint gets no request for ``seconds``; then one probe goes out (half-open): its success closes
the circuit, its failure opens it again for twice as long (capped at ``max_seconds``). A probe
answered without a verdict on the endpoint's health (a 429, an attempt that raised) is
:meth:`released`: the next request is the probe, so the circuit never waits on an answer that
will not come.

>>> b = Breaker(failures=2, seconds=10.0, max_seconds=60.0)
>>> b.wait(0.0), b.failed(0.0), b.failed(1.0), b.wait(2.0)
(0.0, None, None, 9.0)
>>> b.wait(11.0), b.wait(11.0) > 0  # one probe, the others wait for its answer
(0.0, True)
>>> b.failed(12.0); b.wait(12.0)  # the probe failed: open twice as long
20.0
>>> b.succeeded(); b.wait(12.0)
0.0
>>> b = Breaker(failures=2, seconds=10.0, max_seconds=60.0)
>>> b.failed(0.0), b.failed(0.0), b.wait(11.0), b.wait(11.0) > 0  # open, then a probe
(None, None, 0.0, True)
>>> b.released(); b.wait(11.0)  # that probe was answered 429: the next request probes
0.0
"""

from __future__ import annotations

from dataclasses import dataclass

PROBE_WAIT_SECONDS = 0.5


@dataclass
class Breaker:
    failures: int
    seconds: float
    max_seconds: float
    in_a_row: int = 0
    open_until: float = 0.0
    opened_for: float = 0.0
    probing: bool = False

    def wait(self, now: float) -> float:
        """Seconds until a request may go to the endpoint (0: send now; it may be the probe)."""
        if self.in_a_row < self.failures:
            return 0.0
        if now < self.open_until:
            return self.open_until - now
        if self.probing:
            return PROBE_WAIT_SECONDS
        self.probing = True
        return 0.0

    def succeeded(self) -> None:
        self.in_a_row, self.opened_for, self.probing = 0, 0.0, False

    def released(self) -> None:
        """The request (maybe the probe) got no verdict on the endpoint's health: end the probe."""
        self.probing = False

    def failed(self, now: float) -> None:
        self.in_a_row += 1
        if self.in_a_row >= self.failures and (self.probing or now >= self.open_until):
            self.opened_for = min(self.max_seconds, self.opened_for * 2 or self.seconds)
            self.open_until = now + self.opened_for
            self.probing = False
