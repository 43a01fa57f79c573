"""Send pacing: never faster than a platform allows, per channel and per recipient.

One ``Pacer`` holds the state of many keys (a channel, a channel's audio/video budget, one
conversation). Each key is paced by a ``Rate`` ("``count`` per ``per`` seconds") with two
rules applied together:

* **Spacing** (GCRA): grants are ``per / count`` apart on a schedule anchored to theoretical
  arrival times, so the long-run rate is exact even when the event loop wakes a little late:
  a grant at most ``catch_up`` seconds behind its slot keeps the schedule (the next slots may
  then follow at once until it is caught up); a key idle for longer restarts its schedule at
  the grant, so idleness never turns into a burst.
* **Window guard**: a grant is refused while the ``count``-th most recent grant is less than
  ``per`` seconds old. This is the hard promise: *no half-open window of ``per`` seconds ever
  holds more than ``count`` grants*, whatever the catch-up or the wake-up jitter did.
* **Cold start**: the first grant of a key that granted nothing within the last ``per``
  seconds (a channel just acquired, after a restart or a handover, or idle) is recorded
  ``start_margin`` later than it was made. Its request is the one most likely to leave late
  (a new connection, TCP and TLS handshakes, a process busy starting up) while the ones after
  it reuse the connection: without this, the platform saw the whole first window shifted
  into one second with one or two sends too many (issue 9, D15: 81 at 80/s in the first
  second after a worker took a channel). It costs the key's ``count + 1``-th send
  ``start_margin`` once per cold start, nothing in steady state.

A throttle answer from the platform calls ``penalize``: the key is paused until the platform's
Retry-After, then runs at a reduced rate (halved per penalty, floored) that recovers linearly
to the configured rate over ``recovery`` seconds. Penalties landing while the key is already
paused only extend the pause: the in-flight requests that all hit the same 429 do not compound.

A key whose ``Rate`` changes (the channel's ``send_rate_per_second`` was edited) is retuned:
its schedule restarts from its last grant at the new spacing, so a rate that was once tiny
does not keep the key waiting on a slot computed for it; the recent grants are kept, so the
window guard still holds across the change.

Time comes from an injected monotonic clock, so tests drive it exactly. The pacer is
single-process; across replicas the worker guarantees one owner per channel (lease), which is
what makes a per-process limiter a global one.

The pacer knows no platform: each platform's rates are on its sender
(``outbox.platforms.Sender.channel_rate`` and friends), and ``outbox.delivery.limits_for``
turns them into the limits of one send.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass

__all__ = [
    "Limit",
    "Pacer",
    "Rate",
    "channel_key",
    "recipient_key",
]

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Rate:
    """At most ``count`` sends in any ``per``-second window, evenly spaced."""

    count: int
    per: float = 1.0

    def __post_init__(self) -> None:
        if self.count < 1 or not self.per > 0:
            raise ValueError("a rate needs count >= 1 and per > 0")

    @property
    def interval(self) -> float:
        return self.per / self.count


@dataclass(frozen=True, slots=True)
class Limit:
    key: Hashable
    rate: Rate


def channel_key(channel_id: str) -> Hashable:
    return ("channel", channel_id)


def recipient_key(channel_id: str, recipient: str) -> Hashable:
    return ("recipient", channel_id, recipient)


class _Ring:
    """The last ``capacity`` grant times, with O(1) access to the k-th most recent."""

    __slots__ = ("buf", "head", "size")

    def __init__(self, capacity: int) -> None:
        self.buf = [0.0] * capacity
        self.head = 0
        self.size = 0

    def resize(self, capacity: int) -> None:
        keep = min(self.size, capacity)
        recent = [self.recent(k) for k in range(keep, 0, -1)]
        self.buf = recent + [0.0] * (capacity - keep)
        self.head = keep % capacity
        self.size = keep

    def push(self, t: float) -> None:
        self.buf[self.head] = t
        self.head = (self.head + 1) % len(self.buf)
        if self.size < len(self.buf):
            self.size += 1

    def recent(self, k: int) -> float:
        """The k-th most recent grant (k = 1 is the latest); requires k <= size."""
        return self.buf[(self.head - k) % len(self.buf)]


class _State:
    __slots__ = ("factor", "grants", "paused_until", "per", "rate", "recover_from", "tat")

    def __init__(self, rate: Rate) -> None:
        self.tat = -math.inf
        self.grants = _Ring(rate.count)
        self.rate = rate
        self.per = rate.per
        self.paused_until = -math.inf
        self.factor = 1.0
        self.recover_from = -math.inf


class Pacer:
    """Paces keys against their ``Rate``; exact and deterministic under an injected clock.

    ``window_margin`` widens the window guard slightly: a send leaves a few microseconds after
    its grant, and that jitter alone could otherwise put ``count + 1`` sends into one window
    whose edges fall exactly on two grants. It costs at most ``margin / per`` of the rate.
    ``start_margin`` is how much later than its grant the first request of a cold key may
    reach the platform compared with the ones that follow (see the module docstring).
    """

    def __init__(
        self,
        clock: Clock = time.monotonic,
        *,
        sleep: Sleep = asyncio.sleep,
        catch_up: float = 0.05,
        window_margin: float = 0.001,
        start_margin: float = 0.05,
        backoff: float = 0.5,
        min_factor: float = 1 / 16,
        recovery: float = 60.0,
        default_pause: float = 1.0,
        prune_every: int = 10_000,
    ) -> None:
        if not 0 < backoff <= 1 or not 0 < min_factor <= 1:
            raise ValueError("backoff and min_factor must be in (0, 1]")
        self._clock = clock
        self._sleep = sleep
        self._catch_up = catch_up
        self._margin = window_margin
        self._start_margin = start_margin
        self._backoff = backoff
        self._min_factor = min_factor
        self._recovery = recovery
        self._default_pause = default_pause
        self._prune_every = prune_every
        self._grants_since_prune = 0
        self._states: dict[Hashable, _State] = {}
        self._locks: defaultdict[Hashable, asyncio.Lock] = defaultdict(asyncio.Lock)

    def __len__(self) -> int:
        return len(self._states)

    def _state(self, limit: Limit) -> _State:
        state = self._states.get(limit.key)
        if state is None:
            state = self._states[limit.key] = _State(limit.rate)
        elif state.rate is not limit.rate and state.rate != limit.rate:
            self._retune(state, limit.rate)
        return state

    @staticmethod
    def _retune(state: _State, rate: Rate) -> None:
        """The key's rate changed: keep its recent grants (resized to the new count), restart
        the schedule from the last grant at the new spacing (never later than it was)."""
        if len(state.grants.buf) != rate.count:
            state.grants.resize(rate.count)
        restart = state.grants.recent(1) + rate.interval if state.grants.size else -math.inf
        state.tat = min(state.tat, restart)
        state.rate = rate
        state.per = rate.per

    def factor(self, key: Hashable, now: float | None = None) -> float:
        """The current fraction of the configured rate (1.0 unless recently penalized)."""
        state = self._states.get(key)
        if state is None:
            return 1.0
        return self._factor(state, self._clock() if now is None else now)

    def _factor(self, state: _State, now: float) -> float:
        if state.factor >= 1.0 or now <= state.recover_from:
            return state.factor
        progress = (now - state.recover_from) / self._recovery if self._recovery > 0 else 1.0
        if progress >= 1.0:
            state.factor = 1.0
            return 1.0
        return state.factor + (1.0 - state.factor) * progress

    def _earliest(self, state: _State, rate: Rate, now: float) -> tuple[float, float]:
        """(earliest grant time, effective interval) for one key at ``now``."""
        factor = self._factor(state, now)
        interval = rate.interval / factor
        allowed = max(1, math.floor(rate.count * factor + 1e-9))
        earliest = max(state.tat, state.paused_until)
        if state.grants.size >= allowed:
            earliest = max(earliest, state.grants.recent(allowed) + rate.per + self._margin)
        return earliest, interval

    def peek_delay(self, limits: Limit | Sequence[Limit], now: float | None = None) -> float:
        """Seconds until ``limits`` would all grant; records nothing."""
        now = self._clock() if now is None else now
        group = (limits,) if isinstance(limits, Limit) else limits
        latest = now
        for limit in group:
            earliest, _ = self._earliest(self._state(limit), limit.rate, now)
            latest = max(latest, earliest)
        return latest - now

    def acquire_delay(self, limits: Limit | Sequence[Limit], now: float | None = None) -> float:
        """0.0 means granted (recorded against every limit at ``now``): send now.

        A positive value is the wait before asking again; nothing is recorded, so a caller
        that gives up leaves no trace. Limits are all-or-nothing: one send never consumes a
        slot of one key while another key makes it wait.
        """
        now = self._clock() if now is None else now
        group = (limits,) if isinstance(limits, Limit) else limits
        plans: list[tuple[_State, float]] = []
        latest = now
        for limit in group:
            state = self._state(limit)
            earliest, interval = self._earliest(state, limit.rate, now)
            latest = max(latest, earliest)
            plans.append((state, interval))
        if latest > now:
            return latest - now
        for state, interval in plans:
            on_schedule = now - state.tat <= self._catch_up
            state.tat = (state.tat if on_schedule else now) + interval
            cold = state.grants.size == 0 or now - state.grants.recent(1) >= state.per
            state.grants.push(now + self._start_margin if cold else now)
        self._grants_since_prune += 1
        if self._grants_since_prune >= self._prune_every:
            self.prune(now)
        return 0.0

    async def acquire(self, limits: Limit | Sequence[Limit]) -> float:
        """Wait until ``limits`` grant; returns the grant time (the clock at the grant).

        The first limit is the shared one (the channel): its waiters queue in FIFO order on a
        lock, so only the head of the queue polls. The other limits (a conversation, which the
        worker never sends to concurrently) are waited for before joining that queue, so a slow
        conversation never holds up the channel.
        """
        group = (limits,) if isinstance(limits, Limit) else tuple(limits)
        if len(group) > 1:
            while (delay := self.peek_delay(group[1:])) > 0:
                await self._sleep(delay)
        async with self._locks[group[0].key]:
            while True:
                now = self._clock()
                delay = self.acquire_delay(group, now)
                if delay <= 0:
                    return now
                await self._sleep(delay)

    def penalize(
        self, key: Hashable, now: float | None = None, *, retry_after: float | None = None
    ) -> None:
        """The platform said this key is over its rate: pause, then run slower and recover."""
        now = self._clock() if now is None else now
        state = self._states.get(key)
        if state is None:  # resized to the real rate on the next acquire
            state = self._states[key] = _State(Rate(1))
        pause_end = now + (self._default_pause if retry_after is None else max(0.0, retry_after))
        if now < state.paused_until:
            state.paused_until = max(state.paused_until, pause_end)
            state.recover_from = max(state.recover_from, state.paused_until)
            return
        state.factor = max(self._min_factor, self._factor(state, now) * self._backoff)
        state.paused_until = pause_end
        state.recover_from = pause_end

    def forget(self, key: Hashable) -> None:
        self._states.pop(key, None)
        lock = self._locks.get(key)
        if lock is not None and not lock.locked():
            del self._locks[key]

    def prune(self, now: float | None = None) -> int:
        """Drop keys whose state can no longer affect a grant; returns how many."""
        now = self._clock() if now is None else now
        self._grants_since_prune = 0
        idle = [
            key
            for key, s in self._states.items()
            if s.tat <= now
            and s.paused_until <= now
            and self._factor(s, now) >= 1.0
            and (s.grants.size == 0 or s.grants.recent(1) + s.per <= now)
        ]
        for key in idle:
            self.forget(key)
        return len(idle)
