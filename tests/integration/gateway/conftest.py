"""Fixtures of the ingress tests: the app with the gateway, channels of each platform, signed
webhooks and a topic reader."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

import normalizer
from gateway.app import component
from gateway.service import Gateway, GatewayHolder
from infra.embedded import EmbeddedBroker
from infra.settings import Settings
from tests.conftest import ADMIN_KEY
from tests.support import RunningApp, reader_from_start, running_app

META_SECRET = "meta-app-secret-0123456789"
META_VERIFY = "meta-verify-token-xyz"
TG_SECRET = "tg-secret-token_ABC"
TG_BOT = "123456:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
TW_TOKEN = "twilio-auth-token-abcdef"
TW_SID = "AC" + "0123456789abcdef" * 2
ALL_SECRETS = (META_SECRET, META_VERIFY, TG_SECRET, TG_BOT, TW_TOKEN, "EAAG-access-token-987")

ACCOUNTS = {
    "whatsapp": "106540352242922",
    "messenger": "1122334455",
    "instagram": "17841400000000",
    "telegram": "123456",
    "twilio": "+15551234567",
}


def channel_body(platform: str, **credentials: str) -> dict[str, Any]:
    if platform in ("whatsapp", "messenger", "instagram"):
        creds = {
            "access_token": "EAAG-access-token-987",
            "app_secret": META_SECRET,
            "verify_token": META_VERIFY,
        }
    elif platform == "telegram":
        creds = {"bot_token": TG_BOT, "secret_token": TG_SECRET}
    else:
        creds = {"account_sid": TW_SID, "auth_token": TW_TOKEN}
    creds.update(credentials)
    return {
        "platform": platform,
        "name": f"{platform} test",
        "account_id": ACCOUNTS[platform],
        "credentials": creds,
    }


# ---- payloads ---------------------------------------------------------------------------------


def whatsapp_payload(*messages: tuple[str, str, str]) -> bytes:
    """(wamid, from, text) messages in one webhook."""
    return json.dumps(
        {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": "WABA1",
                    "changes": [
                        {
                            "field": "messages",
                            "value": {
                                "messaging_product": "whatsapp",
                                "metadata": {
                                    "display_phone_number": "15550783881",
                                    "phone_number_id": ACCOUNTS["whatsapp"],
                                },
                                "contacts": [
                                    {"profile": {"name": "Sheena"}, "wa_id": frm}
                                    for _, frm, _ in messages
                                ],
                                "messages": [
                                    {
                                        "from": frm,
                                        "id": wamid,
                                        "timestamp": "1749416383",
                                        "type": "text",
                                        "text": {"body": text},
                                    }
                                    for wamid, frm, text in messages
                                ],
                            },
                        }
                    ],
                }
            ],
        },
        ensure_ascii=True,
    ).encode()


def meta_messaging_payload(platform: str, mid: str, text: str) -> bytes:
    account = ACCOUNTS[platform]
    return json.dumps(
        {
            "object": "page" if platform == "messenger" else "instagram",
            "entry": [
                {
                    "id": account,
                    "time": 1700000000000,
                    "messaging": [
                        {
                            "sender": {"id": "USER42"},
                            "recipient": {"id": account},
                            "timestamp": 1700000000000,
                            "message": {"mid": mid, "text": text},
                        }
                    ],
                }
            ],
        }
    ).encode()


def telegram_payload(update_id: int, text: str) -> bytes:
    return json.dumps(
        {
            "update_id": update_id,
            "message": {
                "message_id": update_id,
                "date": 1700000000,
                "text": text,
                "chat": {"id": 42, "type": "private"},
                "from": {"id": 42, "is_bot": False, "first_name": "Test"},
            },
        }
    ).encode()


def twilio_form(sid: str, text: str) -> dict[str, str]:
    return {
        "MessageSid": sid,
        "SmsSid": sid,
        "AccountSid": TW_SID,
        "From": "+15557654321",
        "To": ACCOUNTS["twilio"],
        "Body": text,
        "NumMedia": "0",
    }


# ---- signing ----------------------------------------------------------------------------------


def meta_headers(body: bytes, secret: str = META_SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"content-type": "application/json", "x-hub-signature-256": f"sha256={digest}"}


def telegram_headers(secret: str = TG_SECRET) -> dict[str, str]:
    return {"content-type": "application/json", "x-telegram-bot-api-secret-token": secret}


def twilio_signature(url: str, params: dict[str, str], token: str = TW_TOKEN) -> str:
    data = url + "".join(k + params[k] for k in sorted(params))
    return base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()).decode()


@dataclass
class Ingress:
    app: RunningApp
    channels: dict[str, str]
    holder: GatewayHolder

    @property
    def gateway(self) -> Gateway:
        assert self.holder.gateway is not None
        return self.holder.gateway

    @property
    def client(self) -> httpx.AsyncClient:
        return self.app.client

    def path(self, platform: str) -> str:
        return f"/webhooks/{platform}/{self.channels[platform]}"

    async def create_channel(self, platform: str, **credentials: str) -> str:
        created = await self.client.post(
            "/v1/channels",
            json=channel_body(platform, **credentials),
            headers=self.app.auth(ADMIN_KEY),
        )
        assert created.status_code == 201, created.text
        self.channels[platform] = created.json()["id"]
        return str(created.json()["id"])

    async def post_meta(self, platform: str, body: bytes, **kw: Any) -> httpx.Response:
        return await self.client.post(
            self.path(platform), content=body, headers=meta_headers(body), **kw
        )

    async def post_telegram(self, body: bytes) -> httpx.Response:
        return await self.client.post(
            self.path("telegram"), content=body, headers=telegram_headers()
        )

    async def post_twilio(self, params: dict[str, str], token: str = TW_TOKEN) -> httpx.Response:
        path = self.path("twilio")
        sig = twilio_signature(self.app.base_url + path, params, token)
        return await self.client.post(
            path,
            content=urlencode(params).encode(),
            headers={
                "content-type": "application/x-www-form-urlencoded",
                "x-twilio-signature": sig,
            },
        )


@pytest.fixture
def gateway_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "gateway_publish_timeout_seconds": 2.0,
            "kafka_request_timeout_ms": 2000,
            "gateway_relay_interval_seconds": 0.2,
        }
    )


@contextlib.asynccontextmanager
async def running_ingress(settings: Settings, *, fast_path: bool = True) -> AsyncIterator[Ingress]:
    """The app with the gateway component (with or without its fast path), served."""
    holder = GatewayHolder()
    gateway = component(settings, holder)
    if not fast_path:
        gateway = dataclasses.replace(gateway, asgi_middleware=())
    async with running_app(settings, [gateway]) as app:
        yield Ingress(app, {}, holder)


@contextlib.asynccontextmanager
async def ingress_through_proxy(
    settings: Settings, port: int, **overrides: Any
) -> AsyncIterator[Ingress]:
    """The app with every PostgreSQL connection (gateway pool, SQLAlchemy) through a proxy
    listening on 127.0.0.1:``port``, with short database and publish deadlines so a database
    that misbehaves is noticed within seconds; the relay runs only when woken (spool writes),
    so it holds no connection of its own when the proxy misbehaves. ``overrides``: more
    settings."""
    url = make_url(settings.database_url.get_secret_value()).set(host="127.0.0.1", port=port)
    proxied = settings.model_copy(
        update={
            "database_url": type(settings.database_url)(url.render_as_string(False)),
            "gateway_db_timeout_seconds": 1.0,
            "gateway_publish_timeout_seconds": 2.0,
            "kafka_request_timeout_ms": 2000,
            "gateway_relay_interval_seconds": 3600.0,
            **overrides,
        }
    )
    async with running_ingress(proxied) as ingress:
        yield ingress


@contextlib.asynccontextmanager
async def ingress_on_own_broker(
    settings: Settings, broker: EmbeddedBroker, **overrides: Any
) -> AsyncIterator[Ingress]:
    """The app publishing to ``broker`` with short broker deadlines, so an outage is noticed
    within seconds and the webhooks go to the spool; the publisher does not retry the broker
    on its own (the test says when it is back) and the relay runs only when woken (spool
    writes) unless ``overrides`` say otherwise."""
    on_broker = settings.model_copy(
        update={
            "kafka_bootstrap_servers": broker.bootstrap_servers,
            "kafka_enable_idempotence": False,  # Tansu has no idempotent producer
            "kafka_replication_factor": 1,
            "kafka_min_insync_replicas": None,
            "kafka_request_timeout_ms": 1500,
            "gateway_publish_timeout_seconds": 1.0,
            "gateway_broker_backoff_seconds": 3600.0,
            "gateway_relay_interval_seconds": 3600.0,
            **overrides,
        }
    )
    async with running_ingress(on_broker) as ingress:
        yield ingress


def event_id(ingress: Ingress, body: bytes, platform: str = "whatsapp") -> str:
    """The id of the first canonical event ``body`` (a webhook of ``platform`` to the ingress's
    channel) normalizes to: what a test looks for on the topic."""
    events = normalizer.normalize(
        platform, body, channel_id=ingress.channels[platform], account_id=ACCOUNTS[platform]
    )
    return events[0].id


@pytest.fixture
async def ingress(gateway_settings: Settings, engine: AsyncEngine) -> AsyncIterator[Ingress]:
    async with running_ingress(gateway_settings) as ingress:
        yield ingress


async def read_topic(
    settings: Settings, done: Callable[[list[dict[str, Any]]], bool], limit_s: float = 20
) -> list[dict[str, Any]]:
    """Read ``inbound.v1`` from the beginning until ``done(records)``; records are dicts with
    ``key``, ``headers``, ``partition`` and the decoded ``event``."""
    topic = settings.topic("inbound.v1")
    consumer = await reader_from_start(settings, topic, limit_s)
    records: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(limit_s):
            while not done(records):
                batch = await consumer.getmany(timeout_ms=200)
                for tp in sorted(batch, key=lambda t: t.partition):
                    for r in batch[tp]:
                        records.append(
                            {
                                "key": r.key.decode() if r.key else None,
                                "headers": dict(r.headers),
                                "partition": r.partition,
                                "event": json.loads(r.value),
                            }
                        )
    finally:
        await consumer.stop()
    return records


def ids(records: list[dict[str, Any]]) -> list[str]:
    return [r["event"]["id"] for r in records]


def has(*event_ids: str) -> Callable[[list[dict[str, Any]]], bool]:
    def check(records: list[dict[str, Any]]) -> bool:
        return set(event_ids) <= set(ids(records))

    return check


def new_uuid() -> str:
    return str(uuid.uuid4())
