"""Pure rules of the conversation layer: business hours, acknowledgement choice, cooldown,
keywords, conversation naming and forward-only states. Time is passed in."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pytest

from conversations import keys, rules, states
from conversations.rules import AutoReply, Interval

ROME = AutoReply(
    text_in_hours="Thanks, we answer shortly",
    text_outside_hours="We are closed; we answer tomorrow",
    timezone="Europe/Rome",
    hours={
        "monday": (Interval(time(9), time(13)), Interval(time(14), time(18))),
        "saturday": (Interval(time(10), time(0)),),
    },
    holidays=frozenset({date(2026, 12, 8)}),
    cooldown_hours=6,
)


@pytest.mark.parametrize(
    ("at", "inside"),
    [
        (datetime(2026, 12, 7, 8, 0, tzinfo=UTC), True),  # Monday 09:00 in Rome (UTC+1)
        (datetime(2026, 12, 7, 7, 59, 59, tzinfo=UTC), False),  # 08:59:59 local
        (datetime(2026, 12, 7, 12, 0, tzinfo=UTC), False),  # lunch 13:00 local, end exclusive
        (datetime(2026, 12, 7, 13, 0, tzinfo=UTC), True),  # 14:00 local
        (datetime(2026, 12, 7, 17, 0, tzinfo=UTC), False),  # 18:00 local
        (datetime(2026, 12, 8, 9, 0, tzinfo=UTC), False),  # Tuesday, a holiday anyway
        (datetime(2026, 12, 12, 22, 59, tzinfo=UTC), True),  # Saturday 23:59, open to midnight
        (datetime(2026, 12, 13, 10, 0, tzinfo=UTC), False),  # Sunday: not named, closed
        (datetime(2026, 7, 6, 7, 0, tzinfo=UTC), True),  # Monday 09:00 in summer (UTC+2)
        (datetime(2026, 7, 6, 6, 59, tzinfo=UTC), False),
    ],
)
def test_business_hours_in_the_channel_time_zone(at: datetime, inside: bool) -> None:
    assert rules.within_hours(ROME, at) is inside


def test_a_holiday_is_closed_all_day_even_on_an_open_weekday() -> None:
    rule = AutoReply("in", "out", hours={"tuesday": (Interval(time(0), time(0)),)})
    tuesday = datetime(2026, 12, 8, 12, tzinfo=UTC)
    assert rules.within_hours(rule, tuesday)
    closed = AutoReply("in", "out", hours=rule.hours, holidays=frozenset({date(2026, 12, 8)}))
    assert not rules.within_hours(closed, tuesday)


def test_acknowledgement_text_by_hours() -> None:
    monday_10 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
    sunday = datetime(2026, 12, 13, 9, 0, tzinfo=UTC)
    common: dict[str, Any] = {
        "last_auto_reply_at": None,
        "opted_out": False,
        "replied_in_episode": False,
    }
    assert rules.auto_reply_text(ROME, at=monday_10, **common) == "Thanks, we answer shortly"
    assert rules.auto_reply_text(ROME, at=sunday, **common) == "We are closed; we answer tomorrow"


def test_no_acknowledgement_text_configured_for_the_moment_means_none() -> None:
    only_outside = AutoReply(None, "closed", hours=ROME.hours, timezone="Europe/Rome")
    monday_10 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
    assert (
        rules.auto_reply_text(
            only_outside,
            at=monday_10,
            last_auto_reply_at=None,
            opted_out=False,
            replied_in_episode=False,
        )
        is None
    )


def test_cooldown_is_exact() -> None:
    at = datetime(2026, 12, 13, 9, 0, tzinfo=UTC)
    just_inside = at - timedelta(hours=6) + timedelta(microseconds=1)
    just_outside = at - timedelta(hours=6)
    kw = {"opted_out": False, "replied_in_episode": False}
    assert rules.auto_reply_text(ROME, at=at, last_auto_reply_at=just_inside, **kw) is None
    assert rules.auto_reply_text(ROME, at=at, last_auto_reply_at=just_outside, **kw) is not None


def test_never_to_an_opted_out_contact_nor_after_a_reply() -> None:
    at = datetime(2026, 12, 13, 9, 0, tzinfo=UTC)
    assert (
        rules.auto_reply_text(
            ROME, at=at, last_auto_reply_at=None, opted_out=True, replied_in_episode=False
        )
        is None
    )
    assert (
        rules.auto_reply_text(
            ROME, at=at, last_auto_reply_at=None, opted_out=False, replied_in_episode=True
        )
        is None
    )


def test_stored_configuration_round_trips_to_the_rule() -> None:
    rule = rules.auto_reply_from_json(
        {
            "text_in_hours": "hi",
            "text_outside_hours": None,
            "timezone": "Europe/Rome",
            "business_hours": {"monday": [{"start": "09:00", "end": "17:00"}]},
            "holidays": ["2026-12-08"],
            "cooldown_hours": 2,
        }
    )
    assert rule.hours == {"monday": (Interval(time(9), time(17)),)}
    assert rule.holidays == frozenset({date(2026, 12, 8)})
    assert rule.cooldown_hours == 2.0


@pytest.mark.parametrize(
    ("message", "action"),
    [
        ("STOP", "opt_out"),
        (" stop ", "opt_out"),
        ("Stop!", "opt_out"),
        ("unsubscribe", "opt_out"),
        ("StopAll", "opt_out"),
        ("start", "opt_in"),
        ("UNSTOP", "opt_in"),
        ("please stop writing", None),
        ("stopping by later", None),
        ("", None),
        (None, None),
    ],
)
def test_keywords_match_the_whole_message(message: str | None, action: str | None) -> None:
    assert rules.keyword_action(message) == action


def test_configured_keywords_in_other_languages() -> None:
    assert rules.keyword_action("basta", ["BASTA", "ALTO"], ["INIZIA"]) == "opt_out"
    assert rules.keyword_action("inizia", ["BASTA"], ["INIZIA"]) == "opt_in"
    assert rules.keyword_action("STOP", ["BASTA"], ["INIZIA"]) is None


def test_platform_opt_out_codes() -> None:
    assert rules.platform_opt_out("twilio", "21610") is not None
    assert rules.platform_opt_out("whatsapp", "131050") is not None
    assert rules.platform_opt_out("whatsapp", "21610") is None
    assert rules.platform_opt_out("twilio", None) is None


@pytest.mark.parametrize(
    ("platform", "account", "to", "expected"),
    [
        ("whatsapp", "106540352242922", "+39 333 1234567", "whatsapp:106540352242922:393331234567"),
        ("telegram", "123456", "42", "telegram:123456:42"),
        ("messenger", "1122334455", "USER42", "messenger:1122334455:USER42"),
        ("twilio", "+15551234567", "+15557654321", "twilio:+15551234567:+15557654321"),
        (
            "twilio",
            "+15551234567",
            "whatsapp:+15557654321",
            "twilio:whatsapp:+15551234567:whatsapp:+15557654321",
        ),
    ],
)
def test_outbound_conversation_ids_match_the_normalizer(
    platform: str, account: str, to: str, expected: str
) -> None:
    assert keys.outbound_conversation_id(platform, account, to) == expected


def test_inbound_peer_with_colons_in_the_account() -> None:
    conv = "twilio:whatsapp:+15551234567:whatsapp:+15557654321"
    assert keys.inbound_peer("twilio", "whatsapp:+15551234567", conv) == "whatsapp:+15557654321"
    assert keys.inbound_peer("twilio", "+1", conv) is None
    assert keys.inbound_peer("telegram", None, "telegram::42") == "42"
    assert keys.contact_key("whatsapp", "+39 333-1234567") == "393331234567"


def test_states_only_move_forward() -> None:
    assert states.advance("queued", "sent") == "sent"
    assert states.advance("read", "delivered") == "read"
    assert states.advance("delivered", "failed") == "failed"
    assert states.advance("failed", "read") == "failed"
    assert states.advance("sent", "unknown") == "sent"


def test_a_reply_seen_before_its_question_answers_it_only_for_recent_dates() -> None:
    from conversations.inbound import _answered_before_seen

    now = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    reply = now - timedelta(seconds=10)
    assert _answered_before_seen(reply, now - timedelta(seconds=20), now)
    assert not _answered_before_seen(reply, now - timedelta(seconds=5), now)
    assert not _answered_before_seen(reply, now - timedelta(days=400), now)  # replayed, old
    assert not _answered_before_seen(None, now, now)


def test_whatsapp_user_ids_are_not_reduced_to_digits() -> None:
    assert keys.contact_key("whatsapp", "US.13491208655302741918") == "US.13491208655302741918"
    assert keys.contact_key("whatsapp", "+1 (555) 010-0000") == "15550100000"
