"""Gateway errors: the shared ``SwitchboardError`` statuses plus a metrics ``reason``.

Messages are deliberately terse: a webhook caller learns the status, never which check failed
or anything about the channel's secrets.
"""

from __future__ import annotations

from typing import ClassVar

import orjson

from infra import errors


class WebhookRejected(errors.SwitchboardError):
    reason: ClassVar[str] = "error"
    headers: ClassVar[dict[str, str]] = {}
    """Response headers besides the content type (e.g. ``Retry-After``)."""

    def body(self) -> bytes:
        """The error as the app's handler renders a ``SwitchboardError``."""
        error: dict[str, object] = {"code": self.code, "message": self.message}
        if self.details is not None:
            error["details"] = self.details
        return orjson.dumps({"error": error})


class BadSignature(WebhookRejected, errors.Unauthorized):
    reason = "unauthorized"

    def __init__(self) -> None:
        super().__init__("unauthorized")


class Malformed(WebhookRejected, errors.BadRequest):
    reason = "malformed"


class ChannelNotFound(WebhookRejected, errors.NotFound):
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


class Overloaded(WebhookRejected, errors.ServiceUnavailable):
    reason = "overloaded"
    headers: ClassVar[dict[str, str]] = {"retry-after": "1"}

    def __init__(self) -> None:
        super().__init__("too many webhook bodies in flight; retry later")


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
