"""The channel pacer alone against the real monotonic clock.

For each configured rate, ``--tasks`` concurrent senders call ``Pacer.acquire`` on one channel
for ``--seconds``. Printed per rate: achieved rate ((n - 1) / span of the grants), its error
against the configured rate, and the most sends in any half-open 1-second sliding window, both
for the pacer's grant instants and for the instants the callers observed right after
``acquire`` returned (what an HTTP request would leave with).

Usage: ``python bench/pacing.py [--rates 80,1000] [--seconds 5] [--tasks 8] [--uvloop]``
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from outbox.ratelimit import Limit, Pacer, Rate


def max_in_window(times: list[float], per: float = 1.0) -> int:
    ordered = sorted(times)
    return max(bisect.bisect_left(ordered, t + per) - i for i, t in enumerate(ordered))


async def run(rate: int, seconds: float, tasks: int) -> tuple[list[float], list[float]]:
    pacer = Pacer(time.monotonic)
    limit = Limit(("channel", "bench"), Rate(rate))
    grants: list[float] = []
    observed: list[float] = []
    stop = time.monotonic() + seconds

    async def sender() -> None:
        while True:
            granted = await pacer.acquire(limit)
            seen = time.monotonic()
            if granted >= stop:
                return
            grants.append(granted)
            observed.append(seen)

    await asyncio.gather(*(sender() for _ in range(tasks)))
    return grants, observed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rates", default="80,1000")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args()
    loop_factory = None
    if args.uvloop:
        import uvloop

        loop_factory = uvloop.new_event_loop
    print(
        f"loop: {'uvloop' if args.uvloop else 'asyncio'}; {args.seconds:g} s per rate; "
        f"{args.tasks} concurrent senders on one channel"
    )
    print(
        f"{'rate':>6} {'sent':>6} {'achieved/s':>11} {'error':>7} "
        f"{'max 1s (grant)':>15} {'max 1s (observed)':>18}"
    )
    for rate in (int(r) for r in args.rates.split(",")):
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            grants, observed = runner.run(run(rate, args.seconds, args.tasks))
        achieved = (len(grants) - 1) / (grants[-1] - grants[0])
        print(
            f"{rate:>6} {len(grants):>6} {achieved:>11.2f} {(achieved / rate - 1) * 100:>6.2f}% "
            f"{max_in_window(grants):>15} {max_in_window(observed):>18}"
        )


if __name__ == "__main__":
    main()
