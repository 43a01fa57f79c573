"""Reply and bulk lanes: how a channel's rate is shared between them (pure).

Every message has a lane (``outbox_messages.lane``, chosen at intake by ``outbox.policy`` or by
the command): ``reply`` for answers inside an open customer-initiated conversation and automatic
acknowledgements, ``bulk`` for proactive sends. A customer's answer must not wait behind a
campaign queued on the same channel, so at both places where messages queue for a channel:

* the claim statement (``outbox.leases``) takes reply-lane rows before bulk rows within the
  channel's claim budget;
* the channel's pacer loop (``outbox.sending.Dispatcher``) grants the pacing slots to waiting
  reply claims first, in claim order, overtaking bulk claims claimed earlier.

Bulk is never starved: while both lanes have claims waiting, every ``bulk_every``-th grant
(default 10, i.e. 10 % of the channel's rate) goes to bulk (``LaneShare``). When only one lane
has work it gets the whole rate. The share is counted in grants, not in time, so it needs no
clock and holds at any rate.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from outbox.contracts import Lane

__all__ = ["BULK_EVERY", "LaneShare", "lane_order"]

T = TypeVar("T")

BULK_EVERY = 10
"""While both lanes wait, one grant in ten goes to bulk: bulk keeps >= 10 % of the rate."""


class LaneShare:
    """Which lane the next pacing slot of one channel goes to."""

    def __init__(self, bulk_every: int = BULK_EVERY) -> None:
        if bulk_every < 2:
            raise ValueError("bulk_every must be at least 2 (1 would put bulk first)")
        self._bulk_every = bulk_every
        self._replies_in_a_row = 0
        """Reply grants made while bulk was waiting, since the last bulk grant."""

    def first(self, *, reply_waiting: bool, bulk_waiting: bool) -> Lane:
        """The lane whose claims are offered the next slot first."""
        if reply_waiting and bulk_waiting:
            return "bulk" if self._replies_in_a_row >= self._bulk_every - 1 else "reply"
        return "reply" if reply_waiting else "bulk"

    def granted(self, lane: str, *, contended: bool) -> None:
        """Record a grant; ``contended``: both lanes had claims waiting when it was made."""
        if lane == "bulk":
            self._replies_in_a_row = 0
        elif contended:
            self._replies_in_a_row += 1


def lane_order(items: Iterable[T], first: Lane, lane_of: Callable[[T], str]) -> Iterator[T]:
    """``items`` of lane ``first`` in their order, then the others in their order."""
    rest: list[T] = []
    for item in items:
        if (lane_of(item) == "reply") == (first == "reply"):
            yield item
        else:
            rest.append(item)
    yield from rest
