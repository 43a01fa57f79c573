"""Request ids: taken from ``X-Request-ID`` when safe, else made; echoed; bound in the log
context for the request only, with the trace id of a valid ``traceparent``."""

from __future__ import annotations

import re

import httpx
import pytest
import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from infra.requestid import RequestIdMiddleware, request_id, trace_id

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        (b"abc-123", True),
        (b"req:1.2_x", True),
        (b"a" * 128, True),
        (b"a" * 129, False),
        (b"", False),
        (b"has space", False),
        (b"<script>", False),
        (b"caf\xc3\xa9", False),
        (b"x\r\nSet-Cookie: y", False),
        (None, False),
    ],
)
def test_request_id_keeps_only_safe_ids(given: bytes | None, kept: bool) -> None:
    rid = request_id(given)
    if kept:
        assert given is not None
        assert rid == given.decode()
    else:
        assert re.fullmatch(r"[0-9a-f]{32}", rid)


@pytest.mark.parametrize(
    ("traceparent", "expected"),
    [
        (f"00-{TRACE}-00f067aa0ba902b7-01".encode(), TRACE),
        (f"00-{'0' * 32}-00f067aa0ba902b7-01".encode(), None),
        (f"ff-{TRACE}-00f067aa0ba902b7-01".encode(), None),
        (f"00-{TRACE.upper()}-00f067aa0ba902b7-01".encode(), None),
        (b"garbage", None),
        (None, None),
    ],
)
def test_trace_id_of_a_valid_traceparent_only(
    traceparent: bytes | None, expected: str | None
) -> None:
    assert trace_id(traceparent) == expected


async def _context(request: Request) -> JSONResponse:
    return JSONResponse(structlog.contextvars.get_contextvars())


def _client() -> httpx.AsyncClient:
    app = RequestIdMiddleware(Starlette(routes=[Route("/ctx", _context)]))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def test_the_id_is_echoed_and_bound_for_the_request() -> None:
    async with _client() as client:
        given = await client.get(
            "/ctx",
            headers={
                "X-Request-ID": "abc-123",
                "traceparent": f"00-{TRACE}-00f067aa0ba902b7-01",
            },
        )
        made = await client.get("/ctx", headers={"X-Request-ID": "no good"})
    assert given.headers["x-request-id"] == "abc-123"
    assert given.json() == {"request_id": "abc-123", "trace_id": TRACE}
    assert made.headers["x-request-id"] != "no good"
    assert made.json() == {"request_id": made.headers["x-request-id"]}
    assert "no good" not in made.text
    assert structlog.contextvars.get_contextvars() == {}, "nothing left bound after a request"
