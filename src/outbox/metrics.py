"""Prometheus metrics of the outbox (default registry, exposed on ``/metrics``).

Names are a contract (docs/contracts.md §7): dashboards and alerts under ``deploy/`` rely on
them, and ``tests/unit/test_deploy_assets.py`` checks that every name and label they use
exists here.

Counted where it happens (each process counts its own work; Prometheus sums replicas):

* ``switchboard_outbox_sends_total{platform,outcome}``: one per send attempt (``record_send``);
  ``outcome`` is ``sent``, ``retryable``, ``permanent``, ``throttled`` (the platform said slow
  down: a retryable attempt) or ``expired`` (``not_after`` passed before the attempt: no HTTP
  exchange, so no duration observed).
* ``switchboard_outbox_send_duration_seconds{platform}``: duration of each HTTP exchange.
* ``switchboard_outbox_finished_total{platform,state}``: messages that reached ``failed`` or
  ``dead`` (``record_finished``): the dead-letter rate.

Sampled from PostgreSQL by one replica at a time (``outbox.sampler``; the other replicas export
no value for them, so ``max``/``sum`` over instances is the truth):

* ``switchboard_outbox_messages{platform,state}``: rows per pending state (``queued``,
  ``sending``, ``retrying``): the queue depth. Finished rows are not counted (counting a
  month of them every few seconds is not cheap); their rates are the counters above.
* ``switchboard_outbox_oldest_queued_seconds{platform}``: age of the oldest queued or
  retrying message (0 when none).
* ``switchboard_outbox_channels{state}``: channels by sending state: ``active``, ``paused``,
  ``suspended`` (0 until channel control exists), ``disabled``.
* ``switchboard_outbox_relay_lag_seconds``: age of the oldest lifecycle event not yet
  published to Kafka (0 when none); ``switchboard_outbox_unpublished_events``: how many.
* ``switchboard_outbox_sampler_leader``: 1 on the replica that samples.

``platform`` values come from the rows (the known platform ids), so label sets stay bounded.
"""

from __future__ import annotations

import functools

from prometheus_client import Counter, Gauge, Histogram

SEND_OUTCOMES = ("sent", "retryable", "permanent", "throttled", "expired")
PENDING_STATES = ("queued", "sending", "retrying")
CHANNEL_STATES = ("active", "paused", "suspended", "disabled")
FINISHED_STATES = ("failed", "dead")
CIRCUIT_STATES = ("closed", "open", "half_open")

SENDS = Counter(
    "switchboard_outbox_sends",
    "Send attempts by platform and outcome",
    ["platform", "outcome"],
)
SEND_DURATION = Histogram(
    "switchboard_outbox_send_duration_seconds",
    "Duration of one send attempt (the HTTP exchange with the platform)",
    ["platform"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
FINISHED = Counter(
    "switchboard_outbox_finished",
    "Messages that reached a failed or dead state, by platform",
    ["platform", "state"],
)
MESSAGES = Gauge(
    "switchboard_outbox_messages",
    "Outbox messages per pending state (sampled)",
    ["platform", "state"],
)
OLDEST_QUEUED = Gauge(
    "switchboard_outbox_oldest_queued_seconds",
    "Age of the oldest queued or retrying message (sampled)",
    ["platform"],
)
CHANNELS = Gauge(
    "switchboard_outbox_channels",
    "Channels by sending state (sampled)",
    ["state"],
)
CIRCUITS = Gauge(
    "switchboard_outbox_circuit_state",
    "Enabled channels by circuit-breaker state, per platform (sampled; no channel-id label)",
    ["platform", "state"],
)
RELAY_LAG = Gauge(
    "switchboard_outbox_relay_lag_seconds",
    "Age of the oldest lifecycle event not yet published to Kafka (sampled)",
)
UNPUBLISHED = Gauge(
    "switchboard_outbox_unpublished_events",
    "Lifecycle events not yet published to Kafka (sampled)",
)
SAMPLER_LEADER = Gauge(
    "switchboard_outbox_sampler_leader",
    "1 on the replica that samples the outbox gauges, else 0",
)
RETENTION_DELETED = Counter(
    "switchboard_outbox_retention_deleted",
    "Rows deleted by the retention purge, by table",
    ["table"],
)

SAMPLED_GAUGES = (MESSAGES, OLDEST_QUEUED, CHANNELS, RELAY_LAG, UNPUBLISHED)


@functools.cache
def _sends(platform: str, outcome: str) -> Counter:
    return SENDS.labels(platform, outcome)


@functools.cache
def _duration(platform: str) -> Histogram:
    return SEND_DURATION.labels(platform)


def record_send(platform: str, outcome: str, seconds: float) -> None:
    """Count one send attempt and, unless it never reached the platform (``expired``), its
    duration. ``outcome``: one of ``SEND_OUTCOMES`` (``send_outcome`` maps a result)."""
    _sends(platform, outcome).inc()
    if outcome != "expired":
        _duration(platform).observe(seconds)


def send_outcome(outcome: str, *, throttled: bool = False) -> str:
    """The metric outcome of a ``SendResult``: ``throttled`` when the platform throttled the
    channel or the recipient, else its own outcome (``sent``/``retryable``/``permanent``)."""
    return "throttled" if throttled else outcome


def record_finished(platform: str, state: str) -> None:
    """Count a message that reached ``failed`` or ``dead`` (after its row is committed)."""
    FINISHED.labels(platform, state).inc()
