"""Inbound events recorded per second (and per CPU-second) by the conversation consumer.

Starts an embedded PostgreSQL and broker, creates a Telegram channel, produces ``--events``
canonical ``message.received`` events spread over ``--conversations`` conversations to
``inbound.v1``, then runs the conversation worker (consumer, timer, relay) until every event
is in the timeline. Prints wall time, events/s and events per CPU-second of this process (the
worker's own work; PostgreSQL and the broker are other processes).

Usage: ``python bench/conversations.py [--events 5000] [--conversations 500]``
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from pathlib import Path

import orjson
from pydantic import SecretStr
from sqlalchemy import func, select

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
# Named like a package it measures: keep this folder off the import path; bench._stack from
# the repository root.
if str(ROOT / "bench") in sys.path:
    sys.path.remove(str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from bench import _stack  # noqa: E402

from channels.models import Channel  # noqa: E402
from conversations.models import TimelineEntry  # noqa: E402
from conversations.worker import run_worker  # noqa: E402
from infra.crypto import generate_key  # noqa: E402
from infra.kafka import CE_HEADERS  # noqa: E402
from infra.resources import open_resources  # noqa: E402
from infra.settings import Settings  # noqa: E402


def event(channel_id: str, n: int, conversations: int) -> tuple[bytes, bytes]:
    chat = str(1000 + n % conversations)
    conv = f"telegram:123456:{chat}"
    value = {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": f"/switchboard/telegram/{channel_id}",
        "type": "message.received",
        "time": "2026-12-03T10:00:00Z",
        "subject": conv,
        "datacontenttype": "application/json",
        "data": {
            "platform": "telegram",
            "channel_id": channel_id,
            "account_id": "123456",
            "conversation_id": conv,
            "contact": {"id": chat, "name": "Bench", "phone": None, "username": None},
            "message": {"id": f"m{n}", "kind": "text", "text": f"message {n}"},
        },
    }
    return conv.encode(), orjson.dumps(value)


async def measure(settings: Settings, events: int, conversations: int) -> None:
    async with open_resources(settings) as res:
        async with res.sessionmaker() as session, session.begin():
            channel = Channel(
                platform="telegram",
                name="bench",
                account_id="123456",
                secrets=res.secret_box.encrypt_json({"bot_token": "x"}),
            )
            session.add(channel)
            await session.flush()
            channel_id = str(channel.id)
        topic = settings.topic("inbound.v1")
        for n in range(events):
            key, value = event(channel_id, n, conversations)
            await res.producer.send(topic, value, key=key, headers=CE_HEADERS)
        await res.producer.flush()
        stop = asyncio.Event()
        wall, cpu = time.perf_counter(), time.process_time()
        worker = asyncio.create_task(run_worker(res, stop))
        while True:
            async with res.sessionmaker() as session:
                done = await session.scalar(select(func.count()).select_from(TimelineEntry))
            if (done or 0) >= events:
                break
            await asyncio.sleep(0.05)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        stop.set()
        await worker
    print(
        f"events: {events} over {conversations} conversations\n"
        f"wall: {wall:.2f} s ({events / wall:,.0f} events/s, includes the group join)\n"
        f"cpu: {cpu:.2f} s ({events / cpu:,.0f} events per CPU-second)"
    )


def main(events: int, conversations: int) -> None:
    with _stack.database() as db, _stack.broker("tansu") as broker:
        settings = Settings(
            _env_file=None,
            database_url=SecretStr(db.url),
            kafka_bootstrap_servers=broker.bootstrap_servers,
            kafka_topic_partitions=3,
            encryption_keys=SecretStr(generate_key()),
        ).model_copy(update=broker.settings)
        asyncio.run(measure(settings, events, conversations))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--conversations", type=int, default=500)
    args = parser.parse_args()
    main(args.events, args.conversations)
