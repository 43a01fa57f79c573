"""A bound on the webhook body bytes one process holds at once (issue 9, D7).

A webhook body is read whole before its signature can be checked, and held until its batch
has committed (it is archived). Without a bound, anyone could make the process buffer
``webhook_max_body_bytes`` per connection (100 slow 3 MiB uploads: +300 MB of RSS). Each
webhook takes the bytes it receives from ``webhook_max_inflight_body_bytes`` as they arrive (a
declared ``Content-Length`` that cannot fit is refused before reading) and gives them back when
it is answered. One that does not fit is refused with 503 and ``Retry-After``: the condition is
the server's and temporary (platforms retry a 5xx; Meta and Telegram treat 429 no better).
"""

from __future__ import annotations

from types import TracebackType


class BodyBudget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def fits(self, size: int) -> bool:
        return self.held + size <= self.limit

    def hold(self) -> Holding:
        return Holding(self)


class Holding:
    """The bytes one webhook holds; a context manager that gives them all back on exit."""

    def __init__(self, budget: BodyBudget) -> None:
        self._budget = budget
        self.size = 0

    def take(self, size: int) -> bool:
        if not self._budget.fits(size):
            return False
        self._budget.held += size
        self.size += size
        return True

    def __enter__(self) -> Holding:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._budget.held -= self.size
        self.size = 0
