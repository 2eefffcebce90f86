"""PeerManagerActor and PeerManagerClient: every operation by message, error replies,
async forms, scheduled refresh with a discovery effect, and the table across restarts."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator

import pytest
from test_actors_support import no_leftover_threads, peer, wait_until  # noqa: F401  (fixture)

from aura_sync.actors.address import ActorAddress, spawn
from aura_sync.actors.clients import PeerManagerClient
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
from aura_sync.infrastructure.peers import (
    PeerDiscoveryConfig,
    PeerManager,
    PeerManagerStatistics,
    PeerStatus,
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


@pytest.fixture
def client(address: ActorAddress) -> PeerManagerClient:
    return PeerManagerClient(address)


def ready(client: PeerManagerClient, peer_id: DeviceId, trust: int = 80) -> None:
    client.add_peer(peer_id)
    client.set_peer_status(peer_id, S.CONNECTED)
    client.update_peer_metadata(peer_id, trust_level=trust, verified=True, has_sync_capability=True)


def test_every_operation_by_message(address: ActorAddress) -> None:
    assert address.ask(msgs.AddPeer(A, "10.0.0.1:7400")) == msgs.PeerAdded(A, True)
    assert address.ask(msgs.AddPeer(A)) == msgs.PeerAdded(A, False)
    assert address.ask(msgs.SetPeerStatus(A, S.CONNECTED)) == Ack()
    update = msgs.UpdatePeerMetadata(A, trust_level=90, verified=True, has_sync_capability=True)
    assert address.ask(update) == Ack()
    info = address.ask(msgs.GetPeer(A))
    assert isinstance(info, msgs.PeerInfoReply) and info.address == "10.0.0.1:7400"
    assert info.metadata.trust_level == 90 and info.metadata.status is S.CONNECTED
    score = address.ask(msgs.GetPeerScore(A))
    assert isinstance(score, msgs.PeerScoreReply) and score.score == pytest.approx(
        0.5 * 0.9 + 0.15 + 0.2
    )
    assert address.ask(msgs.IsPeerAvailable(A)) == msgs.PeerAvailabilityReply(A, True)
    assert address.ask(msgs.SelectSyncPeers(5)) == msgs.SelectedPeers((A,))
    assert address.ask(msgs.StartSyncSession(A)) == Ack()
    assert address.ask(msgs.EndSyncSession(A, True, 0.05)) == Ack()
    failure = address.ask(msgs.RecordFailure(A))
    assert failure == msgs.FailureRecorded(A, 5.0)
    assert address.ask(msgs.SelectSyncPeers(5)) == msgs.SelectedPeers(())  # in backoff
    found = address.ask(msgs.DiscoverPeers.from_pairs([(B, None), (A, None)]))
    assert found == msgs.PeersDiscovered((B,))
    assert address.ask(msgs.NeedsRefresh()) == msgs.RefreshNeededReply(False)
    assert address.ask(msgs.RefreshDue()) == Ack()
    stats = address.ask(msgs.GetPeerStatistics())
    assert stats == msgs.PeerStatisticsReply(2, 1, 0, 1, 0)
    table = address.ask(msgs.GetPeerTable())
    assert isinstance(table, msgs.PeerTableReply) and [p.peer_id for p in table.peers] == [A, B]
    assert address.ask(msgs.RemovePeer(B)) == Ack()
    assert address.ask(msgs.RestorePeerTable(table.peers, table.last_discovery)) == Ack()
    assert address.ask(msgs.GetPeerStatistics()).total_tracked == 2
    reply = address.ask(msgs.UpdatePeerCapabilities(A, b"not a token"))
    assert isinstance(reply, ErrorReply) and reply.error_type == "CapabilityError"


def test_capability_token_by_message(clock: ManualClock) -> None:
    authority = generate_authority_keypair()
    config = PeerDiscoveryConfig(root_public_key=authority.public_key)
    addr = spawn(lambda: PeerManagerActor(config, clock=clock))
    try:
        client = PeerManagerClient(addr)
        client.add_peer(A)
        token = issue_capability_token(authority.private_key)
        assert client.update_peer_capabilities(A, token) == ("sync:request_digest",)
        assert client.get_peer(A).metadata.has_sync_capability is True
        with pytest.raises(CapabilityError):
            client.update_peer_capabilities(A, token[:-3])
        assert client.get_peer(A).metadata.has_sync_capability is False  # fails closed
    finally:
        addr.stop()


def test_client_sync_forms_and_typed_errors(client: PeerManagerClient) -> None:
    ready(client, A, trust=90)
    ready(client, B, trust=70)
    client.add_peer(C)
    assert client.select_sync_peers(2) == [A, B]
    assert client.is_peer_available(C) is False
    assert client.peer_score(A) > client.peer_score(B)
    client.start_sync_session(A)
    client.start_sync_session(A)
    with pytest.raises(SessionLimitReached):
        client.start_sync_session(A)
    client.end_sync_session(A, False, 1.0)
    with pytest.raises(PeerUnavailable):
        client.start_sync_session(C)
    client.set_peer_status(C, S.REMOVED)
    with pytest.raises(InvalidTransition, match="REMOVED -> CONNECTED"):
        client.set_peer_status(C, S.CONNECTED)
    with pytest.raises(UnknownPeer):
        client.get_peer(peer(99))
    assert client.record_failure(B) == 5.0
    assert client.track_discovered([(peer(4), "h:1")]) == [peer(4)]
    assert client.needs_refresh() is False
    client.refresh()
    snapshot = client.snapshot()
    client.remove_peer(peer(4))
    client.restore(snapshot)
    stats = client.statistics()
    assert isinstance(stats, PeerManagerStatistics) and stats.total_tracked == 4
    assert stats.total_active_sessions == 1


def test_client_async_forms(client: PeerManagerClient) -> None:
    async def scenario() -> None:
        assert await client.add_peer_async(A) is True
        await client.set_peer_status_async(A, S.CONNECTED)
        await client.update_peer_metadata_async(
            A, trust_level=90, verified=True, has_sync_capability=True
        )
        assert (await client.get_peer_async(A)).metadata.verified is True
        assert await client.is_peer_available_async(A) is True
        assert 0.0 < await client.peer_score_async(A) <= 1.0
        assert await client.select_sync_peers_async(3) == [A]
        await client.start_sync_session_async(A)
        await client.end_sync_session_async(A, True, 0.2)
        assert await client.record_failure_async(A) == 5.0
        with pytest.raises(CapabilityError):
            await client.update_peer_capabilities_async(A, b"junk")
        assert await client.track_discovered_async([(B, None)]) == [B]
        assert await client.needs_refresh_async() is False
        await client.refresh_async()
        snapshot = await client.snapshot_async()
        await client.remove_peer_async(B)
        await client.restore_async(snapshot)
        assert (await client.statistics_async()).total_tracked == 2
        with pytest.raises(UnknownPeer):
            await client.get_peer_async(C)

    asyncio.run(scenario())


def test_bad_input_and_unknown_messages(address: ActorAddress, client: PeerManagerClient) -> None:
    with pytest.raises(InvalidArgument, match="unknown peer metadata field"):
        client.update_peer_metadata(A, colour="blue")
    with pytest.raises(WrongType, match="peer_id must be a DeviceId"):
        client.add_peer("alice")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="trust_level"):
        client.update_peer_metadata(A, trust_level=101)
    with pytest.raises(WrongType, match="candidates"):
        client.track_discovered("abc")  # type: ignore[arg-type]
    reply = address.ask(IsFresh("k", 1))
    assert isinstance(reply, ErrorReply) and reply.error_type == "UnhandledMessage"
    reply = address.ask(msgs.EndSyncSession(A, True, 0.0))
    assert isinstance(reply, ErrorReply) and reply.error_type == "UnknownPeer"
    reply = address.ask(InjectCrash())
    assert isinstance(reply, ErrorReply) and reply.error_type == "InvalidArgument"
    assert client.add_peer(A) is True  # alive and unchanged by the refusals


def test_refresh_ticks_run_discovery_when_due(clock: ManualClock) -> None:
    discovery = CountingDiscovery([(A, "a:1"), (B, None)])
    config = PeerDiscoveryConfig(refresh_interval=60.0)
    scheduler = Scheduler(clock)
    addr = spawn(
        lambda: PeerManagerActor(config, clock=clock, scheduler=scheduler, discovery=discovery)
    )
    try:
        client = PeerManagerClient(addr)
        assert client.statistics().total_tracked == 2  # a round at start: none had run
        assert discovery.rounds == 1 and client.needs_refresh() is False
        clock.advance(59.0)
        assert client.needs_refresh() is False and discovery.rounds == 1
        discovery.candidates += ((C, None),)
        clock.advance(1.0)  # the RefreshDue tick fires; the ask below is queued behind it
        assert client.statistics().total_tracked == 3
        assert discovery.rounds == 2
        discovery.fail = True
        clock.advance(60.0)
        assert client.needs_refresh() is True  # the failed round is retried next tick
        assert discovery.rounds == 3
        discovery.fail = False
        clock.advance(60.0)
        assert client.needs_refresh() is False and discovery.rounds == 4
        assert clock.pending_timers() == 1  # exactly one tick pending, never more
    finally:
        addr.stop()
    assert clock.pending_timers() == 0  # the tick is cancelled on stop


def test_peer_table_survives_a_crash(clock: ManualClock) -> None:
    stash: dict[str, object] = {}
    first = spawn(lambda: PeerManagerActor(clock=clock, stash=stash, fault_injection=True))
    client = PeerManagerClient(first)
    ready(client, A)
    client.start_sync_session(A)
    client.record_failure(A)
    before = client.get_peer(A)
    reply = first.ask(InjectCrash("mid-run"))
    assert isinstance(reply, ErrorReply) and reply.error_type == "ActorCrashed"
    # on_crash (after the reply) cancels the dead incarnation's tick
    wait_until(lambda: clock.pending_timers() == 0, what="the tick to be cancelled")
    assert isinstance(stash[STASH_KEY], PeerManager)
    second = spawn(lambda: PeerManagerActor(clock=clock, stash=stash))
    try:
        after = PeerManagerClient(second).get_peer(A)
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
