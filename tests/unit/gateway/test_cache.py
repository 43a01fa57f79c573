"""The channel cache (``gateway.cache``) with an injected loader and clock: TTL, shared loads,
and the last known channel served while the database is away, for a bounded time (D14)."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg  # type: ignore[import-untyped]
import pytest

from channels.service import ChannelWithSecrets
from gateway.cache import ChannelCache

CHANNEL_ID = uuid.uuid4()
CHANNEL = ChannelWithSecrets(CHANNEL_ID, "telegram", "1", None, None, True, {"secret_token": "s"})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Database:
    """The loader: answers ``channel`` or raises ``failure``; counts the loads."""

    def __init__(self) -> None:
        self.channel: ChannelWithSecrets | None = CHANNEL
        self.failure: BaseException | None = None
        self.loads = 0

    async def load(self, channel_id: uuid.UUID) -> ChannelWithSecrets | None:
        self.loads += 1
        await asyncio.sleep(0)
        if self.failure is not None:
            raise self.failure
        return self.channel


def cache(db: Database, clock: Clock, *, stale: float) -> ChannelCache:
    return ChannelCache(db.load, ttl=5.0, timeout=1.0, stale=stale, clock=clock)


async def test_entries_live_one_ttl() -> None:
    db, clock = Database(), Clock()
    channels = cache(db, clock, stale=300)
    assert await channels.get(CHANNEL_ID) is CHANNEL
    clock.now += 4.9
    assert await channels.get(CHANNEL_ID) is CHANNEL
    assert db.loads == 1
    clock.now += 0.2
    assert await channels.get(CHANNEL_ID) is CHANNEL
    assert db.loads == 2


async def test_database_away_serves_the_last_known_channel_then_gives_up() -> None:
    db, clock = Database(), Clock()
    channels = cache(db, clock, stale=300)
    assert await channels.get(CHANNEL_ID) is CHANNEL
    db.failure = asyncpg.CannotConnectNowError("the database system is starting up")

    clock.now += 6  # expired: the reload fails, the last known channel is served
    assert await channels.get(CHANNEL_ID) is CHANNEL
    assert db.loads == 2
    clock.now += 4  # within one TTL of the failure: no new attempt
    assert await channels.get(CHANNEL_ID) is CHANNEL
    assert db.loads == 2
    clock.now += 2  # tried again, failed again, still served (loaded 12 s ago)
    assert await channels.get(CHANNEL_ID) is CHANNEL
    assert db.loads == 3

    clock.now = 1000.0 + 300.5  # the last successful load is now older than ``stale``
    with pytest.raises(asyncpg.CannotConnectNowError):
        await channels.get(CHANNEL_ID)

    db.failure = None  # back: loaded again, fresh
    assert await channels.get(CHANNEL_ID) is CHANNEL


async def test_without_a_last_known_channel_the_error_propagates() -> None:
    db, clock = Database(), Clock()
    db.failure = TimeoutError()
    channels = cache(db, clock, stale=300)
    with pytest.raises(TimeoutError):
        await channels.get(CHANNEL_ID)


async def test_stale_zero_disables_it() -> None:
    db, clock = Database(), Clock()
    channels = cache(db, clock, stale=0)
    assert await channels.get(CHANNEL_ID) is CHANNEL
    db.failure = ConnectionRefusedError()
    clock.now += 6
    with pytest.raises(ConnectionRefusedError):
        await channels.get(CHANNEL_ID)


async def test_a_non_database_error_is_not_papered_over() -> None:
    db, clock = Database(), Clock()
    channels = cache(db, clock, stale=300)
    assert await channels.get(CHANNEL_ID) is CHANNEL
    db.failure = ValueError("a bug")
    clock.now += 6
    with pytest.raises(ValueError, match="a bug"):
        await channels.get(CHANNEL_ID)


async def test_concurrent_misses_share_one_load_and_its_stale_answer() -> None:
    db, clock = Database(), Clock()
    channels = cache(db, clock, stale=300)
    assert await channels.get(CHANNEL_ID) is CHANNEL
    db.failure = OSError("connection refused")
    clock.now += 6
    results = await asyncio.gather(*(channels.get(CHANNEL_ID) for _ in range(5)))
    assert results == [CHANNEL] * 5
    assert db.loads == 2
