"""The outbox's Kafka consumers: send commands in, platform receipts in.

Both poll with ``getmany`` (at most ``outbox_consumer_batch_size`` records in flight), handle
partitions concurrently and each partition's records in offset order (commands of one
conversation share a key, hence a partition, so their acceptance order is their send order),
and commit offsets manually only once each record's outcome is committed to PostgreSQL (or
dead-lettered). A crash before the offset commit redelivers the records: intake is idempotent
on the command id and receipts only move states forward, so a redelivery changes nothing.
On a database or broker failure a partition is rewound to its first unfinished record and the
loop backs off; if the consumer itself fails it is restarted (new consumer, same group).
``stop`` wins over every wait on the broker: a start (bootstrap, group join) still under way is
abandoned, and stopping a consumer is bounded (``_STOP_TIMEOUT``).

Commands (``<prefix>outbound.commands.v1``, group ``kafka_consumer_group``): the value is a
CloudEvents 1.0 structured event of type ``message.send`` whose ``data`` is the send command,
or a bare send command JSON object (no ``specversion``). The command id is ``data.id``.
Outcomes:

* stored as ``queued`` with a ``message.queued`` event;
* stored as ``failed`` with a ``message.failed`` event and ``last_error`` when the channel is
  disabled, the platform cannot express the content, the WhatsApp window is closed or
  ``not_after`` is already past;
* dead-lettered to ``<prefix>deadletter.v1`` (same key): ``not_json``, ``invalid_command``
  (not an object, wrong CloudEvents type, schema errors, or values PostgreSQL refuses to store
  with a data error, SQLSTATE class 22: retrying such a record never succeeds, so it is not
  retried), ``unknown_channel`` (a row needs an existing channel) and ``conflict`` (a known
  command id with a different body).

Dead-letter record: a CloudEvent of type ``switchboard.deadletter`` whose ``id`` is derived
from topic/partition/offset (a redelivered poison record gets the same id), ``subject`` the
original key, and ``data``::

    {"reason": "not_json" | "invalid_command" | "unknown_channel" | "conflict",
     "detail": "<human-readable, never the value itself>",
     "consumer": "outbox.commands",
     "original": {"topic", "partition", "offset", "timestamp" (RFC 3339), "key",
                  "value_encoding": "utf-8" | "base64" | null, "value": "<the original bytes>",
                  "value_truncated": bool, "value_size": <bytes> | null}}

The value is embedded up to ``DEADLETTER_VALUE_MAX`` bytes (256 KiB; ``value_truncated``). If
Kafka still refuses the dead letter as too large, it is published without the value, then also
without the key texts (``outbox.dead_letter_too_large``): a poison record never blocks its
partition.

Receipts (``<prefix>inbound.v1``, group ``outbox_receipts_consumer_group`` or
``<kafka_consumer_group>-receipts``): see ``outbox.receipts``. Records that are not canonical
events are logged and skipped (the gateway owns that topic; they are not ours to dead-letter),
and so are records whose values cannot be stored (each is applied in its own savepoint).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeAlias

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from normalizer.models import EVENT_ADAPTER, MessageEvent, StatusEvent
from outbox import intake, receipts
from outbox.contracts import SEND_COMMAND_TYPE, SendCommand
from outbox.errors import IdempotencyConflict, UnknownChannel
from outbox.events import UNPUBLISHABLE_ERRORS, run_relay
from switchboard.aio import abandon, first_of
from switchboard.kafka import CE_HEADERS, create_consumer
from switchboard.logging import get_logger
from switchboard.resources import Resources
from switchboard.settings import Settings

__all__ = [
    "DEADLETTER_TYPE",
    "DEADLETTER_VALUE_MAX",
    "DeadLetter",
    "data_error",
    "dead_letter_value",
    "handle_command",
    "parse_command",
    "receipts_group",
    "run_command_consumer",
    "run_intake",
    "run_receipts_consumer",
]

log = get_logger(__name__)

DEADLETTER_TYPE = "switchboard.deadletter"
_DEADLETTER_NAMESPACE = uuid.UUID("0d6f4a52-9c1e-4a8e-b1f7-3e5c2d7a9b41")
_POLL_MS = 500
DEADLETTER_VALUE_MAX = 256 * 1024
"""Bytes of the original value embedded in a dead-letter record (base64 adds a third): a
~1 MB poison record must not make a dead letter too large to publish."""
_DETAIL_MAX = 4096
_RESTART_BACKOFF = (0.5, 30.0)
_STOP_TIMEOUT = 5.0
"""Seconds a started consumer gets to stop (leave its group) once ``stop`` is set: a broker
that never answers must not keep the process up."""
_ABANDON_TIMEOUT = 0.5
"""Seconds a start abandoned for ``stop`` gets to unwind and close (it holds no partitions)."""

Record: TypeAlias = Any
"""``aiokafka.ConsumerRecord[bytes, bytes]`` (aiokafka ships no type information)."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    reason: str
    detail: str


# ---- commands ---------------------------------------------------------------------------------


def _validation_summary(exc: ValidationError) -> str:
    """Locations and messages only: the input (possibly personal data) is never echoed."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'command'}: "
        f"{e['msg'].removeprefix('Value error, ')}"
        for e in exc.errors()
    )


def parse_command(value: bytes | None) -> SendCommand | DeadLetter:
    if not value:
        return DeadLetter("invalid_command", "the record has no value")
    try:
        document = orjson.loads(value)
    except orjson.JSONDecodeError:
        return DeadLetter("not_json", "the value is not JSON")
    if not isinstance(document, dict):
        return DeadLetter("invalid_command", "the value is not a JSON object")
    if "specversion" in document:
        event_type = document.get("type")
        if event_type != SEND_COMMAND_TYPE:
            return DeadLetter(
                "invalid_command",
                f"CloudEvents type {event_type!r} is not {SEND_COMMAND_TYPE!r}",
            )
        document = document.get("data")
        if not isinstance(document, dict):
            return DeadLetter("invalid_command", "the CloudEvent has no JSON object in data")
    try:
        return SendCommand.model_validate(document)
    except ValidationError as exc:
        return DeadLetter("invalid_command", _validation_summary(exc))


def data_error(exc: BaseException) -> str | None:
    """The SQLSTATE when ``exc`` is a PostgreSQL data exception (class 22: a value too long for
    its column, a character the encoding cannot hold, …): the record's own values cannot be
    stored, so retrying it can never succeed. None for anything else (connection lost, lock
    timeout, …), which is worth retrying."""
    cause: BaseException | None = exc
    while cause is not None:
        state = getattr(cause.orig, "sqlstate", None) if isinstance(cause, DBAPIError) else None
        state = state or getattr(cause, "sqlstate", None)
        if isinstance(state, str):
            return state if state.startswith("22") else None
        cause = cause.__cause__
    return None


def _rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def dead_letter_value(
    record: Record,
    letter: DeadLetter,
    *,
    consumer: str,
    include_value: bool = True,
    include_key: bool = True,
) -> bytes:
    """The dead-letter CloudEvent of ``record``. The original value is embedded up to
    ``DEADLETTER_VALUE_MAX`` bytes (``value_truncated``, ``value_size`` tell), as text if the
    whole value is UTF-8, else base64; ``include_value``/``include_key`` False leave the value
    / the key texts out (for a record still too large to publish)."""
    raw: bytes | None = record.value
    encoding: str | None = None
    text: str | None = None
    truncated = False
    if raw is not None:
        kept = raw[:DEADLETTER_VALUE_MAX] if include_value else b""
        truncated = len(kept) < len(raw)
        try:
            raw.decode("utf-8")  # the whole value decides the encoding, not the kept prefix
        except UnicodeDecodeError:
            encoding = "base64"
            text = base64.b64encode(kept).decode("ascii") if include_value else None
        else:  # a cut may split the last character: only that one is dropped
            encoding = "utf-8"
            text = kept.decode("utf-8", errors="ignore") if include_value else None
        if not include_value:
            encoding = None
    key: bytes | None = record.key
    key_text = key.decode("utf-8", errors="replace") if key is not None and include_key else None
    where = f"{record.topic}:{record.partition}:{record.offset}"
    detail = letter.detail
    if len(detail) > _DETAIL_MAX:
        detail = detail[: _DETAIL_MAX - 1] + "…"
    envelope: dict[str, Any] = {
        "specversion": "1.0",
        "id": str(uuid.uuid5(_DEADLETTER_NAMESPACE, where)),
        "source": f"/switchboard/{consumer.replace('.', '/')}",
        "type": DEADLETTER_TYPE,
        "time": _rfc3339(datetime.now(UTC)),
        "subject": key_text,
        "datacontenttype": "application/json",
        "data": {
            "reason": letter.reason,
            "detail": detail,
            "consumer": consumer,
            "original": {
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "timestamp": _rfc3339(datetime.fromtimestamp(record.timestamp / 1000, UTC)),
                "key": key_text,
                "value_encoding": encoding,
                "value": text,
                "value_truncated": truncated,
                "value_size": len(raw) if raw is not None else None,
            },
        },
    }
    return orjson.dumps(envelope)


_DEADLETTER_SHAPES = (
    {"include_value": True, "include_key": True},
    {"include_value": False, "include_key": True},
    {"include_value": False, "include_key": False},
)
"""Tried in turn while Kafka refuses the record as too large: the (capped) value, then
without the value, then without the key texts (and without a record key)."""


async def _dead_letter(resources: Resources, record: Record, letter: DeadLetter) -> None:
    """Publish and wait for the broker's ack: the offset is committed only after it. A record
    Kafka refuses as too large is published again smaller (``_DEADLETTER_SHAPES``)."""
    settings = resources.settings
    for attempt, shape in enumerate(_DEADLETTER_SHAPES):
        value = dead_letter_value(record, letter, consumer="outbox.commands", **shape)
        try:
            future = await resources.producer.send(
                settings.topic("deadletter.v1"),
                value,
                key=record.key if shape["include_key"] else None,
                headers=CE_HEADERS,
            )
            await future
        except UNPUBLISHABLE_ERRORS:
            if attempt == len(_DEADLETTER_SHAPES) - 1:
                raise
            log.warning(
                "outbox.dead_letter_too_large",
                size=len(value),
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
            )
            continue
        break
    log.warning(
        "outbox.command_dead_lettered",
        reason=letter.reason,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
    )


async def handle_command(resources: Resources, record: Record) -> None:
    """Store one command record (or dead-letter it); raises only on infrastructure failures."""
    parsed = parse_command(record.value)
    if isinstance(parsed, SendCommand):
        try:
            async with resources.sessionmaker() as session, session.begin():
                accepted = await intake.accept(session, resources.settings, parsed, source="kafka")
        except IdempotencyConflict as exc:
            parsed_letter = DeadLetter("conflict", exc.message)
        except UnknownChannel as exc:
            parsed_letter = DeadLetter("unknown_channel", exc.message)
        except DBAPIError as exc:
            state = data_error(exc)
            if state is None:
                raise  # the database is away, a lock timed out…: the partition retries
            parsed_letter = DeadLetter(  # the SQLSTATE only: the message may quote the value
                "invalid_command", f"the command cannot be stored (PostgreSQL SQLSTATE {state})"
            )
        else:
            if not accepted.replayed:
                log.debug(
                    "outbox.command_stored",
                    message_id=str(accepted.message.id),
                    state=accepted.message.state,
                )
            return
    else:
        parsed_letter = parsed
    await _dead_letter(resources, record, parsed_letter)


# ---- the consumer loop ------------------------------------------------------------------------

PartitionHandler = Callable[[Resources, Sequence[Record]], Awaitable[int]]
"""Handles records of one partition in order; returns how many were fully handled (raising
after handling a prefix is expressed by returning its length: see ``_per_record``)."""


async def _commit(consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
    """The one place offsets are committed (a seam for the crash-before-commit test)."""
    await consumer.commit(offsets)


def _per_record(
    handle: Callable[[Resources, Record], Awaitable[None]],
) -> PartitionHandler:
    async def handle_partition(resources: Resources, records: Sequence[Record]) -> int:
        done = 0
        for record in records:
            try:
                await handle(resources, record)
            except Exception as exc:
                log.warning(
                    "outbox.record_failed",
                    error=type(exc).__name__,
                    topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                )
                return done
            done += 1
        return done

    return handle_partition


async def _consume(
    resources: Resources,
    consumer: AIOKafkaConsumer,
    stop: asyncio.Event,
    handle_partition: PartitionHandler,
) -> None:
    settings = resources.settings
    backoff = 0.2
    while not stop.is_set():
        batch = await consumer.getmany(
            timeout_ms=_POLL_MS, max_records=settings.outbox_consumer_batch_size
        )
        if not batch:
            continue
        partitions = list(batch.items())
        handled = await asyncio.gather(
            *(handle_partition(resources, records) for _, records in partitions)
        )
        offsets: dict[TopicPartition, int] = {}
        stalled = False
        for (tp, records), count in zip(partitions, handled, strict=True):
            if count:
                offsets[tp] = records[count - 1].offset + 1
            if count < len(records):
                consumer.seek(tp, records[count].offset)
                stalled = True
        if offsets:
            try:
                await _commit(consumer, offsets)
            except KafkaError as exc:  # e.g. a rebalance: the records come back, idempotently
                log.warning("outbox.commit_failed", error=type(exc).__name__)
        if stalled:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
            backoff = min(backoff * 2, 10.0)
        else:
            backoff = 0.2


async def _start(consumer: AIOKafkaConsumer, stop: asyncio.Event) -> bool:
    """Start ``consumer`` (bootstrap, topic metadata, group join) unless ``stop`` comes first.

    ``consumer.start()`` waits for the group join without any bound of its own (a join the
    coordinator never completes keeps it waiting forever), so it runs as a task raced against
    ``stop``: True once started, False if ``stop`` won (the start is cancelled; the caller still
    closes the consumer). A failed start raises, as before."""
    starting = asyncio.ensure_future(consumer.start())
    try:
        await first_of(starting, stop)
    except BaseException:
        abandon(starting)
        raise
    if not starting.done():
        starting.cancel()  # a cancelled start unwinds at once; bounded all the same
        await asyncio.wait({starting}, timeout=_ABANDON_TIMEOUT)
        if not starting.done():
            abandon(starting)
            return False
    if starting.cancelled():
        return False
    starting.result()  # a failed start raises here (the supervisor restarts it)
    return True


async def _close(consumer: AIOKafkaConsumer, name: str, grace: float) -> None:
    """Stop ``consumer`` within ``grace`` seconds. ``consumer.stop()`` first waits for the group
    coordinator's task, which may be stuck in a join the broker never answers; past the bound
    that wait is cancelled and the connections are closed directly."""
    try:
        async with asyncio.timeout(grace):
            await consumer.stop()
        return
    except TimeoutError:
        log.warning(f"outbox.{name}_consumer_stop_timed_out", timeout=grace)
    except Exception as exc:
        log.warning(f"outbox.{name}_consumer_stop_failed", error=repr(exc))
    # ``stop()`` was cut short before closing the client (aiokafka has no public way left):
    # close its connections so an abandoned consumer does not keep sockets open.
    client = getattr(consumer, "_client", None)
    if client is not None:
        with contextlib.suppress(Exception, TimeoutError):
            async with asyncio.timeout(grace):
                await client.close()


async def _supervise(
    name: str,
    resources: Resources,
    stop: asyncio.Event,
    make_consumer: Callable[[], AIOKafkaConsumer],
    handle_partition: PartitionHandler,
) -> None:
    """Run a consumer until ``stop``; if it fails, stop it (uncommitted records come back to
    whoever owns the partition next) and start a new one after a back-off."""
    backoff = _RESTART_BACKOFF[0]
    while not stop.is_set():
        consumer = make_consumer()
        started = False
        try:
            started = await _start(consumer, stop)
            if not started:
                log.info(f"outbox.{name}_consumer_start_abandoned")
                break
            log.info(f"outbox.{name}_consumer_started")
            await _consume(resources, consumer, stop, handle_partition)
            backoff = _RESTART_BACKOFF[0]
        except Exception as exc:
            log.error(f"outbox.{name}_consumer_failed", error=repr(exc))
        finally:  # a consumer that never joined has no partitions to hand over: no grace
            await _close(consumer, name, _STOP_TIMEOUT if started else _ABANDON_TIMEOUT)
        if not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
            backoff = min(backoff * 2, _RESTART_BACKOFF[1])


def _consumer_options(settings: Settings) -> dict[str, object]:
    session = settings.outbox_consumer_session_timeout_ms
    return {
        "max_poll_records": settings.outbox_consumer_batch_size,
        "session_timeout_ms": session,
        "heartbeat_interval_ms": max(session // 3, 300),
    }


async def run_command_consumer(resources: Resources, stop: asyncio.Event) -> None:
    """Consume ``outbound.commands.v1`` until ``stop`` is set (then finish the batch, commit)."""
    settings = resources.settings
    await _supervise(
        "commands",
        resources,
        stop,
        lambda: create_consumer(
            settings,
            settings.topic("outbound.commands.v1"),
            group_id=settings.kafka_consumer_group,
            **_consumer_options(settings),
        ),
        _per_record(handle_command),
    )


# ---- receipts ---------------------------------------------------------------------------------


def receipts_group(settings: Settings) -> str:
    return settings.outbox_receipts_consumer_group or f"{settings.kafka_consumer_group}-receipts"


def _record_fault(exc: BaseException) -> bool:
    """Whether ``exc`` is the record's own fault (it would fail the same way on every retry):
    a PostgreSQL data error, or a value our code cannot handle. Not the database being away,
    a lock timeout, …: those fail the batch, which is retried."""
    if data_error(exc) is not None:
        return True
    if isinstance(exc, SQLAlchemyError | OSError | TimeoutError):
        return False
    return isinstance(exc, ValueError | TypeError | LookupError | ArithmeticError)


async def _apply_status(
    session: AsyncSession, settings: Settings, record: Record, status: StatusEvent
) -> None:
    """One receipt in its own savepoint: if it cannot be stored, it alone is skipped."""
    try:
        async with session.begin_nested():
            await receipts.apply_status(session, settings, status)
    except Exception as exc:
        if not _record_fault(exc):
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
        if not _record_fault(exc):
            raise
    for key, when in sorted(latest.items()):
        try:
            async with session.begin_nested():
                await receipts.record_windows(session, {key: when})
        except Exception as exc:
            if not _record_fault(exc):
                raise
            log.warning("outbox.receipt_skipped", reason=type(exc).__name__, length=len(key))


async def handle_inbound(resources: Resources, records: Sequence[Record]) -> int:
    """One transaction per partition batch: statuses in order, then the windows. If a record
    cannot be stored (its own fault, see ``_record_fault``), the batch is applied again with
    each status (and the windows) in a savepoint, so that record alone is skipped and logged
    (``outbox.receipt_skipped``); savepoints cost two round trips each, so only then. A
    database failure fails the batch (it is retried)."""
    statuses: list[tuple[Record, StatusEvent]] = []
    received: list[MessageEvent] = []
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
    if not statuses and not received:
        return len(records)
    settings = resources.settings
    latest = receipts.window_updates(received)
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
        except Exception as exc:
            if not isolated and _record_fault(exc):
                continue
            log.warning("outbox.receipts_failed", error=type(exc).__name__, records=len(records))
            return 0
        return len(records)
    raise AssertionError("unreachable: the isolated pass returns")


async def run_receipts_consumer(resources: Resources, stop: asyncio.Event) -> None:
    """Consume ``inbound.v1`` for receipts and conversation windows until ``stop`` is set."""
    settings = resources.settings
    await _supervise(
        "receipts",
        resources,
        stop,
        lambda: create_consumer(
            settings,
            settings.topic("inbound.v1"),
            group_id=receipts_group(settings),
            **_consumer_options(settings),
        ),
        handle_inbound,
    )


async def run_intake(resources: Resources, stop: asyncio.Event) -> None:
    """Both consumers and the lifecycle relay (``outbox.events.run_relay``) until ``stop``:
    what the worker process runs besides delivery. Each restarts on its own failures."""
    results = await asyncio.gather(
        run_command_consumer(resources, stop),
        run_receipts_consumer(resources, stop),
        run_relay(resources, stop),
        return_exceptions=True,
    )
    for result in results:
        if isinstance(result, BaseException):
            log.error("outbox.intake_task_failed", error=repr(result))
