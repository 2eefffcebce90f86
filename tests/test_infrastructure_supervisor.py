"""The infrastructure supervisor: ONE_FOR_ONE over cache, rate limiter, peer manager and
pool; starts (with or without a connector, blocking or from a coroutine), survives injected
crashes (restarting exactly the crashed child, keeping state and the pool's connections),
gives up past its intensity, nests under a root, and stops in reverse order."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from test_actors_support import (  # noqa: F401  (fixture)
    FakeConnector,
    no_leftover_threads,
    peer,
    wait_until,
)

from aura_sync.actors.address import ActorAddress
from aura_sync.effects import ManualClock
from aura_sync.errors import InvalidArgument, NotFound, SupervisorGaveUp, WrongType
from aura_sync.infrastructure.connections import PoolConfig
from aura_sync.infrastructure.rate_limit import Allowed, Denied, RateLimitConfig
from aura_sync.messages import ErrorReply
from aura_sync.messages.cache import GetEpochFloor, InvalidateKeys, IsFresh
from aura_sync.messages.faults import InjectCrash
from aura_sync.messages.peers import AddPeer, GetPeer
from aura_sync.messages.pool import Acquire, GetPoolStatistics
from aura_sync.messages.rate_limit import CheckRateLimit
from aura_sync.messages.supervision import ChildStatus, EventKind, SupervisionEvent
from aura_sync.supervisors.infrastructure import (
    CACHE,
    CHILD_IDS,
    PEER_MANAGER,
    POOL,
    RATE_LIMITER,
    Infrastructure,
    InfrastructureConfig,
    infrastructure_supervisor,
)
from aura_sync.supervisors.spec import ChildSpec
from aura_sync.supervisors.supervisor import Supervisor

pytestmark = pytest.mark.usefixtures("no_leftover_threads")

A, B = peer(1), peer(2)


class Events:
    """Records supervision events (subscribed callback; thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items: list[SupervisionEvent] = []

    def __call__(self, event: SupervisionEvent) -> None:
        with self._lock:
            self.items.append(event)

    def of(self, kind: EventKind) -> list[str]:
        with self._lock:
            return [e.child_id for e in self.items if e.kind is kind]

    def clear(self) -> None:
        with self._lock:
            self.items.clear()


def crash(address: ActorAddress) -> None:
    """Make the actor at ``address`` crash on an ``InjectCrash`` and check that it did."""
    reply = address.ask(InjectCrash())
    assert isinstance(reply, ErrorReply) and reply.error_type == "ActorCrashed", reply


def all_running(sup: Supervisor) -> bool:
    return all(info.status is ChildStatus.RUNNING for info in sup.which_children())


def config(**changes: object) -> InfrastructureConfig:
    base: dict[str, object] = {
        "rate_limit": RateLimitConfig(
            global_ops_per_second=10.0, global_burst=20, peer_ops_per_second=5.0, peer_burst=10
        ),
        "pool": PoolConfig(max_connections_per_peer=2, acquire_timeout=5.0),
        "intensity": 20,
        "shutdown": 2.0,
    }
    base.update(changes)
    return InfrastructureConfig(**base)  # type: ignore[arg-type]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def connector() -> FakeConnector:
    return FakeConnector()


@pytest.fixture
def infra(clock: ManualClock, connector: FakeConnector) -> Iterator[Infrastructure]:
    handle = Infrastructure.start(config(), connector=connector, clock=clock, fault_injection=True)
    yield handle
    handle.stop()


def test_starts_the_four_children_in_order(infra: Infrastructure) -> None:
    children = infra.supervisor.which_children()
    assert [c.id for c in children] == list(CHILD_IDS)
    assert all(c.status is ChildStatus.RUNNING for c in children)
    counts = infra.supervisor.count_children()
    assert (counts.specs, counts.active, counts.workers) == (4, 4, 4)
    infra.cache.call(InvalidateKeys(("k",), 3))
    assert isinstance(infra.rate_limiter.call(CheckRateLimit(A)), Allowed)
    assert infra.peers.call(AddPeer(A)) is True
    with infra.pool.call(Acquire(A)) as lease:
        assert not lease.connection.closed
    assert infra.supervisor.name == "infrastructure"
    assert infra.cache.name == "infrastructure/cache"


def test_a_rate_limiter_crash_restarts_it_alone_and_pooled_connections_stay_open(
    infra: Infrastructure, connector: FakeConnector
) -> None:
    events = Events()
    infra.supervisor.subscribe(events)
    infra.cache.call(InvalidateKeys(("stale",), 9))
    spent = 0
    while isinstance(infra.rate_limiter.call(CheckRateLimit(A)), Allowed):
        spent += 1
    assert spent == 10  # the peer bucket is empty
    infra.peers.call(AddPeer(B, "b:1"))
    lease = infra.pool.call(Acquire(B))
    idle = infra.pool.call(Acquire(A))
    idle.release()

    infra.supervisor.child_address(RATE_LIMITER).ask(InjectCrash("test"))
    wait_until(lambda: infra.supervisor.restart_count(RATE_LIMITER) == 1, what="the restart")
    wait_until(lambda: all_running(infra.supervisor), what="all children running")
    assert events.of(EventKind.FAILED) == [RATE_LIMITER]
    assert events.of(EventKind.STOPPED) == []
    assert events.of(EventKind.RESTARTED) == [RATE_LIMITER]

    # The limiter kept its spend; the others were not touched at all.
    assert isinstance(infra.rate_limiter.call(CheckRateLimit(A)), Denied)
    assert infra.peers.call(GetPeer(B)).address == "b:1"
    assert infra.cache.call(IsFresh("stale", 8)) is False
    assert sorted(c.peer_id for c in connector.open_connections()) == sorted([A, B])
    assert not lease.connection.closed
    lease.release()
    assert infra.pool.call(GetPoolStatistics()).total == 2


@pytest.mark.parametrize("child_id", CHILD_IDS)
def test_a_crash_restarts_only_the_crashed_child(infra: Infrastructure, child_id: str) -> None:
    events = Events()
    infra.supervisor.subscribe(events)
    infra.supervisor.child_address(child_id).ask(InjectCrash("test"))
    wait_until(lambda: events.of(EventKind.RESTARTED) == [child_id], what="the restart")
    wait_until(lambda: all_running(infra.supervisor), what="all children running")
    assert events.of(EventKind.STOPPED) == [] and events.of(EventKind.FAILED) == [child_id]
    assert [infra.supervisor.restart_count(c) for c in CHILD_IDS] == [
        int(c == child_id) for c in CHILD_IDS
    ]
    assert infra.peers.call(AddPeer(A)) is True  # every child still answers


def test_without_a_connector_there_is_no_pool(clock: ManualClock) -> None:
    infra = Infrastructure.start(config(), clock=clock)
    try:
        assert [c.id for c in infra.supervisor.which_children()] == [
            CACHE,
            RATE_LIMITER,
            PEER_MANAGER,
        ]
        assert isinstance(infra.rate_limiter.call(CheckRateLimit(A)), Allowed)
        with pytest.raises(NotFound, match="no pool"):
            infra.pool  # noqa: B018
    finally:
        infra.stop()


def test_start_async_does_not_block_the_event_loop(
    clock: ManualClock, connector: FakeConnector, monkeypatch: pytest.MonkeyPatch
) -> None:
    import aura_sync.supervisors.infrastructure as module

    gate = threading.Event()
    cache_actor = module.CacheActor

    def held_cache(*args: Any, **kwargs: Any) -> Any:  # runs in the supervisor's thread
        assert gate.wait(10.0), "the event loop never ran during start_async"
        return cache_actor(*args, **kwargs)

    monkeypatch.setattr(module, "CacheActor", held_cache)

    async def scenario() -> tuple[Infrastructure, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                if ticks == 3:
                    gate.set()  # the loop ran while the children were held back
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        try:
            infra = await Infrastructure.start_async(config(), connector=connector, clock=clock)
        finally:
            task.cancel()
        return infra, ticks

    infra, ticks = asyncio.run(scenario())
    try:
        assert ticks >= 3
        assert isinstance(infra.rate_limiter.call(CheckRateLimit(A)), Allowed)
        with infra.pool.call(Acquire(A)) as lease:
            assert not lease.connection.closed
    finally:
        infra.stop()


def test_shutdown_in_reverse_order_within_the_timeouts(
    clock: ManualClock, connector: FakeConnector
) -> None:
    infra = Infrastructure.start(config(), connector=connector, clock=clock)
    events = Events()
    infra.supervisor.subscribe(events)
    infra.pool.call(Acquire(A))
    infra.pool.call(Acquire(B)).release()
    started = time.monotonic()
    infra.stop()
    elapsed = time.monotonic() - started
    assert events.of(EventKind.STOPPED) == list(reversed(CHILD_IDS))
    assert elapsed < 4 * 2.0  # four children, 2 s shutdown each
    assert not infra.supervisor.is_alive()
    assert connector.open_connections() == []
    wait_until(lambda: clock.pending_timers() == 0, what="every timer cancelled")
    infra.stop()  # idempotent


def test_gives_up_past_its_intensity(clock: ManualClock, connector: FakeConnector) -> None:
    gave_up: list[SupervisorGaveUp] = []
    infra = Infrastructure.start(
        config(intensity=1),
        connector=connector,
        clock=clock,
        fault_injection=True,
        on_give_up=gave_up.append,
    )
    try:
        crash(infra.pool)
        wait_until(lambda: infra.supervisor.restart_count(POOL) == 1, what="one restart")
        wait_until(lambda: all_running(infra.supervisor), what="all children running")
        crash(infra.pool)  # two restarts within the period: over intensity 1
        wait_until(lambda: bool(gave_up), what="the supervisor to give up")
        assert infra.supervisor.events()[EventKind.GAVE_UP] == 1
        wait_until(lambda: not infra.supervisor.is_alive(), what="the supervisor to end")
    finally:
        infra.stop()


def test_nested_under_a_root_supervisor(clock: ManualClock, connector: FakeConnector) -> None:
    cfg = config()
    nested = infrastructure_supervisor(cfg, connector=connector, fault_injection=True)
    root = Supervisor(
        [ChildSpec("infrastructure", lambda ctx: nested, shutdown=4 * cfg.shutdown)],
        clock=clock,
        intensity=3,
        name="node",
    ).start()
    try:
        infra = Infrastructure(nested)
        assert infra.cache.name == "node/infrastructure/cache"
        infra.cache.call(InvalidateKeys(("k",), 2))
        infra.cache.ask(InjectCrash())
        wait_until(lambda: nested.restart_count(CACHE) == 1, what="the cache restart")
        assert infra.cache.call(GetEpochFloor("k")) == 2
    finally:
        root.stop()


def test_arguments_are_validated(connector: FakeConnector) -> None:
    with pytest.raises(WrongType, match="connector must have a connect"):
        infrastructure_supervisor(connector=object())  # type: ignore[arg-type]
    with pytest.raises(WrongType, match="config must be an InfrastructureConfig"):
        infrastructure_supervisor({}, connector=connector)  # type: ignore[arg-type]
    with pytest.raises(WrongType, match="fault_injection must be a bool"):
        infrastructure_supervisor(connector=connector, fault_injection="yes")  # type: ignore[arg-type]
    with pytest.raises(WrongType, match="discovery must have a discover"):
        infrastructure_supervisor(connector=connector, discovery=1)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="intensity must be >= 0"):
        InfrastructureConfig(intensity=-1)
    with pytest.raises(InvalidArgument, match="shutdown"):
        InfrastructureConfig(shutdown=-1.0)
    with pytest.raises(WrongType, match="pool must be a PoolConfig"):
        InfrastructureConfig(pool=RateLimitConfig())  # type: ignore[arg-type]
    with pytest.raises(WrongType, match="supervisor must be a Supervisor"):
        Infrastructure(object())  # type: ignore[arg-type]
