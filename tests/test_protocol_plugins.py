"""Protocol plug-ins: declared types reach their protocol, undeclared ones get an error reply,
conflicting or unknown registrations fail the start naming both sides.

Two real TCP nodes on loopback: node ``b`` runs an ``echo`` plug-in; the test
dials ``b`` with ``a``'s transport and sends requests and one-way messages.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _node_helpers import wait_until

from aura_sync.actors import AuraActor, handles
from aura_sync.actors._tasks import TaskHost, Tasks
from aura_sync.errors import AuraError, StartFailed, WrongType
from aura_sync.ids import DeviceId
from aura_sync.messages import ErrorReply, Message, Request, message
from aura_sync.messages.sync import DigestRequest
from aura_sync.node.config import load_config
from aura_sync.node.node import Node
from aura_sync.protocols.plugin import (
    ProtocolContext,
    ProtocolSpec,
    TransportEventMessage,
    resolve_spec,
)
from aura_sync.transport.base import Connected, Inbound


@message(0xFE30)
class Echo(Request["Echoed"]):
    text: str


@message(0xFE31)
class Echoed(Message):
    text: str
    peers: tuple[DeviceId, ...]


@message(0xFE32)
class Note(Message):
    text: str


@message(0xFE33)
class Unclaimed(Request["Echoed"]):
    text: str


@message(0xFE34)
class GetNotes(Request[tuple[str, ...]]):
    pass


class EchoActor(TaskHost, AuraActor):
    """Answers Echo (after admission), records Notes and connected peers."""

    def __init__(self, ctx: ProtocolContext) -> None:
        super().__init__()
        self.ctx = ctx
        self._tasks = Tasks(self, ctx.child.scheduler)
        self._admission = ctx.admission(self._tasks, {})
        self.notes: list[str] = ctx.child.stash.setdefault("notes", [])

    @handles(TransportEventMessage)
    def _event(self, msg: TransportEventMessage) -> None:
        event = msg.event
        if isinstance(event, Inbound):
            self._admission.serve(event, self._serve)
        elif isinstance(event, Connected):
            self.notes.append(f"connected {event.connection.peer_id}")

    def _serve(self, event: Inbound) -> bool:
        request = event.message
        if isinstance(request, Echo):
            event.respond(Echoed(request.text.upper(), self.ctx.transport.peers()))
            return True
        if isinstance(request, Note):
            self.notes.append(request.text)
        return False

    @handles(GetNotes)
    def _get(self, msg: GetNotes) -> tuple[str, ...]:
        return tuple(self.notes)

    def on_stop(self) -> None:
        self._tasks.abandon("stopping")


def echo_spec() -> ProtocolSpec:
    return ProtocolSpec("echo", EchoActor, requests=(Echo,), messages=(Note,))


def _node(path: Path, **settings: Any) -> Node:
    base: dict[str, Any] = {
        "data_dir": str(path),
        "listen": "127.0.0.1:0",
        "sync_interval": 0.2,
        "shutdown_timeout": 5.0,
    }
    base.update(settings)
    return Node(load_config(None, base), protocols=settings.pop("_protocols", ()))


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Node, Node]]:
    b = Node(
        load_config(None, {"data_dir": str(tmp_path / "b"), "listen": "127.0.0.1:0"}),
        protocols=[echo_spec()],
    ).start()
    a = _node(tmp_path / "a").start()
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()


def test_declared_request_and_message_reach_their_protocol(pair: tuple[Node, Node]) -> None:
    a, b = pair
    conn = a.transport.connect(b.device_id, b.listen_address, timeout=5.0)
    reply = conn.request(Echo("hi"), 5.0).result(5.0)
    assert isinstance(reply, Echoed)
    assert reply.text == "HI"
    assert a.device_id in reply.peers  # the transport handle sees the connected peer
    conn.send(Note("one-way"))
    notes = b.address_of("echo")
    wait_until(lambda: "one-way" in notes.call(GetNotes(), 2.0), 5.0, "the note")
    assert f"connected {a.device_id}" in notes.call(GetNotes(), 2.0)
    # anti-entropy still gets its own requests (its server checks the bounds)
    digest = conn.request(DigestRequest(()), 5.0).result(5.0)
    assert isinstance(digest, ErrorReply) and "ranges must hold" in digest.message


def test_undeclared_request_gets_an_error_reply(pair: tuple[Node, Node]) -> None:
    a, b = pair
    conn = a.transport.connect(b.device_id, b.listen_address, timeout=5.0)
    reply = conn.request(Unclaimed("x"), 5.0).result(5.0)
    assert isinstance(reply, ErrorReply)
    assert reply.error_type == "UnhandledMessage"
    assert "Unclaimed" in reply.message
    # a node without the plug-in refuses Echo the same way; the connection stays up
    back = b.transport.connect(a.device_id, a.listen_address, timeout=5.0)
    refused = back.request(Echo("x"), 5.0).result(5.0)
    assert isinstance(refused, ErrorReply) and refused.error_type == "UnhandledMessage"
    still = conn.request(Echo("still up"), 5.0).result(5.0)
    assert isinstance(still, Echoed) and still.text == "STILL UP"


def test_two_protocols_claiming_one_type_fail_at_start(tmp_path: Path) -> None:
    other = ProtocolSpec("other_echo", EchoActor, requests=(Echo,))
    node = Node(
        load_config(None, {"data_dir": str(tmp_path), "listen": "127.0.0.1:0"}),
        protocols=[echo_spec(), other],
    )
    with pytest.raises(StartFailed) as info:
        node.start()
    text = str(info.value)
    assert "'echo'" in text and "'other_echo'" in text and "Echo" in text
    # nor take the id of one of the node's own actors (node.address_of would be ambiguous)
    pool = ProtocolSpec("pool", EchoActor, requests=(Unclaimed,))
    with pytest.raises(StartFailed, match="protocol id 'pool' is taken"):
        Node(
            load_config(None, {"data_dir": str(tmp_path / "3"), "listen": "127.0.0.1:0"}),
            protocols=[pool],
        ).start()
    # a plug-in may not claim anti-entropy's requests either
    thief = ProtocolSpec("thief", EchoActor, requests=(DigestRequest,))
    with pytest.raises(StartFailed, match="'anti_entropy' and 'thief' both claim DigestRequest"):
        Node(
            load_config(None, {"data_dir": str(tmp_path / "2"), "listen": "127.0.0.1:0"}),
            protocols=[thief],
        ).start()


def test_unknown_factory_fails_at_start(tmp_path: Path) -> None:
    for ref, words in [
        ("no_such_module_xyz:spec", "cannot import 'no_such_module_xyz'"),
        ("aura_sync.protocols.plugin:nothing", "has no 'nothing'"),
        ("aura_sync.protocols.plugin:Routes", "Routes"),
    ]:
        cfg = load_config(
            None, {"data_dir": str(tmp_path / "n"), "listen": "127.0.0.1:0", "protocols": [ref]}
        )
        with pytest.raises(StartFailed) as info:
            Node(cfg).start()
        assert ref in str(info.value) and words in str(info.value)


def test_a_protocol_named_in_the_config_starts(tmp_path: Path) -> None:
    ref = f"{__name__}:echo_spec"
    settings = {"data_dir": str(tmp_path), "listen": "127.0.0.1:0", "protocols": [ref]}
    cfg = load_config(None, settings)
    assert cfg.protocols == (ref,)
    with Node(cfg) as node:
        assert node.address_of("echo").call(GetNotes(), 2.0) == ()
    assert resolve_spec(ref).id == "echo"


def test_bad_protocol_arguments_are_clear() -> None:
    with pytest.raises(WrongType, match="factory"):
        ProtocolSpec("x", "not callable")  # type: ignore[arg-type]
    with pytest.raises(WrongType, match="Message types"):
        ProtocolSpec("x", EchoActor, requests=(int,))  # type: ignore[arg-type]
    from aura_sync.errors import ConfigError

    with pytest.raises(ConfigError, match="protocols"):
        load_config(None, {"protocols": ["no colon"]})
    with pytest.raises(ConfigError, match="protocols"):
        load_config(None, {"protocols": "gossip"})


def test_anti_entropy_declares_every_request_its_server_answers() -> None:
    from aura_sync.messages.sync import PresentCapability
    from aura_sync.protocols import anti_entropy, serving

    declared = set(anti_entropy.spec().requests)
    assert declared == {*serving.SYNC_REQUESTS, PresentCapability}


def test_a_plugin_request_passes_the_same_admission_as_anti_entropy(tmp_path: Path) -> None:
    from aura_sync.protocols.admission import DEFAULT_COST

    limits = {"rate_limit.peer_ops_per_second": 1.0, "rate_limit.peer_burst": 2 * DEFAULT_COST}
    b = Node(
        load_config(None, {"data_dir": str(tmp_path / "b"), "listen": "127.0.0.1:0", **limits}),
        protocols=[echo_spec()],
    ).start()
    # a runs no sync rounds, so only the test's requests are charged to it at b
    a = _node(tmp_path / "a", refuse_sync=True).start()
    try:
        conn = a.transport.connect(b.device_id, b.listen_address, timeout=5.0)
        replies = [conn.request(Echo(f"{k}"), 5.0).result(5.0) for k in range(3)]
        assert [type(r).__name__ for r in replies] == ["Echoed", "Echoed", "ErrorReply"]
        denied = replies[2]
        assert isinstance(denied, ErrorReply) and denied.error_type == "RateLimited"
        assert denied.retry_after is not None and denied.retry_after > 0
        assert "Echo refused by admission" in denied.message
    finally:
        a.stop()
        b.stop()


def test_a_plugin_request_gets_the_flow_budget_aimd_and_scoring_of_the_one_hook(
    tmp_path: Path,
) -> None:
    from aura_sync.messages.peers import GetPeer
    from aura_sync.messages.rate_limit import GetPeerRate
    from aura_sync.protocols.admission import DEFAULT_COST

    settings = {
        "defence.flow_budget": 2 * DEFAULT_COST,  # two Echo requests per epoch
        "defence.flow_epoch": 3600.0,
        "defence.overload_latency": 1e-9,  # every served request reports OVERLOAD
        "scoring.rate_limited_penalty": 7,
    }
    b = Node(
        load_config(None, {"data_dir": str(tmp_path / "b"), "listen": "127.0.0.1:0", **settings}),
        protocols=[echo_spec()],
    ).start()
    a = _node(tmp_path / "a", refuse_sync=True).start()  # sends b nothing but the test's
    try:
        limiter, peers = b.address_of("rate_limiter"), b.address_of("peer_manager")
        full_rate = limiter.call(GetPeerRate(a.device_id), 5.0)
        conn = a.transport.connect(b.device_id, b.listen_address, timeout=5.0)

        def tracked() -> bool:
            try:
                return peers.call(GetPeer(a.device_id), 5.0) is not None
            except AuraError:
                return False

        wait_until(tracked, 10, "b to track a")
        replies = [conn.request(Echo(f"{k}"), 5.0).result(5.0) for k in range(4)]
        assert [type(r).__name__ for r in replies] == [
            "Echoed",
            "Echoed",
            "ErrorReply",
            "ErrorReply",
        ]
        over, held = replies[2], replies[3]
        assert isinstance(over, ErrorReply) and over.error_type == "RateLimited"
        assert "(FLOW_BUDGET)" in over.message and (over.retry_after or 0) > 0
        assert isinstance(held, ErrorReply) and "(PEER)" in held.message  # the denial window
        assert limiter.call(GetPeerRate(a.device_id), 5.0) < full_rate  # AIMD was told OVERLOAD
        trust = lambda: peers.call(GetPeer(a.device_id), 5.0).metadata.trust_level  # noqa: E731
        wait_until(lambda: trust() == 50 - 7, 10, "one RATE_LIMITED offence for the window")
    finally:
        a.stop()
        b.stop()
