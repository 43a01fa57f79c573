"""Fair-share channel ownership (``outbox.delivery.plan_ownership``): pure, no database."""

from __future__ import annotations

import uuid

from outbox.delivery import ChannelView, plan_ownership

ME = "me"


def channels(n: int) -> list[uuid.UUID]:
    return [uuid.UUID(int=i + 1) for i in range(n)]


def due(cid: uuid.UUID, holder: str | None = None, *, overdue: bool = False) -> ChannelView:
    return ChannelView(cid, due=True, overdue=overdue, holder=holder)


def test_a_lone_worker_takes_every_channel_with_work() -> None:
    cs = channels(3)
    plan = plan_ownership(ME, held=[], busy=set(), views=[due(c) for c in cs], live_workers=1)
    assert plan.share == 3
    assert sorted(plan.take) == cs
    assert plan.keep == plan.release == []


def test_with_two_workers_each_takes_half_in_its_own_order() -> None:
    cs = channels(6)
    views = [due(c) for c in cs]
    plans = {
        owner: plan_ownership(owner, held=[], busy=set(), views=views, live_workers=2)
        for owner in [f"host:{pid}:abc" for pid in range(8)]
    }
    assert {(p.share, len(p.take)) for p in plans.values()} == {(3, 3)}
    picks = {frozenset(p.take) for p in plans.values()}
    assert len(picks) > 1, "workers reach for different channels first (less contention)"


def test_a_new_worker_makes_the_holder_release_its_surplus_keeping_busy_channels() -> None:
    cs = channels(4)
    views = [due(c, ME) for c in cs]
    plan = plan_ownership(ME, held=cs, busy={cs[3]}, views=views, live_workers=2)
    assert plan.share == 2
    assert len(plan.keep) == 2
    assert cs[3] in plan.keep, "a channel with claims in flight is kept first"
    assert sorted(plan.release) == sorted(plan.surplus) == sorted(set(cs) - set(plan.keep))
    assert plan.take == []


def test_idle_channels_are_released_busy_ones_kept() -> None:
    idle, busy_only, working = channels(3)
    views = [
        ChannelView(idle, due=False, overdue=False, holder=ME),
        ChannelView(busy_only, due=False, overdue=False, holder=ME),
        due(working, ME),
    ]
    plan = plan_ownership(
        ME, held=[idle, busy_only, working], busy={busy_only}, views=views, live_workers=1
    )
    assert sorted(plan.keep) == sorted([busy_only, working])
    assert plan.release == [idle]
    assert plan.surplus == []


def test_others_channels_are_left_alone_our_released_ones_may_come_back() -> None:
    theirs, ours_released, free = channels(3)
    views = [due(theirs, "other"), due(ours_released, ME), due(free)]
    plan = plan_ownership(ME, held=[], busy=set(), views=views, live_workers=1)
    assert sorted(plan.take) == sorted([ours_released, free])


def test_above_the_share_only_channels_left_unheld_past_the_grace_are_taken() -> None:
    mine, fresh, stalled = channels(3)
    views = [due(mine, ME), due(fresh), due(stalled, overdue=True)]
    # three live workers by the heartbeat table, but nobody else takes anything
    plan = plan_ownership(ME, held=[mine], busy=set(), views=views, live_workers=3)
    assert plan.share == 1
    assert plan.keep == [mine]
    assert plan.take == [stalled]


def test_nothing_active_nothing_held() -> None:
    plan = plan_ownership(ME, held=[], busy=set(), views=[], live_workers=2)
    assert (plan.share, plan.keep, plan.take, plan.release) == (0, [], [], [])
