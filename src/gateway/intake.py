"""One webhook's intake, independent of the HTTP layer that carries it.

``receive_webhook`` is the single implementation of ``POST /webhooks/{platform}/{channel_id}``
(checks and status codes: see ``gateway.endpoints``), metrics and logs included. Two callers
hand it the request's parts: the raw ASGI fast path (``gateway.fastpath``, what serves the
route in the running app) and the FastAPI route (``gateway.endpoints.webhook``, documented in
the OpenAPI and used when the fast path is not installed).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass

import orjson

import normalizer
from channels.service import ChannelWithSecrets
from gateway.budget import Holding
from gateway.errors import (
    BadSignature,
    ChannelNotFound,
    Malformed,
    NotDurable,
    Overloaded,
    TooLarge,
    WebhookRejected,
    WrongContentType,
)
from gateway.metrics import latency_histogram, webhooks_counter
from gateway.service import Gateway, received_now
from gateway.verifiers import REGISTRY, WebhookRequest
from infra import telemetry
from infra.dberrors import DATABASE_ERRORS, kind_name
from infra.logging import get_logger

log = get_logger(__name__)


BodyChunks = Callable[[], AsyncIterator[bytes]]
"""The request body's chunks as they arrive."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where the request was sent, as the server saw it (the public URL is derived from it)."""

    scheme: str
    path: str
    query_string: bytes


@dataclass(frozen=True, slots=True)
class Reply:
    """A 200 response."""

    body: bytes
    media_type: str


@dataclass(frozen=True, slots=True)
class _Body:
    chunks: BodyChunks
    holding: Holding

    async def read(self, limit: int) -> bytes:
        """The whole body; ``TooLarge`` as soon as more than ``limit`` arrived, ``Overloaded``
        as soon as it does not fit the process's in-flight body budget."""
        parts: list[bytes] = []
        received = 0
        async for chunk in self.chunks():
            received += len(chunk)
            if received > limit:
                raise TooLarge(f"body over {limit} bytes")
            if not self.holding.take(len(chunk)):
                raise Overloaded
            parts.append(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)


def label(platform: str) -> str:
    return platform if platform in REGISTRY else "unknown"


async def channel_for(gateway: Gateway, platform: str, channel_id: str) -> ChannelWithSecrets:
    if platform not in REGISTRY:
        raise ChannelNotFound
    try:
        key = uuid.UUID(channel_id)
    except ValueError:
        raise ChannelNotFound from None
    try:
        channel = await gateway.channel(key)
    except DATABASE_ERRORS as exc:
        # Whatever the database's trouble (down, starting, timed out, or refusing the query),
        # the platform is told to retry: 503, never a 500.
        log.warning("gateway.channel_unavailable", error=type(exc).__name__, kind=kind_name(exc))
        raise NotDurable from None
    if channel is None or not channel.enabled or channel.platform != platform:
        raise ChannelNotFound
    return channel


def public_url(gateway: Gateway, headers: Mapping[str, str], target: Target) -> str:
    """The URL the platform called, as it signed it (Twilio)."""
    base = gateway.resources.public_base_url
    if gateway.settings.trust_forwarded_headers:
        proto = headers.get("x-forwarded-proto", "").split(",")[0].strip()
        host = headers.get("x-forwarded-host", "").split(",")[0].strip()
        if proto or host:
            base = f"{proto or target.scheme}://{host or headers.get('host', '')}"
    query = target.query_string.decode("latin-1")
    return f"{base}{target.path}" + (f"?{query}" if query else "")


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


async def receive_webhook(
    gateway: Gateway,
    platform: str,
    channel_id: str,
    headers: Mapping[str, str],
    body_chunks: BodyChunks,
    target: Target,
) -> Reply:
    """Verify, normalise, deduplicate and durably publish one platform webhook.

    Raises ``WebhookRejected`` (counted and logged here) for every non-200 outcome."""
    started = time.perf_counter()
    platform_label = label(platform)
    with telemetry.span(
        "POST /webhooks/{platform}/{channel_id}",
        kind=telemetry.SpanKind.SERVER,
        parent=headers.get(telemetry.TRACEPARENT),
        attributes=_span_attributes(platform_label) if telemetry.enabled() else None,
    ) as span:
        try:
            with gateway.bodies.hold() as holding:
                return await _handle(
                    gateway, platform, channel_id, headers, _Body(body_chunks, holding), target
                )
        except WebhookRejected as exc:
            webhooks_counter(platform_label, "rejected", exc.reason).inc()
            log.info(
                "gateway.rejected",
                platform=platform_label,
                reason=exc.reason,
                status=exc.status_code,
            )
            if span is not None:
                span.set_attribute("http.response.status_code", exc.status_code)
                span.set_attribute("error.type", exc.reason)
            raise
        finally:
            latency_histogram(platform_label).observe(time.perf_counter() - started)


def _span_attributes(platform: str) -> dict[str, str]:
    return {
        "http.request.method": "POST",
        "http.route": "/webhooks/{platform}/{channel_id}",
        "switchboard.platform": platform,
    }


async def _handle(
    gateway: Gateway,
    platform: str,
    channel_id: str,
    headers: Mapping[str, str],
    body_in: _Body,
    target: Target,
) -> Reply:
    channel = await channel_for(gateway, platform, channel_id)
    verifier = REGISTRY[platform]
    content_type = headers.get("content-type")
    if media_type(content_type) not in verifier.content_types:
        raise WrongContentType(f"expected {' or '.join(sorted(verifier.content_types))}")
    limit = gateway.settings.webhook_max_body_bytes
    declared = headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise Malformed("invalid Content-Length") from None
        if size > limit:
            raise TooLarge(f"body over {limit} bytes")
        if not gateway.bodies.fits(size):
            raise Overloaded
    body = await body_in.read(limit)
    url = public_url(gateway, headers, target)
    with telemetry.span("webhook.verify"):
        verified = verifier.verify(
            WebhookRequest(body, headers, url, content_type), channel.credentials
        )
    if not verified:
        raise BadSignature
    received_at = received_now()
    try:
        with telemetry.span("webhook.normalize"):
            events = normalizer.normalize(
                platform,
                body,
                channel_id=str(channel.id),
                content_type=content_type,
                received_at=received_at,
                account_id=channel.account_id,
                authenticated=True,
            )
    except normalizer.NormalizeError as exc:
        raise Malformed(str(exc).splitlines()[0][:200] or "malformed body") from None
    if any("\x00" in e.id or "\x00" in e.subject for e in events):
        # PostgreSQL text cannot hold NUL: the batch's claim would fail for every member.
        raise Malformed("an event or conversation id contains a NUL character")
    archive_headers = {h: headers[h] for h in verifier.signature_headers if h in headers}
    archive_headers["url"] = url
    archive_headers["received_at"] = received_at.isoformat()
    if events:
        with telemetry.span("webhook.commit"):  # its context goes on the events' records
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
    if verifier.reply is not None:
        return Reply(*verifier.reply)
    return Reply(orjson.dumps(summary), "application/json")
