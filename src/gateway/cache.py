"""In-process cache of channels with their decrypted credentials.

A webhook must not cost a database round trip just to find its channel's secret. Entries
(including "no such channel") live ``gateway_channel_cache_ttl_seconds`` (default 5 s), so
disabling a channel, changing its platform or rotating a secret takes effect within that TTL
on every replica. Concurrent misses for one id share a single load, bounded by ``timeout``
(``gateway_db_timeout_seconds``): a stalled PostgreSQL raises ``TimeoutError`` (the webhook
gets 503) instead of holding every request for that channel. The secrets only ever live in
this process's memory, as they do in the channel service.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from switchboard.channels.service import ChannelWithSecrets, load_with_secrets
from switchboard.crypto import SecretBox

_MAX_ENTRIES = 100_000


class ChannelCache:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        box: SecretBox,
        ttl: float,
        timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._box = box
        self._ttl = ttl
        self._timeout = timeout
        self._clock = clock
        self._entries: dict[uuid.UUID, tuple[float, ChannelWithSecrets | None]] = {}
        self._loading: dict[uuid.UUID, asyncio.Future[ChannelWithSecrets | None]] = {}

    async def get(self, channel_id: uuid.UUID) -> ChannelWithSecrets | None:
        entry = self._entries.get(channel_id)
        now = self._clock()
        if entry is not None and entry[0] > now:
            return entry[1]
        pending = self._loading.get(channel_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[ChannelWithSecrets | None] = (
            asyncio.get_running_loop().create_future()
        )
        self._loading[channel_id] = future
        try:
            async with asyncio.timeout(self._timeout), self._sessionmaker() as session:
                channel = await load_with_secrets(session, self._box, channel_id)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody else must
            raise
        finally:
            self._loading.pop(channel_id, None)
        if len(self._entries) >= _MAX_ENTRIES:
            self._entries.clear()
        self._entries[channel_id] = (self._clock() + self._ttl, channel)
        future.set_result(channel)
        return channel
