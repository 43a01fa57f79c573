"""What every platform sender shares: the channel view, the result, the Protocol, result helpers.

A sender is pure apart from the one HTTP exchange: it builds the platform request from a
``SendCommand``, performs it through the worker's pooled ``HttpClient`` (an aiohttp session)
and classifies the answer into a ``SendResult``. It never raises for platform or transport
failures (those are outcomes), only ``UnsupportedContent`` for commands the platform cannot
express.

Secrets: nothing a sender returns may contain a credential: every text taken from a response
or an exception goes through ``scrub`` (``outbox.platforms.scrub``) first. The HTTP exchange
itself is ``outbox.platforms.http``.
"""

from __future__ import annotations

import email.utils
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

import orjson

from infra.base_url import active_policy
from normalizer.models import MessageEvent
from outbox.contracts import SendCommand
from outbox.platforms.scrub import scrub
from outbox.ratelimit import Rate

if TYPE_CHECKING:
    from outbox.platforms.http import HttpClient, HttpExchange

__all__ = [
    "EXCERPT_LIMIT",
    "MAX_RETRY_AFTER",
    "ChannelConfig",
    "ErrorRule",
    "Outcome",
    "SendResult",
    "Sender",
    "UnsupportedContent",
    "parse_retry_after",
    "retry_after_seconds",
    "status_outcome",
]

Outcome = Literal["sent", "retryable", "permanent"]
Throttle = Literal["channel", "recipient"]

EXCERPT_LIMIT = 1024
_SCRUB_WINDOW = 4 * EXCERPT_LIMIT

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
    """One platform's delivery adapter: its content rules, its send, and its pace.

    ``channel_rate`` is the platform's documented send rate per channel (a channel may override
    it with ``send_rate_per_second``); ``audio_video_rate`` a separate per-channel budget for
    audio and video sends, where the platform has one.
    """

    platform: str
    channel_rate: Rate
    audio_video_rate: Rate | None

    def recipient_rate(self, recipient: str, *, configured_pair: Rate | None = None) -> Rate | None:
        """The per-conversation pace, or None where the platform documents none.
        ``configured_pair`` is the operator's pair pace for a platform that documents no
        figure (WhatsApp)."""

    def automatic_answer(self, event: MessageEvent) -> SendCommand | None:
        """The command the platform requires in answer to an inbound message, or None (Telegram:
        a button press must be answered, or the user's client shows a spinner)."""

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
