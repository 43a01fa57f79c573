"""Fixtures of the conversation tests: the app (gateway + conversations API) on a real socket,
the conversation worker running beside it, signed webhooks, lifecycle events as the outbox
publishes them, and a topic reader."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from sqlalchemy.ext.asyncio import AsyncEngine

from conversations.app import component as conversations_component
from conversations.worker import run_worker
from gateway.app import component as gateway_component
from infra.kafka import CE_HEADERS
from infra.settings import Settings
from tests.conftest import ADMIN_KEY
from tests.integration.gateway.conftest import (
    ACCOUNTS,
    channel_body,
    meta_headers,
    telegram_headers,
    twilio_signature,
)
from tests.support import RunningApp, reader_from_start, running_app


async def eventually(check: Callable[[], Any], limit: float = 30.0) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy; fail after ``limit``."""
    async with asyncio.timeout(limit):
        while True:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return result
            await asyncio.sleep(0.1)


@dataclass
class TopicReader:
    """Reads a topic from the beginning, accumulating records across calls."""

    settings: Settings
    logical: str
    records: list[dict[str, Any]] = field(default_factory=list)
    consumer: AIOKafkaConsumer | None = None

    async def _start(self) -> AIOKafkaConsumer:
        if self.consumer is None:
            topic = self.settings.topic(self.logical)
            self.consumer = await reader_from_start(self.settings, topic)
        return self.consumer

    async def until(
        self, done: Callable[[list[dict[str, Any]]], object], limit: float = 30.0
    ) -> list[dict[str, Any]]:
        consumer = await self._start()
        async with asyncio.timeout(limit):
            while not done(self.records):
                batch = await consumer.getmany(timeout_ms=200)
                for tp in sorted(batch, key=lambda t: t.partition):
                    for r in batch[tp]:
                        self.records.append(
                            {"key": r.key.decode() if r.key else None, **orjson.loads(r.value)}
                        )
        return self.records

    def of_type(self, event_type: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("type") == event_type]

    async def close(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()


@dataclass
class Harness:
    app: RunningApp
    channels: dict[str, str] = field(default_factory=dict)

    @property
    def client(self) -> httpx.AsyncClient:
        return self.app.client

    @property
    def settings(self) -> Settings:
        return self.app.settings

    def admin(self) -> dict[str, str]:
        return self.app.auth(ADMIN_KEY)

    async def create_channel(self, platform: str) -> str:
        created = await self.client.post(
            "/v1/channels", json=channel_body(platform), headers=self.admin()
        )
        assert created.status_code == 201, created.text
        self.channels[platform] = str(created.json()["id"])
        return self.channels[platform]

    async def whatsapp(self, wamid: str, sender: str, text: str, ts: int = 1749416383) -> None:
        body = orjson.dumps(
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
                                    "contacts": [{"profile": {"name": "Sheena"}, "wa_id": sender}],
                                    "messages": [
                                        {
                                            "from": sender,
                                            "id": wamid,
                                            "timestamp": str(ts),
                                            "type": "text",
                                            "text": {"body": text},
                                        }
                                    ],
                                },
                            }
                        ],
                    }
                ],
            }
        )
        path = f"/webhooks/whatsapp/{self.channels['whatsapp']}"
        response = await self.client.post(path, content=body, headers=meta_headers(body))
        assert response.status_code == 200, response.text

    async def telegram(self, update_id: int, chat_id: int, text: str) -> None:
        body = orjson.dumps(
            {
                "update_id": update_id,
                "message": {
                    "message_id": update_id,
                    "date": 1700000000 + update_id,
                    "text": text,
                    "chat": {"id": chat_id, "type": "private"},
                    "from": {"id": chat_id, "is_bot": False, "first_name": "Test"},
                },
            }
        )
        path = f"/webhooks/telegram/{self.channels['telegram']}"
        response = await self.client.post(path, content=body, headers=telegram_headers())
        assert response.status_code == 200, response.text

    async def twilio(self, sid: str, sender: str, text: str, to: str | None = None) -> None:
        from urllib.parse import urlencode

        params = {
            "MessageSid": sid,
            "SmsSid": sid,
            "AccountSid": "AC" + "0123456789abcdef" * 2,
            "From": sender,
            "To": to or ACCOUNTS["twilio"],
            "Body": text,
            "NumMedia": "0",
        }
        path = f"/webhooks/twilio/{self.channels['twilio']}"
        sig = twilio_signature(self.app.base_url + path, params)
        response = await self.client.post(
            path,
            content=urlencode(params).encode(),
            headers={
                "content-type": "application/x-www-form-urlencoded",
                "x-twilio-signature": sig,
            },
        )
        assert response.status_code == 200, response.text

    async def lifecycle(
        self,
        event_type: str,
        *,
        platform: str,
        to: str,
        message_id: str,
        metadata: dict[str, Any] | None = None,
        platform_message_id: str | None = None,
        error: dict[str, Any] | None = None,
        at: datetime | None = None,
    ) -> None:
        """A lifecycle event exactly as the outbox publishes it (design.md §6)."""
        channel_id = self.channels[platform]
        key = f"{channel_id}:{to}"
        value = {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "source": f"/switchboard/outbox/{channel_id}",
            "type": event_type,
            "time": (at or datetime.now(UTC)).isoformat().replace("+00:00", "Z"),
            "subject": key,
            "datacontenttype": "application/json",
            "data": {
                "message_id": message_id,
                "command_id": f"cmd-{message_id}",
                "channel_id": channel_id,
                "platform": platform,
                "to": to,
                "platform_message_id": platform_message_id,
                "attempt": 1,
                "error": error,
                "metadata": metadata or {},
            },
        }
        await self.app.resources.producer.send_and_wait(
            self.settings.topic("outbound.events.v1"),
            orjson.dumps(value),
            key=key.encode(),
            headers=CE_HEADERS,
        )

    async def conversations(self, **params: Any) -> dict[str, Any]:
        response = await self.client.get("/v1/conversations", params=params, headers=self.admin())
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def timeline(self, conversation_id: str, **params: Any) -> dict[str, Any]:
        response = await self.client.get(
            f"/v1/conversations/{conversation_id}/messages", params=params, headers=self.admin()
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


@pytest.fixture
def conversation_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "gateway_relay_interval_seconds": 0.2,
            "conversations_timer_interval": 0.2,
            "conversations_relay_interval": 0.1,
            "conversations_consumer_group": f"conv-{uuid.uuid4().hex[:8]}",
        }
    )


@pytest.fixture
async def harness(conversation_settings: Settings, engine: AsyncEngine) -> AsyncIterator[Harness]:
    components = [
        gateway_component(conversation_settings),
        conversations_component(conversation_settings),
    ]
    async with running_app(conversation_settings, components) as app:
        stop = asyncio.Event()
        worker = asyncio.create_task(run_worker(app.resources, stop))
        try:
            yield Harness(app)
        finally:
            stop.set()
            await asyncio.wait_for(worker, 30)


@pytest.fixture
async def conversation_events(harness: Harness) -> AsyncIterator[TopicReader]:
    reader = TopicReader(harness.settings, "conversations.v1")
    try:
        yield reader
    finally:
        await reader.close()


@pytest.fixture
async def commands(harness: Harness) -> AsyncIterator[TopicReader]:
    reader = TopicReader(harness.settings, "outbound.commands.v1")
    try:
        yield reader
    finally:
        await reader.close()
