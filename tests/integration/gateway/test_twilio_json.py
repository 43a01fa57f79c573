"""A signed Twilio webhook with a JSON body (Event Streams, ``bodySHA256``) becomes canonical
events: the README's "every verified webhook becomes canonical events" holds for it too."""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path

import pytest

from tests.integration.gateway.conftest import TW_TOKEN, Ingress, ids, read_topic

pytestmark = pytest.mark.integration

BODY = (Path(__file__).parents[2] / "fixtures/payloads/twilio/event_streams.json").read_bytes()


async def test_signed_twilio_json_body_lands_as_events(ingress: Ingress) -> None:
    await ingress.create_channel("twilio")
    path = ingress.path("twilio") + "?bodySHA256=" + hashlib.sha256(BODY).hexdigest()
    url = ingress.app.base_url + path
    sig = base64.b64encode(hmac.new(TW_TOKEN.encode(), url.encode(), hashlib.sha1).digest())
    reply = await ingress.client.post(
        path,
        content=BODY,
        headers={"content-type": "application/json", "x-twilio-signature": sig.decode()},
    )
    assert reply.status_code == 200, reply.text
    records = await read_topic(ingress.app.settings, lambda r: len(r) >= 3)
    types = sorted(r["event"]["type"] for r in records)
    assert types == ["message.received", "message.status", "unsupported"]
    assert len(set(ids(records))) == 3
    tampered = await ingress.client.post(
        path,
        content=BODY.replace(b"Ahoy!", b"Ahoy?"),
        headers={"content-type": "application/json", "x-twilio-signature": sig.decode()},
    )
    assert tampered.status_code == 401
