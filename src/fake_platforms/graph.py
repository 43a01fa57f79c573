"""The fake Graph API (WhatsApp Cloud API, Messenger/Instagram Send API) and the Meta CDNs."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web

from fake_platforms.faults import Fault, error_body
from fake_platforms.records import Media, Platform, Upload
from fake_platforms.responder import Responder, json_response, loads

__all__ = ["GraphApi"]


class GraphApi:
    def __init__(
        self,
        responder: Responder,
        media: Media,
        uploads: list[Upload],
        base_url: Callable[[], str],
    ) -> None:
        self._responder = responder
        self._media = media
        self._uploads = uploads
        self._base_url = base_url

    async def send(self, request: web.Request) -> web.Response:
        raw = await request.read()
        body = loads(raw)
        is_whatsapp = isinstance(body, dict) and body.get("messaging_product") == "whatsapp"
        platform: Platform = "whatsapp" if is_whatsapp else "messenger"
        recipient: str | None = None
        n = self._responder.next_id()
        if isinstance(body, dict):
            if is_whatsapp:
                to = body.get("to")
                recipient = to if isinstance(to, str) else None
            else:
                rcpt = body.get("recipient")
                rid = rcpt.get("id") if isinstance(rcpt, dict) else None
                recipient = rid if isinstance(rid, str) else None
        success: Any
        if is_whatsapp and isinstance(body, dict) and body.get("status") == "read":
            success = {"success": True}
        elif is_whatsapp:
            success = {
                "messaging_product": "whatsapp",
                "contacts": [{"input": recipient, "wa_id": (recipient or "").lstrip("+")}],
                "messages": [{"id": f"wamid.HBgL{n:020d}FQIAERgS", "message_status": "accepted"}],
            }
        elif isinstance(body, dict) and "sender_action" in body:
            success = {"recipient_id": recipient}
        else:
            success = {"recipient_id": recipient, "message_id": f"m_{n:024d}"}
        authorized = request.headers.get("Authorization", "").startswith("Bearer ") or (
            "access_token" in request.query
        )
        auth_error = (
            None
            if authorized
            else Fault(status=401, code=190, message="Invalid OAuth access token")
        )
        return await self._responder.answer(
            request,
            platform,
            json_body=body,
            form={},
            recipient=recipient,
            success=success,
            auth_error=auth_error,
        )

    async def media(self, request: web.Request) -> web.Response:
        key = request.match_info["media_id"]
        record_get = self._responder.record_get
        authorized = request.headers.get("Authorization", "").startswith("Bearer ")
        if not authorized:
            record_get(request, "whatsapp", 401)
            fault = Fault(status=401, code=190, message="Invalid OAuth access token")
            return json_response(401, error_body("whatsapp", fault))
        if key not in self._media:
            record_get(request, "whatsapp", 400)
            fault = Fault(status=400, code=100, message="Unsupported get request")
            return json_response(400, error_body("whatsapp", fault))
        data, content_type = self._media[key]
        record_get(request, "whatsapp", 200)
        return json_response(
            200,
            {
                "messaging_product": "whatsapp",
                "url": f"{self._base_url()}/cdn/whatsapp/{key}?ext=1&hash=signed",
                "mime_type": content_type,
                "sha256": hashlib.sha256(data).hexdigest(),
                "file_size": len(data),
                "id": key,
            },
        )

    async def upload(self, request: web.Request) -> web.Response:
        is_whatsapp = request.path.endswith("/media")
        platform: Platform = "whatsapp" if is_whatsapp else "messenger"
        record_get = self._responder.record_get
        if not request.headers.get("Authorization", "").startswith("Bearer "):
            record_get(request, platform, 401)
            fault = Fault(status=401, code=190, message="Invalid OAuth access token")
            return json_response(401, error_body(platform, fault))
        fields: dict[str, str] = {}
        file_part: tuple[str | None, str | None, bytes] | None = None
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, aiohttp.BodyPartReader) or part.name is None:
                continue
            if part.filename is not None:
                content_type = part.headers.get("Content-Type")
                file_part = (part.filename, content_type, bytes(await part.read()))
            else:
                fields[part.name] = await part.text()
        record_get(request, platform, 200 if file_part else 400)
        if file_part is None:
            fault = Fault(status=400, code=100, message="(#100) file is required")
            return json_response(400, error_body(platform, fault))
        media_id = f"{self._responder.next_id() + 7_000_000_000}"
        filename, content_type, data = file_part
        self._uploads.append(Upload(request.path, fields, filename, content_type, data, media_id))
        self._media[media_id] = (data, content_type or "application/octet-stream")
        return json_response(200, {"id": media_id} if is_whatsapp else {"attachment_id": media_id})

    async def cdn(self, request: web.Request) -> web.StreamResponse:
        """``GET /cdn/{platform}/{key}``: the WhatsApp (Bearer), Meta and Twilio media CDNs."""
        platform = request.match_info["platform"]
        key = request.match_info["key"]
        label: Platform = "whatsapp" if platform == "whatsapp" else "messenger"
        if platform == "twilio":
            label = "twilio"
        record_get = self._responder.record_get
        needs_bearer = platform == "whatsapp"
        if needs_bearer and not request.headers.get("Authorization", "").startswith("Bearer "):
            record_get(request, label, 401)
            return web.Response(status=401)
        if key not in self._media:
            record_get(request, label, 404)
            return web.Response(status=404)
        record_get(request, label, 200)
        data, content_type = self._media[key]
        return web.Response(body=data, content_type=content_type.split(";")[0])
