"""The circuit breaker's state machine, with time passed in."""

from __future__ import annotations

from outbox.breaker import BreakerPolicy, CircuitBreaker, is_outage
from outbox.platforms import SendResult

POLICY = BreakerPolicy(
    window=20, threshold=0.8, min_samples=10, horizon=60.0, cooldown=30.0, max_cooldown=100.0
)


def result(
    outcome: str = "retryable",
    status: int | None = 503,
    code: str | None = "http_503",
    *,
    throttled: bool = False,
) -> SendResult:
    return SendResult(
        outcome=outcome,  # type: ignore[arg-type]
        platform_message_id=None,
        http_status=status,
        error_code=code,
        error_title=None,
        retry_after=None,
        throttled=throttled,
        response_excerpt=None,
        duration_ms=1.0,
    )


def opened(at: float = 100.0) -> CircuitBreaker:
    breaker = CircuitBreaker(POLICY)
    for i in range(10):
        breaker.record(at - 9 + i, outage=True)
    assert breaker.state(at) == "open"
    return breaker


def test_outages_are_5xx_timeouts_and_transport_failures_only() -> None:
    assert is_outage(result())
    assert is_outage(result(status=None, code="timeout"))
    assert is_outage(result(status=None, code="connect_error"))
    assert not is_outage(result(status=429, code="http_429", throttled=True))
    assert not is_outage(result(outcome="permanent", status=400, code="131026"))
    assert not is_outage(result(outcome="sent", status=200, code=None))
    assert not is_outage(result(status=None, code="worker_error"))


def test_opens_at_80_percent_of_the_recent_outcomes_and_not_before_min_samples() -> None:
    breaker = CircuitBreaker(POLICY)
    for i in range(9):
        breaker.record(float(i), outage=True)
    assert breaker.state(9.0) == "closed"  # 9 samples: below min_samples
    breaker.record(9.0, outage=False)
    assert breaker.state(9.0) == "open"  # 9 of 10 = 90 %


def test_below_the_threshold_stays_closed() -> None:
    breaker = CircuitBreaker(POLICY)
    for i in range(7):
        breaker.record(float(i), outage=True)
    for i in range(7, 10):
        breaker.record(float(i), outage=False)
    assert breaker.state(10.0) == "closed"  # 7 of 10 = 70 %
    breaker.record(10.0, outage=True)
    assert breaker.state(10.0) == "closed"  # 8 of 11 = 72.7 %


def test_threshold_counts_the_window() -> None:
    breaker = CircuitBreaker(POLICY)
    for i in range(12):
        breaker.record(float(i), outage=False)
    for i in range(12, 20):
        breaker.record(float(i), outage=True)
    assert breaker.state(20.0) == "closed"  # 8 of 20 = 40 %
    for i in range(20, 28):
        breaker.record(float(i), outage=True)
    # the last 20: 4 fine, 16 outages = 80 %
    assert breaker.state(28.0) == "open"


def test_outcomes_older_than_the_horizon_do_not_count() -> None:
    breaker = CircuitBreaker(POLICY)
    for i in range(9):
        breaker.record(float(i), outage=True)
    breaker.record(100.0, outage=True)  # the 9 old ones fell out of the 60 s horizon
    assert breaker.state(100.0) == "closed"


def test_open_holds_for_the_cooldown_then_lets_one_probe_through() -> None:
    breaker = opened(at=100.0)
    assert not breaker.try_acquire(100.0)
    assert breaker.retry_in(110.0) == 20.0
    assert not breaker.try_acquire(129.9)
    assert breaker.state(130.0) == "half_open"
    assert breaker.try_acquire(130.0)
    assert not breaker.try_acquire(130.1)  # one probe at a time
    assert breaker.retry_in(130.1) == 7.5
    breaker.record(131.0, outage=False, probe=True)
    assert breaker.state(131.0) == "closed"
    assert breaker.try_acquire(131.0)


def test_a_failed_probe_reopens_with_a_doubled_bounded_cooldown() -> None:
    breaker = opened(at=100.0)
    assert breaker.try_acquire(130.0)
    breaker.record(130.5, outage=True, probe=True)
    assert breaker.state(130.5) == "open"
    assert breaker.retry_in(130.5) == 60.0
    assert breaker.try_acquire(190.5)
    breaker.record(191.0, outage=True, probe=True)
    assert breaker.retry_in(191.0) == 100.0  # max_cooldown


def test_late_outcomes_of_sends_started_before_opening_are_ignored() -> None:
    breaker = opened(at=100.0)
    breaker.record(101.0, outage=False)
    assert breaker.state(101.0) == "open"
    assert breaker.try_acquire(130.0)
    breaker.record(130.1, outage=True)  # not the probe: ignored
    assert breaker.state(130.1) == "half_open"


def test_changes_count_transitions() -> None:
    breaker = opened()
    assert breaker.changes == 1
    breaker.state(130.0)
    assert breaker.changes == 2
    breaker.try_acquire(130.0)
    breaker.record(130.0, outage=False, probe=True)
    assert breaker.changes == 3
