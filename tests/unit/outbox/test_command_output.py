"""Which batch output the command consumer gets: plain by default (brokers without
transactions), transactional with ``SWITCHBOARD_KAFKA_TRANSACTIONS``."""

from __future__ import annotations

from typing import Any, cast

import pytest

from infra import kafka
from infra.consume import PlainOutput, TransactionalOutput
from infra.resources import Resources
from infra.settings import Settings
from outbox.commands import command_output


def resources(settings: Settings, producer: object) -> Resources:
    nothing = cast(Any, None)
    return Resources(
        settings=settings,
        engine=nothing,
        sessionmaker=nothing,
        producer=cast(Any, producer),
        secret_box=nothing,
    )


async def test_transactions_are_off_by_default_and_dead_letters_use_the_shared_producer() -> None:
    shared = object()
    settings = Settings(_env_file=None)
    assert settings.kafka_transactions is False
    output = command_output(resources(settings, shared))
    assert isinstance(output, PlainOutput)
    assert await output.producer() is shared


def test_the_setting_turns_on_a_transactional_output(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHBOARD_KAFKA_TRANSACTIONS", "true")
    output = command_output(resources(Settings(_env_file=None), object()))
    assert isinstance(output, TransactionalOutput)


async def test_transactional_producers_are_idempotent_and_ids_differ_per_consumer() -> None:
    settings = Settings(_env_file=None, kafka_enable_idempotence=False)
    first = kafka.transactional_id(settings, "g")
    second = kafka.transactional_id(settings, "g")
    assert first != second
    assert first.startswith("switchboard.g.")
    transactional = kafka.create_producer(settings, transactional_id=first)
    plain = kafka.create_producer(settings)
    try:
        assert transactional._txn_manager is not None
        assert transactional._txn_manager.transactional_id == first
        assert plain._txn_manager is None
    finally:
        await transactional.stop()
        await plain.stop()
