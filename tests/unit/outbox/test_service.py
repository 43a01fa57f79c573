"""Pure parts of the outbox service: the request hash, window keys, the checks before a command
is stored."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, cast

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from channels.models import Channel
from infra.settings import Settings
from outbox.contracts import SendCommand
from outbox.errors import ContentNotSupported, WindowClosed
from outbox.service import check, needs_window, request_hash, window_key


def command(**overrides: Any) -> SendCommand:
    body: dict[str, Any] = {
        "id": "c1",
        "channel_id": "ch",
        "to": "393331234567",
        "content": {"kind": "text", "text": "hi"},
        "metadata": {"b": 1, "a": {"y": 2, "x": 1}},
    }
    body.update(overrides)
    return SendCommand.model_validate(body)


def test_request_hash_ignores_id_key_order_and_offset_spelling() -> None:
    base = request_hash(command())
    assert len(base) == 64
    assert request_hash(command(id="other")) == base
    assert request_hash(command(metadata={"a": {"x": 1, "y": 2}, "b": 1})) == base
    instant = datetime(2030, 1, 1, 12, tzinfo=UTC)
    rome = instant.astimezone(timezone(timedelta(hours=1)))
    assert request_hash(command(not_after=instant)) == request_hash(command(not_after=rome))
    assert request_hash(command(content={"kind": "text", "text": "bye"})) != base
    assert request_hash(command(not_after=instant)) != base


def test_window_key_and_which_messages_need_the_window() -> None:
    assert window_key("c", "whatsapp", "+39 333-1234567") == "c:393331234567"
    assert window_key("c", "twilio", "whatsapp:+1555") == "c:whatsapp:+1555"
    template = {"kind": "template", "template": {"name": "t", "language": "en"}}
    assert needs_window("whatsapp", command())
    assert not needs_window("whatsapp", command(content=template))
    assert needs_window("twilio", command(to="whatsapp:+15551234567"))
    assert not needs_window("twilio", command(to="+15551234567"))
    assert not needs_window("telegram", command())
    # the sender decides too: a Twilio WhatsApp channel needs the window whatever ``to`` says
    assert needs_window("twilio", command(to="+15551234567"), "whatsapp:+14155238886")
    assert not needs_window("twilio", command(to="+15551234567"), "+14155238886")
    assert not needs_window("twilio", command(content=template), "whatsapp:+14155238886")


class _NoWindows:
    """The one session call ``check`` makes: no window is recorded for anyone."""

    async def get(self, model: type, key: str) -> None:
        return None


def _twilio(account_id: str) -> Channel:
    return Channel(id=uuid.uuid4(), platform="twilio", account_id=account_id, enabled=True)


@pytest.mark.parametrize(
    ("account_id", "to", "fragment"),
    [
        ("whatsapp:+14155238886", "+393331234567", "WhatsApp sender"),
        ("+14155238886", "whatsapp:+393331234567", "SMS sender"),
    ],
)
async def test_check_refuses_a_twilio_whatsapp_sms_mix(
    account_id: str, to: str, fragment: str
) -> None:
    settings = Settings(_env_file=None)
    with pytest.raises(ContentNotSupported, match=fragment) as refused:
        await check(
            cast(AsyncSession, _NoWindows()),
            settings,
            command(to=to),
            _twilio(account_id),
            datetime.now(UTC),
        )
    assert refused.value.code == "unsupported_content"


async def test_check_applies_the_window_to_a_twilio_whatsapp_sender() -> None:
    settings = Settings(_env_file=None)
    with pytest.raises(WindowClosed):
        await check(
            cast(AsyncSession, _NoWindows()),
            settings,
            command(to="whatsapp:+393331234567"),
            _twilio("whatsapp:+14155238886"),
            datetime.now(UTC),
        )
    # an SMS pair has no window
    await check(
        cast(AsyncSession, _NoWindows()),
        settings,
        command(to="+393331234567"),
        _twilio("+14155238886"),
        datetime.now(UTC),
    )
