"""Twilio: ``X-Twilio-Signature`` = base64(HMAC-SHA1(auth token, URL + sorted form params)).

* Form bodies: the string signed is the full public URL (query included) followed by every
  POST parameter name and value, names sorted, values of a repeated name sorted
  (twilio-python ``RequestValidator.compute_signature``). All received params are signed: we
  never whitelist before validating (Twilio adds parameters without notice).
* JSON bodies: the URL carries ``bodySHA256=<hex sha256(raw body)>``; the body hash is checked
  and the signature is over the URL alone.
* Like twilio-python, the URL is tried with and without the scheme's default port.
* ``auth_token`` and ``previous_auth_token`` are both accepted.

Twilio's signing string has no separators (``MessageSidSM…NumMedia0``), so one signature also
covers other splits of the same characters: ``MessageSid=SM…NumMedia0`` with ``NumMedia``
dropped would replay a captured webhook as a new event. A form is therefore accepted only when
its known fields have Twilio's formats (``well_formed``): identifiers exactly their prefix and
32 hex digits, counts digits only, and no parameter name that extends a known one.

The URL is the public one Twilio called: ``SWITCHBOARD_PUBLIC_BASE_URL`` + path + query, or the
``X-Forwarded-Proto``/``X-Forwarded-Host`` of a trusted proxy (``trust_forwarded_headers``);
the endpoint builds it and passes it in ``WebhookRequest.url``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, parse_qsl, urlsplit, urlunsplit

from gateway.verifiers._secrets import candidates, equal

if TYPE_CHECKING:
    from gateway.verifiers import WebhookRequest

_FORM = "application/x-www-form-urlencoded"

_SID_HEX = "[0-9a-fA-F]{32}"
_MESSAGE_SID = re.compile(f"(?:SM|MM){_SID_HEX}")
FIELD_FORMATS: Mapping[str, re.Pattern[str]] = {
    "MessageSid": _MESSAGE_SID,
    "SmsSid": _MESSAGE_SID,
    "SmsMessageSid": _MESSAGE_SID,
    "AccountSid": re.compile(f"AC{_SID_HEX}"),
    "MessagingServiceSid": re.compile(f"MG{_SID_HEX}"),
    "NumMedia": re.compile("[0-9]{1,3}"),
    "NumSegments": re.compile("[0-9]{1,4}"),
}
"""Twilio's formats of the fields whose boundaries a re-split would move
(https://www.twilio.com/docs/messaging/guides/webhook-request; SIDs are a two-letter prefix and
32 hex digits: https://www.twilio.com/docs/glossary/what-is-a-sid)."""


def well_formed(params: list[tuple[str, str]]) -> bool:
    """Whether every known field has Twilio's format, once, and no name extends a known one
    (``MessageSidSM…`` as a name with an empty value is the same signed string too)."""
    seen: set[str] = set()
    for name, value in params:
        pattern = FIELD_FORMATS.get(name)
        if pattern is not None:
            if name in seen or not pattern.fullmatch(value):
                return False
            seen.add(name)
        elif any(name.startswith(known) for known in FIELD_FORMATS):
            return False
    return True


def url_variants(url: str) -> list[str]:
    """The URL as given, plus the same URL with the default port added or removed."""
    parts = urlsplit(url)
    default = {"https": 443, "http": 80}.get(parts.scheme)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    out = [url]
    if default is None:
        return out
    try:
        port = parts.port
    except ValueError:
        return out
    userinfo = parts.netloc.rpartition("@")[0]
    prefix = f"{userinfo}@" if userinfo else ""
    if port is None:
        out.append(urlunsplit(parts._replace(netloc=f"{prefix}{host}:{default}")))
    elif port == default:
        out.append(urlunsplit(parts._replace(netloc=f"{prefix}{host}")))
    return out


def signing_string(url: str, params: list[tuple[str, str]]) -> str:
    grouped: dict[str, set[str]] = {}
    for name, value in params:
        grouped.setdefault(name, set()).add(value)
    return url + "".join(
        name + value for name in sorted(grouped) for value in sorted(grouped[name])
    )


def sign(token: bytes, data: str) -> bytes:
    return base64.b64encode(hmac.new(token, data.encode("utf-8"), hashlib.sha1).digest())


TWIML = b'<?xml version="1.0" encoding="UTF-8"?><Response/>'
"""An empty TwiML response: Twilio reads the webhook answer as instructions, this one says none."""


class TwilioVerifier:
    content_types: frozenset[str] = frozenset({_FORM, "application/json"})
    signature_headers: tuple[str, ...] = ("x-twilio-signature",)
    reply: tuple[bytes, str] | None = (TWIML, "application/xml")

    def verify(self, request: WebhookRequest, credentials: Mapping[str, str]) -> bool:
        provided = request.headers.get("x-twilio-signature", "").strip().encode("ascii", "replace")
        if not provided:
            return False
        query = parse_qs(urlsplit(request.url).query, keep_blank_values=True)
        params: list[tuple[str, str]] = []
        if "bodySHA256" in query:
            digest = hashlib.sha256(request.body).hexdigest().encode()
            if not equal(digest, query["bodySHA256"][0].lower().encode("ascii", "replace")):
                return False
        else:
            media = (request.content_type or "").split(";", 1)[0].strip().lower()
            if media != _FORM:
                return False
            try:
                params = parse_qsl(
                    request.body.decode("utf-8"), keep_blank_values=True, max_num_fields=10_000
                )
            except (UnicodeDecodeError, ValueError):
                return False
            if not well_formed(params):
                return False
        ok = False
        for token in candidates(credentials, "auth_token", "previous_auth_token"):
            for url in url_variants(request.url):
                ok |= equal(sign(token, signing_string(url, params)), provided)
        return ok

    def handshake(self, query: Mapping[str, str], credentials: Mapping[str, str]) -> str | None:
        raise NotImplementedError
