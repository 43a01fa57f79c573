"""Channel ownership: which channels this process sends on, and with what settings.

Every ``outbox_channel_renew_interval`` the worker calls ``ChannelOwnership.refresh``: a
heartbeat, then a fair share of the active channels (``outbox.delivery.plan_ownership``:
ceil(active / live workers)), renewing held ones with work, taking free ones up to the share
(and any channel left unheld past ``outbox_channel_grace``), releasing idle and surplus ones.
Only the owner sends on a channel, so the in-process ``Pacer`` is a global limiter
(docs/outbox-delivery.md, "Channel ownership").
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from channels.service import load_with_secrets
from infra.logging import get_logger
from infra.resources import Resources
from outbox import leases
from outbox.breaker import BreakerPolicy, CircuitBreaker
from outbox.claims import SAFETY, ClaimQueue, InFlight
from outbox.delivery import channel_rate, plan_ownership
from outbox.outcomes import DB_ERRORS
from outbox.platforms import ChannelConfig
from outbox.ratelimit import Limit, Pacer, Rate, channel_key

__all__ = ["ChannelOwnership", "OwnedChannel"]

log = get_logger(__name__)

_CHANNEL_REFRESH = 30.0
"""Seconds: how often an owned channel's settings (rate, credentials, base URL) are re-read."""


@dataclass(slots=True)
class OwnedChannel:
    config: ChannelConfig
    rate: Rate
    limit: Limit
    per_second: float
    valid_until: float
    """Monotonic: no send starts after ``valid_until - SAFETY`` unless the lease is renewed."""
    loaded_at: float
    queue: ClaimQueue = field(default_factory=ClaimQueue)
    """Claims waiting for the pacer, in claim order (they count against the claim budget)."""
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    dispatcher: asyncio.Task[None] | None = None
    breaker: CircuitBreaker = field(default_factory=CircuitBreaker)
    """This owner's circuit breaker of the channel (kept across settings reloads)."""

    id: uuid.UUID = field(init=False)
    """``config.id`` as a UUID, parsed once (it keys every lookup on the send path)."""

    def __post_init__(self) -> None:
        self.id = uuid.UUID(self.config.id)

    def sendable(self, now: float) -> bool:
        """Its lease still covers a send started ``now``."""
        return now <= self.valid_until - SAFETY


class ChannelOwnership:
    """The channels this process holds (``channels``) and the rounds that keep them."""

    def __init__(
        self,
        resources: Resources,
        *,
        owner: str,
        in_flight: InFlight,
        pacer: Pacer,
        release_waiting: Callable[[OwnedChannel], None],
        clock: Callable[[], float],
    ) -> None:
        self._resources = resources
        self._settings = resources.settings
        self._owner = owner
        self._in_flight = in_flight
        self._pacer = pacer
        self._pacing = self._settings.outbox_pacing_enabled
        self._release_waiting = release_waiting
        self._clock = clock
        self.channels: dict[uuid.UUID, OwnedChannel] = {}
        self.breaker_policy = BreakerPolicy()
        """Replaced by tests that need a short cooldown."""
        self._unloadable: dict[uuid.UUID, float] = {}
        """Channels whose settings could not be loaded → monotonic time to try them again."""

    def holds(self, channel: OwnedChannel) -> bool:
        """``channel`` is still the one this process holds (not lost, not reloaded away)."""
        return self.channels.get(channel.id) is channel

    async def refresh(self) -> bool:
        """One ownership round; returns True when a channel was acquired (claim at once)."""
        s = self._settings
        started = self._clock()
        busy = self._in_flight.channels()
        async with self._resources.sessionmaker() as session, session.begin():
            live = await leases.heartbeat(session, self._owner, s.outbox_channel_lease)
            views = await leases.survey_channels(
                session, s.outbox_channel_renew_interval, s.outbox_channel_grace
            )
            plan = plan_ownership(
                self._owner, held=self.channels, busy=busy, views=views, live_workers=live
            )
            self._unloadable = {c: t for c, t in self._unloadable.items() if t > started}
            take = [c for c in plan.take if c not in self._unloadable]
            grants = await leases.acquire_channels(
                session, self._owner, sorted(plan.keep + take), s.outbox_channel_lease
            )
            # Stop sending on what is given up before the handover gap starts counting: the
            # new owner's first window must not meet our last sends (issue 9, D15).
            for cid in plan.release:
                released = self.channels.pop(cid, None)
                if released is not None:
                    self._release_waiting(released)
                    released.arrived.set()
            await leases.release_channels(session, self._owner, plan.release, s.outbox_handover_gap)
        idle = plan.release
        if plan.surplus:
            log.info(
                "outbox.channels_rebalanced",
                owner=self._owner,
                released=[str(c) for c in plan.surplus],
                share=plan.share,
                workers=live,
            )
        granted = {g.channel_id: g for g in grants}
        for cid in list(self.channels):
            if cid not in granted:
                if cid not in idle:
                    log.warning("outbox.channel_lost", channel_id=str(cid), owner=self._owner)
                lost = self.channels.pop(cid)
                self._release_waiting(lost)  # waiting claims go back for the next owner
                lost.arrived.set()
        new = False
        unusable: list[uuid.UUID] = []
        for grant in grants:
            cid = grant.channel_id
            channel = self.channels.get(cid)
            if channel is None or started - channel.loaded_at > _CHANNEL_REFRESH:
                loaded = await self._try_load(cid, started, held=channel is not None)
                if channel is None:
                    if loaded is None:  # not usable here: do not hold its lease
                        unusable.append(cid)
                        continue
                    channel = self.channels[cid] = loaded
                    new = True
                    if grant.throttled_for > 0 and self._pacing:
                        self._pacer.penalize(channel.limit.key, retry_after=grant.throttled_for)
                    log.info("outbox.channel_acquired", channel_id=str(cid))
                elif loaded is None:  # keep the settings it was sending with; retry later
                    channel.loaded_at = started
                else:  # in place: claim tasks hold a reference
                    if loaded.limit != channel.limit:  # a new rate (the pacer retunes the key)
                        log.info("outbox.channel_rate_changed", channel_id=str(cid))
                        self._release_waiting(channel)  # they were paced for the old rate
                    channel.config = loaded.config
                    channel.rate = loaded.rate
                    channel.limit = loaded.limit
                    channel.per_second = loaded.per_second
                    channel.loaded_at = started
            channel.valid_until = started + s.outbox_channel_lease
        await self.release(unusable)
        return new

    async def _try_load(
        self, channel_id: uuid.UUID, now: float, *, held: bool
    ) -> OwnedChannel | None:
        """``_load``, but one channel that cannot be loaded (e.g. secrets the configured
        keys cannot decrypt after a key-rotation mistake) must not stop the others' round: it
        is logged and skipped, and not taken again here for ``_CHANNEL_REFRESH`` seconds, so a
        worker that can load it (or the not_after sweep) gets its messages."""
        try:
            return await self._load(channel_id, now)
        except Exception as exc:
            log.error(
                "outbox.channel_load_failed",
                channel_id=str(channel_id),
                error=type(exc).__name__,
                held=held,
            )
            self._unloadable[channel_id] = now + _CHANNEL_REFRESH
            return None

    async def _load(self, channel_id: uuid.UUID, now: float) -> OwnedChannel | None:
        async with self._resources.sessionmaker() as session:
            row = await load_with_secrets(session, self._resources.secret_box, channel_id)
        if row is None or not row.enabled:
            return None
        rate = channel_rate(row.platform, row.send_rate_per_second)
        margin = self._settings.outbox_pacing_margin
        paced = Rate(rate.count, rate.per * (1.0 + margin))
        return OwnedChannel(
            config=ChannelConfig(
                id=str(row.id),
                platform=row.platform,
                account_id=row.account_id,
                credentials=row.credentials,
                api_base_url=row.api_base_url,
                webhook_url=f"{self._resources.public_base_url}/webhooks/{row.platform}/{row.id}",
            ),
            rate=rate,
            limit=Limit(channel_key(str(row.id)), paced),
            per_second=rate.count / rate.per,
            valid_until=now,
            loaded_at=now,
            breaker=CircuitBreaker(self.breaker_policy),
        )

    def give_up_all(self) -> list[uuid.UUID]:
        """Stop holding every channel locally (at stop); returns their ids to ``release``."""
        ids = list(self.channels)
        self.channels.clear()
        return ids

    async def release(self, ids: list[uuid.UUID]) -> None:
        if not ids:
            return
        try:
            async with self._resources.sessionmaker() as session, session.begin():
                await leases.release_channels(
                    session, self._owner, ids, self._settings.outbox_handover_gap
                )
        except DB_ERRORS as exc:  # the leases expire on their own
            log.warning("outbox.release_failed", error=type(exc).__name__)

    async def retire(self) -> None:
        try:
            async with self._resources.sessionmaker() as session, session.begin():
                await leases.retire(session, self._owner)
        except DB_ERRORS as exc:  # the heartbeat expires on its own
            log.warning("outbox.retire_failed", error=type(exc).__name__)
