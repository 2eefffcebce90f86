"""Nodes on loopback (real TCP, mutual TLS) under attack: Sybil identities cannot fill the
peer table, a misbehaving peer is banned (its host refused at accept, its identity right
after TLS) while two honest nodes keep converging; scores and bans show in /health."""

from __future__ import annotations

import base64
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from _node_helpers import Cluster, cluster, converged, send_raw, wait_until
from _tls_helpers import raw_tls_client, tls_retry
from OpenSSL import SSL

from aura_sync.identity import NodeIdentity
from aura_sync.ids import DeviceId
from aura_sync.infrastructure.capabilities import generate_authority_keypair, issue_capability_token
from aura_sync.messages import ErrorReply, codec
from aura_sync.messages.common import Ack
from aura_sync.messages.peers import GetPeerTable
from aura_sync.messages.sync import PROTOCOL_VERSION, Hello, PresentCapability
from aura_sync.node.node import Node
from aura_sync.transport import Inbound, TcpTransport, TransportEvent
from aura_sync.transport._frames import encode_frame


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Cluster]:
    yield from cluster(tmp_path)


def _member(tmp_path: Path, name: str, authority_private: bytes) -> str:
    """Create ``name``'s identity; the path of a token bound to it."""
    (tmp_path / name).mkdir(mode=0o700)
    me = NodeIdentity.load_or_create(tmp_path / name).device_id
    path = tmp_path / f"{name}.token"
    token = issue_capability_token(authority_private, subject=me)
    path.write_text(base64.urlsafe_b64encode(token).decode() + "\n")
    return str(path)


def _answer(event: TransportEvent) -> None:
    if isinstance(event, Inbound) and event.request_id is not None:
        event.respond(Ack())


def _table_ids(node: Node) -> set[DeviceId]:
    table = node.address_of("peer_manager").call(GetPeerTable(), 5.0)
    return {p.peer_id for p in table.peers}


def _sybil_attack(nodes: Cluster, tmp_path: Path, table_size: int, sybils: int) -> None:
    """``sybils`` identities without a valid token connect to ``a`` (a table of
    ``table_size``) and stay; an authorized newcomer then syncs with ``a``."""
    authority = generate_authority_keypair()
    key = authority.public_key.hex()
    common = {"authority_public_key": key, "peers.max_tracked_peers": table_size}
    a = nodes.add("a", token_path=_member(tmp_path, "a", authority.private_key), **common)
    attackers = [TcpTransport(NodeIdentity.generate()) for _ in range(sybils)]
    try:
        for i, attacker in enumerate(attackers):
            conn = attacker.connect(a.device_id, a.listen_address, handler=_answer)
            if i % 2:  # half of them present a token of nobody's; half present nothing
                reply = conn.request(PresentCapability(b"not a token"), 5).result(5)
                assert isinstance(reply, ErrorReply) and reply.error_type == "CapabilityError"
        sybil_ids = {t.local_id for t in attackers}
        wait_until(lambda: a.sync_status().connected >= sybils, 10, "the sybils to connect")
        assert not _table_ids(a) & sybil_ids, "an identity without a valid token took a slot"
        b = nodes.add(
            "b",
            token_path=_member(tmp_path, "b", authority.private_key),
            bootstrap=[a.bootstrap_address],
            **common,
        )
        a.append([b"from a"])
        b.append([b"from b %d" % i for i in range(5)])
        wait_until(lambda: converged([a, b], 6), 30, "the authorized newcomer to sync")
        assert b.device_id in _table_ids(a)
        assert all(len(t.connections()) == 1 for t in attackers), "the sybils stayed connected"
    finally:
        for attacker in attackers:
            attacker.close()


def test_sybil_identities_take_no_slot_and_an_authorized_newcomer_syncs(
    nodes: Cluster, tmp_path: Path
) -> None:
    _sybil_attack(nodes, tmp_path, table_size=6, sybils=8)


@pytest.mark.slow
def test_a_hundred_sybils_cannot_keep_an_authorized_node_from_syncing(
    nodes: Cluster, tmp_path: Path
) -> None:
    _sybil_attack(nodes, tmp_path, table_size=100, sybils=100)


# --- a misbehaving peer is banned --------------------------------------------------------------


def _closed_at_once(sock: socket.socket, timeout: float = 5.0) -> bool:
    """Whether the node closes a plain TCP connection without a byte of TLS."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_a_misbehaving_peer_is_banned_and_refused_at_accept_while_honest_nodes_converge(
    nodes: Cluster,
) -> None:
    a = nodes.add("a", metrics_port=0)
    b = nodes.add("b", bootstrap=[a.bootstrap_address])
    a.append([b"first"])
    wait_until(lambda: converged([a, b], 1), 15, "the first op to spread")
    attacker = NodeIdentity.generate()
    garbage = encode_frame(b"\xc1 not msgpack")
    hello = encode_frame(codec.encode(Hello(PROTOCOL_VERSION, "")))
    for n in (1, 2, 3):  # each malformed stream costs 15 trust: 50 -> 35 -> 20 -> 5 < 20
        assert a.sync_status().counter("peers_banned") == 0
        sock, conn = raw_tls_client(attacker, a.listen_address, a.device_id, "127.0.0.2")
        try:
            send_raw(sock, conn, hello)
            send_raw(sock, conn, garbage)
            wait_until(lambda n=n: a.sync_status().counter("offences") == n, 10, "the report")
        finally:
            sock.close()
    wait_until(lambda: a.sync_status().counter("peers_banned") == 1, 10, "the ban")
    snap = a.snapshot()
    ban = snap.bans[str(attacker.device_id)]
    assert ban["reason"] == "malformed_frame" and ban["bans"] == 1
    assert ban["address"].startswith("127.0.0.2") and 50 < ban["seconds_left"] <= 60
    assert snap.to_json()["bans"][str(attacker.device_id)]["reason"] == "malformed_frame"
    # its host is refused at accept, before any TLS work
    refused_before = a.transport.stats().refused_banned
    raw = socket.create_connection(
        tuple(a.listen_address.rsplit(":", 1)), timeout=5, source_address=("127.0.0.2", 0)
    )
    try:
        assert _closed_at_once(raw), "a banned host got past accept"
    finally:
        raw.close()
    wait_until(
        lambda: a.transport.stats().refused_banned > refused_before, 5, "the refusal count"
    )
    # its identity is refused right after TLS, from any host
    sock, conn = raw_tls_client(attacker, a.listen_address, a.device_id, "127.0.0.3")
    try:
        send_raw(sock, conn, hello)
        sock.settimeout(5)
        wait_until(lambda: _tls_closed(sock, conn), 5, "the banned identity to be closed")
    finally:
        sock.close()
    # meanwhile the honest nodes keep converging, on the same host as before
    b.append([b"second", b"third"])
    a.append([b"fourth"])
    wait_until(lambda: converged([a, b], 4), 15, "the honest nodes to keep converging")
    assert str(b.device_id) not in a.snapshot().bans
    assert a.snapshot().peer_trust[str(b.device_id)] >= 50


def _tls_closed(sock: socket.socket, conn: SSL.Connection) -> bool:
    try:
        data = tls_retry(sock, lambda: conn.recv(65536), 0.2)
    except TimeoutError:
        return False
    except (SSL.ZeroReturnError, SSL.SysCallError, SSL.Error, OSError):
        return True
    return not data
