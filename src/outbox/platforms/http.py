"""The one HTTP exchange of a send: the pooled client, ``post`` with a hard deadline, and the
transport failures it turns into ``SendResult``s. The only module that knows the client library.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import aiohttp
import orjson

from infra import telemetry
from outbox.platforms.base import EXCERPT_LIMIT, SendResult
from outbox.platforms.scrub import scrub

__all__ = [
    "HttpClient",
    "HttpExchange",
    "basic_credentials",
    "make_http_client",
    "post",
]

HttpClient = aiohttp.ClientSession
"""The pooled HTTP client senders use; built by ``make_http_client``."""


def basic_credentials(user: str, password: str) -> str:
    """The ``Authorization: Basic`` value; a secret in its own right (it encodes the password
    whole, and no part of it lines up with the password's own base64)."""
    return base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


@dataclass(frozen=True, slots=True)
class HttpExchange:
    status: int
    headers: Mapping[str, str]
    """Case-insensitive (aiohttp's ``CIMultiDictProxy``)."""
    body: bytes
    duration_ms: float


async def post(
    client: HttpClient,
    url: str,
    *,
    timeout: float,  # noqa: ASYNC109 - a hard deadline applied with asyncio.timeout below
    secrets: Iterable[str],
    json_body: object | None = None,
    form: Mapping[str, str | list[str]] | None = None,
    headers: Mapping[str, str] | None = None,
    auth: tuple[str, str] | None = None,
) -> HttpExchange | SendResult:
    """POST once with a hard overall deadline; a transport failure comes back as a SendResult.

    ``timeout`` bounds the whole exchange, body included. A timeout is retryable, but the
    platform may have accepted the message: delivery is at-least-once by design.
    """
    request_headers = dict(headers or {})
    content: bytes | None = None
    if json_body is not None:
        content = orjson.dumps(json_body)
        request_headers["Content-Type"] = "application/json"
    elif form is not None:
        pairs = [
            (key, item)
            for key, value in form.items()
            for item in (value if isinstance(value, list) else [value])
        ]
        content = urllib.parse.urlencode(pairs).encode()
        request_headers["Content-Type"] = "application/x-www-form-urlencoded"
    if auth is not None:
        token = basic_credentials(*auth)
        request_headers["Authorization"] = f"Basic {token}"
    with telemetry.span(
        "POST", kind=telemetry.SpanKind.CLIENT, attributes=_client_attributes(url)
    ) as span:
        exchange = await _exchange(client, url, content, request_headers, timeout, secrets)
        if span is not None:
            if isinstance(exchange, HttpExchange):
                span.set_attribute("http.response.status_code", exchange.status)
                if exchange.status >= 400:
                    span.set_attribute("error.type", str(exchange.status))
            else:
                span.set_attribute("error.type", exchange.error_code or "transport_error")
    return exchange


def _client_attributes(url: str) -> dict[str, object] | None:
    """HTTP client span attributes: method, host and port only. Never ``url.full``: Telegram
    carries the bot token in the path."""
    if not telemetry.enabled():
        return None
    parts = urllib.parse.urlsplit(url)
    attributes: dict[str, object] = {"http.request.method": "POST"}
    if parts.hostname:
        attributes["server.address"] = parts.hostname
    with contextlib.suppress(ValueError):  # a port out of range: the request fails on its own
        attributes["server.port"] = parts.port or (443 if parts.scheme == "https" else 80)
    return attributes


async def _exchange(
    client: HttpClient,
    url: str,
    content: bytes | None,
    request_headers: dict[str, str],
    timeout: float,  # noqa: ASYNC109 - a hard deadline applied with asyncio.timeout below
    secrets: Iterable[str],
) -> HttpExchange | SendResult:
    traceparent = telemetry.outgoing()
    if traceparent is not None:
        request_headers[telemetry.TRACEPARENT] = traceparent
    started = time.perf_counter()
    try:
        async with (
            asyncio.timeout(timeout),
            client.post(
                url,
                data=content,
                headers=request_headers,
            ) as response,
        ):
            body = await response.read()
    except TimeoutError as exc:
        return _transport_failure("timeout", exc, started, secrets)
    except aiohttp.ClientConnectorError as exc:
        return _transport_failure("connect_error", exc, started, secrets)
    except aiohttp.ClientError as exc:
        return _transport_failure("transport_error", exc, started, secrets)
    return HttpExchange(
        status=response.status,
        headers=response.headers,
        body=body,
        duration_ms=(time.perf_counter() - started) * 1000.0,
    )


def _transport_failure(
    code: str, exc: BaseException, started: float, secrets: Iterable[str]
) -> SendResult:
    detail = str(exc)
    title = type(exc).__name__ + (f": {detail}" if detail else "")
    return SendResult(
        outcome="retryable",
        platform_message_id=None,
        http_status=None,
        error_code=code,
        error_title=scrub(title, secrets)[:EXCERPT_LIMIT],
        retry_after=None,
        throttled=False,
        response_excerpt=None,
        duration_ms=(time.perf_counter() - started) * 1000.0,
    )


def make_http_client(timeout: float, *, max_connections: int = 256) -> HttpClient:
    """The worker's pooled client (call it inside the running event loop).

    aiohttp directly, not httpx: ``bench/http_transports.py`` (client CPU only, fake server in
    another process), requests per client CPU-second at 1 / 8 / 64 tasks: httpx default
    transport ~740 / ~700 / ~240 (p99 1.2 s at 64); httpx over ``httpx-aiohttp`` ~1,050 /
    ~1,400 / ~1,200; aiohttp ~2,000 / ~2,800 / ~3,400. Through httpx the whole worker stayed
    under 1,000 sends per CPU-second (HTTP was ~70 % of its CPU); the outbox target is
    1,000 with headroom. All sender HTTP goes through ``post`` above, so this is the one place
    that knows the client library.
    """
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=max_connections, ttl_dns_cache=300),
        timeout=aiohttp.ClientTimeout(total=timeout),
        raise_for_status=False,
        auto_decompress=True,
    )
