"""Traces: OpenTelemetry set up from the standard ``OTEL_*`` variables, and W3C trace context.

Off unless configured (``configure``): tracing is on when ``OTEL_TRACES_EXPORTER`` names an
exporter (``otlp``, ``console``; ``none`` is off) or, without it, when an OTLP endpoint is set
(``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``); ``OTEL_SDK_DISABLED=
true`` wins over both. The SDK reads the rest itself (``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER[_ARG]``, ``OTEL_BSP_*``,
``OTEL_EXPORTER_OTLP_*``). The exporter is OTLP over HTTP/protobuf.

Off costs nothing on the hot paths: ``span`` returns a shared do-nothing context manager and no
span object is made. One thing still happens when off, because it is cheap and useful: a W3C
``traceparent`` a client sent (on a webhook, on ``POST /v1/messages``, on a Kafka command) is
*carried*, unchanged, to where the trace goes next (the Kafka records' ``traceparent`` header,
the stored message, the request to the platform, the lifecycle events), as W3C asks of a
participant that records nothing. On, the carried value is the current span's context, so the
next hop is a child of our span.

The trace context travels as the ``traceparent`` string (55 characters, version ``00``) and is
passed explicitly where work changes task or process (batches, Kafka, the outbox row); within a
task ``span`` makes it current and ``outgoing`` reads it back. ``tracestate`` is not carried.

This module is shared infrastructure: no service imports.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from typing import Any, TypeAlias

import structlog
from opentelemetry import trace
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    TraceFlags,
    Tracer,
)

from infra.logging import get_logger

__all__ = [
    "TRACEPARENT",
    "KafkaHeaders",
    "SpanKind",
    "configure",
    "consumer_attributes",
    "current_trace_id",
    "disable",
    "enabled",
    "from_kafka",
    "install",
    "kafka_headers",
    "link",
    "outgoing",
    "parse",
    "producer_attributes",
    "span",
    "trace_id",
]

log = get_logger(__name__)

TRACEPARENT = "traceparent"
INSTRUMENTATION = "switchboard"

KafkaHeaders: TypeAlias = Sequence[tuple[str, bytes]]

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16

_tracer: Tracer | None = None
_provider: Any = None
_carried: ContextVar[str | None] = ContextVar("switchboard_traceparent", default=None)
"""The client's trace context while tracing is off (``span`` with a parent sets it)."""


# ---- set-up ----------------------------------------------------------------------------------


def _exporters(environ: Mapping[str, str]) -> list[str]:
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    named = environ.get("OTEL_TRACES_EXPORTER")
    if named is not None:
        return [n for n in (p.strip().lower() for p in named.split(",")) if n and n != "none"]
    if environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    ):
        return ["otlp"]
    return []


def configure(service_name: str, environ: Mapping[str, str] | None = None) -> bool:
    """Turn tracing on if the environment asks for it (see the module docstring); return
    whether it is on. ``service_name`` is the default ``service.name`` (``OTEL_SERVICE_NAME``
    or ``OTEL_RESOURCE_ATTRIBUTES`` override it). Unknown exporter names are logged and
    skipped."""
    env = os.environ if environ is None else environ
    names = _exporters(env)
    if not names:
        return False
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SpanExporter,
    )

    attributes: dict[str, str] = {}
    if not env.get("OTEL_SERVICE_NAME") and "service.name=" not in env.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    ):
        attributes[SERVICE_NAME] = service_name
    provider = TracerProvider(resource=Resource.create(attributes))
    added = 0
    for name in names:
        exporter: SpanExporter
        if name == "otlp":
            protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get(
                "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
            )
            if protocol != "http/protobuf":
                log.warning("telemetry.protocol_unsupported", protocol=protocol, used="http")
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()
        elif name == "console":
            exporter = ConsoleSpanExporter()
        else:
            log.warning("telemetry.exporter_unknown", exporter=name)
            continue
        provider.add_span_processor(BatchSpanProcessor(exporter))
        added += 1
    if not added:
        return False
    install(provider)
    log.info("telemetry.traces_on", exporters=names)
    return True


def install(provider: Any) -> None:
    """Use ``provider`` (an SDK ``TracerProvider``) for Switchboard's spans: what ``configure``
    does, and what tests do with an in-memory exporter.

    Never OpenTelemetry's global provider: it can be set once per process (``disable`` could
    not undo it), and FastAPI's native telemetry turns itself on when it is set, opening a
    second SERVER span (plus operation spans) inside ``infra.requestid``'s; that span became
    the current one, so ``outgoing`` (the stored message's ``traceparent``) pointed at a span
    our provider never saw."""
    global _tracer, _provider
    _provider = provider
    _tracer = provider.get_tracer(INSTRUMENTATION)


def disable(*, shutdown: bool = False) -> None:
    """Back to off (tests); ``shutdown`` also flushes and stops the provider's exporters."""
    global _tracer, _provider
    provider, _tracer, _provider = _provider, None, None
    if shutdown and provider is not None:
        provider.shutdown()


def enabled() -> bool:
    return _tracer is not None


# ---- W3C trace context -----------------------------------------------------------------------


def parse(value: str | bytes | None) -> str | None:
    """A valid W3C ``traceparent`` as version ``00`` (55 characters), else None.

    Invalid: not lower-case hex fields, version ``ff``, an all-zero trace or span id, extra
    fields on version ``00``. A later version's extra fields are dropped (W3C: parse what is
    known)."""
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    if len(value) > 512:
        return None
    match = _TRACEPARENT.fullmatch(value.strip())
    if match is None:
        return None
    version, tid, sid, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest) or tid == _ZERO_TRACE or sid == _ZERO_SPAN:
        return None
    return f"00-{tid}-{sid}-{flags}"


def trace_id(traceparent: str | bytes | None) -> str | None:
    """The trace id (32 hex digits) of a valid ``traceparent``."""
    parsed = parse(traceparent)
    return parsed[3:35] if parsed is not None else None


def _format(context: SpanContext) -> str:
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def _span_context(traceparent: str) -> SpanContext | None:
    parsed = parse(traceparent)
    if parsed is None:
        return None
    return SpanContext(
        trace_id=int(parsed[3:35], 16),
        span_id=int(parsed[36:52], 16),
        is_remote=True,
        trace_flags=TraceFlags(int(parsed[53:55], 16)),
    )


def outgoing() -> str | None:
    """The ``traceparent`` to send on: the current span's when tracing is on, else the
    client's trace context carried by ``span`` (None when there is none)."""
    if _tracer is None:
        return _carried.get()
    context = trace.get_current_span().get_span_context()
    return _format(context) if context.is_valid else None


def current_trace_id() -> str | None:
    """The trace id to put in logs, if a trace is current."""
    tp = outgoing()
    return tp[3:35] if tp is not None else None


def link(traceparent: str | None) -> Link | None:
    """A span link to ``traceparent`` (for a batch that serves several traces)."""
    context = _span_context(traceparent) if traceparent else None
    return Link(context) if context is not None else None


# ---- spans -----------------------------------------------------------------------------------


class _Carry:
    """While off: make a client's trace context current (for ``outgoing``) and log its id."""

    __slots__ = ("_logs", "_token", "_traceparent")

    def __init__(self, traceparent: str) -> None:
        self._traceparent = traceparent

    def __enter__(self) -> None:
        self._token = _carried.set(self._traceparent)
        self._logs = structlog.contextvars.bind_contextvars(trace_id=self._traceparent[3:35])

    def __exit__(self, *exc: object) -> None:
        structlog.contextvars.reset_contextvars(**self._logs)
        _carried.reset(self._token)


_OFF: contextlib.nullcontext[None] = contextlib.nullcontext()


def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    parent: str | None = None,
    attributes: Mapping[str, Any] | None = None,
    links: Sequence[Link | None] = (),
) -> contextlib.AbstractContextManager[Span | None]:
    """A span around a block, current within it, its trace id bound in the log context.

    ``parent``: a ``traceparent`` to continue (a stored or received one); without it (or if
    it is invalid) the current span is the parent, or the span starts a trace. Off: nothing is
    recorded; a valid ``parent`` is carried for ``outgoing`` (and logged as ``trace_id``)."""
    tracer = _tracer
    if tracer is None:
        if parent is None:
            return _OFF
        valid = parse(parent)
        return _Carry(valid) if valid is not None else _OFF
    return _started(tracer, name, kind, parent, attributes, links)


@contextlib.contextmanager
def _started(
    tracer: Tracer,
    name: str,
    kind: SpanKind,
    parent: str | None,
    attributes: Mapping[str, Any] | None,
    links: Sequence[Link | None],
) -> Iterator[Span]:
    remote = _span_context(parent) if parent else None
    context = trace.set_span_in_context(NonRecordingSpan(remote)) if remote is not None else None
    with tracer.start_as_current_span(
        name,
        context=context,
        kind=kind,
        attributes=dict(attributes) if attributes else None,
        links=[lk for lk in links if lk is not None],
    ) as current:
        span_context = current.get_span_context()
        if span_context.is_valid:
            with structlog.contextvars.bound_contextvars(trace_id=f"{span_context.trace_id:032x}"):
                yield current
        else:  # pragma: no cover - the SDK always gives a valid context
            yield current


# ---- carriers --------------------------------------------------------------------------------


def kafka_headers(base: KafkaHeaders, traceparent: str | None) -> list[tuple[str, bytes]]:
    """``base`` plus a ``traceparent`` header when there is one (what OpenTelemetry's Kafka
    instrumentations read)."""
    if traceparent is None:
        return list(base)
    return [*base, (TRACEPARENT, traceparent.encode("ascii"))]


def from_kafka(headers: KafkaHeaders | None) -> str | None:
    """The valid ``traceparent`` of a record's headers, if any (the first one wins)."""
    for key, value in headers or ():
        if key == TRACEPARENT:
            return parse(value)
    return None


def producer_attributes(
    topic: str, *, partition: int | None = None, count: int | None = None
) -> dict[str, Any]:
    """OpenTelemetry messaging attributes of a Kafka ``send`` span."""
    attributes: dict[str, Any] = {
        "messaging.system": "kafka",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.destination.name": topic,
    }
    if partition is not None:
        attributes["messaging.destination.partition.id"] = str(partition)
    if count is not None and count != 1:
        attributes["messaging.batch.message_count"] = count
    return attributes


def consumer_attributes(record: Any, *, group: str | None = None) -> dict[str, Any]:
    """OpenTelemetry messaging attributes of a Kafka ``process`` span for one record
    (an ``aiokafka.ConsumerRecord``)."""
    attributes: dict[str, Any] = {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": record.topic,
        "messaging.destination.partition.id": str(record.partition),
        "messaging.kafka.offset": record.offset,
    }
    if group is not None:
        attributes["messaging.consumer.group.name"] = group
    return attributes
