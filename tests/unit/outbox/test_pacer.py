"""The pacer under a fake clock: exact spacing, the hard window promise, back-off, recovery."""

from __future__ import annotations

import asyncio
import bisect
import random

import pytest

from outbox.delivery import limits_for, recipient_rate
from outbox.platforms import CHANNEL_RATES
from outbox.platforms.telegram import TELEGRAM_GROUP_CHAT, TELEGRAM_PRIVATE_CHAT
from outbox.ratelimit import Limit, Pacer, Rate


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)


def max_in_window(times: list[float], per: float = 1.0) -> int:
    """Most grants in any half-open window [t, t + per)."""
    ordered = sorted(times)
    return max(bisect.bisect_left(ordered, t + per) - i for i, t in enumerate(ordered))


def run(
    pacer: Pacer,
    clock: FakeClock,
    limit: Limit,
    n: int,
    lateness: random.Random | None = None,
    max_late: float = 0.0,
) -> list[float]:
    """Grant ``n`` sends as a worker would: wait the returned delay, possibly waking late."""
    grants: list[float] = []
    while len(grants) < n:
        delay = pacer.acquire_delay(limit, clock.now)
        if delay == 0.0:
            grants.append(clock.now)
            continue
        clock.now += delay + (lateness.uniform(0, max_late) if lateness else 0.0)
    return grants


def test_grants_are_exactly_spaced() -> None:
    clock = FakeClock(0.0)
    pacer = Pacer(clock, window_margin=0.0, start_margin=0.0)
    grants = run(pacer, clock, Limit("ch", Rate(4)), 9)
    assert grants == [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0]


def test_the_window_margin_keeps_a_full_window_clear_of_its_edge() -> None:
    clock = FakeClock(0.0)
    pacer = Pacer(clock, window_margin=0.001, start_margin=0.0)
    grants = run(pacer, clock, Limit("ch", Rate(4)), 9)
    assert grants == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.001, 1.251, 1.501, 1.751, 2.002])
    assert max_in_window(grants, 1.0 + 0.001) == 4


def test_a_refused_request_records_nothing() -> None:
    clock = FakeClock(0.0)
    pacer = Pacer(clock)
    limit = Limit("ch", Rate(2))
    assert pacer.acquire_delay(limit) == 0.0
    assert pacer.acquire_delay(limit) == 0.5
    assert pacer.acquire_delay(limit) == 0.5  # asking again does not push the slot further
    clock.now = 0.5
    assert pacer.acquire_delay(limit) == 0.0


@pytest.mark.parametrize("rate", [80, 1000])
def test_late_wakeups_never_break_the_window_and_keep_the_rate(rate: int) -> None:
    """Wake-ups up to 3 ms late (a busy event loop): catch-up keeps the long-run rate within
    2 % while no 1 s window ever holds more than ``rate`` grants."""
    clock = FakeClock(0.0)
    pacer = Pacer(clock, start_margin=0.0)
    grants = run(pacer, clock, Limit("ch", Rate(rate)), rate * 5, random.Random(1), 0.003)
    assert max_in_window(grants) <= rate
    achieved = (len(grants) - 1) / (grants[-1] - grants[0])
    assert achieved == pytest.approx(rate, rel=0.02)
    assert achieved <= rate


def test_an_idle_channel_restarts_its_schedule_instead_of_bursting() -> None:
    clock = FakeClock(0.0)
    pacer = Pacer(clock, catch_up=0.05)
    limit = Limit("ch", Rate(100))
    run(pacer, clock, limit, 1)
    clock.now = 10.0
    assert pacer.acquire_delay(limit) == 0.0
    assert pacer.acquire_delay(limit) == pytest.approx(0.01)


def test_a_late_wakeup_within_catch_up_keeps_the_schedule() -> None:
    clock = FakeClock(0.0)
    pacer = Pacer(clock, catch_up=0.05)
    limit = Limit("ch", Rate(100))
    run(pacer, clock, limit, 1)
    clock.now = 0.035  # slot was at 0.01: 25 ms late, slots 0.02 and 0.03 are due too
    immediate = 0
    while pacer.acquire_delay(limit) == 0.0:
        immediate += 1
    assert immediate == 3
    assert pacer.acquire_delay(limit) == pytest.approx(0.005)  # back on the 10 ms grid


def test_window_guard_holds_for_a_minute_rate() -> None:
    clock = FakeClock(0.0)
    pacer = Pacer(clock)
    limit = Limit(("recipient", "ch", "-100"), TELEGRAM_GROUP_CHAT)
    grants = run(pacer, clock, limit, 45)
    assert grants[1] - grants[0] == pytest.approx(3.0)
    assert max_in_window(grants, 60.0) == 20


def test_limits_are_all_or_nothing() -> None:
    clock = FakeClock(0.0)
    pacer = Pacer(clock, window_margin=0.0, start_margin=0.0)
    channel = Limit("ch", Rate(10))
    alice = Limit(("r", "alice"), Rate(1))
    bob = Limit(("r", "bob"), Rate(1))
    assert pacer.acquire_delay([channel, alice]) == 0.0
    clock.now = 0.1
    assert pacer.acquire_delay([channel, alice]) == pytest.approx(0.9)
    # alice's refusal did not consume the channel slot: bob goes at once
    assert pacer.acquire_delay([channel, bob]) == 0.0
    assert pacer.acquire_delay([channel, bob]) == pytest.approx(1.0)  # bob granted at 0.1


def test_penalty_pauses_then_halves_and_recovers_linearly() -> None:
    clock = FakeClock(0.0)
    pacer = Pacer(clock, recovery=10.0)
    limit = Limit("ch", Rate(8))
    assert pacer.acquire_delay(limit) == 0.0
    pacer.penalize("ch", retry_after=2.0)
    assert pacer.acquire_delay(limit) == pytest.approx(2.0)
    assert pacer.factor("ch") == 0.5
    clock.now = 2.0
    assert pacer.acquire_delay(limit) == 0.0
    assert pacer.acquire_delay(limit) == pytest.approx(0.25)  # 4/s instead of 8/s
    assert pacer.factor("ch", now=7.0) == pytest.approx(0.75)
    assert pacer.factor("ch", now=12.0) == 1.0


def test_penalties_while_paused_extend_but_do_not_compound() -> None:
    clock = FakeClock(0.0)
    pacer = Pacer(clock)
    limit = Limit("ch", Rate(8))
    pacer.acquire_delay(limit)
    for _ in range(20):  # every in-flight request comes back 429
        pacer.penalize("ch", retry_after=1.0)
    clock.now = 0.5
    pacer.penalize("ch", retry_after=1.0)
    assert pacer.factor("ch") == 0.5
    assert pacer.acquire_delay(limit) == pytest.approx(1.0)  # paused until 1.5


def test_repeated_penalties_floor_the_rate() -> None:
    clock = FakeClock(0.0)
    pacer = Pacer(clock, min_factor=0.25, recovery=1000.0)
    for _ in range(5):
        pacer.penalize("ch", retry_after=0.0)
        clock.now += 0.001
    assert pacer.factor("ch") == pytest.approx(0.25, abs=1e-3)


def test_penalizing_an_unknown_key_still_pauses_it() -> None:
    clock = FakeClock(0.0)
    pacer = Pacer(clock)
    pacer.penalize("ch", retry_after=3.0)
    assert pacer.acquire_delay(Limit("ch", Rate(80))) == pytest.approx(3.0)


def test_prune_drops_only_idle_keys() -> None:
    clock = FakeClock(0.0)
    pacer = Pacer(clock)
    pacer.acquire_delay(Limit("old", Rate(1)))
    clock.now = 5.0
    pacer.acquire_delay(Limit("fresh", Rate(1)))
    pacer.penalize("paused", retry_after=100.0)
    assert pacer.prune() == 1
    assert len(pacer) == 2


async def test_async_acquire_serializes_waiters_on_the_channel() -> None:
    clock = FakeClock(0.0)
    pacer = Pacer(clock, sleep=clock.sleep, window_margin=0.0, start_margin=0.0)
    limit = Limit("ch", Rate(5))
    grants = await asyncio.gather(*(pacer.acquire(limit) for _ in range(10)))
    assert sorted(grants) == pytest.approx([i * 0.2 for i in range(10)])


async def test_async_acquire_waits_for_the_recipient_before_queueing() -> None:
    clock = FakeClock(0.0)
    pacer = Pacer(clock, sleep=clock.sleep, window_margin=0.0, start_margin=0.0)
    limits = limits_for("telegram", "ch", "42")
    first = await pacer.acquire(limits)
    second = await pacer.acquire(limits)
    assert second - first == pytest.approx(1.0)  # 1 msg/s to a private chat


def test_platform_defaults() -> None:
    assert CHANNEL_RATES["whatsapp"] == Rate(80)
    assert CHANNEL_RATES["telegram"] == Rate(30)
    assert CHANNEL_RATES["twilio"] == Rate(1)
    assert recipient_rate("telegram", "12345") == TELEGRAM_PRIVATE_CHAT
    assert recipient_rate("telegram", "-100123") == TELEGRAM_GROUP_CHAT
    assert recipient_rate("whatsapp", "+1555") is None
    assert recipient_rate("whatsapp", "+1555", whatsapp_pair=Rate(1, 6.0)) == Rate(1, 6.0)
    assert recipient_rate("messenger", "psid") is None


def test_limits_for_puts_the_channel_first_and_adds_audio_video_budgets() -> None:
    limits = limits_for("messenger", "ch", "psid", media_kind="video")
    assert [limit.rate for limit in limits] == [Rate(300), Rate(10)]
    custom = limits_for("whatsapp", "ch", "+1", channel_rate=Rate(1000))
    assert custom == (Limit(("channel", "ch"), Rate(1000)),)


def test_invalid_rates_are_refused() -> None:
    with pytest.raises(ValueError, match="count >= 1"):
        Rate(0)
    with pytest.raises(ValueError, match="count >= 1"):
        Rate(1, 0.0)


def test_a_rate_change_restarts_a_far_future_schedule() -> None:
    """Issue 9, D8: one grant at a tiny rate put the next slot ~1e300 s away, and the key kept
    that slot after the rate was reset: the channel stalled until the process restarted."""
    clock = FakeClock(0.0)
    pacer = Pacer(clock, window_margin=0.0)
    assert pacer.acquire_delay(Limit("ch", Rate(1, 1e300))) == 0.0
    assert pacer.acquire_delay(Limit("ch", Rate(1, 1e300))) > 1e299
    clock.now = 0.5
    assert pacer.acquire_delay(Limit("ch", Rate(80))) == 0.0
    assert pacer.acquire_delay(Limit("ch", Rate(80))) == pytest.approx(1 / 80)


def test_a_lowered_rate_holds_its_window_from_the_change_on() -> None:
    clock = FakeClock(0.0)
    pacer = Pacer(clock)
    before = run(pacer, clock, Limit("ch", Rate(80)), 80)
    change = clock.now
    after = run(pacer, clock, Limit("ch", Rate(10)), 30)
    assert max_in_window(before + after) <= 80
    assert max_in_window(after) <= 10
    assert after[0] >= before[-10] + 1.0, "the last 10 grants at the old rate still count"
    assert after[0] > change


def test_a_penalty_survives_a_rate_change() -> None:
    clock = FakeClock(0.0)
    pacer = Pacer(clock)
    pacer.penalize("ch", retry_after=3.0)
    assert pacer.acquire_delay(Limit("ch", Rate(80))) == pytest.approx(3.0)
    assert pacer.acquire_delay(Limit("ch", Rate(30))) == pytest.approx(3.0)


def arrivals(grants: list[float], first_late: float) -> list[float]:
    """When the requests reach the platform after a cold start: nothing before the first
    connection is ready (TCP and TLS handshakes, a worker busy taking the channel over),
    ``first_late`` seconds after the first grant; then as granted, on warm connections."""
    ready = grants[0] + first_late
    return [max(g, ready) for g in grants]


@pytest.mark.parametrize(("count", "first_late"), [(80, 0.03), (80, 0.049), (200, 0.04)])
def test_a_late_first_request_after_a_cold_start_cannot_overfill_the_platforms_window(
    count: int, first_late: float
) -> None:
    """Issue 9, D15: 81 sends in one second at the platform at 80/s, always in the first second
    after a worker took the channel. The worker paces Rate(count, 1.015) (1.5 % margin)."""
    limit = Limit("ch", Rate(count, 1.015))
    clock = FakeClock(0.0)
    without = run(Pacer(clock, start_margin=0.0), clock, limit, count + 5)
    assert max_in_window(arrivals(without, first_late)) > count, "the defect, reproduced"
    clock = FakeClock(0.0)
    grants = run(Pacer(clock, start_margin=0.05), clock, limit, count + 5)
    assert max_in_window(arrivals(grants, first_late)) <= count


def test_the_cold_start_costs_one_wait_then_the_schedule_is_exact() -> None:
    clock = FakeClock(0.0)
    pacer = Pacer(clock, window_margin=0.0, start_margin=0.05)
    grants = run(pacer, clock, Limit("ch", Rate(4)), 9)
    assert grants == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.05, 1.3, 1.55, 1.8, 2.05])


def test_a_key_idle_for_a_window_starts_cold_again_a_busy_one_does_not() -> None:
    clock = FakeClock(0.0)
    pacer = Pacer(clock, window_margin=0.0, start_margin=0.05)
    limit = Limit("ch", Rate(2))
    grants = run(pacer, clock, limit, 4)
    assert grants == pytest.approx([0.0, 0.5, 1.05, 1.55])  # 0.0 counted as 0.05 (cold)
    clock.now = 2.05  # on schedule: warm
    assert pacer.acquire_delay(limit) == 0.0
    assert pacer.acquire_delay(limit) == pytest.approx(0.5)  # no cold start: 0.5, not 0.55
    clock.now = 10.0  # idle for more than a window: the first grant is cold again
    assert pacer.acquire_delay(limit) == 0.0
    clock.now = 10.5
    assert pacer.acquire_delay(limit) == 0.0
    clock.now = 11.0
    assert pacer.acquire_delay(limit) == pytest.approx(0.05)
