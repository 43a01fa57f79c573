"""`switchboard dev`: the whole of Switchboard on one machine, from nothing, in one command.

Starts an embedded PostgreSQL (data kept under the data dir) and a broker, migrates, then
serves the API and runs the outbox worker in one process. The broker is the embedded Tansu
(in memory, no idempotent producer; the default: it needs no Java) or, with ``--broker kafka``,
a real Apache Kafka cluster of 1 or 3 nodes (data under the data dir) with production
settings: idempotent producer, acks=all, replicated topics.

Ctrl-C or SIGTERM stops all of it; the children also die with this process if it is killed.
If PostgreSQL or the broker dies underneath, the stack says so and exits non-zero. One
`switchboard dev` per data directory: a second one refuses to start (exit 1).
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import secrets
import sys
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from infra.crypto import generate_key
from infra.embedded import EmbeddedBroker, EmbeddedPostgres, EmbeddedPostgresRunning
from infra.entrypoint import run_async
from infra.kafka_cluster import KafkaCluster, KafkaUnavailable
from infra.logging import configure_logging, get_logger
from infra.settings import Settings
from switchboard import migrate

log = get_logger(__name__)

EXIT_ALREADY_RUNNING = 1
EXIT_CHILD_DIED = 3
WATCH_INTERVAL = 1.0


class ChildDied(RuntimeError):
    """PostgreSQL or the broker under `switchboard dev` exited on its own."""


@contextmanager
def _one_dev_per_data_dir(root: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``root/dev.pid`` for the life of this process.

    The kernel drops the lock when the process dies however it dies, so a stale file never
    blocks a new run; a live holder's pid is read back for the message.
    """
    path = root / "dev.pid"
    handle = open(path, "a+")  # noqa: SIM115 - held for the whole run
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            print(
                f"switchboard dev: already running on {root} (pid {holder}); "
                "stop it first or use another --data-dir",
                file=sys.stderr,
                flush=True,
            )
            raise SystemExit(EXIT_ALREADY_RUNNING) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        handle.close()


def _watch_children(
    checks: list[tuple[str, Callable[[], int | None]]],
) -> Callable[[asyncio.Event], Coroutine[Any, Any, None]]:
    """A worker that fails the run as soon as one of the embedded children has exited."""

    async def watch(stop: asyncio.Event) -> None:
        while not stop.is_set():
            for what, exit_code in checks:
                code = exit_code()
                if code is not None:
                    log.error("dev.child_died", child=what, exit_code=code)
                    raise ChildDied(f"{what} exited with code {code}")
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), WATCH_INTERVAL)

    return watch


def _persistent_secret(path: Path, make: str) -> str:
    """A secret created on first run and kept (mode 0600) so restarts keep working data."""
    if path.exists():
        return path.read_text().strip()
    path.write_text(make + "\n")
    path.chmod(0o600)
    return make


def _cluster_exit_code(cluster: KafkaCluster) -> Callable[[], int | None]:
    """Kafka as a whole has failed when no node runs any more (one node down is a failover)."""

    def code() -> int | None:
        codes = [n.proc.poll() if n.proc is not None else -1 for n in cluster.nodes]
        return None if any(c is None for c in codes) else next(c for c in codes if c is not None)

    return code


def run_dev(
    settings: Settings, data_dir: Path | None = None, broker: str = "tansu", brokers: int = 1
) -> None:
    root = (data_dir or settings.data_dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    with _one_dev_per_data_dir(root):
        try:
            _run_dev(settings, root, broker, brokers)
        except EmbeddedPostgresRunning as exc:
            print(f"switchboard dev: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(EXIT_ALREADY_RUNNING) from None
        except KafkaUnavailable as exc:
            print(f"switchboard dev: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(EXIT_CHILD_DIED) from None
        except ChildDied as exc:
            print(f"switchboard dev: {exc}; stopping", file=sys.stderr, flush=True)
            raise SystemExit(EXIT_CHILD_DIED) from None


def _run_dev(settings: Settings, root: Path, broker_kind: str, brokers: int) -> None:
    from conversations.app import component as conversations_component
    from conversations.app import run_worker as run_conversations
    from gateway.app import component as gateway_component
    from infra.resources import open_resources
    from infra.runner import HttpLimits, bind_socket, run, stop_on_signals
    from outbox.app import component as outbox_component
    from outbox.app import run_worker
    from switchboard.app import create_app

    configure_logging(settings)
    print(f"switchboard dev: data in {root}", flush=True)

    postgres = EmbeddedPostgres(root / "postgres")
    broker: EmbeddedBroker | KafkaCluster
    if broker_kind == "kafka":
        broker = KafkaCluster(root / f"kafka-{brokers}", brokers)
        kafka_settings: dict[str, object] = {
            "kafka_enable_idempotence": True,
            "kafka_transactions": True,
            "kafka_replication_factor": broker.replication_factor,
            "kafka_min_insync_replicas": broker.min_insync_replicas,
        }
        broker_exit_code = _cluster_exit_code(broker)
    else:
        broker = EmbeddedBroker(log_path=root / "broker.log")
        kafka_settings = {"kafka_enable_idempotence": False}
        broker_exit_code = broker.exit_code
    try:
        postgres.start()
        broker.start()
        if isinstance(broker, KafkaCluster):
            rss = ", ".join(f"{r / 2**20:.0f}" for r in broker.rss_bytes())
            print(
                f"switchboard dev: Apache Kafka {broker.version}, {broker.size} node(s) started "
                f"in {broker.started_in or 0:.1f} s; RSS MiB per node: {rss}",
                flush=True,
            )
        postgres.create_database("switchboard")
        admin_key = (
            settings.admin_api_key.get_secret_value()
            if settings.admin_api_key
            else _persistent_secret(root / "admin-api-key", "sb_admin_" + secrets.token_urlsafe(24))
        )
        enc_keys = (
            settings.encryption_keys.get_secret_value()
            if settings.encryption_keys
            else _persistent_secret(root / "encryption.key", generate_key())
        )
        sock = bind_socket(settings.http_host, settings.http_port)
        port = sock.getsockname()[1]
        settings = settings.model_copy(
            update={
                "database_url": SecretStr(postgres.url("switchboard")),
                "kafka_bootstrap_servers": broker.bootstrap_servers,
                **kafka_settings,
                "kafka_topic_partitions": min(settings.kafka_topic_partitions, 3),
                "admin_api_key": SecretStr(admin_key),
                "encryption_keys": SecretStr(enc_keys),
                "http_port": port,
                "data_dir": root,
                "allow_api_base_url_override": True,
            }
        )
        os.environ["SWITCHBOARD_DATABASE_URL"] = postgres.url("switchboard")
        migrate.upgrade(settings)
        base = f"http://{settings.http_host}:{port}"

        nodes = (
            "".join(f"kafka broker {n.node_id}: {n.address} pid {n.pid}\n" for n in broker.nodes)
            if isinstance(broker, KafkaCluster)
            else ""
        )

        def announce() -> None:
            print(
                f"api: {base}\n"
                f"kafka: {broker.bootstrap_servers}\n"
                f"{nodes}"
                f"docs: {base}/docs\n"
                f"admin api key: {admin_key}\n"
                f"postgres: {postgres.url('switchboard', driver='postgresql')}\n"
                "try it:\n"
                f"  curl -s -X POST {base}/v1/channels -H 'Authorization: Bearer {admin_key}' "
                '-H \'Content-Type: application/json\' -d \'{"platform": "telegram", '
                '"name": "My bot", "account_id": "123456", "credentials": {"bot_token": '
                '"123456:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "secret_token": "s3cr3t"}}\'\n'
                "Ctrl-C stops everything.",
                flush=True,
            )

        watch = _watch_children(
            [("the embedded PostgreSQL", postgres.exit_code), ("the broker", broker_exit_code)]
        )

        async def main() -> None:
            async with stop_on_signals() as stop, open_resources(settings) as resources:
                components = [
                    gateway_component(settings),
                    outbox_component(settings),
                    conversations_component(settings),
                ]
                app = create_app(settings, components, resources=resources)
                await run(
                    app=app,
                    sock=sock,
                    stop=stop,
                    workers=[
                        lambda s: run_worker(resources, s),
                        lambda s: run_conversations(resources, s),
                        watch,
                    ],
                    on_ready=announce,
                    log_level=settings.log_level,
                    limits=HttpLimits.from_settings(settings),
                )

        run_async(main())
    finally:
        broker.stop()
        postgres.stop()
        print("switchboard dev: stopped", flush=True)
