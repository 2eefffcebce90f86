"""CacheActor: every operation by ``address.call`` (blocking and asyncio), error
replies for bad values from the wire, fault injection, and floors that survive a
restart."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from test_actors_support import no_leftover_threads  # noqa: F401  (fixture)

from aura_sync.actors._faults import InjectedCrash
from aura_sync.actors.address import ActorAddress, spawn
from aura_sync.actors.cache import STASH_KEY, CacheActor
from aura_sync.errors import ActorStopped, InvalidArgument, UnhandledMessage, WrongType
from aura_sync.infrastructure.cache import (
    CacheFloorSnapshot,
    CacheInvalidation,
    CacheManager,
    CacheStatistics,
)
from aura_sync.messages import Ack, ErrorReply, codec
from aura_sync.messages import cache as m
from aura_sync.messages.faults import InjectCrash
from aura_sync.messages.peers import GetPeerTable

pytestmark = pytest.mark.usefixtures("no_leftover_threads")


@pytest.fixture
def address() -> Iterator[ActorAddress]:
    addr = spawn(lambda: CacheActor(max_keys=8, max_values=4))
    yield addr
    addr.stop()


def test_every_operation_by_call(address: ActorAddress) -> None:
    assert address.call(m.InvalidateKeys(("a", "b"), 5)) is None
    assert address.call(m.IsFresh("a", 4)) is False
    assert address.call(m.IsFresh("a", 5)) is True
    assert address.call(m.IsFresh("never", 0)) is True
    assert address.call(m.ApplyInvalidation(CacheInvalidation(("a",), 7, "upgrade"))) is None
    assert address.call(m.GetEpochFloor("a")) == 7
    assert address.call(m.PutValue("a", b"v7", 7)) is True
    assert address.call(m.PutValue("a", b"v6", 6)) is False
    assert address.call(m.GetValue("a", 7)) == b"v7"
    assert address.call(m.GetValue("a", 6)) is None  # written after the reader's epoch
    assert address.call(m.RaiseFloorAll(9)) is None
    assert address.call(m.GetValue("a", 9)) is None
    assert address.call(m.GetEpochFloor("zzz")) == 9
    snapshot = address.call(m.GetCacheSnapshot())
    assert isinstance(snapshot, CacheFloorSnapshot) and snapshot.global_floor == 9
    assert address.call(m.ClearCache()) is None
    assert address.call(m.IsFresh("b", 8)) is False  # clearing never makes data fresh
    stats = address.call(m.GetCacheStatistics())
    assert isinstance(stats, CacheStatistics)
    assert stats.total_invalidations == 3 and stats.total_keys_invalidated == 3
    assert (stats.hits, stats.misses, stats.rejected_writes) == (1, 2, 1)
    assert address.call(m.RestoreCacheFloors(CacheFloorSnapshot((("c", 20),), (), 8, 0))) is None
    assert address.call(m.GetEpochFloor("c")) == 20
    assert address.call(m.PutValue("c", b"x", 20)) is True
    assert address.call(m.DiscardValue("c")) is True
    assert address.call(m.DiscardValue("c")) is False


def test_replies_are_the_cores_values_and_round_trip(address: ActorAddress) -> None:
    address.call(m.InvalidateKeys(("k",), 3))
    for request in (m.GetCacheStatistics(), m.GetCacheSnapshot()):
        reply = address.ask(request)
        assert codec.decode(codec.encode(reply)) == reply
    assert address.ask(m.ClearCache()) == Ack()


def test_call_async_forms(address: ActorAddress) -> None:
    async def scenario() -> None:
        await address.call_async(m.InvalidateKeys(("a",), 2))
        assert await address.call_async(m.IsFresh("a", 1)) is False
        await address.call_async(m.ApplyInvalidation(CacheInvalidation(("a",), 3)))
        assert await address.call_async(m.GetEpochFloor("a")) == 3
        assert await address.call_async(m.PutValue("a", b"v", 3)) is True
        assert await address.call_async(m.GetValue("a", 3)) == b"v"
        snapshot = await address.call_async(m.GetCacheSnapshot())
        await address.call_async(m.ClearCache())
        await address.call_async(m.RestoreCacheFloors(snapshot))
        assert await address.call_async(m.GetEpochFloor("a")) == 3
        assert (await address.call_async(m.GetCacheStatistics())).total_invalidations == 2

    asyncio.run(scenario())


def test_bad_values_come_back_as_errors_naming_them_and_change_nothing(
    address: ActorAddress,
) -> None:
    with pytest.raises(InvalidArgument, match=r"epoch.*-1"):
        address.call(m.InvalidateKeys(("a",), -1))
    with pytest.raises(InvalidArgument, match=r"epoch.*" + str(2**70)):
        address.call(m.IsFresh("a", 2**70))
    with pytest.raises(WrongType, match=r"key must be a str.*7"):
        address.call(m.IsFresh(7, 1))  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match=r"bucket.*9"):
        address.call(m.RestoreCacheFloors(CacheFloorSnapshot((), ((9, 1),), 4, 0)))
    with pytest.raises(InvalidArgument, match=r"epoch_floor.*-2"):
        address.call(m.ApplyInvalidation(CacheInvalidation(("a",), -2)))
    assert address.call(m.GetCacheStatistics()) == CacheStatistics()


def test_unknown_messages_get_error_replies_and_the_actor_carries_on(
    address: ActorAddress,
) -> None:
    reply = address.ask(GetPeerTable())
    assert isinstance(reply, ErrorReply) and reply.error_type == "UnhandledMessage"
    with pytest.raises(UnhandledMessage):
        address.call(GetPeerTable())  # type: ignore[arg-type]
    reply = address.ask("not a message")
    assert isinstance(reply, ErrorReply) and reply.error_type == "UnhandledMessage"
    address.tell(GetPeerTable())  # a dead letter, not a crash
    assert address.call(m.IsFresh("a", 1)) is True


def test_inject_crash_refused_unless_enabled(address: ActorAddress) -> None:
    reply = address.ask(InjectCrash("chaos"))
    assert isinstance(reply, ErrorReply) and reply.error_type == "InvalidArgument"
    assert "fault injection is disabled" in reply.message
    assert address.call(m.IsFresh("a", 1)) is True


def test_injected_crash_crashes_and_the_stash_keeps_the_floors() -> None:
    stash: dict[str, object] = {}
    first = spawn(lambda: CacheActor(stash=stash, fault_injection=True))
    first.call(m.InvalidateKeys(("stale",), 10))
    assert first.call(m.PutValue("stale", b"old", 10)) is True
    reply = first.ask(InjectCrash("chaos test"))
    assert isinstance(reply, ErrorReply) and reply.error_type == "ActorCrashed"
    assert "chaos test" in reply.message and InjectedCrash.__name__ in reply.message
    with pytest.raises(ActorStopped):  # unsupervised: the address closes after a crash
        first.call(m.IsFresh("stale", 9))
    assert isinstance(stash[STASH_KEY], CacheManager)
    # A new incarnation on the same stash (what a supervisor does) keeps floors and values.
    second = spawn(lambda: CacheActor(stash=stash))
    try:
        assert second.call(m.IsFresh("stale", 9)) is False
        assert second.call(m.GetEpochFloor("stale")) == 10
        assert second.call(m.GetValue("stale", 10)) == b"old"
    finally:
        second.stop()


def test_constructor_validates_arguments() -> None:
    with pytest.raises(WrongType, match="stash must be a dict"):
        CacheActor(stash=[])  # type: ignore[arg-type]
    with pytest.raises(WrongType, match="fault_injection must be a bool"):
        CacheActor(fault_injection=1)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="max_keys must be >= 1"):
        CacheActor(max_keys=0)
