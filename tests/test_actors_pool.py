"""PoolActor through ``address.call``: every request, FIFO waiters answered by deferred
replies, AcquireTimeout on the virtual clock, scheduled eviction and health checks, leases,
and a crash that closes every connection of the dead incarnation."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
from test_actors_support import (  # noqa: F401  (fixture)
    FakeConnection,
    FakeConnector,
    no_leftover_threads,
    peer,
    wait_until,
)

from aura_sync.actors.address import ActorAddress, spawn
from aura_sync.actors.pool import STASH_IDS_KEY, PoolActor, PoolLease
from aura_sync.effects import ManualClock
from aura_sync.errors import (
    AcquireTimeout,
    ActorCrashed,
    AskTimeout,
    ConnectFailed,
    InvalidArgument,
    InvalidHandle,
    PoolExhausted,
    WrongType,
)
from aura_sync.ids import DeviceId
from aura_sync.infrastructure.connections import ConnectionState, PoolConfig, PoolStatistics
from aura_sync.messages import Ack, ErrorReply
from aura_sync.messages import pool as msgs
from aura_sync.messages.cache import IsFresh
from aura_sync.messages.faults import InjectCrash

pytestmark = pytest.mark.usefixtures("no_leftover_threads")

A, B = peer(1), peer(2)
CONFIG = PoolConfig(
    max_total_connections=3,
    max_connections_per_peer=2,
    idle_timeout=30.0,
    max_lifetime=1000.0,
    acquire_timeout=10.0,
    health_check_interval=60.0,
)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def connector() -> FakeConnector:
    return FakeConnector()


@pytest.fixture
def address(clock: ManualClock, connector: FakeConnector) -> Iterator[ActorAddress]:
    addr = spawn(lambda: PoolActor(CONFIG, connector, clock=clock, fault_injection=True))
    yield addr
    addr.stop()


WAIT = CONFIG.acquire_timeout


def acquire(address: ActorAddress, peer_id: DeviceId, wait: float = WAIT) -> PoolLease:
    """Borrow a connection, letting the pool queue the request up to ``wait`` seconds."""
    return address.call(msgs.Acquire(peer_id, wait), wait + 5.0)


async def acquire_async(address: ActorAddress, peer_id: DeviceId, wait: float = WAIT) -> PoolLease:
    return await address.call_async(msgs.Acquire(peer_id, wait), wait + 5.0)


def stats(address: ActorAddress) -> PoolStatistics:
    return address.call(msgs.GetPoolStatistics())


async def stats_async(address: ActorAddress) -> PoolStatistics:
    return await address.call_async(msgs.GetPoolStatistics())


def test_every_operation_by_message(address: ActorAddress, connector: FakeConnector) -> None:
    first = address.ask(msgs.Acquire(A))
    assert isinstance(first, PoolLease) and first.reused is False
    assert first.session_id == "session-1" and first.connection is connector.opened[0]
    assert address.ask(msgs.Release(A, first.handle_id)) == Ack()
    again = address.call(msgs.Acquire(A))
    assert again.reused is True and again.connection_id == first.connection_id
    assert again.handle_id != first.handle_id
    listing = address.call(msgs.ListConnections())
    assert [c.state for c in listing] == [ConnectionState.IN_USE]
    assert address.call(msgs.GetConnectionMetadata(A)) == listing
    assert address.call(msgs.GetConnectionMetadata(B)) == ()
    assert (address.call(msgs.TotalConnections()), address.call(msgs.PeerCount())) == (1, 1)
    assert address.call(msgs.CloseConnection(again.handle_id)) is None
    assert connector.opened[0].closed
    assert address.call(msgs.EvictExpired()) == 0
    assert address.call(msgs.HealthCheck()) == 0
    held = address.call(msgs.Acquire(B))
    assert address.call(msgs.CloseAll()) == 1
    assert address.call(msgs.Release(B, held.handle_id)) is None  # harmless after CloseAll
    reply = address.call(msgs.GetPoolStatistics())
    assert isinstance(reply, PoolStatistics)
    assert reply.connections_created == 2 and reply.connections_reused == 1
    assert reply.connections_closed == 2 and reply.total == 0
    assert (address.call(msgs.TotalConnections()), address.call(msgs.PeerCount())) == (0, 0)


def test_error_replies_for_bad_requests(address: ActorAddress, connector: FakeConnector) -> None:
    first = address.ask(msgs.Acquire(A))
    assert address.ask(msgs.Release(A, first.handle_id)) == Ack()
    reply = address.ask(msgs.Release(A, first.handle_id))  # double release
    assert isinstance(reply, ErrorReply) and reply.error_type == "InvalidHandle"
    second = address.ask(msgs.Acquire(A))
    reply = address.ask(msgs.Release(B, second.handle_id))  # wrong peer: nothing changes
    assert isinstance(reply, ErrorReply) and reply.error_type == "InvalidHandle"
    assert address.ask(msgs.Release(A, second.handle_id)) == Ack()
    reply = address.ask(msgs.CloseConnection(12345))
    assert isinstance(reply, ErrorReply) and reply.error_type == "InvalidHandle"
    connector.fail_next = 1
    reply = address.ask(msgs.Acquire(B))
    assert isinstance(reply, ErrorReply) and reply.error_type == "ConnectFailed"
    reply = address.ask(IsFresh("k", 1))
    assert isinstance(reply, ErrorReply) and reply.error_type == "UnhandledMessage"
    address.tell(msgs.Acquire(A))  # told: refused (nobody would get it), not leaked
    assert stats(address).in_use == 0


def test_exhausted_without_waiting_and_limits(address: ActorAddress) -> None:
    leases = [acquire(address, A), acquire(address, A)]
    with pytest.raises(PoolExhausted, match="max_connections_per_peer=2"):
        acquire(address, A, wait=0)
    leases.append(acquire(address, B))
    with pytest.raises(PoolExhausted, match="max_total_connections=3"):
        acquire(address, B, wait=0.0)
    assert stats(address).connection_limit_hits == 2
    for lease in leases:
        lease.release()


def test_lease_is_a_context_manager_that_releases_once(
    address: ActorAddress, connector: FakeConnector
) -> None:
    with acquire(address, A) as lease:
        assert isinstance(lease, PoolLease) and lease.connection is connector.opened[0]
        assert lease.session_id == "session-1" and not lease.released
    assert lease.released and stats(address).idle == 1
    queued = address.queued()
    with pytest.raises(InvalidHandle, match="already released"):
        lease.release()
    assert address.queued() == queued  # refused without sending anything
    lease2 = acquire(address, A)
    assert lease2.reused
    lease2.release(broken=True)
    with acquire(address, A) as lease3:
        lease3.release()  # explicit release inside the block: exit does not release again
    s = stats(address)
    assert s.connections_released == 2 and s.connections_closed == 1 and s.idle == 1


def test_waiters_are_served_fifo_on_release(address: ActorAddress, clock: ManualClock) -> None:
    async def scenario() -> list[int]:
        held = [await acquire_async(address, A), await acquire_async(address, A)]
        order: list[int] = []

        async def wait_for(index: int) -> PoolLease:
            lease = await acquire_async(address, A, 100.0)
            order.append(index)
            return lease

        tasks = []
        for i in range(3):
            tasks.append(asyncio.ensure_future(wait_for(i)))
            await asyncio.sleep(0)  # let task i send its Acquire before task i+1
        while (await stats_async(address)).waits < 3:
            await asyncio.sleep(0)
        assert order == []
        await held[0].release_async()
        first = await asyncio.wait_for(tasks[0], 5.0)
        assert order == [0] and not tasks[1].done()
        await first.release_async()
        second = await asyncio.wait_for(tasks[1], 5.0)
        await held[1].release_async()
        third = await asyncio.wait_for(tasks[2], 5.0)
        for lease in (second, third):
            await lease.release_async()
        return order

    assert asyncio.run(scenario()) == [0, 1, 2]
    s = stats(address)
    assert s.waits == 3 and s.timeouts == 0 and s.connections_created == 2
    assert clock.pending_timers() == 1  # only the maintenance tick: waiter timers cancelled


def test_a_waiter_for_another_peer_is_not_blocked_by_the_head(address: ActorAddress) -> None:
    async def scenario() -> None:
        a1, a2 = await acquire_async(address, A), await acquire_async(address, A)
        b1 = await acquire_async(address, B)  # total limit (3) reached
        wait_a = asyncio.ensure_future(acquire_async(address, A, 100.0))
        await asyncio.sleep(0)
        wait_b = asyncio.ensure_future(acquire_async(address, B, 100.0))
        await asyncio.sleep(0)
        while (await stats_async(address)).waits < 2:
            await asyncio.sleep(0)
        await b1.release_async()  # B's idle connection: A cannot use it (per-peer limit)
        lease_b = await asyncio.wait_for(wait_b, 5.0)
        assert lease_b.reused and not wait_a.done()
        await a1.release_async()
        lease_a = await asyncio.wait_for(wait_a, 5.0)
        for lease in (a2, lease_a, lease_b):
            await lease.release_async()

    asyncio.run(scenario())


def test_acquire_timeout_on_the_virtual_clock(address: ActorAddress, clock: ManualClock) -> None:
    async def scenario() -> None:
        held = [await acquire_async(address, A), await acquire_async(address, A)]
        # timeout None: the pool's acquire_timeout (10 s)
        waiter = asyncio.ensure_future(address.call_async(msgs.Acquire(A), 20.0))
        while (await stats_async(address)).waits < 1:
            await asyncio.sleep(0)
        clock.advance(9.9)
        assert (await stats_async(address)).timeouts == 0  # barrier: tick handled
        assert not waiter.done()
        clock.advance(0.2)
        with pytest.raises(AcquireTimeout, match=r"within 10\.0 s"):
            await asyncio.wait_for(waiter, 5.0)
        assert (await stats_async(address)).timeouts == 1
        await held[0].release_async()  # nobody waits any more: it goes idle
        assert (await stats_async(address)).idle == 1
        await held[1].release_async()

    asyncio.run(scenario())


def test_an_asker_that_gave_up_does_not_get_a_connection(
    address: ActorAddress
) -> None:
    held = [acquire(address, A), acquire(address, A)]
    with pytest.raises(Exception, match="no reply"):  # AskTimeout, real time
        address.ask(msgs.Acquire(A, 100.0), timeout=0.05)
    held[0].release()  # the abandoned waiter is skipped: the connection goes idle
    s = stats(address)
    assert s.idle == 1 and s.in_use == 1
    held[1].release()


def test_an_asker_gone_before_its_acquire_is_handled_gets_nothing_lent(
    clock: ManualClock, connector: FakeConnector
) -> None:
    gate, inside = threading.Event(), threading.Event()

    class Slow(FakeConnector):
        def connect(self, peer_id: DeviceId) -> FakeConnection:
            if peer_id == A:
                inside.set()
                gate.wait(10.0)  # keeps the pool busy while the other asker gives up
            return connector.connect(peer_id)

    address = spawn(lambda: PoolActor(CONFIG, Slow(), clock=clock))
    try:
        first = threading.Thread(target=address.ask, args=(msgs.Acquire(A, 0.0), 10.0))
        first.start()
        assert inside.wait(5.0)
        with pytest.raises(AskTimeout):  # handled only after this asker has gone
            address.ask(msgs.Acquire(B, 0.0), timeout=0.05)
        gate.set()
        first.join(10.0)
        s = address.ask(msgs.GetPoolStatistics())
        assert (s.in_use, s.idle) == (1, 1)  # B's connection came back, unlent
    finally:
        gate.set()
        address.stop()


def test_scheduled_eviction(
    address: ActorAddress, clock: ManualClock, connector: FakeConnector
) -> None:
    acquire(address, A).release()
    acquire(address, B).release()
    clock.advance(10.0)
    acquire(address, B).release()  # B's connection last used at t=10
    clock.advance(20.5)  # tick at t=30: A idle for 30 s -> evicted; B only 20 s
    s = stats(address)
    assert s.connections_evicted == 1 and s.idle == 1
    assert connector.opened[0].closed and not connector.opened[1].closed
    clock.advance(30.0)  # next tick: B idle for 30 s or more -> evicted
    s = stats(address)
    assert s.connections_evicted == 2 and s.total == 0
    assert connector.open_connections() == []


def test_scheduled_health_checks(clock: ManualClock, connector: FakeConnector) -> None:
    config = PoolConfig(idle_timeout=1000.0, max_lifetime=5000.0, health_check_interval=60.0)
    address = spawn(lambda: PoolActor(config, connector, clock=clock))
    try:
        acquire(address, A).release()
        acquire(address, B).release()
        connector.opened[1].healthy = False
        clock.advance(59.0)
        assert stats(address).broken == 0
        clock.advance(1.0)  # the tick at t=60 runs the due health check
        s = stats(address)
        assert s.broken == 1 and s.idle == 1 and s.connections_evicted == 0
        assert connector.open_connections() == [connector.opened[0]]
    finally:
        address.stop()


def test_close_and_close_all_free_capacity_for_waiters(
    address: ActorAddress, connector: FakeConnector
) -> None:
    async def scenario() -> None:
        held = [await acquire_async(address, A), await acquire_async(address, A)]
        waiters = [asyncio.ensure_future(acquire_async(address, A, 100.0))]
        await asyncio.sleep(0)
        waiters.append(asyncio.ensure_future(acquire_async(address, A, 100.0)))
        while (await stats_async(address)).waits < 2:
            await asyncio.sleep(0)
        await held[0].release_async(broken=True)  # closing frees a slot for the first waiter
        first = await asyncio.wait_for(waiters[0], 5.0)
        assert not first.reused and not waiters[1].done()
        assert await address.call_async(msgs.CloseAll()) == 2  # frees both: the second is served
        second = await asyncio.wait_for(waiters[1], 5.0)
        assert second.connection is connector.opened[-1] and not second.connection.closed
        for lease in (held[1], first):
            async with lease:  # closed by CloseAll: the release is a harmless no-op
                pass
        await second.release_async()
        s = await stats_async(address)
        assert s.total == 1 and s.idle == 1 and s.connections_created == 4

    asyncio.run(scenario())


def test_async_calls(address: ActorAddress, connector: FakeConnector) -> None:
    async def scenario() -> None:
        async with await acquire_async(address, A) as lease:
            assert lease.connection is connector.opened[0]
        lease2 = await acquire_async(address, A)
        await lease2.release_async(broken=True)
        assert connector.opened[0].closed
        assert await address.call_async(msgs.EvictExpired()) == 0
        assert await address.call_async(msgs.HealthCheck()) == 0
        lease3 = await acquire_async(address, B)
        assert len(await address.call_async(msgs.ListConnections())) == 1
        assert await address.call_async(msgs.CloseAll()) == 1
        await lease3.release_async()
        assert (await stats_async(address)).total == 0
        with pytest.raises(ConnectFailed):
            connector.fail_next = 1
            await acquire_async(address, B)

    asyncio.run(scenario())


def test_bad_arguments_come_back_as_errors_from_the_core_and_actor(address: ActorAddress) -> None:
    with pytest.raises(WrongType, match="peer_id"):
        acquire(address, "peer")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="timeout"):
        acquire(address, A, wait=-1.0)
    with pytest.raises(InvalidHandle, match="handle_id='1'"):
        address.call(msgs.Release(A, "1"))  # type: ignore[arg-type]
    with pytest.raises(WrongType, match="peer_id"):
        address.call(msgs.GetConnectionMetadata(b"\x01" * 16))  # type: ignore[arg-type]
    assert stats(address).total == 0


def test_a_crash_closes_every_connection_and_fails_waiters(
    clock: ManualClock, connector: FakeConnector
) -> None:
    stash: dict[str, object] = {}
    address = spawn(
        lambda: PoolActor(CONFIG, connector, clock=clock, stash=stash, fault_injection=True)
    )

    async def scenario() -> None:
        lent = [await acquire_async(address, A), await acquire_async(address, A)]
        idle = await acquire_async(address, B)
        await idle.release_async()
        waiter = asyncio.ensure_future(acquire_async(address, A, 100.0))
        while (await stats_async(address)).waits < 1:
            await asyncio.sleep(0)
        crashed = await address.ask_async(InjectCrash("chaos"))
        assert isinstance(crashed, ErrorReply) and crashed.error_type == "ActorCrashed"
        with pytest.raises(ActorCrashed):
            await asyncio.wait_for(waiter, 5.0)
        for lease in lent:
            with lease:  # releasing after the crash is logged, never raised from `with`
                pass

    asyncio.run(scenario())
    wait_until(lambda: connector.open_connections() == [], what="every connection closed")
    assert len(connector.opened) == 3
    wait_until(lambda: clock.pending_timers() == 0, what="timers cancelled")
    # A new incarnation on the same stash never reuses a handle id of the dead one.
    used = next(stash[STASH_IDS_KEY])  # type: ignore[call-overload]
    second = spawn(lambda: PoolActor(CONFIG, connector, clock=clock, stash=stash))
    try:
        fresh = acquire(second, A)
        assert fresh.handle_id > used and not fresh.reused
        fresh.release()
    finally:
        second.stop()


def test_stop_closes_connections_and_cancels_timers(
    clock: ManualClock, connector: FakeConnector
) -> None:
    address = spawn(lambda: PoolActor(CONFIG, connector, clock=clock))
    acquire(address, A)
    acquire(address, B).release()
    assert clock.pending_timers() == 1
    assert address.stop()
    assert connector.open_connections() == [] and clock.pending_timers() == 0
    reply = address.ask(InjectCrash())
    assert isinstance(reply, ErrorReply) and reply.error_type == "ActorStopped"


def test_constructor_validates_arguments(connector: FakeConnector) -> None:
    with pytest.raises(WrongType, match="connector must have a connect"):
        PoolActor(CONFIG, object())  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="maintenance_interval"):
        PoolActor(CONFIG, connector, maintenance_interval=0)
    with pytest.raises(WrongType, match="config must be a PoolConfig"):
        PoolActor({}, connector)  # type: ignore[arg-type]
