"""Outbox delivery: sends per second per core, and pacing accuracy for one channel.

    .venv/bin/python bench/outbox.py [--messages 20000] [--seconds 10] [--uvloop]
                                     [--broker {tansu,kafka}] [--brokers {1,3}]

Real PostgreSQL (``SWITCHBOARD_BENCH_DATABASE_URL``, a server URL: a fresh database is created
on it and dropped after; otherwise an embedded server in a temporary directory), a broker
(``--broker tansu``: the embedded one, idempotence off; ``--broker kafka``: Apache Kafka with
``--brokers`` nodes, idempotence on, acks=all, replication factor and min ISR from the cluster;
see ``bench/_stack.py``), and the fake platform server in a separate process, so the CPU time
measured is the worker's alone (PostgreSQL, the broker and the fake server run in their own
processes).

(a) throughput: N queued WhatsApp messages to distinct recipients are inserted directly, then
    one ``DeliveryWorker`` (pacing off) and the lifecycle relay run until every row is sent.
    Prints wall time, sends/s, the worker process's CPU seconds and sends per CPU-second, and
    CPU seconds per 1,000 sends of each process: this one (worker and relay), PostgreSQL (the
    postmaster and its backends), the broker (each Kafka JVM too) and the fake platform server.
(b) pacing: one channel at 80 and at 1,000 msg/s (pacing on, defaults otherwise), ``seconds``
    worth of messages each; the fake server records arrival times. Prints the achieved rate
    (arrivals - 1 over first-to-last) and the most arrivals in any 1-second window.

Targets (issue 5): >= 1,000 sends/s per core; achieved rate within 2 % of the configured one
and never above it in any window.

Diagnostics: ``BENCH_DEBUG=1`` prints event-loop stalls of the worker and the fake server and
the first over-full window; ``BENCH_STALLS=1`` also dumps the worker's stack whenever its loop
stalls for more than 80 ms; ``--profile FILE`` writes a cProfile of the first throughput run.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named like the package it measures: keep its folder off the import path.
if str(Path(__file__).resolve().parent) in sys.path:
    sys.path.remove(str(Path(__file__).resolve().parent))
if str(Path(__file__).resolve().parent.parent) not in sys.path:  # for bench._stack
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import asyncio
import bisect
import contextlib
import gc
import itertools
import json
import os
import secrets
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from bench._procstats import CpuMeter, Probe, own, tree
from bench._stack import Broker, Database, add_broker_arguments, broker, database
from pydantic import SecretStr
from sqlalchemy import func, insert, select, text

from channels.models import Channel
from infra.crypto import generate_key
from infra.resources import Resources, open_resources
from infra.runner import freeze_startup_heap
from infra.settings import Settings
from outbox.events import run_relay
from outbox.models import OutboxMessage
from outbox.worker import DeliveryWorker


async def _lag_monitor(lags: list[float], tick: float = 0.005) -> None:
    """Event-loop stalls: how late a ``tick``-second sleep wakes up."""
    loop = asyncio.get_running_loop()
    watchdog = os.environ.get("BENCH_STALLS") is not None
    while True:
        if watchdog:
            import faulthandler

            faulthandler.cancel_dump_traceback_later()
            faulthandler.dump_traceback_later(0.08)
        start = loop.time()
        await asyncio.sleep(tick)
        lags.append(loop.time() - start - tick)


def _lag_summary(lags: list[float]) -> str:
    if not lags:
        return "no samples"
    over = sum(1 for lag in lags if lag > 0.02)
    return f"max {max(lags) * 1000:.0f} ms, {over} stalls > 20 ms"


# ---- the recording fake server (a child process) ------------------------------------------------


async def _serve_recording(out: Path) -> None:
    from fake_platforms.server import FakePlatformServer

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    lags: list[float] = []
    monitor = asyncio.create_task(_lag_monitor(lags))
    collections: list[tuple[int, float]] = []
    gc_start = [0.0]

    def _gc_timer(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_start[0] = time.perf_counter()
        else:
            collections.append((info["generation"], time.perf_counter() - gc_start[0]))

    gc.callbacks.append(_gc_timer)
    # The server is the instrument: a full collection of its growing record (70-100 ms) holds
    # requests in the socket and then stamps them all at once, which reads as a burst the
    # worker never sent. No cyclic GC here during a run (the record is a few MB).
    gc.disable()
    async with FakePlatformServer(record=True) as server:
        print(f"listening: {server.base_url}", flush=True)
        await stop.wait()
        monitor.cancel()
        if os.environ.get("BENCH_DEBUG"):
            print(f"  fake server loop: {_lag_summary(lags)}", file=sys.stderr, flush=True)
        out.write_text(json.dumps([r.arrived_at for r in server.requests]))  # noqa: ASYNC240


@contextlib.contextmanager
def fake_server(record_to: Path | None) -> Iterator[tuple[str, int]]:
    """The fake platforms in a child process; yields its base URL and pid."""
    if record_to is None:
        cmd = [sys.executable, "-m", "fake_platforms", "--port", "0"]
    else:
        cmd = [sys.executable, __file__, "--serve-recording", str(record_to)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.startswith("listening: "):
            raise RuntimeError(f"fake server did not start: {line!r}")
        yield line.removeprefix("listening: "), proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


# ---- the service ----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def bench_resources(settings: Settings) -> AsyncIterator[Resources]:
    async with open_resources(settings) as resources:
        yield resources


async def reset(res: Resources) -> None:
    async with res.engine.begin() as conn:
        await conn.execute(
            text(
                "TRUNCATE outbox_attempts, outbox_events, outbox_messages, "
                "outbox_channel_leases, channels CASCADE"
            )
        )


async def make_channel(res: Resources, base_url: str, rate: float | None) -> uuid.UUID:
    async with res.sessionmaker() as session, session.begin():
        channel = Channel(
            platform="whatsapp",
            name="bench",
            account_id=str(uuid.uuid4().int % 10**12),
            secrets=res.secret_box.encrypt_json(
                {"access_token": "EAAbench", "app_secret": "s", "verify_token": "v"}
            ),
            api_base_url=base_url,
            send_rate_per_second=rate,
        )
        session.add(channel)
        await session.flush()
        return channel.id


async def enqueue(res: Resources, channel_id: uuid.UUID, n: int) -> None:
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    for i in range(n):
        to = f"1{i:010d}"
        rows.append(
            {
                "command_id": f"bench-{uuid.uuid4().hex}",
                "request_hash": "0" * 64,
                "source": "api",
                "channel_id": channel_id,
                "platform": "whatsapp",
                "recipient": to,
                "conversation_key": f"{channel_id}:{to}",
                "content": {"kind": "text", "text": f"Your order #{i} has shipped."},
                "message_metadata": {"order": i},
                "state": "queued",
                "next_attempt_at": now,
                "not_after": now + timedelta(hours=1),
            }
        )
    async with res.sessionmaker() as session, session.begin():
        for start in range(0, n, 5000):
            await session.execute(insert(OutboxMessage), rows[start : start + 5000])
    async with res.engine.connect() as conn:
        await conn.execute(text("ANALYZE outbox_messages"))


async def deliver_all(
    res: Resources, n: int, *, relay: bool = True, meter: CpuMeter | None = None
) -> tuple[float, float, DeliveryWorker]:
    """Run the worker and the relay until ``n`` rows are sent: (wall s, CPU s, worker).

    ``meter`` (if any) runs over the same interval as the wall and CPU clocks."""
    stop, relay_stop = asyncio.Event(), asyncio.Event()
    worker = DeliveryWorker(res)
    if meter is not None:
        meter.start()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    lags: list[float] = []
    monitor = asyncio.create_task(_lag_monitor(lags))
    collections: list[tuple[int, float]] = []
    gc_start = [0.0]

    def _gc_timer(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_start[0] = time.perf_counter()
        else:
            collections.append((info["generation"], time.perf_counter() - gc_start[0]))

    freeze_startup_heap()  # as `switchboard outbox` does once started
    gc.callbacks.append(_gc_timer)
    task = asyncio.create_task(worker.run(stop))
    relaying = asyncio.create_task(run_relay(res, relay_stop)) if relay else None
    while worker.stats.sent + worker.stats.failed + worker.stats.dead < n:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    if meter is not None:
        meter.stop()
    stop.set()
    await task
    monitor.cancel()
    gc.callbacks.remove(_gc_timer)
    if os.environ.get("BENCH_DEBUG"):
        print(f"  worker loop: {_lag_summary(lags)}", flush=True)
        slow = [f"gen{g} {d * 1000:.0f} ms" for g, d in collections if d > 0.005]
        print(f"  gc: {len(collections)} collections, > 5 ms: {slow}", flush=True)
    relay_stop.set()
    if relaying is not None:
        await relaying
    async with res.sessionmaker() as session:
        sent = await session.scalar(
            select(func.count()).select_from(OutboxMessage).where(OutboxMessage.state == "sent")
        )
    if sent != n:
        raise RuntimeError(f"only {sent} of {n} rows are sent")
    return wall, cpu, worker


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def max_in_window(times: list[float], per: float = 1.0) -> int:
    ordered = sorted(times)
    return max(bisect.bisect_left(ordered, t + per) - i for i, t in enumerate(ordered))


async def throughput(
    settings: Settings,
    n: int,
    *,
    relay: bool,
    probes: list[Probe],
    profile: Path | None = None,
) -> None:
    settings = settings.model_copy(update={"outbox_pacing_enabled": False})
    with fake_server(None) as (base_url, fake_pid):
        meter = CpuMeter(
            [
                Probe("service (this process: worker + relay)", own()),
                *probes,
                Probe("fake platform (HTTP server)", tree([fake_pid])),
            ]
        )
        async with bench_resources(settings) as res:
            await reset(res)
            channel = await make_channel(res, base_url, None)
            await enqueue(res, channel, n)
            profiler = None
            if profile is not None:
                import cProfile

                profiler = cProfile.Profile()
                profiler.enable()
            wall, cpu, worker = await deliver_all(res, n, relay=relay, meter=meter)
            if profiler is not None and profile is not None:
                profiler.disable()
                profiler.dump_stats(profile)
    print(
        f"(a) throughput, pacing off, {'worker + relay' if relay else 'worker alone'}: "
        f"{n} sends in {wall:.2f} s wall = {n / wall:,.0f} sends/s; "
        f"worker CPU {cpu:.2f} s = {n / cpu:,.0f} sends per CPU-second "
        f"(in-flight cap {settings.outbox_max_in_flight}, {worker.stats.claim_queries} claim "
        f"queries, {worker.stats.write_batches} write batches)",
        flush=True,
    )
    print("\n".join(meter.report(n, "sends")), flush=True)


async def pacing(settings: Settings, rate: int, seconds: float) -> None:
    n = int(rate * seconds)
    with tempfile.TemporaryDirectory(prefix="sb-bench-") as tmp:
        record = Path(tmp) / "arrivals.json"
        with fake_server(record) as (base_url, _):
            async with bench_resources(settings) as res:
                await reset(res)
                channel = await make_channel(res, base_url, rate)
                await enqueue(res, channel, n)
                await deliver_all(res, n)
        arrivals = sorted(json.loads(record.read_text()))
    achieved = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
    worst = max_in_window(arrivals)
    if os.environ.get("BENCH_DEBUG"):
        t0 = arrivals[0]
        for i, t in enumerate(arrivals):
            k = bisect.bisect_left(arrivals, t + 1.0) - i
            if k > rate:
                print(f"  window at +{t - t0:.3f}s holds {k}", flush=True)
                break
        gaps = [b - a for a, b in itertools.pairwise(arrivals)]
        print(
            f"  gaps: min {min(gaps) * 1000:.2f} ms, max {max(gaps) * 1000:.2f} ms, first 5: "
            f"{[round(g * 1000, 1) for g in gaps[:5]]}",
            flush=True,
        )
        long_gaps = [(arrivals[i] - t0, g) for i, g in enumerate(gaps) if g > 10 / rate]
        print(
            f"  gaps > 10 intervals: {len(long_gaps)}, "
            f"{[(round(at, 3), round(g * 1000, 1)) for at, g in long_gaps[:8]]}",
            flush=True,
        )
        edges = [bisect.bisect_left(arrivals, t0 + s) for s in range(int(arrivals[-1] - t0) + 2)]
        print(f"  per second: {[b - a for a, b in itertools.pairwise(edges)]}", flush=True)
    verdict = "ok" if worst <= rate and abs(achieved - rate) <= 0.02 * rate else "MISSED"
    print(
        f"(b) pacing at {rate} msg/s: {len(arrivals)} sends, achieved {achieved:,.1f} msg/s "
        f"({(achieved / rate - 1) * 100:+.2f} %), max {worst} in any 1-s window "
        f"(limit {rate}) [{verdict}]",
        flush=True,
    )


async def main_async(args: argparse.Namespace, db: Database, kafka: Broker) -> None:
    settings = Settings(
        _env_file=None,
        database_url=SecretStr(db.url),
        database_pool_size=10,
        kafka_bootstrap_servers=kafka.bootstrap_servers,
        kafka_topic_prefix=f"bench{secrets.token_hex(3)}.",
        encryption_keys=SecretStr(generate_key()),
        log_level="WARNING",
        outbox_channel_renew_interval=0.5,
        outbox_max_in_flight=args.in_flight,
        allow_api_base_url_override=True,  # the channels send to the fake platform on loopback
    )
    settings = settings.model_copy(update=kafka.settings)
    print(f"broker: {kafka.label}; load average (1/5/15 min) at start: {loadavg()}", flush=True)
    probes = [*db.probes, *kafka.probes]
    if not args.skip_throughput:
        await throughput(settings, args.messages, relay=False, probes=probes, profile=args.profile)
        await throughput(settings, args.messages, relay=True, probes=probes)
        print(f"load average (1/5/15 min) after throughput: {loadavg()}", flush=True)
    for rate in args.rates:
        await pacing(settings, rate, args.seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=10.0, help="pacing run length")
    parser.add_argument("--rates", type=int, nargs="*", default=[80, 1000])
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--in-flight", type=int, default=256, help="outbox_max_in_flight")
    parser.add_argument("--uvloop", action="store_true", help="run the worker on uvloop")
    parser.add_argument("--profile", type=Path, help="cProfile the throughput run into this file")
    parser.add_argument("--serve-recording", type=Path, help=argparse.SUPPRESS)
    add_broker_arguments(parser)
    args = parser.parse_args()
    if args.serve_recording:
        asyncio.run(_serve_recording(args.serve_recording))
        return
    import logging

    logging.getLogger().setLevel(logging.WARNING)
    with database() as db, broker(args.broker, args.brokers) as kafka:
        idle = CpuMeter([Probe("this process", own()), *db.probes, *kafka.probes])
        print("\n".join(idle.idle(5.0, time.sleep)), flush=True)
        if args.uvloop:
            import uvloop

            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                runner.run(main_async(args, db, kafka))
        else:
            asyncio.run(main_async(args, db, kafka))


if __name__ == "__main__":
    main()
