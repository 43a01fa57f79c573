"""Recording and fault injection shared by every fake platform's routes.

``Responder.answer`` records a send-like request, takes the first matching ``Fault`` and answers
with it (hang, delay, error envelope, echoed path) or with the platform's success body.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from aiohttp import web

from fake_platforms.faults import Fault, error_body
from fake_platforms.records import Platform, RecordedRequest

__all__ = ["Responder", "json_response", "loads"]


class Responder:
    def __init__(self, *, record: bool) -> None:
        self.record = record
        self.requests: list[RecordedRequest] = []
        self.faults: list[Fault] = []
        self.closing = asyncio.Event()
        self._ids = itertools.count(1)

    def next_id(self) -> int:
        """One counter across all platforms, for message ids, update ids and media ids."""
        return next(self._ids)

    def take_fault(self, platform: Platform, path: str, recipient: str | None) -> Fault | None:
        for fault in self.faults:
            if fault.matches(platform, path, recipient):
                if fault.times is not None:
                    fault.times -= 1
                return fault
        return None

    async def answer(
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
        fault = auth_error or self.take_fault(platform, request.path, recipient)
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
            return json_response(200, success)
        if fault.hang:
            await self.closing.wait()
            return json_response(503, {"error": "server closing"})
        if fault.delay:
            await asyncio.sleep(fault.delay)
        if fault.succeed:
            return json_response(200, success)
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
        return json_response(fault.status, error_body(platform, fault), headers)

    def record_get(self, request: web.Request, platform: Platform, status: int) -> None:
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


def loads(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def json_response(status: int, body: Any, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(body, separators=(",", ":")).encode(),
        content_type="application/json",
        headers=headers,
    )
