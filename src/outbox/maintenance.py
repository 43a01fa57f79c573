"""Maintenance rounds (every ``outbox_maintenance_interval``): expired message leases (a dead
worker's claims) back to ``retrying``; waiting rows past ``not_after`` to ``dead``; held early
receipts applied once their message's platform id is recorded (``outbox.receipts``);
suspensions whose channel got new credentials dropped with ``channel.resumed``
(``outbox.control``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import orjson
from sqlalchemy import insert

from infra.logging import get_logger
from infra.resources import Resources
from outbox import control, leases, receipts
from outbox.delivery import (
    EXPIRED,
    LEASE_EXPIRED,
    ClaimedMessage,
    Decision,
    expired_decision,
)
from outbox.models import OutboxAttempt, OutboxEvent
from outbox.outcomes import WorkerStats, event_row

__all__ = ["MAINTENANCE_BATCH", "Maintenance"]

log = get_logger(__name__)

MAINTENANCE_BATCH = 500


class Maintenance:
    """One round of each chore; the worker's lifecycle runs them periodically."""

    def __init__(
        self,
        resources: Resources,
        *,
        owner: str,
        stats: WorkerStats,
        on_recovered: Callable[[], None],
    ) -> None:
        self._resources = resources
        self._settings = resources.settings
        self._owner = owner
        self._stats = stats
        self._on_recovered = on_recovered
        self._events_topic = self._settings.topic("outbound.events.v1")

    async def settle_receipts(self) -> tuple[int, int]:
        """Apply receipts that arrived before their message's platform id was recorded (see
        ``outbox.receipts``); drop expired ones. Returns (applied, expired)."""
        async with self._resources.sessionmaker() as session, session.begin():
            return await receipts.settle_pending(session, self._settings, limit=MAINTENANCE_BATCH)

    async def maintain(self) -> tuple[int, int]:
        """Recover expired claims and sweep expired waiting rows; returns (recovered, swept)."""
        now = datetime.now(UTC)
        lease_error = orjson.dumps(LEASE_EXPIRED.model_dump(mode="json")).decode()
        expired_error = orjson.dumps(EXPIRED.model_dump(mode="json")).decode()
        topic = self._events_topic
        async with self._resources.sessionmaker() as session, session.begin():
            lost = await leases.recover_expired(session, lease_error, MAINTENANCE_BATCH)
            swept = await leases.sweep_expired(session, expired_error, MAINTENANCE_BATCH)
            events = []
            attempts = []
            for row in lost:
                message = ClaimedMessage.from_row(row)
                dead = row["state"] == "dead"
                decision = Decision(
                    row["state"],
                    "message.dead" if dead else "message.retrying",
                    error=LEASE_EXPIRED,
                )
                events.append(event_row(topic, message, decision, now))
                attempts.append(
                    {
                        "message_id": message.id,
                        "attempt": message.attempts,
                        "worker": self._owner,
                        "started_at": now,
                        "duration_ms": 0.0,
                        "outcome": "lost",
                        "error_code": LEASE_EXPIRED.code,
                        "error_title": LEASE_EXPIRED.title,
                    }
                )
            for row in swept:
                message = ClaimedMessage.from_row(row)
                events.append(event_row(topic, message, expired_decision(), now))
            if attempts:
                await session.execute(insert(OutboxAttempt), attempts)
            if events:
                await session.execute(insert(OutboxEvent), events)
            lifted = await control.lift_replaced(session, topic)
        if lifted:
            log.info("outbox.suspensions_lifted", count=lifted)
        if lost:
            log.warning("outbox.claims_recovered", count=len(lost))
            self._stats.recovered += len(lost)
            self._on_recovered()
        self._stats.swept += len(swept)
        return len(lost), len(swept)
