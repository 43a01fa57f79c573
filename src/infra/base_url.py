"""Where a channel's credentials may be sent: the ``api_base_url`` override policy.

A channel's ``api_base_url`` replaces the platform's API host (tests, a fake platform, an
egress proxy). Every send carries the channel's credentials to that host (a bearer token, a
Twilio auth token, a Telegram bot token in the path), so an override is a way to read
credentials the API never returns: any admin key could point a channel at its own server.
The override is therefore off unless the deployment turns it on (docs/decisions.md,
"api_base_url overrides"):

* ``allow_api_base_url_override`` (``switchboard dev`` and the test settings): any URL;
* ``api_base_url_allowed_hosts``: these hosts only, over HTTPS, and never a loopback,
  private, link-local or otherwise non-public address literal or ``localhost``;
* neither: no override at all.

The channel API refuses a URL the policy refuses (422 ``api_base_url_not_allowed``) and the
senders check again before every send, so a URL stored while the override was allowed is not
used after it was turned off.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from infra.errors import Unprocessable
from infra.settings import Settings

__all__ = [
    "ApiBaseUrlNotAllowed",
    "BaseUrlPolicy",
    "active_policy",
    "install_policy",
]

_LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


class ApiBaseUrlNotAllowed(Unprocessable):
    code = "api_base_url_not_allowed"


def _normal_host(host: str) -> str:
    return host.strip().rstrip(".").lower()


def _is_local(host: str) -> bool:
    if host in _LOCAL_NAMES or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return not address.is_global


@dataclass(frozen=True, slots=True)
class BaseUrlPolicy:
    allow_any: bool = False
    allowed_hosts: frozenset[str] = frozenset()

    @classmethod
    def from_settings(cls, settings: Settings) -> BaseUrlPolicy:
        return cls.of(settings.allow_api_base_url_override, settings.api_base_url_allowed_hosts)

    @classmethod
    def of(cls, allow_any: bool, hosts: Iterable[str] = ()) -> BaseUrlPolicy:
        return cls(allow_any, frozenset(_normal_host(h) for h in hosts if h.strip()))

    def refusal(self, url: str) -> str | None:
        """Why credentials may not be sent to ``url``; None when they may."""
        if self.allow_any:
            return None
        if not self.allowed_hosts:
            return (
                "api_base_url overrides are disabled on this deployment "
                "(SWITCHBOARD_ALLOW_API_BASE_URL_OVERRIDE, SWITCHBOARD_API_BASE_URL_ALLOWED_HOSTS)"
            )
        parts = urlsplit(url)
        host = _normal_host(parts.hostname or "")
        if parts.scheme != "https":
            return "api_base_url must use https"
        if _is_local(host):
            return "api_base_url must not point at a loopback, private or link-local address"
        if host not in self.allowed_hosts:
            return "api_base_url host is not in SWITCHBOARD_API_BASE_URL_ALLOWED_HOSTS"
        return None

    def check(self, url: str) -> None:
        """Raise ``ApiBaseUrlNotAllowed`` (422) when ``url`` is refused."""
        reason = self.refusal(url)
        if reason is not None:
            raise ApiBaseUrlNotAllowed(reason, details=[{"loc": ["api_base_url"]}])


_UNCONFIGURED = BaseUrlPolicy(allow_any=True)
_active: BaseUrlPolicy = _UNCONFIGURED


def install_policy(policy: BaseUrlPolicy) -> BaseUrlPolicy:
    """Make ``policy`` the one senders check; returns the previous one (to restore it).

    Process-wide because it belongs to the deployment, like the settings it is built from:
    ``open_resources`` installs it when a process starts. A process that never installs one
    (a library use of a sender, a sender unit test) sends wherever its ``ChannelConfig`` says.
    """
    global _active
    previous, _active = _active, policy
    return previous


def active_policy() -> BaseUrlPolicy:
    return _active
