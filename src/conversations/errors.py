"""Errors of the conversations API (rendered by the shared handler); ``ChannelNotFound`` is
the one every API raises for a channel in its path (``channels.errors``)."""

from __future__ import annotations

from channels.errors import ChannelNotFound
from infra.errors import BadRequest, NotFound, Unprocessable

__all__ = [
    "AutoReplyNotFound",
    "ChannelNotFound",
    "ConversationNotFound",
    "InvalidContact",
    "InvalidCursor",
]


class ConversationNotFound(NotFound):
    code = "conversation_not_found"


class AutoReplyNotFound(NotFound):
    code = "auto_reply_not_configured"


class InvalidCursor(BadRequest):
    code = "invalid_cursor"


class InvalidContact(Unprocessable):
    code = "invalid_contact_id"
