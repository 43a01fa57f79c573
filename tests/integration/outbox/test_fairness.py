"""Claim slots are shared fairly between channels (issue 9, D1): real PostgreSQL, the fake
platform servers, one worker holding 50 channels of every platform at their default rates."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from channels.models import Channel
from fake_platforms.server import FakePlatformServer, Fault
from infra.resources import Resources, open_resources
from infra.settings import Settings
from outbox.models import OutboxMessage
from tests.integration.outbox.test_worker import eventually, running, tune

pytestmark = pytest.mark.integration

ACCOUNTS: dict[str, tuple[str, dict[str, str]]] = {
    "messenger": ("11223", {"access_token": "EAApage"}),
    "instagram": ("17841", {"access_token": "EAApage"}),
    "whatsapp": ("10654", {"access_token": "EAAtest"}),
    "telegram": ("70000", {"bot_token": "7000000001:AAtest"}),
    "twilio": ("+1555", {"account_sid": "AC" + "1" * 32, "auth_token": "t" * 32}),
}


@pytest.fixture
async def fake() -> AsyncIterator[FakePlatformServer]:
    async with FakePlatformServer() as server:
        yield server


@pytest.fixture
async def resources(settings: Settings, engine: AsyncEngine) -> AsyncIterator[Resources]:
    async with open_resources(tune(settings)) as res:
        yield res


async def add_channel(res: Resources, fake: FakePlatformServer, platform: str) -> uuid.UUID:
    """A channel at its platform's default rate (``send_rate_per_second`` unset)."""
    prefix, secrets = ACCOUNTS[platform]
    account = f"{prefix}{uuid.uuid4().int % 10**7:07d}"
    async with res.sessionmaker() as session, session.begin():
        channel = Channel(
            platform=platform,
            name=f"fair-{platform}",
            account_id=account,
            secrets=res.secret_box.encrypt_json(secrets),
            api_base_url=fake.base_url,
        )
        session.add(channel)
        await session.flush()
        return channel.id


def recipient(platform: str, n: int) -> str:
    return f"+1555{n:07d}" if platform in ("twilio", "whatsapp") else f"{900000 + n}"


async def enqueue(
    res: Resources, channel_id: uuid.UUID, platform: str, recipients: Sequence[str]
) -> list[uuid.UUID]:
    now = datetime.now(UTC)
    rows = [
        OutboxMessage(
            command_id=f"cmd-{uuid.uuid4().hex}",
            request_hash="0" * 64,
            source="api",
            channel_id=channel_id,
            platform=platform,
            recipient=to,
            conversation_key=f"{channel_id}:{to}",
            content={"kind": "text", "text": f"m{i}"},
            message_metadata={},
            state="queued",
            next_attempt_at=now,
            not_after=now + timedelta(hours=1),
        )
        for i, to in enumerate(recipients)
    ]
    async with res.sessionmaker() as session, session.begin():
        for row in rows:  # one flush each: ``seq`` follows the list
            session.add(row)
            await session.flush()
    return [row.id for row in rows]


async def channels_with_a_sent_message(res: Resources, ids: Sequence[uuid.UUID]) -> set[Any]:
    async with res.sessionmaker() as session:
        rows = await session.scalars(
            select(OutboxMessage.channel_id)
            .where(OutboxMessage.id.in_(ids), OutboxMessage.state == "sent")
            .distinct()
        )
        return set(rows)


async def test_fifty_channels_at_their_default_rates_all_progress_next_to_a_busy_fast_one(
    resources: Resources, fake: FakePlatformServer
) -> None:
    """A Messenger channel (300/s: it could use 600 claims of lookahead) is acquired first and
    stays busy: one long conversation whose sends the platform answers slowly, so it has
    almost nothing claimable at any moment. The 49 channels acquired after it (every
    platform, default rates) must each get messages sent all the same."""
    hog = await add_channel(resources, fake, "messenger")
    fake.inject(Fault.slow(0.5, recipient="hog", times=None))
    hog_ids = await enqueue(resources, hog, "messenger", ["hog"] * 100)  # 50 s of work
    platforms = ["instagram", "whatsapp", "telegram", "twilio", "messenger"]
    async with running(resources) as worker:
        await eventually(lambda: _true_when(len(fake.requests) >= 1))  # the hog is held
        channels: dict[uuid.UUID, str] = {}
        ids: list[uuid.UUID] = []
        for n in range(49):
            platform = platforms[n % len(platforms)]
            cid = await add_channel(resources, fake, platform)
            channels[cid] = platform
            ids += await enqueue(
                resources,
                cid,
                platform,
                [recipient(platform, 2 * n), recipient(platform, 2 * n + 1)],
            )

        async def all_progress() -> bool:
            return await channels_with_a_sent_message(resources, ids) == set(channels)

        await eventually(all_progress, limit=30.0)
        assert worker.stats.sent >= len(channels)
    sent_hog = await channels_with_a_sent_message(resources, hog_ids)
    assert sent_hog == {hog}, "the busy channel kept sending too"
    assert sorted(set(channels.values())) == sorted(set(platforms))


async def _true_when(value: bool) -> bool:
    return value
