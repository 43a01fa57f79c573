"""A circuit breaker per owned channel: stop hammering a platform that keeps failing.

A send's outcome counts as an *outage* when the platform or the path to it failed: a 5xx, a
timeout, a refused or broken connection (``is_outage``). Throttles (429), refusals of one
message (4xx) and successes are *not* outages; they show the platform is answering.

* **closed**: every outcome is recorded (the last ``window`` ones, none older than ``horizon``
  seconds). When at least ``min_samples`` are recorded and ``threshold`` of them are outages,
  the circuit opens.
* **open** for ``cooldown`` seconds: nothing is sent. The worker does not claim the channel's
  messages; claims it already holds are put back with ``next_attempt_at`` moved to the end of
  the cooldown, their attempts not counted (``retry_in``): an outage does not burn the retry
  schedule of the whole backlog.
* **half_open** after the cooldown: one probe is let through (``try_acquire``). Its success
  closes the circuit (history cleared); its outage reopens it with the cooldown doubled (up to
  ``max_cooldown``); any other outcome closes it too (the platform answered). Outcomes of
  sends started before the circuit opened are ignored while it is open or probing.

Pure: time (monotonic seconds) is passed in, like ``ratelimit.Pacer``. The state is the
owner's, in memory; a new owner starts closed and learns again within ``min_samples`` sends.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from outbox.platforms import SendResult

__all__ = ["BreakerPolicy", "CircuitBreaker", "CircuitState", "is_outage"]

CircuitState = Literal["closed", "open", "half_open"]

_LOCAL_FAILURES = frozenset({"worker_error", "interrupted"})


def is_outage(result: SendResult) -> bool:
    """5xx, timeout or transport failure (not a throttle, not our own process failing)."""
    if result.outcome != "retryable" or result.throttled or result.recipient_throttled:
        return False
    if result.http_status is None:
        return result.error_code not in _LOCAL_FAILURES
    return result.http_status >= 500


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    window: int = 20
    threshold: float = 0.8
    min_samples: int = 10
    horizon: float = 60.0
    cooldown: float = 30.0
    max_cooldown: float = 300.0


@dataclass(slots=True)
class CircuitBreaker:
    policy: BreakerPolicy = field(default_factory=BreakerPolicy)
    _state: CircuitState = "closed"
    _outcomes: deque[tuple[float, bool]] = field(default_factory=deque)
    _opened_at: float = 0.0
    _cooldown: float = 0.0
    _probing: bool = False
    _changes: int = 0

    @property
    def changes(self) -> int:
        """Counts state changes, so a caller can persist a new state once."""
        return self._changes

    def state(self, now: float) -> CircuitState:
        if self._state == "open" and now >= self._opened_at + self._cooldown:
            self._set("half_open")
            self._probing = False
        return self._state

    def retry_in(self, now: float) -> float:
        """Seconds until a held-back message is worth claiming again (0 when closed)."""
        state = self.state(now)
        if state == "open":
            return self._opened_at + self._cooldown - now
        if state == "half_open":
            return self._cooldown / 4 if self._probing else 0.0
        return 0.0

    def try_acquire(self, now: float) -> bool:
        """May a send start now? In half-open, true once (the probe) until its outcome."""
        state = self.state(now)
        if state == "closed":
            return True
        if state == "half_open" and not self._probing:
            self._probing = True
            return True
        return False

    def record(self, now: float, *, outage: bool, probe: bool = False) -> None:
        """The outcome of a send; ``probe`` when it was the half-open probe."""
        state = self.state(now)
        if state == "half_open" and probe:
            if outage:
                self._open(now, min(self._cooldown * 2, self.policy.max_cooldown))
            else:
                self._outcomes.clear()
                self._probing = False
                self._set("closed")
            return
        if state != "closed":
            return
        p = self.policy
        self._outcomes.append((now, outage))
        while len(self._outcomes) > p.window or self._outcomes[0][0] < now - p.horizon:
            self._outcomes.popleft()
        if len(self._outcomes) >= p.min_samples:
            failing = sum(1 for _, bad in self._outcomes if bad)
            if failing >= p.threshold * len(self._outcomes):
                self._open(now, p.cooldown)

    def _open(self, now: float, cooldown: float) -> None:
        self._opened_at = now
        self._cooldown = cooldown
        self._probing = False
        self._outcomes.clear()
        self._set("open")

    def _set(self, state: CircuitState) -> None:
        if state != self._state:
            self._state = state
            self._changes += 1
