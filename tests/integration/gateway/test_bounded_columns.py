"""A webhook with a value too long for its column (issue 9, D2: a ``Content-Type`` over the
archive's 255 characters) is fitted before the claim: it and its batch-mates keep their
deduplication and archive (before, the batch's claim failed and every member was published
again without dedup, each time)."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.integration.gateway.conftest import (
    Ingress,
    event_id,
    has,
    read_topic,
    telegram_headers,
    telegram_payload,
    whatsapp_payload,
)

pytestmark = pytest.mark.integration


async def test_an_over_long_content_type_costs_nobody_the_dedup(
    ingress: Ingress, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await ingress.create_channel("whatsapp")
    await ingress.create_channel("telegram")
    good = whatsapp_payload(("wamid.B1", "39", "delivered once"))
    assert (await ingress.post_meta("whatsapp", good)).json()["new"] == 1
    bad = telegram_payload(7001, "a long content type")
    long_type = "application/json; x=" + "a" * 300

    async def post_bad() -> httpx.Response:
        headers = {**telegram_headers(), "content-type": long_type}
        return await ingress.client.post(ingress.path("telegram"), content=bad, headers=headers)

    batches_before = ingress.gateway.batcher.batches
    tasks = [post_bad() if n % 10 == 0 else ingress.post_meta("whatsapp", good) for n in range(40)]
    responses = await asyncio.gather(*tasks)

    assert ingress.gateway.batcher.batches - batches_before < 40, "some requests were grouped"
    redelivered = [r.json() for n, r in enumerate(responses) if n % 10]
    assert redelivered == [{"events": 1, "new": 0, "duplicates": 1}] * 36
    bad_answers = Counter(r.json()["new"] for n, r in enumerate(responses) if n % 10 == 0)
    assert bad_answers == {1: 1, 0: 3}, "the bad webhook is deduplicated like any other"
    async with sessionmaker() as session:
        archived = (
            await session.execute(
                text("SELECT platform, content_type FROM gateway_archive ORDER BY id")
            )
        ).all()
    assert [tuple(a) for a in archived] == [
        ("whatsapp", "application/json"),
        ("telegram", "application/json"),
    ]
    marker = whatsapp_payload(("wamid.B2", "39", "marker"))
    assert (await ingress.post_meta("whatsapp", marker)).status_code == 200
    records = await read_topic(ingress.app.settings, has(event_id(ingress, marker, "whatsapp")))
    assert Counter(r["event"]["id"] for r in records) == {
        event_id(ingress, good, "whatsapp"): 1,
        event_id(ingress, bad, "telegram"): 1,
        event_id(ingress, marker, "whatsapp"): 1,
    }
