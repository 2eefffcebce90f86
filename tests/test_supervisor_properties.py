"""Property tests: the supervisor against small models of OTP's rules.

* Which children a failure restarts, and in which order, for every strategy.
* When the restart-intensity window makes the supervisor give up (sliding
  window of ``period`` seconds on the clock, OTP's ``Now - Then =< Period``).
"""

from __future__ import annotations

import collections

from _actor_helpers import (
    Crash,
    Log,
    crash_and_wait,
    echo_spec,
    no_leftover_actor_threads,  # noqa: F401  (autouse fixture)
    wait_until,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aura_sync.effects import ManualClock
from aura_sync.errors import SupervisorGaveUp
from aura_sync.supervisors import ONE_FOR_ALL, ONE_FOR_ONE, REST_FOR_ONE, Strategy, Supervisor

FAST = settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def expected_restart(strategy: Strategy, names: list[str], failed: int) -> list[tuple[str, str]]:
    """The OTP model: what a failure of ``names[failed]`` stops and starts, in order."""
    if strategy is ONE_FOR_ONE:
        group = [names[failed]]
    elif strategy is ONE_FOR_ALL:
        group = names
    else:
        group = names[failed:]
    stops = [("stop", n) for n in reversed(group) if n != names[failed]]
    return [("crash", names[failed]), *stops, *[("start", n) for n in group]]


@FAST
@given(
    strategy=st.sampled_from([ONE_FOR_ONE, ONE_FOR_ALL, REST_FOR_ONE]),
    count=st.integers(1, 4),
    data=st.data(),
)
def test_each_strategy_restarts_exactly_its_group_in_order(
    strategy: Strategy, count: int, data: st.DataObject
) -> None:
    names = [f"c{i}" for i in range(count)]
    failed = data.draw(st.integers(0, count - 1), label="failed")
    log = Log()
    sup = Supervisor(
        [echo_spec(n, log) for n in names], strategy=strategy, intensity=5, clock=ManualClock()
    ).start()
    try:
        mark = len(log.items)
        crash_and_wait(sup, names[failed], 1)
        assert [e[:2] for e in log.snapshot()[mark:]] == expected_restart(strategy, names, failed)
    finally:
        sup.stop()


def gives_up_at(gaps: list[float], intensity: int, period: float) -> int | None:
    """Model: index of the failure that exceeds the intensity, or None."""
    window: collections.deque[float] = collections.deque()
    now = 0.0
    for index, gap in enumerate(gaps):
        now += gap
        window.append(now)
        while now - window[0] > period:
            window.popleft()
        if len(window) > intensity:
            return index
    return None


@FAST
@given(
    intensity=st.integers(0, 3),
    period=st.sampled_from([1.0, 2.5, 5.0]),
    gaps=st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.5, 3.0, 6.0]), min_size=1, max_size=6),
)
def test_give_up_happens_exactly_when_the_window_overflows(
    intensity: int, period: float, gaps: list[float]
) -> None:
    clock = ManualClock()
    calls: list[SupervisorGaveUp] = []
    sup = Supervisor(
        [echo_spec("w")], intensity=intensity, period=period, clock=clock, on_give_up=calls.append
    ).start()
    expected = gives_up_at(gaps, intensity, period)
    try:
        for index, gap in enumerate(gaps):
            clock.advance(gap)
            if index == expected:
                assert sup.address_of("w").ask(Crash()).error_type == "ActorCrashed"
                wait_until(lambda: not sup.is_alive(), what="give up")
                break
            crash_and_wait(sup, "w", index + 1)
        assert len(calls) == (0 if expected is None else 1)
        assert sup.restart_count("w") == (len(gaps) if expected is None else expected)
    finally:
        sup.stop()
