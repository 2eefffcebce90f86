"""Property tests of rate limiting: the token-bucket bounds, exact retry_after,
denials that change nothing, a backwards clock that mints nothing, the global and
per-peer bounds together, the fast path agreeing with the readable one,
snapshot/restore that never admits more, the FlowBudget merge laws and the codec
round trip of the rate-limit requests and values.

Times are floats on a ManualClock; the interval bound allows 1e-6 tokens of slack
for float rounding of the times themselves (far below one op, so a single extra
admission still fails it).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from aura_sync.effects import ManualClock
from aura_sync.errors import DecodeError, InvalidArgument
from aura_sync.ids import DeviceId
from aura_sync.infrastructure.rate_limit import (
    ALLOWED,
    DenialReason,
    Denied,
    FlowBudget,
    Outcome,
    PeerBucketState,
    RateLimit,
    RateLimitConfig,
    RateLimiter,
    RateLimiterSnapshot,
    RateLimiterStatistics,
    _key,
)
from aura_sync.messages import codec
from aura_sync.messages import rate_limit as msgs

SETTINGS = settings(max_examples=80, deadline=None)
SLACK = 1e-6
PEERS = [DeviceId.from_int(i) for i in range(5)]

# Clock moves: mostly forward (some tiny, some exact multiples), sometimes back.
forward = st.one_of(
    st.floats(0.0, 2.0, allow_nan=False),
    st.sampled_from([0.0, 0.1, 0.25, 1 / 3, 1.0]),
    st.floats(0.0, 1e-6, allow_nan=False),
)
moves = st.one_of(forward, forward, forward, st.floats(-3.0, 0.0, allow_nan=False))
rates = st.one_of(st.sampled_from([0.5, 1.0, 2.0, 3.0, 10.0]), st.floats(0.2, 50.0))
starts = st.one_of(st.just(0.0), st.floats(0.0, 1e6), st.just(12345.678))


def check_windows(events: list[tuple[float, int]], burst: int, rate: float) -> None:
    """In every interval [t_i, t_j] of admissions, admitted cost <= burst + rate * (t_j - t_i)."""
    for i in range(len(events)):
        total = 0
        for j in range(i, len(events)):
            total += events[j][1]
            span = events[j][0] - events[i][0]
            assert total <= burst + rate * span + SLACK, (i, j, total, span, events)


# --- one token bucket -------------------------------------------------------------------------


@SETTINGS
@given(
    rate=rates,
    burst=st.integers(1, 6),
    start=starts,
    ops=st.lists(st.tuples(moves, st.integers(1, 6)), max_size=40),
)
def test_token_bucket_rules(
    rate: float, burst: int, start: float, ops: list[tuple[float, int]]
) -> None:
    bucket = RateLimit(rate, burst)
    now = start
    latest = -math.inf  # the latest time the bucket admitted at (its effective clock)
    seen = -math.inf  # the latest time it was shown
    events: list[tuple[float, int]] = []
    for move, raw_cost in ops:
        now = max(0.0, now + move)
        seen = max(seen, now)
        cost = min(raw_cost, burst)
        tokens = bucket.tokens(now)
        assert 0.0 <= tokens <= burst
        # A backwards reading mints nothing: never more tokens than at the latest time seen.
        assert tokens <= bucket.tokens(seen)
        wait = bucket.retry_after(cost, now)
        state = (bucket._tat, bucket._last)
        if bucket.try_acquire(cost, now):
            assert wait == 0.0
            latest = max(latest, now)
            events.append((latest, cost))
            continue
        assert wait > 0.0
        assert (bucket._tat, bucket._last) == state  # a denial changes nothing
        # Waiting exactly retry_after passes, any smaller float wait does not.
        assert copy.copy(bucket).try_acquire(cost, now + wait)
        assert not copy.copy(bucket).try_acquire(cost, now + math.nextafter(wait, 0.0))
    check_windows(events, burst, rate)


@SETTINGS
@given(rate=rates, burst=st.integers(1, 5), start=starts, back=st.floats(0.0, 100.0))
def test_a_backwards_clock_admits_nothing_a_frozen_clock_would_not(
    rate: float, burst: int, start: float, back: float
) -> None:
    stepped, frozen = RateLimit(rate, burst), RateLimit(rate, burst)
    assert stepped.try_acquire(burst, start) and frozen.try_acquire(burst, start)
    earlier = max(0.0, start - back)
    later = start + 1.0 / rate
    for now_stepped, now_frozen in [(earlier, start)] * (burst + 1) + [(later, later)] * 2:
        assert stepped.try_acquire(1, now_stepped) == frozen.try_acquire(1, now_frozen)
        assert stepped.tokens(now_stepped) == frozen.tokens(now_frozen)
        assert stepped.retry_after(1, now_stepped) >= frozen.retry_after(1, now_frozen)


# --- global + peer ---------------------------------------------------------------------------

limiter_configs = st.builds(
    RateLimitConfig,
    global_ops_per_second=rates,
    global_burst=st.integers(1, 6),
    peer_ops_per_second=rates,
    peer_burst=st.integers(1, 6),
    max_tracked_peers=st.sampled_from([2, 3, 100]),
)
requests = st.lists(
    st.tuples(st.integers(0, len(PEERS) - 1), st.integers(1, 6), moves), max_size=50
)


def public_state(lim: RateLimiter) -> tuple[Any, ...]:
    return (
        lim.global_tokens(),
        tuple(lim.peer_tokens(p) for p in PEERS),
        tuple(lim.flow_budget(p) for p in PEERS),
    )


@SETTINGS
@given(config=limiter_configs, start=starts, ops=requests)
def test_global_and_peer_bounds_both_hold(
    config: RateLimitConfig, start: float, ops: list[tuple[int, int, float]]
) -> None:
    clock = ManualClock(start)
    lim = RateLimiter(config, clock=clock)
    latest = -math.inf
    everyone: list[tuple[float, int]] = []
    per_peer: dict[int, list[tuple[float, int]]] = {i: [] for i in range(len(PEERS))}
    denials = 0
    for peer, raw_cost, move in ops:
        clock.set(max(0.0, clock.now() + move))
        latest = max(latest, clock.now())
        cost = min(raw_cost, config.max_cost)
        before = public_state(lim)
        result = lim.check_rate_limit(PEERS[peer], cost)
        if result is ALLOWED:
            everyone.append((latest, cost))
            per_peer[peer].append((latest, cost))
        else:
            denials += 1
            assert isinstance(result, Denied) and math.isfinite(result.retry_after)
            assert public_state(lim) == before  # a denial consumes nothing
        assert lim.statistics().tracked_peers <= config.max_tracked_peers
    check_windows(everyone, config.global_burst, config.global_ops_per_second)
    for events in per_peer.values():
        check_windows(events, config.peer_burst, config.peer_ops_per_second)
    stats = lim.statistics()
    assert stats.operations_allowed == len(everyone)
    assert stats.global_limit_hits + stats.peer_limit_hits + stats.tracking_limit_hits == denials


def _replay(
    config: RateLimitConfig, start: float, ops: list[tuple[int, int, float]]
) -> tuple[ManualClock, RateLimiter]:
    clock = ManualClock(start)
    lim = RateLimiter(config, clock=clock)
    for peer, raw_cost, move in ops:
        clock.set(max(0.0, clock.now() + move))
        lim.check_rate_limit(PEERS[peer], min(raw_cost, config.max_cost))
    return clock, lim


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=limiter_configs, start=starts, ops=requests, peer=st.integers(0, 4))
def test_waiting_exactly_retry_after_passes_and_less_does_not(
    config: RateLimitConfig, start: float, ops: list[tuple[int, int, float]], peer: int
) -> None:
    config = dataclasses.replace(config, max_tracked_peers=100)  # token denials only
    cost = config.max_cost
    _, lim = _replay(config, start, ops)
    result = lim.check_rate_limit(PEERS[peer], cost)
    if result is ALLOWED:
        return
    assert isinstance(result, Denied)
    assert result.reason in (DenialReason.GLOBAL, DenialReason.PEER)
    clock, again = _replay(config, start, ops)
    clock.advance(result.retry_after)
    assert again.check_rate_limit(PEERS[peer], cost) is ALLOWED
    clock, again = _replay(config, start, ops)
    clock.advance(math.nextafter(result.retry_after, 0.0))
    assert isinstance(again.check_rate_limit(PEERS[peer], cost), Denied)


@SETTINGS
@given(
    start=starts,
    ops=st.lists(
        st.tuples(st.integers(0, 2), st.sampled_from(["check", "ok", "overload"]), moves),
        max_size=60,
    ),
)
def test_adaptive_rates_stay_in_bounds_and_never_mint(
    start: float, ops: list[tuple[int, str, float]]
) -> None:
    config = RateLimitConfig(
        global_ops_per_second=1e6,
        global_burst=10**6,
        peer_ops_per_second=4.0,
        peer_burst=4,
        adaptive=True,
        adaptive_min_ops_per_second=1.0,
        adaptive_max_ops_per_second=6.0,
        adaptive_increase=0.5,
        adaptive_decrease=0.5,
    )
    clock = ManualClock(start)
    lim = RateLimiter(config, clock=clock)
    latest = -math.inf
    per_peer: dict[int, list[tuple[float, int]]] = {0: [], 1: [], 2: []}
    for peer, op, move in ops:
        clock.set(max(0.0, clock.now() + move))
        latest = max(latest, clock.now())
        if op == "check":
            if lim.check_rate_limit(PEERS[peer]) is ALLOWED:
                per_peer[peer].append((latest, 1))
            continue
        before = lim.peer_tokens(PEERS[peer])
        rate = lim.report_outcome(PEERS[peer], op == "ok")
        assert 1.0 <= rate <= 6.0
        assert rate == lim.peer_rate(PEERS[peer])
        assert lim.peer_tokens(PEERS[peer]) <= before + 1e-9  # a rate change mints nothing
    for events in per_peer.values():
        check_windows(events, config.peer_burst, config.adaptive_max_ops_per_second)


# --- the fast path against the readable path -----------------------------------------------------

fast_ops = st.lists(
    st.tuples(
        st.sampled_from(["check", "check", "check", "ok", "overload", "budget", "clear", "drop"]),
        st.integers(0, len(PEERS) - 1),
        st.integers(1, 3),
        moves,
    ),
    max_size=60,
)


@settings(max_examples=100, deadline=None)
@given(
    config=st.builds(
        RateLimitConfig,
        global_ops_per_second=rates,
        global_burst=st.integers(3, 6),
        peer_ops_per_second=st.sampled_from([1.0, 2.0, 3.0]),
        peer_burst=st.integers(3, 6),
        max_tracked_peers=st.sampled_from([2, 3, 100]),
        adaptive=st.booleans(),
        adaptive_min_ops_per_second=st.just(0.5),
        adaptive_max_ops_per_second=st.just(8.0),
        adaptive_increase=st.just(0.7),
        adaptive_decrease=st.just(0.6),
        adaptive_idle_reset=st.sampled_from([0.0, 1.0]),
    ),
    start=starts,
    ops=fast_ops,
)
def test_the_fast_path_agrees_with_the_readable_path(
    config: RateLimitConfig, start: float, ops: list[tuple[str, int, int, float]]
) -> None:
    """``check_rate_limit`` (its inlined path for a tracked peer at cost 1) and the
    readable ``_decide`` give the same result, state and counters on every step."""
    clock = ManualClock(start)
    fast, readable = RateLimiter(config, clock=clock), RateLimiter(config, clock=clock)
    for op, peer, cost, move in ops:
        clock.set(max(0.0, clock.now() + move))
        both = (fast, readable)
        if op == "check":
            got = fast.check_rate_limit(PEERS[peer])
            want = readable._decide(_key(PEERS[peer]), 1, True)
            assert type(got) is type(want) and got == want
        elif op == "budget":
            refused = 0
            for lim in both:
                try:
                    lim.set_flow_budget(PEERS[peer], cost, 0)
                except InvalidArgument:  # max_tracked_peers budgets attached already
                    refused += 1
            assert refused in (0, 2)
        elif op == "clear":
            for lim in both:
                lim.clear_flow_budget(PEERS[peer])
        elif op == "drop":
            assert fast.drop_idle_buckets() == readable.drop_idle_buckets()
        else:
            assert fast.report_outcome(PEERS[peer], op == "ok") == readable.report_outcome(
                PEERS[peer], op == "ok"
            )
        assert fast.statistics() == readable.statistics()
        assert public_state(fast) == public_state(readable)
        assert fast._hw == readable._hw and fast._next_sweep == readable._next_sweep


# --- flow budgets ----------------------------------------------------------------------------

small = st.integers(0, 20)
u64 = st.one_of(small, st.integers(0, 2**64 - 1))
budgets = st.builds(FlowBudget, limit=u64, spent=u64, epoch=u64)


@SETTINGS
@given(budget=budgets, cost=u64, epoch=u64)
def test_flow_budget_charge_and_rotate(budget: FlowBudget, cost: int, epoch: int) -> None:
    charged = budget.charge(cost)
    if budget.spent + cost > budget.limit:
        assert charged is None and not budget.can_charge(cost)
    else:
        assert charged == FlowBudget(budget.limit, budget.spent + cost, budget.epoch)
        assert charged.spent <= charged.limit
    rotated = budget.rotate_epoch(epoch)
    assert rotated.limit == budget.limit
    assert rotated.epoch == max(budget.epoch, epoch)
    assert rotated.spent == (0 if epoch > budget.epoch else budget.spent)


# --- messages ---------------------------------------------------------------------------------

peer_ids = st.binary(min_size=16, max_size=16).map(DeviceId)
seconds = st.floats(0.0, 1e9, allow_nan=False)
reasons = st.sampled_from(list(DenialReason))
snapshots = st.builds(
    RateLimiterSnapshot,
    u64,
    st.floats(-1e9, 1e9),
    st.floats(1e-9, 1e9),
    st.lists(
        st.builds(
            PeerBucketState,
            st.one_of(st.binary(max_size=16), st.text(max_size=8), u64),
            st.floats(-1e9, 1e9),
            st.floats(1e-9, 1e9),
            st.none() | budgets,
        ),
        max_size=3,
    ).map(tuple),
)
rate_messages = st.one_of(
    st.builds(msgs.CheckRateLimit, peer_ids, st.integers(1, 2**64 - 1)),
    st.just(ALLOWED),
    st.builds(Denied, seconds, reasons),
    st.builds(msgs.ReportOutcome, peer_ids, st.sampled_from(list(Outcome))),
    st.builds(msgs.GetPeerRate, peer_ids),
    st.builds(msgs.SetFlowBudget, peer_ids, u64, u64),
    st.builds(msgs.ClearFlowBudget, peer_ids),
    st.builds(msgs.GetFlowBudget, peer_ids),
    budgets,
    st.builds(msgs.RotateEpoch, u64),
    st.just(msgs.DropIdleBuckets()),
    st.just(msgs.GetRateLimiterStatistics()),
    st.builds(RateLimiterStatistics, u64, u64, u64, u64, u64, u64),
    st.builds(msgs.GetAvailableTokens, peer_ids),
    st.builds(msgs.WouldExceedLimit, peer_ids, st.integers(1, 2**64 - 1)),
    st.builds(msgs.RemoveRateLimitPeer, peer_ids),
    st.just(msgs.ResetRateLimiter()),
    st.just(msgs.SnapshotRateLimiter()),
    snapshots,
    st.builds(msgs.RestoreRateLimiter, snapshots),
)


@SETTINGS
@given(message=rate_messages)
def test_rate_limit_messages_round_trip(message: Any) -> None:
    data = codec.encode(message)
    back = codec.decode(data)
    assert type(back) is type(message) and back == message
    assert 0x20 <= message.TAG <= 0x3F


@SETTINGS
@given(message=rate_messages, data=st.data())
def test_mutated_rate_limit_frames_only_raise_decode_error(message: Any, data: Any) -> None:
    raw = bytearray(codec.encode(message))
    index = data.draw(st.integers(0, len(raw) - 1))
    raw[index] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    for frame in (bytes(raw), bytes(raw[:cut])):
        with contextlib.suppress(DecodeError):  # anything else fails the test
            codec.decode(frame)


# --- stateful: the limiter against its bounds, with drops, budgets and restarts -----------------


class LimiterMachine(RuleBasedStateMachine):
    """Random calls, clock moves (back too), drops, budgets and restore-from-snapshot.

    Invariants: both interval bounds over every admission so far, tokens in
    [0, burst], at most max_tracked_peers buckets, the flow budgets equal a
    model, the counters add up; dropping idle buckets changes no token count;
    a restored limiter never holds more tokens than the original.
    """

    def __init__(self) -> None:
        super().__init__()
        self.config = RateLimitConfig(
            global_ops_per_second=4.0,
            global_burst=5,
            peer_ops_per_second=1.5,
            peer_burst=3,
            max_tracked_peers=3,
        )
        self.clock = ManualClock(100.0)
        self.lim = RateLimiter(self.config, clock=self.clock)
        self.latest = -math.inf
        self.everyone: list[tuple[float, int]] = []
        self.per_peer: dict[int, list[tuple[float, int]]] = {i: [] for i in range(len(PEERS))}
        self.budgets: dict[int, list[int]] = {}  # peer -> [limit, spent, epoch]
        self.epoch = 0
        self.denials = 0
        self.admitted_before_restart = 0

    def _seen(self) -> None:
        """The limiter is about to read the clock: its time is the latest reading."""
        self.latest = max(self.latest, self.clock.now())

    @rule(peer=st.integers(0, 4), cost=st.integers(1, 3))
    def check(self, peer: int, cost: int) -> None:
        self._seen()
        before = public_state(self.lim)
        available = self.lim.available_tokens(PEERS[peer])
        assert 0.0 <= available <= min(before[0], before[1][peer])
        predicted = self.lim.would_exceed_limit(PEERS[peer], cost)
        assert public_state(self.lim) == before  # a prediction consumes nothing
        result = self.lim.check_rate_limit(PEERS[peer], cost)
        assert predicted is (result is not ALLOWED)
        if result is ALLOWED:
            assert available >= cost - SLACK
        budget = self.budgets.get(peer)
        if result is ALLOWED:
            self.everyone.append((self.latest, cost))
            self.per_peer[peer].append((self.latest, cost))
            if budget is not None:
                budget[1] += cost
                assert budget[1] <= budget[0]
        else:
            self.denials += 1
            assert public_state(self.lim) == before
            assert isinstance(result, Denied)
            if budget is not None and budget[1] + cost > budget[0]:
                assert result.reason is DenialReason.FLOW_BUDGET

    @rule(dt=forward)
    def advance(self, dt: float) -> None:
        self.clock.advance(dt)

    @rule(dt=st.floats(0.0, 5.0))
    def step_back(self, dt: float) -> None:
        self.clock.set(self.clock.now() - dt)

    @rule()
    def drop_idle(self) -> None:
        self._seen()
        before = public_state(self.lim)
        self.lim.drop_idle_buckets()
        assert public_state(self.lim) == before  # dropping loses no spend

    @rule(peer=st.integers(0, 4), limit=st.integers(0, 6), later=st.booleans())
    def set_budget(self, peer: int, limit: int, later: bool) -> None:
        current = self.budgets.get(peer)
        if current is None and len(self.budgets) >= self.config.max_tracked_peers:
            return  # at most max_tracked_peers budgets (a unit test covers the refusal)
        epoch = (current[2] if current else self.epoch) + (1 if later else 0)
        self.lim.set_flow_budget(PEERS[peer], limit, epoch)
        if current is None or epoch > current[2]:
            self.budgets[peer] = [limit, 0, epoch]
        else:
            current[0] = limit

    @rule()
    def rotate(self) -> None:
        self.epoch += 1
        self.lim.rotate_epoch(self.epoch)
        for budget in self.budgets.values():
            if self.epoch > budget[2]:
                budget[1:] = [0, self.epoch]

    @precondition(lambda self: len(self.everyone) > 0)
    @rule()
    def restart(self) -> None:
        self._seen()
        before = public_state(self.lim)
        stats = self.lim.statistics()
        snapshot = codec.decode(codec.encode(self.lim.snapshot()))  # as it would be persisted
        self.lim = RateLimiter(self.config, clock=self.clock)
        self.lim.restore(snapshot)
        after = public_state(self.lim)
        assert after[0] <= before[0]
        assert all(a <= b for a, b in zip(after[1], before[1], strict=True))
        assert after[2] == before[2]
        restored = self.lim.statistics()
        assert restored.tracked_peers <= stats.tracked_peers  # full buckets are left out
        self.denials = 0  # counters restart; the admissions so far still bound what follows
        self.admitted_before_restart += stats.operations_allowed

    @invariant()
    def bounds_hold(self) -> None:
        check_windows(self.everyone, self.config.global_burst, self.config.global_ops_per_second)
        for events in self.per_peer.values():
            check_windows(events, self.config.peer_burst, self.config.peer_ops_per_second)

    @invariant()
    def state_is_consistent(self) -> None:
        self._seen()  # the token reads below show the limiter this clock reading
        stats = self.lim.statistics()
        assert stats.tracked_peers <= self.config.max_tracked_peers
        assert stats.operations_allowed + self.admitted_before_restart == len(self.everyone)
        hits = (
            stats.global_limit_hits
            + stats.peer_limit_hits
            + stats.flow_budget_hits
            + stats.tracking_limit_hits
        )
        assert hits == self.denials
        assert 0.0 <= self.lim.global_tokens() <= self.config.global_burst
        for i, peer in enumerate(PEERS):
            assert 0.0 <= self.lim.peer_tokens(peer) <= self.config.peer_burst
            model = self.budgets.get(i)
            expected = None if model is None else FlowBudget(*model)
            assert self.lim.flow_budget(peer) == expected


TestLimiterMachine = LimiterMachine.TestCase
TestLimiterMachine.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)


# --- the cost-1 fast path's exact wait -----------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    rate=rates,
    start=st.one_of(
        starts, st.floats(0.0, 2.0**40), st.sampled_from([2.0**k for k in range(-3, 41)])
    ),
    moves=st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=1, max_size=6),
)
def test_repeated_cost_one_denials_wait_exactly_retry_after(
    rate: float, start: float, moves: list[float]
) -> None:
    """Denials of cost 1 in a row (the inlined wait, with its cached gap warm), at any clock
    magnitude (powers of two included): each retry_after passes exactly, one float less fails."""
    config = RateLimitConfig(
        global_ops_per_second=1e6, global_burst=10**6, peer_ops_per_second=rate, peer_burst=1
    )

    def replay(k: int) -> tuple[ManualClock, RateLimiter]:
        clock = ManualClock(start)
        lim = RateLimiter(config, clock=clock)
        assert lim.check_rate_limit(PEERS[0]) is ALLOWED
        for move in moves[:k]:
            clock.advance(move)
            lim.check_rate_limit(PEERS[0])  # denials change nothing: replays agree
        return clock, lim

    clock, lim = replay(0)
    for k, move in enumerate(moves):
        clock.advance(move)
        result = lim.check_rate_limit(PEERS[0])
        if result is ALLOWED:
            return
        assert isinstance(result, Denied)
        assert result.reason is DenialReason.PEER
        again_clock, again = replay(k + 1)
        again_clock.advance(result.retry_after)
        assert again.check_rate_limit(PEERS[0]) is ALLOWED
        again_clock, again = replay(k + 1)
        again_clock.advance(math.nextafter(result.retry_after, 0.0))
        assert isinstance(again.check_rate_limit(PEERS[0]), Denied)
