"""Outbound media upload: ``POST /v1/channels/{channel_id}/media`` (multipart, scope ``send``).

Uploads one file (form field ``file``; optional ``kind``: image, video, audio, document,
sticker) to the channel's platform and answers 201 with the platform's media id, usable as
``content.media.id`` in a send command on the same channel:

- WhatsApp: ``POST /{phone_number_id}/media`` (``messaging_product=whatsapp``, ``type`` = the
  file's MIME type, ``file``) → ``{"id"}``; ids of uploads live 30 days.
  https://developers.facebook.com/documentation/business-messaging/whatsapp/business-phone-numbers/media
- Messenger / Instagram: Attachment Upload API, ``POST /me/message_attachments`` with
  ``message = {"attachment": {"type", "payload": {"is_reusable": true}}}`` and ``filedata``
  (Instagram adds ``platform=instagram``; ``/me`` is the Page the token belongs to, which an
  Instagram channel's account id is not) → ``{"attachment_id"}``.
  https://developers.facebook.com/documentation/business-messaging/instagram-messaging/features/attachment-upload
- Telegram and Twilio have no upload API (Telegram uploads with the send, Twilio fetches
  ``MediaUrl``): 422 ``upload_not_supported``, which says to send by ``url``.

The request must declare its ``Content-Length`` (411 otherwise) and stay within
``MEDIA_MAX_BYTES`` (413): the parser spools the file to a temporary file, never to memory, and
the upload streams it from there. The platform refusing the file (4xx) is 422 ``media_rejected``
with its scrubbed message; failing or unreachable is 502 ``platform_error``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from types import MappingProxyType
from typing import Any, Final, Protocol

import aiohttp
import orjson
from fastapi import APIRouter, Request, status
from pydantic import BaseModel
from starlette.datastructures import UploadFile

from apikeys.dependencies import RequireSend
from channels.service import ChannelWithSecrets, load_with_secrets
from infra.errors import AUTHENTICATED, SwitchboardError, Unprocessable, error_responses
from infra.logging import get_logger
from infra.resources import AppResources, DbSession
from outbox.media import (
    MEDIA_MAX_BYTES,
    MediaHttp,
    MediaNotFound,
    MediaTooLarge,
    PlatformError,
)
from outbox.platforms._graph import GRAPH_API_VERSION, GRAPH_BASE_URL
from outbox.platforms.scrub import scrub

__all__ = [
    "UPLOADERS",
    "MediaRejected",
    "UploadNotSupported",
    "UploadedMedia",
    "Uploader",
    "router",
]

log = get_logger(__name__)

KINDS: Final = frozenset({"image", "video", "audio", "document", "sticker"})
_META_TYPES: Final = {"image": "image", "video": "video", "audio": "audio", "document": "file"}


class UploadNotSupported(Unprocessable):
    code = "upload_not_supported"


class MediaRejected(Unprocessable):
    code = "media_rejected"


class LengthRequired(SwitchboardError):
    status_code = 411
    code = "length_required"


class UploadedMedia(BaseModel):
    id: str
    """Use as ``content.media.id`` in a send on this channel."""
    platform: str
    kind: str
    mime_type: str
    size: int


def router(http: MediaHttp) -> APIRouter:
    """``POST /v1/channels/{id}/media``, uploading through ``http``."""
    router = APIRouter(prefix="/v1", tags=["media"])

    _BODY = {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "kind": {"type": "string", "enum": sorted(KINDS)},
                    },
                }
            }
        },
    }

    @router.post(
        "/channels/{channel_id}/media",
        status_code=status.HTTP_201_CREATED,
        response_model=UploadedMedia,
        summary="Upload a media file to the platform; answers the id to send it with",
        openapi_extra={"requestBody": _BODY},
        responses=error_responses(
            *AUTHENTICATED,
            400,
            404,
            411,
            413,
            502,
            descriptions={
                400: "Not a well-formed multipart body of at most 4 fields and 1 file",
                404: "Unknown channel",
                413: f"Larger than {MEDIA_MAX_BYTES} bytes",
                422: "No upload API on this platform (send by url), or refused file",
            },
        ),
    )
    async def upload_media(
        channel_id: str,
        request: Request,
        session: DbSession,
        resources: AppResources,
        _: RequireSend,
    ) -> UploadedMedia:
        try:
            channel_uuid = uuid.UUID(channel_id)
        except ValueError:
            raise MediaNotFound("channel not found") from None
        channel = await load_with_secrets(session, resources.secret_box, channel_uuid)
        await session.close()
        if channel is None:
            raise MediaNotFound("channel not found")
        uploader = UPLOADERS.get(channel.platform)
        if uploader is None:
            raise UploadNotSupported(
                f"{channel.platform} has no media upload API: "
                "send the media by url (content.media.url)"
            )
        declared = request.headers.get("content-length")
        if declared is None or not declared.isdigit():
            raise LengthRequired("declare the upload's Content-Length")
        if int(declared) > MEDIA_MAX_BYTES + 64 * 1024:
            raise MediaTooLarge(f"uploads are limited to {MEDIA_MAX_BYTES} bytes")
        form = await request.form(max_files=1, max_fields=4)
        try:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise Unprocessable("multipart form field 'file' (a file) is required")
            kind_field = form.get("kind")
            mime = (upload.content_type or "application/octet-stream").split(";")[0].strip()
            kind = kind_field if isinstance(kind_field, str) and kind_field else _kind(mime)
            if kind not in KINDS:
                raise Unprocessable(f"kind must be one of {', '.join(sorted(KINDS))}")
            size = upload.size or 0
            if size > MEDIA_MAX_BYTES:
                raise MediaTooLarge(f"uploads are limited to {MEDIA_MAX_BYTES} bytes")
            client = http.client
            if client is None:
                raise PlatformError("the media proxy is not running in this process")
            await upload.seek(0)
            try:
                media_id = await _upload(client, channel, uploader, upload, kind, mime)
            except (aiohttp.ClientError, TimeoutError):
                raise PlatformError("the platform could not be reached") from None
        finally:
            await form.close()
        log.info(
            "outbox.media_uploaded", channel_id=channel_id, platform=channel.platform, size=size
        )
        return UploadedMedia(
            id=media_id, platform=channel.platform, kind=kind, mime_type=mime, size=size
        )

    return router


def _kind(mime: str) -> str:
    major = mime.split("/", 1)[0]
    return major if major in ("image", "video", "audio") else "document"


@dataclass(frozen=True, slots=True)
class UploadRequest:
    """One platform's upload call: where, the multipart form, and the answer's id field."""

    url: str
    data: aiohttp.FormData
    answer_key: str


class Uploader(Protocol):
    """Builds one platform's upload request (``base``: the Graph API root to use)."""

    def __call__(
        self, channel: ChannelWithSecrets, upload: UploadFile, kind: str, mime: str, base: str
    ) -> UploadRequest: ...


def _whatsapp(
    channel: ChannelWithSecrets, upload: UploadFile, kind: str, mime: str, base: str
) -> UploadRequest:
    data = aiohttp.FormData()
    data.add_field("messaging_product", "whatsapp")
    data.add_field("type", mime)
    data.add_field("file", upload.file, filename=upload.filename or "upload", content_type=mime)
    return UploadRequest(f"{base}/{GRAPH_API_VERSION}/{channel.account_id}/media", data, "id")


def _attachment(
    channel: ChannelWithSecrets,
    upload: UploadFile,
    kind: str,
    mime: str,
    base: str,
    *,
    extra: Mapping[str, str],
) -> UploadRequest:
    attachment_type = _META_TYPES.get(kind)
    if attachment_type is None:
        raise Unprocessable(f"{channel.platform} cannot send {kind} attachments")
    data = aiohttp.FormData()
    for name, value in extra.items():
        data.add_field(name, value)
    message = {"attachment": {"type": attachment_type, "payload": {"is_reusable": True}}}
    data.add_field("message", orjson.dumps(message).decode())
    data.add_field("filedata", upload.file, filename=upload.filename or "upload", content_type=mime)
    url = f"{base}/{GRAPH_API_VERSION}/me/message_attachments"
    return UploadRequest(url, data, "attachment_id")


UPLOADERS: Mapping[str, Uploader | None] = MappingProxyType(
    {
        "whatsapp": _whatsapp,
        "messenger": partial(_attachment, extra={}),
        "instagram": partial(_attachment, extra={"platform": "instagram"}),
        "telegram": None,
        "twilio": None,
    }
)
"""Each platform's upload, keyed by ``normalizer.platforms.Platform`` and covered exactly by it
(``test_platform_registries``); None: the platform has no upload API (422
``upload_not_supported``)."""


async def _upload(
    client: aiohttp.ClientSession,
    channel: ChannelWithSecrets,
    uploader: Uploader,
    upload: UploadFile,
    kind: str,
    mime: str,
) -> str:
    token = channel.credentials.get("access_token", "")
    if not token:
        raise PlatformError("the channel has no access_token")
    base = (channel.api_base_url or GRAPH_BASE_URL).rstrip("/")
    request = uploader(channel, upload, kind, mime, base)
    url, data, answer_key = request.url, request.data, request.answer_key
    headers = {"Authorization": f"Bearer {token}"}
    async with client.post(url, data=data, headers=headers, allow_redirects=False) as reply:
        body = await reply.content.read(64 * 1024)
        status_code = reply.status
    payload: Any
    try:
        payload = orjson.loads(body)
    except ValueError:
        payload = None
    if 200 <= status_code < 300 and isinstance(payload, dict):
        media_id = payload.get(answer_key)
        if isinstance(media_id, str | int) and str(media_id):
            return str(media_id)
    if 400 <= status_code < 500 and status_code not in (401, 403, 429):
        error = payload.get("error") if isinstance(payload, dict) else None
        message_text = error.get("message") if isinstance(error, dict) else None
        reason = scrub(message_text, (token,)) if isinstance(message_text, str) else None
        raise MediaRejected(f"the platform refused the file: {reason or status_code}")
    raise PlatformError(f"the platform answered {status_code} to the upload")
