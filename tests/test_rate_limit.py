"""Rate limiting core: reference behaviours, rules, bad input and the values on the wire.

Every test runs on a ManualClock; none sleeps.
"""

from __future__ import annotations

import dataclasses
import math
import tracemalloc

import pytest

from aura_sync.effects import ManualClock
from aura_sync.errors import InvalidArgument, WrongType
from aura_sync.ids import DeviceId
from aura_sync.infrastructure.rate_limit import (
    ALLOWED,
    Allowed,
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
)
from aura_sync.messages import codec
from aura_sync.messages.common import ErrorReply

A = DeviceId.from_int(1)
B = DeviceId.from_int(2)
C = DeviceId.from_int(3)

BIG_GLOBAL = {"global_ops_per_second": 1e6, "global_burst": 10**6}


def limiter(clock: ManualClock | None = None, **fields: object) -> RateLimiter:
    return RateLimiter(RateLimitConfig(**fields), clock=clock or ManualClock())  # type: ignore[arg-type]


def is_denied(result: object, retry_after: float, reason: DenialReason) -> bool:
    """A Denied with this reason and a retry_after equal to ``retry_after`` up to float rounding."""
    return (
        isinstance(result, Denied)
        and result.reason is reason
        and result.retry_after == pytest.approx(retry_after, rel=1e-12, abs=1e-12)
    )


def stats_dict(lim: RateLimiter) -> dict[str, int]:
    return dataclasses.asdict(lim.statistics())


# --- reference behaviour of the Rust module ----------------------------------------------


def test_peer_bucket_of_10_allows_10_then_denies_with_one_peer_hit() -> None:
    lim = limiter(peer_ops_per_second=1.0, peer_burst=10)
    results = [lim.check_rate_limit(A) for _ in range(10)]
    assert results == [ALLOWED] * 10
    denied = lim.check_rate_limit(A)
    assert isinstance(denied, Denied)
    assert denied.reason is DenialReason.PEER
    assert denied.retry_after == 1.0
    stats = lim.statistics()
    assert stats.peer_limit_hits == 1
    assert stats.operations_allowed == 10
    assert stats.global_limit_hits == 0
    assert stats.tracked_peers == 1


def test_defaults_follow_the_rust_module() -> None:
    config = RateLimitConfig()
    assert (
        config.global_ops_per_second,
        config.global_burst,
        config.peer_ops_per_second,
        config.peer_burst,
        config.max_tracked_peers,
        config.adaptive,
    ) == (1000.0, 1000, 100.0, 200, 10_000, False)
    assert config.max_cost == 200


def test_results_work_with_match() -> None:
    lim = limiter(peer_ops_per_second=2.0, peer_burst=1)
    seen = []
    for _ in range(2):
        match lim.check_rate_limit(A):
            case Allowed():
                seen.append("allowed")
            case Denied(retry_after, reason):
                seen.append(f"denied {retry_after} {reason.name}")
    assert seen == ["allowed", "denied 0.5 PEER"]
    assert ALLOWED.allowed is True and Denied(0.5, DenialReason.PEER).allowed is False
    assert Allowed() == ALLOWED


def test_global_bucket_denies_across_peers() -> None:
    lim = limiter(global_ops_per_second=10.0, global_burst=3, peer_burst=200)
    assert [lim.check_rate_limit(p) for p in (A, B, C)] == [ALLOWED] * 3
    denied = lim.check_rate_limit(DeviceId.from_int(4))
    assert is_denied(denied, 0.1, DenialReason.GLOBAL)
    assert lim.statistics().global_limit_hits == 1
    assert lim.statistics().peer_limit_hits == 0
    # A new peer denied by the global bucket gets no bucket.
    assert lim.statistics().tracked_peers == 3


def test_denial_reason_is_the_binding_limit() -> None:
    clock = ManualClock()
    lim = limiter(clock, global_ops_per_second=1.0, global_burst=2, peer_ops_per_second=0.1)
    lim.check_rate_limit(A)
    lim.check_rate_limit(B)
    # Both buckets refuse A now: global refills in 1 s, A's bucket has 199 tokens left.
    assert lim.check_rate_limit(A) == Denied(1.0, DenialReason.GLOBAL)
    lim2 = limiter(
        clock, global_ops_per_second=1.0, global_burst=2, peer_ops_per_second=0.1, peer_burst=1
    )
    lim2.check_rate_limit(A)
    lim2.check_rate_limit(B)
    # Global refills in 1 s, A's own bucket in 10 s: the peer limit binds.
    assert lim2.check_rate_limit(A) == Denied(10.0, DenialReason.PEER)


# --- denial consumes nothing ---------------------------------------------------------------


def test_a_denial_consumes_nothing_from_either_bucket() -> None:
    clock = ManualClock()
    lim = limiter(
        clock, global_ops_per_second=1.0, global_burst=5, peer_ops_per_second=1.0, peer_burst=3
    )
    for _ in range(3):
        assert lim.check_rate_limit(A) is ALLOWED
    assert lim.global_tokens() == 2.0
    for _ in range(5):
        assert isinstance(lim.check_rate_limit(A), Denied)  # the peer bucket refuses
    assert lim.global_tokens() == 2.0  # the global bucket gave nothing to the denials
    assert lim.check_rate_limit(B) is ALLOWED
    assert lim.check_rate_limit(B) is ALLOWED
    denied = lim.check_rate_limit(B)  # now the global bucket refuses
    assert isinstance(denied, Denied) and denied.reason is DenialReason.GLOBAL
    assert lim.peer_tokens(B) == 1.0  # ... and B's bucket gave nothing to it
    clock.advance(1.0)
    assert lim.check_rate_limit(B) is ALLOWED


def test_retry_after_is_exact() -> None:
    clock = ManualClock(12345.678)
    lim = limiter(clock, peer_ops_per_second=3.0, peer_burst=2)
    lim.check_rate_limit(A, 2)
    denied = lim.check_rate_limit(A)
    assert isinstance(denied, Denied)
    wait = denied.retry_after
    assert wait == pytest.approx(1 / 3)
    start = clock.now()
    clock.advance(math.nextafter(wait, 0.0))
    assert isinstance(lim.check_rate_limit(A), Denied)
    clock.set(start + wait)
    assert lim.check_rate_limit(A) is ALLOWED


def test_a_clock_that_steps_back_mints_nothing() -> None:
    clock = ManualClock(100.0)
    lim = limiter(clock, peer_ops_per_second=1.0, peer_burst=2)
    lim.check_rate_limit(A, 2)
    clock.set(50.0)  # a step back by 50 s
    assert isinstance(lim.check_rate_limit(A), Denied)
    assert lim.peer_tokens(A) == 0.0
    clock.set(100.5)
    assert lim.peer_tokens(A) == 0.5
    clock.set(101.0)
    assert lim.check_rate_limit(A) is ALLOWED


def test_retry_after_after_a_backwards_step_counts_from_the_clock_reading() -> None:
    clock = ManualClock(100.0)
    lim = limiter(clock, peer_ops_per_second=1.0, peer_burst=1)
    lim.check_rate_limit(A)
    clock.set(99.0)
    denied = lim.check_rate_limit(A)
    assert is_denied(denied, 2.0, DenialReason.PEER)
    assert isinstance(denied, Denied)
    assert 99.0 + denied.retry_after == 101.0  # the smallest float wait that reaches 101
    assert 99.0 + math.nextafter(denied.retry_after, 0.0) < 101.0
    clock.advance(denied.retry_after)
    assert lim.check_rate_limit(A) is ALLOWED


# --- cost validation ----------------------------------------------------------------------


@pytest.mark.parametrize("cost", [0, -1, 201, 10**30])
def test_cost_out_of_range_is_a_value_error_naming_it(cost: int) -> None:
    lim = limiter()
    with pytest.raises(InvalidArgument, match=rf"cost must be an int in 1\.\.200.*{cost}"):
        lim.check_rate_limit(A, cost)
    with pytest.raises(ValueError):
        lim.check_rate_limit(A, cost)
    lim.check_rate_limit(B)  # a tracked peer takes the other path
    with pytest.raises(InvalidArgument, match="cost"):
        lim.check_rate_limit(B, cost)
    assert stats_dict(lim) == stats_dict(limiter()) | {"operations_allowed": 1, "tracked_peers": 1}


@pytest.mark.parametrize("cost", [1.0, True, "1", None, 2.5])
def test_cost_of_the_wrong_type_is_a_value_error_too(cost: object) -> None:
    lim = limiter()
    lim.check_rate_limit(B)
    for peer in (A, B):
        with pytest.raises(InvalidArgument, match="cost must be an int"):
            lim.check_rate_limit(peer, cost)  # type: ignore[arg-type]
    assert lim.statistics().operations_allowed == 1


def test_cost_is_bounded_by_the_smaller_burst() -> None:
    lim = limiter(global_burst=50, peer_burst=200)
    with pytest.raises(InvalidArgument, match=r"1\.\.50"):
        lim.check_rate_limit(A, 51)
    assert lim.check_rate_limit(A, 50) is ALLOWED


@pytest.mark.parametrize("peer", [[1], {}, {"a"}, bytearray(b"x")])
def test_an_unhashable_peer_is_a_wrong_type_naming_it(peer: object) -> None:
    lim = limiter()
    for call in (
        lambda: lim.check_rate_limit(peer),  # type: ignore[arg-type]
        lambda: lim.check_rate_limit(peer, 2),  # type: ignore[arg-type]
        lambda: lim.would_exceed_limit(peer),  # type: ignore[arg-type]
        lambda: lim.available_tokens(peer),  # type: ignore[arg-type]
        lambda: lim.remove_peer(peer),  # type: ignore[arg-type]
        lambda: lim.set_flow_budget(peer, 1, 0),  # type: ignore[arg-type]
    ):
        with pytest.raises(WrongType, match=r"peer must be hashable.*" + type(peer).__name__):
            call()
    assert lim.statistics() == limiter().statistics()


def test_any_hashable_key_is_a_peer_with_the_same_exactness() -> None:
    clock = ManualClock(1000.0)
    lim = limiter(clock, peer_ops_per_second=3.0, peer_burst=2)
    for key in ("203.0.113.7", b"\x01\x02", 7, ("10.0.0.1", 443), A):
        assert [lim.check_rate_limit(key, 1) for _ in range(2)] == [ALLOWED] * 2
        denied = lim.check_rate_limit(key, 1)
        assert isinstance(denied, Denied) and denied.reason is DenialReason.PEER
        assert denied.retry_after == pytest.approx(1 / 3)
        start = clock.now()
        clock.advance(math.nextafter(denied.retry_after, 0.0))
        assert isinstance(lim.check_rate_limit(key, 1), Denied)  # one float less: denied
        clock.set(start + denied.retry_after)
        assert lim.check_rate_limit(key, 1) is ALLOWED  # exactly retry_after: passes
    assert lim.statistics().tracked_peers == 5
    # "1" and 1 and b"1" are different keys, as in any dict.
    assert lim.check_rate_limit("7") is ALLOWED


def test_a_device_id_and_its_raw_bytes_are_the_same_key() -> None:
    lim = limiter(peer_ops_per_second=1.0, peer_burst=3)
    assert lim.check_rate_limit(A, 2) is ALLOWED
    assert lim.peer_tokens(A.raw) == 1.0
    assert lim.check_rate_limit(A.raw) is ALLOWED
    assert isinstance(lim.check_rate_limit(A), Denied)
    assert lim.statistics().tracked_peers == 1


def test_memory_stays_bounded_with_string_keys() -> None:
    clock = ManualClock()
    lim = limiter(clock, **BIG_GLOBAL, peer_ops_per_second=10.0, peer_burst=1, max_tracked_peers=50)
    for i in range(5000):
        lim.check_rate_limit(f"198.51.{i // 256}.{i % 256}")
        assert lim.statistics().tracked_peers <= 50
        if i % 50 == 49:
            clock.advance(0.1)  # every bucket refills: all droppable
    stats = lim.statistics()
    assert stats.operations_allowed == 5000 and stats.tracking_limit_hits == 0


def test_costs_above_one_take_that_many_tokens() -> None:
    lim = limiter(peer_ops_per_second=10.0, peer_burst=10)
    assert lim.check_rate_limit(A, 7) is ALLOWED
    assert lim.peer_tokens(A) == 3.0
    assert is_denied(lim.check_rate_limit(A, 4), 0.1, DenialReason.PEER)
    assert lim.check_rate_limit(A, 3) is ALLOWED


# --- configuration ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "error", "text"),
    [
        ({"global_ops_per_second": 0}, InvalidArgument, "global_ops_per_second"),
        ({"peer_ops_per_second": -1.0}, InvalidArgument, "peer_ops_per_second"),
        ({"peer_ops_per_second": math.nan}, InvalidArgument, "nan"),
        ({"peer_ops_per_second": math.inf}, InvalidArgument, "inf"),
        ({"peer_ops_per_second": "5"}, WrongType, "peer_ops_per_second"),
        ({"peer_ops_per_second": True}, WrongType, "peer_ops_per_second"),
        ({"global_burst": 0}, InvalidArgument, "global_burst"),
        ({"peer_burst": 2.0}, WrongType, "peer_burst"),
        ({"max_tracked_peers": 0}, InvalidArgument, "max_tracked_peers"),
        ({"adaptive": 1}, WrongType, "adaptive"),
        ({"adaptive_decrease": 0.0}, InvalidArgument, "adaptive_decrease"),
        ({"adaptive_decrease": 1.5}, InvalidArgument, "adaptive_decrease"),
        ({"adaptive_increase": -1.0}, InvalidArgument, "adaptive_increase"),
        ({"adaptive_idle_reset": -1.0}, InvalidArgument, "adaptive_idle_reset"),
        ({"flow_budget_retry_after": math.inf}, InvalidArgument, "flow_budget_retry_after"),
        (
            {"adaptive_min_ops_per_second": 10.0, "adaptive_max_ops_per_second": 5.0},
            InvalidArgument,
            "adaptive_min_ops_per_second",
        ),
        (
            {"adaptive": True, "peer_ops_per_second": 5000.0},
            InvalidArgument,
            "peer_ops_per_second=5000.0",
        ),
        ({"peer_ops_per_second": 1e-320}, InvalidArgument, "peer_ops_per_second"),
        ({"global_ops_per_second": 10**400}, InvalidArgument, "global_ops_per_second"),
        ({"peer_burst": 2**53 + 1}, InvalidArgument, "peer_burst"),
        ({"adaptive_increase": 10**400}, InvalidArgument, "adaptive_increase"),
    ],
)
def test_config_is_validated(fields: dict[str, object], error: type[Exception], text: str) -> None:
    with pytest.raises(error, match=text):
        RateLimitConfig(**fields)  # type: ignore[arg-type]


def test_config_normalises_rates_to_float_and_is_frozen() -> None:
    config = RateLimitConfig(peer_ops_per_second=5, global_ops_per_second=7)
    assert type(config.peer_ops_per_second) is float and config.peer_ops_per_second == 5.0
    assert type(config.global_ops_per_second) is float
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.peer_burst = 3  # type: ignore[misc]


def test_limiter_validates_its_arguments() -> None:
    with pytest.raises(WrongType, match="config must be a RateLimitConfig"):
        RateLimiter({"peer_burst": 3}, clock=ManualClock())  # type: ignore[arg-type]
    with pytest.raises(WrongType, match="clock must be a Clock"):
        RateLimiter(RateLimitConfig(), clock=object())  # type: ignore[arg-type]
    assert RateLimiter().config == RateLimitConfig()


def test_results_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Denied(1.0, DenialReason.PEER).retry_after = 2.0  # type: ignore[misc]


# --- one bucket ---------------------------------------------------------------------------


def test_rate_limit_bucket() -> None:
    bucket = RateLimit(2.0, 4)
    assert (bucket.ops_per_second, bucket.burst) == (2.0, 4)
    assert bucket.tokens(0.0) == 4.0
    assert bucket.try_acquire(3, 0.0)
    assert bucket.tokens(0.0) == 1.0
    assert not bucket.try_acquire(2, 0.0)
    assert bucket.tokens(0.0) == 1.0
    assert bucket.retry_after(2, 0.0) == 0.5
    assert bucket.retry_after(1, 0.0) == 0.0
    assert not bucket.try_acquire(2, math.nextafter(0.5, 0.0))
    assert bucket.try_acquire(2, 0.5)
    assert bucket.tokens(10.0) == 4.0
    # a step back is treated as the latest admission time
    assert bucket.tokens(0.0) == 0.0
    assert repr(bucket) == "RateLimit(ops_per_second=2.0, burst=4)"


def test_rate_limit_bucket_validates() -> None:
    with pytest.raises(InvalidArgument, match="ops_per_second"):
        RateLimit(0.0, 1)
    with pytest.raises(WrongType, match="burst"):
        RateLimit(1.0, 1.5)  # type: ignore[arg-type]
    bucket = RateLimit(1.0, 3)
    with pytest.raises(InvalidArgument, match=r"cost must be an int in 1\.\.3.*4"):
        bucket.try_acquire(4, 0.0)
    with pytest.raises(InvalidArgument, match="cost"):
        bucket.retry_after(0, 0.0)
    with pytest.raises(InvalidArgument, match="now"):
        bucket.try_acquire(1, math.nan)
    with pytest.raises(WrongType, match="now"):
        bucket.tokens("0")  # type: ignore[arg-type]
    assert bucket.tokens(0.0) == 3.0


def test_no_fraction_is_lost_over_many_small_refills() -> None:
    # 0.1 s steps at 3 ops/s: integer-refill limiters lose the 0.3-token remainders.
    bucket = RateLimit(3.0, 2)
    now = 0.0
    admitted = 0
    for step in range(1, 10_001):
        now = step * 0.1
        if bucket.try_acquire(1, now):
            admitted += 1
    assert 3.0 * now <= admitted <= 3.0 * now + 2  # rate * T, plus at most the burst


# --- flow budgets -------------------------------------------------------------------------


def test_flow_budget_value() -> None:
    budget = FlowBudget(limit=10, spent=0, epoch=3)
    charged = budget.charge(4)
    assert charged == FlowBudget(10, 4, 3) and budget == FlowBudget(10, 0, 3)
    assert charged.headroom == 6 and charged.can_charge(6) and not charged.can_charge(7)
    assert charged.charge(7) is None
    assert charged.charge(6) == FlowBudget(10, 10, 3)
    assert charged.rotate_epoch(3) is charged
    assert charged.rotate_epoch(2) is charged
    assert charged.rotate_epoch(4) == FlowBudget(10, 0, 4)
    assert FlowBudget(5, 8, 2).headroom == 0


def test_flow_budget_denies_until_the_next_epoch() -> None:
    lim = limiter(flow_budget_retry_after=2.5)
    lim.set_flow_budget(A, limit=3, epoch=7)
    assert [lim.check_rate_limit(A) for _ in range(3)] == [ALLOWED] * 3
    denied = lim.check_rate_limit(A)
    assert denied == Denied(2.5, DenialReason.FLOW_BUDGET)
    assert lim.check_rate_limit(B) is ALLOWED  # other peers are not affected
    peer_tokens = lim.peer_tokens(A)
    global_tokens = lim.global_tokens()
    assert isinstance(lim.check_rate_limit(A), Denied)
    assert (lim.peer_tokens(A), lim.global_tokens()) == (peer_tokens, global_tokens)
    assert lim.statistics().flow_budget_hits == 2
    lim.rotate_epoch(7)  # not a later epoch: nothing changes
    assert lim.check_rate_limit(A).reason is DenialReason.FLOW_BUDGET  # type: ignore[union-attr]
    lim.rotate_epoch(8)
    assert lim.epoch == 8
    assert lim.flow_budget(A) == FlowBudget(3, 0, 8)
    assert lim.check_rate_limit(A) is ALLOWED
    assert lim.flow_budget(A) == FlowBudget(3, 1, 8)


def test_a_budget_refusal_wins_over_a_token_denial_and_tokens_do_not_charge_it() -> None:
    lim = limiter(peer_ops_per_second=1.0, peer_burst=2)
    lim.set_flow_budget(A, limit=2, epoch=0)
    lim.check_rate_limit(A, 2)
    assert lim.check_rate_limit(A).reason is DenialReason.FLOW_BUDGET  # type: ignore[union-attr]
    lim.set_flow_budget(B, limit=5, epoch=0)
    lim.check_rate_limit(B, 2)
    denied = lim.check_rate_limit(B)
    assert isinstance(denied, Denied) and denied.reason is DenialReason.PEER
    assert lim.flow_budget(B) == FlowBudget(5, 2, 0)  # the token denial charged nothing


def test_a_budget_on_a_new_peer_and_cost_above_the_headroom() -> None:
    lim = limiter()
    lim.set_flow_budget(A, limit=5, epoch=0)
    assert lim.check_rate_limit(A, 6).reason is DenialReason.FLOW_BUDGET  # type: ignore[union-attr]
    assert lim.statistics().tracked_peers == 0
    assert lim.check_rate_limit(A, 5) is ALLOWED
    assert lim.flow_budget(A) == FlowBudget(5, 5, 0)


def test_set_flow_budget_rules() -> None:
    lim = limiter(max_tracked_peers=2)
    lim.set_flow_budget(A, 10, 3)
    lim.check_rate_limit(A, 4)
    lim.set_flow_budget(A, 20, 3)  # same epoch: the spend is kept
    assert lim.flow_budget(A) == FlowBudget(20, 4, 3)
    lim.set_flow_budget(A, 20, 4)  # later epoch: starts at zero
    assert lim.flow_budget(A) == FlowBudget(20, 0, 4)
    with pytest.raises(InvalidArgument, match="epoch=3 is earlier"):
        lim.set_flow_budget(A, 20, 3)
    with pytest.raises(InvalidArgument, match="limit"):
        lim.set_flow_budget(A, -1, 4)
    with pytest.raises(WrongType, match="limit"):
        lim.set_flow_budget("A", 1.0, 4)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="epoch"):
        lim.set_flow_budget(B, 1, -1)
    assert lim.flow_budget(A) == FlowBudget(20, 0, 4) and lim.flow_budget(B) is None
    lim.set_flow_budget(B, 1, 0)
    with pytest.raises(InvalidArgument, match="max_tracked_peers=2"):
        lim.set_flow_budget(C, 1, 0)
    assert lim.clear_flow_budget(B) is True
    assert lim.clear_flow_budget(B) is False
    lim.set_flow_budget(C, 1, 0)
    with pytest.raises(WrongType, match="epoch"):
        lim.rotate_epoch("1")  # type: ignore[arg-type]


# --- bounded memory -----------------------------------------------------------------------


def test_idle_full_buckets_are_dropped_and_spent_ones_kept() -> None:
    clock = ManualClock()
    lim = limiter(clock, peer_ops_per_second=1.0, peer_burst=10)
    lim.check_rate_limit(A)
    lim.check_rate_limit(B, 5)
    clock.advance(1.0)
    assert lim.drop_idle_buckets() == 1  # A refilled; B still owes 4 s
    assert lim.statistics().tracked_peers == 1
    assert lim.peer_tokens(B) == 6.0  # B's spend survived
    clock.advance(4.0)
    assert lim.drop_idle_buckets() == 1
    assert lim.statistics().tracked_peers == 0


def test_a_full_table_denies_new_peers_with_an_exact_wait_and_never_drops_spend() -> None:
    clock = ManualClock()
    lim = limiter(clock, peer_ops_per_second=1.0, peer_burst=4, max_tracked_peers=2)
    lim.check_rate_limit(A, 2)  # full again in 2 s
    lim.check_rate_limit(B, 3)  # full again in 3 s
    denied = lim.check_rate_limit(C)
    assert denied == Denied(2.0, DenialReason.TRACKING_LIMIT)
    assert lim.statistics().tracking_limit_hits == 1
    assert lim.statistics().tracked_peers == 2
    assert lim.peer_tokens(A) == 2.0 and lim.peer_tokens(B) == 1.0
    clock.advance(math.nextafter(2.0, 0.0))
    assert isinstance(lim.check_rate_limit(C), Denied)
    clock.set(2.0)
    assert lim.check_rate_limit(C) is ALLOWED  # A's full bucket made room
    assert lim.peer_tokens(B) == 3.0  # B kept its spend
    assert lim.statistics().tracked_peers == 2


def test_memory_stays_bounded_with_100k_distinct_peers() -> None:
    clock = ManualClock()
    lim = limiter(
        clock, **BIG_GLOBAL, peer_ops_per_second=1000.0, peer_burst=1, max_tracked_peers=500
    )
    peers = [DeviceId.from_int(i) for i in range(120_000)]

    def run(chunk: list[DeviceId]) -> int:
        allowed = 0
        for i, peer in enumerate(chunk):
            if lim.check_rate_limit(peer) is ALLOWED:
                allowed += 1
            if i % 100 == 99:
                clock.advance(0.001)  # buckets refill: the full ones become droppable
                assert lim.statistics().tracked_peers <= 500
        return allowed

    allowed = run(peers[:100_000])
    # Steady state: 20k more distinct peers add no memory beyond the 500 buckets.
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        allowed += run(peers[100_000:])
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    stats = lim.statistics()
    assert stats.tracked_peers <= 500
    assert allowed == stats.operations_allowed
    assert allowed + stats.tracking_limit_hits + stats.global_limit_hits == 120_000
    assert allowed > 110_000
    # A leaked bucket per peer would be >= 2 MB here; dict resizing moves ~64 kB either way.
    assert grown < 200_000


def test_tracked_peers_never_exceed_the_limit_when_nothing_refills() -> None:
    lim = limiter(**BIG_GLOBAL, max_tracked_peers=100)
    results = [lim.check_rate_limit(DeviceId.from_int(i)) for i in range(1000)]
    assert results[:100] == [ALLOWED] * 100
    assert all(
        isinstance(r, Denied) and r.reason is DenialReason.TRACKING_LIMIT for r in results[100:]
    )
    assert lim.statistics().tracked_peers == 100


# --- adaptive mode --------------------------------------------------------------------------


def test_adaptive_aimd() -> None:
    clock = ManualClock()
    lim = limiter(
        clock,
        adaptive=True,
        peer_ops_per_second=100.0,
        peer_burst=10,
        adaptive_min_ops_per_second=50.0,
        adaptive_max_ops_per_second=102.0,
    )
    assert lim.report_outcome(A, True) == 100.0  # untracked: not under load
    lim.check_rate_limit(A)
    assert lim.report_outcome(A, Outcome.SUCCESS) == 100.0  # 9 of 10 tokens: not under load
    lim.check_rate_limit(A, 5)
    assert lim.report_outcome(A, True) == 101.0  # 4 of 10 tokens: under load
    assert lim.report_outcome(A, True) == 102.0
    assert lim.report_outcome(A, True) == 102.0  # capped
    assert lim.report_outcome(A, False) == pytest.approx(91.8)
    assert lim.peer_rate(A) == pytest.approx(91.8)
    for _ in range(20):
        lim.report_outcome(A, Outcome.OVERLOAD)
    assert lim.peer_rate(A) == 50.0  # floored
    assert lim.peer_rate(B) == 100.0


def test_adaptive_rate_change_keeps_the_token_count_and_the_rate_governs_refill() -> None:
    clock = ManualClock()
    lim = limiter(
        clock,
        adaptive=True,
        peer_ops_per_second=10.0,
        peer_burst=10,
        adaptive_decrease=0.5,
        adaptive_min_ops_per_second=1.0,
    )
    lim.check_rate_limit(A, 10)
    clock.advance(0.4)
    assert lim.peer_tokens(A) == pytest.approx(4.0)
    assert lim.report_outcome(A, False) == 5.0
    assert lim.peer_tokens(A) == pytest.approx(4.0)  # no minting, no loss
    clock.advance(0.2)
    assert lim.peer_tokens(A) == pytest.approx(5.0)  # refills at 5 ops/s now
    denied = lim.check_rate_limit(A, 6)
    assert isinstance(denied, Denied) and denied.retry_after == pytest.approx(0.2)
    clock.advance(denied.retry_after)
    assert lim.check_rate_limit(A, 6) is ALLOWED


def test_adapted_rates_outlive_refill_until_the_idle_reset() -> None:
    clock = ManualClock()
    lim = limiter(
        clock, adaptive=True, peer_ops_per_second=10.0, peer_burst=10, adaptive_idle_reset=30.0
    )
    lim.check_rate_limit(A)
    lim.report_outcome(A, False)
    clock.advance(10.0)
    assert lim.drop_idle_buckets() == 0
    assert lim.peer_rate(A) == 9.0
    clock.advance(30.0)
    assert lim.drop_idle_buckets() == 1
    assert lim.peer_rate(A) == 10.0


def test_report_outcome_validates_and_is_ignored_when_not_adaptive() -> None:
    lim = limiter(peer_ops_per_second=10.0)
    lim.check_rate_limit(A, 10)
    assert lim.report_outcome(A, False) == 10.0
    assert lim.peer_rate(A) == 10.0
    with pytest.raises(WrongType, match="success must be a bool or an Outcome"):
        lim.report_outcome(A, 1)  # type: ignore[arg-type]
    with pytest.raises(WrongType, match="peer must be hashable"):
        lim.report_outcome([b"x"], True)  # type: ignore[arg-type]
    with pytest.raises(WrongType, match="peer must be hashable"):
        lim.peer_rate(["x"])  # type: ignore[arg-type]


# --- snapshot and restore -------------------------------------------------------------------


def test_snapshot_restore_keeps_spend_budgets_rates_and_the_epoch() -> None:
    clock = ManualClock(50.0)
    config = RateLimitConfig(
        global_ops_per_second=100.0,
        global_burst=100,
        peer_ops_per_second=1.0,
        peer_burst=5,
        adaptive=True,
        adaptive_min_ops_per_second=0.1,
    )
    lim = RateLimiter(config, clock=clock)
    lim.check_rate_limit(A, 5)
    lim.check_rate_limit(B, 2)
    lim.check_rate_limit(A)
    lim.report_outcome(C, False)
    lim.set_flow_budget(B, 3, 9)
    lim.check_rate_limit(B)
    lim.rotate_epoch(9)
    lim.set_flow_budget("idle", 4, 9)  # a budget without a bucket
    snap = lim.snapshot()
    assert isinstance(snap, RateLimiterSnapshot)
    assert {state.key for state in snap.peers} == {A.raw, B.raw, C.raw, "idle"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.epoch = 3  # type: ignore[misc]
    assert codec.decode(codec.encode(snap)) == snap  # exactly what would be persisted
    restored = RateLimiter(config, clock=clock)
    restored.restore(codec.decode(codec.encode(snap)))
    assert restored.flow_budget(B) == FlowBudget(3, 1, 9)
    assert restored.flow_budget("idle") == FlowBudget(4, 0, 9)
    assert restored.epoch == 9
    assert restored.peer_rate(C) == pytest.approx(0.9)
    for peer in (A, B, C):
        assert restored.peer_tokens(peer) == lim.peer_tokens(peer)
    assert restored.global_tokens() == lim.global_tokens()
    assert restored.statistics() == RateLimiterStatistics(0, 0, 0, 0, 3, 0)  # counters restart
    # Both answer the same from here on.
    for step in range(40):
        clock.advance(0.25)
        peer = (A, B, C)[step % 3]
        assert restored.check_rate_limit(peer) == lim.check_rate_limit(peer)


def test_restore_onto_another_clock_is_relative_and_never_credits_the_gap() -> None:
    clock = ManualClock(1000.0)
    config = RateLimitConfig(peer_ops_per_second=1.0, peer_burst=4)
    lim = RateLimiter(config, clock=clock)
    lim.check_rate_limit(A, 4)
    snap = lim.snapshot()
    clock.advance(100.0)  # the process was down for 100 s: no credit for that
    restored = RateLimiter(config, clock=clock)
    restored.restore(snap)
    assert restored.peer_tokens(A) == 0.0
    other = ManualClock(3.0)
    restored2 = RateLimiter(config, clock=other)
    restored2.restore(snap)
    assert restored2.peer_tokens(A) == 0.0
    other.advance(1.0)
    assert restored2.peer_tokens(A) == 1.0


def test_snapshot_after_a_backwards_step_measures_from_the_clock_reading() -> None:
    clock = ManualClock(100.0)
    config = RateLimitConfig(peer_ops_per_second=1.0, peer_burst=1)
    lim = RateLimiter(config, clock=clock)
    lim.check_rate_limit(A)  # full again at 101
    clock.set(90.0)  # a step back: the limiter still waits until the clock reads 101
    restored = RateLimiter(config, clock=clock)
    restored.restore(lim.snapshot())
    clock.set(math.nextafter(101.0, 0.0))
    assert isinstance(restored.check_rate_limit(A), Denied)
    assert isinstance(lim.check_rate_limit(A), Denied)
    clock.set(101.0)
    assert restored.check_rate_limit(A) is ALLOWED


def test_restore_with_a_new_rate_keeps_the_token_deficit() -> None:
    clock = ManualClock()
    lim = RateLimiter(RateLimitConfig(peer_ops_per_second=2.0, peer_burst=4), clock=clock)
    lim.check_rate_limit(A, 3)
    snap = lim.snapshot()
    restored = RateLimiter(RateLimitConfig(peer_ops_per_second=1.0, peer_burst=4), clock=clock)
    restored.restore(snap)
    assert restored.peer_tokens(A) == pytest.approx(1.0)
    clock.advance(1.0)
    assert restored.peer_tokens(A) == pytest.approx(2.0)


def test_restore_replaces_the_state_and_checks_the_snapshot() -> None:
    clock = ManualClock()
    lim = limiter(clock, peer_ops_per_second=1.0, peer_burst=2)
    empty = lim.snapshot()
    lim.check_rate_limit(A, 2)
    lim.restore(empty)
    assert lim.peer_tokens(A) == 2.0 and lim.statistics().tracked_peers == 0
    with pytest.raises(WrongType, match="snapshot must be a RateLimiterSnapshot"):
        lim.restore({"peers": ()})  # type: ignore[arg-type]
    bad_rate = RateLimiterSnapshot(0, 0.0, 1000.0, (PeerBucketState(A.raw, 1.0, -1.0),))
    bad_debt = RateLimiterSnapshot(0, math.nan, 1000.0, ())
    bad_budget = RateLimiterSnapshot(
        0, 0.0, 1000.0, (PeerBucketState("x", 0.0, 1.0, FlowBudget(-1)),)
    )
    for bad, text in ((bad_rate, "ops_per_second"), (bad_debt, "debts"), (bad_budget, "budget")):
        with pytest.raises(InvalidArgument, match=text):
            lim.restore(bad)
    lim.check_rate_limit(B, 2)
    lim.check_rate_limit(("a", "tuple"))
    with pytest.raises(WrongType, match="cannot snapshot the peer key"):
        lim.snapshot()


# --- values on the wire ----------------------------------------------------------------------


def test_core_values_are_the_replies_and_round_trip_the_codec() -> None:
    lim = limiter(peer_ops_per_second=4.0, peer_burst=1)
    allowed, denied = lim.check_rate_limit(A), lim.check_rate_limit(A)
    assert denied == Denied(0.25, DenialReason.PEER)
    lim.set_flow_budget(A, 5, 2)
    for value in (allowed, denied, lim.flow_budget(A), lim.statistics(), lim.snapshot()):
        back = codec.decode(codec.encode(value))
        assert type(back) is type(value) and back == value
    assert 0x20 <= Denied.TAG <= 0x3F and 0x20 <= Allowed.TAG <= 0x3F


def test_a_denial_becomes_a_rate_limited_error_reply() -> None:
    from aura_sync.errors import RateLimited

    denied = Denied(0.75, DenialReason.PEER)
    reply = ErrorReply.from_exception(RateLimited(denied.retry_after, denied.reason.name))
    error = reply.to_exception()
    assert isinstance(error, RateLimited) and error.retry_after == 0.75


class _Impostor:
    """Not a DeviceId, but carries the same 16 raw bytes as one (the table's key)."""

    __slots__ = ("_raw",)

    def __init__(self, raw: bytes) -> None:
        self._raw = raw


def test_an_object_with_a_tracked_peers_raw_bytes_is_its_own_key() -> None:
    lim = limiter(peer_ops_per_second=1.0, peer_burst=2)
    assert lim.check_rate_limit(A, 2) is ALLOWED  # A is now tracked under its raw bytes
    impostor = _Impostor(A.raw)
    assert lim.check_rate_limit(impostor) is ALLOWED  # type: ignore[arg-type]
    assert lim.check_rate_limit(impostor, 1) is ALLOWED  # type: ignore[arg-type]
    assert lim.peer_tokens(A) == 0.0 and lim.statistics().tracked_peers == 2


def test_bucket_refuses_a_time_too_large_for_a_float_and_stays_unchanged() -> None:
    bucket = RateLimit(2.0, 4)
    assert bucket.try_acquire(1, 0.0)
    with pytest.raises(InvalidArgument, match="now"):
        bucket.try_acquire(1, 10**400)
    # the rejected call took nothing: three more fit at the same instant, then none
    assert [bucket.try_acquire(1, 0.0) for _ in range(4)] == [True, True, True, False]


# --- the Rust names: available_tokens, would_exceed_limit, remove_peer, reset -----------------


def test_available_tokens_is_the_least_of_the_three_limits() -> None:
    clock = ManualClock()
    lim = limiter(
        clock, global_ops_per_second=10.0, global_burst=8, peer_ops_per_second=1.0, peer_burst=5
    )
    assert lim.available_tokens(A) == 5.0  # a new peer: its full bucket
    lim.check_rate_limit(A, 3)
    assert lim.available_tokens(A) == 2.0  # its own bucket binds
    lim.check_rate_limit(B, 4)
    assert lim.available_tokens(C) == 1.0  # the global bucket binds
    lim.set_flow_budget(C, 0, 0)
    assert lim.available_tokens(C) == 0.0  # the flow budget binds
    clock.advance(0.5)
    assert lim.available_tokens(A) == pytest.approx(2.5)
    full = limiter(clock, max_tracked_peers=1)
    full.check_rate_limit(A)
    assert full.available_tokens(B) == 0.0  # the table is full of spent buckets
    assert isinstance(full.check_rate_limit(B), Denied)


def test_would_exceed_limit_agrees_with_check_rate_limit_and_consumes_nothing() -> None:
    clock = ManualClock()
    lim = limiter(clock, peer_ops_per_second=2.0, peer_burst=3, max_tracked_peers=2)
    lim.set_flow_budget(C, 1, 0)
    for peer, cost in [(A, 2), (A, 2), (A, 1), (B, 3), (C, 1), (C, 1), ("new", 1)]:

        def state(p: object = peer) -> tuple[object, ...]:
            return (lim.statistics(), lim.peer_tokens(p), lim.global_tokens(), lim.flow_budget(p))

        before = state()
        predicted = lim.would_exceed_limit(peer, cost)
        assert state() == before
        assert predicted is (lim.check_rate_limit(peer, cost) is not ALLOWED)
    with pytest.raises(InvalidArgument, match="cost"):
        lim.would_exceed_limit(A, 4)


def test_remove_peer_forgets_its_bucket_and_budget_but_not_the_global_spend() -> None:
    lim = limiter(global_ops_per_second=1.0, global_burst=10, peer_ops_per_second=1.0, peer_burst=3)
    lim.check_rate_limit("a", 3)
    lim.set_flow_budget("a", 5, 0)
    assert isinstance(lim.check_rate_limit("a"), Denied)
    assert lim.remove_peer("a") is True
    assert lim.remove_peer("a") is False
    assert lim.flow_budget("a") is None and lim.peer_tokens("a") == 3.0
    assert lim.global_tokens() == 7.0
    assert lim.check_rate_limit("a", 3) is ALLOWED
    assert lim.statistics().tracked_peers == 1


def test_reset_makes_the_limiter_as_new_but_a_backwards_clock_still_mints_nothing() -> None:
    clock = ManualClock(100.0)
    lim = limiter(clock, peer_ops_per_second=1.0, peer_burst=2)
    lim.check_rate_limit(A, 2)
    lim.set_flow_budget(B, 1, 3)
    lim.rotate_epoch(4)
    lim.reset()
    assert lim.statistics() == limiter().statistics()
    assert (lim.epoch, lim.flow_budget(B), lim.peer_tokens(A)) == (0, None, 2.0)
    assert lim.check_rate_limit(A, 2) is ALLOWED
    clock.set(50.0)  # the limiter's time stays at 100
    denied = lim.check_rate_limit(A)
    assert isinstance(denied, Denied) and 50.0 + denied.retry_after == 101.0  # exact from 50
