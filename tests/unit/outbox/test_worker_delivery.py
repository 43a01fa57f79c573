"""The pure rules of the delivery worker (outbox.delivery): outcome → state, rates, limits."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from outbox.delivery import ClaimedMessage, channel_rate, decide, paced_limits
from outbox.events import build_event
from outbox.platforms import CHANNEL_RATES
from outbox.platforms.base import SendResult
from outbox.ratelimit import Rate
from outbox.retry import RetryPolicy

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
POLICY = RetryPolicy(schedule=(5.0, 30.0, 120.0), jitter=0.0, rng=random.Random(1))


def result(outcome: str, **kw: object) -> SendResult:
    values: dict[str, object] = {
        "outcome": outcome,
        "platform_message_id": "wamid.1" if outcome == "sent" else None,
        "http_status": 200 if outcome == "sent" else 503,
        "error_code": None if outcome == "sent" else "http_503",
        "error_title": None if outcome == "sent" else "Service Unavailable",
        "retry_after": None,
        "throttled": False,
        "response_excerpt": None,
        "duration_ms": 12.0,
    }
    values.update(kw)
    return SendResult(**values)  # type: ignore[arg-type]


def claimed(**kw: object) -> ClaimedMessage:
    channel_id = uuid.uuid4()
    values: dict[str, object] = {
        "id": uuid.uuid4(),
        "seq": 1,
        "command_id": "cmd-1",
        "channel_id": channel_id,
        "platform": "whatsapp",
        "recipient": "15550001",
        "conversation_key": f"{channel_id}:15550001",
        "content": {"kind": "text", "text": "hi"},
        "reply_to": None,
        "message_metadata": {"order": 7},
        "attempts": 0,
        "retry_base": 0,
        "not_after": NOW + timedelta(hours=1),
        "claimed_from": "queued",
    }
    values.update(kw)
    return ClaimedMessage(**values)  # type: ignore[arg-type]


def test_sent_keeps_the_platform_id() -> None:
    decision = decide(result("sent"), attempt=1, now=NOW, not_after=NOW, policy=POLICY)
    assert (decision.state, decision.event, decision.platform_message_id) == (
        "sent",
        "message.sent",
        "wamid.1",
    )
    assert decision.error is None


def test_permanent_fails_at_once_whatever_the_time_left() -> None:
    decision = decide(
        result("permanent", http_status=400, error_code="131026", error_title="undeliverable"),
        attempt=1,
        now=NOW,
        not_after=NOW + timedelta(days=1),
        policy=POLICY,
    )
    assert (decision.state, decision.event) == ("failed", "message.failed")
    assert decision.error is not None
    assert (decision.error.code, decision.error.retryable) == ("131026", False)


@pytest.mark.parametrize(("attempt", "delay"), [(1, 5.0), (2, 30.0), (3, 120.0), (9, 120.0)])
def test_retryable_follows_the_schedule(attempt: int, delay: float) -> None:
    decision = decide(
        result("retryable"), attempt=attempt, now=NOW, not_after=NOW + timedelta(hours=1),
        policy=POLICY,
    )  # fmt: skip
    assert (decision.state, decision.event) == ("retrying", "message.retrying")
    assert decision.next_attempt_at == NOW + timedelta(seconds=delay)
    assert decision.error is not None
    assert decision.error.retryable


def test_retry_after_is_a_floor() -> None:
    decision = decide(
        result("retryable", retry_after=42.0), attempt=1, now=NOW,
        not_after=NOW + timedelta(hours=1), policy=POLICY,
    )  # fmt: skip
    assert decision.next_attempt_at == NOW + timedelta(seconds=42)


def test_a_retry_that_would_land_after_not_after_is_dead() -> None:
    decision = decide(
        result("retryable"), attempt=2, now=NOW, not_after=NOW + timedelta(seconds=29),
        policy=POLICY,
    )  # fmt: skip
    assert (decision.state, decision.event, decision.next_attempt_at) == (
        "dead",
        "message.dead",
        None,
    )


def test_channel_rate_defaults_and_fractions() -> None:
    assert channel_rate("whatsapp", None) == CHANNEL_RATES["whatsapp"]
    assert channel_rate("telegram", 0) == CHANNEL_RATES["telegram"]
    assert channel_rate("whatsapp", 1000) == Rate(1000, 1.0)
    assert channel_rate("twilio", 0.5) == Rate(1, 2.0)
    fractional = channel_rate("twilio", 2.5)
    assert fractional.count / fractional.per == pytest.approx(2.5)


def test_channel_rate_clamps_values_stored_before_the_api_bounded_them() -> None:
    assert channel_rate("whatsapp", 1e-300) == Rate(1, 100.0)  # 0.01/s, not 1e300 s apart
    assert channel_rate("whatsapp", 1e9) == Rate(10_000, 1.0)
    assert channel_rate("whatsapp", float("nan")) == CHANNEL_RATES["whatsapp"]


def test_paced_limits_put_the_channel_first_and_keep_a_margin() -> None:
    message = claimed(platform="telegram", recipient="12345")
    limits = paced_limits(message, Rate(30), margin=0.01, whatsapp_pair_interval=None)
    assert limits[0].key == ("channel", str(message.channel_id))
    assert limits[0].rate == Rate(30, 1.01)  # the margin passed in
    assert limits[1].key == ("recipient", str(message.channel_id), "12345")
    assert limits[1].rate == Rate(1, 1.01)


def test_whatsapp_pair_pacing_only_when_configured() -> None:
    message = claimed()
    assert len(paced_limits(message, Rate(80), margin=0, whatsapp_pair_interval=None)) == 1
    with_pair = paced_limits(message, Rate(80), margin=0, whatsapp_pair_interval=6.0)
    assert with_pair[1].rate == Rate(1, 6.0)


def test_messenger_audio_and_video_get_the_media_budget_too() -> None:
    message = claimed(
        platform="messenger",
        content={"kind": "media", "media": {"kind": "video", "url": "https://x/v.mp4"}},
    )
    keys = [
        limit.key[0]  # type: ignore[index]
        for limit in paced_limits(message, Rate(300), margin=0, whatsapp_pair_interval=None)
    ]
    assert keys == ["channel", "channel-av"]


def test_the_claim_rebuilds_the_command_and_feeds_the_event_builder() -> None:
    message = claimed(reply_to="wamid.prev", attempts=2)
    command = message.command()
    assert (command.id, command.to, command.reply_to) == ("cmd-1", "15550001", "wamid.prev")
    assert command.metadata == {"order": 7}
    event = build_event(message.event_view(), "message.sent", now=NOW)
    assert b'"attempt":2' in event
    assert b'"order":7' in event
    with pytest.raises(ValidationError):
        claimed(content={"kind": "text"}).command()
