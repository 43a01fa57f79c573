"""The HTTP application: the composition root that wires shared resources and service components.

Services (the gateway, the outbox API) plug in as ``Component``s: a router and a lifespan that
starts their own long-lived parts once the shared ones exist. This package never imports them;
the CLI passes them in.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from http import HTTPStatus
from typing import Any

import prometheus_client
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.telemetry import TelemetryConfig
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp

from apikeys.endpoints import router as api_keys_router
from channels.endpoints import router as channels_router
from infra import db, kafka
from infra.component import Component
from infra.errors import SwitchboardError
from infra.logging import get_logger
from infra.requestid import RequestIdMiddleware
from infra.resources import Resources, open_resources
from infra.settings import Settings

log = get_logger(__name__)

VERSION = "0.1.0"

_NO_NATIVE_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}
"""FastAPI's own OpenTelemetry instrumentation, off: the request spans come from
``infra.requestid`` (named by route template, continuing the client's ``traceparent``), so
with it on an OTEL-configured deployment would get two server spans per request, and every
request paid its check of three global providers (environment lookups: ~2 % of a webhook's
CPU, measured with py-spy on bench/ingress.py)."""


class _App(FastAPI):
    """FastAPI with the components' outermost ASGI middleware (``Component.asgi_middleware``)."""

    outer_middleware: Sequence[Callable[[ASGIApp], ASGIApp]] = ()

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        for middleware in reversed(self.outer_middleware):
            stack = middleware(stack)
        return stack


def _error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"error": {"code": code, "message": message}}
    if details is not None:
        body["error"]["details"] = details
    return body


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def _allowed_methods(request: Request) -> str:
    """Every method some route takes on this path: Starlette's 405 names only the methods of
    the first route that matched the path (``GET`` and ``POST /v1/channels`` are two routes).
    Asked through ``matches`` alone, which included routers answer too."""
    routes = request.app.router.routes
    return ", ".join(
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes
        )
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SwitchboardError)
    async def _switchboard_error(_: Request, exc: SwitchboardError) -> Response:
        return JSONResponse(
            _error_body(exc.code, exc.message, exc.details), status_code=exc.status_code
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        """The framework's own answers (unknown route 404, wrong method 405, …) in our shape."""
        code = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_").replace("-", "_")
        message = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        headers = exc.headers
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": _allowed_methods(request)}
        return JSONResponse(
            _error_body(code, message), status_code=exc.status_code, headers=headers
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> Response:
        """422 with locations and messages only: the input is never echoed (it may hold secrets)."""
        details = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        summary = "; ".join(
            f"{'.'.join(str(p) for p in d['loc'] if p != 'body') or 'body'}: {d['msg']}"
            for d in details
        )
        return JSONResponse(
            _error_body("validation_error", summary or "invalid request", details), status_code=422
        )


def create_app(
    settings: Settings,
    components: Sequence[Component] = (),
    resources: Resources | None = None,
) -> FastAPI:
    """Build the app. With ``resources`` given (tests), the caller owns their lifecycle."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            res = resources
            if res is None:
                res = await stack.enter_async_context(open_resources(settings))
            app.state.resources = res
            for component in components:
                if component.lifespan is not None:
                    await stack.enter_async_context(component.lifespan(res))
            log.info("app.started", components=[c.name for c in components])
            yield
        log.info("app.stopped")

    app = _App(
        title="Switchboard",
        version=VERSION,
        summary="Async webhook gateway for business messaging",
        description=(
            "Receives WhatsApp, Messenger, Instagram, Telegram and Twilio webhooks, publishes "
            "canonical events to Kafka, and delivers outbound messages durably within each "
            "platform's limits. Authenticate `/v1` calls with `Authorization: Bearer <api key>`."
        ),
        lifespan=lifespan,
        telemetry=_NO_NATIVE_TELEMETRY,
    )
    install_error_handlers(app)
    app.include_router(channels_router)
    app.include_router(api_keys_router)
    for component in components:
        for router in component.routers:
            app.include_router(router)
    app.outer_middleware = [m for component in components for m in component.asgi_middleware]

    add_health_routes(app)
    app.add_middleware(RequestIdMiddleware)
    return app


def add_health_routes(app: FastAPI) -> None:
    """``/healthz``, ``/readyz`` and ``/metrics``: the same answers from the API and from the
    worker's own listener (``create_ops_app``). ``app.state.resources`` must be set."""

    @app.get("/healthz", tags=["health"], response_class=PlainTextResponse)
    async def healthz() -> str:
        """The process is alive."""
        return "ok"

    @app.get("/readyz", tags=["health"])
    async def readyz(request: Request) -> JSONResponse:
        """PostgreSQL and the Kafka broker both answer right now."""
        res: Resources = request.app.state.resources
        checks: dict[str, str] = {}

        async def check(name: str, probe: Any) -> None:
            try:
                await asyncio.wait_for(probe, 3.0)
                checks[name] = "ok"
            except Exception as exc:
                checks[name] = f"unavailable: {type(exc).__name__}"

        await asyncio.gather(
            check("database", db.ping(res.engine)), check("kafka", kafka.ping(res.settings))
        )
        ready = all(v == "ok" for v in checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "not ready", "checks": checks},
            status_code=200 if ready else 503,
        )

    @app.get("/metrics", tags=["health"], response_class=PlainTextResponse)
    async def metrics() -> Response:
        """Prometheus metrics of this process."""
        return Response(
            prometheus_client.generate_latest(), media_type=prometheus_client.CONTENT_TYPE_LATEST
        )


def create_ops_app(resources: Resources) -> FastAPI:
    """The health and metrics listener of a process without the API (``switchboard outbox``):
    the caller owns ``resources``."""
    app = FastAPI(
        title="Switchboard worker",
        version=VERSION,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        telemetry=_NO_NATIVE_TELEMETRY,
    )
    app.state.resources = resources
    install_error_handlers(app)
    add_health_routes(app)
    return app
