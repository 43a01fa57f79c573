"""Webhook routes (design.md §2) and the admin replay endpoint.

``GET  /webhooks/{platform}/{channel_id}``: Meta's ``hub.*`` handshake → 200 ``text/plain``
challenge, 403 on a wrong token; Telegram and Twilio have no handshake → 405.

``POST /webhooks/{platform}/{channel_id}``, checks in this order:

======  =======================================================================================
404     unknown platform, malformed or unknown channel id, disabled channel, or a channel of
        another platform (the path's platform must match the channel's)
413     ``Content-Length`` over ``webhook_max_body_bytes``, or the streamed body exceeds it
        (counted while reading: we never buffer more than the limit)
415     a content type the platform does not send (Meta/Telegram JSON; Twilio form or JSON)
401     bad or missing signature, no detail
400     the verified body is malformed (``normalizer.NormalizeError``)
503     neither PostgreSQL nor the broker could take the webhook (the platform retries)
200     durable: published with acks=all and/or committed to PostgreSQL (exactly 200, as Meta
        requires). Twilio gets an empty TwiML ``<Response/>``, others a small JSON summary.
======  =======================================================================================

Verification runs on the raw bytes before any parsing. The response is built only after
``Gateway.accept`` has committed, never in a dependency teardown.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, Request
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel, Field

import normalizer
from gateway import replay as replay_service
from gateway.errors import (
    BadSignature,
    HandshakeRefused,
    Malformed,
    NoHandshake,
    NotDurable,
    TooLarge,
    UnknownChannel,
    WebhookRejected,
    WrongContentType,
)
from gateway.metrics import latency_histogram, webhooks_counter
from gateway.service import DB_ERRORS, Gateway, received_now
from gateway.verifiers import REGISTRY, Verifier, WebhookRequest
from switchboard.auth.dependencies import RequireAdmin
from switchboard.channels.service import ChannelWithSecrets
from switchboard.logging import get_logger

log = get_logger(__name__)

router = APIRouter(tags=["webhooks"])
admin_router = APIRouter(prefix="/v1/admin", tags=["admin"])

_TWIML = b'<?xml version="1.0" encoding="UTF-8"?><Response/>'

_WEBHOOK_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "Malformed body"},
    401: {"description": "Bad or missing signature"},
    404: {"description": "Unknown or disabled channel, or another platform's channel"},
    413: {"description": "Body over the size limit"},
    415: {"description": "Content type the platform does not send"},
    503: {"description": "Nothing durable could be written; retry"},
}


def _gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.resources.extras["gateway"]
    return gateway


def _label(platform: str) -> str:
    return platform if platform in REGISTRY else "unknown"


async def _channel(gateway: Gateway, platform: str, channel_id: str) -> ChannelWithSecrets:
    if platform not in REGISTRY:
        raise UnknownChannel
    try:
        key = uuid.UUID(channel_id)
    except ValueError:
        raise UnknownChannel from None
    try:
        channel = await gateway.channel(key)
    except DB_ERRORS:
        raise NotDurable from None
    if channel is None or not channel.enabled or channel.platform != platform:
        raise UnknownChannel
    return channel


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise Malformed("invalid Content-Length") from None
        if size > limit:
            raise TooLarge(f"body over {limit} bytes")
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise TooLarge(f"body over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _public_url(request: Request, gateway: Gateway) -> str:
    """The URL the platform called, as it signed it (Twilio)."""
    settings = gateway.settings
    base = gateway.resources.public_base_url
    if settings.trust_forwarded_headers:
        proto = request.headers.get("x-forwarded-proto", "").split(",")[0].strip()
        host = request.headers.get("x-forwarded-host", "").split(",")[0].strip()
        if proto or host:
            base = f"{proto or request.url.scheme}://{host or request.headers.get('host', '')}"
    query = request.scope.get("query_string", b"").decode("latin-1")
    return f"{base}{request.url.path}" + (f"?{query}" if query else "")


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


@router.get(
    "/webhooks/{platform}/{channel_id}",
    response_class=PlainTextResponse,
    summary="Subscription handshake (Meta hub.challenge)",
    responses={403: {"description": "Wrong verify token"}, 404: {}, 405: {}},
)
async def handshake(platform: str, channel_id: str, request: Request) -> Response:
    """Meta platforms: answer `hub.challenge` when `hub.verify_token` matches. Telegram and
    Twilio have no handshake (405)."""
    gateway = _gateway(request)
    try:
        channel = await _channel(gateway, platform, channel_id)
        verifier: Verifier = REGISTRY[platform]
        try:
            challenge = verifier.handshake(request.query_params, channel.credentials)
        except NotImplementedError:
            raise NoHandshake from None
        if challenge is None:
            raise HandshakeRefused
    except WebhookRejected as exc:
        webhooks_counter(_label(platform), "rejected", exc.reason).inc()
        log.info("gateway.handshake_refused", platform=_label(platform), reason=exc.reason)
        raise
    log.info("gateway.handshake", platform=platform, channel_id=channel_id)
    return PlainTextResponse(challenge)


@router.post(
    "/webhooks/{platform}/{channel_id}",
    summary="Inbound webhook",
    responses={200: {"description": "Durable (published and/or stored)"}, **_WEBHOOK_RESPONSES},
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "The platform's webhook body, verbatim (signed on the raw bytes)",
            "content": {
                "application/json": {"schema": {"type": "object"}},
                "application/x-www-form-urlencoded": {"schema": {"type": "object"}},
            },
        }
    },
)
async def webhook(platform: str, channel_id: str, request: Request) -> Response:
    """Verify, normalise, deduplicate and durably publish one platform webhook."""
    started = time.perf_counter()
    label = _label(platform)
    try:
        response = await _handle(platform, channel_id, request)
    except WebhookRejected as exc:
        webhooks_counter(label, "rejected", exc.reason).inc()
        log.info("gateway.rejected", platform=label, reason=exc.reason, status=exc.status_code)
        raise
    finally:
        latency_histogram(label).observe(time.perf_counter() - started)
    return response


async def _handle(platform: str, channel_id: str, request: Request) -> Response:
    gateway = _gateway(request)
    channel = await _channel(gateway, platform, channel_id)
    verifier = REGISTRY[platform]
    content_type = request.headers.get("content-type")
    if _media_type(content_type) not in verifier.content_types:
        raise WrongContentType(f"expected {' or '.join(sorted(verifier.content_types))}")
    body = await _read_body(request, gateway.settings.webhook_max_body_bytes)
    url = _public_url(request, gateway)
    headers = request.headers
    if not verifier.verify(WebhookRequest(body, headers, url, content_type), channel.credentials):
        raise BadSignature
    received_at = received_now()
    try:
        events = normalizer.normalize(
            platform,
            body,
            channel_id=str(channel.id),
            content_type=content_type,
            received_at=received_at,
            account_id=channel.account_id,
        )
    except normalizer.NormalizeError as exc:
        raise Malformed(str(exc).splitlines()[0][:200] or "malformed body") from None
    archive_headers = {h: headers[h] for h in verifier.signature_headers if h in headers}
    archive_headers["url"] = url
    archive_headers["received_at"] = received_at.isoformat()
    if events:
        result = await gateway.accept(
            platform=platform,
            channel=channel,
            events=events,
            body=body,
            content_type=content_type,
            archive_headers=archive_headers,
        )
        outcome = "accepted" if result.new else "duplicate"
        summary = {"events": result.events, "new": result.new, "duplicates": result.duplicates}
    else:
        outcome = "empty"
        summary = {"events": 0, "new": 0, "duplicates": 0}
    webhooks_counter(platform, outcome).inc()
    if platform == "twilio":
        return Response(_TWIML, media_type="application/xml")
    return Response(orjson.dumps(summary), media_type="application/json")


# ---- admin ------------------------------------------------------------------------------


class ReplayRequest(BaseModel):
    channel_id: uuid.UUID | None = None
    platform: str | None = Field(default=None, description="One of the platform ids")
    since: datetime | None = Field(default=None, description="Received at or after (RFC 3339)")
    until: datetime | None = Field(default=None, description="Received before (RFC 3339)")
    limit: int = Field(default=10_000, ge=1, le=1_000_000, description="Webhooks at most")


class ReplayResult(BaseModel):
    webhooks: int = Field(description="Archived webhooks re-normalised")
    events: int = Field(description="Canonical events published")
    failed: int = Field(description="Webhooks that no longer normalise (skipped)")


@admin_router.post("/replay", response_model=ReplayResult, summary="Replay archived webhooks")
async def replay(
    _: RequireAdmin,
    request: Request,
    body: Annotated[ReplayRequest, Body()],
) -> ReplayResult:
    """Re-normalise archived raw webhooks and publish their events again to `inbound.v1`.
    Event ids are deterministic, so consumers can drop what they already have."""
    result = await replay_service.replay(
        _gateway(request),
        channel_id=body.channel_id,
        platform=body.platform,
        since=body.since,
        until=body.until,
        limit=body.limit,
    )
    return ReplayResult(webhooks=result.webhooks, events=result.events, failed=result.failed)
