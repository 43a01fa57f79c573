"""Claim budgets (``outbox.claims.fair_shares``): demand-driven, max-min fair, exact."""

from __future__ import annotations

import pytest

from outbox.claims import fair_shares


def test_one_channel_gets_what_it_wants_up_to_the_free_slots() -> None:
    assert fair_shares([("a", 0, 600)], 256) == {"a": 256}
    assert fair_shares([("a", 10, 60)], 256) == {"a": 50}


def test_a_fast_channel_does_not_take_the_slots_of_the_others() -> None:
    """The D1 case: a 300/s channel wants 600 slots (2 s lookahead), others want less."""
    demands = [("messenger", 0, 600), ("whatsapp", 0, 160), ("telegram", 0, 60), ("twilio", 0, 2)]
    got = fair_shares(demands, 256)
    assert sum(got.values()) == 256
    assert got["twilio"] == 2
    assert got["telegram"] == 60
    assert got["whatsapp"] == got["messenger"] == 97  # (256 - 62) / 2


def test_unused_share_goes_to_those_that_want_more() -> None:
    got = fair_shares([("big", 0, 1000), ("small", 0, 3), ("probe", 0, 1)], 100)
    assert got == {"big": 96, "small": 3, "probe": 1}


def test_fewer_slots_than_channels_go_one_each_in_the_order_given() -> None:
    demands = [(f"c{i}", 0, 10) for i in range(5)]
    assert fair_shares(demands, 3) == {"c0": 1, "c1": 1, "c2": 1}
    rotated = demands[3:] + demands[:3]
    assert fair_shares(rotated, 3) == {"c3": 1, "c4": 1, "c0": 1}


def test_what_a_channel_already_holds_counts_towards_its_share() -> None:
    # "a" already holds 50 waiting claims: the free slots level "b" up to it first
    got = fair_shares([("a", 50, 600), ("b", 0, 600)], 60)
    assert got == {"a": 5, "b": 55}


def test_nothing_wanted_nothing_granted() -> None:
    assert fair_shares([("full", 10, 10), ("over", 12, 10)], 100) == {}
    assert fair_shares([("a", 0, 10)], 0) == {}
    assert fair_shares([], 10) == {}


@pytest.mark.parametrize("free", [1, 7, 50, 255, 256, 1000])
def test_fifty_channels_at_platform_rates_all_get_slots_and_none_are_lost(free: int) -> None:
    rates = [300, 300, 80, 30, 1] * 10  # messenger, instagram, whatsapp, telegram, twilio
    demands = [(i, 0, max(1, 2 * r)) for i, r in enumerate(rates)]
    got = fair_shares(demands, free)
    assert sum(got.values()) == min(free, sum(w for _, _, w in demands))
    assert all(got.get(i, 0) <= w for i, _, w in demands)
    if free >= len(demands):
        assert set(got) == set(range(50)), "every channel gets at least one slot"
    # max-min fair: nobody below the level unless it wanted less
    level = min(got.get(i, 0) for i, _, w in demands if got.get(i, 0) < w) if got else 0
    assert all(n <= level + 1 for n in got.values())
