"""Ingress end to end: signed webhooks of each platform → canonical events on the topic."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import pytest
import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import normalizer
from tests.conftest import ADMIN_KEY
from tests.integration.gateway.conftest import (
    ACCOUNTS,
    ALL_SECRETS,
    META_SECRET,
    META_VERIFY,
    TG_SECRET,
    TW_TOKEN,
    Ingress,
    has,
    ids,
    meta_headers,
    meta_messaging_payload,
    read_topic,
    telegram_headers,
    telegram_payload,
    twilio_form,
    twilio_signature,
    whatsapp_payload,
)

pytestmark = pytest.mark.integration


async def count(sm: async_sessionmaker[AsyncSession], table: str) -> int:
    async with sm() as session:
        query = text(f"SELECT count(*) FROM {table}")  # noqa: S608 - fixed table names
        return int((await session.execute(query)).scalar_one())


def expected(platform: str, body: bytes, channel_id: str, **kw: Any) -> list[dict[str, Any]]:
    events = normalizer.normalize(
        platform, body, channel_id=channel_id, account_id=ACCOUNTS[platform], **kw
    )
    return [json.loads(normalizer.dump_event(e)) for e in events]


async def test_each_platform_lands_as_canonical_events(ingress: Ingress) -> None:
    for platform in ACCOUNTS:
        await ingress.create_channel(platform)
    wa = whatsapp_payload(("wamid.A1", "16505551234", "hi"), ("wamid.A2", "16505550000", "yo"))
    ms = meta_messaging_payload("messenger", "m_1", "hello messenger")
    ig = meta_messaging_payload("instagram", "ig_1", "hello instagram")
    tg = telegram_payload(1001, "hello telegram")
    tw = twilio_form("SM" + "1" * 32, "hello twilio")

    responses = [
        await ingress.post_meta("whatsapp", wa),
        await ingress.post_meta("messenger", ms),
        await ingress.post_meta("instagram", ig),
        await ingress.post_telegram(tg),
        await ingress.post_twilio(tw),
    ]
    assert [r.status_code for r in responses] == [200] * 5, [r.text for r in responses]
    assert responses[0].json() == {"events": 2, "new": 2, "duplicates": 0}
    assert responses[4].headers["content-type"].startswith("application/xml")
    assert b"<Response/>" in responses[4].content

    want = (
        expected("whatsapp", wa, ingress.channels["whatsapp"])
        + expected("messenger", ms, ingress.channels["messenger"])
        + expected("instagram", ig, ingress.channels["instagram"])
        + expected("telegram", tg, ingress.channels["telegram"])
    )
    records = await read_topic(ingress.app.settings, lambda rs: len(rs) >= len(want) + 1)
    got = {r["event"]["id"]: r for r in records}
    assert len(got) == len(records) == len(want) + 1
    for event in want:
        record = got[event["id"]]
        assert record["event"] == event
        assert record["key"] == event["subject"]
        assert record["headers"]["content-type"] == b"application/cloudevents+json"
    twilio_event = next(r["event"] for r in records if r["event"]["data"]["platform"] == "twilio")
    received = datetime.fromisoformat(twilio_event["time"])
    assert (
        twilio_event
        == expected(
            "twilio",
            urlencode(tw).encode(),
            ingress.channels["twilio"],
            content_type="application/x-www-form-urlencoded",
            received_at=received,
        )[0]
    )
    assert twilio_event["data"]["message"]["text"] == "hello twilio"


async def test_the_same_webhook_three_times_is_published_once(
    ingress: Ingress, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await ingress.create_channel("whatsapp")
    body = whatsapp_payload(("wamid.D1", "111", "one"), ("wamid.D2", "111", "two"))
    results = [await ingress.post_meta("whatsapp", body) for _ in range(3)]
    assert [r.status_code for r in results] == [200, 200, 200]
    assert [r.json()["new"] for r in results] == [2, 0, 0]
    # Concurrent redeliveries serialise on the dedup index: still nothing new.
    again = await asyncio.gather(*(ingress.post_meta("whatsapp", body) for _ in range(5)))
    assert {r.json()["new"] for r in again} == {0}
    # A marker on the same conversation (same partition, later offset): everything published
    # before it is on the topic when we see it.
    marker = whatsapp_payload(("wamid.D3", "111", "marker"))
    assert (await ingress.post_meta("whatsapp", marker)).status_code == 200
    marker_id = expected("whatsapp", marker, ingress.channels["whatsapp"])[0]["id"]
    records = await read_topic(ingress.app.settings, has(marker_id))
    first = expected("whatsapp", body, ingress.channels["whatsapp"])
    assert ids(records) == [first[0]["id"], first[1]["id"], marker_id]
    assert await count(sessionmaker, "gateway_dedup") == 3
    assert await count(sessionmaker, "gateway_archive") == 2, "duplicates are not archived"


async def test_response_only_after_durable(
    ingress: Ingress, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """When the client holds the 200, another connection sees the dedup row and archive, and
    a consumer can read the record: nothing is committed after the response."""
    await ingress.create_channel("telegram")
    for update_id in range(2000, 2005):
        body = telegram_payload(update_id, f"msg {update_id}")
        response = await ingress.post_telegram(body)
        assert response.status_code == 200
        event_id = expected("telegram", body, ingress.channels["telegram"])[0]["id"]
        async with sessionmaker() as session:
            seen = await session.execute(
                text("SELECT count(*) FROM gateway_dedup WHERE event_id = :id"), {"id": event_id}
            )
            assert seen.scalar_one() == 1
        assert await count(sessionmaker, "gateway_archive") == update_id - 1999
    # acks=all was awaited before the 200: the records are readable (no wait needed beyond I/O)
    records = await read_topic(ingress.app.settings, lambda rs: len(rs) >= 5)
    assert len(records) == 5


@pytest.mark.parametrize("variant", ["forged", "missing", "other_body", "wrong_secret"])
async def test_bad_signatures_are_401_and_leave_no_trace(
    ingress: Ingress, sessionmaker: async_sessionmaker[AsyncSession], variant: str
) -> None:
    for platform in ("whatsapp", "telegram", "twilio"):
        await ingress.create_channel(platform)
    wa = whatsapp_payload(("wamid.X1", "999", "evil"))
    signed_other = meta_headers(whatsapp_payload(("wamid.X0", "999", "genuine")))
    tw = twilio_form("SM" + "9" * 32, "evil")
    tw_url = ingress.app.base_url + ingress.path("twilio")
    form = {"content-type": "application/x-www-form-urlencoded"}
    cases: list[tuple[str, bytes, dict[str, str]]] = {
        "forged": [
            ("whatsapp", wa, {**meta_headers(wa), "x-hub-signature-256": "sha256=" + "0" * 64}),
            ("telegram", telegram_payload(7, "x"), telegram_headers("not-the-secret")),
            ("twilio", urlencode(tw).encode(), {**form, "x-twilio-signature": "AAAA"}),
        ],
        "missing": [
            ("whatsapp", wa, {"content-type": "application/json"}),
            ("telegram", telegram_payload(7, "x"), {"content-type": "application/json"}),
            ("twilio", urlencode(tw).encode(), form),
        ],
        "other_body": [
            ("whatsapp", wa, signed_other),
            (
                "twilio",
                urlencode({**tw, "Body": "changed"}).encode(),
                {**form, "x-twilio-signature": twilio_signature(tw_url, tw)},
            ),
        ],
        "wrong_secret": [
            ("whatsapp", wa, meta_headers(wa, "another-app-secret")),
            (
                "twilio",
                urlencode(tw).encode(),
                {**form, "x-twilio-signature": twilio_signature(tw_url, tw, "other-token")},
            ),
        ],
    }[variant]
    for platform, body, headers in cases:
        response = await ingress.client.post(ingress.path(platform), content=body, headers=headers)
        assert response.status_code == 401, (platform, response.text)
        assert response.json() == {"error": {"code": "unauthorized", "message": "unauthorized"}}
    assert await count(sessionmaker, "gateway_dedup") == 0
    assert await count(sessionmaker, "gateway_archive") == 0
    assert await count(sessionmaker, "gateway_spool") == 0
    marker = telegram_payload(8, "genuine")
    assert (await ingress.post_telegram(marker)).status_code == 200
    marker_id = expected("telegram", marker, ingress.channels["telegram"])[0]["id"]
    records = await read_topic(ingress.app.settings, has(marker_id))
    assert ids(records) == [marker_id], "nothing from the rejected webhooks was published"


async def test_rotation_accepts_the_previous_secret(ingress: Ingress) -> None:
    await ingress.create_channel(
        "whatsapp", app_secret="new-secret", previous_app_secret=META_SECRET
    )
    await ingress.create_channel("telegram", secret_token="new-tg", previous_secret_token=TG_SECRET)
    await ingress.create_channel("twilio", auth_token="new-token", previous_auth_token=TW_TOKEN)
    wa = whatsapp_payload(("wamid.R1", "5", "rotated"))
    assert (await ingress.post_meta("whatsapp", wa)).status_code == 200
    new = await ingress.client.post(
        ingress.path("whatsapp"),
        content=whatsapp_payload(("wamid.R2", "5", "new")),
        headers=meta_headers(whatsapp_payload(("wamid.R2", "5", "new")), "new-secret"),
    )
    assert new.status_code == 200
    assert (await ingress.post_telegram(telegram_payload(9, "x"))).status_code == 200
    assert (await ingress.post_twilio(twilio_form("SM" + "2" * 32, "x"))).status_code == 200
    assert (
        await ingress.post_twilio(twilio_form("SM" + "3" * 32, "x"), token="new-token")
    ).status_code == 200
    forged = await ingress.post_twilio(twilio_form("SM" + "4" * 32, "x"), token="stale")
    assert forged.status_code == 401


async def test_handshake(ingress: Ingress) -> None:
    await ingress.create_channel("whatsapp")
    await ingress.create_channel("telegram")
    await ingress.create_channel("twilio")
    query = {
        "hub.mode": "subscribe",
        "hub.verify_token": META_VERIFY,
        "hub.challenge": "1158201444",
    }
    ok = await ingress.client.get(ingress.path("whatsapp"), params=query)
    assert ok.status_code == 200
    assert ok.text == "1158201444"
    assert ok.headers["content-type"].startswith("text/plain")
    wrong = await ingress.client.get(
        ingress.path("whatsapp"), params={**query, "hub.verify_token": "nope"}
    )
    assert wrong.status_code == 403
    assert (await ingress.client.get(ingress.path("telegram"), params=query)).status_code == 405
    assert (await ingress.client.get(ingress.path("twilio"), params=query)).status_code == 405
    unknown = await ingress.client.get(
        "/webhooks/whatsapp/00000000-0000-0000-0000-000000000000", params=query
    )
    assert unknown.status_code == 404


async def test_client_errors(
    ingress: Ingress, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await ingress.create_channel("whatsapp")
    await ingress.create_channel("telegram")
    wa_path = ingress.path("whatsapp")
    body = whatsapp_payload(("wamid.E1", "1", "x"))
    # 404: unknown id, not a uuid, unknown platform, another platform's channel
    for path in (
        "/webhooks/whatsapp/00000000-0000-0000-0000-000000000000",
        "/webhooks/whatsapp/not-a-uuid",
        f"/webhooks/line/{ingress.channels['whatsapp']}",
        f"/webhooks/messenger/{ingress.channels['whatsapp']}",
        f"/webhooks/telegram/{ingress.channels['whatsapp']}",
    ):
        response = await ingress.client.post(path, content=body, headers=meta_headers(body))
        assert response.status_code == 404, path
    # 415: not JSON for Meta
    wrong_type = {**meta_headers(body), "content-type": "text/plain"}
    assert (await ingress.client.post(wa_path, content=body, headers=wrong_type)).status_code == 415
    # 400: verified but not parseable (a parsed body of another shape is 200: see
    # test_unexpected_bodies.py)
    junk = b"{not json"
    assert (
        await ingress.client.post(wa_path, content=junk, headers=meta_headers(junk))
    ).status_code == 400
    not_json = b"\xff\xfe"
    tg = await ingress.client.post(
        ingress.path("telegram"), content=not_json, headers=telegram_headers()
    )
    assert tg.status_code == 400
    # 413 from Content-Length, and while streaming a chunked body with no length
    limit = ingress.app.settings.webhook_max_body_bytes
    big = b"x" * (limit + 1)
    assert (
        await ingress.client.post(wa_path, content=big, headers=meta_headers(big))
    ).status_code == 413

    async def chunks() -> Any:
        for _ in range(limit // 65536 + 2):
            yield b"y" * 65536

    streamed = await ingress.client.post(
        wa_path, content=chunks(), headers={"content-type": "application/json"}
    )
    assert streamed.status_code == 413
    assert await count(sessionmaker, "gateway_dedup") == 0


async def test_disabled_channel_is_404(ingress: Ingress) -> None:
    channel_id = await ingress.create_channel("telegram")
    disabled = await ingress.client.post(
        f"/v1/channels/{channel_id}/disable", headers=ingress.app.auth(ADMIN_KEY)
    )
    assert disabled.status_code == 200
    assert (await ingress.post_telegram(telegram_payload(1, "x"))).status_code == 404


async def test_secrets_never_logged(ingress: Ingress, capfd: pytest.CaptureFixture[str]) -> None:
    await ingress.create_channel("whatsapp")
    await ingress.create_channel("telegram")
    with structlog.testing.capture_logs() as logs:
        body = whatsapp_payload(("wamid.L1", "1", "private message text"))
        await ingress.post_meta("whatsapp", body)
        await ingress.client.post(
            ingress.path("whatsapp"), content=body, headers=meta_headers(body, "bad")
        )
        await ingress.client.post(
            ingress.path("telegram"), content=b"{}", headers=telegram_headers(TG_SECRET + "x")
        )
        await ingress.client.get(
            ingress.path("whatsapp"),
            params={"hub.mode": "subscribe", "hub.verify_token": META_VERIFY, "hub.challenge": "c"},
        )
    assert any(entry["event"] == "gateway.rejected" for entry in logs)
    out, err = capfd.readouterr()
    text_logged = repr(logs) + out + err
    for secret in (*ALL_SECRETS, TG_SECRET + "x", "private message text"):
        assert secret not in text_logged
    assert META_SECRET not in text_logged


async def test_metrics_count_outcomes(ingress: Ingress) -> None:
    await ingress.create_channel("telegram")
    body = telegram_payload(77, "m")
    await ingress.post_telegram(body)
    await ingress.post_telegram(body)
    await ingress.client.post(
        ingress.path("telegram"), content=body, headers=telegram_headers("no")
    )
    exposition = (await ingress.client.get("/metrics")).text
    for line in (
        'switchboard_gateway_webhooks_total{outcome="accepted",platform="telegram",reason=""}',
        'switchboard_gateway_webhooks_total{outcome="duplicate",platform="telegram",reason=""}',
        'switchboard_gateway_webhooks_total{outcome="rejected",platform="telegram",reason="unauthorized"}',
        'switchboard_gateway_events_total{outcome="published",platform="telegram"}',
        'switchboard_gateway_request_duration_seconds_bucket{le="0.005",platform="telegram"}',
    ):
        assert line in exposition, line
