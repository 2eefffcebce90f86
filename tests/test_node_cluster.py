"""Nodes over real loopback TCP (mutual TLS): convergence, capabilities, bad frames, metrics."""

from __future__ import annotations

import base64
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from _node_helpers import (
    Cluster,
    cluster,
    converged,
    read_until_closed,
    send_raw,
    wait_until,
)
from _tls_helpers import raw_tls_client
from prometheus_client.parser import text_string_to_metric_families

from aura_sync.errors import CapabilityError, ConfigError
from aura_sync.identity import NodeIdentity
from aura_sync.infrastructure.capabilities import (
    generate_authority_keypair,
    issue_capability_token,
)
from aura_sync.messages import ErrorReply, codec
from aura_sync.messages.peers import GetPeerTable
from aura_sync.messages.sync import (
    FULL_RANGE,
    PROTOCOL_VERSION,
    DigestRequest,
    Hello,
    IdsRequest,
    OpsRequest,
    PresentCapability,
)
from aura_sync.node.config import load_config
from aura_sync.node.node import Node, run_node
from aura_sync.transport import TcpTransport
from aura_sync.transport._frames import encode_frame


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Cluster]:
    yield from cluster(tmp_path)


def scrape(address: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_three_nodes_converge_on_the_union_and_metrics_move(nodes: Cluster) -> None:
    a = nodes.add("a", metrics_port=0)
    before = scrape(a.metrics_address or "")
    b = nodes.add("b", bootstrap=[a.bootstrap_address])
    c = nodes.add("c", bootstrap=[a.bootstrap_address])
    mine = {
        a: a.append([b"a-%d" % i for i in range(300)]),
        b: b.append([b"b-%d" % i for i in range(150)]),
        c: c.append([b"c-%d" % i for i in range(40)]),
    }
    assert [r.own_ops for r in mine.values()] == [300, 150, 40]
    group = [a, b, c]
    wait_until(lambda: converged(group, 490), 20, "three nodes to converge")
    union = {op for n in group for op in n.journal.all_ids()}
    assert len(union) == 490
    for n in group:
        assert set(n.journal.all_ids()) == union
        assert len(n.journal.ops_by(n.device_id)) == mine[n].own_ops

    after = scrape(a.metrics_address or "")
    assert before[("aura_sync_sync_ticks_total", ())] < after[("aura_sync_sync_ticks_total", ())]
    moved = sum(
        after[("aura_sync_operations_transferred_total", (("direction", d),))]
        for d in ("pulled", "pushed", "received", "served")
    )
    assert moved >= 190  # a holds 300 of its own and must have sent them or taken 190
    assert after[("aura_sync_journal_operations", ())] == 490
    assert after[("aura_sync_rate_limit_decisions_total", (("decision", "allowed"),))] > 0
    # a's sessions borrow from its pool (they wait while pushes flow, at most 2 s)
    wait_until(
        lambda: scrape(a.metrics_address or "")[("aura_sync_pool_connections_created_total", ())]
        >= 1,
        10,
        "a's pool to lend a connection",
    )
    assert after[("aura_sync_peers", (("status", "CONNECTED"),))] >= 1
    assert after[("aura_sync_up", ())] == 1

    # b and c only knew a: they found each other through peer exchange
    def knows(node: Node, other: Node) -> bool:
        table = node.address_of("peer_manager").ask(GetPeerTable())
        return any(info.peer_id == other.device_id for info in table.peers)

    wait_until(lambda: knows(b, c) and knows(c, b), 10, "peer exchange")
    assert b.sync_status().counter("peer_exchanges") + c.sync_status().counter("peer_exchanges") > 0
    # and they keep converging on what is written later
    b.append([b"late"])
    wait_until(lambda: converged(group, 491), 20, "the late op to spread")


def _token_file(path: Path, token: bytes) -> Path:
    path.write_text(base64.urlsafe_b64encode(token).decode() + "\n")
    return path


def test_peer_without_a_valid_token_receives_nothing(nodes: Cluster, tmp_path: Path) -> None:
    authority = generate_authority_keypair()
    rogue = generate_authority_keypair()
    key = authority.public_key.hex()
    ids = {}
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir(mode=0o700)
        ids[name] = NodeIdentity.load_or_create(tmp_path / name).device_id
    good_a = _token_file(
        tmp_path / "a.tok", issue_capability_token(authority.private_key, subject=ids["a"])
    )
    good_b = _token_file(
        tmp_path / "b.tok", issue_capability_token(authority.private_key, subject=ids["b"])
    )
    # c's token is signed by another authority: c cannot even start with it
    bad_c = _token_file(
        tmp_path / "c.tok", issue_capability_token(rogue.private_key, subject=ids["c"])
    )
    with pytest.raises(ConfigError, match="does not verify against 'authority_public_key'"):
        nodes.add("c", authority_public_key=key, token_path=str(bad_c))
    a = nodes.add("a", authority_public_key=key, token_path=str(good_a))
    b = nodes.add(
        "b", authority_public_key=key, token_path=str(good_b), bootstrap=[a.bootstrap_address]
    )
    c = nodes.add("c", bootstrap=[a.bootstrap_address])  # no token: it presents nothing
    a.append([b"secret-a-%d" % i for i in range(20)])
    b.append([b"secret-b-%d" % i for i in range(20)])
    c.append([b"c-%d" % i for i in range(5)])
    wait_until(lambda: converged([a, b], 40), 20, "the two authorized nodes to converge")
    wait_until(lambda: a.sync_status().counter("requests_refused") > 0, 10, "a refusal")
    # c talked to a (it dialed it and sent requests) but got nothing, and gave nothing
    assert len(c.journal) == 5
    assert len(a.journal) == 40 and len(b.journal) == 40
    assert c.sync_status().counter("ops_pulled") == 0

    # a direct client with a bad token: every sync request is refused
    client = TcpTransport(NodeIdentity.load_or_create(tmp_path / "c"))
    try:
        conn = client.connect(a.device_id, a.listen_address)
        for request in (
            DigestRequest((FULL_RANGE,)),
            IdsRequest(FULL_RANGE),
            OpsRequest((bytes(32),)),
        ):
            reply = conn.request(request, 5).result(5)
            assert isinstance(reply, ErrorReply)
            assert reply.error_type == "CapabilityError"
        reply = conn.request(PresentCapability(b"not a biscuit"), 5).result(5)
        assert isinstance(reply, ErrorReply)
        assert isinstance(reply.to_exception(), CapabilityError)
    finally:
        client.close()


@pytest.mark.parametrize(
    ("kind", "garbage"),
    [
        ("malformed", encode_frame(b"\xc1 not msgpack")),
        ("oversized", (2**31).to_bytes(4, "big") + b"xx"),
        ("truncated", (100).to_bytes(4, "big") + b"only ten b"),
    ],
    ids=["malformed", "oversized", "truncated"],
)
def test_bad_frame_closes_only_that_connection_and_the_node_keeps_serving(
    nodes: Cluster, kind: str, garbage: bytes
) -> None:
    a = nodes.add("a")
    b = nodes.add("b", bootstrap=[a.bootstrap_address])
    a.append([b"first"])
    wait_until(lambda: converged([a, b], 1), 15, "the first op to spread")
    attacker = NodeIdentity.generate()
    sock, conn = raw_tls_client(attacker, a.listen_address, a.device_id)
    try:
        send_raw(sock, conn, encode_frame(codec.encode(Hello(PROTOCOL_VERSION, ""))))
        send_raw(sock, conn, garbage)
        if kind == "truncated":
            conn.shutdown()
        read_until_closed(sock, conn)
    finally:
        sock.close()
    wait_until(lambda: getattr(a.transport.stats(), f"{kind}_frames") == 1, 5, f"a {kind} count")
    b.append([b"second", b"third"])
    a.append([b"fourth"])
    wait_until(lambda: converged([a, b], 4), 15, "the node to keep serving its peer")
    assert a.snapshot().status == "ok"


def test_rate_limited_rounds_are_retried_and_still_converge(nodes: Cluster) -> None:
    slow = {
        "rate_limit.peer_ops_per_second": 2.0,
        "rate_limit.peer_burst": 1,
        # outgoing sessions only: inbound admission at 2/s is tests/test_admission.py's
        "defence.enabled": False,
    }
    a = nodes.add("a", metrics_port=0, **slow)
    b = nodes.add("b", bootstrap=[a.bootstrap_address], **slow)
    c = nodes.add("c", bootstrap=[a.bootstrap_address], **slow)
    for n in (a, b, c):
        n.append([b"%s-%d" % (str(n.device_id).encode(), i) for i in range(30)])
    wait_until(lambda: converged([a, b, c], 90), 20, "convergence under a tight rate limit")
    wait_until(lambda: a.sync_status().counter("rate_limited") > 0, 10, "a rate-limited round")
    metrics = scrape(a.metrics_address or "")
    assert metrics[("aura_sync_rate_limit_decisions_total", (("decision", "peer_limit"),))] > 0
    assert a.sync_status().counter("retries") > 0


def test_a_failing_stop_step_still_closes_the_transport_and_the_journal(tmp_path: Path) -> None:
    node = Node(load_config(None, {"data_dir": str(tmp_path / "a"), "listen": "127.0.0.1:0"}))
    node.start()
    root = node.root
    real_stop = root.stop

    def broken_stop(timeout: float = 5.0) -> None:
        raise RuntimeError("stop blew up")

    root.stop = broken_stop  # type: ignore[method-assign]
    try:
        node.stop()
        assert node.wait_stopped(0)
        assert node.journal.closed  # the SQLite connection was flushed and closed
        transport = node.transport
        assert isinstance(transport, TcpTransport)
        assert not transport._thread.is_alive()  # its loop thread and sockets are gone
    finally:
        root.stop = real_stop  # type: ignore[method-assign]
        real_stop(5.0)


def test_a_dead_transport_loop_fails_the_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_iterate = TcpTransport._iterate
    boom = threading.Event()

    def iterate(self: TcpTransport) -> None:
        if boom.is_set():
            raise RuntimeError("the selector broke")
        real_iterate(self)

    monkeypatch.setattr(TcpTransport, "_iterate", iterate)
    ready = tmp_path / "ready.json"

    def break_when_ready() -> None:
        wait_until(ready.exists, 30, "the node to be ready")
        boom.set()

    breaker = threading.Thread(target=break_when_ready, daemon=True)
    breaker.start()
    config = load_config(
        None, {"data_dir": str(tmp_path / "n"), "listen": "127.0.0.1:0", "log_level": "ERROR"}
    )
    assert run_node(config, ready_file=ready) == 1  # a deaf node must not look alive
    breaker.join(5)


def test_a_dead_transport_loop_shows_in_health(nodes: Cluster) -> None:
    a = nodes.add("a")
    assert a.snapshot().status == "ok" and a.transport_failure is None
    transport = a.transport
    assert isinstance(transport, TcpTransport)

    def broken() -> None:
        raise RuntimeError("the selector broke")

    transport._iterate = broken  # type: ignore[method-assign]
    transport._wake()
    wait_until(lambda: a.transport_failure is not None, 5, "the loop to die")
    assert a.snapshot().status == "failed"
