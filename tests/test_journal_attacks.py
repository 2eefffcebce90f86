"""Attacks on authorship over real TCP (mutual TLS), the data-directory lock and ``verify``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from _node_helpers import make_node, wait_until

from aura_sync.cli import main
from aura_sync.identity import KEY_FILE_NAME, NodeIdentity, sign_head
from aura_sync.messages import ErrorReply
from aura_sync.messages.sync import NO_PREV, SEQ_LIMIT, Op, PushAck, PushOps
from aura_sync.node.node import JOURNAL_FILE, Node
from aura_sync.transport.base import TransportConfig
from aura_sync.transport.tcp import TcpTransport

FAST = TransportConfig(connect_timeout=3.0, read_timeout=2.0, keepalive_interval=1.0)


@pytest.fixture
def attacker() -> Iterator[TcpTransport]:
    transport = TcpTransport(NodeIdentity.generate(), FAST)
    yield transport
    transport.close()


def _push(transport: TcpTransport, node: Node, ops: list[Op]) -> object:
    conn = transport.connect(node.device_id, node.listen_address, handler=lambda event: None)
    try:
        return conn.request(PushOps(tuple(ops)), 5.0).result(5.0)
    finally:
        conn.close()


def _signed(who: NodeIdentity, seq: int, payload: bytes, prev: bytes = NO_PREV) -> Op:
    op = Op(who.device_id, seq, payload, prev, who.public_key)
    return Op(op.author, seq, payload, prev, who.public_key, sign_head(who, op.op_id))


def test_the_seq_poison_attack_is_refused_and_the_victim_still_writes(
    tmp_path: Path, attacker: TcpTransport
) -> None:
    victim = make_node(tmp_path / "victim")
    try:
        victim.append([b"before"])
        me = victim.device_id
        mallory = NodeIdentity.generate()
        poisons = [
            Op(me, SEQ_LIMIT - 1, b"poison"),  # the original attack: no proof at all
            Op(
                me,
                SEQ_LIMIT - 1,
                b"poison",
                NO_PREV,
                mallory.public_key,
                sign_head(mallory, bytes(32)),
            ),  # someone else's key
            Op(
                me,
                SEQ_LIMIT - 1,
                b"poison",
                NO_PREV,
                NodeIdentity.load(tmp_path / "victim" / KEY_FILE_NAME).public_key,
                bytes(64),
            ),
        ]
        for poison in poisons:
            reply = _push(attacker, victim, [poison])
            assert isinstance(reply, ErrorReply) and reply.error_type == "OpRefused", reply
        status = victim.sync_status()
        assert dict(status.refused) == {str(attacker.local_id): len(poisons)}
        assert status.counter("batches_refused") == len(poisons)
        assert len(victim.journal) == 1
    finally:
        victim.stop()
    restarted = make_node(tmp_path / "victim")
    try:
        restarted.append([b"after the restart"])
        assert restarted.journal.own_ops == 2 and len(restarted.journal) == 2
    finally:
        restarted.stop()


def test_an_op_of_author_b_pushed_by_c_is_refused_unless_b_signed_it(
    tmp_path: Path, attacker: TcpTransport
) -> None:
    node = make_node(tmp_path / "n")
    try:
        b = NodeIdentity.generate()
        c = NodeIdentity.generate()
        as_b_by_c = Op(b.device_id, 0, b"x", NO_PREV, c.public_key)
        as_b_by_c = Op(b.device_id, 0, b"x", NO_PREV, c.public_key, sign_head(c, as_b_by_c.op_id))
        reply = _push(attacker, node, [as_b_by_c])
        assert isinstance(reply, ErrorReply) and "not its author's" in reply.message
        genuine = [_signed(b, 0, b"x")]
        genuine.append(_signed(b, 1, b"y", genuine[0].op_id))
        tampered = Op(b.device_id, 1, b"Y", genuine[0].op_id, b.public_key, genuine[1].sig)
        reply = _push(attacker, node, [genuine[0], tampered])
        assert isinstance(reply, ErrorReply) and "does not verify" in reply.message
        assert len(node.journal) == 0  # nothing of a refused batch is stored
        assert _push(attacker, node, genuine) == PushAck(2, 0)  # C relays what B signed
        wait_until(lambda: len(node.journal) == 2, 5, "the relayed ops")
    finally:
        node.stop()


def test_two_processes_on_one_data_directory_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    node = make_node(tmp_path / "d")
    try:
        code = main(["node", "--data-dir", str(tmp_path / "d"), "--listen", "127.0.0.1:0"])
        err = capsys.readouterr().err
        assert code == 2
        assert str(tmp_path / "d") in err and "in use" in err
        assert f"PID {os.getpid()}" in err
        assert main(["verify", "--data-dir", str(tmp_path / "d"), "--wait", "0.2"]) == 2
    finally:
        node.stop()


def test_verify_reports_every_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    node = make_node(tmp_path / "d")
    node.append([b"a", b"b"])
    node.stop()
    assert main(["verify", "--data-dir", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    for check in ("open: ok", "integrity_check: ok", "signatures: ok", "fingerprints: ok"):
        assert check in out
    (tmp_path / "d" / JOURNAL_FILE).write_bytes(b"")
    assert main(["verify", "--data-dir", str(tmp_path / "d")]) == 3
    assert "0-byte" in capsys.readouterr().out
    assert main(["node", "--data-dir", str(tmp_path / "d"), "--listen", "127.0.0.1:0"]) == 3
    assert "0-byte" in capsys.readouterr().err
    assert (tmp_path / "d" / JOURNAL_FILE).read_bytes() == b""  # never re-created


def test_verify_waits_for_a_stopping_node_to_release_the_directory(tmp_path: Path) -> None:
    import threading

    from aura_sync.protocols.journal_files import DataDirLock

    node = make_node(tmp_path / "d")
    node.append([b"a"])
    node.stop()
    lock = DataDirLock(tmp_path / "d")  # as if the node process were still closing
    released = threading.Event()

    def release() -> None:
        released.set()
        lock.release()

    timer = threading.Timer(0.3, release)  # the node finishes closing 0.3 s later
    timer.start()
    try:
        assert main(["verify", "--data-dir", str(tmp_path / "d")]) == 0
        assert released.is_set(), "verify did not wait for the lock"
    finally:
        timer.join()
