"""CacheActor and CacheClient: every operation by message, error replies, async forms,
fault injection, and floors that survive a restart."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from test_actors_support import no_leftover_threads  # noqa: F401  (fixture)

from aura_sync.actors._faults import InjectedCrash
from aura_sync.actors.address import ActorAddress, spawn
from aura_sync.actors.cache import STASH_KEY, CacheActor
from aura_sync.actors.clients import CacheClient
from aura_sync.errors import ActorStopped, InvalidArgument, WrongType
from aura_sync.infrastructure.cache import CacheInvalidation, CacheManager, CacheStatistics
from aura_sync.messages import Ack, ErrorReply
from aura_sync.messages import cache as msgs
from aura_sync.messages.faults import InjectCrash
from aura_sync.messages.peers import GetPeerTable

pytestmark = pytest.mark.usefixtures("no_leftover_threads")


@pytest.fixture
def address() -> Iterator[ActorAddress]:
    addr = spawn(lambda: CacheActor(max_keys=8, max_values=4))
    yield addr
    addr.stop()


@pytest.fixture
def client(address: ActorAddress) -> CacheClient:
    return CacheClient(address)


def test_every_operation_by_message(address: ActorAddress) -> None:
    assert address.ask(msgs.InvalidateKeys(("a", "b"), 5)) == Ack()
    assert address.ask(msgs.IsFresh("a", 4)) == msgs.FreshnessReply("a", 4, False)
    assert address.ask(msgs.IsFresh("a", 5)) == msgs.FreshnessReply("a", 5, True)
    assert address.ask(msgs.IsFresh("never", 0)).fresh is True
    assert address.ask(msgs.ApplyInvalidation(("a",), 7, "upgrade")) == Ack()
    assert address.ask(msgs.GetEpochFloor("a")) == msgs.EpochFloorReply("a", 7)
    assert address.ask(msgs.PutValue("a", b"v7", 7)) == msgs.ValueStored("a", True)
    assert address.ask(msgs.PutValue("a", b"v6", 6)) == msgs.ValueStored("a", False)
    assert address.ask(msgs.GetValue("a", 7)) == msgs.ValueReply("a", b"v7")
    assert address.ask(msgs.RaiseFloorAll(9)) == Ack()
    assert address.ask(msgs.GetValue("a", 9)) == msgs.ValueReply("a", None)
    assert address.ask(msgs.GetEpochFloor("zzz")).epoch_floor == 9
    snapshot = address.ask(msgs.GetCacheSnapshot())
    assert isinstance(snapshot, msgs.CacheSnapshotReply) and snapshot.global_floor == 9
    assert address.ask(msgs.ClearCache()) == Ack()
    assert address.ask(msgs.IsFresh("b", 8)).fresh is False  # clearing never makes data fresh
    stats = address.ask(msgs.GetCacheStatistics())
    assert isinstance(stats, msgs.CacheStatisticsReply)
    assert stats.total_invalidations == 3 and stats.total_keys_invalidated == 3
    assert stats.hits == 1 and stats.misses == 1 and stats.rejected_writes == 1
    floors = msgs.RestoreCacheFloors((("c", 20),), (), 8, 0)
    assert address.ask(floors) == Ack()
    assert address.ask(msgs.GetEpochFloor("c")).epoch_floor == 20


def test_client_sync_forms(client: CacheClient) -> None:
    client.invalidate_keys(["k1", "k2"], 3)
    assert client.is_fresh("k1", 2) is False and client.is_fresh("k1", 3) is True
    client.apply_invalidation(CacheInvalidation(("k1",), 4))
    assert client.epoch_floor("k1") == 4 and client.epoch_floor("new") == 0
    assert client.put("k1", b"x", 4) is True and client.get("k1", 4) == b"x"
    assert client.get("k1", 3) is None  # written after the reader's epoch
    client.raise_floor_all(5)
    assert client.get("k1", 5) is None
    snapshot = client.snapshot()
    assert snapshot.global_floor == 5
    client.clear()
    client.restore(snapshot)
    assert client.epoch_floor("k2") == 5
    stats = client.statistics()
    assert isinstance(stats, CacheStatistics) and stats.total_invalidations == 3


def test_client_async_forms(client: CacheClient) -> None:
    async def scenario() -> None:
        await client.invalidate_keys_async(("a",), 2)
        assert await client.is_fresh_async("a", 1) is False
        await client.apply_invalidation_async(CacheInvalidation(("a",), 3))
        assert await client.epoch_floor_async("a") == 3
        assert await client.put_async("a", b"v", 3) is True
        assert await client.get_async("a", 3) == b"v"
        await client.raise_floor_all_async(4)
        snapshot = await client.snapshot_async()
        await client.clear_async()
        await client.restore_async(snapshot)
        assert await client.epoch_floor_async("a") == 4
        assert (await client.statistics_async()).total_invalidations == 3
        with pytest.raises(InvalidArgument, match="fault injection is disabled"):
            await client.inject_crash_async("no")

    asyncio.run(scenario())


def test_bad_input_is_refused_before_sending(client: CacheClient) -> None:
    with pytest.raises(InvalidArgument, match=r"epoch"):
        client.invalidate_keys(["a"], -1)
    with pytest.raises(WrongType, match=r"keys must be an iterable of str"):
        client.invalidate_keys("abc", 1)
    with pytest.raises(WrongType, match=r"key must be a str"):
        client.is_fresh(7, 1)  # type: ignore[arg-type]
    with pytest.raises(WrongType, match=r"value must be bytes"):
        client.put("a", "text", 1)  # type: ignore[arg-type]
    assert client.statistics().total_invalidations == 0


def _forged(cls: type, **fields: object) -> object:
    """A message instance that skipped validation (as a buggy sender could make)."""
    msg = object.__new__(cls)
    for name, value in fields.items():
        object.__setattr__(msg, name, value)
    return msg


def test_malformed_and_unknown_messages_get_error_replies(address: ActorAddress) -> None:
    reply = address.ask(_forged(msgs.IsFresh, key=5, epoch=1))
    assert isinstance(reply, ErrorReply) and reply.error_type == "WrongType"
    reply = address.ask(_forged(msgs.InvalidateKeys, keys=("a",), epoch=2**70))
    assert isinstance(reply, ErrorReply) and reply.error_type == "InvalidArgument"
    reply = address.ask(GetPeerTable())
    assert isinstance(reply, ErrorReply) and reply.error_type == "UnhandledMessage"
    reply = address.ask("not a message")
    assert isinstance(reply, ErrorReply) and reply.error_type == "UnhandledMessage"
    address.tell(GetPeerTable())  # a dead letter, not a crash
    assert address.ask(msgs.IsFresh("a", 1)).fresh is True  # still alive


def test_inject_crash_refused_unless_enabled(address: ActorAddress) -> None:
    reply = address.ask(InjectCrash("chaos"))
    assert isinstance(reply, ErrorReply) and reply.error_type == "InvalidArgument"
    assert "fault injection is disabled" in reply.message
    assert address.ask(msgs.IsFresh("a", 1)).fresh is True


def test_injected_crash_crashes_and_the_stash_keeps_the_floors() -> None:
    stash: dict[str, object] = {}
    first = spawn(lambda: CacheActor(stash=stash, fault_injection=True))
    client = CacheClient(first)
    client.invalidate_keys(["stale"], 10)
    assert client.put("stale", b"old", 10) is True
    reply = first.ask(InjectCrash("chaos test"))
    assert isinstance(reply, ErrorReply) and reply.error_type == "ActorCrashed"
    assert "chaos test" in reply.message and InjectedCrash.__name__ in reply.message
    with pytest.raises(ActorStopped):  # unsupervised: the address closes after a crash
        client.is_fresh("stale", 9)
    manager = stash[STASH_KEY]
    assert isinstance(manager, CacheManager)
    # A new incarnation on the same stash (what a supervisor does) keeps floors and values.
    second = spawn(lambda: CacheActor(stash=stash))
    try:
        again = CacheClient(second)
        assert again.is_fresh("stale", 9) is False
        assert again.epoch_floor("stale") == 10
        assert again.get("stale", 10) == b"old"
    finally:
        second.stop()


def test_constructor_validates_arguments() -> None:
    with pytest.raises(WrongType, match="stash must be a dict"):
        CacheActor(stash=[])  # type: ignore[arg-type]
    with pytest.raises(WrongType, match="fault_injection must be a bool"):
        CacheActor(fault_injection=1)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="max_keys must be >= 1"):
        CacheActor(max_keys=0)
    with pytest.raises(WrongType, match="must be a CacheManager"):
        CacheActor(stash={STASH_KEY: "nope"})
