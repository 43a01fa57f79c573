"""Verifier vectors from the platforms' own docs/SDKs (research/platforms.md §1.1, §5.1)."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from gateway.verifiers import REGISTRY, WebhookRequest
from gateway.verifiers.twilio import sign, signing_string, url_variants

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"


def req(
    body: bytes, headers: dict[str, str], url: str = "https://x/y", ct: str = JSON
) -> WebhookRequest:
    return WebhookRequest(body, headers, url, ct)


def test_meta_vector_and_rotation() -> None:
    meta = REGISTRY["whatsapp"]
    sig = "sha256=0329a06b62cd16b33eb6792be8c60b158d89a2ee3a876fce9a881ebb488c0914"
    assert meta.verify(req(b"test", {"x-hub-signature-256": sig}), {"app_secret": "secret"})
    assert meta.verify(
        req(b"test", {"x-hub-signature-256": sig.upper().replace("SHA256", "sha256")}),
        {"app_secret": "secret"},
    )
    rotated = {"app_secret": "new", "previous_app_secret": "secret"}
    assert meta.verify(req(b"test", {"x-hub-signature-256": sig}), rotated)
    assert not meta.verify(req(b"test", {"x-hub-signature-256": sig}), {"app_secret": "other"})
    assert not meta.verify(req(b"test2", {"x-hub-signature-256": sig}), {"app_secret": "secret"})
    assert not meta.verify(req(b"test", {}), {"app_secret": "secret"})
    assert not meta.verify(
        req(b"test", {"x-hub-signature-256": "sha256=zz\u00e9"}), {"app_secret": "secret"}
    )
    assert not meta.verify(req(b"test", {"x-hub-signature-256": sig}), {})


def test_meta_handshake() -> None:
    meta = REGISTRY["messenger"]
    creds = {"verify_token": "tok"}
    ok = {"hub.mode": "subscribe", "hub.verify_token": "tok", "hub.challenge": "123"}
    assert meta.handshake(ok, creds) == "123"
    assert meta.handshake({**ok, "hub.verify_token": "nope"}, creds) is None
    assert meta.handshake({**ok, "hub.mode": "unsubscribe"}, creds) is None
    assert meta.handshake({"hub.mode": "subscribe", "hub.verify_token": "tok"}, creds) is None


def test_telegram_secret_token_and_rotation() -> None:
    tg = REGISTRY["telegram"]
    creds = {"secret_token": "s3cr3t", "previous_secret_token": "old"}
    assert tg.verify(req(b"{}", {"x-telegram-bot-api-secret-token": "s3cr3t"}), creds)
    assert tg.verify(req(b"{}", {"x-telegram-bot-api-secret-token": "old"}), creds)
    assert not tg.verify(req(b"{}", {"x-telegram-bot-api-secret-token": "s3cr3"}), creds)
    assert not tg.verify(req(b"{}", {"x-telegram-bot-api-secret-token": "é"}), creds)
    assert not tg.verify(req(b"{}", {}), creds)
    assert not tg.verify(req(b"{}", {"x-telegram-bot-api-secret-token": ""}), {"secret_token": ""})
    with pytest.raises(NotImplementedError):
        tg.handshake({}, creds)


TWILIO_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
TWILIO_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+14158675309",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
}


def test_twilio_form_vector() -> None:
    from urllib.parse import urlencode

    tw = REGISTRY["twilio"]
    body = urlencode(TWILIO_PARAMS).encode()
    sig = {"x-twilio-signature": "RSOYDt4T1cUTdK1PDd93/VVr8B8="}
    assert tw.verify(req(body, sig, TWILIO_URL, FORM), {"auth_token": "12345"})
    assert tw.verify(
        req(body, sig, TWILIO_URL, FORM), {"auth_token": "x", "previous_auth_token": "12345"}
    )
    # Port variants, as twilio-python: with or without the scheme's default port.
    with_port = "https://mycompany.com:443/myapp.php?foo=1&bar=2"
    assert tw.verify(req(body, sig, with_port, FORM), {"auth_token": "12345"})
    assert not tw.verify(req(body + b"&Extra=1", sig, TWILIO_URL, FORM), {"auth_token": "12345"})
    assert not tw.verify(req(body, sig, TWILIO_URL + "&x=1", FORM), {"auth_token": "12345"})
    assert not tw.verify(req(body, {}, TWILIO_URL, FORM), {"auth_token": "12345"})


def test_twilio_json_body_sha256_vector() -> None:
    tw = REGISTRY["twilio"]
    body = b'{"property": "value", "boolean": true}'
    digest = "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620"
    assert hashlib.sha256(body).hexdigest() == digest
    url = f"{TWILIO_URL}&bodySHA256={digest}"
    sig = {"x-twilio-signature": "a9nBmqA0ju/hNViExpshrM61xv4="}
    assert tw.verify(req(body, sig, url, JSON), {"auth_token": "12345"})
    assert not tw.verify(req(body + b" ", sig, url, JSON), {"auth_token": "12345"})


def test_twilio_repeated_params_are_sorted_values() -> None:
    assert signing_string("u", [("b", "2"), ("a", "z"), ("a", "y")]) == "uaya" + "zb2"
    expected = base64.b64encode(hmac.new(b"k", b"uayazb2", hashlib.sha1).digest())
    assert sign(b"k", "uayazb2") == expected


def test_url_variants() -> None:
    assert url_variants("https://h/p?q=1") == ["https://h/p?q=1", "https://h:443/p?q=1"]
    assert url_variants("http://h:80/p") == ["http://h:80/p", "http://h/p"]
    assert url_variants("http://h:8080/p") == ["http://h:8080/p"]
