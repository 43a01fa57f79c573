"""Gateway errors: the shared ``SwitchboardError`` statuses plus a metrics ``reason``.

Messages are deliberately terse: a webhook caller learns the status, never which check failed
or anything about the channel's secrets.
"""

from __future__ import annotations

from typing import ClassVar

from switchboard import errors


class WebhookRejected(errors.SwitchboardError):
    reason: ClassVar[str] = "error"


class BadSignature(WebhookRejected, errors.Unauthorized):
    reason = "unauthorized"

    def __init__(self) -> None:
        super().__init__("unauthorized")


class Malformed(WebhookRejected, errors.BadRequest):
    reason = "malformed"


class UnknownChannel(WebhookRejected, errors.NotFound):
    reason = "not_found"

    def __init__(self) -> None:
        super().__init__("not found")


class TooLarge(WebhookRejected, errors.PayloadTooLarge):
    reason = "too_large"


class WrongContentType(WebhookRejected, errors.UnsupportedMediaType):
    reason = "unsupported_media_type"


class NotDurable(WebhookRejected, errors.ServiceUnavailable):
    reason = "unavailable"

    def __init__(self) -> None:
        super().__init__("the webhook could not be stored; retry later")


class HandshakeRefused(WebhookRejected, errors.Forbidden):
    reason = "handshake_refused"

    def __init__(self) -> None:
        super().__init__("forbidden")


class NoHandshake(WebhookRejected):
    status_code = 405
    code = "method_not_allowed"
    reason = "no_handshake"

    def __init__(self) -> None:
        super().__init__("this platform has no subscription handshake")
