"""Timeline states of an outbound message: only forward, as the outbox's own (pure)."""

from __future__ import annotations

RANK = {
    "queued": 0,
    "retrying": 1,
    "sent": 2,
    "delivered": 3,
    "read": 4,
    "failed": 5,
    "dead": 5,
    "cancelled": 5,
    "deleted": 5,
}


def advance(current: str, new: str) -> str:
    """``new`` if it moves ``current`` forward; a terminal state never changes; a ``failed``
    receipt may still fail a sent or delivered message."""
    if new not in RANK:
        return current
    if RANK.get(current, -1) >= 5:
        return current
    return new if RANK[new] > RANK.get(current, -1) else current
