"""Property-based: whatever arrives, the normalizer raises only NormalizeError, and every
event it emits is valid against the committed JSON Schema and round-trips byte-identically
through EVENT_ADAPTER.

Internal errors are *not* masked here (conftest turns RAISE_INTERNAL_ERRORS on), so a crash
in any adapter fails these tests instead of degrading to `unsupported`.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from normalizer import EVENT_ADAPTER, PLATFORMS, NormalizeError, dump_event, json_schema, normalize

from .helpers import FIXTURES, RECEIVED_AT
from .jsonschema_lite import validate

SCHEMA = json_schema()
FAST = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)

KEYS = [
    # envelopes
    "object", "entry", "changes", "field", "value", "metadata", "phone_number_id", "contacts",
    "messages", "statuses", "errors", "messaging", "standby", "message_echoes", "update_id",
    # WhatsApp
    "id", "from", "from_user_id", "to", "timestamp", "type", "text", "body", "caption",
    "context", "forwarded", "frequently_forwarded", "image", "video", "audio", "voice",
    "document", "sticker", "location", "latitude", "longitude", "interactive", "button_reply",
    "list_reply", "title", "button", "payload", "reaction", "emoji", "message_id", "order",
    "system", "edit", "revoke", "original_message_id", "message", "status", "recipient_id",
    "recipient_user_id", "code", "error_data", "details", "wa_id", "user_id", "profile", "name",
    "username", "mime_type", "sha256", "filename", "url",
    # Meta
    "sender", "recipient", "mid", "is_echo", "is_deleted", "is_unsupported", "quick_reply",
    "attachments", "coordinates", "lat", "long", "sticker_id", "reply_to", "story", "postback",
    "action", "read", "delivery", "mids", "watermark", "message_edit", "num_edit", "referral",
    "ref", "source",
    # Telegram
    "chat", "date", "edit_date", "edited_message", "channel_post", "edited_channel_post",
    "business_message", "photo", "file_id", "file_name", "animation", "video_note", "venue",
    "address", "contact", "reply_to_message", "forward_origin", "callback_query", "data",
    "reply_markup", "inline_keyboard", "callback_data", "my_chat_member", "new_chat_member",
    "message_reaction", "new_reaction", "user", "actor_chat", "sender_chat",
    "deleted_business_messages", "message_ids", "first_name", "last_name",
]  # fmt: skip

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["", "text", "image", "audio", "sent", "read", "react", "unreact", "kicked",
                       "member", "private", "1749416383", "-1", "messages", "button_reply"])
    | st.text(max_size=12)
)  # fmt: skip

JSON = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), children, max_size=6)
    ),
    max_leaves=40,
)


def check(platform: str, body: bytes, content_type: str | None = None) -> None:
    try:
        events = normalize(
            platform,
            body,
            channel_id="ch_prop",
            content_type=content_type,
            received_at=RECEIVED_AT,
            account_id="acct",
        )
    except NormalizeError as exc:
        message = str(exc)
        events = None
    if events is None:
        assert "\n" not in message
        return
    for event in events:
        raw = dump_event(event)
        doc = json.loads(raw, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
        validate(doc, SCHEMA)
        assert dump_event(EVENT_ADAPTER.validate_json(raw)) == raw
    again = normalize(
        platform,
        body,
        channel_id="ch_prop",
        content_type=content_type,
        received_at=RECEIVED_AT,
        account_id="acct",
    )
    assert [dump_event(e) for e in again] == [dump_event(e) for e in events]


@FAST
@given(platform=st.sampled_from(PLATFORMS), body=st.binary(max_size=300))
def test_arbitrary_bytes(platform: str, body: bytes) -> None:
    check(platform, body)


@FAST
@given(platform=st.sampled_from(PLATFORMS), doc=JSON)
def test_arbitrary_json(platform: str, doc: Any) -> None:
    check(platform, json.dumps(doc).encode())


def _envelope(platform: str, item: Any, value: Any) -> Any:
    if platform == "whatsapp":
        return {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": "1",
                    "changes": [
                        {"field": "messages", "value": value},
                        {
                            "field": "messages",
                            "value": {
                                "metadata": {"phone_number_id": "9"},
                                "messages": [item],
                                "statuses": [item],
                            },
                        },
                        {"field": "smb_message_echoes", "value": {"message_echoes": [item]}},
                    ],
                }
            ],
        }
    if platform in ("messenger", "instagram"):
        return {
            "object": "page",
            "entry": [
                {
                    "id": "1",
                    "messaging": [item, value],
                    "changes": [{"field": "messages", "value": item}],
                }
            ],
        }
    if platform == "telegram":
        return {"update_id": 7, **(value if isinstance(value, dict) else {"message": item})}
    raise AssertionError(platform)  # pragma: no cover


@FAST
@given(
    platform=st.sampled_from(["whatsapp", "messenger", "instagram", "telegram"]),
    item=st.dictionaries(st.sampled_from(KEYS), JSON, max_size=8),
    value=JSON,
)
def test_arbitrary_json_inside_real_envelopes(platform: str, item: Any, value: Any) -> None:
    check(platform, json.dumps(_envelope(platform, item, value)).encode())


FIXTURE_DOCS = [
    (p.parent.name, json.loads(p.read_bytes())) for p in sorted(FIXTURES.glob("*/*.json"))
]
TWILIO_FORMS = [
    dict(line.split("=", 1) for line in p.read_text().split("&"))
    for p in sorted(FIXTURES.glob("twilio/*.txt"))
]


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


def _mutate(doc: Any, where: tuple[Any, ...], new: Any, delete: bool) -> Any:
    if not where:
        return new
    parent = doc
    for part in where[:-1]:
        parent = parent[part]
    if delete and isinstance(parent, dict):
        del parent[where[-1]]
    else:
        parent[where[-1]] = new
    return doc


@FAST
@given(data=st.data(), index=st.integers(min_value=0, max_value=len(FIXTURE_DOCS) - 1))
def test_mutations_of_real_payloads(data: st.DataObject, index: int) -> None:
    platform, original = FIXTURE_DOCS[index]
    doc = json.loads(json.dumps(original))
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        paths = _paths(doc)
        where = data.draw(st.sampled_from(paths))
        doc = _mutate(doc, where, data.draw(JSON), data.draw(st.booleans()))
    check(platform, json.dumps(doc).encode())


FORM_KEYS = sorted({k for form in TWILIO_FORMS for k in form} | {"Latitude", "Longitude",
    "ButtonPayload", "ButtonText", "NumMedia", "MediaUrl0", "MediaContentType0", "ErrorCode",
    "MessageStatus", "EventType", "Label", "Address"})  # fmt: skip
FORM_VALUES = st.sampled_from(
    ["", "0", "1", "2", "-1", "nan", "inf", "1e400", "45.4", "received", "queued", "delivered",
     "undelivered", "read", "failed", "whatsapp:+14155550123", "+15558675310", "image/jpeg",
     "true", "SM1"]
) | st.text(max_size=10)  # fmt: skip


@FAST
@given(
    base=st.sampled_from(TWILIO_FORMS),
    changes=st.dictionaries(st.sampled_from(FORM_KEYS), FORM_VALUES, max_size=6),
    drop=st.lists(st.sampled_from(FORM_KEYS), max_size=3),
)
def test_twilio_forms(base: dict[str, str], changes: dict[str, str], drop: list[str]) -> None:
    from urllib.parse import unquote_plus

    form = {k: unquote_plus(v) for k, v in base.items()}
    form.update(changes)
    for key in drop:
        form.pop(key, None)
    check("twilio", urlencode(form).encode(), "application/x-www-form-urlencoded")


ODD_VALUES: list[Any] = [None, 0, -1, 1.5, 10**40, True, "", "x", [], [1], {}, {"a": 1}]


def test_every_single_point_type_confusion_of_every_fixture() -> None:
    """Exhaustive complement to the random mutations: every node of every JSON fixture is in
    turn replaced by each odd value, or deleted. Output must always validate."""
    count = 0
    for platform, original in FIXTURE_DOCS:
        encoded = json.dumps(original)
        for where in _paths(original)[1:]:
            for new in [*ODD_VALUES, "DELETE"]:
                doc = _mutate(json.loads(encoded), where, new, new == "DELETE")
                try:
                    events = normalize(
                        platform, json.dumps(doc).encode(), channel_id="c", account_id="a"
                    )
                except NormalizeError:
                    continue
                for event in events:
                    raw = dump_event(event)
                    assert dump_event(EVENT_ADAPTER.validate_json(raw)) == raw
                count += 1
    assert count > 10_000


ES_DATA = st.fixed_dictionaries(
    {},
    optional={
        "messageSid": SCALARS,
        "messageStatus": st.sampled_from(["DELIVERED", "READ", "FAILED", "x"]) | SCALARS,
        "timestamp": st.sampled_from(["2025-01-01T00:00:00.000Z", "2025-13-01", ""]) | SCALARS,
        "from": SCALARS,
        "to": SCALARS,
        "body": SCALARS,
        "errorCode": SCALARS,
    },
)


@FAST
@given(
    doc=JSON,
    event_type=st.sampled_from(
        [
            "com.twilio.messaging.inbound-message.received",
            "com.twilio.messaging.message.delivered",
            "com.twilio.voice.call.completed",
        ]
    )
    | SCALARS,
    data=ES_DATA | JSON,
)
def test_twilio_json_bodies(doc: Any, event_type: Any, data: Any) -> None:
    check("twilio", json.dumps(doc).encode(), "application/json")
    events = [{"type": event_type, "id": "EZ1", "time": "2025-01-01T00:00:00Z", "data": data}]
    check("twilio", json.dumps(events).encode(), "application/json; charset=utf-8")
