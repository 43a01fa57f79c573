"""Each platform's peer addressing rules (``channels.addressing``), exactly: the one copy the
outbox (window, SMS opt-outs) and the conversation layer (contact keys, conversation ids) use."""

from __future__ import annotations

import pytest

from channels.addressing import (
    ADDRESSING,
    TwilioAddressing,
    WhatsAppAddressing,
    addressing,
    contact_key,
    is_whatsapp_address,
)


@pytest.mark.parametrize(
    ("platform", "peer", "key"),
    [
        ("whatsapp", "+39 333-1234567", "393331234567"),
        ("whatsapp", "+1 (555) 010-0000", "15550100000"),
        ("whatsapp", "393331234567", "393331234567"),
        ("whatsapp", "+", "+"),  # phone characters but no digit: kept as it is
        ("whatsapp", "US.13491208655302741918", "US.13491208655302741918"),  # a BSUID
        ("twilio", "+1 555 765 4321", "+1 555 765 4321"),
        ("twilio", "whatsapp:+15557654321", "whatsapp:+15557654321"),
        ("telegram", "-100123", "-100123"),
        ("messenger", "6245827582", "6245827582"),
        ("instagram", "17841400000000000", "17841400000000000"),
        ("unknown", "+39 333", "+39 333"),
    ],
)
def test_contact_key(platform: str, peer: str, key: str) -> None:
    assert contact_key(platform, peer) == key


@pytest.mark.parametrize(
    ("platform", "peer", "window_peer"),
    [
        ("whatsapp", "+39 333-1234567", "393331234567"),
        ("whatsapp", "US.1349", "1349"),  # the window key keeps only digits, whatever the peer
        ("whatsapp", "abc", "abc"),
        ("twilio", "whatsapp:+1555", "whatsapp:+1555"),
        ("messenger", "psid-1", "psid-1"),
        ("telegram", "-100123", "-100123"),
    ],
)
def test_window_peer(platform: str, peer: str, window_peer: str) -> None:
    assert addressing(platform).window_peer(peer) == window_peer


@pytest.mark.parametrize(
    ("platform", "to", "account_id", "window", "sms"),
    [
        ("whatsapp", "+15557654321", "1065", True, False),
        ("twilio", "whatsapp:+15557654321", "+15551234567", True, False),
        ("twilio", "+15557654321", "whatsapp:+15551234567", True, False),
        ("twilio", "+15557654321", "+15551234567", False, True),
        ("twilio", "+15557654321", "", False, True),
        ("messenger", "psid", "page", False, False),
        ("instagram", "igsid", "ig", False, False),
        ("telegram", "42", "bot", False, False),
    ],
)
def test_window_and_sms(platform: str, to: str, account_id: str, window: bool, sms: bool) -> None:
    rules = addressing(platform)
    assert rules.needs_window(to, account_id) is window
    assert rules.is_sms(to, account_id) is sms


@pytest.mark.parametrize(
    ("platform", "account_id", "to", "conversation_id"),
    [
        ("whatsapp", "1065", "+39 333 1234567", "whatsapp:1065:393331234567"),
        ("twilio", "+1555123", "whatsapp:+1555765", "twilio:whatsapp:+1555123:whatsapp:+1555765"),
        ("twilio", "whatsapp:+1555", "whatsapp:+1556", "twilio:whatsapp:+1555:whatsapp:+1556"),
        ("twilio", "+15551234567", "+15557654321", "twilio:+15551234567:+15557654321"),
        ("telegram", "12345", "-100", "telegram:12345:-100"),
        ("messenger", "page", "psid", "messenger:page:psid"),
    ],
)
def test_conversation_id(platform: str, account_id: str, to: str, conversation_id: str) -> None:
    assert addressing(platform).conversation_id(platform, account_id, to) == conversation_id


def test_registry_and_fallback() -> None:
    assert isinstance(ADDRESSING["whatsapp"], WhatsAppAddressing)
    assert isinstance(ADDRESSING["twilio"], TwilioAddressing)
    assert addressing("not-a-platform") is ADDRESSING["messenger"]
    assert is_whatsapp_address("whatsapp:+1555")
    assert not is_whatsapp_address("+1555")
    assert not is_whatsapp_address("WhatsApp:+1555")
