"""`switchboard` command line: the composition root of every process (docs/contracts.md §5)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import SecretStr

from infra.entrypoint import fail, load_settings, require_encryption_keys, run_async
from infra.settings import Settings

if TYPE_CHECKING:
    from infra.component import Component


def _components(settings: Settings) -> list[Component]:
    from conversations.app import component as conversations_component
    from gateway.app import component as gateway_component
    from outbox.app import component as outbox_component

    return [
        gateway_component(settings),
        outbox_component(settings),
        conversations_component(settings),
    ]


# ---- commands ---------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> None:
    from infra import telemetry
    from infra.logging import configure_logging
    from infra.runner import HttpLimits, bind_socket, run, stop_on_signals
    from switchboard.app import create_app

    settings = load_settings()
    require_encryption_keys(settings)
    configure_logging(settings)
    telemetry.configure("switchboard")
    sock = bind_socket(settings.http_host, settings.http_port)
    port = sock.getsockname()[1]
    settings = settings.model_copy(update={"http_port": port})
    app = create_app(settings, _components(settings))

    async def main() -> None:
        async with stop_on_signals() as stop:
            await run(
                app=app,
                sock=sock,
                stop=stop,
                on_ready=lambda: print(f"api: http://{settings.http_host}:{port}", flush=True),
                log_level=settings.log_level,
                limits=HttpLimits.from_settings(settings),
            )

    run_async(main())


def cmd_outbox(args: argparse.Namespace) -> None:
    """The delivery worker, with /healthz, /readyz and /metrics on ``outbox_http_port``."""
    from conversations.app import run_worker as run_conversations
    from infra import telemetry
    from infra.logging import configure_logging
    from infra.resources import open_resources
    from infra.runner import bind_socket, run, stop_on_signals
    from outbox.app import run_worker
    from switchboard.app import create_ops_app

    settings = load_settings()
    require_encryption_keys(settings)
    configure_logging(settings)
    telemetry.configure("switchboard-outbox")
    sock = bind_socket(settings.http_host, settings.outbox_http_port)
    port = sock.getsockname()[1]

    async def main() -> None:
        async with stop_on_signals() as stop, open_resources(settings) as resources:
            await run(
                app=create_ops_app(resources),
                sock=sock,
                stop=stop,
                workers=[
                    lambda s: run_worker(resources, s),
                    lambda s: run_conversations(resources, s),
                ],
                on_ready=lambda: print(f"outbox: http://{settings.http_host}:{port}", flush=True),
                log_level=settings.log_level,
            )

    run_async(main())


def cmd_migrate(args: argparse.Namespace) -> None:
    from switchboard import migrate

    settings = load_settings()
    if args.downgrade:
        migrate.downgrade(settings, args.downgrade)
    else:
        migrate.upgrade(settings, args.revision)
    print(f"database migrated to {args.downgrade or args.revision}")


def cmd_keygen(args: argparse.Namespace) -> None:
    from infra.crypto import generate_key

    print(generate_key())


def cmd_normalize(args: argparse.Namespace) -> None:
    import normalizer

    if args.platform not in normalizer.PLATFORMS:
        fail(f"unknown platform {args.platform!r}; one of: {', '.join(normalizer.PLATFORMS)}")
    try:
        body = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    except OSError as exc:
        fail(f"cannot read {args.file}: {exc.strerror}")
    try:
        events = normalizer.normalize(args.platform, body, channel_id=args.channel_id)
    except normalizer.NormalizeError as exc:
        fail(str(exc).splitlines()[0] if str(exc) else "malformed input")
    out = sys.stdout.buffer
    for event in events:
        out.write(normalizer.dump_event(event) + b"\n")
    out.flush()


def cmd_openapi(args: argparse.Namespace) -> None:
    from switchboard.openapi import render_all

    settings = Settings(encryption_keys=SecretStr("unused"))
    files = render_all(settings, _components(settings))
    root = Path(args.output)
    stale = []
    for name, content in files.items():
        path = root / name
        current = path.read_text() if path.exists() else None
        if current != content:
            stale.append(str(path))
            if not args.check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(content)
    if args.check and stale:
        fail(f"generated documents are out of date: {', '.join(stale)}; run `switchboard openapi`")
    print(json.dumps({"written" if not args.check else "checked": sorted(files)}))


def cmd_dev(args: argparse.Namespace) -> None:
    from infra import telemetry
    from switchboard.dev import run_dev

    if args.broker != "kafka" and args.brokers != 1:
        fail("--brokers needs --broker kafka (the embedded Tansu broker is a single node)")
    telemetry.configure("switchboard")
    run_dev(load_settings(), data_dir=args.data_dir, broker=args.broker, brokers=args.brokers)


def cmd_kafka(args: argparse.Namespace) -> None:
    from infra.kafka_cluster import KafkaCluster, KafkaUnavailable, fetch

    try:
        if args.action == "fetch":
            print(f"kafka jars: {fetch()}")
            return
        cluster = KafkaCluster(args.data_dir.resolve(), args.brokers)
        with cluster:
            rss = ", ".join(f"{r / 2**20:.0f}" for r in cluster.rss_bytes())
            for node in cluster.nodes:
                print(f"kafka broker {node.node_id}: {node.address} pid {node.pid}")
            print(f"kafka: {cluster.bootstrap_servers}")
            print(
                f"started in {cluster.started_in or 0:.1f} s; RSS MiB per node: {rss}; "
                "Ctrl-C stops it",
                flush=True,
            )
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
    except KafkaUnavailable as exc:
        fail(str(exc))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="switchboard",
        description="Async webhook gateway for business messaging. Settings: SWITCHBOARD_* env.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dev = sub.add_parser("dev", help="everything on embedded PostgreSQL and broker (try it out)")
    dev.add_argument("--data-dir", type=Path, default=None, help="default: ./.switchboard")
    dev.add_argument(
        "--broker",
        choices=["tansu", "kafka"],
        default="tansu",
        help="tansu: embedded, in memory (default); kafka: Apache Kafka (Java 17+, Maven)",
    )
    dev.add_argument("--brokers", type=int, choices=[1, 3], default=1, help="Kafka nodes")
    dev.set_defaults(func=cmd_dev)

    kafka = sub.add_parser("kafka", help="fetch Apache Kafka, or run a local cluster of it")
    kafka.add_argument("action", choices=["fetch", "start"])
    kafka.add_argument("--brokers", type=int, choices=[1, 3], default=1)
    kafka.add_argument("--data-dir", type=Path, default=Path(".switchboard/kafka-cluster"))
    kafka.set_defaults(func=cmd_kafka)

    sub.add_parser("serve", help="ingress + REST API (production)").set_defaults(func=cmd_serve)
    sub.add_parser("outbox", help="delivery worker (production)").set_defaults(func=cmd_outbox)

    mig = sub.add_parser("migrate", help="apply database migrations (Alembic upgrade heads)")
    mig.add_argument("--revision", default="heads")
    mig.add_argument("--downgrade", metavar="REVISION", default=None)
    mig.set_defaults(func=cmd_migrate)

    norm = sub.add_parser("normalize", help="print the canonical events of one webhook body")
    norm.add_argument("--platform", required=True)
    norm.add_argument("--channel-id", default="local")
    norm.add_argument("file", nargs="?", default="-", help="a file, or - for stdin (default)")
    norm.set_defaults(func=cmd_normalize)

    sub.add_parser("keygen", help="print a new encryption key").set_defaults(func=cmd_keygen)

    api = sub.add_parser("openapi", help="write the OpenAPI/AsyncAPI/JSON Schema documents")
    api.add_argument("--output", default="openapi")
    api.add_argument("--check", action="store_true", help="fail if the committed ones drifted")
    api.set_defaults(func=cmd_openapi)

    from gateway.cli import register as register_gateway

    register_gateway(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except KeyboardInterrupt:
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
