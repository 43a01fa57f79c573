"""The raw ASGI fast path serves ``POST /webhooks/{platform}/{channel_id}`` exactly as the
FastAPI route does (same statuses and bodies), and leaves every other request to the app."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway import fastpath, intake
from infra.settings import Settings
from tests.integration.gateway.conftest import (
    META_VERIFY,
    Ingress,
    meta_headers,
    running_ingress,
    telegram_headers,
    telegram_payload,
    twilio_form,
    twilio_signature,
    whatsapp_payload,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Paths the fast path handed to ``receive_webhook``."""
    paths: list[str] = []
    real = intake.receive_webhook

    async def spy(gateway: Any, platform: str, channel_id: str, *args: Any) -> Any:
        paths.append(f"/webhooks/{platform}/{channel_id}")
        return await real(gateway, platform, channel_id, *args)

    monkeypatch.setattr(fastpath, "receive_webhook", spy)
    return paths


@pytest.fixture
async def routed(gateway_settings: Settings, engine: AsyncEngine) -> AsyncIterator[Ingress]:
    """The same app without the fast path: the FastAPI route serves the webhooks."""
    async with running_ingress(gateway_settings, fast_path=False) as ingress:
        yield ingress


Outcome = tuple[int, str | None, bytes]


async def outcomes(ingress: Ingress, tag: int) -> list[Outcome]:
    """Every status the route can answer, on ``ingress``; ids differ per ``tag``."""
    for platform in ("whatsapp", "telegram", "twilio"):
        if platform not in ingress.channels:
            await ingress.create_channel(platform)
    wa = ingress.path("whatsapp")
    body = whatsapp_payload((f"wamid.FP-{tag}", "16505550000", "hi"))
    limit = ingress.app.settings.webhook_max_body_bytes
    big = b"x" * (limit + 1)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(limit // 65536 + 2):
            yield b"y" * 65536

    post = ingress.client.post
    text_plain = {**meta_headers(body), "content-type": "text/plain"}
    forged = {**meta_headers(body), "x-hub-signature-256": "sha256=" + "0" * 64}
    requests: list[Callable[[], Awaitable[httpx.Response]]] = [
        lambda: ingress.post_meta("whatsapp", body),  # 200
        lambda: ingress.post_meta("whatsapp", body),  # 200, duplicate
        lambda: ingress.post_telegram(telegram_payload(700 + tag, "x")),  # 200
        lambda: ingress.post_twilio(twilio_form("SM" + str(tag) * 32, "x")),  # 200 TwiML
        lambda: post(wa, content=body, headers=forged),  # 401
        lambda: post(wa, content=body, headers={"content-type": "application/json"}),  # 401
        lambda: post(wa, content=b"{x", headers=meta_headers(b"{x")),  # 400
        lambda: post(wa, content=body, headers=text_plain),  # 415
        lambda: post(wa, content=big, headers=meta_headers(big)),  # 413 (Content-Length)
        lambda: post(wa, content=chunks(), headers={"content-type": "application/json"}),  # 413
        lambda: post("/webhooks/whatsapp/not-a-uuid", content=body, headers=meta_headers(body)),
        lambda: post(f"/webhooks/line/{ingress.channels['whatsapp']}", content=body),  # 404
        lambda: post(ingress.path("telegram").replace("telegram", "whatsapp"), content=body),
    ]
    results: list[Outcome] = []
    for request in requests:
        response = await request()
        results.append(
            (response.status_code, response.headers.get("content-type"), response.content)
        )
    return results


async def test_fast_path_answers_like_the_fastapi_route(
    ingress: Ingress, routed: Ingress, served: list[str]
) -> None:
    fast = await outcomes(ingress, 1)
    assert len(served) == len(fast)  # every one of them went through the fast path
    routed.channels = dict(ingress.channels)  # same database: the same channels
    slow = await outcomes(routed, 2)
    assert len(served) == len(fast)  # none of the routed app's
    assert fast == slow
    assert [status for status, _, _ in fast] == [
        200, 200, 200, 200, 401, 401, 400, 415, 413, 413, 404, 404, 404,
    ]  # fmt: skip
    assert fast[0][1:] == ("application/json", b'{"events":1,"new":1,"duplicates":0}')
    assert fast[1][2] == b'{"events":1,"new":0,"duplicates":1}'
    assert fast[3][1:] == (
        "application/xml",
        b'<?xml version="1.0" encoding="UTF-8"?><Response/>',
    )
    assert fast[4][1:] == (
        "application/json",
        b'{"error":{"code":"unauthorized","message":"unauthorized"}}',
    )
    assert fast[10][2] == b'{"error":{"code":"not_found","message":"not found"}}'


async def test_other_requests_fall_through_to_the_app(ingress: Ingress, served: list[str]) -> None:
    await ingress.create_channel("whatsapp")
    path = ingress.path("whatsapp")
    query = {"hub.mode": "subscribe", "hub.verify_token": META_VERIFY, "hub.challenge": "42"}
    handshake = await ingress.client.get(path, params=query)
    assert (handshake.status_code, handshake.text) == (200, "42")
    body = whatsapp_payload(("wamid.FP-through", "1", "x"))
    for other in (f"{path}/extra", "/webhooks/whatsapp", "/webhooks//x", "/webhooksx/a/b"):
        response = await ingress.client.post(other, content=body, headers=meta_headers(body))
        assert response.status_code in (404, 405), other  # the router's, not ours
        # The framework's answer in the API's error shape (since 822b109), not the gateway's.
        assert response.json()["error"]["message"] in ("Not Found", "Method Not Allowed"), other
    put = await ingress.client.put(path, content=body, headers=meta_headers(body))
    assert put.status_code == 405
    assert (await ingress.client.get("/healthz")).text == "ok"
    assert (await ingress.client.get("/docs")).status_code == 200
    unauthenticated = await ingress.client.post("/v1/admin/replay", json={})
    assert unauthenticated.status_code == 401
    assert served == []
    openapi = (await ingress.client.get("/openapi.json")).json()
    operation = openapi["paths"]["/webhooks/{platform}/{channel_id}"]["post"]
    assert operation["summary"] == "Inbound webhook"
    assert {"200", "400", "401", "404", "413", "415", "503"} <= set(operation["responses"])


async def test_twilio_url_from_forwarded_headers_on_the_fast_path(
    gateway_settings: Settings, engine: AsyncEngine, served: list[str]
) -> None:
    settings = gateway_settings.model_copy(update={"trust_forwarded_headers": True})
    async with running_ingress(settings) as ingress:
        await ingress.create_channel("twilio")
        path = ingress.path("twilio") + "?x=1"
        params = twilio_form("SM" + "8" * 32, "fwd")
        signature = twilio_signature(f"https://hooks.example.com{path}", params)
        response = await ingress.client.post(
            path,
            content=urlencode(params).encode(),
            headers={
                "content-type": "application/x-www-form-urlencoded",
                "x-twilio-signature": signature,
                "x-forwarded-proto": "https",
                "x-forwarded-host": "hooks.example.com",
            },
        )
        assert response.status_code == 200, response.text
        assert len(served) == 1
        telegram = await ingress.client.post(
            "/webhooks/telegram/" + ingress.channels["twilio"],
            content=telegram_payload(1, "x"),
            headers=telegram_headers(),
        )
        assert telegram.status_code == 404


async def test_an_unexpected_error_on_the_fast_path_is_a_500(
    ingress: Ingress, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(fastpath, "receive_webhook", broken)
    await ingress.create_channel("whatsapp")
    body = whatsapp_payload(("wamid.FP-bug", "1", "x"))
    response = await ingress.post_meta("whatsapp", body)
    assert response.status_code == 500
    assert "a bug" not in response.text
    assert (await ingress.client.get("/healthz")).text == "ok"  # the server lives on


async def test_overloaded_is_answered_alike_with_retry_after(
    ingress: Ingress, routed: Ingress
) -> None:
    """A webhook that does not fit the in-flight body budget: 503 with Retry-After, from the
    fast path and from the route (the app's error handler would drop the header)."""
    await ingress.create_channel("whatsapp")
    routed.channels = dict(ingress.channels)
    body = whatsapp_payload(("wamid.FP-full", "1", "budget full"))
    answers = []
    for app in (ingress, routed):
        budget = app.gateway.bodies
        budget.held = budget.limit  # as if slow uploads held all of it
        try:
            response = await app.post_meta("whatsapp", body)
        finally:
            budget.held = 0
        answers.append((response.status_code, response.headers.get("retry-after"), response.json()))
    assert answers[0] == answers[1]
    assert answers[0][:2] == (503, "1")
    assert answers[0][2]["error"]["code"] == "service_unavailable"
