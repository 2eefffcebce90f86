"""Clocks, timers, rngs and the scheduler."""

from __future__ import annotations

import asyncio
import math
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aura_sync.effects import ManualClock, Scheduler, SeededRng, SystemClock, check_seconds
from aura_sync.errors import InvalidArgument, WrongType


def test_manual_clock_advances_and_sleep_returns_at_once() -> None:
    clock = ManualClock(10.0)
    clock.advance(2.5)
    assert clock.now() == 12.5
    clock.sleep(0.5)
    assert clock.now() == 13.0
    asyncio.run(clock.sleep_async(1.0))
    assert clock.now() == 14.0


def test_manual_clock_set_can_step_back() -> None:
    clock = ManualClock(5.0)
    clock.set(1.0)
    assert clock.now() == 1.0


@given(st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), max_size=20))
def test_timers_fire_in_deadline_order_with_now_at_deadline(deadlines: list[float]) -> None:
    clock = ManualClock()
    fired: list[tuple[float, float]] = []
    for d in deadlines:
        clock.call_at(d, lambda d=d: fired.append((d, clock.now())))
    clock.advance(50.0)
    due = sorted(d for d in deadlines if d <= 50.0)
    assert [f[0] for f in fired] == due
    assert all(at == max(d, 0.0) for d, at in fired)
    assert clock.now() == 50.0
    assert clock.pending_timers() == len(deadlines) - len(due)


def test_cancelled_timer_never_fires() -> None:
    clock = ManualClock()
    fired: list[int] = []
    handle = clock.call_at(1.0, lambda: fired.append(1))
    handle.cancel()
    handle.cancel()
    clock.advance(2.0)
    assert fired == []


def test_timer_scheduled_from_a_timer_fires_in_the_same_advance() -> None:
    clock = ManualClock()
    fired: list[float] = []

    def first() -> None:
        fired.append(clock.now())
        clock.call_at(clock.now() + 1.0, lambda: fired.append(clock.now()))

    clock.call_at(1.0, first)
    clock.advance(5.0)
    assert fired == [1.0, 2.0]


class _Inbox:
    def __init__(self) -> None:
        self.got: list[object] = []

    def tell(self, message: object) -> None:
        self.got.append(message)


def test_scheduler_delivers_under_manual_clock_deterministically() -> None:
    clock = ManualClock()
    sched = Scheduler(clock)
    inbox = _Inbox()
    sched.send_after(2.0, inbox, "b")
    sched.send_after(1.0, inbox, "a")
    cancelled = sched.send_after(1.5, inbox, "never")
    cancelled.cancel()
    clock.advance(1.9)
    assert inbox.got == ["a"]
    clock.advance(0.1)
    assert inbox.got == ["a", "b"]


def test_scheduler_delivers_with_the_system_clock() -> None:
    clock = SystemClock()
    sched = Scheduler(clock)
    got = threading.Event()

    class Target:
        def tell(self, message: object) -> None:
            got.set()

    sched.send_after(0.01, Target(), "ping")
    assert got.wait(5.0)


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_bad_seconds_are_refused_naming_the_value(bad: float) -> None:
    with pytest.raises(InvalidArgument, match="delay"):
        check_seconds(bad, "delay")
    with pytest.raises(InvalidArgument):
        ManualClock().advance(bad)


def test_huge_int_seconds_are_refused_not_overflowed() -> None:
    with pytest.raises(InvalidArgument, match="timeout"):
        check_seconds(10**400, "timeout")


def test_bad_seconds_types() -> None:
    with pytest.raises(WrongType, match="bool"):
        check_seconds(True, "timeout")
    with pytest.raises(WrongType, match="str"):
        Scheduler(ManualClock()).send_after("1", _Inbox(), "x")  # type: ignore[arg-type]


def test_seeded_rng_is_reproducible() -> None:
    a, b = SeededRng(42), SeededRng(42)
    assert [a.random() for _ in range(5)] == [b.random() for _ in range(5)]
    with pytest.raises(WrongType):
        SeededRng("seed")  # type: ignore[arg-type]
