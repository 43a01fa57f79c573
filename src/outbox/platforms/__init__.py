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
from outbox.ratelimit import Rate

__all__ = [
    "AUDIO_VIDEO_RATES",
    "CHANNEL_RATES",
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

CHANNEL_RATES: Mapping[str, Rate] = MappingProxyType(
    {p: s.channel_rate for p, s in SENDERS.items()}
)
"""Each platform's default send rate per channel (``Sender.channel_rate``)."""
AUDIO_VIDEO_RATES: Mapping[str, Rate] = MappingProxyType(
    {p: s.audio_video_rate for p, s in SENDERS.items() if s.audio_video_rate is not None}
)
"""The platforms with a separate audio/video budget per channel (``Sender.audio_video_rate``)."""
