"""The lane policy (pure): replies first, bulk keeps one grant in ``bulk_every`` while both
lanes wait, nothing is reordered within a lane; and the outbox's copy of the conversation
layer's contact key."""

from __future__ import annotations

import pytest

from conversations.keys import contact_key as conversations_contact_key
from outbox.lanes import BULK_EVERY, LaneShare, lane_order
from outbox.policy import contact_key, is_automatic, is_sms


def grants(share: LaneShare, n: int, *, reply: bool = True, bulk: bool = True) -> list[str]:
    out: list[str] = []
    for _ in range(n):
        lane = share.first(reply_waiting=reply, bulk_waiting=bulk)
        share.granted(lane, contended=reply and bulk)
        out.append(lane)
    return out


def test_a_lone_lane_gets_every_grant() -> None:
    assert grants(LaneShare(), 25, bulk=False) == ["reply"] * 25
    assert grants(LaneShare(), 25, reply=False) == ["bulk"] * 25


def test_while_both_wait_every_tenth_grant_is_bulk() -> None:
    assert BULK_EVERY == 10
    order = grants(LaneShare(), 30)
    assert order == (["reply"] * 9 + ["bulk"]) * 3
    assert order.count("bulk") / len(order) == 0.1


def test_other_shares_are_exact() -> None:
    assert grants(LaneShare(bulk_every=4), 8) == ["reply", "reply", "reply", "bulk"] * 2
    assert grants(LaneShare(bulk_every=2), 4) == ["reply", "bulk"] * 2


def test_replies_granted_without_bulk_waiting_earn_bulk_no_turn() -> None:
    share = LaneShare()
    grants(share, 50, bulk=False)
    # Bulk arrives: the replies before it did not owe it anything.
    assert grants(share, 10) == ["reply"] * 9 + ["bulk"]


def test_a_bulk_grant_restarts_the_count() -> None:
    share = LaneShare()
    grants(share, 5)
    assert grants(share, 3, reply=False) == ["bulk"] * 3
    assert grants(share, 10) == ["reply"] * 9 + ["bulk"]


def test_bulk_every_below_two_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        LaneShare(bulk_every=1)


def test_lane_order_puts_the_first_lane_ahead_and_keeps_each_lane_in_order() -> None:
    items = [("b", 1), ("r", 2), ("b", 3), ("r", 4)]
    lane = {"r": "reply", "b": "bulk"}

    def of(item: tuple[str, int]) -> str:
        return lane[item[0]]

    assert [n for _, n in lane_order(items, "reply", of)] == [2, 4, 1, 3]
    assert [n for _, n in lane_order(items, "bulk", of)] == [1, 3, 2, 4]
    assert list(lane_order([], "reply", of)) == []


@pytest.mark.parametrize(
    ("platform", "peer"),
    [
        ("whatsapp", "+39 333 1234567"),
        ("whatsapp", "393331234567"),
        ("whatsapp", "US.13491208655302741918"),
        ("whatsapp", "+"),
        ("twilio", "+15557654321"),
        ("twilio", "whatsapp:+15557654321"),
        ("telegram", "-100123"),
        ("messenger", "6245827582"),
    ],
)
def test_contact_key_matches_the_conversation_layer(platform: str, peer: str) -> None:
    assert contact_key(platform, peer) == conversations_contact_key(platform, peer)


def test_automatic_marker_and_sms() -> None:
    assert is_automatic({"switchboard": {"automatic": True}})
    assert not is_automatic({"switchboard": {"automatic": "yes"}})
    assert not is_automatic({"switchboard": True})
    assert not is_automatic({})
    assert is_sms("twilio", "+15557654321", "+15551234567")
    assert not is_sms("twilio", "whatsapp:+15557654321", "+15551234567")
    assert not is_sms("twilio", "+15557654321", "whatsapp:+15551234567")
    assert not is_sms("whatsapp", "+15557654321", "1065")
