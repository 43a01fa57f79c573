"""Issue 9, D9: Twilio's signing string has no separators, so a captured form can be re-split
under the same signature; the verifier accepts only Twilio's field formats."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest

from gateway.verifiers import REGISTRY, WebhookRequest, twilio
from gateway.verifiers.twilio import sign, signing_string

TOKEN = "twilio-auth-token-abcdef"
URL = "https://hooks.example.com/webhooks/twilio/ch"
SID = "SM" + "0123456789abcdef" * 2
ACCOUNT = "AC" + "fedcba9876543210" * 2
FORM = [
    ("AccountSid", ACCOUNT),
    ("Body", "hello"),
    ("From", "+15557654321"),
    ("MessageSid", SID),
    ("NumMedia", "0"),
    ("NumSegments", "1"),
    ("SmsSid", SID),
    ("To", "+15551234567"),
]


def _verify(params: list[tuple[str, str]], signed: list[tuple[str, str]]) -> bool:
    signature = sign(TOKEN.encode(), signing_string(URL, signed)).decode()
    request = WebhookRequest(
        body=urlencode(params).encode(),
        headers={"x-twilio-signature": signature},
        url=URL,
        content_type="application/x-www-form-urlencoded",
    )
    return REGISTRY["twilio"].verify(request, {"auth_token": TOKEN})


def _without(name: str) -> list[tuple[str, str]]:
    return [(n, v) for n, v in FORM if n != name]


def _with(name: str, value: str) -> list[tuple[str, str]]:
    return [(n, value if n == name else v) for n, v in FORM]


RESPLITS = {
    "MessageSid swallows NumMedia": [
        *[p for p in _without("NumMedia") if p[0] != "MessageSid"],
        ("MessageSid", SID + "NumMedia0"),
    ],
    "NumMedia swallows NumSegments": [
        *[p for p in _without("NumSegments") if p[0] != "NumMedia"],
        ("NumMedia", "0NumSegments1"),
    ],
    "name swallows its value": [*_without("MessageSid"), ("MessageSid" + SID, "")],
    "AccountSid swallows Body": [
        *[p for p in _without("AccountSid") if p[0] != "Body"],
        ("AccountSid", ACCOUNT + "Bodyhello"),
    ],
}


def test_the_signed_form_verifies() -> None:
    assert _verify(FORM, FORM)


@pytest.mark.parametrize("params", RESPLITS.values(), ids=RESPLITS.keys())
def test_a_resplit_form_under_the_same_signature_is_refused(
    params: list[tuple[str, str]],
) -> None:
    assert signing_string(URL, params) == signing_string(URL, FORM)  # the attack is real
    assert not _verify(params, FORM)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MessageSid", "SM1"),
        ("MessageSid", "XX" + "0" * 32),
        ("SmsMessageSid", SID + "0"),
        ("AccountSid", "AC" + "g" * 32),
        ("MessagingServiceSid", "MG" + "0" * 31),
        ("NumMedia", "1x"),
        ("NumSegments", "-1"),
    ],
)
def test_malformed_known_fields_are_refused_even_when_signed(name: str, value: str) -> None:
    params = [*_without(name), (name, value)]
    assert not twilio.well_formed(params)
    assert not _verify(params, params)


def test_mms_sids_and_unknown_fields_are_accepted() -> None:
    params = [*_with("MessageSid", "MM" + "a" * 32), ("MessagingServiceSid", "MG" + "b" * 32)]
    params.append(("OriginalRepliedMessageSid", "anything"))
    assert _verify(params, params)
