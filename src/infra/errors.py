"""The error base shared by every service: an HTTP status, a stable code, a safe message.

Expected conditions raise a subclass and are rendered by one handler; they are never 500s.
Messages must be safe to show to the caller: never a secret, never a stack trace.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, Field, JsonValue


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


# ---- the documented error shape ----------------------------------------------------------------


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable code (e.g. `validation_error`)")
    message: str = Field(description="Human-readable; never echoes the input or a secret")
    details: JsonValue = Field(
        default=None,
        description="Optional structured context (e.g. the location of each invalid field)",
    )


class ErrorResponse(BaseModel):
    """Every error answer of the API: ``{"error": {"code", "message", "details"?}}``."""

    error: ErrorDetail


_DESCRIPTIONS: dict[int, str] = {
    400: "Malformed request (e.g. a body that is not JSON)",
    401: "Missing, invalid or revoked API key",
    403: "The API key lacks the scope this route needs",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict with the current state",
    410: "Gone: the resource existed and no longer does",
    411: "A Content-Length header is required",
    413: "Body over the size limit",
    415: "Unsupported content type",
    422: "Invalid input: `details` lists each problem's location and message (input never echoed)",
    502: "The platform failed, refused the request or could not be reached",
    503: "A dependency (PostgreSQL, the broker) is unavailable; retry",
}

AUTHENTICATED = (401, 403, 422)
"""What every ``/v1`` route can answer before it runs: no key, a key without the scope, and a
header (``Authorization``) or parameter that fails validation."""


def error_responses(
    *statuses: int, descriptions: Mapping[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route: each status with the error schema and a description
    (``descriptions`` overrides the generic one). One place, so every route documents its error
    answers the same way."""
    custom = descriptions or {}
    return {
        status: {"model": ErrorResponse, "description": custom.get(status, _DESCRIPTIONS[status])}
        for status in sorted(set(statuses) | set(custom))
    }
