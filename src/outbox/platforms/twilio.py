"""Twilio Programmable Messaging sender (SMS, MMS and WhatsApp via Twilio).

``POST {base}/2010-04-01/Accounts/{AccountSid}/Messages.json``, form-encoded, HTTP Basic auth
with ``account_sid:auth_token`` (https://www.twilio.com/docs/messaging/api/message-resource;
docs/platforms.md §5.5). ``channel.account_id`` is the sender: a phone number
(``+1555…``, ``whatsapp:+1555…``) goes in ``From``, a Messaging Service SID (``MG…``) in
``MessagingServiceSid``.

WhatsApp and SMS do not mix: ``From`` and ``To`` must both carry ``whatsapp:`` or neither
(Twilio error 21910, "Invalid From and To pair"), so such a pair is refused up front. A
Messaging Service may hold senders of both kinds and is not checked.

Mapping of the contract (decisions):
- text -> ``Body`` (<= 1600 chars).
- media -> ``MediaUrl`` (by URL only: Twilio fetches it), caption -> ``Body``; media ids and
  stickers are refused. ``filename`` is a hint and is dropped.
- template -> ``ContentSid`` = ``template.name`` (an ``HX…`` Content SID; ``language`` is implied
  by the Content resource) and ``ContentVariables`` = JSON object built from the WhatsApp-shaped
  ``components``: every ``{"type": "text", "text": …}`` parameter in order, keyed by its
  ``parameter_name`` when given, else by its 1-based position (``{"1": …, "2": …}``).
- interactive, reaction and reply_to are refused: plain Messages cannot express them (buttons
  need a Content template, i.e. a ``template`` command).
- typing -> ``POST {messaging base}/v2/Indicators/Typing.json`` with ``channel=whatsapp`` and
  ``messageId`` = ``typing.message_id`` (the SID of the customer's message, which Twilio also
  marks read): WhatsApp senders only, in Public Beta
  (https://www.twilio.com/docs/whatsapp/api/typing-indicators-resource). SMS has no typing
  indicator and Twilio has no read-mark API: those are refused. The base is
  ``https://messaging.twilio.com``, or the channel's ``api_base_url`` when set.
- every send passes ``StatusCallback`` = the channel's webhook URL (``ChannelConfig.webhook_url``)
  when known: Twilio then posts the message's status changes there, the gateway verifies and
  normalizes them like any Twilio webhook, and the outbox correlates them by ``MessageSid``
  (the ``sid`` the send returned). Without it, statuses come back only through a Messaging
  Service configured by hand.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import orjson

from channels.addressing import TWILIO_WHATSAPP_PREFIX, is_whatsapp_address
from normalizer.models import MessageEvent
from outbox.contracts import SendCommand, Template
from outbox.platforms.base import (
    ChannelConfig,
    ErrorRule,
    SendResult,
    UnsupportedContent,
    api_base,
    excerpt,
    missing_credential,
    parse_json,
    parse_retry_after,
    result_from_rule,
    sent,
)
from outbox.platforms.http import HttpClient, HttpExchange, basic_credentials, post
from outbox.platforms.scrub import scrub
from outbox.ratelimit import Rate

TWILIO_BASE_URL = "https://api.twilio.com"
TWILIO_MESSAGING_BASE_URL = "https://messaging.twilio.com"
_SID = re.compile(r"^(SM|MM)[0-9a-fA-F]{32}$")
MAX_BODY = 1600
_CONTENT_SID = re.compile(r"^HX[0-9a-fA-F]{32}$")
WHATSAPP_PREFIX = TWILIO_WHATSAPP_PREFIX
TWILIO_PAIR = Rate(1, 1.0)  # 14107: >30 replies in 30 s between two numbers is blocked

_CHANNEL_THROTTLE = ErrorRule(retryable=True, throttle="channel")
_PERMANENT = ErrorRule(retryable=False)

# https://www.twilio.com/docs/api/errors/<code> (docs/platforms.md §5.6)
ERRORS: Mapping[int, ErrorRule] = {
    20429: _CHANNEL_THROTTLE,  # too many requests: "safe to retry after backing off"
    30001: _CHANNEL_THROTTLE,  # queue overflow
    21611: _CHANNEL_THROTTLE,  # From number's queue would exceed 10 h
    63017: _CHANNEL_THROTTLE,  # account above its MPS
    63018: _CHANNEL_THROTTLE,  # channel rate limit / WhatsApp messaging limit
    14107: ErrorRule(retryable=True, throttle="recipient", retry_after=30.0),  # reply loop guard
    20500: ErrorRule(retryable=True),  # internal server error
    20503: ErrorRule(retryable=True),  # service unavailable
    20003: ErrorRule(retryable=False, credentials=True),  # authentication
    20404: _PERMANENT,  # resource not found (wrong account SID)
    21211: _PERMANENT,  # invalid To number
    21212: _PERMANENT,  # invalid From number
    21408: _PERMANENT,  # region not enabled
    21606: _PERMANENT,  # From cannot send this kind of message
    21610: _PERMANENT,  # recipient unsubscribed (STOP)
    21612: _PERMANENT,  # cannot route between these numbers
    21614: _PERMANENT,  # To is not a mobile number
    21617: _PERMANENT,  # body too long
    21620: _PERMANENT,  # invalid media URL
    21910: _PERMANENT,  # invalid From and To pair (WhatsApp and SMS mixed)
    21656: _PERMANENT,  # invalid ContentVariables
    63016: _PERMANENT,  # outside the WhatsApp window: use a template
}


def check_pair(sender: str, to: str) -> None:
    """Refuse a WhatsApp sender with an SMS recipient and vice versa (Twilio 21910).

    ``sender`` is the channel's ``account_id``; an empty one (unknown) or a Messaging Service
    SID (``MG…``) is not checked.
    """
    if not sender or sender.startswith("MG"):
        return
    if is_whatsapp_address(sender) and not is_whatsapp_address(to):
        raise UnsupportedContent(
            f"Twilio cannot send from a WhatsApp sender ({sender!r}) to an SMS number "
            f"({to!r}): write the recipient as '{WHATSAPP_PREFIX}{to}'"
        )
    if is_whatsapp_address(to) and not is_whatsapp_address(sender):
        raise UnsupportedContent(
            f"Twilio cannot send from an SMS sender ({sender!r}) to a WhatsApp address "
            f"({to!r}): use a channel whose account_id is a '{WHATSAPP_PREFIX}' sender"
        )


class TwilioSender:
    platform = "twilio"
    channel_rate = Rate(1)
    """1 segment/s for a US long code (docs/platforms.md §5.6, error 21611); raise it per
    channel for short codes, toll-free or Messaging Services."""
    audio_video_rate: Rate | None = None

    def recipient_rate(self, recipient: str, *, configured_pair: Rate | None = None) -> Rate | None:
        return TWILIO_PAIR

    def automatic_answer(self, event: MessageEvent) -> SendCommand | None:
        return None

    def validate(self, command: SendCommand, *, account_id: str | None = None) -> None:
        self._form(command, sender=account_id or "")

    def _form(self, command: SendCommand, *, sender: str) -> dict[str, str | list[str]]:
        content = command.content
        if content.callback_answer is not None:
            raise UnsupportedContent("callback answers are for Telegram button presses only")
        if content.typing is not None or content.mark_read is not None:
            return _typing_form(command, sender)
        if command.reply_to is not None:
            raise UnsupportedContent("Twilio messages cannot quote an earlier message (reply_to)")
        check_pair(sender, command.to)
        form: dict[str, str | list[str]] = {"To": command.to}
        if sender.startswith("MG"):
            form["MessagingServiceSid"] = sender
        else:
            form["From"] = sender
        if content.text is not None:
            _check_body(content.text)
            form["Body"] = content.text
        elif content.media is not None:
            media = content.media
            if media.kind == "sticker":
                raise UnsupportedContent("Twilio cannot send stickers")
            if media.url is None:
                raise UnsupportedContent("Twilio media must be given by url (MediaUrl), not id")
            form["MediaUrl"] = [media.url]
            if media.caption:
                _check_body(media.caption)
                form["Body"] = media.caption
        elif content.template is not None:
            form["ContentSid"] = _content_sid(content.template)
            variables = _content_variables(content.template)
            if variables:
                form["ContentVariables"] = orjson.dumps(variables).decode()
        elif content.interactive is not None:
            raise UnsupportedContent(
                "Twilio messages cannot carry buttons; use a Content template (template.name = HX…)"
            )
        else:
            raise UnsupportedContent("Twilio messages cannot send reactions")
        return form

    def _request_form(
        self, command: SendCommand, channel: ChannelConfig
    ) -> dict[str, str | list[str]]:
        form = self._form(command, sender=channel.account_id)
        if channel.webhook_url:
            form["StatusCallback"] = channel.webhook_url
        return form

    async def send(
        self,
        client: HttpClient,
        channel: ChannelConfig,
        command: SendCommand,
        *,
        timeout: float,  # noqa: ASYNC109 - the Sender contract; enforced inside post()
    ) -> SendResult:
        sid = channel.credentials.get("account_sid")
        token = channel.credentials.get("auth_token")
        if not sid:
            return missing_credential("account_sid")
        if not token:
            return missing_credential("auth_token")
        secrets = (token, basic_credentials(sid, token))
        if command.content.typing is not None:
            base = api_base(channel, TWILIO_MESSAGING_BASE_URL)
            if isinstance(base, SendResult):
                return base
            url = f"{base}/v2/Indicators/Typing.json"
            form = _typing_form(command, channel.account_id)
        else:
            base = api_base(channel, TWILIO_BASE_URL)
            if isinstance(base, SendResult):
                return base
            url = f"{base}/2010-04-01/Accounts/{sid}/Messages.json"
            form = self._request_form(command, channel)
        exchange = await post(
            client, url, timeout=timeout, secrets=secrets, form=form, auth=(sid, token)
        )
        if isinstance(exchange, SendResult):
            return exchange
        payload = parse_json(exchange.body)
        if 200 <= exchange.status < 300:
            message_sid = payload.get("sid") if isinstance(payload, dict) else None
            return sent(message_sid if isinstance(message_sid, str) else None, exchange, secrets)
        return _failure(exchange, payload, secrets)


def _typing_form(command: SendCommand, sender: str) -> dict[str, str | list[str]]:
    content = command.content
    if content.mark_read is not None:
        raise UnsupportedContent(
            "Twilio has no read-mark API; on WhatsApp a typing indicator (content.kind "
            "'typing' with the customer's message SID) also marks that message read"
        )
    assert content.typing is not None
    if not is_whatsapp_address(command.to) and not is_whatsapp_address(sender):
        raise UnsupportedContent("Twilio typing indicators exist for WhatsApp senders only")
    message_id = content.typing.message_id
    if message_id is None or not _SID.match(message_id):
        raise UnsupportedContent(
            "Twilio typing indicators need content.typing.message_id: the SID (SM…/MM…) of "
            "the customer's WhatsApp message being answered"
        )
    return {"channel": "whatsapp", "messageId": message_id}


def _check_body(text: str) -> None:
    if len(text) > MAX_BODY:
        raise UnsupportedContent(f"Twilio Body is limited to {MAX_BODY} characters")


def _content_sid(template: Template) -> str:
    if not _CONTENT_SID.match(template.name):
        raise UnsupportedContent(
            "Twilio templates are Content resources: "
            "template.name must be a ContentSid (HX + 32 hex)"
        )
    return template.name


def _content_variables(template: Template) -> dict[str, str]:
    variables: dict[str, str] = {}
    position = 0
    for component in template.components:
        parameters = component.get("parameters", [])
        if not isinstance(parameters, list):
            raise UnsupportedContent("template component 'parameters' must be a list")
        for parameter in parameters:
            if not isinstance(parameter, dict) or parameter.get("type") != "text":
                raise UnsupportedContent("Twilio ContentVariables only take text parameters")
            text = parameter.get("text")
            if not isinstance(text, str):
                raise UnsupportedContent("template text parameters need a string 'text'")
            position += 1
            name = parameter.get("parameter_name")
            variables[name if isinstance(name, str) and name else str(position)] = text
    return variables


def _failure(exchange: HttpExchange, payload: object, secrets: tuple[str, ...]) -> SendResult:
    code: int | None = None
    title: str | None = None
    if isinstance(payload, dict):
        raw_code = payload.get("code")
        if isinstance(raw_code, int):
            code = raw_code
        message = payload.get("message")
        if isinstance(message, str):
            title = scrub(message, secrets)
    return result_from_rule(
        ERRORS.get(code) if code is not None else None,
        status=exchange.status,
        code=str(code) if code is not None else None,
        title=title,
        retry_after=parse_retry_after(exchange.headers.get("retry-after")),
        body_excerpt=excerpt(exchange.body, secrets),
        duration_ms=exchange.duration_ms,
    )
