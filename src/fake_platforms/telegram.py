"""The fake Telegram Bot API: ``POST /bot{token}/{method}`` and file downloads."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from fake_platforms.faults import Fault
from fake_platforms.records import Media
from fake_platforms.responder import Responder, loads

__all__ = ["TelegramApi"]


class TelegramApi:
    def __init__(self, responder: Responder, media: Media) -> None:
        self._responder = responder
        self._media = media

    async def method(self, request: web.Request) -> web.Response:
        body = loads(await request.read())
        chat = body.get("chat_id") if isinstance(body, dict) else None
        recipient = str(chat) if chat is not None else None
        n = self._responder.next_id()
        method = request.match_info["method"]
        success: Any
        if method == "getFile":
            file_id = body.get("file_id") if isinstance(body, dict) else None
            if file_id not in self._media:
                fault = Fault(status=400, code=400, message="Bad Request: invalid file_id")
                return await self._responder.answer(
                    request,
                    "telegram",
                    json_body=body,
                    form={},
                    recipient=None,
                    success=None,
                    auth_error=fault,
                )
            data = self._media[file_id][0]
            success = {
                "ok": True,
                "result": {
                    "file_id": file_id,
                    "file_unique_id": f"u{n}",
                    "file_size": len(data),
                    "file_path": f"media/{file_id}",
                },
            }
        elif method in ("setMessageReaction", "sendChatAction", "answerCallbackQuery"):
            success = {"ok": True, "result": True}
        else:
            result: dict[str, Any] = {
                "message_id": n,
                "date": int(time.time()),
                "chat": {"id": chat, "type": "private"},
                "from": {"id": 7000000001, "is_bot": True, "first_name": "Fake"},
            }
            if isinstance(body, dict) and isinstance(body.get("text"), str):
                result["text"] = body["text"]
            success = {"ok": True, "result": result}
        return await self._responder.answer(
            request,
            "telegram",
            json_body=body,
            form={},
            recipient=recipient,
            success=success,
            auth_error=None,
        )

    async def file(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        if key not in self._media:
            self._responder.record_get(request, "telegram", 404)
            return web.Response(status=404)
        self._responder.record_get(request, "telegram", 200)
        data, _ = self._media[key]
        return web.Response(body=data, content_type="application/octet-stream")
