"""Replay: re-run archived raw webhooks through the normalizer and publish their events.

Used by ``switchboard replay`` and ``POST /v1/admin/replay``. Archived webhooks were verified
when received, so they are not verified again (the Meta/Twilio signature headers are kept in
the archive for anyone who wants to). The receipt time stored with each webhook is passed to
the normalizer, so a replay yields exactly the events of the original intake, with the same
deterministic ids: consumers drop what they already have. Replay publishes directly (no
dedup, no spool) and fails loudly if the broker does not acknowledge.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import normalizer
from gateway import repository as repo
from gateway.metrics import EVENTS
from gateway.service import Gateway
from infra.errors import ServiceUnavailable
from infra.logging import get_logger

log = get_logger(__name__)

_PAGE = 200


@dataclass(frozen=True, slots=True)
class ReplayResult:
    webhooks: int
    events: int
    failed: int


async def replay(
    gateway: Gateway,
    *,
    channel_id: uuid.UUID | None = None,
    platform: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 10_000,
) -> ReplayResult:
    webhooks = events = failed = 0
    after = 0
    while webhooks + failed < limit:
        async with gateway.pool.acquire(timeout=gateway.settings.gateway_db_timeout_seconds) as c:
            rows = await repo.archived(
                c,
                channel_id=channel_id,
                platform=platform,
                since=since,
                until=until,
                after_id=after,
                limit=min(_PAGE, limit - webhooks - failed),
            )
        if not rows:
            break
        for row in rows:
            after = row["id"]
            try:
                batch = normalizer.normalize(
                    row["platform"],
                    bytes(row["body"]),
                    channel_id=str(row["channel_id"]),
                    content_type=row["content_type"],
                    received_at=row["received_at"],
                    account_id=row["account_id"],
                    authenticated=True,
                )
            except normalizer.NormalizeError:
                failed += 1
                log.warning("gateway.replay_skipped", archive_id=row["id"])
                continue
            results = await gateway.publish([gateway.record(e) for e in batch])
            if not all(results):
                raise ServiceUnavailable("the broker did not acknowledge the replayed events")
            webhooks += 1
            events += len(batch)
            EVENTS.labels(row["platform"], "replayed").inc(len(batch))
    log.info("gateway.replayed", webhooks=webhooks, events=events, failed=failed)
    return ReplayResult(webhooks, events, failed)
