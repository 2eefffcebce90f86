"""Ten nodes on the simulated network: 20% frame loss and a partition that heals, all converge.

Time is a ManualClock: sync rounds, request timeouts, retries, keepalives and
backoffs are all scheduled messages, so the test drives the whole cluster by
advancing virtual time, letting the actors' threads drain their mailboxes
between steps.  The network's loss and latency draws are seeded.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _node_helpers import VirtualTime

from aura_sync.effects import ManualClock, SeededRng
from aura_sync.identity import NodeIdentity
from aura_sync.node.config import load_config
from aura_sync.node.node import Node
from aura_sync.transport import MemoryNetwork, TransportConfig

N = 10
STEP = 0.05


class Sim(VirtualTime):
    def __init__(self, root: Path) -> None:
        super().__init__(ManualClock(), STEP)
        self.net = MemoryNetwork(
            self.clock,
            SeededRng(2024),
            latency=(0.001, 0.01),
            loss=0.2,
            config=TransportConfig(
                connect_timeout=2.0, read_timeout=2.0, keepalive_interval=1.0, idle_timeout=4.0
            ),
        )
        self.nodes: list[Node] = []
        ids = []
        for i in range(N):
            (root / f"n{i}").mkdir(mode=0o700)
            ids.append(NodeIdentity.load_or_create(root / f"n{i}").device_id)
        self.ids = ids
        for i in range(N):
            boot = [f"{ids[j]}@mem-{j}:1" for j in {(i - 1) % N, (i - 2) % N} if j != i]
            cfg = load_config(
                None,
                {
                    "data_dir": str(root / f"n{i}"),
                    "listen": f"mem-{i}:1",
                    "bootstrap": boot,
                    "sync_interval": 1.0,
                    "request_timeout": 1.0,
                    "peers_per_round": 3,
                },
            )
            node = Node(
                cfg,
                transport_factory=lambda ident: self.net.transport(ident.device_id),
                clock=self.clock,
                rng=SeededRng(100 + i),
            )
            self.nodes.append(node.start())
        self.addresses = [
            n.address_of(name)
            for n in self.nodes
            for name in ("cache", "rate_limiter", "peer_manager", "pool", "anti_entropy")
        ] + [n.root.address for n in self.nodes]

    def close(self) -> None:
        for node in reversed(self.nodes):
            node.stop(5.0)


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Sim]:
    s = Sim(tmp_path)
    try:
        yield s
    finally:
        s.close()


def _ids(node: Node) -> set[bytes]:
    return set(node.journal.all_ids())


def test_ten_nodes_with_loss_and_a_healed_partition_converge(sim: Sim) -> None:
    nodes = sim.nodes
    for i, node in enumerate(nodes):
        node.append([b"before %d %d" % (i, k) for k in range(5)])
    everyone = lambda: len({n.journal.digest().fingerprint for n in nodes}) == 1  # noqa: E731
    assert sim.run(90.0, lambda: everyone() and len(nodes[0].journal) == 5 * N), [
        len(n.journal) for n in nodes
    ]

    side_a, side_b = nodes[: N // 2], nodes[N // 2 :]
    sim.net.partition(sim.ids[: N // 2], sim.ids[N // 2 :])
    for i, node in enumerate(nodes):
        node.append([b"during %d %d" % (i, k) for k in range(5)])
    written_a = set().union(*(_ids(n) for n in side_a)) - _ids(side_b[0])
    written_b = set().union(*(_ids(n) for n in side_b)) - _ids(side_a[0])
    sim.run(20.0)
    # nothing crossed the partition
    for n in side_a:
        assert not _ids(n) & written_b
    for n in side_b:
        assert not _ids(n) & written_a
    assert sim.net.stats().partitioned > 0
    assert sim.net.stats().lost > 0

    sim.net.heal()
    total = 10 * N
    assert sim.run(150.0, lambda: everyone() and len(nodes[0].journal) == total), [
        len(n.journal) for n in nodes
    ]
    for i, node in enumerate(nodes):
        assert len(node.journal.ops_by(node.device_id)) == 10, i
