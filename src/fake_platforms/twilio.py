"""The fake Twilio Messages API, its typing indicator, media and signed status callbacks."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from collections.abc import Callable, Mapping
from urllib.parse import parse_qs

import aiohttp
from aiohttp import web

from fake_platforms.faults import Fault, error_body
from fake_platforms.records import Media, PostedCallback
from fake_platforms.responder import Responder, json_response

__all__ = ["TwilioApi", "twilio_signature"]


def twilio_signature(token: str, url: str, params: Mapping[str, str]) -> str:
    """``X-Twilio-Signature``: base64(HMAC-SHA1(auth token, URL + sorted name/value pairs))."""
    data = url + "".join(name + params[name] for name in sorted(params))
    return base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()).decode()


class TwilioApi:
    def __init__(self, responder: Responder, media: Media, base_url: Callable[[], str]) -> None:
        self._responder = responder
        self._media = media
        self._base_url = base_url
        self.callback_states: tuple[str, ...] = ("sent", "delivered")
        self.callbacks: list[PostedCallback] = []
        self._background: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def messages(self, request: web.Request) -> web.Response:
        raw = await request.read()
        form = parse_qs(raw.decode("utf-8", errors="replace"), keep_blank_values=True)
        to = form.get("To", [None])[0]
        n = self._responder.next_id()
        sid = request.match_info["sid"]
        success = {
            "sid": f"SM{n:032x}",
            "account_sid": sid,
            "to": to,
            "from": form.get("From", [None])[0],
            "messaging_service_sid": form.get("MessagingServiceSid", [None])[0],
            "body": form.get("Body", [""])[0],
            "status": "queued",
            "num_segments": "1",
            "num_media": str(len(form.get("MediaUrl", []))),
            "direction": "outbound-api",
            "api_version": "2010-04-01",
            "error_code": None,
            "error_message": None,
            "uri": f"/2010-04-01/Accounts/{sid}/Messages/SM{n:032x}.json",
        }
        authorized = request.headers.get("Authorization", "").startswith("Basic ")
        auth_error = (
            None
            if authorized
            else Fault(status=401, code=20003, message="Authentication Error - No credentials")
        )
        response = await self._responder.answer(
            request,
            "twilio",
            json_body=None,
            form=form,
            recipient=to,
            success=success,
            auth_error=auth_error,
        )
        callback = form.get("StatusCallback", [None])[0]
        if response.status == 200 and callback:
            params: dict[str, str] = {
                "AccountSid": sid,
                "MessageSid": str(success["sid"]),
                "SmsSid": str(success["sid"]),
                "From": str(success["from"] or ""),
                "To": to or "",
                "ApiVersion": "2010-04-01",
            }
            token = _basic_password(request.headers.get("Authorization", ""))
            task = asyncio.create_task(self._post_status_callbacks(callback, params, token))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        return response

    async def media(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        record_get = self._responder.record_get
        if not request.headers.get("Authorization", "").startswith("Basic "):
            record_get(request, "twilio", 401)
            fault = Fault(status=401, code=20003, message="Authentication Error")
            return json_response(401, error_body("twilio", fault))
        if key not in self._media:
            record_get(request, "twilio", 404)
            fault = Fault(status=404, code=20404, message="The requested resource was not found")
            return json_response(404, error_body("twilio", fault))
        record_get(request, "twilio", 307)
        raise web.HTTPTemporaryRedirect(f"{self._base_url()}/cdn/twilio/{key}?Signature=abc")

    async def typing(self, request: web.Request) -> web.Response:
        raw = await request.read()
        form = parse_qs(raw.decode("utf-8", errors="replace"), keep_blank_values=True)
        authorized = request.headers.get("Authorization", "").startswith("Basic ")
        auth_error = (
            None
            if authorized
            else Fault(status=401, code=20003, message="Authentication Error - No credentials")
        )
        return await self._responder.answer(
            request,
            "twilio",
            json_body=None,
            form=form,
            recipient=None,
            success={"success": True},
            auth_error=auth_error,
        )

    async def _post_status_callbacks(self, url: str, params: Mapping[str, str], token: str) -> None:
        await asyncio.sleep(0.05)  # after the send's answer, as Twilio does
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        for state in self.callback_states:
            form = {**params, "MessageStatus": state, "SmsStatus": state}
            headers = {"X-Twilio-Signature": twilio_signature(token, url, form)}
            try:
                async with self._session.post(url, data=form, headers=headers) as reply:
                    status = reply.status
            except (aiohttp.ClientError, OSError, TimeoutError):
                status = 0
            self.callbacks.append(PostedCallback(url, form, status))


def _basic_password(header: str) -> str:
    try:
        decoded = base64.b64decode(header.removeprefix("Basic ").strip()).decode()
    except (ValueError, UnicodeDecodeError):
        return ""
    return decoded.partition(":")[2]
