"""``infra.telemetry``: configuration from OTEL_*, W3C parsing, carriers, and spans with
the messaging attributes when tracing is on; none when it is off."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pytest
import structlog
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from infra import telemetry
from infra.consume import Record, per_record
from tests.tracing import CLIENT_SPAN, TRACE, TRACEPARENT, recording_spans


@dataclass(frozen=True)
class Rec:
    topic: str
    partition: int
    offset: int
    value: bytes
    headers: Sequence[tuple[str, bytes]] = ()


@pytest.fixture(autouse=True)
def _off() -> None:
    telemetry.disable()


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "x"}, False),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, False),
    ],
)
def test_tracing_is_off_unless_the_environment_asks_for_it(
    environ: dict[str, str], on: bool
) -> None:
    try:
        assert telemetry.configure("switchboard-test", environ) is on
        assert telemetry.enabled() is on
        assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider), (
            "the process-global provider is left alone (FastAPI's own tracing follows it)"
        )
    finally:
        telemetry.disable(shutdown=True)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (TRACEPARENT, TRACEPARENT),
        (TRACEPARENT.encode(), TRACEPARENT),
        (f" {TRACEPARENT} ", TRACEPARENT),
        (f"01-{TRACE}-{CLIENT_SPAN}-01-future", TRACEPARENT),  # a later version: known part
        (f"00-{TRACE}-{CLIENT_SPAN}-01-extra", None),
        (f"ff-{TRACE}-{CLIENT_SPAN}-01", None),
        (f"00-{'0' * 32}-{CLIENT_SPAN}-01", None),
        (f"00-{TRACE}-{'0' * 16}-01", None),
        (f"00-{TRACE.upper()}-{CLIENT_SPAN}-01", None),
        (b"\xff\xfe", None),
        ("x" * 600, None),
        (None, None),
    ],
)
def test_only_a_valid_traceparent_is_taken(value: str | bytes | None, expected: str | None) -> None:
    assert telemetry.parse(value) == expected


def test_kafka_headers_round_trip() -> None:
    base = [("content-type", b"application/cloudevents+json")]
    headers = telemetry.kafka_headers(base, TRACEPARENT)
    assert headers == [*base, ("traceparent", TRACEPARENT.encode())]
    assert telemetry.from_kafka(headers) == TRACEPARENT
    assert telemetry.kafka_headers(base, None) == base
    assert telemetry.from_kafka([("traceparent", b"junk")]) is None
    assert telemetry.from_kafka(None) is None


def test_off_makes_no_span_but_carries_the_clients_context() -> None:
    assert telemetry.span("x") is telemetry.span("y"), "one shared no-op, nothing made"
    assert telemetry.outgoing() is None
    with telemetry.span("x", parent=TRACEPARENT) as span:
        assert span is None
        assert telemetry.outgoing() == TRACEPARENT
        assert telemetry.current_trace_id() == TRACE
        assert structlog.contextvars.get_contextvars()["trace_id"] == TRACE
    assert telemetry.outgoing() is None
    assert "trace_id" not in structlog.contextvars.get_contextvars()
    with telemetry.span("x", parent="garbage"):
        assert telemetry.outgoing() is None


async def _consume(records: Sequence[Rec]) -> list[str | None]:
    seen: list[str | None] = []

    async def handle(record: Record) -> None:
        seen.append(telemetry.outgoing())

    assert await per_record(handle, group="g")(records) == len(records)
    return seen


async def test_consume_spans_carry_the_messaging_attributes_when_on() -> None:
    records = [
        Rec("t.commands", 2, 7, b"{}", [("traceparent", TRACEPARENT.encode())]),
        Rec("t.commands", 2, 8, b"{}"),
    ]
    with recording_spans() as exporter:
        seen = await _consume(records)
        spans = exporter.get_finished_spans()
    assert len(spans) == 2
    first, second = spans
    assert first.name == "process t.commands"
    assert first.kind == SpanKind.CONSUMER
    assert first.attributes == {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": "t.commands",
        "messaging.destination.partition.id": "2",
        "messaging.kafka.offset": 7,
        "messaging.consumer.group.name": "g",
    }
    assert f"{first.context.trace_id:032x}" == TRACE, "the record's trace continues"
    assert first.parent is not None
    assert f"{first.parent.span_id:016x}" == CLIENT_SPAN
    assert second.parent is None, "a record without traceparent starts a trace"
    assert seen[0] == f"00-{TRACE}-{first.context.span_id:016x}-01"


async def test_no_span_when_off() -> None:
    records = [Rec("t.commands", 0, 1, b"{}", [("traceparent", TRACEPARENT.encode())])]
    with recording_spans() as exporter:
        telemetry.disable()
        seen = await _consume(records)
        assert exporter.get_finished_spans() == ()
    assert seen == [TRACEPARENT], "off: the record's context is carried unchanged"


async def test_producer_and_client_spans_when_on() -> None:
    with recording_spans() as exporter:
        with telemetry.span(
            "send t.events",
            kind=SpanKind.PRODUCER,
            parent=TRACEPARENT,
            attributes=telemetry.producer_attributes("t.events", partition=3, count=5),
        ):
            header = telemetry.outgoing()
        [span] = exporter.get_finished_spans()
    assert span.kind == SpanKind.PRODUCER
    assert span.attributes is not None
    assert span.attributes["messaging.system"] == "kafka"
    assert span.attributes["messaging.destination.name"] == "t.events"
    assert span.attributes["messaging.destination.partition.id"] == "3"
    assert span.attributes["messaging.batch.message_count"] == 5
    assert header == f"00-{TRACE}-{span.context.span_id:016x}-01"
