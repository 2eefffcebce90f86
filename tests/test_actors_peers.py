"""PeerManagerActor through ``address.call``: its requests, error replies, asyncio,
scheduled refresh with a discovery effect, and the table across restarts."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterable, Iterator

import pytest
from test_actors_support import no_leftover_threads, peer, wait_until  # noqa: F401  (fixture)

from aura_sync.actors.address import ActorAddress, spawn
from aura_sync.actors.peer_manager import STASH_KEY, PeerManagerActor
from aura_sync.effects import ManualClock, Scheduler
from aura_sync.errors import (
    CapabilityError,
    InvalidArgument,
    InvalidTransition,
    PeerUnavailable,
    SessionLimitReached,
    UnknownPeer,
    WrongType,
)
from aura_sync.ids import DeviceId
from aura_sync.infrastructure.capabilities import (
    generate_authority_keypair,
    issue_capability_token,
)
from aura_sync.infrastructure.peer_scoring import Offence
from aura_sync.infrastructure.peers import (
    PeerDiscoveryConfig,
    PeerInfo,
    PeerManager,
    PeerStatus,
    PeerTableSnapshot,
)
from aura_sync.messages import Ack, ErrorReply
from aura_sync.messages import peers as msgs
from aura_sync.messages.cache import IsFresh
from aura_sync.messages.faults import InjectCrash

pytestmark = pytest.mark.usefixtures("no_leftover_threads")

S = PeerStatus
A, B, C = peer(1), peer(2), peer(3)


class CountingDiscovery:
    """A non-blocking discovery effect that returns fixed candidates and counts rounds."""

    def __init__(self, candidates: Iterable[tuple[DeviceId, str | None]]) -> None:
        self.candidates = tuple(candidates)
        self.rounds = 0
        self.fail = False

    def discover(self, timeout: float) -> tuple[tuple[DeviceId, str | None], ...]:
        self.rounds += 1
        if self.fail:
            raise OSError("bootstrap host unreachable")
        return self.candidates


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def address(clock: ManualClock) -> Iterator[ActorAddress]:
    config = PeerDiscoveryConfig(max_concurrent_sessions=2, refresh_interval=60.0)
    addr = spawn(lambda: PeerManagerActor(config, clock=clock))
    yield addr
    addr.stop()


def ready(address: ActorAddress, peer_id: DeviceId, trust: int = 80) -> None:
    address.call(msgs.AddPeer(peer_id))
    address.call(msgs.SetPeerStatus(peer_id, S.CONNECTED))
    update = msgs.UpdatePeerMetadata(peer_id, trust, has_sync_capability=True, verified=True)
    address.call(update)


def test_every_operation_by_message(address: ActorAddress) -> None:
    assert address.call(msgs.AddPeer(A, "10.0.0.1:7400")) is True
    assert address.call(msgs.AddPeer(A)) is False
    assert address.call(msgs.SetPeerStatus(A, S.CONNECTED)) is None
    update = msgs.UpdatePeerMetadata(A, trust_level=90, verified=True, has_sync_capability=True)
    assert address.ask(update) == Ack()
    info = address.call(msgs.GetPeer(A))
    assert isinstance(info, PeerInfo) and info.address == "10.0.0.1:7400"
    assert info.metadata.trust_level == 90 and info.metadata.status is S.CONNECTED
    assert address.call(msgs.IsPeerAvailable(A)) is True
    assert address.call(msgs.SelectSyncPeers(5)) == (A,)
    assert address.call(msgs.StartSyncSession(A)) == 1
    assert address.call(msgs.EndSyncSession(A, True, 0.05)) is None
    meta = address.call(msgs.GetPeer(A)).metadata
    assert (meta.latency_ewma, meta.success_rate, meta.trust_level) == (0.05, 1.0, 92)
    assert address.call(msgs.RecordFailure(A)) == 5.0
    assert address.call(msgs.SelectSyncPeers(5)) == ()  # in backoff
    assert address.call(msgs.DiscoverPeers(((B, None), (A, None)))) == (B,)
    assert address.call(msgs.RefreshDue()) is None
    table = address.call(msgs.GetPeerTable())
    assert isinstance(table, PeerTableSnapshot) and [p.peer_id for p in table.peers] == [A, B]
    assert address.call(msgs.SetPeerStatus(B, S.REMOVED)) is None
    assert address.call(msgs.RestorePeerTable(table)) is None
    assert address.call(msgs.GetPeerTable()) == table
    with pytest.raises(CapabilityError):
        address.call(msgs.AdmitPeer(A, None, b"not a token"))


def test_degraded_peers_are_not_selected_and_bans_are_listed(address: ActorAddress) -> None:
    ready(address, A)
    assert address.call(msgs.SetPeerStatus(A, S.DEGRADED)) is None
    assert address.call(msgs.SelectSyncPeers(5)) == ()
    address.call(msgs.SetPeerStatus(A, S.CONNECTED))
    assert address.call(msgs.SelectSyncPeers(5)) == (A,)
    assert address.call(msgs.ListBans()) == ()
    ban = None
    while ban is None:
        ban = address.call(msgs.ReportOffence(A, Offence.CAPABILITY, "10.0.0.5:1"))
    assert address.call(msgs.ListBans()) == (ban,) and ban.address == "10.0.0.5:1"
    assert address.call(msgs.SelectSyncPeers(5)) == ()  # banned: in backoff until it ends


def test_capability_token_by_message(clock: ManualClock) -> None:
    authority = generate_authority_keypair()
    config = PeerDiscoveryConfig(root_public_key=authority.public_key)
    address = spawn(lambda: PeerManagerActor(config, clock=clock))
    try:
        token = issue_capability_token(authority.private_key)
        with pytest.raises(CapabilityError):
            address.call(msgs.AdmitPeer(A, "a:1", token[:-3]))
        with pytest.raises(UnknownPeer):  # a bad token took no slot
            address.call(msgs.GetPeer(A))
        assert address.call(msgs.AdmitPeer(A, "a:1", token)) == ("sync:request_digest",)
        info = address.call(msgs.GetPeer(A))
        assert info.metadata.has_sync_capability is True and info.address_verified
        with pytest.raises(CapabilityError):
            address.call(msgs.AdmitPeer(A, None, token[:-3]))
        assert address.call(msgs.GetPeer(A)).metadata.has_sync_capability is False  # fails closed
    finally:
        address.stop()


def test_typed_errors(address: ActorAddress) -> None:
    ready(address, A, trust=90)
    ready(address, B, trust=70)
    address.call(msgs.AddPeer(C))
    assert address.call(msgs.SelectSyncPeers(2)) == (A, B)
    assert address.call(msgs.IsPeerAvailable(C)) is False
    address.call(msgs.StartSyncSession(A))
    address.call(msgs.StartSyncSession(A))
    with pytest.raises(SessionLimitReached):
        address.call(msgs.StartSyncSession(A))
    address.call(msgs.EndSyncSession(A, False, 1.0))
    with pytest.raises(PeerUnavailable):
        address.call(msgs.StartSyncSession(C))
    address.call(msgs.SetPeerStatus(C, S.REMOVED))
    with pytest.raises(InvalidTransition, match="REMOVED -> CONNECTED"):
        address.call(msgs.SetPeerStatus(C, S.CONNECTED))
    with pytest.raises(UnknownPeer):
        address.call(msgs.GetPeer(peer(99)))
    table = address.call(msgs.GetPeerTable())
    assert [p.metadata.active_sessions for p in table.peers] == [1, 0, 0]


def test_async_calls(address: ActorAddress) -> None:
    async def scenario() -> None:
        assert await address.call_async(msgs.AddPeer(A)) is True
        await address.call_async(msgs.SetPeerStatus(A, S.CONNECTED))
        await address.call_async(msgs.UpdatePeerMetadata(A, 90, True, True))
        assert (await address.call_async(msgs.GetPeer(A))).metadata.verified is True
        assert await address.call_async(msgs.SelectSyncPeers(3)) == (A,)
        snapshot = await address.call_async(msgs.GetPeerTable())
        await address.call_async(msgs.SetPeerStatus(A, S.REMOVED))
        await address.call_async(msgs.RestorePeerTable(snapshot))
        assert await address.call_async(msgs.GetPeerTable()) == snapshot
        with pytest.raises(UnknownPeer):
            await address.call_async(msgs.GetPeer(C))

    asyncio.run(scenario())


def test_bad_values_from_the_wire_reach_the_core_and_come_back_as_errors(
    address: ActorAddress,
) -> None:
    address.call(msgs.AddPeer(A))
    with pytest.raises(InvalidArgument, match=r"trust_level must be in 0\.\.100, got 101"):
        address.call(msgs.UpdatePeerMetadata(A, trust_level=101))
    with pytest.raises(WrongType, match="peer_id must be a DeviceId"):
        address.call(msgs.AddPeer("alice"))  # type: ignore[arg-type]
    with pytest.raises(WrongType, match="candidates"):
        address.call(msgs.DiscoverPeers("abc"))  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="latency must be"):
        address.call(msgs.EndSyncSession(A, True, -1.0))
    with pytest.raises(InvalidArgument, match="count must be >= 0"):
        address.call(msgs.SelectSyncPeers(-1))
    bad = address.call(msgs.GetPeerTable())
    meta = dataclasses.replace(bad.peers[0].metadata, active_sessions=-1)
    broken = PeerTableSnapshot((dataclasses.replace(bad.peers[0], metadata=meta),), None)
    with pytest.raises(InvalidArgument, match=r"snapshot.peers\[0\] active_sessions"):
        address.call(msgs.RestorePeerTable(broken))
    reply = address.ask(IsFresh("k", 1))
    assert isinstance(reply, ErrorReply) and reply.error_type == "UnhandledMessage"
    reply = address.ask(InjectCrash())
    assert isinstance(reply, ErrorReply) and reply.error_type == "InvalidArgument"
    assert address.call(msgs.GetPeer(A)).metadata.trust_level == 50  # nothing changed


def test_refresh_ticks_run_discovery_when_due(clock: ManualClock) -> None:
    discovery = CountingDiscovery([(A, "a:1"), (B, None)])
    config = PeerDiscoveryConfig(refresh_interval=60.0)
    scheduler = Scheduler(clock)
    addr = spawn(
        lambda: PeerManagerActor(config, clock=clock, scheduler=scheduler, discovery=discovery)
    )

    def tracked() -> int:
        return len(addr.call(msgs.GetPeerTable()).peers)

    try:
        assert tracked() == 2  # a round at start: none had run
        assert discovery.rounds == 1
        clock.advance(59.0)
        assert tracked() == 2 and discovery.rounds == 1
        discovery.candidates += ((C, None),)
        clock.advance(1.0)  # the RefreshDue tick fires; the ask below is queued behind it
        assert tracked() == 3
        assert discovery.rounds == 2
        discovery.fail = True
        discovery.candidates += ((peer(4), None),)
        clock.advance(60.0)
        assert tracked() == 3  # the failed round changed nothing
        assert discovery.rounds == 3
        discovery.fail = False
        addr.call(msgs.RefreshDue())  # still due: runs again at once (and re-arms the tick)
        assert tracked() == 4 and discovery.rounds == 4
        addr.call(msgs.RefreshDue())  # not due: no round
        assert discovery.rounds == 4
        assert clock.pending_timers() == 1  # exactly one tick pending, never more
    finally:
        addr.stop()
    assert clock.pending_timers() == 0  # the tick is cancelled on stop


def test_peer_table_survives_a_crash(clock: ManualClock) -> None:
    stash: dict[str, object] = {}
    first = spawn(lambda: PeerManagerActor(clock=clock, stash=stash, fault_injection=True))
    ready(first, A)
    first.call(msgs.StartSyncSession(A))
    first.call(msgs.RecordFailure(A))
    first.call(msgs.ReportOffence(A, Offence.RATE_LIMITED, "a:1"))
    before = first.call(msgs.GetPeer(A))
    reply = first.ask(InjectCrash("mid-run"))
    assert isinstance(reply, ErrorReply) and reply.error_type == "ActorCrashed"
    # on_crash (after the reply) cancels the dead incarnation's tick
    wait_until(lambda: clock.pending_timers() == 0, what="the tick to be cancelled")
    assert isinstance(stash[STASH_KEY], PeerManager)
    second = spawn(lambda: PeerManagerActor(clock=clock, stash=stash))
    try:
        after = second.call(msgs.GetPeer(A))
        assert after == before  # sessions, backoff and trust all kept
    finally:
        second.stop()


def test_constructor_validates_arguments() -> None:
    with pytest.raises(WrongType, match="discovery must have a discover"):
        PeerManagerActor(discovery=object())  # type: ignore[arg-type]
    with pytest.raises(WrongType, match="clock must be a Clock"):
        PeerManagerActor(clock="now")  # type: ignore[arg-type]
    with pytest.raises(WrongType, match="scheduler must be a Scheduler"):
        PeerManagerActor(scheduler=1)  # type: ignore[arg-type]
    with pytest.raises(WrongType, match="config must be a PeerDiscoveryConfig"):
        PeerManagerActor({})  # type: ignore[arg-type]
