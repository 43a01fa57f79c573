"""Inbound media proxy: ``GET /v1/channels/{channel_id}/media/{media_id}`` (scope ``read``).

Credentials are write-only, so a consumer cannot turn a WhatsApp media id or a Telegram
``file_id`` into bytes itself. This endpoint does it with the channel's credentials, resolving
the platform's short-lived URL on every call (nothing is cached) and streaming the file through
in chunks (never buffered whole), with its ``Content-Type`` and, when the platform says,
``Content-Length``. What ``media_id`` is, per platform (the canonical event's
``data.message.media.id`` / ``attachments[].id`` carries exactly this):

==========  ===================================================================================
whatsapp    the media id: Graph ``GET /{media-id}`` (Bearer) gives a URL valid for 5 minutes,
            fetched with the same Bearer token
telegram    the ``file_id``: ``getFile`` gives ``file_path``, fetched from ``/file/bot<token>/…``
twilio      ``<MessageSid>:<MediaSid>``: ``/2010-04-01/Accounts/{AccountSid}/Messages/{sid}/
            Media/{sid}`` with the account's Basic credentials; Twilio redirects to a signed
            URL, followed *without* the credentials
messenger,  ``u.<base64url of the attachment URL>`` (``normalizer.meta.url_media_id``): the
instagram   event's CDN URL, which Meta signs and expires (an expired one answers 410). Only
            Meta CDN hosts (or the channel's ``api_base_url`` host) are fetched
==========  ===================================================================================

Bounds: ``MEDIA_MAX_BYTES`` (a larger declared length is 413 before anything is sent; a body
that grows past it is cut off), ``MEDIA_TIMEOUT`` for the whole exchange, ``MEDIA_CONNECT_TIMEOUT``
and ``MEDIA_READ_TIMEOUT`` per step. Credentials travel only to the platform's API hosts (or the
channel's ``api_base_url``); redirects are followed by hand, at most ``MAX_REDIRECTS``, and never
carry them. Answers: 404 ``media_not_found`` (unknown or malformed id, unknown channel), 410
``media_expired`` (the platform says the file or its URL is gone), 413 ``media_too_large``,
502 ``platform_error`` (the platform failed, refused our credentials or timed out). No answer
ever contains a credential or a platform URL.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from collections.abc import AsyncIterator, Coroutine, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Protocol
from urllib.parse import quote, urljoin, urlsplit

import aiohttp
import orjson
from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from apikeys.dependencies import RequireRead
from channels.service import ChannelWithSecrets, load_with_secrets
from infra.errors import (
    AUTHENTICATED,
    NotFound,
    PayloadTooLarge,
    SwitchboardError,
    error_responses,
)
from infra.logging import get_logger
from infra.resources import AppResources, DbSession
from outbox.platforms._graph import GRAPH_API_VERSION, GRAPH_BASE_URL
from outbox.platforms.telegram import TELEGRAM_BASE_URL
from outbox.platforms.twilio import TWILIO_BASE_URL

__all__ = [
    "MEDIA_MAX_BYTES",
    "RESOLVERS",
    "MediaExpired",
    "MediaHttp",
    "MediaNotFound",
    "MediaTooLarge",
    "PlatformError",
    "Resolver",
    "router",
]

log = get_logger(__name__)

MEDIA_MAX_BYTES: Final = 100 * 1024 * 1024
"""WhatsApp's largest media (100 MB); Telegram bots may download at most 20 MB."""
MEDIA_TIMEOUT: Final = 300.0
MEDIA_CONNECT_TIMEOUT: Final = 10.0
MEDIA_READ_TIMEOUT: Final = 30.0
MAX_REDIRECTS: Final = 3
CHUNK: Final = 64 * 1024

META_CDN_SUFFIXES: Final = (
    ".fbcdn.net",
    ".fbsbx.com",
    ".facebook.com",
    ".cdninstagram.com",
    ".instagram.com",
)
WHATSAPP_MEDIA_SUFFIXES: Final = (".fbsbx.com", ".facebook.com", ".fbcdn.net", ".whatsapp.net")
_WA_ID = re.compile(r"^[0-9]{1,40}$")
_TG_ID = re.compile(r"^[A-Za-z0-9_-]{1,512}$")
_TW_ID = re.compile(r"^((?:SM|MM)[0-9a-fA-F]{32}):(ME[0-9a-fA-F]{32})$")


class MediaNotFound(NotFound):
    code = "media_not_found"


class MediaExpired(SwitchboardError):
    status_code = 410
    code = "media_expired"


class MediaTooLarge(PayloadTooLarge):
    code = "media_too_large"


class PlatformError(SwitchboardError):
    status_code = 502
    code = "platform_error"


@dataclass(frozen=True, slots=True)
class Fetch:
    """One step of a download: where, and the credentials for that host only."""

    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    trusted: tuple[str, ...] = ()
    """Hosts (exact, or ``.suffix``) that may receive ``headers``; others get none."""
    content_type: str | None = None


class MediaHttp:
    """The proxy's pooled HTTP client, open for the app's lifetime (``running``); the media
    routes are built around one (``router``), so they never look it up by name."""

    def __init__(self) -> None:
        self.client: aiohttp.ClientSession | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        timeout = aiohttp.ClientTimeout(
            total=MEDIA_TIMEOUT, sock_connect=MEDIA_CONNECT_TIMEOUT, sock_read=MEDIA_READ_TIMEOUT
        )
        async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session:
            self.client = session
            try:
                yield
            finally:
                self.client = None


def router(http: MediaHttp) -> APIRouter:
    """``GET /v1/channels/{id}/media/{media_id}``, fetching through ``http``."""
    router = APIRouter(prefix="/v1", tags=["media"])

    @router.get(
        "/channels/{channel_id}/media/{media_id}",
        summary="Download an inbound media file through the channel's credentials",
        response_class=StreamingResponse,
        responses={
            200: {"description": "The file, streamed", "content": {"application/octet-stream": {}}},
            **error_responses(
                *AUTHENTICATED,
                404,
                410,
                413,
                502,
                descriptions={
                    404: "Unknown channel, or a media id the platform does not know",
                    410: "The platform no longer has the file (or its URL expired)",
                    413: f"The file is larger than {MEDIA_MAX_BYTES} bytes",
                    502: "The platform failed, refused the credentials or timed out",
                },
            ),
        },
    )
    async def get_media(
        channel_id: str,
        media_id: str,
        session: DbSession,
        resources: AppResources,
        _: RequireRead,
    ) -> StreamingResponse:
        """Resolve ``media_id`` (``data.message.media.id`` of an inbound event) on the channel's
        platform and stream the file. See ``docs/media.md`` for what the id is per platform."""
        try:
            channel_uuid = uuid.UUID(channel_id)
        except ValueError:
            raise MediaNotFound("channel not found") from None
        channel = await load_with_secrets(session, resources.secret_box, channel_uuid)
        await session.close()  # nothing more to read: do not hold a connection while streaming
        if channel is None:
            raise MediaNotFound("channel not found")
        client = http.client
        if client is None:
            raise PlatformError("the media proxy is not running in this process")
        bound = log.bind(channel_id=channel_id, platform=channel.platform)
        try:
            fetch = await _resolve(client, channel, media_id)
            response = await _open(client, fetch)
        except (aiohttp.ClientError, TimeoutError):
            bound.warning("outbox.media_unreachable")
            raise PlatformError("the platform could not be reached") from None
        except SwitchboardError as exc:
            bound.info("outbox.media_refused", code=exc.code)
            raise
        headers = {"Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff"}
        if response.content_length is not None:
            headers["Content-Length"] = str(response.content_length)
        media_type = fetch.content_type or response.headers.get("Content-Type")
        bound.info("outbox.media_streamed", length=response.content_length)
        return StreamingResponse(
            _body(response),
            media_type=media_type or "application/octet-stream",
            headers=headers,
            background=BackgroundTask(_release, response),  # also when the body never started
        )

    return router


async def _release(response: aiohttp.ClientResponse) -> None:
    response.release()


async def _body(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    sent = 0
    try:
        async for chunk in response.content.iter_chunked(CHUNK):
            sent += len(chunk)
            if sent > MEDIA_MAX_BYTES:
                log.warning("outbox.media_truncated", limit=MEDIA_MAX_BYTES)
                return
            yield chunk
    except (aiohttp.ClientError, TimeoutError):
        log.warning("outbox.media_stream_broken", sent=sent)
    finally:
        response.release()


# --------------------------------------------------------------------------- platforms


class Resolver(Protocol):
    """Turns one platform's ``media_id`` into the first ``Fetch`` of its download.

    ``base`` is the channel's ``api_base_url`` (None: the real platform), ``own`` its host, the
    only host besides the platform's that may receive credentials."""

    def __call__(
        self,
        client: aiohttp.ClientSession,
        base: str | None,
        own: tuple[str, ...],
        creds: Mapping[str, str],
        media_id: str,
    ) -> Coroutine[Any, Any, Fetch]: ...


async def _resolve(
    client: aiohttp.ClientSession, channel: ChannelWithSecrets, media_id: str
) -> Fetch:
    resolver = RESOLVERS.get(channel.platform)
    if resolver is None:
        raise MediaNotFound(f"platform {channel.platform!r} has no media download")
    base = channel.api_base_url.rstrip("/") if channel.api_base_url else None
    own = (urlsplit(base).hostname or "",) if base else ()
    return await resolver(client, base, own, channel.credentials, media_id)


async def _json(client: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> tuple[int, Any]:
    async with client.request(method, url, allow_redirects=False, **kw) as reply:
        body = await reply.content.read(64 * 1024)
        try:
            return reply.status, orjson.loads(body)
        except ValueError:
            return reply.status, None


async def _whatsapp(
    client: aiohttp.ClientSession,
    base: str | None,
    own: tuple[str, ...],
    creds: Mapping[str, str],
    media_id: str,
) -> Fetch:
    token = creds.get("access_token", "")
    if not _WA_ID.match(media_id):
        raise MediaNotFound("not a WhatsApp media id")
    if not token:
        raise PlatformError("the channel has no access_token")
    auth = {"Authorization": f"Bearer {token}"}
    status, body = await _json(
        client, "GET", f"{base or GRAPH_BASE_URL}/{GRAPH_API_VERSION}/{media_id}", headers=auth
    )
    if status == 200 and isinstance(body, dict) and isinstance(body.get("url"), str):
        mime = body.get("mime_type")
        return Fetch(
            body["url"],
            auth,
            (*own, "graph.facebook.com", *WHATSAPP_MEDIA_SUFFIXES),
            mime if isinstance(mime, str) else None,
        )
    error = body.get("error") if isinstance(body, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    if status in (400, 404) and code in (100, 131052, 803):
        raise MediaNotFound("WhatsApp does not know this media id (ids from webhooks last 7 days)")
    raise PlatformError(f"WhatsApp answered {status} resolving the media id")


async def _telegram(
    client: aiohttp.ClientSession,
    base: str | None,
    own: tuple[str, ...],
    creds: Mapping[str, str],
    media_id: str,
) -> Fetch:
    token = creds.get("bot_token", "")
    if not _TG_ID.match(media_id):
        raise MediaNotFound("not a Telegram file_id")
    if not token:
        raise PlatformError("the channel has no bot_token")
    root = base or TELEGRAM_BASE_URL
    url = f"{root}/bot{token}/getFile"
    status, body = await _json(client, "POST", url, json={"file_id": media_id})
    result = body.get("result") if isinstance(body, dict) else None
    path = result.get("file_path") if isinstance(result, dict) else None
    if status == 200 and isinstance(path, str) and path and ".." not in path.split("/"):
        return Fetch(f"{root}/file/bot{token}/{quote(path)}", {}, ())
    description = body.get("description") if isinstance(body, dict) else None
    text = description.lower() if isinstance(description, str) else ""
    if "too big" in text:
        raise MediaTooLarge("Telegram lets bots download files of at most 20 MB")
    if status == 400:
        raise MediaNotFound("Telegram does not know this file_id")
    raise PlatformError(f"Telegram answered {status} to getFile")


async def _twilio(
    client: aiohttp.ClientSession,
    base: str | None,
    own: tuple[str, ...],
    creds: Mapping[str, str],
    media_id: str,
) -> Fetch:
    match = _TW_ID.match(media_id)
    if match is None:
        raise MediaNotFound("not a Twilio media id (<MessageSid>:<MediaSid>)")
    sid, token = creds.get("account_sid", ""), creds.get("auth_token", "")
    if not sid or not token:
        raise PlatformError("the channel has no account_sid/auth_token")
    basic = base64.b64encode(f"{sid}:{token}".encode()).decode()
    account = f"{base or TWILIO_BASE_URL}/2010-04-01/Accounts/{quote(sid)}"
    url = f"{account}/Messages/{match[1]}/Media/{match[2]}"
    return Fetch(url, {"Authorization": f"Basic {basic}"}, (*own, "api.twilio.com"))


async def _meta(
    client: aiohttp.ClientSession,
    base: str | None,
    own: tuple[str, ...],
    creds: Mapping[str, str],
    media_id: str,
) -> Fetch:
    if not media_id.startswith("u.") or len(media_id) > 8192:
        raise MediaNotFound("not a Messenger/Instagram media id (u.<base64url of the URL>)")
    encoded = media_id[2:]
    try:
        url = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    except (binascii.Error, ValueError):
        raise MediaNotFound("not a Messenger/Instagram media id") from None
    parts = urlsplit(url)
    host = parts.hostname or ""
    allowed = _allowed(host, META_CDN_SUFFIXES) and parts.scheme == "https"
    if not (allowed or (host in own and parts.scheme in ("http", "https"))):
        raise MediaNotFound("only Meta CDN attachment URLs are fetched")
    return Fetch(url, {}, ())


RESOLVERS: Mapping[str, Resolver] = MappingProxyType(
    {
        "whatsapp": _whatsapp,
        "messenger": _meta,
        "instagram": _meta,
        "telegram": _telegram,
        "twilio": _twilio,
    }
)
"""How each platform's ``media_id`` is resolved (the table in the module docstring), keyed by
``normalizer.platforms.Platform`` and covered exactly by it (``test_platform_registries``)."""


def _allowed(host: str, trusted: tuple[str, ...]) -> bool:
    return any(host == t or (t.startswith(".") and host.endswith(t)) for t in trusted)


async def _open(client: aiohttp.ClientSession, fetch: Fetch) -> aiohttp.ClientResponse:
    """GET with redirects followed by hand: credentials only to trusted hosts, never onwards."""
    url = fetch.url
    for _ in range(MAX_REDIRECTS + 1):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise PlatformError("the platform gave an unusable media URL")
        host = parts.hostname or ""
        headers = dict(fetch.headers) if _allowed(host, fetch.trusted) else {}
        response = await client.get(url, headers=headers, allow_redirects=False)
        if response.status in (301, 302, 303, 307, 308) and "Location" in response.headers:
            response.release()
            url = urljoin(url, response.headers["Location"])
            fetch = Fetch(url, {}, (), fetch.content_type)
            continue
        if response.status == 200:
            length = response.content_length
            if length is not None and length > MEDIA_MAX_BYTES:
                response.release()
                raise MediaTooLarge(f"the file is {length} bytes, over {MEDIA_MAX_BYTES}")
            return response
        response.release()
        if response.status in (404, 410):
            raise MediaExpired("the platform no longer has this file")
        if response.status == 403 and not headers:
            raise MediaExpired("the signed media URL expired")
        raise PlatformError(f"the platform answered {response.status} to the download")
    raise PlatformError("too many redirects")
