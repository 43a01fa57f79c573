"""Issue 9, D9 end to end: a captured Twilio webhook re-split under its own signature is
refused, not published again as a new event."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest

from tests.integration.gateway.conftest import (
    Ingress,
    ids,
    read_topic,
    twilio_form,
    twilio_signature,
)

pytestmark = pytest.mark.integration


async def test_a_replayed_resplit_twilio_webhook_is_refused(ingress: Ingress) -> None:
    await ingress.create_channel("twilio")
    sid = "SM" + "5" * 32
    original = twilio_form(sid, "hello")
    first = await ingress.post_twilio(original)
    assert first.status_code == 200, first.text

    path = ingress.path("twilio")
    signature = twilio_signature(ingress.app.base_url + path, original)
    resplit = {k: v for k, v in original.items() if k != "NumMedia"}
    resplit["MessageSid"] = sid + "NumMedia0"
    replay = await ingress.client.post(
        path,
        content=urlencode(resplit).encode(),
        headers={
            "content-type": "application/x-www-form-urlencoded",
            "x-twilio-signature": signature,
        },
    )
    assert replay.status_code in (400, 401), replay.text

    # Only the original's event is on the topic: publish a marker and read up to it.
    marker = await ingress.post_twilio(twilio_form("SM" + "6" * 32, "marker"))
    assert marker.status_code == 200
    records = await read_topic(
        ingress.app.settings, lambda rs: any("marker" in str(r["event"]) for r in rs)
    )
    texts = [str(r["event"]) for r in records]
    assert sum("hello" in t for t in texts) == 1, ids(records)
