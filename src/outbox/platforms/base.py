"""What every platform sender shares: the channel view, the result, the Protocol, HTTP plumbing.

A sender is pure apart from the one HTTP exchange: it builds the platform request from a
``SendCommand``, performs it through the worker's pooled ``HttpClient`` (an aiohttp session)
and classifies the answer into a ``SendResult``. It never raises for platform or transport
failures (those are outcomes), only ``UnsupportedContent`` for commands the platform cannot
express.

Secrets: credentials travel in headers (Meta, Twilio) or in the URL path (Telegram). Nothing
a sender returns may contain them: every text taken from a response or an exception goes
through ``scrub`` first.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.utils
import html
import math
import re
import time
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, Protocol, runtime_checkable

import aiohttp
import orjson

from infra import telemetry
from infra.base_url import active_policy
from outbox.contracts import SendCommand

__all__ = [
    "EXCERPT_LIMIT",
    "MAX_RETRY_AFTER",
    "ChannelConfig",
    "ErrorRule",
    "HttpClient",
    "HttpExchange",
    "Outcome",
    "SendResult",
    "Sender",
    "UnsupportedContent",
    "basic_credentials",
    "make_http_client",
    "parse_retry_after",
    "post",
    "retry_after_seconds",
    "scrub",
    "status_outcome",
]

HttpClient = aiohttp.ClientSession
"""The pooled HTTP client senders use; built by ``make_http_client``."""

Outcome = Literal["sent", "retryable", "permanent"]
Throttle = Literal["channel", "recipient"]

EXCERPT_LIMIT = 1024
_SCRUB_WINDOW = 4 * EXCERPT_LIMIT
_REDACTED = "***"

MAX_RETRY_AFTER = 86_400.0
"""The longest wait (seconds) a platform's hint may impose: 24 h, the default lifetime of a
message (``outbox_default_ttl_seconds``), which a longer wait would mostly outlive anyway.
Hints are capped here because they are untrusted input: ``Retry-After: 1e12`` or Telegram's
``retry_after: 1e308`` overflowed the retry schedule's datetime arithmetic (the outcome was
never recorded, the lease expired and the message was sent again) and paused the channel
forever."""

_DELTA_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")
"""RFC 9110 §10.2.3 delta-seconds (ASCII digits), plus a decimal fraction some servers send
(``0.5``). No sign, exponent, ``inf`` or ``nan``: ``float()`` would take all of those."""


@dataclass(frozen=True, slots=True)
class ChannelConfig:
    """What the worker hands a sender, built from the channel row with secrets decrypted.

    ``credentials`` keys: whatsapp/messenger/instagram ``access_token``; telegram ``bot_token``;
    twilio ``account_sid`` and ``auth_token``. ``api_base_url`` None means the real platform.
    """

    id: str
    platform: str
    account_id: str
    credentials: Mapping[str, str]
    api_base_url: str | None = None
    webhook_url: str | None = None
    """The channel's own public webhook URL (``{public base}/webhooks/{platform}/{id}``), where
    a platform that takes a callback per request (Twilio ``StatusCallback``) sends receipts."""

    def __repr__(self) -> str:
        return (
            f"ChannelConfig(id={self.id!r}, platform={self.platform!r}, "
            f"account_id={self.account_id!r}, credentials=<{len(self.credentials)} redacted>, "
            f"api_base_url={self.api_base_url!r}, webhook_url={self.webhook_url!r})"
        )


class UnsupportedContent(ValueError):
    """The platform cannot express this command; the message says what and why.

    The API answers 422 with it, the Kafka path emits ``message.failed``: a command is never
    sent half-right.
    """


@dataclass(frozen=True, slots=True)
class SendResult:
    """The classified outcome of one send attempt.

    ``throttled`` means the platform says the *channel* (sender number, page, bot, account) is
    over its rate: the worker slows the whole channel. ``recipient_throttled`` is the narrower
    case of a per-pair limit (WhatsApp 131056, Twilio 14107): only that conversation waits.
    """

    outcome: Outcome
    platform_message_id: str | None
    http_status: int | None
    error_code: str | None
    error_title: str | None
    retry_after: float | None
    throttled: bool
    response_excerpt: str | None
    duration_ms: float
    recipient_throttled: bool = False
    credentials_invalid: bool = False
    """The platform refused the channel's credentials (revoked or expired token, wrong auth):
    every send of the channel would fail the same way, so the worker suspends the channel and
    puts the message back instead of failing it (``outbox.control``)."""

    @property
    def retryable(self) -> bool:
        return self.outcome == "retryable"


@dataclass(frozen=True, slots=True)
class ErrorRule:
    """How one platform error code is handled: data, so the tables read like the docs."""

    retryable: bool
    throttle: Throttle | None = None
    retry_after: float | None = None
    """A minimum wait the platform documents for this code, when it gives no header."""
    credentials: bool = False
    """The code means the channel's credentials are refused (``SendResult.credentials_invalid``)."""


@runtime_checkable
class Sender(Protocol):
    platform: str

    def validate(self, command: SendCommand, *, account_id: str | None = None) -> None:
        """Raise ``UnsupportedContent`` if this platform cannot express ``command``.

        ``account_id`` is the sending channel's ``account_id`` when known: some refusals depend
        on the sender (a Twilio ``whatsapp:`` sender cannot reach an SMS number).
        """

    async def send(
        self,
        client: HttpClient,
        channel: ChannelConfig,
        command: SendCommand,
        *,
        timeout: float,  # noqa: ASYNC109 - the Sender contract; enforced inside post()
    ) -> SendResult:
        """Perform one attempt; platform and transport failures are outcomes, not exceptions."""


_WITHHELD = "[withheld: the answer echoed a credential]"
_SECRET_PART_MIN = 16
_BACKSLASH_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})|\\x([0-9a-fA-F]{2})")
_DECODE_ROUNDS = 3


def _secret_forms(secrets: Iterable[str]) -> list[str]:
    """Each secret, and its secret part: what follows the last ``:`` (a Telegram token is
    ``<bot id>:<secret>``; the bot id is public, the rest alone is enough to use the bot)."""
    forms: dict[str, None] = {}
    for secret in secrets:
        if secret:
            forms[secret] = None
            part = secret.rpartition(":")[2]
            if part != secret and len(part) >= _SECRET_PART_MIN:
                forms[part] = None
    return list(forms)


def _unescape_backslashes(text: str) -> str:
    return _BACKSLASH_ESCAPE.sub(lambda m: chr(int(m.group(1) or m.group(2), 16)), text)


def _decodings(text: str) -> set[str]:
    """``text`` as a reader might decode it: HTML entities (``&#58;``, ``&colon;``), percent
    (``%3a``, ``%3A``), backslash escapes (``\\u003a``, ``\\x3a``), and combinations of up to
    three of these (a percent-encoded URL in an HTML page in a JSON string)."""
    seen = {text}
    frontier = [text]
    for _ in range(_DECODE_ROUNDS):
        found: list[str] = []
        for form in frontier:
            for decode in (html.unescape, urllib.parse.unquote, _unescape_backslashes):
                decoded = decode(form)
                if decoded not in seen:
                    seen.add(decoded)
                    found.append(decoded)
        frontier = found
    return seen


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` without any credential, however a server or proxy echoed it.

    Each secret (and its secret part, ``_secret_forms``) is first replaced where it appears as
    sent or percent-encoded. If any decoding of what is left still holds one (a colon echoed
    as ``&#58;`` or ``\\u003a``, an upper-cased URL…), the whole text is withheld: nothing a
    platform echoes is worth a credential, and no list of encodings is ever complete.
    """
    forms = _secret_forms(secrets)
    for secret in forms:
        quoted = (urllib.parse.quote(secret, safe=""), urllib.parse.quote(secret))
        for form in dict.fromkeys((secret, *quoted)):
            text = text.replace(form, _REDACTED)
    if forms:
        lowered = [form.lower() for form in forms]
        for decoded in _decodings(text):
            folded = decoded.lower()
            if any(secret in folded for secret in lowered):
                return _WITHHELD
    return text


def basic_credentials(user: str, password: str) -> str:
    """The ``Authorization: Basic`` value; a secret in its own right (it encodes the password
    whole, and no part of it lines up with the password's own base64)."""
    return base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def excerpt(body: bytes, secrets: Iterable[str]) -> str | None:
    if not body:
        return None
    text = scrub(body[:_SCRUB_WINDOW].decode("utf-8", errors="replace"), secrets)
    return text[:EXCERPT_LIMIT]


def retry_after_seconds(hint: object) -> float | None:
    """Any platform wait hint as a finite number of seconds in ``[0, MAX_RETRY_AFTER]``.

    None when the hint is not a real number: a bool, NaN, an infinity, or anything not an
    ``int``/``float`` (a JSON string, null…). Negative waits are 0; longer ones are capped.
    """
    if isinstance(hint, bool) or not isinstance(hint, int | float):
        return None
    if isinstance(hint, int):  # compared as int: float() of a huge int would overflow
        return float(min(max(hint, 0), MAX_RETRY_AFTER))
    if not math.isfinite(hint):
        return None
    return min(max(hint, 0.0), MAX_RETRY_AFTER)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP-date (RFC 9110 §10.2.3), bounded
    by ``retry_after_seconds``; None when the header is absent or neither form."""
    if value is None:
        return None
    value = value.strip()
    if _DELTA_SECONDS.fullmatch(value):
        if "." in value:
            return retry_after_seconds(min(float(value), MAX_RETRY_AFTER))  # inf when huge
        try:
            return retry_after_seconds(int(value))
        except ValueError:  # more digits than int() will parse: an absurdly long wait
            return MAX_RETRY_AFTER
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return retry_after_seconds((when - (now or datetime.now(UTC))).total_seconds())


def status_outcome(status: int) -> tuple[Outcome, bool]:
    """Classify by HTTP status when no platform code is known: (outcome, throttled)."""
    if 200 <= status < 300:
        return "sent", False
    if status == 429:
        return "retryable", True
    if status == 408 or status >= 500:
        return "retryable", False
    return "permanent", False


def result_from_rule(
    rule: ErrorRule | None,
    *,
    status: int,
    code: str | None,
    title: str | None,
    retry_after: float | None,
    body_excerpt: str | None,
    duration_ms: float,
) -> SendResult:
    """Classify a failed exchange: the platform's code table first, the HTTP status otherwise."""
    if rule is None:
        outcome, throttled = status_outcome(status)
        if outcome == "sent":  # an error body with a 2xx status: do not trust it as delivered
            outcome = "permanent"
        recipient = False
        credentials = status == 401
    else:
        credentials = rule.credentials
        outcome = "retryable" if rule.retryable else "permanent"
        throttled = rule.throttle == "channel"
        recipient = rule.throttle == "recipient"
        if retry_after is None:
            retry_after = rule.retry_after
    return SendResult(
        outcome=outcome,
        platform_message_id=None,
        http_status=status,
        error_code=code if code is not None else f"http_{status}",
        error_title=title,
        retry_after=retry_after,
        throttled=throttled,
        response_excerpt=body_excerpt,
        duration_ms=duration_ms,
        recipient_throttled=recipient,
        credentials_invalid=credentials,
    )


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


def sent(
    platform_message_id: str | None, exchange: HttpExchange, secrets: Iterable[str]
) -> SendResult:
    return SendResult(
        outcome="sent",
        platform_message_id=platform_message_id,
        http_status=exchange.status,
        error_code=None,
        error_title=None,
        retry_after=None,
        throttled=False,
        response_excerpt=None if platform_message_id else excerpt(exchange.body, secrets),
        duration_ms=exchange.duration_ms,
    )


def api_base(channel: ChannelConfig, default: str) -> str | SendResult:
    """Where to send the channel's credentials: the platform's API, or the channel's
    ``api_base_url`` when the deployment allows that override (``infra.base_url``);
    a refused override fails the attempt permanently without touching the network."""
    if channel.api_base_url is None:
        return default
    reason = active_policy().refusal(channel.api_base_url)
    if reason is not None:
        return SendResult(
            outcome="permanent",
            platform_message_id=None,
            http_status=None,
            error_code="api_base_url_not_allowed",
            error_title=reason,
            retry_after=None,
            throttled=False,
            response_excerpt=None,
            duration_ms=0.0,
        )
    return channel.api_base_url.rstrip("/")


def missing_credential(name: str) -> SendResult:
    """A misconfigured channel fails the attempt permanently without touching the network."""
    return SendResult(
        outcome="permanent",
        platform_message_id=None,
        http_status=None,
        error_code="missing_credential",
        error_title=f"channel credentials lack {name!r}",
        retry_after=None,
        throttled=False,
        response_excerpt=None,
        duration_ms=0.0,
    )


def parse_json(body: bytes) -> object:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


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
