"""Retry timing as data (Svix-style): a schedule, ±jitter, Retry-After as a floor.

The policy only answers "how long until the next attempt". Whether there is a next attempt at
all is the worker's call: it stops at a permanent outcome or once ``not_after`` has passed, so
the last step of the schedule simply repeats.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["DEFAULT_SCHEDULE", "RetryPolicy"]

DEFAULT_SCHEDULE: tuple[float, ...] = (5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0, 7200.0)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    schedule: tuple[float, ...] = DEFAULT_SCHEDULE
    jitter: float = 0.2
    """Relative: each delay is drawn uniformly from ``[d * (1 - jitter), d * (1 + jitter)]``."""
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.schedule:
            raise ValueError("the retry schedule needs at least one delay")
        if any(d < 0 for d in self.schedule):
            raise ValueError("retry delays must not be negative")
        if not 0.0 <= self.jitter < 1.0:
            raise ValueError("jitter must be in [0, 1)")

    def base_delay(self, attempt: int) -> float:
        """The un-jittered delay after failed attempt number ``attempt`` (1-based)."""
        if attempt < 1:
            raise ValueError("attempt numbers start at 1")
        return self.schedule[min(attempt, len(self.schedule)) - 1]

    def next_delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt ``attempt`` before the next one.

        The platform's Retry-After (or Telegram ``retry_after``) is a floor, never shortened by
        jitter: retrying earlier would be refused again and count against the channel.
        """
        base = self.base_delay(attempt)
        delay = (
            base * self.rng.uniform(1.0 - self.jitter, 1.0 + self.jitter) if self.jitter else base
        )
        if retry_after is not None and retry_after > delay:
            return retry_after
        return delay
