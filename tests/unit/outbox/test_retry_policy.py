"""Retry timing as data: schedule, jitter bounds, Retry-After floor."""

from __future__ import annotations

import random

import pytest

from outbox.retry import DEFAULT_SCHEDULE, RetryPolicy


class FixedRandom(random.Random):
    """uniform(a, b) returns the point ``fraction`` of the way from a to b."""

    def __init__(self, fraction: float) -> None:
        super().__init__(0)
        self.fraction = fraction

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.fraction


def test_schedule_without_jitter_follows_the_table_and_repeats_the_last_step() -> None:
    policy = RetryPolicy(jitter=0.0)
    delays = [policy.next_delay(attempt) for attempt in range(1, 10)]
    assert delays == [5, 30, 120, 600, 1800, 3600, 7200, 7200, 7200]
    assert policy.schedule == DEFAULT_SCHEDULE


@pytest.mark.parametrize(("fraction", "expected"), [(0.0, 24.0), (0.5, 30.0), (1.0, 36.0)])
def test_jitter_spans_plus_minus_twenty_percent(fraction: float, expected: float) -> None:
    policy = RetryPolicy(rng=FixedRandom(fraction))
    assert policy.next_delay(2) == pytest.approx(expected)


def test_real_jitter_stays_within_bounds() -> None:
    policy = RetryPolicy(schedule=(10.0,), rng=random.Random(7))
    delays = [policy.next_delay(1) for _ in range(2000)]
    assert min(delays) >= 8.0
    assert max(delays) <= 12.0
    assert max(delays) - min(delays) > 3.0  # jitter actually spreads


def test_retry_after_is_a_floor_never_shortened() -> None:
    policy = RetryPolicy(rng=FixedRandom(1.0))
    assert policy.next_delay(1, retry_after=60.0) == 60.0
    assert policy.next_delay(1, retry_after=1.0) == pytest.approx(6.0)
    assert policy.next_delay(1, retry_after=None) == pytest.approx(6.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"schedule": ()}, "at least one"),
        ({"schedule": (-1.0,)}, "negative"),
        ({"jitter": 1.0}, "jitter"),
        ({"jitter": -0.1}, "jitter"),
    ],
)
def test_invalid_policies_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_attempts_are_one_based() -> None:
    with pytest.raises(ValueError, match="start at 1"):
        RetryPolicy().next_delay(0)
