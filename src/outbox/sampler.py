"""The outbox gauges, sampled from PostgreSQL every ``outbox_metrics_interval`` seconds by one
replica at a time (``infra.leader``: the others export no sampled value).

Each sample is three cheap statements (checked with EXPLAIN in
``tests/integration/outbox/test_operations.py``):

* pending messages per platform and state, with the oldest queued/retrying ``created_at``:
  an index-only scan of ``ix_outbox_messages_pending_platform`` (a partial index on the
  pending states, so its size is the backlog, not the history);
* channels by state (a small table, joined with the smaller ``outbox_channel_control``);
* the oldest unpublished lifecycle event and their count: ``ix_outbox_events_unpublished``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from infra.leader import AdvisoryLeader, run_as_leader
from infra.resources import Resources
from outbox import metrics

SAMPLER_LOCK = 0x5357_4D53  # "SWMS": one outbox metrics sampler across replicas

PENDING = text(
    """
    SELECT platform, state, count(*) AS n,
           extract(epoch FROM now() - min(created_at)) AS oldest
    FROM outbox_messages
    WHERE state IN ('queued', 'sending', 'retrying')
    GROUP BY platform, state
    """
)
CHANNELS = text(
    """
    SELECT CASE WHEN NOT c.enabled THEN 'disabled'
                WHEN k.sending = 'paused' THEN 'paused'
                WHEN k.secrets_digest = md5(c.secrets) THEN 'suspended'
                ELSE 'active' END AS state,
           count(*)
    FROM channels c LEFT JOIN outbox_channel_control k ON k.channel_id = c.id
    GROUP BY 1
    """
)
"""Channels by sending state (``outbox.control``): a disabled channel counts as disabled
whatever its sending state; a suspension whose credentials were replaced counts as active."""
CIRCUITS = text(
    """
    SELECT c.platform, COALESCE(k.circuit, 'closed'), count(*)
    FROM channels c LEFT JOIN outbox_channel_control k ON k.channel_id = c.id
    WHERE c.enabled
    GROUP BY 1, 2
    """
)
RELAY = text(
    """
    SELECT (SELECT extract(epoch FROM now() - created_at) FROM outbox_events
            WHERE published_at IS NULL ORDER BY id LIMIT 1) AS lag,
           (SELECT count(*) FROM outbox_events WHERE published_at IS NULL) AS unpublished
    """
)


@dataclass
class Sample:
    pending: dict[tuple[str, str], int] = field(default_factory=dict)
    oldest: dict[str, float] = field(default_factory=dict)
    channels: dict[str, int] = field(default_factory=dict)
    circuits: dict[tuple[str, str], int] = field(default_factory=dict)
    relay_lag: float = 0.0
    unpublished: int = 0


async def take_sample(conn: AsyncConnection) -> Sample:
    sample = Sample()
    for platform, state, count, oldest in (await conn.execute(PENDING)).all():
        sample.pending[(platform, state)] = int(count)
        if state != "sending":
            age = max(float(oldest or 0.0), 0.0)
            sample.oldest[platform] = max(sample.oldest.get(platform, 0.0), age)
    counts = {str(state): int(n) for state, n in (await conn.execute(CHANNELS)).all()}
    sample.channels = {state: counts.get(state, 0) for state in metrics.CHANNEL_STATES}
    for platform, circuit, n in (await conn.execute(CIRCUITS)).all():
        sample.circuits[(str(platform), str(circuit))] = int(n)
    lag, unpublished = (await conn.execute(RELAY)).one()
    sample.relay_lag = max(float(lag or 0.0), 0.0)
    sample.unpublished = int(unpublished)
    return sample


class Sampler:
    """Publishes samples to the gauges; platforms seen once keep a series (0 when empty)."""

    def __init__(self) -> None:
        self._platforms: set[str] = set()

    def publish(self, sample: Sample) -> None:
        self._platforms |= {platform for platform, _ in sample.pending}
        self._platforms |= {platform for platform, _ in sample.circuits}
        for platform in self._platforms:
            for state in metrics.PENDING_STATES:
                count = sample.pending.get((platform, state), 0)
                metrics.MESSAGES.labels(platform, state).set(count)
            metrics.OLDEST_QUEUED.labels(platform).set(sample.oldest.get(platform, 0.0))
            for circuit in metrics.CIRCUIT_STATES:
                count = sample.circuits.get((platform, circuit), 0)
                metrics.CIRCUITS.labels(platform, circuit).set(count)
        for state in metrics.CHANNEL_STATES:
            metrics.CHANNELS.labels(state).set(sample.channels.get(state, 0))
        metrics.RELAY_LAG.set(sample.relay_lag)
        metrics.UNPUBLISHED.set(sample.unpublished)
        metrics.SAMPLER_LEADER.set(1)

    def withdraw(self) -> None:
        """Not the sampling replica: export nothing that could be stale."""
        self._platforms.clear()
        for gauge in (metrics.MESSAGES, metrics.OLDEST_QUEUED, metrics.CHANNELS, metrics.CIRCUITS):
            gauge.clear()
        metrics.RELAY_LAG.set(0)
        metrics.UNPUBLISHED.set(0)
        metrics.SAMPLER_LEADER.set(0)

    async def sample(self, conn: AsyncConnection) -> None:
        self.publish(await take_sample(conn))


async def run_sampler(resources: Resources, stop: asyncio.Event) -> None:
    """Sample until ``stop``, whenever this replica holds the sampler lock."""
    sampler = Sampler()
    try:
        await run_as_leader(
            AdvisoryLeader(resources.engine, SAMPLER_LOCK, "outbox.sampler"),
            sampler.sample,
            interval=resources.settings.outbox_metrics_interval,
            stop=stop,
            on_follower=sampler.withdraw,
            round_timeout=max(resources.settings.outbox_metrics_interval * 2, 10.0),
        )
    finally:
        sampler.withdraw()
