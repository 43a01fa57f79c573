"""Webhook routes (docs/contracts.md §2) and the admin replay endpoint.

``GET  /webhooks/{platform}/{channel_id}``: Meta's ``hub.*`` handshake → 200 ``text/plain``
challenge, 403 on a wrong token; Telegram and Twilio have no handshake → 405.

``POST /webhooks/{platform}/{channel_id}``, checks in this order:

======  =======================================================================================
404     unknown platform, malformed or unknown channel id, disabled channel, or a channel of
        another platform (the path's platform must match the channel's)
415     a content type the platform does not send (Meta/Telegram JSON; Twilio form or JSON)
413     ``Content-Length`` over ``webhook_max_body_bytes``, or the streamed body exceeds it
        (counted while reading: we never buffer more than the limit)
503     the body does not fit the process's in-flight body budget
        (``webhook_max_inflight_body_bytes``, ``gateway.budget``), with ``Retry-After``
401     bad or missing signature, no detail
400     the verified body cannot be parsed (not JSON, not a UTF-8 form:
        ``normalizer.NormalizeError``), or an event or conversation id in it contains NUL
        (PostgreSQL text cannot hold it). A verified body that parses but has an unexpected
        shape is the platform speaking: 200, published as one ``unsupported`` event with
        ``raw`` (issue 9, D10)
503     neither PostgreSQL nor the broker could take the webhook (the platform retries)
200     durable: published with acks=all and/or committed to PostgreSQL (exactly 200, as Meta
        requires). Twilio gets an empty TwiML ``<Response/>``, others a small JSON summary.
======  =======================================================================================

Verification runs on the raw bytes before any parsing. The response is built only after
``Gateway.accept`` has committed, never in a dependency teardown. The POST is implemented once,
in ``gateway.intake.receive_webhook``; in the running app the raw ASGI fast path
(``gateway.fastpath``) serves it, and the route below documents it (and serves it without the
fast path).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Body, Request
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel, Field

from apikeys.dependencies import RequireAdmin
from gateway import intake
from gateway import replay as replay_service
from gateway.errors import (
    HandshakeRefused,
    NoHandshake,
    WebhookRejected,
)
from gateway.metrics import webhooks_counter
from gateway.service import Gateway, GatewayHolder
from gateway.verifiers import REGISTRY, Verifier
from infra.errors import AUTHENTICATED, ServiceUnavailable, error_responses
from infra.logging import get_logger
from infra.schema_types import Instant
from normalizer.platforms import Platform

log = get_logger(__name__)

_UNKNOWN_CHANNEL = "Unknown platform or channel, disabled channel, or another platform's channel"
# 422: FastAPI would otherwise document its own validation error shape for the path parameters.
_WEBHOOK_RESPONSES = error_responses(
    422,
    descriptions={
        400: "Malformed body",
        401: "Bad or missing signature",
        404: _UNKNOWN_CHANNEL,
        413: "Body over the size limit",
        415: "Content type the platform does not send",
        503: "Nothing durable could be written, or too many webhook bodies are in flight "
        "(with Retry-After); retry",
    },
)


class ReplayRequest(BaseModel):
    channel_id: uuid.UUID | None = None
    platform: Platform | None = None
    since: Instant | None = Field(default=None, description="Received at or after (RFC 3339)")
    until: Instant | None = Field(default=None, description="Received before (RFC 3339)")
    limit: int = Field(
        default=10_000, ge=1, le=1_000_000, strict=True, description="Webhooks at most"
    )


class ReplayResult(BaseModel):
    webhooks: int = Field(description="Archived webhooks re-normalised")
    events: int = Field(description="Canonical events published")
    failed: int = Field(description="Webhooks that no longer normalise (skipped)")


def routers(holder: GatewayHolder) -> list[APIRouter]:
    """The webhook routes and the admin replay route, serving the gateway in ``holder``."""
    router = APIRouter(tags=["webhooks"])
    admin_router = APIRouter(prefix="/v1/admin", tags=["admin"])

    def _gateway() -> Gateway:
        if holder.gateway is None:
            raise ServiceUnavailable("the gateway is not running")
        return holder.gateway

    @router.get(
        "/webhooks/{platform}/{channel_id}",
        # Not response_class=PlainTextResponse: FastAPI would document the JSON errors as text.
        response_class=Response,
        summary="Subscription handshake (Meta hub.challenge)",
        responses={
            200: {
                "description": "The `hub.challenge`, verbatim",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            },
            **error_responses(
                422,
                503,
                descriptions={
                    403: "Wrong verify token",
                    404: _UNKNOWN_CHANNEL,
                    405: "The platform has no handshake (Telegram, Twilio)",
                },
            ),
        },
    )
    async def handshake(platform: str, channel_id: str, request: Request) -> Response:
        """Meta platforms: answer `hub.challenge` when `hub.verify_token` matches. Telegram and
        Twilio have no handshake (405)."""
        gateway = _gateway()
        try:
            channel = await intake.channel_for(gateway, platform, channel_id)
            verifier: Verifier = REGISTRY[platform]
            try:
                challenge = verifier.handshake(request.query_params, channel.credentials)
            except NotImplementedError:
                raise NoHandshake from None
            if challenge is None:
                raise HandshakeRefused
        except WebhookRejected as exc:
            webhooks_counter(intake.label(platform), "rejected", exc.reason).inc()
            log.info(
                "gateway.handshake_refused", platform=intake.label(platform), reason=exc.reason
            )
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

        def body_chunks() -> AsyncIterator[bytes]:
            return request.stream()

        target = intake.Target(
            request.url.scheme, request.url.path, request.scope.get("query_string", b"")
        )
        try:
            reply = await intake.receive_webhook(
                _gateway(), platform, channel_id, request.headers, body_chunks, target
            )
        except WebhookRejected as exc:
            if not exc.headers:
                raise
            return Response(
                exc.body(), exc.status_code, headers=exc.headers, media_type="application/json"
            )
        return Response(reply.body, media_type=reply.media_type)

    @admin_router.post(
        "/replay",
        response_model=ReplayResult,
        summary="Replay archived webhooks",
        responses=error_responses(*AUTHENTICATED, 400, 503),
    )
    async def replay(
        _: RequireAdmin,
        body: Annotated[ReplayRequest, Body()],
    ) -> ReplayResult:
        """Re-normalise archived raw webhooks and publish their events again to `inbound.v1`.
        Event ids are deterministic, so consumers can drop what they already have."""
        result = await replay_service.replay(
            _gateway(),
            channel_id=body.channel_id,
            platform=body.platform,
            since=body.since,
            until=body.until,
            limit=body.limit,
        )
        return ReplayResult(webhooks=result.webhooks, events=result.events, failed=result.failed)

    return [router, admin_router]
