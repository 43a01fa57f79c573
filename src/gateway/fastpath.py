"""A raw ASGI fast path for ``POST /webhooks/{platform}/{channel_id}``.

The ingress hot path spends little of its time on webhooks: most of a request's CPU went to
the framework (routing, dependency solving, exception middlewares, ``Request``/``Response``
objects). This middleware, installed by the gateway component as the app's outermost layer
(``Component.asgi_middleware``), serves exactly that method and path shape itself with
``gateway.intake.receive_webhook``, the one implementation the FastAPI route also calls, so
checks, status codes, metrics and logs are the same either way. Everything else (the GET
handshake, ``/v1``, ``/docs``, another method, a path with another shape, a request under a
``root_path``, or the app before its lifespan opened the gateway) goes to the app. The
gateway is found in the ``GatewayHolder`` the component gave the fast path when it built it.

What it does for the framework:

* path parameters as Starlette's ``{name}`` convertor takes them (``[^/]+`` on the decoded
  path); the body's chunks from ``receive`` (``intake`` applies the size limit, 413 while
  streaming after the ``Content-Length`` precheck, and the in-flight body budget);
* headers from the scope (names are lower-case in ASGI; for a repeated header the first one
  wins, as with Starlette's ``Headers.get``);
* errors as ``switchboard.app``'s handler renders a ``SwitchboardError``:
  ``{"error": {"code", "message"}}`` (JSON, the exception's status), plus the error's own
  headers (``Retry-After`` of a 503 ``Overloaded``);
* a client that disconnects while sending its body gets nothing (no response can reach it);
  an unexpected exception propagates to the server (uvicorn logs it and answers 500, as the
  app's ``ServerErrorMiddleware`` would).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import WebhookRejected
from gateway.intake import Target, receive_webhook
from gateway.service import GatewayHolder

_PREFIX = "/webhooks/"
_JSON = b"application/json"


class _Disconnected(Exception):
    pass


class WebhookFastPath:
    def __init__(self, app: ASGIApp, holder: GatewayHolder) -> None:
        self.app = app
        self.holder = holder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        parts = path[len(_PREFIX) :].split("/") if path.startswith(_PREFIX) else []
        gateway = self.holder.gateway if len(parts) == 2 and parts[0] and parts[1] else None
        if gateway is None:
            await self.app(scope, receive, send)
            return
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            key = name.decode("latin-1")
            if key not in headers:
                headers[key] = value.decode("latin-1")

        async def body_chunks() -> AsyncIterator[bytes]:
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    raise _Disconnected
                chunk: bytes = message.get("body", b"")
                if chunk:
                    yield chunk
                if not message.get("more_body", False):
                    return

        target = Target(
            scope.get("scheme", "http"),
            path.replace("?", "%3F").replace("#", "%23").replace("\\", "%5C"),  # as Starlette's URL
            scope.get("query_string", b""),
        )
        try:
            reply = await receive_webhook(gateway, parts[0], parts[1], headers, body_chunks, target)
        except WebhookRejected as exc:
            await _respond(send, exc.status_code, exc.body(), _JSON, exc.headers)
            return
        except _Disconnected:
            return
        await _respond(send, 200, reply.body, reply.media_type.encode("latin-1"))


async def _respond(
    send: Send, status: int, body: bytes, media_type: bytes, extra: dict[str, str] | None = None
) -> None:
    headers = [
        (b"content-length", str(len(body)).encode("latin-1")),
        (b"content-type", media_type),
    ]
    if extra:
        headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
