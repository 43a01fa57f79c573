"""Claim budgets (``outbox.claims.fair_shares``): demand-driven, max-min fair, exact."""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any, cast

import pytest

from infra.resources import Resources
from infra.settings import Settings
from outbox.claims import Claim, Claimer, ClaimQueue, InFlight, fair_shares
from outbox.delivery import channel_rate
from outbox.outcomes import WorkerStats
from outbox.ownership import OwnedChannel
from outbox.platforms import ChannelConfig
from outbox.ratelimit import Limit, Pacer, channel_key


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


# ---- Claimer.budgets: the fair shares fed from the owned channels, no database -------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def owned(platform: str, clock: FakeClock) -> OwnedChannel:
    cid = uuid.uuid4()
    rate = channel_rate(platform, None)
    return OwnedChannel(
        config=ChannelConfig(str(cid), platform, "acct", {}, None),
        rate=rate,
        limit=Limit(channel_key(str(cid)), rate),
        per_second=rate.count / rate.per,
        valid_until=clock.now + 15.0,
        loaded_at=clock.now,
    )


def claimer(
    channels: list[OwnedChannel], clock: FakeClock, pacer: Pacer, **settings: Any
) -> tuple[Claimer, InFlight]:
    resources = cast(Resources, SimpleNamespace(settings=Settings(_env_file=None, **settings)))
    ownership = SimpleNamespace(channels={c.id: c for c in channels})
    in_flight = InFlight()
    made = Claimer(
        resources,
        owner="me",
        lease=30.0,
        in_flight=in_flight,
        ownership=cast(Any, ownership),
        dispatcher=cast(Any, None),
        writer=cast(Any, None),
        pacer=pacer,
        stats=WorkerStats(),
        clock=clock,
    )
    return made, in_flight


def test_the_claim_budget_shares_the_slots_between_a_fast_channel_and_slow_ones() -> None:
    clock = FakeClock()
    fast, wa, tg = owned("messenger", clock), owned("whatsapp", clock), owned("telegram", clock)
    c, _ = claimer([fast, wa, tg], clock, Pacer(clock))
    budgets = c.budgets()
    assert sum(budgets.values()) == 256
    assert budgets[tg.id] == 60  # all it can use in the 2 s lookahead
    assert budgets[fast.id] == budgets[wa.id] == 98


def test_a_channel_with_nothing_claimable_asks_for_one_row_until_a_claim_fills() -> None:
    clock = FakeClock()
    fast, wa = owned("messenger", clock), owned("whatsapp", clock)
    c, _ = claimer([fast, wa], clock, Pacer(clock))
    c.note_claimed({fast.id: 128, wa.id: 128}, {wa.id: 128})  # the fast one had nothing
    budgets = c.budgets()
    assert budgets[fast.id] == 1
    assert budgets[wa.id] == 160, "what the idle one does not want goes to the other"
    c.note_claimed({fast.id: 1}, {fast.id: 1})  # work arrived: back to its full share
    assert c.budgets()[fast.id] > 1


def test_throttled_and_expiring_channels_claim_nothing() -> None:
    clock = FakeClock()
    pacer = Pacer(clock)
    throttled, expiring, fine = (owned("whatsapp", clock) for _ in range(3))
    pacer.penalize(throttled.limit.key, retry_after=30.0)
    expiring.valid_until = clock.now + 0.5  # less than SAFETY left on its lease
    c, _ = claimer([throttled, expiring, fine], clock, pacer)
    assert set(c.budgets()) == {fine.id}


def test_a_small_free_capacity_waits_for_a_worthwhile_batch() -> None:
    clock = FakeClock()
    channel = owned("whatsapp", clock)
    c, in_flight = claimer([channel], clock, Pacer(clock), outbox_max_in_flight=16)
    for _ in range(15):
        message = SimpleNamespace(id=uuid.uuid4(), channel_id=channel.id)
        in_flight.add(Claim(cast(Any, message), deadline=0.0))
    assert c.budgets() == {}, "1 free slot of 16 is below an eighth"
    assert in_flight.per_channel() == {channel.id: 15}


def test_a_claim_queue_keeps_its_order_and_counts_its_replies() -> None:
    def claim(lane: str) -> Claim:
        return Claim(cast(Any, SimpleNamespace(lane=lane)), deadline=0.0)

    queue = ClaimQueue()
    bulk, reply, other_reply, last = claim("bulk"), claim("reply"), claim("reply"), claim("bulk")
    for item in (bulk, reply, other_reply, last):
        queue.append(item)
    assert (len(queue), queue.replies, queue[0]) == (4, 2, bulk)
    queue.remove(reply)
    assert list(queue) == [bulk, other_reply, last]
    assert queue.replies == 1
    assert queue.popleft() is bulk
    queue.remove(last)
    assert (list(queue), queue.replies) == ([other_reply], 1)
    assert queue.popleft() is other_reply
    assert (len(queue), queue.replies, bool(queue)) == (0, 0, False)
