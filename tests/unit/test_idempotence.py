"""SequenceGuard: after a sequence gap an idempotent producer gets a new producer id."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError, OutOfOrderSequenceNumber, UnknownProducerId
from aiokafka.structs import TopicPartition

from infra.kafka import Producer

TP = TopicPartition("t", 0)


@pytest.fixture
async def gapped_producer() -> AsyncIterator[Callable[[], Producer]]:
    """Producers (never started) that believe they hold producer id 7 at sequence 3741."""
    made: list[Producer] = []

    def make() -> Producer:
        producer = Producer(
            stop_timeout=1.0, bootstrap_servers="127.0.0.1:1", enable_idempotence=True
        )
        producer._txn_manager.set_pid_and_epoch(7, 0)
        producer._txn_manager.increment_sequence_number(TP, 3741)
        made.append(producer)
        return producer

    yield make
    for producer in made:
        producer._closed = True  # never started: no connection to close


def failed(error: Exception) -> asyncio.Future[Any]:
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    future.set_exception(error)
    return future


async def settle() -> None:
    await asyncio.sleep(0)  # done callbacks run on the next loop step


async def test_an_out_of_order_sequence_makes_the_producer_fetch_a_new_id(
    gapped_producer: Callable[[], Producer],
) -> None:
    producer = gapped_producer()
    producer.sequence_guard.watch(failed(OutOfOrderSequenceNumber()))
    await settle()
    manager = producer._txn_manager
    assert not manager.has_pid(), "the sender asks for a new producer id before its next batch"
    assert manager.sequence_number(TP) == 0
    assert producer.sequence_guard.resets == 1


async def test_only_sends_since_the_last_reset_reset_again(
    gapped_producer: Callable[[], Producer],
) -> None:
    producer = gapped_producer()
    guard = producer.sequence_guard
    first, second = (asyncio.get_running_loop().create_future() for _ in range(2))
    guard.watch(first)
    guard.watch(second)
    first.set_exception(UnknownProducerId())
    await settle()
    assert guard.resets == 1
    producer._txn_manager.set_pid_and_epoch(8, 0)  # the sender's InitProducerId
    second.set_exception(OutOfOrderSequenceNumber())  # a batch that carried the old id
    await settle()
    assert guard.resets == 1
    assert producer._txn_manager.producer_id == 8


async def test_other_failures_and_successes_change_nothing(
    gapped_producer: Callable[[], Producer],
) -> None:
    producer = gapped_producer()
    guard = producer.sequence_guard
    ok: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    ok.set_result(None)
    for future in (failed(KafkaTimeoutError()), ok):
        guard.watch(future)
    await settle()
    assert guard.resets == 0
    assert producer._txn_manager.producer_id == 7
    assert producer._txn_manager.sequence_number(TP) == 3741
