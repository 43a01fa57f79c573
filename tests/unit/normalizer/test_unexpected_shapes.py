"""``normalize(..., authenticated=True)`` (issue 9, D10): a parsed body of an unexpected
top-level shape, known to come from the platform, is one ``unsupported`` event with the body
kept in ``raw`` and an id derived from the body; unparseable bytes still raise, and without
``authenticated`` the contract is unchanged."""

from __future__ import annotations

import pytest

from normalizer import NormalizeError, normalize

FORM = "application/x-www-form-urlencoded"

UNEXPECTED = [
    (
        "whatsapp",
        b'{"object": "whatsapp_business_account"}',
        None,
        {"object": "whatsapp_business_account"},
    ),
    ("whatsapp", b'{"entry": {}}', None, {"entry": {}}),
    ("messenger", b'"page"', None, "page"),
    ("instagram", b"null", None, None),
    ("telegram", b'{"message": {}}', None, {"message": {}}),
    ("telegram", b'{"update_id": "1"}', None, {"update_id": "1"}),
    ("telegram", b"[1, 2]", None, [1, 2]),
    ("twilio", b"Body=hi&From=%2B1555", FORM, {"Body": "hi", "From": "+1555"}),
]


@pytest.mark.parametrize(("platform", "body", "content_type", "raw"), UNEXPECTED)
def test_an_unexpected_shape_is_one_unsupported_event(
    platform: str, body: bytes, content_type: str | None, raw: object
) -> None:
    with pytest.raises(NormalizeError):
        normalize(platform, body, channel_id="c", content_type=content_type)

    events = normalize(
        platform,
        body,
        channel_id="c",
        content_type=content_type,
        account_id="a",
        authenticated=True,
    )

    assert [e.type for e in events] == ["unsupported"]
    assert events[0].data.raw == raw
    assert events[0].subject == f"{platform}:a:-", "no empty conversation-id parts"
    again = normalize(
        platform,
        body,
        channel_id="c",
        content_type=content_type,
        account_id="a",
        authenticated=True,
    )
    assert again[0].id == events[0].id
    other = normalize(
        platform,
        body + b" ",
        channel_id="c",
        content_type=content_type,
        account_id="a",
        authenticated=True,
    )
    assert other[0].id != events[0].id, "the id is the body's digest"


@pytest.mark.parametrize(
    ("platform", "body", "content_type"),
    [
        ("whatsapp", b"{nope", None),
        ("telegram", b"\xff\xfe", None),
        ("twilio", b"MessageSid=SM1&Body=\xff", None),
        ("twilio", b"MessageSid=SM1", "application/json"),
    ],
)
def test_unparseable_bytes_still_raise(
    platform: str, body: bytes, content_type: str | None
) -> None:
    with pytest.raises(NormalizeError):
        normalize(platform, body, channel_id="c", content_type=content_type, authenticated=True)


def test_an_expected_shape_is_normalised_as_before() -> None:
    body = (
        b'{"update_id": 5, "message": {"message_id": 1, "date": 1700000000, "text": "hi",'
        b' "chat": {"id": 42, "type": "private"}}}'
    )
    assert normalize("telegram", body, channel_id="c", authenticated=True) == normalize(
        "telegram", body, channel_id="c"
    )
