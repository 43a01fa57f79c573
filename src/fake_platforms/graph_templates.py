"""The fake Graph ``GET /{version}/{waba_id}/message_templates``: WhatsApp template listing.

``FakePlatformServer.templates`` holds the configured templates per WABA id
(``set(waba_id, [...])``, each a Graph template object: name, language, status, category,
components) and answers them in pages of ``page_size`` (or the request's ``limit``, if smaller)
with ``paging.cursors.after`` and, while more remain, ``paging.next``, as Graph does. Without a
Bearer token the answer is Graph's 401 (code 190); an unknown WABA id is error 100.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Callable
from typing import Any

from aiohttp import web

__all__ = ["GraphTemplates"]


def _cursor(index: int) -> str:
    return base64.urlsafe_b64encode(f"tpl:{index}".encode()).decode()


def _index(cursor: str) -> int:
    try:
        return int(base64.urlsafe_b64decode(cursor.encode()).decode().removeprefix("tpl:"))
    except ValueError:
        return -1


def _error(status: int, code: int, message: str) -> web.Response:
    body = {"error": {"message": message, "type": "OAuthException", "code": code}}
    return web.json_response(body, status=status)


class GraphTemplates:
    def __init__(self, record: Callable[[web.Request, int], None]) -> None:
        self._record = record
        self.by_waba: dict[str, list[dict[str, Any]]] = {}
        self.page_size = 2

    def set(self, waba_id: str, templates: list[dict[str, Any]]) -> None:
        self.by_waba[waba_id] = copy.deepcopy(templates)

    def set_status(self, waba_id: str, name: str, language: str, status: str) -> None:
        for template in self.by_waba[waba_id]:
            if template["name"] == name and template["language"] == language:
                template["status"] = status

    async def handle(self, request: web.Request) -> web.Response:
        if not request.headers.get("Authorization", "").startswith("Bearer "):
            self._record(request, 401)
            return _error(401, 190, "Invalid OAuth access token")
        templates = self.by_waba.get(request.match_info["waba"])
        if templates is None:
            self._record(request, 400)
            return _error(400, 100, "Unsupported get request")
        start = _index(request.query["after"]) + 1 if "after" in request.query else 0
        if start < 0:
            self._record(request, 400)
            return _error(400, 100, "Invalid parameter: after")
        try:
            limit = min(self.page_size, int(request.query.get("limit", self.page_size)))
        except ValueError:
            limit = self.page_size
        page = templates[start : start + max(limit, 1)]
        end = start + len(page)
        body: dict[str, Any] = {"data": page}
        if page:
            body["paging"] = {"cursors": {"before": _cursor(start), "after": _cursor(end - 1)}}
            if end < len(templates):
                body["paging"]["next"] = (
                    f"{request.url.with_query({**request.query, 'after': _cursor(end - 1)})}"
                )
        self._record(request, 200)
        return web.json_response(body)
