"""Request ids: every API request gets one, every log line about it carries it.

An incoming ``X-Request-ID`` is used when it is 1-128 characters of letters, digits and
``-._:`` (anything else is replaced, never echoed or logged: it is client input); otherwise a
new one (32 hex digits) is made. It is echoed on the response and bound in structlog's context
variables as ``request_id`` for the whole request, with ``trace_id`` taken from a valid W3C
``traceparent`` header when there is one. Handlers bind more ids (``message_id``,
``channel_id``) the same way.

Traces (``infra.telemetry``): the request runs in a SERVER span that continues the
client's ``traceparent`` (named ``<METHOD> <route template>`` once routed); with tracing off
the client's trace context is carried instead (what ``POST /v1/messages`` stores with the
message), and nothing is made when there is none.

Pure ASGI (no ``BaseHTTPMiddleware``: no extra task, streaming untouched). It runs inside the
components' outermost middleware, so the webhook fast path is not affected.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from typing import Any

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from infra import telemetry

HEADER = "X-Request-ID"
_HEADER_KEY = HEADER.lower().encode("latin-1")
_VALID = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")
_UNTRACED = frozenset({"/healthz", "/readyz", "/metrics"})
"""Probes and scrapes: a trace each every few seconds would drown the real ones."""
_NO_SPAN: contextlib.nullcontext[None] = contextlib.nullcontext()


def request_id(value: bytes | None) -> str:
    """The client's id if it is safe to log and echo, else a new one."""
    if value is not None and _VALID.fullmatch(value):
        return value.decode("ascii")
    return uuid.uuid4().hex


def trace_id(traceparent: bytes | None) -> str | None:
    """The trace id of a W3C ``traceparent`` (version ``ff`` and all-zero ids are invalid)."""
    return telemetry.trace_id(traceparent)


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        rid = request_id(headers.get(_HEADER_KEY))
        context: dict[str, str] = {"request_id": rid}
        traceparent = telemetry.parse(headers.get(b"traceparent"))
        if traceparent is not None:
            context["trace_id"] = traceparent[3:35]
        echoed = (_HEADER_KEY, rid.encode("ascii"))
        method: str = scope["method"]
        span = (
            telemetry.span(
                method,
                kind=telemetry.SpanKind.SERVER,
                parent=traceparent,
                attributes={"http.request.method": method} if telemetry.enabled() else None,
            )
            if scope["path"] not in _UNTRACED
            else _NO_SPAN
        )

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                if current is not None:
                    _name_server_span(current, scope, message["status"])
                message["headers"] = [
                    *(h for h in message.get("headers", ()) if h[0].lower() != _HEADER_KEY),
                    echoed,
                ]
            await send(message)

        structlog.contextvars.clear_contextvars()
        try:
            with structlog.contextvars.bound_contextvars(**context), span as current:
                await self.app(scope, receive, send_with_id)
        finally:
            structlog.contextvars.clear_contextvars()


def _name_server_span(span: Any, scope: Scope, status: int) -> None:
    """Name the request's span after its route template (never the raw path: ids in paths
    would make every span name unique) and record the status."""
    route = getattr(scope.get("route"), "path", None)
    if isinstance(route, str):
        span.update_name(f"{scope['method']} {route}")
        span.set_attribute("http.route", route)
    span.set_attribute("http.response.status_code", status)
