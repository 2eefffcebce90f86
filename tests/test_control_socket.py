"""The control socket: the same typed calls as in-process; garbage and bad clients hurt nobody."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from _node_helpers import make_node, wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aura_sync.errors import ConfigError, InvalidArgument
from aura_sync.messages.codec import decode, encode
from aura_sync.messages.common import Ack, ErrorReply
from aura_sync.messages.peers import GetPeerTable, SelectSyncPeers
from aura_sync.messages.rate_limit import GetPeerRate
from aura_sync.messages.sync import AppendOps, GetSyncStatus
from aura_sync.node.control import MAX_CLIENTS, MAX_CONTROL_FRAME, ControlClient, socket_path
from aura_sync.node.node import Node
from aura_sync.node.wire import ControlCall, GetChildren, ReadOps
from aura_sync.transport._frames import FrameDecoder, encode_frame


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    n = make_node(tmp_path_factory.mktemp("ctl") / "a")
    try:
        yield n
    finally:
        n.stop()


def _raw(node: Node) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10.0)
    sock.connect(str(socket_path(node.config.data_dir)))
    return sock


def _reply(sock: socket.socket) -> object:
    decoder = FrameDecoder(MAX_CONTROL_FRAME)
    while True:
        data = sock.recv(65536)
        if not data:
            return None  # closed
        frames = decoder.feed(data)
        if frames:
            return decode(frames[0], max_size=MAX_CONTROL_FRAME)


def _alive(node: Node) -> None:
    """The node still answers, in-process and through a new control client."""
    assert node.address_of("anti_entropy").call(GetSyncStatus(), 5.0).journal_ops >= 0
    with ControlClient(node.config.data_dir) as client:
        assert client.call("rate_limiter", GetPeerRate(node.device_id), 5.0) >= 0.0


def _admitted(node: Node) -> bool:
    with _raw(node) as sock:
        sock.sendall(encode_frame(encode(ControlCall("pool", GetSyncStatus(), 5.0, False))))
        reply = _reply(sock)
    return isinstance(reply, Ack)


def test_typed_calls_answer_as_in_process(node: Node) -> None:
    with ControlClient(node.config.data_dir) as client:
        rate = client.call("rate_limiter", GetPeerRate(node.device_id), 5.0)
        assert rate == node.address_of("rate_limiter").call(GetPeerRate(node.device_id), 5.0)
        assert type(rate) is float
        table = client.call("peer_manager", GetPeerTable(), 5.0)
        assert table == node.address_of("peer_manager").call(GetPeerTable(), 5.0)
        assert client.call("peer_manager", SelectSyncPeers(3), 5.0) == ()
        appended = client.call("anti_entropy", AppendOps((b"one", b"two")), 5.0)
        assert appended.added == 2
        page = client.call("node", ReadOps(0, 10, 0.0), 5.0)
        assert [e.payload for e in page.entries][-2:] == [b"one", b"two"]
        rows = client.call("node", GetChildren(), 5.0)
        assert "root/protocols/anti_entropy" in {r.path for r in rows}
        with pytest.raises(InvalidArgument, match="unknown control target"):
            client.call("nobody", GetSyncStatus(), 5.0)
        with pytest.raises(InvalidArgument, match="payloads"):
            client.call("anti_entropy", AppendOps(()), 5.0)  # the actor's own check
        client.tell("peer_manager", GetPeerTable())  # a tell is accepted and answered Ack


def test_socket_is_private_and_a_shared_directory_is_refused(node: Node, tmp_path: Path) -> None:
    mode = stat.S_IMODE(os.stat(socket_path(node.config.data_dir)).st_mode)
    assert mode == 0o600
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    with pytest.raises(ConfigError, match="writable by others"):
        make_node(shared)
    assert not socket_path(shared).exists()
    with pytest.raises(ConfigError, match="no node answers"):
        ControlClient(tmp_path / "nothing-here", connect_timeout=0.2)


def test_garbage_gets_an_error_reply_or_closes_only_that_client(node: Node) -> None:
    with _raw(node) as sock:  # not msgpack: an error reply, the connection stays
        sock.sendall(encode_frame(b"\xc1\xc1garbage"))
        reply = _reply(sock)
        assert isinstance(reply, ErrorReply) and reply.error_type == "DecodeError"
        sock.sendall(encode_frame(encode(GetSyncStatus())))  # a message, but not a call
        reply = _reply(sock)
        assert isinstance(reply, ErrorReply) and "ControlCall" in reply.message
        sock.sendall(encode_frame(encode(ControlCall("peer_manager", GetPeerTable(), 1e9, True))))
        reply = _reply(sock)
        assert isinstance(reply, ErrorReply) and "timeout" in reply.message
        sock.sendall(encode_frame(b"\x93\xcd\xfe\xed\x01\x02"))  # an unknown tag
        reply = _reply(sock)
        assert isinstance(reply, ErrorReply) and "unknown message tag" in reply.message
    with _raw(node) as sock:  # an oversized frame: told, then closed
        sock.sendall((MAX_CONTROL_FRAME + 1).to_bytes(4, "big"))
        reply = _reply(sock)
        assert isinstance(reply, ErrorReply) and "over the limit" in reply.message
        assert _reply(sock) is None
    with _raw(node) as sock:  # a zero-length frame cannot be resynchronised: closed
        sock.sendall(b"\x00\x00\x00\x00")
        assert isinstance(_reply(sock), ErrorReply)
        assert _reply(sock) is None
    _alive(node)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(min_size=1, max_size=300))
def test_any_frame_gets_one_answer_and_the_node_survives(node: Node, body: bytes) -> None:
    with _raw(node) as sock:
        sock.sendall(encode_frame(body))
        reply = _reply(sock)
        assert isinstance(reply, ErrorReply)
    assert node.address_of("pool").is_alive()


def test_too_many_clients_are_refused_and_a_slow_reader_blocks_nobody(node: Node) -> None:
    held = [_raw(node) for _ in range(MAX_CLIENTS - 1)]  # + the slow reader below
    slow = _raw(node)
    try:
        # the slow reader asks for big replies and never reads them
        big = encode_frame(encode(ControlCall("node", ReadOps(0, 10_000, 0.0), 5.0, True)))
        slow.sendall(big * 50)
        extra = _raw(node)
        reply = _reply(extra)
        assert isinstance(reply, ErrorReply) and reply.error_type == "Overloaded"
        extra.close()
        assert node.address_of("anti_entropy").call(GetSyncStatus(), 5.0) is not None
        held.pop().close()  # a slot frees up once the server sees the close
        wait_until(lambda: _admitted(node), 10, "a control client admitted in the freed slot")
    finally:
        slow.close()
        for sock in held:
            sock.close()
    _alive(node)


def test_a_page_of_big_ops_is_cut_to_one_frame_and_resumes(node: Node) -> None:
    big = [i.to_bytes(2, "big") * 2000 for i in range(1500)]  # 6 MB: over one reply frame
    for at in range(0, len(big), 500):
        node.append(big[at : at + 500])
    start = node.read(after=0, limit=10_000).cursor
    while True:  # the last cursor before the big ops
        page = node.read(after=start, limit=10_000)
        if not page.entries:
            break
        start = page.cursor
    start -= len(big)
    got: list[bytes] = []
    pages = 0
    with ControlClient(node.config.data_dir) as client:
        cursor = start
        while len(got) < len(big):
            page = client.call("node", ReadOps(cursor, 10_000, 0.0), 5.0)
            assert page.entries, "a page holds at least one op"
            got += [e.payload for e in page.entries]
            cursor, pages = page.cursor, pages + 1
    assert got == big and pages >= 2


def test_a_protocol_actor_answers_by_name(tmp_path: Path) -> None:
    from aura_sync.messages.gossip import GetGossipStats

    gossiping = make_node(tmp_path / "g", protocols=["gossip"])
    try:
        with ControlClient(gossiping.config.data_dir) as client:
            stats = client.call("gossip", GetGossipStats(), 5.0)
        assert stats == gossiping.address_of("gossip").call(GetGossipStats(), 5.0)
    finally:
        gossiping.stop()


def test_a_pipeline_answers_the_requests_in_flight_after_an_error(node: Node) -> None:
    """No request is sent after an error; the ones already sent are answered and yielded."""
    sent: list[AppendOps] = []

    def requests() -> Iterator[AppendOps]:
        for batch in ((b"p1",), (), (b"p2",), (b"p3",), (b"p4",), (b"p5",)):
            sent.append(AppendOps(batch))
            yield sent[-1]

    got: list[int] = []
    before = len(node.journal)  # cursors are arrival positions: the next op is before + 1
    with ControlClient(node.config.data_dir) as client:
        with pytest.raises(InvalidArgument, match="payloads"):
            for reply in client.pipeline("anti_entropy", requests(), 5.0, depth=3):
                got.append(reply.added)
    # the empty batch failed; p2 and p3 were in flight with it, p4 and p5 never left
    assert got == [1, 1, 1] and len(sent) == 4
    assert [e.payload for e in node.read(after=before).entries] == [b"p1", b"p2", b"p3"]


def test_a_pipeline_drains_before_raising_the_callers_error(node: Node) -> None:
    def requests() -> Iterator[AppendOps]:
        yield AppendOps((b"q1",))
        yield AppendOps((b"q2",))
        raise RuntimeError("the input broke")

    got: list[int] = []
    with ControlClient(node.config.data_dir) as client:
        with pytest.raises(RuntimeError, match="the input broke"):
            for reply in client.pipeline("anti_entropy", requests(), 5.0, depth=4):
                got.append(reply.added)
    assert got == [1, 1]  # both were acknowledged before the error surfaced
