"""The messages API on a real PostgreSQL: intake, idempotency, validation, scopes, operator
actions, listing; lifecycle events relayed to the real broker once each."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from infra import kafka
from infra.settings import Settings
from outbox.app import component
from outbox.events import run_relay
from outbox.models import ConversationWindow, OutboxAttempt, OutboxEvent, OutboxMessage
from tests.conftest import ADMIN_KEY
from tests.support import RunningApp, running_app

pytestmark = pytest.mark.integration

WA_ACCOUNT = "106540352242922"
WA_USER = "393331234567"


async def create_channel(api: RunningApp, platform: str = "whatsapp") -> str:
    bodies: dict[str, dict[str, Any]] = {
        "whatsapp": {
            "platform": "whatsapp",
            "name": "Support",
            "account_id": WA_ACCOUNT,
            "credentials": {"access_token": "t", "app_secret": "s", "verify_token": "v"},
        },
        "twilio": {
            "platform": "twilio",
            "name": "SMS",
            "account_id": "+15551234567",
            "credentials": {"account_sid": "AC" + "0" * 32, "auth_token": "t"},
        },
        "telegram": {
            "platform": "telegram",
            "name": "Bot",
            "account_id": "123456",
            "credentials": {
                "bot_token": "123456:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                "secret_token": "s",
            },
        },
    }
    response = await api.client.post(
        "/v1/channels", json=bodies[platform], headers=api.auth(ADMIN_KEY)
    )
    assert response.status_code == 201, response.text
    channel_id: str = response.json()["id"]
    return channel_id


def text_body(channel_id: str, text: str = "hello", to: str = WA_USER) -> dict[str, Any]:
    return {"channel_id": channel_id, "to": to, "content": {"kind": "text", "text": text}}


def template_body(channel_id: str, to: str = WA_USER) -> dict[str, Any]:
    return {
        "channel_id": channel_id,
        "to": to,
        "content": {"kind": "template", "template": {"name": "welcome", "language": "en"}},
    }


async def issue_key(api: RunningApp, *scopes: str) -> str:
    response = await api.client.post(
        "/v1/api-keys",
        json={"name": "-".join(scopes), "scopes": list(scopes)},
        headers=api.auth(ADMIN_KEY),
    )
    assert response.status_code == 201, response.text
    key: str = response.json()["key"]
    return key


@pytest.fixture
async def api(settings: Settings, engine: AsyncEngine) -> AsyncIterator[RunningApp]:
    settings = settings.model_copy(update={"outbox_whatsapp_window_check": False})
    async with running_app(settings, [component(settings)]) as running:
        yield running


@pytest.fixture
async def api_with_window(settings: Settings, engine: AsyncEngine) -> AsyncIterator[RunningApp]:
    async with running_app(settings, [component(settings)]) as running:
        yield running


async def send(
    api: RunningApp, body: dict[str, Any], key: str | None = None, api_key: str = ADMIN_KEY
) -> Any:
    headers = api.auth(api_key)
    if key is not None:
        headers["Idempotency-Key"] = key
    return await api.client.post("/v1/messages", json=body, headers=headers)


async def event_types(sessionmaker: async_sessionmaker[AsyncSession]) -> list[str]:
    async with sessionmaker() as session:
        rows = await session.scalars(select(OutboxEvent).order_by(OutboxEvent.id))
        return [orjson.loads(r.value)["type"] for r in rows]


async def test_send_is_committed_before_202_and_idempotent(
    api: RunningApp, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    channel_id = await create_channel(api)
    body = text_body(channel_id) | {"metadata": {"order": 42, "tags": ["a", "b"]}}
    before = datetime.now(UTC)
    first = await send(api, body, key="order-42-confirmation")
    assert first.status_code == 202, first.text
    accepted = first.json()
    assert accepted["command_id"] == "order-42-confirmation"
    assert accepted["state"] == "queued"
    assert accepted["source"] == "api"
    assert first.headers["Location"] == f"/v1/messages/{accepted['id']}"
    assert "Idempotent-Replayed" not in first.headers
    not_after = datetime.fromisoformat(accepted["not_after"])
    assert before + timedelta(hours=24) <= not_after <= datetime.now(UTC) + timedelta(hours=24)

    # Durable when the 202 arrives: another connection sees the row and its queued event.
    async with sessionmaker() as session:
        row = await session.get(OutboxMessage, uuid.UUID(accepted["id"]))
    assert row is not None
    assert row.conversation_key == f"{channel_id}:{WA_USER}"
    assert row.next_attempt_at <= datetime.now(UTC)
    assert len(row.request_hash) == 64
    assert await event_types(sessionmaker) == ["message.queued"]

    # Same key, same body (keys in another order): the same answer, nothing new.
    reordered = {"metadata": {"tags": ["a", "b"], "order": 42}, **text_body(channel_id)}
    replay = await send(api, reordered, key="order-42-confirmation")
    assert replay.status_code == 202
    assert replay.json()["id"] == accepted["id"]
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.headers["Location"] == first.headers["Location"]

    # Same key, different body: 409 with a clear message.
    conflict = await send(api, text_body(channel_id, "bye"), key="order-42-confirmation")
    assert conflict.status_code == 409
    error = conflict.json()["error"]
    assert error["code"] == "idempotency_conflict"
    assert "different body" in error["message"]
    assert error["details"] == {"message_id": accepted["id"]}

    # The key is honoured as long as the row exists (rows are kept): a day later, same answer.
    async with sessionmaker() as session, session.begin():
        await session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == row.id)
            .values(created_at=datetime.now(UTC) - timedelta(hours=30))
        )
    late = await send(api, body, key="order-42-confirmation")
    assert late.status_code == 202
    assert late.json()["id"] == accepted["id"]

    # No key: one is generated and returned (no retry safety).
    keyless = await send(api, text_body(channel_id))
    assert keyless.status_code == 202
    assert uuid.UUID(keyless.json()["command_id"])
    assert keyless.json()["id"] != accepted["id"]
    assert await event_types(sessionmaker) == ["message.queued", "message.queued"]


@pytest.mark.parametrize(
    ("platform", "content", "fragment"),
    [
        (
            "twilio",
            {
                "kind": "interactive",
                "interactive": {"body": "Pick", "buttons": [{"id": "a", "title": "A"}]},
            },
            "Twilio",
        ),
        (
            "twilio",
            {"kind": "media", "media": {"kind": "sticker", "url": "https://x/y.webp"}},
            "sticker",
        ),
    ],
)
async def test_content_the_platform_cannot_express_is_422(
    api: RunningApp,
    sessionmaker: async_sessionmaker[AsyncSession],
    platform: str,
    content: dict[str, Any],
    fragment: str,
) -> None:
    channel_id = await create_channel(api, platform)
    response = await send(api, {"channel_id": channel_id, "to": "+15557654321", "content": content})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "unsupported_content"
    assert fragment in error["message"]
    async with sessionmaker() as session:
        assert (await session.scalars(select(OutboxMessage))).all() == []
    assert await event_types(sessionmaker) == []


async def test_channel_and_command_validation(api: RunningApp) -> None:
    unknown = await send(api, text_body(str(uuid.uuid4())))
    assert unknown.status_code == 422
    assert unknown.json()["error"]["code"] == "unknown_channel"
    not_an_id = await send(api, text_body("nope"))  # typed as a UUID in the OpenAPI document
    assert not_an_id.status_code == 422
    assert not_an_id.json()["error"]["code"] == "validation_error"
    assert "channel_id" in not_an_id.json()["error"]["message"]

    channel_id = await create_channel(api)
    past = text_body(channel_id) | {"not_after": "2020-01-01T00:00:00Z"}
    expired = await send(api, past)
    assert expired.status_code == 422
    assert "not_after" in expired.json()["error"]["message"]
    naive = await send(api, text_body(channel_id) | {"not_after": "2999-01-01T00:00:00"})
    assert naive.status_code == 422
    typo = await send(api, text_body(channel_id) | {"captoin": "x"})
    assert typo.status_code == 422
    reaction_reply = await send(
        api,
        {
            "channel_id": channel_id,
            "to": WA_USER,
            "content": {"kind": "reaction", "reaction": {"message_id": "wamid.1", "emoji": "👍"}},
            "reply_to": "wamid.2",
        },
    )
    assert reaction_reply.status_code == 422
    assert "reaction" in reaction_reply.json()["error"]["message"]

    # PostgreSQL cannot store U+0000: refused up front, wherever it is, not a 500 at insert
    for nul in (
        text_body(channel_id) | {"to": "39\u00003"},
        {**text_body(channel_id), "content": {"kind": "text", "text": "a\u0000b"}},
        text_body(channel_id) | {"metadata": {"order": ["x\u0000"]}},
    ):
        refused = await send(api, nul)
        assert refused.status_code == 422, refused.text
        assert "NUL" in refused.json()["error"]["message"]
    far = await send(api, text_body(channel_id) | {"not_after": "9999-12-31T23:59:59-05:00"})
    assert far.status_code == 422
    assert "not_after" in far.json()["error"]["message"]

    await api.client.post(f"/v1/channels/{channel_id}/disable", headers=api.auth(ADMIN_KEY))
    disabled = await send(api, text_body(channel_id))
    assert disabled.status_code == 422
    assert disabled.json()["error"]["code"] == "channel_disabled"


async def test_fields_the_rows_cannot_hold_are_422_and_nothing_is_stored(
    api: RunningApp, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """Refused up front rather than a 500 at insert, or an event too large to ever publish."""
    channel_id = await create_channel(api)
    big_metadata = await send(api, text_body(channel_id) | {"metadata": {"blob": "a" * 1_100_000}})
    assert big_metadata.status_code == 422, big_metadata.text
    assert big_metadata.json()["error"]["code"] == "validation_error"
    assert "metadata" in big_metadata.json()["error"]["message"]
    assert "16384 bytes" in big_metadata.json()["error"]["message"]
    async with sessionmaker() as session:
        assert (await session.scalars(select(OutboxMessage))).all() == []
    assert await event_types(sessionmaker) == []
    # Longer than their varchar columns (was a 500 from the failing INSERT)
    for body, key, field in (
        (text_body(channel_id, to="9" * 201), None, "to"),
        (text_body(channel_id) | {"reply_to": "w" * 301}, None, "reply_to"),
        (text_body(channel_id), "k" * 201, "Idempotency-Key"),
    ):
        refused = await send(api, body, key=key)
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["code"] == "validation_error"
        assert field in refused.json()["error"]["message"]
    async with sessionmaker() as session:
        assert (await session.scalars(select(OutboxMessage))).all() == []
    assert await event_types(sessionmaker) == []

    fits = await send(api, text_body(channel_id) | {"metadata": {"blob": "a" * 16_000}})
    assert fits.status_code == 202, fits.text
    longest = text_body(channel_id, to="9" * 200) | {"reply_to": "w" * 300}
    at_limits = await send(api, longest, key="k" * 200)
    assert at_limits.status_code == 202, at_limits.text


async def test_whatsapp_window(
    api_with_window: RunningApp, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    api = api_with_window
    channel_id = await create_channel(api)
    closed = await send(api, text_body(channel_id))
    assert closed.status_code == 422
    assert closed.json()["error"]["code"] == "window_closed"
    assert "template" in closed.json()["error"]["message"]
    template = await send(api, template_body(channel_id))
    assert template.status_code == 202, template.text

    async with sessionmaker() as session, session.begin():
        session.add(
            ConversationWindow(
                conversation_key=f"{channel_id}:{WA_USER}",
                last_inbound_at=datetime.now(UTC) - timedelta(hours=23),
            )
        )
    open_ = await send(api, text_body(channel_id, to="+39 333 1234567"))
    assert open_.status_code == 202, open_.text

    async with sessionmaker() as session, session.begin():
        await session.execute(
            update(ConversationWindow).values(
                last_inbound_at=datetime.now(UTC) - timedelta(hours=25)
            )
        )
    stale = await send(api, text_body(channel_id))
    assert stale.status_code == 422
    assert "closed" in stale.json()["error"]["message"]


async def test_scopes(api: RunningApp) -> None:
    channel_id = await create_channel(api)
    reader = await issue_key(api, "read")
    sender = await issue_key(api, "send")
    assert (await api.client.post("/v1/messages", json=text_body(channel_id))).status_code == 401
    assert (await send(api, text_body(channel_id), api_key="sb_wrong")).status_code == 401
    forbidden = await send(api, text_body(channel_id), api_key=reader)
    assert forbidden.status_code == 403
    assert "'send' scope" in forbidden.json()["error"]["message"]
    sent = await send(api, text_body(channel_id), api_key=sender)
    assert sent.status_code == 202
    message_id = sent.json()["id"]
    assert (
        await api.client.get(f"/v1/messages/{message_id}", headers=api.auth(sender))
    ).status_code == 403
    assert (
        await api.client.get(f"/v1/messages/{message_id}", headers=api.auth(reader))
    ).status_code == 200
    assert (await api.client.get("/v1/dead-letters", headers=api.auth(reader))).status_code == 200
    for action in ("cancel", "retry"):
        assert (
            await api.client.post(f"/v1/messages/{message_id}/{action}", headers=api.auth(reader))
        ).status_code == 403
    assert (
        await api.client.post(f"/v1/messages/{message_id}/cancel", headers=api.auth(sender))
    ).status_code == 200


async def test_cancel_retry_detail_and_dead_letters(
    api: RunningApp, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    channel_id = await create_channel(api)
    auth = api.auth(ADMIN_KEY)
    ids = [(await send(api, text_body(channel_id, f"m{i}"))).json()["id"] for i in range(3)]
    to_cancel, to_kill, to_send = ids

    cancelled = await api.client.post(f"/v1/messages/{to_cancel}/cancel", headers=auth)
    assert cancelled.status_code == 200
    assert cancelled.json()["state"] == "cancelled"
    assert cancelled.json()["finished_at"] is not None
    again = await api.client.post(f"/v1/messages/{to_cancel}/cancel", headers=auth)
    assert again.status_code == 200
    not_dead = await api.client.post(f"/v1/messages/{to_cancel}/retry", headers=auth)
    assert not_dead.status_code == 409
    assert not_dead.json()["error"]["details"] == {"state": "cancelled"}

    # What the worker would have done: two failed attempts, then dead; one message sent.
    started = datetime.now(UTC) - timedelta(minutes=5)
    async with sessionmaker() as session, session.begin():
        for n in (1, 2):
            session.add(
                OutboxAttempt(
                    message_id=uuid.UUID(to_kill),
                    attempt=n,
                    worker="w1",
                    started_at=started + timedelta(seconds=n),
                    duration_ms=12.5,
                    outcome="retryable",
                    http_status=503,
                    error_code="http_503",
                    error_title="Service Unavailable",
                    retry_after=None,
                    response_excerpt="oops",
                )
            )
        await session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == uuid.UUID(to_kill))
            .values(
                state="dead",
                attempts=2,
                last_error={"code": "http_503", "title": "Service Unavailable", "retryable": True},
                finished_at=datetime.now(UTC),
            )
        )
        await session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == uuid.UUID(to_send))
            .values(state="sent", attempts=1, platform_message_id="wamid.sent")
        )

    detail = (await api.client.get(f"/v1/messages/{to_kill}", headers=auth)).json()
    assert detail["state"] == "dead"
    assert detail["attempts"] == 2
    assert [h["attempt"] for h in detail["history"]] == [1, 2]
    assert detail["history"][0]["http_status"] == 503
    assert detail["last_error"]["code"] == "http_503"
    assert detail["next_attempt_at"] is None
    sent_detail = (await api.client.get(f"/v1/messages/{to_send}", headers=auth)).json()
    assert sent_detail["platform_message_id"] == "wamid.sent"
    assert (await api.client.get(f"/v1/messages/{uuid.uuid4()}", headers=auth)).status_code == 404

    dead = (await api.client.get("/v1/dead-letters", headers=auth)).json()
    assert [m["id"] for m in dead["items"]] == [to_kill]
    assert dead["next_cursor"] is None
    other = await api.client.get(f"/v1/dead-letters?channel_id={uuid.uuid4()}", headers=auth)
    assert other.json()["items"] == []

    sent_cancel = await api.client.post(f"/v1/messages/{to_send}/cancel", headers=auth)
    assert sent_cancel.status_code == 409
    assert sent_cancel.json()["error"]["code"] == "invalid_state"
    assert "sent" in sent_cancel.json()["error"]["message"]

    redriven = await api.client.post(f"/v1/messages/{to_kill}/retry", headers=auth)
    assert redriven.status_code == 200, redriven.text
    body = redriven.json()
    assert body["state"] == "queued"
    assert body["attempts"] == 2
    assert datetime.fromisoformat(body["not_after"]) > datetime.now(UTC) + timedelta(hours=23)
    assert body["finished_at"] is None
    async with sessionmaker() as session:
        row = await session.get(OutboxMessage, uuid.UUID(to_kill))
        assert row is not None
        assert row.retry_base == 2, "the retry schedule restarts after a redrive"
        ids = (await session.scalars(select(OutboxEvent.value))).all()  # type: ignore[assignment]
    assert len({orjson.loads(v)["id"] for v in ids}) == len(ids), "every transition has its own id"
    assert (await api.client.post(f"/v1/messages/{to_kill}/retry", headers=auth)).status_code == 409
    assert (await api.client.get("/v1/dead-letters", headers=auth)).json()["items"] == []
    assert (
        len((await api.client.get(f"/v1/messages/{to_kill}", headers=auth)).json()["history"]) == 2
    )

    assert await event_types(sessionmaker) == [
        "message.queued",
        "message.queued",
        "message.queued",
        "message.cancelled",
        "message.queued",
    ]


async def test_list_filters_and_cursor_pagination(api: RunningApp) -> None:
    auth = api.auth(ADMIN_KEY)
    wa = await create_channel(api)
    tg = await create_channel(api, "telegram")
    ids = []
    for i in range(5):
        ids.append((await send(api, text_body(wa, f"m{i}", to=f"39333000000{i % 2}"))).json()["id"])
    tg_id = (await send(api, text_body(tg, "hi", to="777"))).json()["id"]
    newest_first = [tg_id, *reversed(ids)]

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await api.client.get("/v1/messages", params=params, headers=auth)).json()
        seen += [m["id"] for m in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == newest_first
    assert pages == 3

    async def ids_for(**params: Any) -> list[str]:
        response = await api.client.get("/v1/messages", params=params, headers=auth)
        assert response.status_code == 200, response.text
        return [m["id"] for m in response.json()["items"]]

    assert await ids_for(channel_id=tg) == [tg_id]
    assert await ids_for(channel_id=wa, to="393330000001") == [ids[3], ids[1]]
    await api.client.post(f"/v1/messages/{ids[0]}/cancel", headers=auth)
    assert await ids_for(state="cancelled") == [ids[0]]
    assert set(await ids_for(state=["cancelled", "queued"])) == set(newest_first)
    assert await ids_for(created_after=(datetime.now(UTC) + timedelta(minutes=1)).isoformat()) == []
    assert (
        await ids_for(created_before=(datetime.now(UTC) - timedelta(minutes=1)).isoformat()) == []
    )
    assert (
        len(await ids_for(created_after=(datetime.now(UTC) - timedelta(minutes=5)).isoformat()))
        == 6
    )
    bad = await api.client.get("/v1/messages", params={"cursor": "garbage!"}, headers=auth)
    assert bad.status_code == 400
    beyond_bigint = base64.urlsafe_b64encode(b"s:9223372036854775808").decode().rstrip("=")
    huge = await api.client.get("/v1/messages", params={"cursor": beyond_bigint}, headers=auth)
    assert huge.status_code == 400
    assert "cursor" in huge.json()["error"]["message"]
    long = await api.client.get("/v1/messages", params={"cursor": "A" * 65}, headers=auth)
    assert long.status_code == 400
    nul_to = await api.client.get("/v1/messages", params={"to": "a\x00b"}, headers=auth)
    assert nul_to.status_code == 400
    bad_state = await api.client.get("/v1/messages", params={"state": "lost"}, headers=auth)
    assert bad_state.status_code == 422


async def test_lifecycle_events_reach_the_topic_once_each(
    api: RunningApp, settings: Settings
) -> None:
    channel_id = await create_channel(api)
    auth = api.auth(ADMIN_KEY)
    first = (await send(api, text_body(channel_id), key="k1")).json()
    await send(api, text_body(channel_id), key="k1")  # replay: no second event
    second = (await send(api, text_body(channel_id, "two"), key="k2")).json()
    await api.client.post(f"/v1/messages/{second['id']}/cancel", headers=auth)
    await api.client.post(f"/v1/messages/{second['id']}/cancel", headers=auth)  # no-op

    stop = asyncio.Event()
    relay = asyncio.create_task(run_relay(api.resources, stop, idle_interval=0.05))
    consumer = kafka.create_consumer(
        settings, settings.topic("outbound.events.v1"), group_id=f"g-{uuid.uuid4().hex}"
    )
    await consumer.start()
    received: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(30):
            while len(received) < 3:
                batch = await consumer.getmany(timeout_ms=300)
                for records in batch.values():
                    received += [orjson.loads(r.value) for r in records]
        with contextlib.suppress(TimeoutError):  # nothing more arrives
            async with asyncio.timeout(1.0):
                while True:
                    batch = await consumer.getmany(timeout_ms=300)
                    for records in batch.values():
                        received += [orjson.loads(r.value) for r in records]
    finally:
        await consumer.stop()
        stop.set()
        await relay
    summary = sorted((e["data"]["message_id"], e["type"]) for e in received)
    assert summary == sorted(
        [
            (first["id"], "message.queued"),
            (second["id"], "message.queued"),
            (second["id"], "message.cancelled"),
        ]
    )
    event = next(e for e in received if e["data"]["message_id"] == first["id"])
    assert event["subject"] == f"{channel_id}:{WA_USER}"
    assert event["data"]["command_id"] == "k1"
    assert event["data"]["platform"] == "whatsapp"
