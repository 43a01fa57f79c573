"""A NUL character in an event id or a conversation id (PostgreSQL text cannot hold one) is a
malformed webhook: 400, nothing stored or published, and its batch-mates keep their dedup."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import normalizer
from tests.integration.gateway.conftest import (
    ACCOUNTS,
    Ingress,
    event_id,
    has,
    read_topic,
    whatsapp_payload,
)
from tests.support import scalar

pytestmark = pytest.mark.integration


async def test_a_nul_in_the_conversation_id_is_400_and_nothing_is_kept(
    ingress: Ingress, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await ingress.create_channel("whatsapp")
    nul = whatsapp_payload(("wamid.N1", "39\x009", "sender with a NUL"))
    assert (
        "\x00"
        in normalizer.normalize(
            "whatsapp",
            nul,
            channel_id=ingress.channels["whatsapp"],
            account_id=ACCOUNTS["whatsapp"],
        )[0].subject
    )

    response = await ingress.post_meta("whatsapp", nul)

    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "bad_request"
    assert "NUL" in response.json()["error"]["message"]
    for query in (
        "SELECT count(*) FROM gateway_dedup",
        "SELECT count(*) FROM gateway_archive",
        "SELECT count(*) FROM gateway_spool",
    ):
        assert await scalar(sessionmaker, query) == 0, query
    marker = whatsapp_payload(("wamid.N2", "39", "published after it"))
    assert (await ingress.post_meta("whatsapp", marker)).status_code == 200
    records = await read_topic(ingress.app.settings, has(event_id(ingress, marker)))
    assert [r["event"]["id"] for r in records] == [event_id(ingress, marker)]
    exposition = (await ingress.client.get("/metrics")).text
    assert (
        'switchboard_gateway_webhooks_total{outcome="rejected",platform="whatsapp",'
        'reason="malformed"}' in exposition
    )


async def test_nul_webhooks_do_not_cost_their_batch_mates_the_dedup(
    ingress: Ingress, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """Concurrent redeliveries share batches with NUL webhooks: the redeliveries are still
    duplicates (before, the batch's claim statement failed and every member was published
    again without dedup)."""
    await ingress.create_channel("whatsapp")
    good = whatsapp_payload(("wamid.D1", "39", "delivered once"))
    first = await ingress.post_meta("whatsapp", good)
    assert first.json() == {"events": 1, "new": 1, "duplicates": 0}
    nuls = [whatsapp_payload((f"wamid.DN{n}", f"39\x00{n}", "NUL")) for n in range(4)]
    deliveries = [nuls[n // 10] if n % 10 == 0 else good for n in range(40)]
    batches_before = ingress.gateway.batcher.batches

    responses = await asyncio.gather(*(ingress.post_meta("whatsapp", b) for b in deliveries))

    assert ingress.gateway.batcher.batches - batches_before < 40, "some requests were grouped"
    pairs = list(zip(deliveries, responses, strict=True))
    redelivered = [(r.status_code, r.json()) for body, r in pairs if body == good]
    assert redelivered == [(200, {"events": 1, "new": 0, "duplicates": 1})] * 36
    assert [r.status_code for body, r in pairs if body != good] == [400] * 4
    assert await scalar(sessionmaker, "SELECT count(*) FROM gateway_dedup") == 1
    assert await scalar(sessionmaker, "SELECT count(*) FROM gateway_archive") == 1
    marker = whatsapp_payload(("wamid.D2", "39", "marker"))
    assert (await ingress.post_meta("whatsapp", marker)).status_code == 200
    records = await read_topic(ingress.app.settings, has(event_id(ingress, marker)))
    assert [r["event"]["id"] for r in records] == [
        event_id(ingress, good),
        event_id(ingress, marker),
    ], "the redeliveries were not published again, the NUL webhooks not at all"
