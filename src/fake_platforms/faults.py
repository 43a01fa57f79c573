"""Injected answers (``Fault``) and the platforms' error envelopes they are rendered in."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fake_platforms.records import Platform

__all__ = ["Fault", "error_body"]


@dataclass(slots=True)
class Fault:
    """An injected answer. Match on platform / path substring / recipient; all optional."""

    status: int = 500
    body: Any = None
    """JSON body; None builds the platform's error envelope from ``code``/``message``."""
    code: int | None = None
    message: str = "injected fault"
    retry_after: float | None = None
    """Sets the Retry-After header (and Telegram's ``parameters.retry_after``)."""
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    hang: bool = False
    """Never answer (until the server closes): the client sees a timeout."""
    succeed: bool = False
    """After ``delay``, answer with the normal success body (a slow response)."""
    echo: Callable[[str], str] | None = None
    """A platform or proxy echoing the URL: ``echo(raw request path)`` is appended to
    ``message`` (or, with ``echo_raw``, is the whole body, as a proxy's HTML error page)."""
    echo_raw: bool = False
    platform: Platform | None = None
    path_contains: str | None = None
    recipient: str | None = None
    times: int | None = 1

    @classmethod
    def rate_limited(cls, retry_after: float = 1.0, **match: Any) -> Fault:
        return cls(status=429, retry_after=retry_after, code=None, message="rate limited", **match)

    @classmethod
    def server_error(cls, status: int = 503, **match: Any) -> Fault:
        return cls(status=status, message="service unavailable", **match)

    @classmethod
    def hang_up(cls, **match: Any) -> Fault:
        return cls(hang=True, **match)

    @classmethod
    def slow(cls, delay: float, **match: Any) -> Fault:
        return cls(delay=delay, succeed=True, **match)

    @classmethod
    def platform_error(
        cls, code: int, message: str = "platform error", status: int = 400, **match: Any
    ) -> Fault:
        return cls(status=status, code=code, message=message, **match)

    @classmethod
    def credentials_refused(cls, platform: Platform, **match: Any) -> Fault:
        """What ``platform`` answers a revoked or wrong token: Meta OAuth 190, Telegram 401
        Unauthorized, Twilio 20003 (all with HTTP 401). Matches any platform unless
        ``match`` says otherwise."""
        code = {"telegram": 401, "twilio": 20003}.get(platform, 190)
        message = {
            "telegram": "Unauthorized",
            "twilio": "Authenticate",
        }.get(platform, "Error validating access token: Session has expired")
        return cls(status=401, code=code, message=message, **match)

    def matches(self, platform: Platform, path: str, recipient: str | None) -> bool:
        if self.times is not None and self.times <= 0:
            return False
        if self.platform is not None and self.platform != platform:
            return False
        if self.path_contains is not None and self.path_contains not in path:
            return False
        return self.recipient is None or self.recipient == recipient


def error_body(platform: Platform, fault: Fault) -> Any:
    if fault.body is not None:
        return fault.body
    code = fault.code if fault.code is not None else fault.status
    if platform in ("whatsapp", "messenger"):
        error: dict[str, Any] = {
            "message": f"(#{code}) {fault.message}",
            "type": "OAuthException",
            "code": code,
            "fbtrace_id": "AbCdEfGhIjK",
        }
        if platform == "whatsapp":
            error["error_data"] = {"messaging_product": "whatsapp", "details": fault.message}
        return {"error": error}
    if platform == "telegram":
        body: dict[str, Any] = {"ok": False, "error_code": code, "description": fault.message}
        if fault.retry_after is not None:
            body["parameters"] = {"retry_after": int(fault.retry_after)}
        return body
    return {
        "code": code,
        "message": fault.message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": fault.status,
    }
