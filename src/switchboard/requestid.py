"""Request ids: every API request gets one, every log line about it carries it.

An incoming ``X-Request-ID`` is used when it is 1-128 characters of letters, digits and
``-._:`` (anything else is replaced, never echoed or logged: it is client input); otherwise a
new one (32 hex digits) is made. It is echoed on the response and bound in structlog's context
variables as ``request_id`` for the whole request, with ``trace_id`` taken from a valid W3C
``traceparent`` header when there is one. Handlers bind more ids (``message_id``,
``channel_id``) the same way.

Pure ASGI (no ``BaseHTTPMiddleware``: no extra task, streaming untouched). It runs inside the
components' outermost middleware, so the webhook fast path is not affected.
"""

from __future__ import annotations

import re
import uuid

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = "X-Request-ID"
_HEADER_KEY = HEADER.lower().encode("latin-1")
_VALID = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")
_TRACEPARENT = re.compile(rb"[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")
_NO_TRACE = b"0" * 32


def request_id(value: bytes | None) -> str:
    """The client's id if it is safe to log and echo, else a new one."""
    if value is not None and _VALID.fullmatch(value):
        return value.decode("ascii")
    return uuid.uuid4().hex


def trace_id(traceparent: bytes | None) -> str | None:
    """The trace id of a W3C ``traceparent`` (version ``ff`` and all-zero ids are invalid)."""
    if traceparent is None:
        return None
    match = _TRACEPARENT.fullmatch(traceparent.strip())
    if match is None or traceparent.startswith(b"ff") or match.group(1) == _NO_TRACE:
        return None
    return match.group(1).decode("ascii")


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
        if (tid := trace_id(headers.get(b"traceparent"))) is not None:
            context["trace_id"] = tid
        echoed = (_HEADER_KEY, rid.encode("ascii"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *(h for h in message.get("headers", ()) if h[0].lower() != _HEADER_KEY),
                    echoed,
                ]
            await send(message)

        structlog.contextvars.clear_contextvars()
        try:
            with structlog.contextvars.bound_contextvars(**context):
                await self.app(scope, receive, send_with_id)
        finally:
            structlog.contextvars.clear_contextvars()
