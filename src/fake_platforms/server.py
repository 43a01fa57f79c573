"""One aiohttp server on 127.0.0.1 that answers the four send APIs like the real platforms.

Routes (the real paths under any base URL):
- ``POST /{graph_version}/{node_id}/messages``: WhatsApp Cloud API when the JSON body has
  ``"messaging_product": "whatsapp"``, otherwise the Messenger/Instagram Send API.
- ``POST /bot{token}/{method}``: Telegram Bot API.
- ``POST /2010-04-01/Accounts/{sid}/Messages.json``: Twilio, form-encoded.
- ``POST /v2/Indicators/Typing.json``: Twilio's WhatsApp typing indicator, form-encoded.
Signals answer as the platforms do: WhatsApp ``status: read`` (read mark, typing indicator)
``{"success": true}``, Messenger ``sender_action`` ``{"recipient_id"}``, Telegram
``sendChatAction`` ``{"ok": true, "result": true}``.

Every request is recorded (unless ``record=False``, for benchmarks) and may be answered by an
injected ``Fault`` instead of the success body. Faults match in insertion order; each serves
``times`` requests (None = until ``reset``).

Media downloads (for the media proxy): ``add_media(key, data, content_type)`` makes a file
known under ``key``: a WhatsApp media id (``GET /{version}/{media_id}`` answers its URL, then
``GET /cdn/whatsapp/{key}`` the bytes, both with the Bearer token), a Telegram ``file_id``
(``getFile``, then ``GET /file/bot{token}/media/{key}``), a Twilio media sid
(``GET …/Messages/{sid}/Media/{key}`` with Basic auth redirects to ``/cdn/twilio/{key}``), or a
Meta CDN name (``GET /cdn/meta/{key}``). Unknown keys answer as the platforms do (Graph error
100, Telegram 400 "invalid file_id", Twilio 20404, 404 from a CDN).

Uploads: ``POST /{version}/{node}/media`` (WhatsApp) answers ``{"id"}`` and
``POST /{version}/me/message_attachments`` (Messenger/Instagram) ``{"attachment_id"}``; each is
recorded in ``uploads`` and its bytes become downloadable media under the answered id.

Templates: ``GET /{version}/{waba_id}/message_templates`` lists ``templates`` (paged, see
``fake_platforms.graph_templates``); each request is recorded.

Twilio status callbacks: like Twilio, a successful send that carried ``StatusCallback`` is
followed by one form POST per state in ``twilio_callback_states`` (default ``sent`` then
``delivered``) to that URL, signed with ``X-Twilio-Signature`` by the auth token of the send's
Basic credentials. Each is recorded in ``callbacks`` with the status the receiver answered.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import parse_qs

import aiohttp
from aiohttp import web

from fake_platforms.graph_templates import GraphTemplates

__all__ = [
    "FakePlatformServer",
    "Fault",
    "Platform",
    "PostedCallback",
    "RecordedRequest",
    "Upload",
]

Platform = Literal["whatsapp", "messenger", "telegram", "twilio"]


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    platform: Platform
    method: str
    path: str
    headers: Mapping[str, str]
    json: Any
    """Parsed JSON body (WhatsApp, Messenger, Telegram), else None."""
    form: Mapping[str, list[str]]
    """Parsed form body (Twilio), else empty."""
    recipient: str | None
    arrived_at: float
    """``time.monotonic()`` at arrival."""
    status: int
    """The status the server answered (or would have, for hangs: 0)."""


@dataclass(frozen=True, slots=True)
class Upload:
    """A file uploaded to the fake Graph API (WhatsApp media or Meta attachment upload)."""

    path: str
    fields: Mapping[str, str]
    filename: str | None
    content_type: str | None
    data: bytes
    media_id: str


@dataclass(frozen=True, slots=True)
class PostedCallback:
    """A status callback the fake Twilio posted to a ``StatusCallback`` URL."""

    url: str
    params: Mapping[str, str]
    status: int
    """The receiver's HTTP status (0: the request failed)."""


def twilio_signature(token: str, url: str, params: Mapping[str, str]) -> str:
    """``X-Twilio-Signature``: base64(HMAC-SHA1(auth token, URL + sorted name/value pairs))."""
    data = url + "".join(name + params[name] for name in sorted(params))
    return base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()).decode()


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


def _error_body(platform: Platform, fault: Fault) -> Any:
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


class FakePlatformServer:
    """``async with FakePlatformServer() as srv``: listening on ``srv.base_url`` until exit."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, record: bool = True) -> None:
        self._host = host
        self._port = port
        self.record = record
        self.requests: list[RecordedRequest] = []
        self.faults: list[Fault] = []
        self._ids = itertools.count(1)
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.base_url = ""
        self.twilio_callback_states: tuple[str, ...] = ("sent", "delivered")
        self.callbacks: list[PostedCallback] = []
        self._background: set[asyncio.Task[None]] = set()
        self.media: dict[str, tuple[bytes, str]] = {}
        self.uploads: list[Upload] = []
        self._session: aiohttp.ClientSession | None = None
        self.templates = GraphTemplates(
            lambda request, status: self._record_get(request, "whatsapp", status)
        )

    def inject(self, fault: Fault) -> Fault:
        self.faults.append(fault)
        return fault

    def reset(self) -> None:
        self.requests.clear()
        self.faults.clear()

    def add_media(self, key: str, data: bytes, content_type: str) -> None:
        self.media[key] = (data, content_type)

    async def start(self) -> None:
        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.router.add_post("/bot{token}/{method}", self._telegram)
        app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", self._twilio)
        app.router.add_post("/v2/Indicators/Typing.json", self._twilio_typing)
        app.router.add_post("/{version}/{node}/media", self._graph_upload)
        app.router.add_post("/{version}/{node}/message_attachments", self._graph_upload)
        app.router.add_get("/cdn/{platform}/{key}", self._cdn)
        app.router.add_get("/file/bot{token}/media/{key}", self._telegram_file)
        app.router.add_get(
            "/2010-04-01/Accounts/{sid}/Messages/{message}/Media/{key}", self._twilio_media
        )
        app.router.add_get("/{version}/{waba}/message_templates", self.templates.handle)
        app.router.add_get("/{version}/{media_id}", self._graph_media)
        app.router.add_post("/{version}/{node}/messages", self._graph)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, backlog=1024)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"

    async def close(self) -> None:
        self._closing.set()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _take_fault(self, platform: Platform, path: str, recipient: str | None) -> Fault | None:
        for fault in self.faults:
            if fault.matches(platform, path, recipient):
                if fault.times is not None:
                    fault.times -= 1
                return fault
        return None

    async def _answer(
        self,
        request: web.Request,
        platform: Platform,
        *,
        json_body: Any,
        form: Mapping[str, list[str]],
        recipient: str | None,
        success: Any,
        auth_error: Fault | None,
    ) -> web.Response:
        arrived = time.monotonic()
        fault = auth_error or self._take_fault(platform, request.path, recipient)
        status = 200 if fault is None or fault.succeed else fault.status
        if fault is not None and fault.hang:
            status = 0
        if self.record:
            self.requests.append(
                RecordedRequest(
                    platform=platform,
                    method=request.method,
                    path=request.path,
                    headers=dict(request.headers),
                    json=json_body,
                    form=form,
                    recipient=recipient,
                    arrived_at=arrived,
                    status=status,
                )
            )
        if fault is None:
            return _json(200, success)
        if fault.hang:
            await self._closing.wait()
            return _json(503, {"error": "server closing"})
        if fault.delay:
            await asyncio.sleep(fault.delay)
        if fault.succeed:
            return _json(200, success)
        headers = dict(fault.headers)
        if fault.retry_after is not None:
            headers.setdefault("Retry-After", f"{fault.retry_after:g}")
        if fault.echo is not None:
            echoed = fault.echo(request.raw_path)
            if fault.echo_raw:
                return web.Response(
                    status=fault.status, text=echoed, content_type="text/html", headers=headers
                )
            fault = replace(fault, message=f"{fault.message}: {echoed}")
        return _json(fault.status, _error_body(platform, fault), headers)

    async def _graph(self, request: web.Request) -> web.Response:
        raw = await request.read()
        body = _loads(raw)
        is_whatsapp = isinstance(body, dict) and body.get("messaging_product") == "whatsapp"
        platform: Platform = "whatsapp" if is_whatsapp else "messenger"
        recipient: str | None = None
        n = next(self._ids)
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
        return await self._answer(
            request,
            platform,
            json_body=body,
            form={},
            recipient=recipient,
            success=success,
            auth_error=auth_error,
        )

    async def _telegram(self, request: web.Request) -> web.Response:
        body = _loads(await request.read())
        chat = body.get("chat_id") if isinstance(body, dict) else None
        recipient = str(chat) if chat is not None else None
        n = next(self._ids)
        method = request.match_info["method"]
        success: Any
        if method == "getFile":
            file_id = body.get("file_id") if isinstance(body, dict) else None
            if file_id not in self.media:
                fault = Fault(status=400, code=400, message="Bad Request: invalid file_id")
                return await self._answer(
                    request,
                    "telegram",
                    json_body=body,
                    form={},
                    recipient=None,
                    success=None,
                    auth_error=fault,
                )
            data = self.media[file_id][0]
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
        return await self._answer(
            request,
            "telegram",
            json_body=body,
            form={},
            recipient=recipient,
            success=success,
            auth_error=None,
        )

    async def _twilio(self, request: web.Request) -> web.Response:
        raw = await request.read()
        form = parse_qs(raw.decode("utf-8", errors="replace"), keep_blank_values=True)
        to = form.get("To", [None])[0]
        n = next(self._ids)
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
        response = await self._answer(
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

    def _record_get(self, request: web.Request, platform: Platform, status: int) -> None:
        if self.record:
            self.requests.append(
                RecordedRequest(
                    platform=platform,
                    method=request.method,
                    path=request.path,
                    headers=dict(request.headers),
                    json=None,
                    form={},
                    recipient=None,
                    arrived_at=time.monotonic(),
                    status=status,
                )
            )

    async def _graph_media(self, request: web.Request) -> web.Response:
        key = request.match_info["media_id"]
        authorized = request.headers.get("Authorization", "").startswith("Bearer ")
        if not authorized:
            self._record_get(request, "whatsapp", 401)
            fault = Fault(status=401, code=190, message="Invalid OAuth access token")
            return _json(401, _error_body("whatsapp", fault))
        if key not in self.media:
            self._record_get(request, "whatsapp", 400)
            fault = Fault(status=400, code=100, message="Unsupported get request")
            return _json(400, _error_body("whatsapp", fault))
        data, content_type = self.media[key]
        self._record_get(request, "whatsapp", 200)
        return _json(
            200,
            {
                "messaging_product": "whatsapp",
                "url": f"{self.base_url}/cdn/whatsapp/{key}?ext=1&hash=signed",
                "mime_type": content_type,
                "sha256": hashlib.sha256(data).hexdigest(),
                "file_size": len(data),
                "id": key,
            },
        )

    async def _graph_upload(self, request: web.Request) -> web.Response:
        is_whatsapp = request.path.endswith("/media")
        platform: Platform = "whatsapp" if is_whatsapp else "messenger"
        if not request.headers.get("Authorization", "").startswith("Bearer "):
            self._record_get(request, platform, 401)
            fault = Fault(status=401, code=190, message="Invalid OAuth access token")
            return _json(401, _error_body(platform, fault))
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
        self._record_get(request, platform, 200 if file_part else 400)
        if file_part is None:
            fault = Fault(status=400, code=100, message="(#100) file is required")
            return _json(400, _error_body(platform, fault))
        media_id = f"{next(self._ids) + 7_000_000_000}"
        filename, content_type, data = file_part
        self.uploads.append(Upload(request.path, fields, filename, content_type, data, media_id))
        self.media[media_id] = (data, content_type or "application/octet-stream")
        return _json(200, {"id": media_id} if is_whatsapp else {"attachment_id": media_id})

    async def _cdn(self, request: web.Request) -> web.StreamResponse:
        platform = request.match_info["platform"]
        key = request.match_info["key"]
        label: Platform = "whatsapp" if platform == "whatsapp" else "messenger"
        if platform == "twilio":
            label = "twilio"
        needs_bearer = platform == "whatsapp"
        if needs_bearer and not request.headers.get("Authorization", "").startswith("Bearer "):
            self._record_get(request, label, 401)
            return web.Response(status=401)
        if key not in self.media:
            self._record_get(request, label, 404)
            return web.Response(status=404)
        self._record_get(request, label, 200)
        data, content_type = self.media[key]
        return web.Response(body=data, content_type=content_type.split(";")[0])

    async def _telegram_file(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        if key not in self.media:
            self._record_get(request, "telegram", 404)
            return web.Response(status=404)
        self._record_get(request, "telegram", 200)
        data, _ = self.media[key]
        return web.Response(body=data, content_type="application/octet-stream")

    async def _twilio_media(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        if not request.headers.get("Authorization", "").startswith("Basic "):
            self._record_get(request, "twilio", 401)
            fault = Fault(status=401, code=20003, message="Authentication Error")
            return _json(401, _error_body("twilio", fault))
        if key not in self.media:
            self._record_get(request, "twilio", 404)
            fault = Fault(status=404, code=20404, message="The requested resource was not found")
            return _json(404, _error_body("twilio", fault))
        self._record_get(request, "twilio", 307)
        raise web.HTTPTemporaryRedirect(f"{self.base_url}/cdn/twilio/{key}?Signature=abc")

    async def _twilio_typing(self, request: web.Request) -> web.Response:
        raw = await request.read()
        form = parse_qs(raw.decode("utf-8", errors="replace"), keep_blank_values=True)
        authorized = request.headers.get("Authorization", "").startswith("Basic ")
        auth_error = (
            None
            if authorized
            else Fault(status=401, code=20003, message="Authentication Error - No credentials")
        )
        return await self._answer(
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
        for state in self.twilio_callback_states:
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


def _loads(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def _json(status: int, body: Any, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(body, separators=(",", ":")).encode(),
        content_type="application/json",
        headers=headers,
    )
