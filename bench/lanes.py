"""Reply latency under a bulk backlog (issue 13 item 7: replies first).

Starts an embedded PostgreSQL and broker and the fake WhatsApp server, queues ``--bulk``
templates (bulk lane) on one channel paced at ``--rate``/s, runs the delivery worker with its
default settings, and once the campaign flows accepts ``--replies`` replies one after another
(each to a customer whose message opened the conversation: a window row, as the receipts
consumer writes it), each ``--gap`` seconds after the previous one was sent. A reply's latency
is from the commit of its acceptance to its arrival at the fake platform. Prints the latency
percentiles, and the bulk sends per second meanwhile (bulk keeps flowing: at most one grant in
ten goes to it while replies wait, all of them otherwise).

Usage: ``python bench/lanes.py [--bulk 2000] [--rate 20] [--replies 30] [--gap 0.3]``
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import SecretStr
from sqlalchemy import insert

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
# Named like a package it measures: keep this folder off the import path; bench._stack from
# the repository root.
if str(ROOT / "bench") in sys.path:
    sys.path.remove(str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from bench import _stack  # noqa: E402

from channels.models import Channel  # noqa: E402
from fake_platforms.server import FakePlatformServer  # noqa: E402
from infra.crypto import generate_key  # noqa: E402
from infra.resources import Resources, open_resources  # noqa: E402
from infra.settings import Settings  # noqa: E402
from outbox import service  # noqa: E402
from outbox.contracts import SendCommand  # noqa: E402
from outbox.models import ConversationWindow, OutboxMessage  # noqa: E402
from outbox.worker import DeliveryWorker  # noqa: E402


async def campaign(res: Resources, channel_id: uuid.UUID, n: int) -> None:
    now = datetime.now(UTC)
    template = {"kind": "template", "template": {"name": "promo", "language": "en"}}
    rows = [
        {
            "command_id": f"campaign-{i}",
            "request_hash": "0" * 64,
            "source": "kafka",
            "channel_id": channel_id,
            "platform": "whatsapp",
            "recipient": f"+1555{i:07d}",
            "conversation_key": f"{channel_id}:+1555{i:07d}",
            "content": template,
            "message_metadata": {},
            "state": "queued",
            "next_attempt_at": now,
            "not_after": now + timedelta(hours=2),
            "lane": "bulk",
        }
        for i in range(n)
    ]
    async with res.sessionmaker() as session, session.begin():
        await session.execute(insert(OutboxMessage), rows)


async def reply(res: Resources, channel_id: uuid.UUID, n: int) -> tuple[str, float]:
    customer = f"39333{n:07d}"
    async with res.sessionmaker() as session, session.begin():
        session.add(
            ConversationWindow(
                conversation_key=f"{channel_id}:{customer}", last_inbound_at=datetime.now(UTC)
            )
        )
        command = SendCommand.model_validate(
            {
                "id": f"reply-{n}",
                "channel_id": str(channel_id),
                "to": f"+{customer}",
                "content": {"kind": "text", "text": "Your order ships today"},
            }
        )
        accepted = await service.accept(session, res.settings, command, source="api")
        assert accepted.message.lane == "reply"
    return customer, time.monotonic()


def arrivals(fake: FakePlatformServer, customer: str) -> list[float]:
    return [r.arrived_at for r in fake.requests if (r.recipient or "").endswith(customer)]


async def measure(settings: Settings, bulk: int, rate: float, replies: int, gap: float) -> None:
    async with FakePlatformServer() as fake, open_resources(settings) as res:
        async with res.sessionmaker() as session, session.begin():
            channel = Channel(
                platform="whatsapp",
                name="bench",
                account_id="106540352242922",
                secrets=res.secret_box.encrypt_json({"access_token": "EAAbench"}),
                api_base_url=fake.base_url,
                send_rate_per_second=rate,
            )
            session.add(channel)
            await session.flush()
            channel_id = channel.id
        await campaign(res, channel_id, bulk)
        stop = asyncio.Event()
        worker = asyncio.create_task(DeliveryWorker(res, owner="bench").run(stop))
        while len(fake.requests) < rate:  # noqa: ASYNC110 - a second of the campaign first
            await asyncio.sleep(0.05)
        latencies: list[float] = []
        started, bulk_at_start = time.monotonic(), len(fake.requests)
        for n in range(replies):
            customer, accepted_at = await reply(res, channel_id, n)
            while not (hit := arrivals(fake, customer)):  # noqa: ASYNC110 - polling the fake
                await asyncio.sleep(0.002)
            latencies.append(hit[0] - accepted_at)
            await asyncio.sleep(gap)
        elapsed = time.monotonic() - started
        bulk_sent = len(fake.requests) - bulk_at_start - replies
        stop.set()
        await worker
    latencies.sort()
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    print(
        f"bulk backlog: {bulk} templates at {rate:g}/s (drains in {bulk / rate:.0f} s)\n"
        f"replies: {replies}, one every ~{gap:g} s after the previous was sent\n"
        f"reply latency (accepted -> at the platform): p50 {q[49] * 1000:.0f} ms, "
        f"p90 {q[89] * 1000:.0f} ms, p99 {q[98] * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms\n"
        f"bulk meanwhile: {bulk_sent} sends in {elapsed:.1f} s ({bulk_sent / elapsed:.1f}/s)"
    )


def main(bulk: int, rate: float, replies: int, gap: float) -> None:
    with _stack.database() as db, _stack.broker("tansu") as broker:
        settings = Settings(
            _env_file=None,
            database_url=SecretStr(db.url),
            kafka_bootstrap_servers=broker.bootstrap_servers,
            allow_api_base_url_override=True,  # the fake platform on 127.0.0.1
            encryption_keys=SecretStr(generate_key()),
        ).model_copy(update=broker.settings)
        asyncio.run(measure(settings, bulk, rate, replies, gap))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bulk", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--replies", type=int, default=30)
    parser.add_argument("--gap", type=float, default=0.3)
    args = parser.parse_args()
    main(args.bulk, args.rate, args.replies, args.gap)
