"""RateLimiterActor: every operation by ``address.call``, error replies, the async form,
scheduled dropping of idle buckets, snapshot/restore by request, and a limiter crashed
mid-load that never admits more than burst + rate * T over the whole run."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from test_actors_support import no_leftover_threads, peer, wait_until  # noqa: F401  (fixture)

from aura_sync.actors.address import ActorAddress, spawn
from aura_sync.actors.rate_limiter import STASH_KEY, RateLimiterActor
from aura_sync.effects import ManualClock
from aura_sync.errors import InvalidArgument, UnhandledMessage, WrongType
from aura_sync.infrastructure.rate_limit import (
    ALLOWED,
    Allowed,
    DenialReason,
    Denied,
    FlowBudget,
    Outcome,
    RateLimitConfig,
    RateLimiter,
    RateLimiterSnapshot,
    RateLimiterStatistics,
)
from aura_sync.messages import ErrorReply
from aura_sync.messages import rate_limit as msgs
from aura_sync.messages.cache import IsFresh
from aura_sync.messages.faults import InjectCrash
from aura_sync.messages.supervision import ChildStatus
from aura_sync.supervisors.spec import ChildContext, ChildSpec
from aura_sync.supervisors.supervisor import Supervisor

pytestmark = pytest.mark.usefixtures("no_leftover_threads")

A, B = peer(1), peer(2)
CONFIG = RateLimitConfig(
    global_ops_per_second=100.0,
    global_burst=100,
    peer_ops_per_second=2.0,
    peer_burst=4,
    adaptive=True,
    adaptive_min_ops_per_second=1.0,
    adaptive_max_ops_per_second=10.0,
)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def address(clock: ManualClock) -> Iterator[ActorAddress]:
    addr = spawn(lambda: RateLimiterActor(CONFIG, clock=clock, drop_idle_interval=10.0))
    yield addr
    addr.stop()


def test_every_operation_by_call(address: ActorAddress, clock: ManualClock) -> None:
    call = address.call
    for _ in range(4):
        assert call(msgs.CheckRateLimit(A)) is ALLOWED  # the core's own value, as is
    assert call(msgs.CheckRateLimit(A)) == Denied(0.5, DenialReason.PEER)
    assert call(msgs.WouldExceedLimit(A)) is True
    assert call(msgs.GetAvailableTokens(A)) == 0.0
    clock.advance(0.5)
    assert call(msgs.WouldExceedLimit(A)) is False
    assert call(msgs.CheckRateLimit(A)) is ALLOWED  # waiting exactly retry_after passes
    assert call(msgs.ReportOutcome(A, Outcome.OVERLOAD)) == pytest.approx(1.8)
    assert call(msgs.GetPeerRate(A)) == pytest.approx(1.8)
    assert call(msgs.SetFlowBudget(B, 2, 1)) is None
    assert call(msgs.CheckRateLimit(B, 2)) is ALLOWED
    over = call(msgs.CheckRateLimit(B))
    assert isinstance(over, Denied) and over.reason is DenialReason.FLOW_BUDGET
    assert call(msgs.GetFlowBudget(B)) == FlowBudget(2, 2, 1)
    assert call(msgs.RotateEpoch(2)) is None
    assert call(msgs.GetFlowBudget(B)) == FlowBudget(2, 0, 2)
    assert call(msgs.ClearFlowBudget(B)) is True
    assert call(msgs.ClearFlowBudget(B)) is False
    assert call(msgs.GetFlowBudget(B)) is None
    assert call(msgs.DropIdleBuckets()) == 0
    assert call(msgs.GetRateLimiterStatistics()) == RateLimiterStatistics(6, 0, 1, 1, 2, 0)
    assert call(msgs.RemoveRateLimitPeer(B)) is True
    assert call(msgs.ResetRateLimiter()) is None
    assert call(msgs.GetRateLimiterStatistics()) == RateLimiterStatistics(0, 0, 0, 0, 0, 0)


def test_snapshot_and_restore_by_request(address: ActorAddress, clock: ManualClock) -> None:
    address.call(msgs.CheckRateLimit(A, 4))
    address.call(msgs.SetFlowBudget(B, 3, 7))
    snapshot = address.call(msgs.SnapshotRateLimiter())
    assert isinstance(snapshot, RateLimiterSnapshot)
    address.call(msgs.ResetRateLimiter())
    assert address.call(msgs.CheckRateLimit(A, 4)) is ALLOWED  # reset: as new
    address.call(msgs.ResetRateLimiter())
    assert address.call(msgs.RestoreRateLimiter(snapshot)) is None
    assert isinstance(address.call(msgs.CheckRateLimit(A)), Denied)  # the spend is back
    assert address.call(msgs.GetFlowBudget(B)) == FlowBudget(3, 0, 7)
    with pytest.raises(WrongType, match="snapshot must be a RateLimiterSnapshot"):
        address.call(msgs.RestoreRateLimiter("nope"))  # type: ignore[arg-type]


def test_the_async_form(address: ActorAddress) -> None:
    async def scenario() -> None:
        assert await address.call_async(msgs.CheckRateLimit(A, 4)) == Allowed()
        denied = await address.call_async(msgs.CheckRateLimit(A))
        assert isinstance(denied, Denied)
        assert await address.call_async(msgs.ReportOutcome(A, Outcome.OVERLOAD)) == 1.8
        await address.call_async(msgs.SetFlowBudget(B, 5, 1))
        assert await address.call_async(msgs.GetFlowBudget(B)) == FlowBudget(5, 0, 1)

    asyncio.run(scenario())


def test_bad_input_gets_typed_errors(address: ActorAddress) -> None:
    with pytest.raises(InvalidArgument, match=r"cost must be an int in 1\.\.4"):
        address.call(msgs.CheckRateLimit(A, 5))  # over the burst: refused by the core
    with pytest.raises(InvalidArgument, match="cost"):
        address.call(msgs.CheckRateLimit(A, 0))
    with pytest.raises(WrongType, match="success must be a bool or an Outcome"):
        address.call(msgs.ReportOutcome(A, "yes"))  # type: ignore[arg-type]
    address.call(msgs.SetFlowBudget(B, 3, 5))
    with pytest.raises(InvalidArgument, match="earlier than the epoch 5"):
        address.call(msgs.SetFlowBudget(B, 3, 4))
    with pytest.raises(UnhandledMessage):
        address.call(IsFresh("k", 1))  # type: ignore[arg-type]
    reply = address.ask(InjectCrash())
    assert isinstance(reply, ErrorReply) and reply.error_type == "InvalidArgument"
    assert address.call(msgs.GetRateLimiterStatistics()).operations_allowed == 0
    assert address.call(msgs.CheckRateLimit(A, 4)) == Allowed()  # alive


def test_idle_buckets_are_dropped_on_schedule(address: ActorAddress, clock: ManualClock) -> None:
    for n in range(10):
        address.call(msgs.CheckRateLimit(peer(100 + n)))
    assert address.call(msgs.GetRateLimiterStatistics()).tracked_peers == 10
    clock.advance(9.0)  # buckets refilled after 0.5 s, but the tick comes at t=10
    assert address.call(msgs.GetRateLimiterStatistics()).tracked_peers == 10
    clock.advance(1.0)
    wait_until(
        lambda: address.call(msgs.GetRateLimiterStatistics()).tracked_peers == 0, what="dropped"
    )
    assert clock.pending_timers() == 1  # re-armed, once


# --- (d): a crash never resets a limit --------------------------------------------------

BOUND_CONFIG = RateLimitConfig(
    global_ops_per_second=20.0, global_burst=10, peer_ops_per_second=1000.0, peer_burst=1000
)
DURATION = 10.0  # virtual seconds
STEP = 0.05
ASKS_PER_STEP = 3
CRASH_EVERY = 25  # steps


def _run_load_with_crashes(start: Any) -> tuple[int, int]:
    """Drive a supervised limiter for DURATION virtual seconds, crashing it every
    CRASH_EVERY steps; return (allowed decisions, crashes)."""
    clock = ManualClock()
    sup = Supervisor(
        [ChildSpec("limiter", start)], clock=clock, intensity=1000, name="bound"
    ).start()
    try:
        address = sup.address_of("limiter")
        allowed = crashes = 0
        steps = round(DURATION / STEP)
        for step in range(steps):
            for n in range(ASKS_PER_STEP):
                if isinstance(address.call(msgs.CheckRateLimit(peer(n))), Allowed):
                    allowed += 1
            if step % CRASH_EVERY == CRASH_EVERY - 1:
                address.ask(InjectCrash(f"mid-load #{crashes}"))
                crashes += 1
                wait_until(lambda c=crashes: sup.restart_count("limiter") == c, what="restart")
            clock.advance(STEP)
        wait_until(lambda: sup.which_children()[0].status is ChildStatus.RUNNING, what="running")
        return allowed, crashes
    finally:
        sup.stop()


def test_a_limiter_crashed_mid_load_never_admits_more_than_its_bound() -> None:
    def start(ctx: ChildContext) -> RateLimiterActor:
        return RateLimiterActor(
            BOUND_CONFIG,
            clock=ctx.clock,
            scheduler=ctx.scheduler,
            stash=ctx.stash,
            fault_injection=True,
        )

    allowed, crashes = _run_load_with_crashes(start)
    bound = BOUND_CONFIG.global_burst + BOUND_CONFIG.global_ops_per_second * DURATION
    assert crashes == 8
    assert allowed <= bound
    assert allowed >= bound - BOUND_CONFIG.global_burst  # it was saturated, not idle


def test_control_a_limiter_that_forgot_its_spend_would_break_the_bound() -> None:
    """The same run with a factory that ignores the stash: the bound check above can fail."""

    def start(ctx: ChildContext) -> RateLimiterActor:
        return RateLimiterActor(
            BOUND_CONFIG, clock=ctx.clock, scheduler=ctx.scheduler, fault_injection=True
        )

    allowed, crashes = _run_load_with_crashes(start)
    bound = BOUND_CONFIG.global_burst + BOUND_CONFIG.global_ops_per_second * DURATION
    assert crashes == 8 and allowed > bound


def test_the_stash_holds_the_limiter(clock: ManualClock) -> None:
    stash: dict[str, object] = {}
    first = spawn(lambda: RateLimiterActor(CONFIG, clock=clock, stash=stash))
    try:
        first.call(msgs.SetFlowBudget(A, 7, 3))
    finally:
        first.stop()
    limiter = stash[STASH_KEY]
    assert isinstance(limiter, RateLimiter) and limiter.flow_budget(A) == FlowBudget(7, 0, 3)
    with pytest.raises(InvalidArgument, match="drop_idle_interval"):
        RateLimiterActor(CONFIG, clock=clock, drop_idle_interval=0)
