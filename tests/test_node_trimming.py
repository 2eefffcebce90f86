"""Connection trimming in a real node (issue 10, item 5): above the high watermark the
node closes the connections of its least trusted peers down to the low watermark, but
never those of a peer it dialed itself.

Real TCP and TLS on loopback: node ``a`` dials node ``b`` (its bootstrap peer), four
other identities connect to ``a``; ``b`` is the least trusted of all, yet its
connections survive because ``a`` selected and dialed it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _node_helpers import Cluster, cluster, wait_until

from aura_sync.identity import NodeIdentity
from aura_sync.ids import DeviceId
from aura_sync.infrastructure.peer_scoring import Offence
from aura_sync.messages.peers import AddPeer, GetPeer, ReportOffence
from aura_sync.node.node import Node
from aura_sync.transport import TcpTransport
from aura_sync.transport.base import Connection

T = 5.0


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Cluster]:
    yield from cluster(tmp_path)


def _open_peers(node: Node) -> set[DeviceId]:
    return {c.peer_id for c in _open(node)}


def _open(node: Node) -> list[Connection]:
    """The node's open connections (a handshaking one has no verified peer yet)."""
    return [c for c in node.transport.connections() if c.state.value == "open"]


def _rounds(node: Node) -> int:
    return node.sync_status().counter("rounds_started")


def test_the_lowest_scored_unprotected_connections_are_trimmed_and_own_dials_survive(
    nodes: Cluster, tmp_path: Path
) -> None:
    b = nodes.add("b")
    a = nodes.add(
        "a",
        bootstrap=[f"{b.device_id}@{b.listen_address}"],
        **{
            "transport.high_watermark": 5,
            "transport.low_watermark": 4,
            "transport.grace_period": 0.0,
            "transport.reserved_outbound": 0,
            "scoring.ban_threshold": 0,  # trust may fall to 0 without a ban
            "scoring.success_reward": 0,  # and b's sessions do not raise it again
        },
    )

    def with_b() -> list[Connection]:
        return [c for c in _open(a) if c.peer_id == b.device_id]

    # a dials b (its bootstrap peer), and b's pool dials a back for its own sessions
    wait_until(lambda: sorted(c.initiator for c in with_b()) == [False, True], 10, "a<->b")
    b_conns = with_b()
    clients = [TcpTransport(NodeIdentity.load_or_create(tmp_path / f"c{i}")) for i in range(4)]
    low, high = clients[:2], clients[2:]
    peers = a.address_of("peer_manager")
    try:
        for client in clients:
            peers.call(AddPeer(client.local_id), T)
        for client in low:  # trust 50 -> 30
            peers.call(ReportOffence(client.local_id, Offence.CAPABILITY), T)
        for _ in range(3):  # b: trust 50 -> 0, the lowest of all
            peers.call(ReportOffence(b.device_id, Offence.CAPABILITY), T)
        assert peers.call(GetPeer(b.device_id), T).metadata.trust_level == 0
        seen = _rounds(a)  # two rounds later the transport's scorer reads these trusts
        wait_until(lambda: _rounds(a) >= seen + 2, 10, "a to publish its peer table")
        conns = [client.connect(a.device_id, a.listen_address) for client in clients]
        # 6 established > high 5: the 2 lowest-scored unprotected go, down to low 4
        wait_until(lambda: a.transport.stats().connections_trimmed >= 2, 10, "a trim")
        wait_until(lambda: all(c.state.value == "closed" for c in conns[:2]), 10, "low closed")
        assert a.transport.stats().connections_trimmed == 2
        assert all(c.state.value == "open" for c in conns[2:])
        assert all(c.state.value == "open" for c in b_conns)  # a dialed b: protected
        kept = {b.device_id, *(c.local_id for c in high)}  # a's side closes on its own thread
        wait_until(lambda: _open_peers(a) == kept, 10, "a open to b and the trusted two only")
    finally:
        for client in clients:
            client.close()
