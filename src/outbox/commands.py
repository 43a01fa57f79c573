"""The send-command consumer: ``<prefix>outbound.commands.v1`` → outbox rows.

The value is a CloudEvents 1.0 structured event of type ``message.send`` whose ``data`` is the
send command, or a bare send command JSON object (no ``specversion``). The command id is
``data.id``. Records run through ``infra.consume.ConsumeLoop`` (group
``kafka_consumer_group``): commands of one conversation share a key, hence a partition, and a
partition's records are handled in offset order, so their acceptance order is their send order.
Each record is stored in its own transaction (or dead-lettered) before its offset is committed;
a redelivery is a replay (``outbox.service.accept`` is idempotent on the command id). With
``kafka_transactions`` on, dead letters and the batch's offsets are committed in one Kafka
transaction (``infra.consume.TransactionalOutput``): a crash between a dead letter and its
offset commit no longer publishes it twice. Outcomes:

* stored as ``queued`` with a ``message.queued`` event;
* stored as ``failed`` with a ``message.failed`` event and ``last_error`` when the channel is
  disabled, the platform cannot express the content, the WhatsApp window is closed or
  ``not_after`` is already past;
* dead-lettered (``outbox.deadletter``) to ``<prefix>deadletter.v1`` (same key): ``not_json``,
  ``invalid_command`` (not an object, wrong CloudEvents type, schema errors, or values
  PostgreSQL refuses to store with a data error, SQLSTATE class 22: retrying such a record
  never succeeds, so it is not retried), ``unknown_channel`` (a row needs an existing channel)
  and ``conflict`` (a known command id with a different body).

A database or broker failure rewinds the partition to the record and retries it with back-off.
"""

from __future__ import annotations

import asyncio
from functools import partial

import orjson
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError

from infra.consume import (
    BatchOutput,
    Commit,
    ConsumeLoop,
    PlainOutput,
    Record,
    TransactionalOutput,
    consumer_options,
    per_record,
)
from infra.dberrors import data_error
from infra.kafka import create_consumer, create_producer, transactional_id
from infra.logging import get_logger
from infra.resources import Resources
from outbox import service
from outbox.contracts import SEND_COMMAND_TYPE, SendCommand
from outbox.deadletter import DeadLetter, publish_dead_letter
from outbox.errors import IdempotencyConflict, UnknownChannelReference
from outbox.events import run_relay
from outbox.receipts_consumer import run_receipts_consumer
from outbox.templates import run_template_sync

__all__ = [
    "COMMANDS_CONSUMER",
    "command_output",
    "handle_command",
    "parse_command",
    "run_command_consumer",
    "run_intake",
]

log = get_logger(__name__)

COMMANDS_CONSUMER = "outbox.commands"
"""The consumer's name in logs and in dead letters (``data.consumer``)."""


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


async def handle_command(
    resources: Resources, record: Record, *, output: BatchOutput | None = None
) -> None:
    """Store one command record (or dead-letter it through ``output``'s producer, by default
    the shared one); raises only on infrastructure failures."""
    parsed = parse_command(record.value)
    if isinstance(parsed, SendCommand):
        try:
            async with resources.sessionmaker() as session, session.begin():
                accepted = await service.accept(session, resources.settings, parsed, source="kafka")
        except IdempotencyConflict as exc:
            letter = DeadLetter("conflict", exc.message)
        except UnknownChannelReference as exc:
            letter = DeadLetter("unknown_channel", exc.message)
        except DBAPIError as exc:
            state = data_error(exc)
            if state is None:
                raise  # the database is away, a lock timed out…: the partition retries
            letter = DeadLetter(  # the SQLSTATE only: the message may quote the value
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
        letter = parsed
    producer = await output.producer() if output is not None else resources.producer
    await publish_dead_letter(
        producer,
        resources.settings.topic("deadletter.v1"),
        record,
        letter,
        consumer=COMMANDS_CONSUMER,
    )
    log.warning(
        "outbox.command_dead_lettered",
        reason=letter.reason,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
    )


def command_output(resources: Resources) -> BatchOutput:
    """How the command consumer publishes dead letters and commits offsets: in one Kafka
    transaction when ``kafka_transactions`` is on, else through the shared producer."""
    settings = resources.settings
    if not settings.kafka_transactions:
        return PlainOutput(resources.producer)
    group = settings.kafka_consumer_group
    txn_id = transactional_id(settings, group)
    return TransactionalOutput(
        make_producer=lambda: create_producer(settings, transactional_id=txn_id),
        group_id=group,
        name=COMMANDS_CONSUMER,
        timeout=2 * settings.kafka_request_timeout_ms / 1000,
    )


async def run_command_consumer(
    resources: Resources,
    stop: asyncio.Event,
    *,
    output: BatchOutput | None = None,
    commit: Commit | None = None,
) -> None:
    """Consume ``outbound.commands.v1`` until ``stop`` is set (then finish the batch, commit).
    ``output`` (default ``command_output``) publishes dead letters and commits the offsets of
    stored (or dead-lettered) records; ``commit``, if given, commits instead of it."""
    settings = resources.settings
    output = output if output is not None else command_output(resources)
    try:
        await ConsumeLoop(
            name=COMMANDS_CONSUMER,
            make_consumer=lambda: create_consumer(
                settings,
                settings.topic("outbound.commands.v1"),
                group_id=settings.kafka_consumer_group,
                **consumer_options(
                    batch_size=settings.outbox_consumer_batch_size,
                    session_timeout_ms=settings.outbox_consumer_session_timeout_ms,
                ),
            ),
            handle=per_record(
                partial(handle_command, resources, output=output),
                group=settings.kafka_consumer_group,
            ),
            commit=commit if commit is not None else output.commit,
            batch_size=settings.outbox_consumer_batch_size,
        ).run(stop)
    finally:
        await output.close()


async def run_intake(resources: Resources, stop: asyncio.Event) -> None:
    """Both consumers and the lifecycle relay (``outbox.events.run_relay``) until ``stop``:
    what the HTTP process runs when ``outbox_api_runs_consumers`` is on. Each restarts on its
    own failures."""
    results = await asyncio.gather(
        run_command_consumer(resources, stop),
        run_receipts_consumer(resources, stop),
        run_relay(resources, stop),
        run_template_sync(resources, stop),
        return_exceptions=True,
    )
    for result in results:
        if isinstance(result, BaseException):
            log.error("outbox.intake_task_failed", error=repr(result))
