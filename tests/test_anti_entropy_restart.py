"""The anti-entropy actor's robustness: across its own restarts nothing it obtained leaks and
no tick doubles; a reply it cannot send becomes an error reply for the peer.

A crash of the protocol actor while one of its asks is still pending (a pool
acquire queued as a deferred reply, a sync session being opened) must not
leave the loan or the session behind when the reply finally comes; and a
``SyncTick`` arriving besides the one armed in ``on_start`` must not start a
second tick chain.  Virtual time (``ManualClock``) throughout; every wait is
on a condition with a timeout.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from test_actors_support import (  # noqa: F401  (fixture)
    FakeConnector,
    no_leftover_threads,
    peer,
    wait_until,
)

from aura_sync.actors import DEFERRED, AuraActor, LocalMessage, ReplySlot, handles, spawn
from aura_sync.effects import ManualClock
from aura_sync.identity import NodeIdentity
from aura_sync.ids import DeviceId
from aura_sync.infrastructure.connections import PoolConfig
from aura_sync.infrastructure.peers import PeerStatus, PeerTableSnapshot
from aura_sync.messages import ErrorReply, Message, codec
from aura_sync.messages.faults import InjectCrash
from aura_sync.messages.peers import (
    AddPeer,
    EndSyncSession,
    GetPeer,
    GetPeerTable,
    SelectSyncPeers,
    SetPeerStatus,
    StartSyncSession,
    UpdatePeerMetadata,
)
from aura_sync.messages.pool import Acquire, GetPoolStatistics
from aura_sync.messages.sync import FULL_RANGE, DigestRequest
from aura_sync.protocols.anti_entropy import (
    AntiEntropyActor,
    AntiEntropyConfig,
    AppendOps,
    GetSyncStatus,
    InfraAddresses,
    OpsAppended,
    SyncStatus,
    SyncTick,
)
from aura_sync.protocols.journal import Journal
from aura_sync.protocols.serving import respond
from aura_sync.supervisors import ChildContext, ChildSpec, Supervisor
from aura_sync.supervisors.infrastructure import Infrastructure, InfrastructureConfig
from aura_sync.transport.base import Inbound

pytestmark = pytest.mark.usefixtures("no_leftover_threads")

P = peer(7)


class Rig:
    """The four infrastructure actors plus a supervised anti-entropy actor, on one ManualClock."""

    def __init__(self) -> None:
        self.clock = ManualClock()
        self.infra = Infrastructure.start(
            InfrastructureConfig(pool=PoolConfig(max_connections_per_peer=1)),
            connector=FakeConnector(),
            clock=self.clock,
        )
        self.journal = Journal.open(":memory:", identity=NodeIdentity.generate())
        infra = self.infra
        config = AntiEntropyConfig(max_cached_skips=0)

        def start(ctx: ChildContext) -> AntiEntropyActor:
            return AntiEntropyActor(
                config,
                self.journal,
                InfraAddresses(infra.peers, infra.rate_limiter, infra.pool),
                clock=ctx.clock,
                scheduler=ctx.scheduler,
                stash=ctx.stash,
                fault_injection=True,
            )

        self.protocols = Supervisor([ChildSpec("ae", start)], clock=self.clock, name="protocols")
        self.protocols.start()
        self.ae = self.protocols.address_of("ae")

    def status(self) -> SyncStatus:
        return self.ae.call(GetSyncStatus())

    def stop(self) -> None:
        self.protocols.stop()
        self.infra.stop()
        self.journal.close()


@pytest.fixture
def rig() -> Iterator[Rig]:
    r = Rig()
    try:
        yield r
    finally:
        r.stop()


def test_a_crash_with_a_queued_acquire_does_not_leak_the_loan_or_the_session(rig: Rig) -> None:
    peers = rig.infra.peers
    peers.call(AddPeer(P, "10.0.0.7:7400"))
    peers.call(SetPeerStatus(P, PeerStatus.CONNECTED))
    peers.call(UpdatePeerMetadata(P, verified=True, has_sync_capability=True))
    pool = rig.infra.pool
    held = pool.call(Acquire(P, 0.0))  # the only connection P may have: the next one queues

    rig.ae.tell(SyncTick())  # a round selects P, opens a session and queues an Acquire
    stats = GetPoolStatistics()
    wait_until(lambda: pool.call(stats).waits == 1, what="the round's acquire to queue")
    assert peers.call(GetPeer(P)).metadata.active_sessions == 1

    rig.ae.tell(InjectCrash("mid-acquire"))
    wait_until(lambda: rig.protocols.restart_count("ae") == 1, what="the restart")
    held.release()  # the pool now lends the connection to the dead incarnation's task

    # It comes back to the pool: a new acquire is served at once, nothing stays lent.
    wait_until(lambda: pool.call(stats).in_use == 0, what="the orphaned loan to come back")
    with pool.call(Acquire(P, 0.0)):
        pass
    assert peers.call(GetPeer(P)).metadata.active_sessions == 0
    assert rig.status().active_sessions == 0


def test_extra_sync_ticks_never_start_a_second_tick_chain(rig: Rig) -> None:
    for _ in range(5):  # each re-arms the round timer: it must replace, not add, a timer
        rig.ae.tell(SyncTick())
    assert rig.status().counter("rounds_started") == 5
    # Ticks come every 0.9..1.1 x sync_interval (2 s): 2.2 s of virtual time holds one.
    rig.clock.advance(2.2)
    assert rig.status().counter("rounds_started") == 6
    rig.clock.advance(2.2)
    assert rig.status().counter("rounds_started") == 7


class _SmallFrames:
    """A connection stand-in whose frames hold 128 bytes; records what it sent."""

    peer_id = P

    def __init__(self) -> None:
        self.sent: list[tuple[int, Message]] = []

    def _respond(self, request_id: int, reply: Message) -> None:
        codec.encode(reply, max_size=128)  # InvalidArgument when it does not fit
        self.sent.append((request_id, reply))


def test_a_reply_too_large_to_send_becomes_an_error_reply() -> None:
    conn = _SmallFrames()
    event = Inbound(conn, DigestRequest((FULL_RANGE,)), 7)  # type: ignore[arg-type]
    respond(event, AppendOps((b"x" * 300,)))
    assert len(conn.sent) == 1
    request_id, reply = conn.sent[0]
    assert request_id == 7
    assert isinstance(reply, ErrorReply) and reply.error_type == "InvalidArgument"
    assert "over the limit of 128" in reply.message


@dataclass(frozen=True, slots=True)
class _AnswerHeld(LocalMessage):
    """Tell the slow peer manager to answer the StartSyncSession asks it holds."""


class _SlowPeerManager(AuraActor):
    """Selects P, holds StartSyncSession asks until told, records EndSyncSession."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[ReplySlot] = []
        self.ended: list[EndSyncSession] = []

    @handles(GetPeerTable)
    def _table(self, msg: GetPeerTable) -> PeerTableSnapshot:
        return PeerTableSnapshot((), None)

    @handles(SelectSyncPeers)
    def _select(self, msg: SelectSyncPeers) -> tuple[DeviceId, ...]:
        return (P,)

    @handles(StartSyncSession)
    def _start(self, msg: StartSyncSession) -> Any:
        slot = self.current_reply()
        assert slot is not None
        self.held.append(slot)
        return DEFERRED

    @handles(_AnswerHeld)
    def _answer(self, msg: _AnswerHeld) -> None:
        for slot in self.held:
            slot.set(1)  # a session opened (its count), as a real peer manager would

    @handles(EndSyncSession)
    def _end(self, msg: EndSyncSession) -> None:
        self.ended.append(msg)

    @handles(GetSyncStatus)
    def _counts(self, msg: GetSyncStatus) -> OpsAppended:  # (held, ended, 0) for the test
        return OpsAppended(len(self.held), len(self.ended), 0)


def test_a_session_opened_after_the_ask_timed_out_is_ended() -> None:
    clock = ManualClock()
    infra = Infrastructure.start(connector=FakeConnector(), clock=clock)
    slow = spawn(_SlowPeerManager())
    journal = Journal.open(":memory:", identity=NodeIdentity.generate())
    config = AntiEntropyConfig(max_cached_skips=0, sync_interval=1000.0, ask_timeout=5.0)
    ae = spawn(
        AntiEntropyActor(
            config,
            journal,
            InfraAddresses(slow, infra.rate_limiter, infra.pool),
            clock=clock,
        )
    )
    try:
        ae.tell(SyncTick())
        wait_until(lambda: slow.ask(GetSyncStatus()).added == 1, what="the held session start")
        clock.advance(5.0)  # the anti-entropy actor stops waiting for it
        wait_until(
            lambda: ae.ask(GetSyncStatus()).counter("rounds_failed") == 1, what="the failure"
        )
        slow.tell(_AnswerHeld())  # ... and only now is the session opened
        wait_until(lambda: slow.ask(GetSyncStatus()).own_ops == 1, what="the session ended")
        ended = slow.ask(GetSyncStatus())
        assert (ended.added, ended.own_ops) == (1, 1)
    finally:
        ae.stop()
        slow.stop()
        infra.stop()
        journal.close()
