"""Group commit on real PostgreSQL and the broker: many concurrent webhooks, duplicates
within and across batches, and batches whose COMMIT fails."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

import normalizer
from tests.integration.gateway.conftest import ACCOUNTS, Ingress, has, read_topic, whatsapp_payload
from tests.support import scalar

pytestmark = pytest.mark.integration


def event_ids(ingress: Ingress, body: bytes) -> list[str]:
    events = normalizer.normalize(
        "whatsapp", body, channel_id=ingress.channels["whatsapp"], account_id=ACCOUNTS["whatsapp"]
    )
    return [e.id for e in events]


async def test_concurrent_webhooks_with_duplicates_publish_each_event_once(
    ingress: Ingress, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await ingress.create_channel("whatsapp")
    bodies = [
        whatsapp_payload(
            (f"wamid.G{n}a", str(n % 7), f"{n}a"),
            (f"wamid.G{n}b", str(n % 7), f"{n}b"),
            (f"wamid.G{n}a", str(n % 7), f"{n}a"),  # a repeat inside one webhook
        )
        for n in range(40)
    ]
    # Webhooks sharing an id with another webhook (a different body: the platform batched
    # the same message into two deliveries).
    overlaps = [whatsapp_payload((f"wamid.G{n}b", str(n % 7), f"{n}b")) for n in range(0, 40, 4)]
    deliveries = [*bodies, *bodies, *bodies, *overlaps]
    random.Random(4).shuffle(deliveries)
    batches_before = ingress.gateway.batcher.batches

    responses = await asyncio.gather(*(ingress.post_meta("whatsapp", b) for b in deliveries))

    assert [r.status_code for r in responses] == [200] * len(deliveries)
    batches = ingress.gateway.batcher.batches - batches_before
    assert batches < len(deliveries), "concurrent webhooks were grouped"
    all_ids = {i for b in bodies for i in event_ids(ingress, b)}
    assert len(all_ids) == 80
    assert sum(r.json()["new"] for r in responses) == 80, "each id is new exactly once"
    for body, response in zip(deliveries, responses, strict=True):
        assert response.json()["events"] == len(event_ids(ingress, body))
    records = await read_topic(ingress.app.settings, has(*all_ids))
    published = [r["event"]["id"] for r in records]
    assert sorted(published) == sorted(all_ids), "each event published once"
    assert await scalar(sessionmaker, "SELECT count(*) FROM gateway_dedup") == 80
    archived = await scalar(sessionmaker, "SELECT count(*) FROM gateway_archive")
    assert 40 <= archived <= 40 + len(overlaps), "only webhooks with something new"
    # Within a conversation, a webhook's events keep their order (webhooks whose second
    # event also came in an overlapping delivery have no order to keep).
    for n, body in enumerate(bodies):
        if n % 4 == 0:
            continue
        a, b = event_ids(ingress, body)[:2]
        assert published.index(a) < published.index(b)


@pytest.fixture
async def failing_commit(engine: AsyncEngine) -> AsyncIterator[None]:
    """COMMIT fails for any transaction that archived a body containing ``FAILCOMMIT``
    (a deferred constraint trigger runs at commit time)."""
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "CREATE OR REPLACE FUNCTION test_fail_commit() RETURNS trigger "
                "LANGUAGE plpgsql AS $$ BEGIN "
                "IF position('FAILCOMMIT' in convert_from(NEW.body, 'UTF8')) > 0 THEN "
                "RAISE EXCEPTION 'injected commit failure'; END IF; RETURN NULL; END $$"
            )
        )
        await conn.execute(
            text(
                "CREATE CONSTRAINT TRIGGER test_fail_commit AFTER INSERT ON gateway_archive "
                "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION test_fail_commit()"
            )
        )
    try:
        yield
    finally:
        async with engine.begin() as conn:
            await conn.execute(text("DROP TRIGGER IF EXISTS test_fail_commit ON gateway_archive"))
            await conn.execute(text("DROP FUNCTION IF EXISTS test_fail_commit()"))


async def test_failed_commit_with_events_on_kafka_is_200_without_dedup(
    ingress: Ingress, sessionmaker: async_sessionmaker[AsyncSession], failing_commit: None
) -> None:
    """The batch's COMMIT fails after the broker acknowledged: every member's events are
    durable on Kafka, so they get 200 (undeduplicated); no dedup row of the batch remains."""
    await ingress.create_channel("whatsapp")
    poison = whatsapp_payload(("wamid.F0", "9", "FAILCOMMIT"))
    mates = [whatsapp_payload((f"wamid.F{n}", "9", f"mate {n}")) for n in range(1, 8)]
    responses = await asyncio.gather(*(ingress.post_meta("whatsapp", b) for b in [poison, *mates]))
    assert [r.status_code for r in responses] == [200] * 8
    poison_id = event_ids(ingress, poison)[0]
    all_ids = [poison_id, *(event_ids(ingress, b)[0] for b in mates)]
    records = await read_topic(ingress.app.settings, has(*all_ids))
    assert {r["event"]["id"] for r in records} == set(all_ids)
    async with sessionmaker() as session:
        kept = (
            await session.execute(
                text("SELECT count(*) FROM gateway_dedup WHERE event_id = :id"), {"id": poison_id}
            )
        ).scalar_one()
    assert kept == 0, "the failed batch left no dedup row"
    assert await scalar(sessionmaker, "SELECT count(*) FROM gateway_spool") == 0


async def test_failed_commit_of_spooled_events_is_503(
    ingress: Ingress,
    sessionmaker: async_sessionmaker[AsyncSession],
    failing_commit: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Broker suspect: the events go to the spool, PostgreSQL is their only copy; a failed
    COMMIT must not be answered 200. The platform's retry then succeeds."""
    await ingress.create_channel("whatsapp")
    with monkeypatch.context() as patch:
        patch.setattr(ingress.gateway.publisher, "broker_suspect", lambda: True)
        poison = whatsapp_payload(("wamid.S0", "8", "FAILCOMMIT"))
        response = await ingress.post_meta("whatsapp", poison)
        assert response.status_code == 503
        assert await scalar(sessionmaker, "SELECT count(*) FROM gateway_spool") == 0
        assert await scalar(sessionmaker, "SELECT count(*) FROM gateway_dedup") == 0
        fine = whatsapp_payload(("wamid.S1", "8", "fine"))
        assert (await ingress.post_meta("whatsapp", fine)).status_code == 200
    records = await read_topic(ingress.app.settings, has(event_ids(ingress, fine)[0]))
    assert event_ids(ingress, poison)[0] not in {r["event"]["id"] for r in records}
