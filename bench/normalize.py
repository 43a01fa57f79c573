"""Normalizer throughput: single-message WhatsApp webhooks and a 50-message batch.

    .venv/bin/python bench/normalize.py [--seconds 1] [--repeat 5]

Prints webhooks/s, events/s and µs per webhook for ``normalize`` alone and for
``normalize`` + ``dump_event`` of every event (what the ingress does). One core, one thread.
Each figure is the best of ``--repeat`` timed runs (the usual timeit practice: slower runs
measure interference from other processes, not the code); the median is printed too.
Target (issue 3): ≥ 25,000 single-message webhooks per second per core.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime

from normalizer import dump_event, normalize

RECEIVED = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def _message(i: int) -> dict[str, object]:
    return {
        "context": {
            "from": "15550783881",
            "id": "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBI3MEM2RUJFNkI0RENGQTVDRjUA",
        },
        "from": "16505551234",
        "id": f"wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0{i:04d}RgA=",
        "timestamp": str(1749416383 + i),
        "type": "text",
        "text": {
            "body": "Hello! Does the blue model come in another colour, and could you tell me "
            "whether it can be delivered to Milan before Friday? I would also like to know "
            "if there is a discount for ordering two of them. Thanks a lot, Sheena"
        },
    }


def webhook(n_messages: int) -> bytes:
    doc = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "102290129340398",
                "changes": [
                    {
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {
                                "display_phone_number": "15550783881",
                                "phone_number_id": "106540352242922",
                            },
                            "contacts": [
                                {
                                    "profile": {"name": "Sheena Nelson"},
                                    "wa_id": "16505551234",
                                    "user_id": "US.13491208655302741918",
                                }
                            ],
                            "messages": [_message(i) for i in range(n_messages)],
                        },
                        "field": "messages",
                    }
                ],
            }
        ],
    }
    # Meta sends pretty-printed JSON; this keeps the typical single webhook at ~1.5 KB.
    return json.dumps(doc, indent=2).encode()


def measure(fn: Callable[[], int], seconds: float) -> tuple[float, float]:
    """(calls per second, events per second) of fn, which returns its event count."""
    calls = events = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(100):
            events += fn()
        calls += 100
        now = time.perf_counter()
        if now >= deadline:
            return calls / (now - start), events / (now - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="per timed run")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    for label, body in (("single", webhook(1)), ("batch50", webhook(50))):

        def norm(body: bytes = body) -> int:
            return len(normalize("whatsapp", body, channel_id="ch_1", received_at=RECEIVED))

        def norm_dump(body: bytes = body) -> int:
            evs = normalize("whatsapp", body, channel_id="ch_1", received_at=RECEIVED)
            for ev in evs:
                dump_event(ev)
            return len(evs)

        for what, fn in (("normalize", norm), ("normalize+dump", norm_dump)):
            for _ in range(500):
                fn()  # warm up
            runs = sorted(measure(fn, args.seconds) for _ in range(args.repeat))
            per_s, ev_s = runs[-1]
            median = runs[len(runs) // 2][0]
            print(
                f"{label:8} {len(body):6d} B  {what:15} {per_s:10,.0f} webhooks/s "
                f"{ev_s:11,.0f} events/s  {1e6 / per_s:7.1f} µs/webhook "
                f"(median {median:,.0f}/s)"
            )


if __name__ == "__main__":
    main()
