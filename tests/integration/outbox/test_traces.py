"""One trace from ``POST /v1/messages`` (or a Kafka command) to the request the platform
received and to the lifecycle events on ``outbound.events.v1``: with tracing off (the client's
``traceparent`` is carried unchanged) and on (our spans in between, same trace id)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
import pytest
from opentelemetry.trace import SpanKind
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from fake_platforms.server import FakePlatformServer
from infra import kafka, telemetry
from infra.settings import Settings
from outbox.app import component, run_worker
from outbox.commands import run_command_consumer
from outbox.models import OutboxEvent, OutboxMessage
from tests.conftest import ADMIN_KEY
from tests.support import RunningApp, running_app
from tests.tracing import CLIENT_SPAN, TRACE, TRACEPARENT, recording_spans

pytestmark = pytest.mark.integration

WA_USER = "393331234567"


@pytest.fixture
async def fake() -> AsyncIterator[FakePlatformServer]:
    async with FakePlatformServer() as server:
        yield server


@pytest.fixture
async def api(settings: Settings, engine: AsyncEngine) -> AsyncIterator[RunningApp]:
    settings = settings.model_copy(
        update={
            "outbox_whatsapp_window_check": False,
            "outbox_poll_interval": 0.02,
            "outbox_flush_interval": 0.002,
        }
    )
    async with running_app(settings, [component(settings)]) as running:
        yield running


@pytest.fixture(params=["off", "on"])
def tracing(request: pytest.FixtureRequest) -> Iterator[Any]:
    if request.param == "off":
        yield None
        return
    with recording_spans() as exporter:
        yield exporter


async def create_channel(api: RunningApp, fake: FakePlatformServer) -> str:
    response = await api.client.post(
        "/v1/channels",
        json={
            "platform": "whatsapp",
            "name": "Support",
            "account_id": "106540352242922",
            "credentials": {"access_token": "t", "app_secret": "s", "verify_token": "v"},
            "api_base_url": fake.base_url,
        },
        headers=api.auth(ADMIN_KEY),
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


@contextlib.asynccontextmanager
async def worker(api: RunningApp) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(run_worker(api.resources, stop))
    try:
        yield
    finally:
        stop.set()
        await task


async def sent(api: RunningApp, message_id: str) -> OutboxMessage:
    async with asyncio.timeout(30):
        while True:
            async with api.resources.sessionmaker() as session:
                row = await session.get(OutboxMessage, uuid.UUID(message_id))
            if row is not None and row.state == "sent":
                return row
            await asyncio.sleep(0.05)


async def lifecycle_records(settings: Settings, message_id: str, want: set[str]) -> list[Any]:
    """The records of ``message_id`` on outbound.events.v1, once every type in ``want`` is in."""
    consumer = kafka.create_consumer(
        settings, settings.topic("outbound.events.v1"), group_id=f"t-{uuid.uuid4().hex}"
    )
    await consumer.start()
    mine: list[Any] = []
    try:
        async with asyncio.timeout(30):
            while {orjson.loads(r.value)["type"] for r in mine} < want:
                batch = await consumer.getmany(timeout_ms=300)
                mine += [
                    r
                    for rs in batch.values()
                    for r in rs
                    if orjson.loads(r.value)["data"]["message_id"] == message_id
                ]
    finally:
        await consumer.stop()
    return mine


def header(record: Any) -> str | None:
    return telemetry.from_kafka(record.headers)


async def test_one_trace_from_the_api_to_the_platform_and_the_lifecycle_events(
    api: RunningApp, fake: FakePlatformServer, tracing: Any
) -> None:
    channel_id = await create_channel(api, fake)
    response = await api.client.post(
        "/v1/messages",
        json={"channel_id": channel_id, "to": WA_USER, "content": {"kind": "text", "text": "hi"}},
        headers={**api.auth(ADMIN_KEY), "traceparent": TRACEPARENT},
    )
    assert response.status_code == 202, response.text
    message_id = response.json()["id"]
    async with worker(api):
        row = await sent(api, message_id)
        records = await lifecycle_records(
            api.settings, message_id, {"message.queued", "message.sent"}
        )

    [request] = [r for r in fake.requests if r.path.endswith("/messages")]
    to_platform = request.headers.get("traceparent") or request.headers.get("Traceparent")
    assert telemetry.trace_id(to_platform) == TRACE
    assert telemetry.trace_id(row.traceparent) == TRACE
    assert records, "lifecycle events were published"
    assert all(telemetry.trace_id(header(r)) == TRACE for r in records)
    assert all(dict(r.headers)["content-type"] == kafka.CLOUDEVENTS_CONTENT_TYPE for r in records)

    if tracing is None:  # off: the client's context, unchanged, all the way
        assert to_platform == TRACEPARENT
        assert row.traceparent == TRACEPARENT
        assert {header(r) for r in records} == {TRACEPARENT}
        return
    spans = {  # the channel's creation, say, has a trace of its own
        f"{s.context.span_id:016x}": s
        for s in tracing.get_finished_spans()
        if f"{s.context.trace_id:032x}" == TRACE
    }
    server = next(s for s in spans.values() if s.name == "POST /v1/messages")
    assert server.kind == SpanKind.SERVER
    assert f"{server.parent.span_id:016x}" == CLIENT_SPAN
    assert row.traceparent is not None
    assert row.traceparent[36:52] == f"{server.context.span_id:016x}"
    platform_call = spans[to_platform[36:52]]  # type: ignore[index]  # the platform got our HTTP client span
    assert platform_call.kind == SpanKind.CLIENT
    assert platform_call.attributes["http.response.status_code"] == 200
    assert "url.full" not in platform_call.attributes
    attempt = spans[f"{platform_call.parent.span_id:016x}"]
    assert attempt.name == "outbox.attempt"
    assert attempt.attributes["switchboard.message_id"] == message_id
    assert f"{attempt.parent.span_id:016x}" == row.traceparent[36:52]
    for record in records:
        send = spans[header(record)[36:52]]  # type: ignore[index]  # each record: its own PRODUCER span
        assert send.kind == SpanKind.PRODUCER
        assert send.attributes["messaging.system"] == "kafka"
        assert send.attributes["messaging.destination.name"] == record.topic


async def test_a_kafka_command_with_a_traceparent_keeps_its_trace(
    api: RunningApp, fake: FakePlatformServer
) -> None:
    channel_id = await create_channel(api, fake)
    command_id = f"cmd-{uuid.uuid4().hex}"
    command = {
        "id": command_id,
        "channel_id": channel_id,
        "to": WA_USER,
        "content": {"kind": "text", "text": "hi"},
    }
    producer = kafka.create_producer(api.settings)
    await producer.start()
    try:
        await producer.send_and_wait(
            api.settings.topic("outbound.commands.v1"),
            orjson.dumps(command),
            key=f"{channel_id}:{WA_USER}".encode(),
            headers=[("traceparent", TRACEPARENT.encode())],
        )
    finally:
        await producer.stop()
    stop = asyncio.Event()
    consuming = asyncio.create_task(run_command_consumer(api.resources, stop))
    try:
        async with asyncio.timeout(30):
            while True:
                async with api.resources.sessionmaker() as session:
                    row = await session.scalar(
                        select(OutboxMessage).where(OutboxMessage.command_id == command_id)
                    )
                if row is not None:
                    break
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await consuming
    assert row.traceparent == TRACEPARENT  # tracing off: carried unchanged
    async with api.resources.sessionmaker() as session:
        staged = list(
            await session.scalars(
                select(OutboxEvent.traceparent).where(OutboxEvent.key == row.conversation_key)
            )
        )
    assert staged == [TRACEPARENT]
