"""Inbound media proxy against the fake platforms: a media id taken from a webhook's canonical
event comes back as bytes, with its type and length, and nothing secret leaks."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

import normalizer
from fake_platforms.server import FakePlatformServer
from infra.settings import Settings
from normalizer.meta import url_media_id
from outbox import media as media_module
from outbox import media_upload
from outbox.app import component
from tests.conftest import ADMIN_KEY
from tests.integration.gateway.conftest import TG_BOT, TW_SID, TW_TOKEN, channel_body
from tests.support import RunningApp, running_app

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "payloads"
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 700  # ~180 KB, several chunks
WA_TOKEN = "EAAG-access-token-987"
SECRETS = (WA_TOKEN, TG_BOT, TW_TOKEN)


@dataclass
class Proxy:
    app: RunningApp
    fake: FakePlatformServer

    async def channel(self, platform: str, base_url: str | None = None, **extra: str) -> str:
        body = {
            **channel_body(platform),
            "api_base_url": base_url or self.fake.base_url,
            **extra,
        }
        reply = await self.app.client.post(
            "/v1/channels", json=body, headers=self.app.auth(ADMIN_KEY)
        )
        assert reply.status_code == 201, reply.text
        return str(reply.json()["id"])

    async def get(self, channel_id: str, media_id: str, **kw: Any) -> httpx.Response:
        headers = kw.pop("headers", self.app.auth(ADMIN_KEY))
        reply = await self.app.client.get(
            f"/v1/channels/{channel_id}/media/{media_id}", headers=headers, **kw
        )
        text = reply.content.decode("latin-1") + str(dict(reply.headers))
        for secret in SECRETS:
            assert secret not in text
        assert self.fake.base_url not in text  # no platform URL is ever returned
        return reply


@pytest.fixture
async def proxy(settings: Settings, engine: AsyncEngine) -> AsyncIterator[Proxy]:
    async with FakePlatformServer() as fake, running_app(settings, [component(settings)]) as app:
        yield Proxy(app, fake)


def media_id(platform: str, name: str, **kw: Any) -> str:
    """The media id of the first event of a recorded webhook, as the gateway normalizes it."""
    body = (FIXTURES / platform / name).read_bytes()
    [event] = normalizer.normalize(platform, body, channel_id="c", **kw)
    data = event.model_dump(mode="json")["data"]
    identifier = data["message"]["media"]["id"]
    assert identifier
    return str(identifier)


async def test_whatsapp_media_id_from_a_webhook_comes_back_as_bytes(proxy: Proxy) -> None:
    channel_id = await proxy.channel("whatsapp")
    wa_id = media_id("whatsapp", "image.json")
    proxy.fake.add_media(wa_id, JPEG, "image/jpeg")
    reply = await proxy.get(channel_id, wa_id)
    assert reply.status_code == 200, reply.text
    assert reply.content == JPEG
    assert reply.headers["content-type"] == "image/jpeg"
    assert reply.headers["content-length"] == str(len(JPEG))
    graph, cdn = proxy.fake.requests
    assert graph.path == f"/v21.0/{wa_id}"
    assert cdn.path == f"/cdn/whatsapp/{wa_id}"
    assert cdn.headers["Authorization"] == f"Bearer {WA_TOKEN}"

    missing = await proxy.get(channel_id, "999999")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "media_not_found"


async def test_telegram_file_id_from_a_webhook_comes_back_as_bytes(proxy: Proxy) -> None:
    channel_id = await proxy.channel("telegram")
    file_id = media_id("telegram", "photo.json", account_id="123456")
    proxy.fake.add_media(file_id, JPEG, "image/jpeg")
    reply = await proxy.get(channel_id, file_id)
    assert reply.status_code == 200, reply.text
    assert reply.content == JPEG
    assert reply.headers["content-length"] == str(len(JPEG))
    get_file, download = proxy.fake.requests
    assert get_file.path == f"/bot{TG_BOT}/getFile"
    assert download.path == f"/file/bot{TG_BOT}/media/{file_id}"

    assert (await proxy.get(channel_id, "AgACunknown")).status_code == 404


async def test_twilio_media_follows_the_redirect_without_credentials(proxy: Proxy) -> None:
    channel_id = await proxy.channel("twilio")
    message_sid, media_sid = "MM" + "1" * 32, "ME" + "2" * 32
    proxy.fake.add_media(media_sid, b"BEGIN:VCARD\r\nEND:VCARD\r\n", "text/vcard")
    reply = await proxy.get(channel_id, f"{message_sid}:{media_sid}")
    assert reply.status_code == 200, reply.text
    assert reply.content.startswith(b"BEGIN:VCARD")
    assert reply.headers["content-type"].startswith("text/vcard")
    api, cdn = proxy.fake.requests
    assert api.path == f"/2010-04-01/Accounts/{TW_SID}/Messages/{message_sid}/Media/{media_sid}"
    basic = base64.b64encode(f"{TW_SID}:{TW_TOKEN}".encode()).decode()
    assert api.headers["Authorization"] == f"Basic {basic}"
    assert "Authorization" not in cdn.headers

    assert (await proxy.get(channel_id, "ME" + "2" * 32)).status_code == 404  # no message sid


async def test_meta_attachment_url_is_fetched_only_from_a_cdn(proxy: Proxy) -> None:
    channel_id = await proxy.channel("messenger")
    proxy.fake.add_media("photo1", JPEG, "image/jpeg")
    reply = await proxy.get(channel_id, url_media_id(f"{proxy.fake.base_url}/cdn/meta/photo1"))
    assert reply.status_code == 200, reply.text
    assert reply.content == JPEG

    expired = await proxy.get(channel_id, url_media_id(f"{proxy.fake.base_url}/cdn/meta/gone"))
    assert expired.status_code == 410
    assert expired.json()["error"]["code"] == "media_expired"
    for url in ("https://169.254.169.254/latest/meta-data", "file:///etc/passwd"):
        refused = await proxy.get(channel_id, url_media_id(url))
        assert refused.status_code == 404
    assert (await proxy.get(channel_id, "u.%%%")).status_code == 404


async def test_bounds_errors_and_scope(
    proxy: Proxy, monkeypatch: pytest.MonkeyPatch, unused_tcp_port: int
) -> None:
    channel_id = await proxy.channel("whatsapp")
    proxy.fake.add_media("42", JPEG, "image/jpeg")
    monkeypatch.setattr(media_module, "MEDIA_MAX_BYTES", 1000)
    too_large = await proxy.get(channel_id, "42")
    assert too_large.status_code == 413
    assert too_large.json()["error"]["code"] == "media_too_large"
    monkeypatch.undo()

    down = await proxy.channel(
        "whatsapp", base_url=f"http://127.0.0.1:{unused_tcp_port}", account_id="1065000"
    )
    unreachable = await proxy.get(down, "42")
    assert unreachable.status_code == 502
    assert unreachable.json()["error"]["code"] == "platform_error"

    assert (await proxy.get(str(uuid.uuid4()), "42")).status_code == 404
    assert (await proxy.get("not-a-uuid", "42")).status_code == 404
    assert (await proxy.get(channel_id, "42", headers={})).status_code == 401


# ---- upload ------------------------------------------------------------------------------------


async def upload(
    proxy: Proxy, channel_id: str, data: bytes, mime: str, **fields: str
) -> httpx.Response:
    reply = await proxy.app.client.post(
        f"/v1/channels/{channel_id}/media",
        files={"file": ("photo.jpg", data, mime)},
        data=fields,
        headers=proxy.app.auth(ADMIN_KEY),
    )
    for secret in SECRETS:
        assert secret not in reply.text
    return reply


async def test_whatsapp_upload_gives_an_id_that_comes_back_through_the_proxy(
    proxy: Proxy,
) -> None:
    channel_id = await proxy.channel("whatsapp")
    reply = await upload(proxy, channel_id, JPEG, "image/jpeg")
    assert reply.status_code == 201, reply.text
    answer = reply.json()
    assert answer["kind"] == "image"
    assert answer["size"] == len(JPEG)
    [stored] = proxy.fake.uploads
    assert stored.path == "/v21.0/106540352242922/media"
    assert stored.fields == {"messaging_product": "whatsapp", "type": "image/jpeg"}
    assert stored.data == JPEG
    assert answer["id"] == stored.media_id
    back = await proxy.get(channel_id, answer["id"])
    assert back.content == JPEG


@pytest.mark.parametrize("platform", ["messenger", "instagram"])
async def test_meta_upload_uses_the_attachment_upload_api(proxy: Proxy, platform: str) -> None:
    channel_id = await proxy.channel(platform)
    reply = await upload(proxy, channel_id, b"%PDF-1.7 ...", "application/pdf", kind="document")
    assert reply.status_code == 201, reply.text
    [stored] = proxy.fake.uploads
    assert stored.path == "/v21.0/me/message_attachments"
    message = {"attachment": {"type": "file", "payload": {"is_reusable": True}}}
    assert json.loads(stored.fields["message"]) == message
    assert stored.fields.get("platform") == ("instagram" if platform == "instagram" else None)
    assert reply.json()["id"] == stored.media_id


async def test_upload_refusals(proxy: Proxy, monkeypatch: pytest.MonkeyPatch) -> None:
    telegram = await proxy.channel("telegram")
    refused = await upload(proxy, telegram, JPEG, "image/jpeg")
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "upload_not_supported"
    assert "url" in refused.json()["error"]["message"]

    whatsapp = await proxy.channel("whatsapp")
    monkeypatch.setattr(media_upload, "MEDIA_MAX_BYTES", 1000)
    assert (await upload(proxy, whatsapp, JPEG, "image/jpeg")).status_code == 413
    monkeypatch.undo()
    assert (await upload(proxy, whatsapp, JPEG, "image/jpeg", kind="gif")).status_code == 422

    async def chunks() -> AsyncIterator[bytes]:
        yield b"--x\r\n"

    unsized = await proxy.app.client.post(
        f"/v1/channels/{whatsapp}/media",
        content=chunks(),
        headers={**proxy.app.auth(ADMIN_KEY), "content-type": "multipart/form-data; boundary=x"},
    )
    assert unsized.status_code == 411
    assert not proxy.fake.uploads
