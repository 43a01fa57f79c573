"""What a service plugs into the HTTP app: its routers, its lifespan, its contracts' schemas."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

from starlette.types import ASGIApp

from infra.resources import Resources


@dataclass(frozen=True)
class Component:
    name: str
    routers: Sequence[Any] = ()
    lifespan: Callable[[Resources], AbstractAsyncContextManager[None]] | None = None
    schemas: dict[str, dict[str, Any]] = field(default_factory=dict)
    """JSON Schemas of the contracts this component owns, committed under ``openapi/schemas``."""
    asgi_middleware: Sequence[Callable[[ASGIApp], ASGIApp]] = ()
    """Pure ASGI middleware wrapped around the whole middleware stack (outermost, in front of
    ``ServerErrorMiddleware``; ``scope["app"]`` is set): e.g. a fast path serving one hot route
    itself. An exception escaping it reaches the server (uvicorn answers 500 and logs it)."""
