"""Claiming: how many due messages each owned channel may claim, and the claims in flight.

A claim is a row this process moved to ``sending`` (``leases.claim_messages``). It counts
against ``outbox_max_in_flight`` from the claim statement until its outcome is committed
(``InFlight``), whether it waits for the pacer, is on the wire, or waits for the writer.

``Claimer.budgets`` decides, per owned channel, how many rows the next claim statement may
take; ``Claimer.claim`` runs that statement and hands each claim to the ``Dispatcher``
(pacing and sending). The loop that calls them is the worker's lifecycle (``outbox.worker``).

Budgets follow demand and are shared fairly (``fair_shares``): a channel wants what its pacer
grants within ``outbox_claim_lookahead``; a channel whose last claim came back short had
nothing more claimable and asks for one row only (a probe) until a claim fills again; the free
slots are split max-min fair over what each channel already holds, so one fast channel (300/s
wants 600) never takes the slots of the others.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections import deque
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from infra.resources import Resources
from outbox import leases
from outbox.delivery import ClaimedMessage, paced_limits
from outbox.ratelimit import Limit, Pacer

if TYPE_CHECKING:
    from outbox.outcomes import OutcomeWriter, WorkerStats
    from outbox.ownership import ChannelOwnership
    from outbox.sending import Dispatcher

__all__ = [
    "SAFETY",
    "Claim",
    "ClaimQueue",
    "Claimer",
    "InFlight",
    "fair_shares",
]

K = TypeVar("K", bound=Hashable)

SAFETY = 1.0
"""Seconds: no send starts later than this before its message or channel lease ends."""


@dataclass(slots=True, eq=False)
class Claim:
    message: ClaimedMessage
    deadline: float
    """Monotonic: no send of this claim starts after this (its lease would be too short)."""
    limits: tuple[Limit, ...] = ()
    sending: bool = False
    finished: bool = False
    task: asyncio.Task[None] | None = None


class ClaimQueue:
    """A channel's claims waiting for the pacer, in claim order, and how many of them are in
    the reply lane: the pacer asks at every grant, and counting the queue each time made a
    grant cost as much as the queue is long."""

    __slots__ = ("_claims", "replies")

    def __init__(self) -> None:
        self._claims: deque[Claim] = deque()
        self.replies = 0

    def append(self, claim: Claim) -> None:
        self._claims.append(claim)
        if claim.message.lane == "reply":
            self.replies += 1

    def popleft(self) -> Claim:
        claim = self._claims.popleft()
        self._gone(claim)
        return claim

    def remove(self, claim: Claim) -> None:
        self._claims.remove(claim)
        self._gone(claim)

    def _gone(self, claim: Claim) -> None:
        if claim.message.lane == "reply":
            self.replies -= 1

    def __getitem__(self, index: int) -> Claim:
        return self._claims[index]

    def __iter__(self) -> Iterator[Claim]:
        return iter(self._claims)

    def __len__(self) -> int:
        return len(self._claims)


class InFlight:
    """The claims this process holds, by message id, until their outcome is committed."""

    def __init__(self) -> None:
        self._claims: dict[uuid.UUID, Claim] = {}

    def __len__(self) -> int:
        return len(self._claims)

    def __iter__(self) -> Iterator[Claim]:
        return iter(list(self._claims.values()))

    def add(self, claim: Claim) -> None:
        self._claims[claim.message.id] = claim

    def discard(self, message_id: uuid.UUID) -> None:
        self._claims.pop(message_id, None)

    def per_channel(self) -> dict[uuid.UUID, int]:
        counts: dict[uuid.UUID, int] = {}
        for claim in self._claims.values():
            cid = claim.message.channel_id
            counts[cid] = counts.get(cid, 0) + 1
        return counts

    def channels(self) -> set[uuid.UUID]:
        """Channels with a claim in flight (an ownership round keeps them first)."""
        return {c.message.channel_id for c in self._claims.values()}


def fair_shares(demands: Sequence[tuple[K, int, int]], free: int) -> dict[K, int]:
    """Split ``free`` slots max-min fair. ``demands`` are ``(key, held, want)``: the key holds
    ``held`` slots and could use ``want`` in all. Every key is raised towards one common level
    (never above its ``want``); the slots left when the next level no longer fits go one each
    to the keys at the level, in the order given (rotate it between calls). Keys granted
    nothing are left out; a key whose ``want`` is not above ``held`` gets nothing."""
    wanting = [(k, held, want) for k, held, want in demands if want > held]
    if free <= 0 or not wanting:
        return {}

    def total(level: int) -> int:
        return sum(max(0, min(level, want) - held) for _, held, want in wanting)

    top = max(want for _, _, want in wanting)
    if total(top) <= free:
        return {k: want - held for k, held, want in wanting}
    low, high = 0, top  # total(low) <= free < total(high)
    while high - low > 1:
        mid = (low + high) // 2
        if total(mid) <= free:
            low = mid
        else:
            high = mid
    grants = {k: max(0, min(low, want) - held) for k, held, want in wanting}
    left = free - total(low)
    for k, held, want in wanting:
        if left == 0:
            break
        if held <= low < want:  # at the level and could take one more
            grants[k] += 1
            left -= 1
    return {k: n for k, n in grants.items() if n > 0}


class Claimer:
    """The claim budget of each owned channel, and the claim statement."""

    def __init__(
        self,
        resources: Resources,
        *,
        owner: str,
        lease: float,
        in_flight: InFlight,
        ownership: ChannelOwnership,
        dispatcher: Dispatcher,
        writer: OutcomeWriter,
        pacer: Pacer,
        stats: WorkerStats,
        clock: Callable[[], float],
    ) -> None:
        s = resources.settings
        self._resources = resources
        self._settings = s
        self._owner = owner
        self._lease = lease
        self._in_flight = in_flight
        self._ownership = ownership
        self._dispatcher = dispatcher
        self._writer = writer
        self._pacer = pacer
        self._stats = stats
        self._clock = clock
        self._pacing = s.outbox_pacing_enabled
        self._max_in_flight = s.outbox_max_in_flight
        self._claim_batch = s.outbox_claim_batch
        self._timeout = s.outbox_http_timeout
        self._min_claim = max(1, min(self._claim_batch, self._max_in_flight) // 8)
        self._drained: set[uuid.UUID] = set()
        """Channels whose last claim returned fewer rows than asked: nothing more was due."""
        self._turn = 0

    def budgets(self) -> dict[uuid.UUID, int]:
        free = self._max_in_flight - len(self._in_flight)
        if len(self._in_flight) and free < self._min_claim:
            return {}  # wait for a worthwhile batch: the round trip costs as much as 50 rows
        now = self._clock()
        lookahead = self._settings.outbox_claim_lookahead
        owned = self._ownership.channels
        self._drained &= owned.keys()
        held_by = {} if self._pacing else self._in_flight.per_channel()
        demands: list[tuple[uuid.UUID, int, int]] = []
        for cid, channel in owned.items():
            if channel.valid_until - SAFETY <= now:
                continue
            circuit = channel.breaker.state(now)
            if circuit == "open":
                continue  # its messages wait in the table, their retries not counted
            if self._pacing:
                if self._pacer.peek_delay(channel.limit, now) > lookahead:
                    continue  # throttled: claim nothing that would only wait
                held = len(channel.queue)
                want = max(1, math.ceil(channel.per_second * lookahead))
            else:
                held = held_by.get(cid, 0)
                want = self._claim_batch
            if cid in self._drained:
                want = min(want, held + 1)
            if circuit == "half_open":
                want = min(want, held + 1)
            demands.append((cid, held, want))
        if not demands:
            return {}
        self._turn = (self._turn + 1) % len(demands)  # who gets the odd slots rotates
        demands = demands[self._turn :] + demands[: self._turn]
        return fair_shares(demands, min(free, self._claim_batch))

    def note_claimed(self, budgets: dict[uuid.UUID, int], got: dict[uuid.UUID, int]) -> None:
        """What a claim statement returned per channel: short means nothing more was due."""
        for cid, asked in budgets.items():
            if got.get(cid, 0) < asked:
                self._drained.add(cid)
            else:
                self._drained.discard(cid)

    async def claim(self, budgets: dict[uuid.UUID, int]) -> int:
        async with self._resources.sessionmaker() as session, session.begin():
            rows = await leases.claim_messages(session, self._owner, budgets, self._lease)
        deadline = self._clock() + self._lease - self._timeout - SAFETY
        margin = self._settings.outbox_pacing_margin
        pair = self._settings.outbox_whatsapp_pair_interval
        for row in rows:
            message = ClaimedMessage.from_row(row)
            claim = Claim(message, deadline)
            self._in_flight.add(claim)
            channel = self._ownership.channels.get(message.channel_id)
            if channel is None:  # lost while the claim was in flight
                self._writer.finish(claim, "release")
            elif not self._pacing:
                self._dispatcher.start(claim, channel)
            else:
                claim.limits = paced_limits(
                    message, channel.rate, margin=margin, whatsapp_pair_interval=pair
                )
                self._dispatcher.enqueue(claim, channel)
        got: dict[uuid.UUID, int] = {}
        for row in rows:
            got[row["channel_id"]] = got.get(row["channel_id"], 0) + 1
        self.note_claimed(budgets, got)
        self._stats.claimed += len(rows)
        self._stats.claim_queries += 1
        return len(rows)
