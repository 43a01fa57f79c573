"""What the benchmarks share: a fresh migrated database and a broker of either kind.

``database()`` creates a database on ``SWITCHBOARD_BENCH_DATABASE_URL`` (a server URL) or on an
embedded PostgreSQL in a temporary directory, migrates it and drops it afterwards.
``broker()`` starts the embedded Tansu broker (memory storage; it cannot run idempotent
producers, so idempotence is off) or an Apache Kafka cluster of 1 or 3 KRaft nodes
(``infra.kafka_cluster``) with the production producer settings: idempotence on, acks=all, and
the replication factor and min ISR the cluster can hold. Both yield the CPU probes of their
processes (``bench/_procstats.py``) so every bench reports the same groups.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench._procstats import Probe, tree
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from infra.embedded import EmbeddedBroker, EmbeddedPostgres
from infra.kafka_cluster import KafkaCluster
from infra.settings import Settings
from switchboard import migrate


@dataclass(frozen=True)
class Database:
    """A fresh, migrated database; ``probes`` is empty on a server we did not start."""

    url: str
    probes: list[Probe] = field(default_factory=list)


@contextlib.contextmanager
def database() -> Iterator[Database]:
    configured = os.environ.get("SWITCHBOARD_BENCH_DATABASE_URL")
    probes: list[Probe] = []
    with contextlib.ExitStack() as stack:
        if configured:
            server = make_url(configured).set(drivername="postgresql+asyncpg")
        else:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sb-bench-")))
            pg = stack.enter_context(EmbeddedPostgres(tmp / "pg"))  # __enter__ starts it
            server = make_url(pg.url("postgres"))
            assert pg.pid is not None
            probes.append(Probe("PostgreSQL (postmaster + backends)", tree([pg.pid])))
        name = f"switchboard_bench_{secrets.token_hex(3)}"
        admin = server.render_as_string(hide_password=False)
        asyncio.run(_admin(admin, f'CREATE DATABASE "{name}"'))
        url = server.set(database=name).render_as_string(hide_password=False)
        try:
            migrate.upgrade(Settings(database_url=SecretStr(url)))
            yield Database(url, probes)
        finally:
            asyncio.run(_admin(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _admin(url: str, statement: str) -> None:
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


def add_broker_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--broker",
        choices=["tansu", "kafka"],
        default="tansu",
        help="tansu: embedded, idempotence off; kafka: Apache Kafka, production producer settings",
    )
    parser.add_argument("--brokers", type=int, choices=[1, 3], default=1, help="Kafka nodes")


@dataclass(frozen=True)
class Broker:
    """A running broker: where it listens, the settings that go with it, its CPU probes."""

    label: str
    bootstrap_servers: str
    settings: dict[str, bool | int]
    probes: list[Probe]

    def env(self) -> dict[str, str]:
        """The settings as ``SWITCHBOARD_*`` variables, bootstrap servers included."""
        values = {"kafka_bootstrap_servers": self.bootstrap_servers, **self.settings}
        return {
            f"SWITCHBOARD_{name.upper()}": str(value).lower()
            if isinstance(value, bool)
            else str(value)
            for name, value in values.items()
        }


@contextlib.contextmanager
def broker(kind: str, nodes: int = 1) -> Iterator[Broker]:
    if kind == "tansu":
        with EmbeddedBroker() as tansu:
            assert tansu.pid is not None
            yield Broker(
                "Tansu (embedded, memory storage)",
                tansu.bootstrap_servers,
                {"kafka_enable_idempotence": False},
                [Probe("broker (Tansu)", tree([tansu.pid]))],
            )
        return
    if kind != "kafka":
        raise ValueError(f"unknown broker {kind!r}")
    with (
        tempfile.TemporaryDirectory(prefix="sb-bench-kafka-") as tmp,
        KafkaCluster(Path(tmp), nodes) as cluster,
    ):
        pids = [n.pid for n in cluster.nodes]
        if None in pids:
            raise RuntimeError("a Kafka node is not running")
        live = [p for p in pids if p is not None]
        name = f"broker (Kafka, {nodes} JVM{'s' if nodes > 1 else ''})"
        probes = [Probe(name, tree(live))]
        if nodes > 1:
            probes += [Probe(f"Kafka node {i}", tree([p]), name) for i, p in enumerate(live, 1)]
        yield Broker(
            f"Apache Kafka {cluster.version}, {nodes} node{'s' if nodes > 1 else ''}",
            cluster.bootstrap_servers,
            {
                "kafka_enable_idempotence": True,
                "kafka_replication_factor": cluster.replication_factor,
                "kafka_min_insync_replicas": cluster.min_insync_replicas,
            },
            probes,
        )
