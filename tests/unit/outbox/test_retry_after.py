"""Platform wait hints are untrusted input: every one becomes a finite, bounded delay."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import orjson
import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from outbox.delivery import decide
from outbox.platforms._graph import graph_failure
from outbox.platforms.base import (
    MAX_RETRY_AFTER,
    SendResult,
    parse_retry_after,
    retry_after_seconds,
)
from outbox.platforms.http import HttpExchange
from outbox.platforms.telegram import ERRORS as TELEGRAM_ERRORS
from outbox.platforms.telegram import _failure as telegram_failure
from outbox.platforms.whatsapp import ERRORS as WHATSAPP_ERRORS
from outbox.retry import RetryPolicy

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("0.5", 0.5),  # not RFC delta-seconds, but harmless and sent by some servers
        ("86400", MAX_RETRY_AFTER),
        ("86401", MAX_RETRY_AFTER),
        ("99999999999", MAX_RETRY_AFTER),
        ("9" * 400, MAX_RETRY_AFTER),  # float() of it is inf
        ("9" * 5000, MAX_RETRY_AFTER),  # more digits than int() parses
        ("9" * 400 + ".5", MAX_RETRY_AFTER),
        ("inf", None),
        ("Infinity", None),
        ("-inf", None),
        ("NaN", None),
        ("nan", None),
        ("-5", None),
        ("+5", None),
        ("1e12", None),
        ("1E3", None),
        ("0x10", None),
        ("1_000", None),
        ("١٢", None),  # Arabic-Indic digits: str.isdigit() and float() accept them
        ("", None),
        ("soon", None),
        (None, None),
    ],
    ids=lambda v: v[:16] if isinstance(v, str) else None,
)
def test_retry_after_header_is_bounded(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, now=NOW) == seconds


def test_retry_after_http_date() -> None:
    future = format_datetime(NOW + timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(future, now=NOW) == 90.0
    past = "Wed, 21 Oct 2015 07:28:00 GMT"
    assert parse_retry_after(past, now=NOW) == 0.0
    far = format_datetime(NOW + timedelta(days=3650), usegmt=True)
    assert parse_retry_after(far, now=NOW) == MAX_RETRY_AFTER
    assert parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now=NOW) == MAX_RETRY_AFTER
    assert parse_retry_after("Mon, 32 Foo 2026 25:61:00 GMT", now=NOW) is None


@pytest.mark.parametrize(
    ("hint", "seconds"),
    [
        (3, 3.0),
        (2.5, 2.5),
        (0, 0.0),
        (-5, 0.0),
        (-0.5, 0.0),
        (1e308, MAX_RETRY_AFTER),
        (10**400, MAX_RETRY_AFTER),  # float(10**400) raises OverflowError
        (-(10**400), 0.0),
        (float("inf"), None),
        (float("-inf"), None),
        (float("nan"), None),
        (True, None),
        (False, None),
        ("5", None),
        (None, None),
        ([5], None),
    ],
)
def test_retry_after_seconds(hint: object, seconds: float | None) -> None:
    value = retry_after_seconds(hint)
    assert value == seconds
    if value is not None:
        assert isinstance(value, float)


def exchange(status: int, body: object, headers: dict[str, str] | None = None) -> HttpExchange:
    return HttpExchange(
        status=status,
        headers=CIMultiDictProxy(CIMultiDict(headers or {})),
        body=json.dumps(body).encode(),
        duration_ms=1.0,
    )


def telegram_429(retry_after: object, headers: dict[str, str] | None = None) -> SendResult:
    body = {
        "ok": False,
        "error_code": 429,
        "description": "Too Many Requests: retry after 5",
        "parameters": {"retry_after": retry_after},
    }
    return telegram_failure(exchange(429, body, headers), body, ())


def test_telegram_retry_after_is_bounded() -> None:
    assert telegram_429(5).retry_after == 5.0
    assert telegram_429(1e308).retry_after == MAX_RETRY_AFTER
    assert telegram_429(10**30).retry_after == MAX_RETRY_AFTER
    assert telegram_429(-3).retry_after == 0.0
    # not a number: the hint is ignored, the header (if any) stands
    assert telegram_429(True).retry_after is None
    assert telegram_429("Infinity").retry_after is None
    assert telegram_429(None, {"Retry-After": "7"}).retry_after == 7.0
    assert telegram_429(float("nan"), {"Retry-After": "inf"}).retry_after is None
    result = telegram_429(1e308)
    assert result.outcome == "retryable"
    assert result.throttled
    assert TELEGRAM_ERRORS[429].throttle == "channel"


def test_telegram_body_with_a_huge_retry_after_parses() -> None:
    raw = b'{"ok":false,"error_code":429,"description":"x","parameters":{"retry_after":1e308}}'
    payload = orjson.loads(raw)
    result = telegram_failure(
        HttpExchange(429, CIMultiDictProxy(CIMultiDict()), raw, 1.0), payload, ()
    )
    assert result.retry_after == MAX_RETRY_AFTER


def test_graph_usage_header_is_bounded() -> None:
    def usage(minutes: object) -> float | None:
        header = json.dumps(
            {"123": [{"type": "whatsapp", "estimated_time_to_regain_access": minutes}]}
        )
        body = {"error": {"code": 130429, "message": "rate limit"}}
        result = graph_failure(
            exchange(400, body, {"X-Business-Use-Case-Usage": header}), WHATSAPP_ERRORS, ()
        )
        return result.retry_after

    assert usage(2) == 120.0
    assert usage(1e308) == MAX_RETRY_AFTER
    assert usage(10**18) == MAX_RETRY_AFTER
    assert usage(10**400) is None  # beyond what orjson parses: the header is ignored
    assert usage(True) is None
    assert usage(-4) is None
    assert usage("9") is None


@pytest.mark.parametrize(
    ("retry_after", "state"),
    [
        (MAX_RETRY_AFTER, "dead"),
        (1e12, "dead"),
        (1e308, "dead"),
        (float("inf"), "dead"),
        (float("nan"), "retrying"),  # not a floor at all: the schedule's 5 s
    ],
)
def test_decide_never_overflows(retry_after: float, state: str) -> None:
    """Hints are bounded by the senders; decide() must not overflow even when one is not."""
    policy = RetryPolicy(schedule=(5.0,), jitter=0.0, rng=random.Random(1))
    failed = SendResult(
        outcome="retryable",
        platform_message_id=None,
        http_status=429,
        error_code="429",
        error_title="Too Many Requests",
        retry_after=retry_after,
        throttled=True,
        response_excerpt=None,
        duration_ms=1.0,
    )
    decision = decide(failed, attempt=1, now=NOW, not_after=NOW + timedelta(hours=1), policy=policy)
    assert decision.state == state
    if state == "retrying":
        assert decision.next_attempt_at == NOW + timedelta(seconds=5)


def test_a_capped_hint_still_retries_when_the_message_lives_long_enough() -> None:
    policy = RetryPolicy(schedule=(5.0,), jitter=0.0, rng=random.Random(1))
    failed = SendResult(
        outcome="retryable",
        platform_message_id=None,
        http_status=429,
        error_code="429",
        error_title=None,
        retry_after=parse_retry_after("1" + "0" * 20),
        throttled=True,
        response_excerpt=None,
        duration_ms=1.0,
    )
    decision = decide(failed, attempt=1, now=NOW, not_after=NOW + timedelta(days=2), policy=policy)
    assert decision.state == "retrying"
    assert decision.next_attempt_at == NOW + timedelta(seconds=MAX_RETRY_AFTER)
