"""Property: restarts through the state store never let a limiter admit more than its limits.

A limiter is restarted (snapshot, a fresh limiter, ``merge_spend``, ``restore``) at any
point, with any downtime, after a clean stop or after a crash that lost the spend since
the last save.  Over every window the admitted requests stay within ``burst + rate * T``:
for the global bucket always, for each peer after clean stops (a crash can only lose the
record of a peer whose bucket was full at the last save: documented)."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from aura_sync.effects import ManualClock
from aura_sync.infrastructure.rate_limit import (
    Allowed,
    RateLimitConfig,
    RateLimiter,
    RateLimiterSnapshot,
)
from aura_sync.node.state import merge_spend

CONFIG = RateLimitConfig(global_ops_per_second=2.0, global_burst=5, peer_ops_per_second=1.0,
                         peer_burst=3)  # fmt: skip

request = st.tuples(st.just("req"), st.integers(0, 5), st.sampled_from([0.0, 0.0, 0.0, 0.01, 0.5]))
save = st.tuples(st.just("save"), st.just(0), st.just(0.0))
restart = st.tuples(
    st.sampled_from(["clean", "crash"]), st.just(0), st.sampled_from([0.0, 0.1, 1.0, 5.0])
)
actions = st.lists(
    st.one_of(request, request, request, request, save, restart), min_size=8, max_size=60
)


def _within(times: list[float], burst: int, rate: float) -> bool:
    return all(
        j - i + 1 <= burst + rate * (times[j] - times[i]) + 1e-6
        for i in range(len(times))
        for j in range(i, len(times))
    )


def _restart(saved: RateLimiterSnapshot, clock: ManualClock, clean: bool) -> RateLimiter:
    new = RateLimiter(CONFIG, clock=clock)
    new.restore(merge_spend(saved, new.snapshot(), CONFIG, clean=clean))
    return new


_BURST = [("req", 0, 0.0)] * 3 + [("req", 1, 0.0)] * 2


@settings(max_examples=500, deadline=None)
@given(actions)
@example([*_BURST, ("clean", 0, 0.0), ("req", 2, 0.0)])
@example([*_BURST, ("crash", 0, 0.0), ("req", 2, 0.0)])
def test_restarted_limiters_stay_within_their_limits(steps: list[tuple[str, int, float]]) -> None:
    clock = ManualClock(100.0)
    limiter = RateLimiter(CONFIG, clock=clock)
    saved = limiter.snapshot()  # the node saves once at start
    crashed = False
    admitted: dict[int, list[float]] = {p: [] for p in range(6)}
    overall: list[float] = []
    for kind, peer, seconds in steps:
        if kind == "req":
            clock.advance(seconds)
            if isinstance(limiter.check_rate_limit(peer), Allowed):
                admitted[peer].append(clock.now())
                overall.append(clock.now())
        elif kind == "save":
            saved = limiter.snapshot()
        else:
            if kind == "clean":
                saved = limiter.snapshot()  # the final save at stop
            else:
                crashed = True  # the spend since the last save is lost
            clock.advance(seconds)  # the node is down
            limiter = _restart(saved, clock, clean=kind == "clean")
            saved = limiter.snapshot()
    assert _within(overall, CONFIG.global_burst, CONFIG.global_ops_per_second)
    if not crashed:
        for times in admitted.values():
            assert _within(times, CONFIG.peer_burst, CONFIG.peer_ops_per_second)


def test_the_property_can_fail_without_the_store() -> None:
    """The control: restarting fresh (nothing restored) admits a second burst at once."""
    clock = ManualClock(0.0)
    limiter = RateLimiter(CONFIG, clock=clock)
    times = []
    for _ in range(2):
        for _ in range(CONFIG.peer_burst):
            assert isinstance(limiter.check_rate_limit(0), Allowed)
            times.append(clock.now())
        limiter = RateLimiter(CONFIG, clock=clock)
    assert not _within(times, CONFIG.peer_burst, CONFIG.peer_ops_per_second)
