"""A signed webhook with a ``traceparent`` yields inbound records carrying its trace id: the
client's context unchanged with tracing off; with tracing on, the context of the webhook's
``webhook.commit`` span (same trace), linked from the batch's PRODUCER span."""

from __future__ import annotations

from opentelemetry.trace import SpanKind

import normalizer
from infra import telemetry
from tests.integration.gateway.conftest import (
    ACCOUNTS,
    Ingress,
    has,
    meta_headers,
    read_topic,
    whatsapp_payload,
)
from tests.tracing import CLIENT_SPAN, TRACE, TRACEPARENT, recording_spans


async def _post(ingress: Ingress, wamid: str, traceparent: str | None) -> list[str | None]:
    body = whatsapp_payload((wamid, "16505551234", "hi"))
    headers = meta_headers(body)
    if traceparent is not None:
        headers["traceparent"] = traceparent
    response = await ingress.client.post(ingress.path("whatsapp"), content=body, headers=headers)
    assert response.status_code == 200, response.text
    [event] = normalizer.normalize(
        "whatsapp", body, channel_id=ingress.channels["whatsapp"], account_id=ACCOUNTS["whatsapp"]
    )
    records = await read_topic(ingress.app.settings, has(event.id))
    return [
        telemetry.parse(r["headers"].get("traceparent"))
        for r in records
        if r["event"]["id"] == event.id
    ]


async def test_webhook_trace_reaches_the_inbound_records_with_tracing_off(
    ingress: Ingress,
) -> None:
    await ingress.create_channel("whatsapp")
    assert await _post(ingress, "wamid.T1", TRACEPARENT) == [TRACEPARENT]
    assert await _post(ingress, "wamid.T2", None) == [None], "no trace: no header"
    assert await _post(ingress, "wamid.T3", "00-not-a-trace") == [None], "invalid: dropped"


async def test_webhook_trace_reaches_the_inbound_records_with_tracing_on(
    ingress: Ingress,
) -> None:
    await ingress.create_channel("whatsapp")
    with recording_spans() as exporter:
        [carried] = await _post(ingress, "wamid.T4", TRACEPARENT)
        spans = exporter.get_finished_spans()
    assert telemetry.trace_id(carried) == TRACE
    assert carried is not None
    assert carried[36:52] != CLIENT_SPAN
    by_id = {f"{s.context.span_id:016x}": s for s in spans}
    commit = by_id[carried[36:52]]
    assert commit.name == "webhook.commit"
    server = by_id[f"{commit.parent.span_id:016x}"]  # type: ignore[union-attr]
    assert server.kind == SpanKind.SERVER
    assert f"{server.parent.span_id:016x}" == CLIENT_SPAN  # type: ignore[union-attr]
    names = {
        s.name for s in spans if s.parent is not None and s.parent.span_id == server.context.span_id
    }
    assert {"webhook.verify", "webhook.normalize", "webhook.commit"} <= names
    [send] = [s for s in spans if s.kind == SpanKind.PRODUCER]
    assert send.attributes["messaging.system"] == "kafka"  # type: ignore[index]
    assert send.attributes["messaging.destination.name"] == ingress.app.settings.topic("inbound.v1")  # type: ignore[index]
    assert [f"{link.context.span_id:016x}" for link in send.links] == [carried[36:52]]
