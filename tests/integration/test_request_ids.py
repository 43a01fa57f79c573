"""Correlated logs through the real API: the request id (given or made), the trace id and the
message and channel ids are on the log lines of a request, and the id is echoed."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.settings import Settings
from outbox.app import component
from tests.conftest import ADMIN_KEY
from tests.support import RunningApp, running_app

pytestmark = pytest.mark.integration

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture
async def api(settings: Settings, engine: AsyncEngine) -> AsyncIterator[RunningApp]:
    async with running_app(settings, [component(settings)]) as app:
        yield app


async def test_message_logs_carry_request_trace_message_and_channel_ids(api: RunningApp) -> None:
    channel = await api.client.post(
        "/v1/channels",
        json={
            "platform": "telegram",
            "name": "Bot",
            "account_id": "123456",
            "credentials": {
                "bot_token": "123456:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                "secret_token": "s",
            },
        },
        headers=api.auth(ADMIN_KEY),
    )
    assert channel.status_code == 201, channel.text
    channel_id = channel.json()["id"]
    with structlog.testing.capture_logs(
        processors=[structlog.contextvars.merge_contextvars]
    ) as logs:
        sent = await api.client.post(
            "/v1/messages",
            json={"channel_id": channel_id, "to": "42", "content": {"kind": "text", "text": "hi"}},
            headers={
                **api.auth(ADMIN_KEY),
                "X-Request-ID": "req-7",
                "traceparent": f"00-{TRACE}-00f067aa0ba902b7-01",
            },
        )
        status = await api.client.get(
            f"/v1/messages/{sent.json()['id']}", headers=api.auth(ADMIN_KEY)
        )
    assert sent.status_code == 202, sent.text
    assert sent.headers["x-request-id"] == "req-7"
    (accepted,) = [e for e in logs if e["event"] == "outbox.message_accepted"]
    assert accepted["request_id"] == "req-7"
    assert accepted["trace_id"] == TRACE
    assert accepted["message_id"] == sent.json()["id"]
    assert accepted["channel_id"] == channel_id
    assert len(status.headers["x-request-id"]) == 32, "made when none was given"
    assert status.headers["x-request-id"] != "req-7"
