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

from types import TracebackType
from typing import Self

from aiohttp import web

from fake_platforms.faults import Fault
from fake_platforms.graph import GraphApi
from fake_platforms.graph_templates import GraphTemplates
from fake_platforms.records import Media, Platform, PostedCallback, RecordedRequest, Upload
from fake_platforms.responder import Responder
from fake_platforms.telegram import TelegramApi
from fake_platforms.twilio import TwilioApi, twilio_signature

__all__ = [
    "FakePlatformServer",
    "Fault",
    "Platform",
    "PostedCallback",
    "RecordedRequest",
    "Upload",
    "twilio_signature",
]


class FakePlatformServer:
    """``async with FakePlatformServer() as srv``: listening on ``srv.base_url`` until exit."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, record: bool = True) -> None:
        self._host = host
        self._port = port
        self._responder = Responder(record=record)
        self._runner: web.AppRunner | None = None
        self.base_url = ""
        self.media: Media = {}
        self.uploads: list[Upload] = []
        self._graph = GraphApi(self._responder, self.media, self.uploads, lambda: self.base_url)
        self._telegram = TelegramApi(self._responder, self.media)
        self._twilio = TwilioApi(self._responder, self.media, lambda: self.base_url)
        self.templates = GraphTemplates(
            lambda request, status: self._responder.record_get(request, "whatsapp", status)
        )

    @property
    def record(self) -> bool:
        return self._responder.record

    @record.setter
    def record(self, value: bool) -> None:
        self._responder.record = value

    @property
    def requests(self) -> list[RecordedRequest]:
        return self._responder.requests

    @property
    def faults(self) -> list[Fault]:
        return self._responder.faults

    @property
    def callbacks(self) -> list[PostedCallback]:
        return self._twilio.callbacks

    @property
    def twilio_callback_states(self) -> tuple[str, ...]:
        return self._twilio.callback_states

    @twilio_callback_states.setter
    def twilio_callback_states(self, states: tuple[str, ...]) -> None:
        self._twilio.callback_states = states

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
        app.router.add_post("/bot{token}/{method}", self._telegram.method)
        app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", self._twilio.messages)
        app.router.add_post("/v2/Indicators/Typing.json", self._twilio.typing)
        app.router.add_post("/{version}/{node}/media", self._graph.upload)
        app.router.add_post("/{version}/{node}/message_attachments", self._graph.upload)
        app.router.add_get("/cdn/{platform}/{key}", self._graph.cdn)
        app.router.add_get("/file/bot{token}/media/{key}", self._telegram.file)
        app.router.add_get(
            "/2010-04-01/Accounts/{sid}/Messages/{message}/Media/{key}", self._twilio.media
        )
        app.router.add_get("/{version}/{waba}/message_templates", self.templates.handle)
        app.router.add_get("/{version}/{media_id}", self._graph.media)
        app.router.add_post("/{version}/{node}/messages", self._graph.send)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, backlog=1024)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"

    async def close(self) -> None:
        self._responder.closing.set()
        await self._twilio.close()
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
