"""RateLimiterActor and RateLimiterClient: every operation by message, error replies, async
forms, scheduled dropping of idle buckets, and a limiter crashed mid-load that never admits
more than burst + rate * T over the whole run."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from test_actors_support import no_leftover_threads, peer, wait_until  # noqa: F401  (fixture)

from aura_sync.actors.address import ActorAddress, spawn
from aura_sync.actors.clients import RateLimiterClient
from aura_sync.actors.rate_limiter import STASH_KEY, RateLimiterActor
from aura_sync.effects import ManualClock
from aura_sync.errors import InvalidArgument, RateLimited, WrongType
from aura_sync.infrastructure.rate_limit import (
    Allowed,
    DenialReason,
    Denied,
    FlowBudget,
    Outcome,
    RateLimitConfig,
    RateLimiter,
)
from aura_sync.messages import Ack, ErrorReply
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


@pytest.fixture
def client(address: ActorAddress) -> RateLimiterClient:
    return RateLimiterClient(address)


def test_every_operation_by_message(address: ActorAddress, clock: ManualClock) -> None:
    for _ in range(4):
        assert address.ask(msgs.CheckRateLimit(A)) == msgs.ALLOWED_DECISION
    denied = address.ask(msgs.CheckRateLimit(A))
    assert denied == msgs.RateLimitDecision(False, 0.5, DenialReason.PEER)
    assert address.ask(msgs.ReportOutcome(A, Outcome.OVERLOAD)) == msgs.PeerRate(A, 1.8)
    assert address.ask(msgs.GetPeerRate(A)) == msgs.PeerRate(A, 1.8)
    assert address.ask(msgs.SetFlowBudget(B, 2, 1)) == Ack()
    assert address.ask(msgs.CheckRateLimit(B, 2)).allowed is True
    over = address.ask(msgs.CheckRateLimit(B))
    assert over.allowed is False and over.reason is DenialReason.FLOW_BUDGET
    assert address.ask(msgs.GetFlowBudget(B)) == msgs.FlowBudgetReply(
        B, msgs.FlowBudgetState(2, 2, 1)
    )
    assert address.ask(msgs.RotateEpoch(2)) == Ack()
    assert address.ask(msgs.GetFlowBudget(B)).budget == msgs.FlowBudgetState(2, 0, 2)
    assert address.ask(msgs.ClearFlowBudget(B)) == Ack()
    assert address.ask(msgs.GetFlowBudget(B)) == msgs.FlowBudgetReply(B, None)
    assert address.ask(msgs.DropIdleBuckets()) == msgs.BucketsDropped(0)
    stats = address.ask(msgs.GetRateLimiterStatistics())
    assert stats == msgs.RateLimiterStatisticsReply(5, 0, 1, 1, 2, 0)


def test_client_sync_forms(client: RateLimiterClient, clock: ManualClock) -> None:
    results = [client.check_rate_limit(A) for _ in range(5)]
    assert results[:4] == [Allowed()] * 4
    match results[4]:
        case Denied(retry_after, reason):
            assert retry_after == 0.5 and reason is DenialReason.PEER
        case _:
            pytest.fail(f"expected a denial, got {results[4]!r}")
    with pytest.raises(RateLimited) as denied:
        client.admit(A)
    assert denied.value.retry_after == 0.5
    clock.advance(0.5)
    client.admit(A)  # waiting exactly retry_after makes it pass
    assert client.report_outcome(A, False) == pytest.approx(1.8)
    assert client.report_outcome(A, Outcome.OVERLOAD) == pytest.approx(1.62)
    assert client.peer_rate(B) == 2.0
    client.set_flow_budget(B, 1, 3)
    assert client.flow_budget(B) == FlowBudget(1, 0, 3)
    client.admit(B)
    assert client.flow_budget(B) == FlowBudget(1, 1, 3)
    client.rotate_epoch(4)
    assert client.flow_budget(B) == FlowBudget(1, 0, 4)
    client.clear_flow_budget(B)
    assert client.flow_budget(B) is None
    assert client.drop_idle_buckets() == 0
    stats = client.statistics()
    assert stats.operations_allowed == 6 and stats.peer_limit_hits == 2


def test_client_async_forms(client: RateLimiterClient) -> None:
    async def scenario() -> None:
        assert await client.check_rate_limit_async(A, 4) == Allowed()
        with pytest.raises(RateLimited):
            await client.admit_async(A)
        assert await client.report_outcome_async(A, False) == pytest.approx(1.8)
        assert await client.peer_rate_async(A) == pytest.approx(1.8)
        await client.set_flow_budget_async(B, 5, 1)
        await client.admit_async(B, 2)
        assert await client.flow_budget_async(B) == FlowBudget(5, 2, 1)
        await client.rotate_epoch_async(2)
        await client.clear_flow_budget_async(B)
        assert await client.flow_budget_async(B) is None
        assert await client.drop_idle_buckets_async() == 0
        assert (await client.statistics_async()).operations_allowed == 2

    asyncio.run(scenario())


def test_bad_input_gets_typed_errors(address: ActorAddress, client: RateLimiterClient) -> None:
    with pytest.raises(InvalidArgument, match=r"cost must be an int in 1\.\.4"):
        client.check_rate_limit(A, 5)  # over the burst: refused by the core, by message
    with pytest.raises(InvalidArgument, match="cost"):
        client.check_rate_limit(A, 0)  # refused before sending
    with pytest.raises(WrongType, match="peer_id must be a DeviceId"):
        client.check_rate_limit(b"peer")  # type: ignore[arg-type]
    with pytest.raises(WrongType, match="success must be a bool or an Outcome"):
        client.report_outcome(A, "yes")  # type: ignore[arg-type]
    client.set_flow_budget(B, 3, 5)
    with pytest.raises(InvalidArgument, match="earlier than the epoch 5"):
        client.set_flow_budget(B, 3, 4)
    reply = address.ask(IsFresh("k", 1))
    assert isinstance(reply, ErrorReply) and reply.error_type == "UnhandledMessage"
    reply = address.ask(InjectCrash())
    assert isinstance(reply, ErrorReply) and reply.error_type == "InvalidArgument"
    assert client.statistics().operations_allowed == 0  # nothing was consumed
    assert client.check_rate_limit(A, 4) == Allowed()  # alive


def test_idle_buckets_are_dropped_on_schedule(
    client: RateLimiterClient, clock: ManualClock
) -> None:
    for n in range(10):
        client.check_rate_limit(peer(100 + n))
    assert client.statistics().tracked_peers == 10
    clock.advance(9.0)  # buckets refilled after 0.5 s, but the tick comes at t=10
    assert client.statistics().tracked_peers == 10
    clock.advance(1.0)
    assert client.statistics().tracked_peers == 0
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
        client = RateLimiterClient(sup.address_of("limiter"))
        allowed = crashes = 0
        steps = round(DURATION / STEP)
        for step in range(steps):
            for n in range(ASKS_PER_STEP):
                if isinstance(client.check_rate_limit(peer(n)), Allowed):
                    allowed += 1
            if step % CRASH_EVERY == CRASH_EVERY - 1:
                client.inject_crash(f"mid-load #{crashes}")
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
        RateLimiterClient(first).set_flow_budget(A, 7, 3)
    finally:
        first.stop()
    limiter = stash[STASH_KEY]
    assert isinstance(limiter, RateLimiter) and limiter.flow_budget(A) == FlowBudget(7, 0, 3)
    with pytest.raises(WrongType, match="must be a RateLimiter"):
        RateLimiterActor(stash={STASH_KEY: 1})
    with pytest.raises(InvalidArgument, match="drop_idle_interval"):
        RateLimiterActor(CONFIG, clock=clock, drop_idle_interval=0)
