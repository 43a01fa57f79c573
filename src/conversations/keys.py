"""How a conversation is named, from either side (pure).

The normalizer names an inbound conversation ``<platform>:<account_id>:<peer>``
(docs/contracts.md §4) where ``peer`` is the chat or contact the business talks to: the
WhatsApp ``wa_id``, the
Messenger/Instagram PSID/IGSID, the Telegram ``chat.id``, the Twilio ``From`` address
(``+1555…`` or ``whatsapp:+1555…``). A send command names the same party by ``to``. Both are
reduced to a *contact key* per channel, so an outbound message finds the conversation its
recipient's messages opened. WhatsApp phone numbers compare by digits (``+39 333 1234567`` is
the ``wa_id`` ``393331234567``), as the outbox's window key does; other peers (and WhatsApp
business-scoped user ids) compare as they are. The per-platform rules are
``channels.addressing``, shared with the outbox.
"""

from __future__ import annotations

from channels.addressing import addressing, contact_key

__all__ = ["contact_key", "inbound_peer", "outbound_conversation_id"]


def inbound_peer(platform: str, account_id: str | None, conversation_id: str) -> str | None:
    """The ``peer`` part of an inbound ``conversation_id`` (the account id may hold colons,
    e.g. Twilio's ``whatsapp:+1555…``), or ``None`` if the id is not of that form or names no
    peer."""
    prefix = f"{platform}:{account_id or ''}:"
    if not conversation_id.startswith(prefix):
        return None
    peer = conversation_id[len(prefix) :]
    return peer or None


def outbound_conversation_id(platform: str, account_id: str, to: str) -> str:
    """The id a conversation with ``to`` would get from the normalizer, for a recipient that
    never wrote to us (a proactive send); the per-platform rule is ``channels.addressing``."""
    return addressing(platform).conversation_id(platform, account_id, to)
