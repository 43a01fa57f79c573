"""The receipts consumer: ``<prefix>inbound.v1`` → message states and conversation windows.

Group ``outbox_receipts_consumer_group`` (or ``<kafka_consumer_group>-receipts``), run by
``infra.consume.ConsumeLoop``. The rules (receipts only move states forward, early
receipts are held, windows open on received messages) are in ``outbox.receipts``; this module
reads the canonical events and applies them, one transaction per partition batch, before the
batch's offsets are committed. Records that are not canonical events are logged and skipped
(the gateway owns that topic; they are not ours to dead-letter), and so are records whose values
cannot be stored (``outbox.receipt_skipped``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from functools import partial

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from infra.consume import (
    Commit,
    ConsumeLoop,
    Record,
    commit_offsets,
    consumer_options,
    process_span,
)
from infra.dberrors import record_fault
from infra.kafka import create_consumer
from infra.logging import get_logger
from infra.resources import Resources
from infra.settings import Settings
from normalizer.models import EVENT_ADAPTER, MessageEvent, StatusEvent, UnsupportedEvent
from outbox import receipts, templates

__all__ = ["RECEIPTS_CONSUMER", "handle_inbound", "receipts_group", "run_receipts_consumer"]

log = get_logger(__name__)

RECEIPTS_CONSUMER = "outbox.receipts"
"""The consumer's name in logs."""


def receipts_group(settings: Settings) -> str:
    return settings.outbox_receipts_consumer_group or f"{settings.kafka_consumer_group}-receipts"


async def _apply_status(
    session: AsyncSession, settings: Settings, record: Record, status: StatusEvent
) -> None:
    """One receipt in its own savepoint: if it cannot be stored, it alone is skipped."""
    try:
        async with session.begin_nested():
            await receipts.apply_status(session, settings, status)
    except Exception as exc:
        if not record_fault(exc):
            raise
        log.warning(
            "outbox.receipt_skipped",
            reason=type(exc).__name__,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
        )


async def _record_windows(session: AsyncSession, latest: dict[str, datetime]) -> None:
    """All windows in one upsert; if that fails on a value, each in its own savepoint so only
    the windows that cannot be stored are skipped."""
    try:
        async with session.begin_nested():
            await receipts.record_windows(session, latest)
        return
    except Exception as exc:
        if not record_fault(exc):
            raise
    for key, when in sorted(latest.items()):
        try:
            async with session.begin_nested():
                await receipts.record_windows(session, {key: when})
        except Exception as exc:
            if not record_fault(exc):
                raise
            log.warning("outbox.receipt_skipped", reason=type(exc).__name__, length=len(key))


async def handle_inbound(resources: Resources, records: Sequence[Record]) -> int:
    """One transaction per partition batch: statuses in order, then the windows. If a record
    cannot be stored (its own fault, see ``record_fault``), the batch is applied again with
    each status (and the windows) in a savepoint, so that record alone is skipped and logged
    (``outbox.receipt_skipped``); savepoints cost two round trips each, so only then. A
    database failure fails the batch (it is retried)."""
    statuses: list[tuple[Record, StatusEvent]] = []
    received: list[MessageEvent] = []
    template_updates: list[UnsupportedEvent] = []
    for record in records:
        if record.value is None:
            continue
        try:
            event = EVENT_ADAPTER.validate_json(record.value)
        except ValidationError:
            log.warning(
                "outbox.inbound_unreadable",
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
            )
            continue
        if isinstance(event, StatusEvent):
            statuses.append((record, event))
        elif isinstance(event, MessageEvent) and event.type == "message.received":
            received.append(event)
        elif isinstance(event, UnsupportedEvent) and templates.is_status_update(event):
            template_updates.append(event)
    if not statuses and not received and not template_updates:
        return len(records)
    settings = resources.settings
    latest = receipts.window_updates(received)
    with process_span(records, group=receipts_group(settings)):
        for isolated in (False, True):
            try:
                async with resources.sessionmaker() as session, session.begin():
                    for record, status in statuses:
                        if isolated:
                            await _apply_status(session, settings, record, status)
                        else:
                            await receipts.apply_status(session, settings, status)
                    if latest and isolated:
                        await _record_windows(session, latest)
                    elif latest:
                        await receipts.record_windows(session, latest)
                    await receipts.answer_callbacks(session, settings, received)
                    await templates.apply_status_updates(session, template_updates)
            except Exception as exc:
                if not isolated and record_fault(exc):
                    continue
                log.warning(
                    "outbox.receipts_failed", error=type(exc).__name__, records=len(records)
                )
                return 0
            return len(records)
    raise AssertionError("unreachable: the isolated pass returns")


async def run_receipts_consumer(
    resources: Resources, stop: asyncio.Event, *, commit: Commit = commit_offsets
) -> None:
    """Consume ``inbound.v1`` for receipts and conversation windows until ``stop`` is set.
    ``commit`` commits the offsets of applied batches."""
    settings = resources.settings
    await ConsumeLoop(
        name=RECEIPTS_CONSUMER,
        make_consumer=lambda: create_consumer(
            settings,
            settings.topic("inbound.v1"),
            group_id=receipts_group(settings),
            **consumer_options(
                batch_size=settings.outbox_consumer_batch_size,
                session_timeout_ms=settings.outbox_consumer_session_timeout_ms,
            ),
        ),
        handle=partial(handle_inbound, resources),
        commit=commit,
        batch_size=settings.outbox_consumer_batch_size,
    ).run(stop)
