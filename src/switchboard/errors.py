"""The error base shared by every service: an HTTP status, a stable code, a safe message.

Expected conditions raise a subclass and are rendered by one handler; they are never 500s.
Messages must be safe to show to the caller: never a secret, never a stack trace.
"""

from __future__ import annotations

from typing import Any, ClassVar


class SwitchboardError(Exception):
    status_code: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class BadRequest(SwitchboardError):
    status_code = 400
    code = "bad_request"


class Unauthorized(SwitchboardError):
    status_code = 401
    code = "unauthorized"


class Forbidden(SwitchboardError):
    status_code = 403
    code = "forbidden"


class NotFound(SwitchboardError):
    status_code = 404
    code = "not_found"


class Conflict(SwitchboardError):
    status_code = 409
    code = "conflict"


class PayloadTooLarge(SwitchboardError):
    status_code = 413
    code = "payload_too_large"


class UnsupportedMediaType(SwitchboardError):
    status_code = 415
    code = "unsupported_media_type"


class Unprocessable(SwitchboardError):
    status_code = 422
    code = "unprocessable"


class ServiceUnavailable(SwitchboardError):
    status_code = 503
    code = "service_unavailable"
