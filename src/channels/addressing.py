"""How each platform addresses the party a channel talks to (pure, one entry per platform).

The outbox (24-hour window, opt-outs, SMS rules) and the conversation layer (contact keys,
conversation ids) both need these rules; they never import each other, so the rules live here,
below both, as one object per platform in ``ADDRESSING``, keyed by the platform type
(``normalizer.platforms.Platform``) and covering exactly it
(``tests/unit/test_platform_registries.py``).

* A **peer** is the recipient as a send command's ``to`` names it, or the ``peer`` part of an
  inbound ``conversation_id`` (``<platform>:<account_id>:<peer>``, docs/contracts.md §4).
* The **contact key** is how the conversation layer compares peers: WhatsApp phone numbers by
  their digits (``+39 333 1234567`` is the ``wa_id`` ``393331234567``); anything else, including
  WhatsApp business-scoped user ids, as it is.
* The **window peer** is how the outbox keys WhatsApp's 24-hour customer service window
  (``outbox.service.window_key``): WhatsApp peers by digits only, others as they are.
* Twilio carries both SMS and WhatsApp: an address with the ``whatsapp:`` prefix (the recipient
  or the channel's own number) makes the conversation a WhatsApp one, with its window; any other
  Twilio conversation is SMS, where STOP stops everything.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

__all__ = [
    "ADDRESSING",
    "TWILIO_WHATSAPP_PREFIX",
    "Addressing",
    "addressing",
    "contact_key",
    "is_whatsapp_address",
]

TWILIO_WHATSAPP_PREFIX: Final = "whatsapp:"
_PHONE_CHARS: Final = frozenset("+0123456789 -().")


def is_whatsapp_address(address: str) -> bool:
    """A Twilio WhatsApp address (``whatsapp:+15551234567``), as opposed to an SMS number."""
    return address.startswith(TWILIO_WHATSAPP_PREFIX)


class Addressing:
    """A platform whose peers are opaque ids (Messenger PSID, Instagram IGSID, Telegram chat id):
    compared as they are, no 24-hour window enforced here, never SMS. Subclasses override what
    their platform does differently."""

    def contact_key(self, peer: str) -> str:
        return peer

    def window_peer(self, peer: str) -> str:
        return peer

    def needs_window(self, to: str, account_id: str) -> bool:
        """Free-form (non-template) messages to ``to`` need WhatsApp's 24-hour window."""
        return False

    def is_sms(self, to: str, account_id: str) -> bool:
        return False

    def conversation_id(self, platform: str, account_id: str, to: str) -> str:
        """The id the normalizer gives a conversation with ``to`` on this channel."""
        return f"{platform}:{account_id}:{to}"


class WhatsAppAddressing(Addressing):
    """WhatsApp Cloud API: phone numbers compare by digits; every free-form send needs the
    window; the normalizer names the peer by its ``wa_id`` (digits)."""

    def contact_key(self, peer: str) -> str:
        if set(peer) <= _PHONE_CHARS:
            return "".join(ch for ch in peer if ch.isdigit()) or peer
        return peer

    def window_peer(self, peer: str) -> str:
        return "".join(ch for ch in peer if ch.isdigit()) or peer

    def needs_window(self, to: str, account_id: str) -> bool:
        return True

    def conversation_id(self, platform: str, account_id: str, to: str) -> str:
        return f"{platform}:{account_id}:{self.contact_key(to)}"


class TwilioAddressing(Addressing):
    """Twilio: SMS unless the recipient or the channel's number is a ``whatsapp:`` address.
    Twilio WhatsApp webhooks name our number ``whatsapp:+1555…`` while channels usually store
    ``+1555…``, so an outbound WhatsApp conversation id gets the prefix on the account too."""

    def needs_window(self, to: str, account_id: str) -> bool:
        return is_whatsapp_address(to) or is_whatsapp_address(account_id)

    def is_sms(self, to: str, account_id: str) -> bool:
        return not self.needs_window(to, account_id)

    def conversation_id(self, platform: str, account_id: str, to: str) -> str:
        if is_whatsapp_address(to) and not is_whatsapp_address(account_id):
            account_id = TWILIO_WHATSAPP_PREFIX + account_id
        return f"{platform}:{account_id}:{to}"


_OPAQUE: Final = Addressing()

ADDRESSING: Mapping[str, Addressing] = MappingProxyType(
    {
        "whatsapp": WhatsAppAddressing(),
        "messenger": _OPAQUE,
        "instagram": _OPAQUE,
        "telegram": _OPAQUE,
        "twilio": TwilioAddressing(),
    }
)


def addressing(platform: str) -> Addressing:
    """The platform's rules; an unknown platform (not storable: the channels check constraint)
    gets the opaque-id rules."""
    return ADDRESSING.get(platform, _OPAQUE)


def contact_key(platform: str, peer: str) -> str:
    """The conversation layer's contact key of ``peer`` on ``platform`` (see the module doc)."""
    return addressing(platform).contact_key(peer)
