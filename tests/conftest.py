"""Test harness: a real PostgreSQL and a real Kafka-protocol broker for the whole run.

PostgreSQL: ``SWITCHBOARD_TEST_DATABASE_URL`` if set (a fresh database is created on that server
for the run and dropped after), otherwise an embedded server in a temporary directory.

The broker is chosen by ``SWITCHBOARD_TEST_BROKER``: ``tansu`` (default) is the embedded Tansu
binary on a free port (no idempotent producer); ``kafka`` is a real Apache Kafka cluster of
``SWITCHBOARD_TEST_KAFKA_BROKERS`` nodes (1 or 3, default 1) with idempotence on, topics
replicated min(3, nodes) times and min.insync.replicas 2 on three nodes, as in production.

Every test gets its own topic prefix and the tables are truncated after each test that used the
database, so tests never share state.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import threading
import typing
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from infra.crypto import generate_key
from infra.embedded import EmbeddedBroker, EmbeddedPostgres
from infra.kafka_cluster import KafkaCluster
from infra.settings import Settings
from switchboard import migrate

os.environ.setdefault("SWITCHBOARD_EMBEDDED_PG_FSYNC", "off")
ADMIN_KEY = "sb_admin_test_" + secrets.token_urlsafe(16)
ENCRYPTION_KEY = generate_key()
TEST_BROKER = os.environ.get("SWITCHBOARD_TEST_BROKER", "tansu")
KAFKA_NODES = int(os.environ.get("SWITCHBOARD_TEST_KAFKA_BROKERS", "1"))
if TEST_BROKER not in ("tansu", "kafka"):
    raise pytest.UsageError(f"SWITCHBOARD_TEST_BROKER must be tansu or kafka, not {TEST_BROKER!r}")

Broker = EmbeddedBroker | KafkaCluster


def make_broker(data_dir: Path) -> Broker:
    """The run's kind of broker, not started: ``start()``/``stop()`` restart it on its ports."""
    if TEST_BROKER == "kafka":
        return KafkaCluster(data_dir, KAFKA_NODES)
    return EmbeddedBroker()


def broker_settings(broker: Broker) -> dict[str, typing.Any]:
    """Producer and topic settings for ``broker``: production's where the broker allows them."""
    if isinstance(broker, KafkaCluster):
        return {
            "kafka_bootstrap_servers": broker.bootstrap_servers,
            "kafka_enable_idempotence": True,
            "kafka_transactions": True,
            "kafka_replication_factor": broker.replication_factor,
            "kafka_min_insync_replicas": broker.min_insync_replicas,
        }
    return {"kafka_bootstrap_servers": broker.bootstrap_servers, "kafka_enable_idempotence": False}


async def _admin_exec(server_url: str, statement: str) -> None:
    engine = create_async_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    configured = os.environ.get("SWITCHBOARD_TEST_DATABASE_URL")
    embedded: EmbeddedPostgres | None = None
    if configured:
        server_url = make_url(configured).set(drivername="postgresql+asyncpg")
    else:
        embedded = EmbeddedPostgres(Path(tmp_path_factory.mktemp("pg"))).start()
        server_url = make_url(embedded.url("postgres"))
    name = f"switchboard_test_{os.getpid()}_{secrets.token_hex(3)}"
    admin_url = server_url.render_as_string(hide_password=False)
    asyncio.run(_admin_exec(admin_url, f'CREATE DATABASE "{name}"'))
    url = server_url.set(database=name).render_as_string(hide_password=False)
    migrate.upgrade(Settings(database_url=SecretStr(url)))
    try:
        yield url
    finally:
        asyncio.run(_admin_exec(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        if embedded is not None:
            embedded.stop()


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    with make_broker(tmp_path_factory.mktemp("broker")) as running:
        yield running


@pytest.fixture
def broker_factory(tmp_path: Path) -> Iterator[Callable[[], Broker]]:
    """Started brokers of the run's kind that a test may stop and start (outage tests)."""
    made: list[Broker] = []

    def make() -> Broker:
        broker = make_broker(tmp_path / f"broker-{len(made)}")
        made.append(broker)
        return broker.start()

    yield make
    for broker in made:
        broker.stop()


@pytest.fixture
def kafka_cluster_factory(tmp_path: Path) -> Iterator[Callable[[int], KafkaCluster]]:
    """Started Apache Kafka clusters of N nodes, whatever the run's broker (failure tests)."""
    made: list[KafkaCluster] = []

    def make(nodes: int) -> KafkaCluster:
        cluster = KafkaCluster(tmp_path / f"kafka-{len(made)}", nodes)
        made.append(cluster)
        return cluster.start()

    yield make
    for cluster in made:
        cluster.stop()


@pytest.fixture
def settings(database_url: str, broker: Broker) -> Iterator[Settings]:
    made = Settings(
        _env_file=None,
        database_url=SecretStr(database_url),
        kafka_topic_prefix=f"t{uuid.uuid4().hex[:10]}.",
        kafka_topic_partitions=3,
        admin_api_key=SecretStr(ADMIN_KEY),
        encryption_keys=SecretStr(ENCRYPTION_KEY),
        http_port=0,
        allow_api_base_url_override=True,
        **broker_settings(broker),
    )
    yield made
    if isinstance(broker, KafkaCluster):
        _drop_topics(broker.bootstrap_servers, made.kafka_topic_prefix)


def _drop_topics(bootstrap: str, prefix: str) -> None:
    """Deletes a test's topics from the run's Kafka cluster. Hundreds of tests times five topics
    each would otherwise pile up thousands of partitions on one small-heap broker, which then
    slows down and times out the tests that come last. Runs on its own thread and loop: a sync
    fixture's teardown must not touch pytest-asyncio's loop."""

    async def drop() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15_000)
        await admin.start()
        try:
            mine = [t for t in await admin.list_topics() if t.startswith(prefix)]
            if mine:
                await admin.delete_topics(mine)
        finally:
            await admin.close()

    def run() -> None:
        with contextlib.suppress(Exception):  # e.g. a cluster a test stopped on purpose
            asyncio.run(asyncio.wait_for(drop(), 30))

    worker = threading.Thread(target=run, name="drop-topics")
    worker.start()
    worker.join(45)


async def _truncate_all(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        tables = (
            await conn.execute(
                text(
                    "SELECT string_agg(format('%I', tablename), ', ') FROM pg_tables "
                    "WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
                )
            )
        ).scalar_one()
        if tables:
            await conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    """An engine on the run's database; every table is emptied when the test ends."""
    eng = create_async_engine(settings.database_url.get_secret_value(), pool_size=5)
    try:
        yield eng
    finally:
        await _truncate_all(eng)
        await eng.dispose()


@pytest.fixture
def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


@pytest.fixture
def own_broker() -> Iterator[EmbeddedBroker]:
    """An embedded broker of the test's own, to stop and start again (the session's broker
    stays up for the other tests). It keeps topics in memory: started again, it has none."""
    with EmbeddedBroker() as broker:
        yield broker
