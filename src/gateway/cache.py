"""In-process cache of channels with their decrypted credentials.

A webhook must not cost a database round trip just to find its channel's secret. Entries
(including "no such channel") live ``gateway_channel_cache_ttl_seconds`` (default 5 s), so
disabling a channel, changing its platform or rotating a secret takes effect within that TTL
on every replica. Concurrent misses for one id share a single load, bounded by ``timeout``
(``gateway_db_timeout_seconds``): a stalled PostgreSQL raises ``TimeoutError`` instead of
holding every request for that channel. The secrets only ever live in this process's memory,
as they do in the channel service.

PostgreSQL away (issue 9, D14): when a reload fails with a database error, the last known
entry is served if it was loaded at most ``stale`` seconds ago
(``gateway_channel_stale_seconds``, default 300 s), and the reload is tried again one TTL
later (so at most one webhook per channel and TTL waits for the database). The ingress then
keeps answering 200 from the broker alone ("PostgreSQL down, Kafka up") for that long, instead
of for at most one TTL. Past it, or for a channel never loaded, the error propagates (503).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from channels.service import ChannelWithSecrets
from infra.dberrors import DATABASE_ERRORS, kind_name
from infra.logging import get_logger

log = get_logger(__name__)

_MAX_ENTRIES = 100_000

Load = Callable[[uuid.UUID], Awaitable[ChannelWithSecrets | None]]


@dataclass(frozen=True, slots=True)
class _Entry:
    expires_at: float
    loaded_at: float
    """When the database last confirmed it (the age that ``stale`` bounds)."""
    channel: ChannelWithSecrets | None


class ChannelCache:
    def __init__(
        self,
        load: Load,
        ttl: float,
        timeout: float,
        *,
        stale: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load = load
        self._ttl = ttl
        self._timeout = timeout
        self._stale = stale
        self._clock = clock
        self._entries: dict[uuid.UUID, _Entry] = {}
        self._loading: dict[uuid.UUID, asyncio.Future[ChannelWithSecrets | None]] = {}

    async def get(self, channel_id: uuid.UUID) -> ChannelWithSecrets | None:
        entry = self._entries.get(channel_id)
        if entry is not None and entry.expires_at > self._clock():
            return entry.channel
        pending = self._loading.get(channel_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[ChannelWithSecrets | None] = (
            asyncio.get_running_loop().create_future()
        )
        self._loading[channel_id] = future
        try:
            async with asyncio.timeout(self._timeout):
                channel = await self._load(channel_id)
        except DATABASE_ERRORS as exc:
            served = self._stale_entry(channel_id, entry, exc)
            if served is None:
                future.set_exception(exc)
                future.exception()  # retrieved: waiters re-raise it, nobody else must
                raise
            future.set_result(served.channel)
            return served.channel
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()
            raise
        finally:
            self._loading.pop(channel_id, None)
        if len(self._entries) >= _MAX_ENTRIES:
            self._entries.clear()
        now = self._clock()
        self._entries[channel_id] = _Entry(now + self._ttl, now, channel)
        future.set_result(channel)
        return channel

    def _stale_entry(
        self, channel_id: uuid.UUID, entry: _Entry | None, exc: BaseException
    ) -> _Entry | None:
        """The last known entry, kept for another TTL, if it is young enough to serve."""
        now = self._clock()
        if entry is None or now - entry.loaded_at > self._stale:
            return None
        kept = _Entry(now + self._ttl, entry.loaded_at, entry.channel)
        self._entries[channel_id] = kept
        log.warning(
            "gateway.channel_stale",
            channel_id=str(channel_id),
            age_s=round(now - entry.loaded_at, 1),
            error=type(exc).__name__,
            kind=kind_name(exc),
        )
        return kept
