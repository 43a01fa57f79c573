"""`switchboard dev`: the whole of Switchboard on one machine, from nothing, in one command.

Starts an embedded PostgreSQL (data kept under the data dir) and an embedded Kafka-protocol
broker (in memory), migrates, then serves the API and runs the outbox worker in one process.
Ctrl-C or SIGTERM stops all of it; the children also die with this process if it is killed.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from pydantic import SecretStr

from switchboard import migrate
from switchboard.crypto import generate_key
from switchboard.embedded import EmbeddedBroker, EmbeddedPostgres
from switchboard.entrypoint import run_async
from switchboard.logging import configure_logging, get_logger
from switchboard.settings import Settings

log = get_logger(__name__)


def _persistent_secret(path: Path, make: str) -> str:
    """A secret created on first run and kept (mode 0600) so restarts keep working data."""
    if path.exists():
        return path.read_text().strip()
    path.write_text(make + "\n")
    path.chmod(0o600)
    return make


def run_dev(settings: Settings, data_dir: Path | None = None) -> None:
    from conversations.app import component as conversations_component
    from conversations.app import run_worker as run_conversations
    from gateway.app import component as gateway_component
    from outbox.app import component as outbox_component
    from outbox.app import run_worker
    from switchboard.app import create_app, open_resources
    from switchboard.runner import HttpLimits, bind_socket, run, stop_on_signals

    configure_logging(settings)
    root = (data_dir or settings.data_dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    print(f"switchboard dev: data in {root}", flush=True)

    postgres = EmbeddedPostgres(root / "postgres")
    broker = EmbeddedBroker(log_path=root / "broker.log")
    try:
        postgres.start()
        broker.start()
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
                "kafka_enable_idempotence": False,
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

        def announce() -> None:
            print(
                f"api: {base}\n"
                f"kafka: {broker.bootstrap_servers}\n"
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
