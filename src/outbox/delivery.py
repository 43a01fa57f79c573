"""The pure part of delivery: what an attempt's outcome does to a message, and pacing limits.

No I/O here: the worker (``outbox.worker``) claims rows, sends, and writes what ``decide``
returns. Times are passed in, so the rules are unit-tested exactly.
"""

from __future__ import annotations

import math
import uuid
import zlib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from outbox.contracts import LifecycleError, LifecycleEventType, SendCommand
from outbox.models import OutboxMessage
from outbox.platforms import AUDIO_VIDEO_RATES, CHANNEL_RATES, SENDERS
from outbox.platforms.base import EXCERPT_LIMIT, SendResult
from outbox.ratelimit import Limit, Rate, channel_key, recipient_key
from outbox.retry import RetryPolicy

__all__ = [
    "MAX_RATE",
    "MIN_RATE",
    "ChannelView",
    "ClaimedMessage",
    "Decision",
    "OwnershipPlan",
    "channel_rate",
    "decide",
    "expired_decision",
    "interrupted_result",
    "paced_limits",
    "plan_ownership",
]


@dataclass(slots=True)
class ClaimedMessage:
    """A row this worker claimed (``state='sending'``), as the claim query returned it."""

    id: uuid.UUID
    seq: int
    command_id: str
    channel_id: uuid.UUID
    platform: str
    recipient: str
    conversation_key: str
    content: dict[str, Any]
    reply_to: str | None
    message_metadata: dict[str, Any]
    attempts: int
    retry_base: int
    not_after: datetime
    claimed_from: str
    """``queued`` or ``retrying``: where an unsent claim goes back to."""
    platform_message_id: str | None = None
    traceparent: str | None = None
    """The command's trace context: parent of the attempt, trace of its lifecycle events."""
    lane: str = "bulk"
    """``reply`` or ``bulk`` (``outbox.lanes``)."""

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> ClaimedMessage:
        return cls(
            id=row["id"],
            seq=row["seq"],
            command_id=row["command_id"],
            channel_id=row["channel_id"],
            platform=row["platform"],
            recipient=row["recipient"],
            conversation_key=row["conversation_key"],
            content=row["content"],
            reply_to=row["reply_to"],
            message_metadata=row["metadata"] or {},
            attempts=row["attempts"],
            retry_base=row["retry_base"],
            not_after=row["not_after"],
            claimed_from=row["claimed_from"],
            platform_message_id=row["platform_message_id"],
            traceparent=row.get("traceparent"),
            lane=row.get("lane") or "bulk",
        )

    def command(self) -> SendCommand:
        """The send command as accepted (raises pydantic's ValidationError if the row is bad)."""
        return SendCommand.model_validate(
            {
                "id": self.command_id,
                "channel_id": str(self.channel_id),
                "to": self.recipient,
                "content": self.content,
                "reply_to": self.reply_to,
                "metadata": self.message_metadata,
                "not_after": self.not_after,
            }
        )

    def media_kind(self) -> str | None:
        media = self.content.get("media") if self.content.get("kind") == "media" else None
        kind = media.get("kind") if isinstance(media, dict) else None
        return kind if isinstance(kind, str) else None

    def event_view(self) -> OutboxMessage:
        """This claim as ``outbox.events.build_event`` reads a message: it has every attribute
        that function uses under the same name (id, command_id, channel_id, platform,
        recipient, conversation_key, platform_message_id, attempts, message_metadata), so no
        ORM object is built per event on the hot path."""
        return cast(OutboxMessage, self)


@dataclass(frozen=True, slots=True)
class Decision:
    """The row's next state after an attempt, and the lifecycle event that says so."""

    state: str
    event: LifecycleEventType
    next_attempt_at: datetime | None = None
    error: LifecycleError | None = None
    platform_message_id: str | None = None


def lifecycle_error(result: SendResult) -> LifecycleError:
    code = result.error_code or (f"http_{result.http_status}" if result.http_status else "error")
    title = (result.error_title or code)[:EXCERPT_LIMIT]
    return LifecycleError(code=code, title=title, retryable=result.outcome == "retryable")


def decide(
    result: SendResult,
    *,
    attempt: int,
    now: datetime,
    not_after: datetime,
    policy: RetryPolicy,
) -> Decision:
    """``sent`` → sent; ``permanent`` → failed; ``retryable`` → retrying when the next attempt
    (schedule with jitter, the platform's Retry-After as a floor) lands before ``not_after``,
    else dead."""
    if result.outcome == "sent":
        return Decision("sent", "message.sent", platform_message_id=result.platform_message_id)
    error = lifecycle_error(result)
    if result.outcome == "permanent":
        return Decision("failed", "message.failed", error=error)
    delay = policy.next_delay(attempt, result.retry_after)
    # Compared in seconds before any datetime arithmetic: a delay past not_after, however
    # large (even inf or NaN), is dead, never an OverflowError that would wedge the writer.
    if not delay < (not_after - now).total_seconds():
        return Decision("dead", "message.dead", error=error)
    next_at = now + timedelta(seconds=delay)
    if next_at >= not_after:
        return Decision("dead", "message.dead", error=error)
    return Decision("retrying", "message.retrying", next_attempt_at=next_at, error=error)


EXPIRED = LifecycleError(
    code="expired", title="not_after passed before the message could be sent", retryable=False
)
LEASE_EXPIRED = LifecycleError(
    code="lease_expired",
    title="the worker sending this message stopped before recording an outcome; "
    "the platform may have received it",
    retryable=True,
)


def expired_decision() -> Decision:
    return Decision("dead", "message.dead", error=EXPIRED)


def interrupted_result(duration_ms: float) -> SendResult:
    """A send cut at the shutdown deadline: outcome unknown, so retried (at-least-once)."""
    return SendResult(
        outcome="retryable",
        platform_message_id=None,
        http_status=None,
        error_code="interrupted",
        error_title="the worker stopped before the platform answered",
        retry_after=None,
        throttled=False,
        response_excerpt=None,
        duration_ms=duration_ms,
    )


def _with_margin(rate: Rate, margin: float) -> Rate:
    return Rate(rate.count, rate.per * (1.0 + margin)) if margin else rate


MIN_RATE = 0.01
MAX_RATE = 10_000.0
"""Sends per second a channel may be configured with (the API refuses others)."""


def channel_rate(platform: str, per_second: float | None) -> Rate:
    """The channel's configured rate (``send_rate_per_second``) or the platform default.

    A stored value outside ``MIN_RATE``..``MAX_RATE`` (written before the API bounded it) is
    clamped: a rate of 1e-300 would otherwise schedule the next send ~1e300 s away."""
    if per_second is None or not per_second > 0:
        return CHANNEL_RATES[platform]
    per_second = min(max(per_second, MIN_RATE), MAX_RATE)
    if per_second >= 1:
        count = math.floor(per_second)
        return Rate(count, count / per_second)
    return Rate(1, 1.0 / per_second)


def recipient_rate(
    platform: str, recipient: str, *, whatsapp_pair: Rate | None = None
) -> Rate | None:
    """The per-conversation pace (``Sender.recipient_rate``), or None where the platform
    documents none; ``whatsapp_pair`` is the configured pace where no figure is documented."""
    sender = SENDERS.get(platform)
    if sender is None:
        return None
    return sender.recipient_rate(recipient, configured_pair=whatsapp_pair)


def limits_for(
    platform: str,
    channel_id: str,
    recipient: str,
    *,
    channel_rate: Rate | None = None,
    media_kind: str | None = None,
    whatsapp_pair: Rate | None = None,
) -> tuple[Limit, ...]:
    """Every limit one send must pass, the shared channel limit first (see ``Pacer.acquire``)."""
    limits = [Limit(channel_key(channel_id), channel_rate or CHANNEL_RATES[platform])]
    av_rate = AUDIO_VIDEO_RATES.get(platform)
    if av_rate is not None and media_kind in ("audio", "video"):
        limits.append(Limit(("channel-av", channel_id), av_rate))
    pair = recipient_rate(platform, recipient, whatsapp_pair=whatsapp_pair)
    if pair is not None:
        limits.append(Limit(recipient_key(channel_id, recipient), pair))
    return tuple(limits)


def paced_limits(
    message: ClaimedMessage,
    rate: Rate,
    *,
    margin: float,
    whatsapp_pair_interval: float | None,
) -> tuple[Limit, ...]:
    """Every limit a send of ``message`` passes (channel first), each ``margin`` slower than
    configured so that network jitter between our grant and the platform's clock never packs
    more than the rate into one of the platform's windows."""
    pair = Rate(1, whatsapp_pair_interval) if whatsapp_pair_interval else None
    limits = limits_for(
        message.platform,
        str(message.channel_id),
        message.recipient,
        channel_rate=rate,
        media_kind=message.media_kind(),
        whatsapp_pair=pair,
    )
    return tuple(Limit(limit.key, _with_margin(limit.rate, margin)) for limit in limits)


# ---- channel ownership across replicas --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChannelView:
    """One active channel as a worker's ownership round sees it (``leases.survey_channels``)."""

    channel_id: uuid.UUID
    due: bool
    """It has messages due within the renew interval."""
    overdue: bool
    """Its oldest due message has waited longer than the grace period."""
    holder: str | None
    """Owner of its live lease (a released lease stays live for the handover gap), or None."""


@dataclass(frozen=True, slots=True)
class OwnershipPlan:
    share: int
    keep: list[uuid.UUID]
    """Held channels to renew."""
    take: list[uuid.UUID]
    """Free channels to try to acquire (another worker may get some of them first)."""
    release: list[uuid.UUID]
    """Held channels to give up: idle ones, and the surplus above the fair share."""
    surplus: list[uuid.UUID]
    """The part of ``release`` given up for balance (they still have work)."""


def _spread(owner: str, channel_id: uuid.UUID) -> int:
    """A per-worker order of free channels, so that workers asking at the same time mostly
    reach for different channels (stable across rounds and processes)."""
    return zlib.crc32(f"{owner}:{channel_id}".encode())


def plan_ownership(
    owner: str,
    *,
    held: Iterable[uuid.UUID],
    busy: Collection[uuid.UUID],
    views: Iterable[ChannelView],
    live_workers: int,
) -> OwnershipPlan:
    """What one worker's ownership round does. Fair share = ceil(active channels / live
    workers), where active = due or leased by someone. Held channels with work (due, or with
    claims of ours still in flight) are kept up to the share — those with claims in flight
    first — and the rest released; free channels (no live lease, or our own released one) with
    due work are taken up to the share; beyond it only channels whose due work has waited past
    the grace period with nobody holding them, so work never stalls when views disagree."""
    by_id = {v.channel_id: v for v in views}
    active = set(by_id) | set(busy)
    share = math.ceil(len(active) / max(1, live_workers)) if active else 0
    held = list(held)
    held_set = set(held)
    wanted = [c for c in held if c in busy or (c in by_id and by_id[c].due)]
    idle = [c for c in held if c not in set(wanted)]
    wanted.sort(key=lambda c: (c not in busy, _spread(owner, c)))
    keep, surplus = wanted[:share], wanted[share:]
    free = sorted(
        (
            v.channel_id
            for v in by_id.values()
            if v.due and v.channel_id not in held_set and v.holder in (None, owner)
        ),
        key=lambda c: _spread(owner, c),
    )
    room = max(0, share - len(keep))
    take = free[:room] + [c for c in free[room:] if by_id[c].overdue]
    return OwnershipPlan(share, keep, take, idle + surplus, surplus)
