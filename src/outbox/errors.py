"""The outbox's expected conditions, each with its HTTP status and stable ``code``.

They are rendered by the application's one ``SwitchboardError`` handler as
``{"error": {"code", "message", "details"}}``. ``Rejected`` is the family of reasons a send
command is refused before it is stored: the API answers 422 with it, the Kafka path stores the
command as ``failed`` with the same code and message (see ``outbox.service``).
"""

from __future__ import annotations

from typing import Any

from infra.errors import Conflict, NotFound, Unprocessable

__all__ = [
    "ChannelDisabled",
    "ContentNotSupported",
    "FrequencyCapped",
    "IdempotencyConflict",
    "InvalidCommand",
    "InvalidState",
    "MessageNotFound",
    "OptedOut",
    "Rejected",
    "TemplateInvalid",
    "UnknownChannelReference",
    "WindowClosed",
]


class Rejected(Unprocessable):
    """A well-formed command that cannot be sent as asked; nothing is sent half-right."""

    code = "rejected"


class InvalidCommand(Rejected):
    code = "invalid_command"


class UnknownChannelReference(Rejected):
    """The body names a channel that does not exist (a body field, hence 422, not 404)."""

    code = "unknown_channel"


class ChannelDisabled(Rejected):
    code = "channel_disabled"


class ContentNotSupported(Rejected):
    """The channel's platform cannot express the content (``Sender.validate``)."""

    code = "unsupported_content"


class WindowClosed(Rejected):
    """WhatsApp: free-form message outside the 24-hour customer service window."""

    code = "window_closed"


class TemplateInvalid(Rejected):
    """WhatsApp: the channel's synced template registry refuses the template send."""

    code = "template_invalid"


class OptedOut(Rejected):
    """The contact opted out on this channel (``conv_opt_outs``) and the message is proactive
    (or the platform is SMS, where STOP stops everything): see ``outbox.policy``."""

    code = "opted_out"


class FrequencyCapped(Rejected):
    """One more proactive message to this contact would exceed the channel's frequency cap;
    ``details.allowed_at`` says when the next one would be accepted."""

    code = "frequency_capped"


class IdempotencyConflict(Conflict):
    code = "idempotency_conflict"


class MessageNotFound(NotFound):
    code = "message_not_found"

    def __init__(self, message: str = "message not found", *, details: Any = None) -> None:
        super().__init__(message, details=details)


class InvalidState(Conflict):
    """The operation does not apply to the message's current state (``details.state``)."""

    code = "invalid_state"
