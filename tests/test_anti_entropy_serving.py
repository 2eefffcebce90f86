"""Serving peers (``aura_sync.protocols.serving``): untrusted requests get clear error replies.

A request whose bounds are exceeded (the codec only checked field types) is
answered with an error reply naming the field; the journal is untouched and
the connection stays usable.  No actors, no sockets: the server answers on
the caller's thread through a fake connection.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from typing import Any

import pytest

from aura_sync.actors._tasks import Tasks
from aura_sync.actors.address import ActorAddress
from aura_sync.effects import ManualClock, Scheduler
from aura_sync.identity import NodeIdentity
from aura_sync.ids import DeviceId
from aura_sync.infrastructure.peer_scoring import Offence
from aura_sync.messages import ErrorReply, Message
from aura_sync.messages.sync import (
    FULL_RANGE,
    MAX_OPS_BATCH,
    MAX_RANGES,
    DigestReply,
    DigestRequest,
    IdsRequest,
    OpsRequest,
    PeerExchangeRequest,
    PresentCapability,
    PushAck,
    PushOps,
)
from aura_sync.protocols.admission import AdmissionConfig
from aura_sync.protocols.anti_entropy import AntiEntropyConfig, InfraAddresses
from aura_sync.protocols.journal import Journal
from aura_sync.protocols.serving import Server
from aura_sync.transport.base import Inbound

PEER = DeviceId.from_int(9)


class FakeConnection:
    """Records the replies sent on it."""

    peer_id = PEER
    initiator = False
    peer_listen_address = None

    def __init__(self) -> None:
        self.sent: list[tuple[int, Message]] = []

    def _respond(self, request_id: int, reply: Message) -> None:
        self.sent.append((request_id, reply))


class Rig:
    def __init__(self, **server: Any) -> None:
        self.journal = Journal.open(":memory:", identity=NodeIdentity.generate())
        self.journal.append_many([b"one", b"two"])
        self.stats: dict[str, int] = collections.defaultdict(int)
        self.refusals: list[DeviceId] = []
        nowhere = ActorAddress("nowhere")
        self.server = Server(
            AntiEntropyConfig(admission=AdmissionConfig(enabled=False)),  # see test_admission.py
            self.journal,
            infra=InfraAddresses(nowhere, nowhere, nowhere),
            tasks=Tasks(None, Scheduler(ManualClock())),  # type: ignore[arg-type]
            stats=self.stats,
            bump_epoch=lambda: None,
            count_refusal=lambda peer, exc: self.refusals.append(peer),
            verified_addresses=lambda: [],
            on_authorized=lambda conn: None,
            **server,
        )
        self.conn = FakeConnection()
        self.reports: list[tuple[DeviceId, Offence]] = []
        self.server.report = lambda peer, offence: self.reports.append((peer, offence))

    def ask(self, request: Any) -> Message:
        self.server.serve(Inbound(self.conn, request, len(self.conn.sent) + 1))  # type: ignore[arg-type]
        return self.conn.sent[-1][1]


@pytest.fixture
def rig() -> Iterator[Rig]:
    r = Rig()
    try:
        yield r
    finally:
        r.journal.close()


def _error(reply: Message, error_type: str, *needles: str) -> None:
    assert isinstance(reply, ErrorReply), reply
    assert reply.error_type == error_type, reply
    for needle in needles:
        assert needle in reply.message, (needle, reply.message)


@pytest.mark.parametrize(
    ("request_", "needles"),
    [
        (DigestRequest(()), ("ranges", f"1..{MAX_RANGES}", "0")),
        (DigestRequest((FULL_RANGE,) * (MAX_RANGES + 1)), ("ranges", str(MAX_RANGES + 1))),
        (IdsRequest(FULL_RANGE, 0), ("limit",)),
        (OpsRequest((b"short",)), ("ids[0]", "32 bytes")),
        (OpsRequest((bytes(32),) * 2), ("ids[1]", "repeats")),
        (OpsRequest(tuple(i.to_bytes(32, "big") for i in range(MAX_OPS_BATCH + 1))), ("ids",)),
        (PushOps(()), ("ops", f"1..{MAX_OPS_BATCH}")),
        (PeerExchangeRequest(0), ("max_peers",)),
        (PresentCapability(b""), ("token", "0")),
    ],
)
def test_a_request_out_of_bounds_gets_an_error_reply_naming_the_field(
    rig: Rig, request_: Message, needles: tuple[str, ...]
) -> None:
    before = rig.journal.digest()
    _error(rig.ask(request_), "InvalidArgument", *needles)
    assert rig.journal.digest() == before
    assert rig.reports == [(PEER, Offence.INVALID_REQUEST)]  # it costs the peer trust
    reply = rig.ask(DigestRequest((FULL_RANGE,)))  # the same connection still serves
    assert isinstance(reply, DigestReply) and reply.digests == (before,)


def test_a_refused_op_batch_is_counted_against_the_peer(rig: Rig) -> None:
    other = Journal.open(":memory:", identity=NodeIdentity.generate())
    try:
        other.append_many([b"a", b"b"])
        ops = other.get_many(other.all_ids())
        forged = [ops[0].__class__(**{**_fields(ops[0]), "payload": b"forged"})]
    finally:
        other.close()
    reply = rig.ask(PushOps(tuple(forged)))
    _error(reply, "OpRefused")
    assert rig.refusals == [PEER] and len(rig.journal) == 2
    assert rig.reports == []  # REFUSED_OPS goes through count_refusal (the actor reports it)


def test_pushed_ops_that_grow_the_journal_are_timed_for_the_sessions() -> None:
    clock = ManualClock()
    rig = Rig(clock=clock)
    other = Journal.open(":memory:", identity=NodeIdentity.generate())
    try:
        other.append_many([b"a", b"b"])
        ops = tuple(other.get_many(other.push_order(other.all_ids())))
        assert rig.server.pushed_at == float("-inf")
        clock.advance(3.0)
        assert rig.ask(PushOps(ops)) == PushAck(2, 0)
        assert rig.server.pushed_at == 3.0
        clock.advance(1.0)
        assert rig.ask(PushOps(ops)) == PushAck(0, 2)  # nothing new: the journal is settled
        assert rig.server.pushed_at == 3.0
    finally:
        other.close()
        rig.journal.close()


def test_non_sync_requests_and_refusals(rig: Rig) -> None:
    _error(rig.ask(ErrorReply("X", "y")), "UnhandledMessage", "not a sync request")
    refusing = Rig()
    try:
        refusing.server._config = AntiEntropyConfig(refuse_sync=True)
        _error(refusing.ask(DigestRequest()), "PeerUnavailable", "refuses to sync")
        assert refusing.stats["requests_refused"] == 1
    finally:
        refusing.journal.close()


def _fields(op: Any) -> dict[str, Any]:
    return {name: getattr(op, name) for name in op.__dataclass_fields__}
