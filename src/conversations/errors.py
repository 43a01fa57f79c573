"""Errors of the conversations API (rendered by the shared handler)."""

from __future__ import annotations

from infra.errors import BadRequest, NotFound, Unprocessable


class ChannelNotFound(NotFound):
    code = "channel_not_found"


class ConversationNotFound(NotFound):
    code = "conversation_not_found"


class AutoReplyNotFound(NotFound):
    code = "auto_reply_not_configured"


class InvalidCursor(BadRequest):
    code = "invalid_cursor"


class InvalidContact(Unprocessable):
    code = "invalid_contact_id"
