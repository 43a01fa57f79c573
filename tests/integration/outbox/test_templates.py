"""WhatsApp template registry (issue 12, item 5) against the fake Graph server: paged sync,
``GET /v1/channels/{id}/templates``, intake refusals (``template_invalid``), status webhooks
signed and sent through the gateway; and the per-channel ``auto_answer_callbacks`` switch.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from outbox import service
from outbox.contracts import SendCommand
from outbox.models import ConversationWindow, MessageTemplate, OutboxMessage
from outbox.templates import run_template_sync, sync_once
from tests.conftest import ADMIN_KEY
from tests.integration.gateway.conftest import TG_SECRET, channel_body, meta_headers
from tests.integration.outbox.test_platform_receipts import FIXTURES, Stack, stack
from tests.integration.outbox.test_worker import eventually

__all__ = ["stack"]  # the fixture, shared with test_platform_receipts

pytestmark = pytest.mark.integration

WABA = "102290129340398"
TO = "393331234567"


def _template(name: str, status: str = "APPROVED", body: str = "Hello") -> dict[str, Any]:
    return {
        "name": name,
        "language": "en_US",
        "status": status,
        "category": "UTILITY",
        "id": str(abs(hash(name)) % 10**15),
        "components": [{"type": "BODY", "text": body}],
    }


TEMPLATES = [
    _template("hello_world"),
    _template("order_update", body="Hi {{1}}, your order {{2}} has shipped"),
    _template("named_greeting", body="Hi {{first_name}}"),
    _template("old_promo", status="PAUSED"),
    _template("draft", status="PENDING"),
    {
        **_template("track_order"),
        "components": [
            {"type": "BODY", "text": "Your parcel"},
            {
                "type": "BUTTONS",
                "buttons": [{"type": "URL", "text": "Track", "url": "https://t.example/{{1}}"}],
            },
        ],
    },
]


async def _channel(stack: Stack, **extra: Any) -> str:
    body = {**channel_body("whatsapp"), "api_base_url": stack.fake.base_url, **extra}
    reply = await stack.app.client.post(
        "/v1/channels", json=body, headers=stack.app.auth(ADMIN_KEY)
    )
    assert reply.status_code == 201, reply.text
    assert reply.json()["business_account_id"] == extra.get("business_account_id")
    return str(reply.json()["id"])


def _body(channel_id: str, name: str, *params: Any, kind: str = "body") -> dict[str, Any]:
    template: dict[str, Any] = {"name": name, "language": "en_US"}
    if params:
        template["components"] = [{"type": kind, "parameters": list(params)}]
    return {
        "channel_id": channel_id,
        "to": TO,
        "content": {"kind": "template", "template": template},
    }


async def _send(stack: Stack, body: dict[str, Any]) -> Any:
    return await stack.app.client.post(
        "/v1/messages",
        json=body,
        headers={**stack.app.auth(ADMIN_KEY), "Idempotency-Key": uuid.uuid4().hex},
    )


def _text(value: str) -> dict[str, str]:
    return {"type": "text", "text": value}


async def _sync(stack: Stack) -> int | None:
    async with aiohttp.ClientSession() as client:
        return await sync_once(stack.app.resources, client)


def _listing_requests(stack: Stack) -> list[Any]:
    return [r for r in stack.fake.requests if r.path.endswith("/message_templates")]


async def test_registry_syncs_paged_and_lists(stack: Stack) -> None:
    stack.fake.templates.set(WABA, TEMPLATES)
    channel_id = await _channel(stack, business_account_id=WABA)
    listing = await stack.app.client.get(
        f"/v1/channels/{channel_id}/templates", headers=stack.app.auth(ADMIN_KEY)
    )
    assert listing.status_code == 200
    assert listing.json()["synced"] is False
    assert listing.json()["templates"] == []

    assert await _sync(stack) == 1
    requests = _listing_requests(stack)
    assert len(requests) == 3  # 6 templates, 2 a page
    assert all(r.path == f"/v21.0/{WABA}/message_templates" for r in requests)
    assert all(r.headers["Authorization"] == "Bearer EAAG-access-token-987" for r in requests)

    listing = await stack.app.client.get(
        f"/v1/channels/{channel_id}/templates", headers=stack.app.auth(ADMIN_KEY)
    )
    document = listing.json()
    assert document["synced"] is True
    assert document["synced_at"] is not None
    assert document["business_account_id"] == WABA
    assert [(t["name"], t["status"]) for t in document["templates"]] == [
        ("draft", "PENDING"),
        ("hello_world", "APPROVED"),
        ("named_greeting", "APPROVED"),
        ("old_promo", "PAUSED"),
        ("order_update", "APPROVED"),
        ("track_order", "APPROVED"),
    ]
    assert document["templates"][4]["components"] == TEMPLATES[1]["components"]

    missing = await stack.app.client.get(
        f"/v1/channels/{uuid.uuid4()}/templates", headers=stack.app.auth(ADMIN_KEY)
    )
    assert missing.status_code == 404


@pytest.mark.parametrize(
    ("body", "wrong"),
    [
        (("nope",), "'nope' is not in the channel's registry"),
        (("old_promo",), "'old_promo' is PAUSED"),
        (("draft",), "'draft' is PENDING"),
        (("order_update", _text("Ada")), "the body expects 2 parameter(s), got 1"),
        (("hello_world", _text("x")), "the body takes no parameters, got 1"),
        (("named_greeting", {"type": "text", "text": "x"}), "named parameters first_name"),
        (("order_update", _text("a"), _text("b"), "header"), "the header takes no parameters"),
        (("track_order",), "the URL button at index 0 needs its parameter"),
    ],
)
async def test_synced_registry_refuses_invalid_template_sends(
    stack: Stack, body: tuple[Any, ...], wrong: str
) -> None:
    stack.fake.templates.set(WABA, TEMPLATES)
    channel_id = await _channel(stack, business_account_id=WABA)
    await _sync(stack)
    name, *params = body
    kind = "body"
    if params and params[-1] == "header":
        kind, params = "header", params[:-1]
    reply = await _send(stack, _body(channel_id, name, *params, kind=kind))
    assert reply.status_code == 422, reply.text
    error = reply.json()["error"]
    assert error["code"] == "template_invalid"
    assert wrong in error["message"]
    assert "Ada" not in error["message"]


async def test_approved_template_is_sent_and_kafka_refusals_fail(stack: Stack) -> None:
    stack.fake.templates.set(WABA, TEMPLATES)
    channel_id = await _channel(stack, business_account_id=WABA)
    await _sync(stack)
    named = {"type": "text", "parameter_name": "first_name", "text": "Ada"}
    for body in (
        _body(channel_id, "order_update", _text("Ada"), _text("A-1")),
        _body(channel_id, "named_greeting", named),
    ):
        reply = await _send(stack, body)
        assert reply.status_code == 202, reply.text
        await stack.until_state(uuid.UUID(reply.json()["id"]), "sent")
    sent = [r.json for r in stack.fake.requests if r.path.endswith("/messages")]
    assert [s["template"]["name"] for s in sent] == ["order_update", "named_greeting"]

    command = SendCommand.model_validate({"id": "k-1", **_body(channel_id, "old_promo")})
    async with stack.app.resources.sessionmaker() as session, session.begin():
        accepted = await service.accept(session, stack.app.settings, command, source="kafka")
    assert accepted.message.state == "failed"
    assert accepted.message.last_error is not None
    assert accepted.message.last_error["code"] == "template_invalid"


def _status_webhook(name: str, event: str) -> bytes:
    change = {
        "field": "message_template_status_update",
        "value": {
            "event": event,
            "message_template_id": 594425479261596,
            "message_template_name": name,
            "message_template_language": "en_US",
            "reason": "NONE",
        },
    }
    entry = {"id": WABA, "time": 1764750000 + len(event), "changes": [change]}
    return json.dumps({"object": "whatsapp_business_account", "entry": [entry]}).encode()


async def _status_of(stack: Stack, name: str) -> str | None:
    async with stack.app.resources.sessionmaker() as session:
        status: str | None = await session.scalar(
            select(MessageTemplate.status).where(MessageTemplate.name == name)
        )
        return status


@pytest.mark.parametrize("event", ["DISABLED", "PAUSED"])
async def test_status_webhook_through_the_gateway_refuses_later_sends(
    stack: Stack, event: str
) -> None:
    stack.fake.templates.set(WABA, TEMPLATES)
    channel_id = await _channel(stack, business_account_id=WABA)
    await _sync(stack)
    assert (await _send(stack, _body(channel_id, "hello_world"))).status_code == 202

    body = _status_webhook("hello_world", event)
    reply = await stack.app.client.post(
        f"/webhooks/whatsapp/{channel_id}", content=body, headers=meta_headers(body)
    )
    assert reply.status_code == 200, reply.text

    async def flipped() -> bool:
        return await _status_of(stack, "hello_world") == event

    await eventually(flipped, limit=30)
    refused = await _send(stack, _body(channel_id, "hello_world"))
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "template_invalid"

    body = _status_webhook("hello_world", "REINSTATED")
    reply = await stack.app.client.post(
        f"/webhooks/whatsapp/{channel_id}", content=body, headers=meta_headers(body)
    )

    async def reinstated() -> bool:
        return await _status_of(stack, "hello_world") == "APPROVED"

    await eventually(reinstated, limit=30)
    assert (await _send(stack, _body(channel_id, "hello_world"))).status_code == 202


async def test_unsynced_channels_pass_through(stack: Stack) -> None:
    stack.fake.templates.set(WABA, TEMPLATES)
    without_waba = await _channel(stack)
    assert (await _send(stack, _body(without_waba, "anything"))).status_code == 202

    stack.fake.templates.set("999", TEMPLATES)
    other = {**channel_body("whatsapp"), "account_id": "106540352240000"}
    reply = await stack.app.client.post(
        "/v1/channels",
        json={**other, "api_base_url": stack.fake.base_url, "business_account_id": "999"},
        headers=stack.app.auth(ADMIN_KEY),
    )
    channel_id = reply.json()["id"]
    await _sync(stack)
    assert (await _send(stack, _body(channel_id, "anything"))).status_code == 422
    # A new WABA id makes the registry stale: sends pass until the next sync.
    patched = await stack.app.client.patch(
        f"/v1/channels/{channel_id}",
        json={"business_account_id": "1000"},
        headers=stack.app.auth(ADMIN_KEY),
    )
    assert patched.status_code == 200, patched.text
    assert (await _send(stack, _body(channel_id, "anything"))).status_code == 202


async def test_failed_listing_keeps_the_channel_unsynced(stack: Stack) -> None:
    channel_id = await _channel(stack, business_account_id="404404")  # unknown to Graph
    assert await _sync(stack) == 0
    assert (await _send(stack, _body(channel_id, "anything"))).status_code == 202


async def test_sync_loop_runs_at_start(stack: Stack) -> None:
    stack.fake.templates.set(WABA, TEMPLATES[:1])
    channel_id = await _channel(stack, business_account_id=WABA)
    stop = asyncio.Event()
    task = asyncio.create_task(run_template_sync(stack.app.resources, stop))
    try:

        async def synced() -> bool:
            return await _status_of(stack, "hello_world") == "APPROVED"

        await eventually(synced, limit=30)
    finally:
        stop.set()
        await task
    assert (await _send(stack, _body(channel_id, "nope"))).status_code == 422


async def test_platform_fields_are_refused_on_other_platforms(stack: Stack) -> None:
    body = {**channel_body("telegram"), "business_account_id": WABA}
    reply = await stack.app.client.post(
        "/v1/channels", json=body, headers=stack.app.auth(ADMIN_KEY)
    )
    assert reply.status_code == 422
    channel_id = await stack.channel("whatsapp")
    reply = await stack.app.client.patch(
        f"/v1/channels/{channel_id}",
        json={"auto_answer_callbacks": False},
        headers=stack.app.auth(ADMIN_KEY),
    )
    assert reply.status_code == 422
    assert "only for telegram channels" in reply.json()["error"]["message"]


async def test_telegram_auto_answer_can_be_switched_off(stack: Stack) -> None:
    body = {**channel_body("telegram"), "api_base_url": stack.fake.base_url}
    body["auto_answer_callbacks"] = False
    reply = await stack.app.client.post(
        "/v1/channels", json=body, headers=stack.app.auth(ADMIN_KEY)
    )
    assert reply.status_code == 201, reply.text
    assert reply.json()["auto_answer_callbacks"] is False
    channel_id = reply.json()["id"]
    press = (FIXTURES / "telegram" / "callback_query.json").read_bytes()
    headers = {"content-type": "application/json", "x-telegram-bot-api-secret-token": TG_SECRET}
    reply = await stack.app.client.post(
        f"/webhooks/telegram/{channel_id}", content=press, headers=headers
    )
    assert reply.status_code == 200

    # The press records its conversation window in the transaction that decides the answer.
    async def consumed() -> bool:
        async with stack.app.resources.sessionmaker() as session:
            return (await session.scalar(select(ConversationWindow).limit(1))) is not None

    await eventually(consumed, limit=30)
    async with stack.app.resources.sessionmaker() as session:
        rows = list(await session.scalars(select(OutboxMessage)))
    assert rows == []
    assert not [r for r in stack.fake.requests if r.path.endswith("/answerCallbackQuery")]


PROMO = {
    **_template("spring_promo"),
    "category": "MARKETING",
    "components": [
        {"type": "HEADER", "format": "IMAGE", "example": {"header_handle": ["4::aW"]}},
        {"type": "BODY", "text": "Hi {{1}}, use the code below"},
        {
            "type": "BUTTONS",
            "buttons": [
                {"type": "QUICK_REPLY", "text": "Stop promotions"},
                {"type": "COPY_CODE", "example": "SPRING25"},
                {"type": "URL", "text": "Shop", "url": "https://shop.example/{{1}}"},
            ],
        },
    ],
}


async def test_header_and_button_parameters_are_checked_at_intake(stack: Stack) -> None:
    """Issue 12 item 5: a media header needs one parameter of its media type, a copy-code and
    a dynamic URL button need theirs, a quick reply takes a payload; a send that fits goes out
    as given."""
    stack.fake.templates.set(WABA, [PROMO])
    channel_id = await _channel(stack, business_account_id=WABA)
    assert await _sync(stack) == 1
    image = {"type": "image", "image": {"link": "https://cdn.example/Ada.png"}}
    fitting: list[dict[str, Any]] = [
        {"type": "header", "parameters": [image]},
        {"type": "body", "parameters": [_text("Ada")]},
        {
            "type": "button",
            "sub_type": "quick_reply",
            "index": "0",
            "parameters": [{"type": "payload", "payload": "Ada-stop"}],
        },
        {
            "type": "button",
            "sub_type": "copy_code",
            "index": 1,
            "parameters": [{"type": "coupon_code", "coupon_code": "Ada25"}],
        },
        {"type": "button", "sub_type": "url", "index": "2", "parameters": [_text("Ada")]},
    ]

    def send(components: list[dict[str, Any]]) -> dict[str, Any]:
        body = _body(channel_id, "spring_promo")
        body["content"]["template"]["components"] = components
        return body

    refusals = {
        "the header (IMAGE) needs one image parameter, got 0": fitting[1:],
        "the header (IMAGE) needs one image parameter, got text": [
            {"type": "header", "parameters": [_text("Ada")]},
            *fitting[1:],
        ],
        "the COPY_CODE button at index 1 needs its parameter": [*fitting[:3], fitting[4]],
        "the button at index 0 (QUICK_REPLY) needs one payload parameter, got text": [
            *fitting[:2],
            {**fitting[2], "parameters": [_text("Ada")]},
            *fitting[3:],
        ],
        "the template has no button at index 3": [*fitting, {**fitting[4], "index": "3"}],
    }
    for wrong, components in refusals.items():
        reply = await _send(stack, send(components))
        assert reply.status_code == 422, reply.text
        error = reply.json()["error"]
        assert error["code"] == "template_invalid"
        assert error["message"] == f"template 'spring_promo': {wrong}"
        assert "Ada" not in reply.text

    reply = await _send(stack, send(fitting))
    assert reply.status_code == 202, reply.text
    await stack.until_state(uuid.UUID(reply.json()["id"]), "sent")
    [sent] = [r.json for r in stack.fake.requests if r.path.endswith("/messages")]
    assert sent["template"]["name"] == "spring_promo"
    assert sent["template"]["components"] == fitting
