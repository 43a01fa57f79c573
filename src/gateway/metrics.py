"""Prometheus metrics of the ingress (default registry, exposed on ``/metrics``).

* ``switchboard_gateway_webhooks_total{platform,outcome,reason}``: one per webhook request;
  ``outcome`` is ``accepted`` (something new became durable), ``duplicate`` (every event was
  seen before), ``empty`` (a valid webhook with no events) or ``rejected`` with ``reason``
  (``unauthorized``, ``malformed``, ``not_found``, ``too_large``, ``unsupported_media_type``,
  ``unavailable``; the GET handshake adds ``handshake_refused`` and ``no_handshake``).
* ``switchboard_gateway_events_total{platform,outcome}``: canonical events ``published``
  directly, ``duplicate``, ``spooled``, ``relayed`` from the spool, ``replayed``, and
  ``undeduplicated`` (published while PostgreSQL was unreachable).
* ``switchboard_gateway_request_duration_seconds{platform}``: webhook latency, all outcomes.
* ``switchboard_gateway_batch_size``: webhooks per group-commit batch (one transaction).
* ``switchboard_gateway_spool_depth``: canonical events in the spool waiting for the broker,
  counted by every replica's relay every ``gateway_spool_sample_interval_seconds`` (up to
  ``SPOOL_DEPTH_CAP``: past a million the exact figure no longer matters and costs a scan).

``platform`` is one of the known platform ids or ``unknown``, so hostile paths cannot create
unbounded label sets.
"""

from __future__ import annotations

import functools

from prometheus_client import Counter, Gauge, Histogram

WEBHOOKS = Counter(
    "switchboard_gateway_webhooks",
    "Webhook requests by platform and outcome",
    ["platform", "outcome", "reason"],
)
EVENTS = Counter(
    "switchboard_gateway_events",
    "Canonical inbound events by platform and outcome",
    ["platform", "outcome"],
)
LATENCY = Histogram(
    "switchboard_gateway_request_duration_seconds",
    "Webhook request latency, from routing to the response",
    ["platform"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)

BATCH_SIZE = Histogram(
    "switchboard_gateway_batch_size",
    "Webhooks per group-commit batch",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)

SPOOL_DEPTH = Gauge(
    "switchboard_gateway_spool_depth",
    "Canonical events in the spool waiting for the broker (sampled, capped at 1,000,000)",
)
SPOOL_DEPTH_CAP = 1_000_000


# ``.labels()`` validates and locks on every call; the hot path uses these cached children
# (bounded: platform is a known id or "unknown", outcome and reason come from fixed sets).


@functools.cache
def webhooks_counter(platform: str, outcome: str, reason: str = "") -> Counter:
    return WEBHOOKS.labels(platform, outcome, reason)


@functools.cache
def events_counter(platform: str, outcome: str) -> Counter:
    return EVENTS.labels(platform, outcome)


@functools.cache
def latency_histogram(platform: str) -> Histogram:
    return LATENCY.labels(platform)
