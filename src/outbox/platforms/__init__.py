"""Platform senders behind one small Protocol, looked up by platform id.

The registry lives here rather than in ``base`` so that ``base`` stays import-cycle free:
every platform module imports ``base``; only this package imports the platform modules.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from outbox.platforms.base import ChannelConfig, Sender, SendResult, UnsupportedContent
from outbox.platforms.http import make_http_client
from outbox.platforms.meta_messenger import MetaMessengerSender
from outbox.platforms.telegram import TelegramSender
from outbox.platforms.twilio import TwilioSender
from outbox.platforms.whatsapp import WhatsAppSender

__all__ = [
    "SENDERS",
    "ChannelConfig",
    "SendResult",
    "Sender",
    "UnsupportedContent",
    "make_http_client",
]

_SENDERS: tuple[Sender, ...] = (
    WhatsAppSender(),
    MetaMessengerSender("messenger"),
    MetaMessengerSender("instagram"),
    TelegramSender(),
    TwilioSender(),
)

SENDERS: Mapping[str, Sender] = MappingProxyType({s.platform: s for s in _SENDERS})
