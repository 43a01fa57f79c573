"""Which requests the webhook fast path takes and which it leaves to the app (no I/O)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.fastpath import WebhookFastPath
from gateway.service import GatewayHolder


class Inner:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.calls.append(scope)


def scope(method: str = "POST", path: str = "/webhooks/whatsapp/abc", **extra: Any) -> Any:
    return {"type": "http", "method": method, "path": path, "headers": [], **extra}


async def nothing() -> Any:
    raise AssertionError("the fast path must not read a request it does not serve")


async def no_send(message: Any) -> None:
    raise AssertionError("the fast path must not answer a request it does not serve")


@pytest.mark.parametrize(
    "request_scope",
    [
        scope("GET"),
        scope("PUT"),
        scope(path="/webhooks/whatsapp"),
        scope(path="/webhooks/whatsapp/abc/extra"),
        scope(path="/webhooks//abc"),
        scope(path="/webhooks/whatsapp/"),
        scope(path="/v1/channels"),
        scope(root_path="/api", path="/api/webhooks/whatsapp/abc"),
        scope(),  # the right shape, but no gateway yet (lifespan not started)
        {"type": "lifespan"},
    ],
)
async def test_falls_through(request_scope: Any) -> None:
    inner = Inner()
    await WebhookFastPath(inner, GatewayHolder())(request_scope, nothing, no_send)
    assert inner.calls == [request_scope]
