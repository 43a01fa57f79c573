"""A signed body of a shape we do not expect is the platform speaking (issue 9, D10): 200,
archived, published once as one ``unsupported`` event with ``raw``, its id derived from the
body (a redelivery is a duplicate). Before, each of these got 400 and was lost. 400 stays for
bytes that cannot be parsed at all; an unsigned body is still 401."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import normalizer
from tests.integration.gateway.conftest import (
    ACCOUNTS,
    TW_SID,
    Ingress,
    has,
    meta_headers,
    read_topic,
    telegram_headers,
)

pytestmark = pytest.mark.integration

META_BODIES = {
    "whatsapp": b'{"object": "whatsapp_business_account", "field": "account_update"}',
    "messenger": b'{"object": "page", "entry": "not a list"}',
    "instagram": b'[{"object": "instagram"}]',
}
TELEGRAM_BODY = b'{"update_id": "17", "message": {"text": "a string update id"}}'
TWILIO_FORM = {"AccountSid": TW_SID, "From": "+15557654321", "Body": "no MessageSid"}


async def post(ingress: Ingress, platform: str, body: bytes) -> httpx.Response:
    if platform == "telegram":
        return await ingress.client.post(
            ingress.path(platform), content=body, headers=telegram_headers()
        )
    if platform == "twilio":
        assert body == urlencode(TWILIO_FORM).encode()
        return await ingress.post_twilio(TWILIO_FORM)
    return await ingress.post_meta(platform, body)


def expected_id(ingress: Ingress, platform: str, body: bytes) -> str:
    content_type = "application/x-www-form-urlencoded" if platform == "twilio" else None
    events = normalizer.normalize(
        platform,
        body,
        channel_id=ingress.channels[platform],
        account_id=ACCOUNTS[platform],
        content_type=content_type,
        authenticated=True,
    )
    assert [e.type for e in events] == ["unsupported"]
    return events[0].id


CASES = [
    *META_BODIES.items(),
    ("telegram", TELEGRAM_BODY),
    ("twilio", urlencode(TWILIO_FORM).encode()),
]


@pytest.mark.parametrize(("platform", "body"), CASES, ids=[c[0] for c in CASES])
async def test_a_signed_body_of_an_unexpected_shape_is_published_as_unsupported(
    ingress: Ingress,
    sessionmaker: async_sessionmaker[AsyncSession],
    platform: str,
    body: bytes,
) -> None:
    await ingress.create_channel(platform)

    first = await post(ingress, platform, body)
    again = await post(ingress, platform, body)

    assert first.status_code == 200, first.text
    assert again.status_code == 200, again.text
    if platform != "twilio":  # Twilio gets TwiML
        assert first.json() == {"events": 1, "new": 1, "duplicates": 0}
        assert again.json() == {"events": 1, "new": 0, "duplicates": 1}
    event_id = expected_id(ingress, platform, body)
    records = await read_topic(ingress.app.settings, has(event_id))
    published = [r["event"] for r in records if r["event"]["id"] == event_id]
    assert len(published) == 1
    assert published[0]["type"] == "unsupported"
    raw = published[0]["data"]["raw"]
    if platform == "twilio":
        assert raw == TWILIO_FORM
    else:
        assert raw == json.loads(body)
    async with sessionmaker() as session:
        archived = (await session.execute(text("SELECT platform, body FROM gateway_archive"))).all()
    assert [(a.platform, bytes(a.body)) for a in archived] == [(platform, body)]


async def test_unparseable_bytes_stay_400_and_unsigned_bodies_401(ingress: Ingress) -> None:
    await ingress.create_channel("whatsapp")
    junk = b'{"entry": ['
    assert (await ingress.post_meta("whatsapp", junk)).status_code == 400
    unsigned = META_BODIES["whatsapp"]
    response = await ingress.client.post(
        ingress.path("whatsapp"),
        content=unsigned,
        headers={**meta_headers(unsigned), "x-hub-signature-256": "sha256=" + "0" * 64},
    )
    assert response.status_code == 401
