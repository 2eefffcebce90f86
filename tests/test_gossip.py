"""Gossip: each message reaches each subscriber exactly once, over a lossy simulated
5-node network and over real TCP; untrusted input is bounded and charged to its sender.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from _node_helpers import VirtualTime, wait_until

from aura_sync.effects import ManualClock, SeededRng
from aura_sync.errors import InvalidArgument, WrongType
from aura_sync.identity import NodeIdentity
from aura_sync.messages.gossip import MAX_PAYLOAD, GossipMessage
from aura_sync.node.config import NodeConfig, load_config
from aura_sync.node.node import Node
from aura_sync.protocols import gossip
from aura_sync.transport import MemoryNetwork, TransportConfig

N = 5
STEP = 0.05


class Inbox:
    """What one node's subscriber received (the callback runs on the gossip actor's thread)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ids: Counter[bytes] = Counter()

    def __call__(self, msg: GossipMessage) -> None:
        with self.lock:
            self.ids[msg.msg_id] += 1

    def seen(self) -> set[bytes]:
        with self.lock:
            return set(self.ids)


class Sim(VirtualTime):
    def __init__(self, root: Path) -> None:
        super().__init__(ManualClock(), STEP)
        self.net = MemoryNetwork(
            self.clock,
            SeededRng(7),
            latency=(0.001, 0.01),
            loss=0.2,
            config=TransportConfig(
                connect_timeout=2.0, read_timeout=2.0, keepalive_interval=1.0, idle_timeout=4.0
            ),
        )
        ids = []
        for i in range(N):
            (root / f"n{i}").mkdir(mode=0o700)
            ids.append(NodeIdentity.load_or_create(root / f"n{i}").device_id)
        self.nodes: list[Node] = []
        for i in range(N):
            boot = [f"{ids[(i - 1) % N]}@mem-{(i - 1) % N}:1"]  # a ring: the rest is learnt
            cfg = load_config(
                None,
                {
                    "data_dir": str(root / f"n{i}"),
                    "listen": f"mem-{i}:1",
                    "bootstrap": boot,
                    "sync_interval": 1.0,
                    "request_timeout": 1.0,
                    "protocols": ["gossip"],
                    # AIMD is fed by wall-clock latency: on a loaded machine it would
                    # shed messages of this virtual-time run (admission has its own tests)
                    "defence.report_outcomes": False,
                },
            )
            node = Node(
                cfg,
                transport_factory=lambda ident: self.net.transport(ident.device_id),
                clock=self.clock,
                rng=SeededRng(300 + i),
            )
            self.nodes.append(node.start())
        self.addresses = [
            n.address_of(name)
            for n in self.nodes
            for name in ("rate_limiter", "peer_manager", "pool", "anti_entropy", "gossip")
        ]

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


def test_five_lossy_nodes_deliver_each_message_once_per_subscriber(sim: Sim) -> None:
    inboxes = [Inbox() for _ in sim.nodes]
    subs = [n.gossip.subscribe("chat", inbox) for n, inbox in zip(sim.nodes, inboxes, strict=True)]
    other = [n.gossip.subscribe("other") for n in sim.nodes[:2]]

    def meshed() -> bool:
        return all(dict(n.gossip.stats().mesh).get("chat", 0) >= 2 for n in sim.nodes)

    assert sim.run(30.0, meshed), [n.gossip.stats().mesh for n in sim.nodes]
    published: list[tuple[int, bytes]] = []
    for k in range(20):
        origin = k % N
        published.append((origin, sim.nodes[origin].gossip.publish("chat", b"m%d" % k)))
        sim.run(STEP)  # handled at its own virtual time
    want = [{m for o, m in published if o != i} for i in range(N)]

    def delivered() -> bool:
        return all(inbox.seen() == want[i] for i, inbox in enumerate(inboxes))

    assert sim.run(30.0, delivered), (
        [len(b.seen()) for b in inboxes],
        [n.gossip.stats() for n in sim.nodes],
    )
    sim.run(5.0, lambda: False)  # repairs and forwards still in flight change nothing
    for i, inbox in enumerate(inboxes):
        assert inbox.seen() == want[i]
        assert set(inbox.ids.values()) == {1}, f"node {i} got a message twice"
        assert subs[i].dropped == 0
    assert all(s.get(0) is None for s in other)  # another topic got nothing
    assert sim.net.stats().lost > 0
    stats = [n.gossip.stats() for n in sim.nodes]
    assert sum(s.counter("duplicates") for s in stats) > 0  # de-duplication did work
    print(
        "lost frames", sim.net.stats().lost,
        "iwant served", sum(s.counter("iwant_served") for s in stats),
        "forwarded", sum(s.counter("forwarded") for s in stats),
    )


def test_gossip_over_tcp_reaches_a_peer_two_hops_away(tmp_path: Path) -> None:
    def start(name: str, boot: list[str]) -> Node:
        cfg = load_config(
            None,
            {
                "data_dir": str(tmp_path / name),
                "listen": "127.0.0.1:0",
                "bootstrap": boot,
                "sync_interval": 0.2,
                "protocols": ["gossip"],
            },
        )
        return Node(cfg).start()

    hub = start("hub", [])
    ends = [start("a", [hub.bootstrap_address]), start("c", [hub.bootstrap_address])]
    nodes = [hub, *ends]
    try:
        subs = [n.gossip.subscribe("news") for n in nodes]
        wait_until(
            lambda: all(dict(n.gossip.stats().mesh).get("news", 0) >= 1 for n in nodes)
            and dict(hub.gossip.stats().mesh).get("news") == 2,
            20.0,
            "the mesh",
        )
        msg_id = ends[0].gossip.publish("news", b"hello over TLS")
        for sub in (subs[0], subs[2]):
            got = sub.get(10.0)
            assert got is not None and got.msg_id == msg_id and got.payload == b"hello over TLS"
            assert got.origin == ends[0].device_id
        wait_until(lambda: hub.gossip.stats().counter("ihave_sent") > 0, 10.0, "an IHave")
        assert all(s.get(0.3) is None for s in subs)  # once each; nothing to the publisher
    finally:
        for n in reversed(nodes):
            n.stop()


def test_untrusted_gossip_is_bounded_and_charged_to_its_sender(tmp_path: Path) -> None:
    def cfg(name: str, **extra: object) -> NodeConfig:
        base = {"data_dir": str(tmp_path / name), "listen": "127.0.0.1:0", "protocols": ["gossip"]}
        return load_config(None, {**base, **extra})

    limits = {"rate_limit.peer_ops_per_second": 1.0, "rate_limit.peer_burst": 20}
    b = Node(cfg("b", **limits)).start()
    a = Node(cfg("a")).start()
    try:
        sub = b.gossip.subscribe("t")
        conn = a.transport.connect(b.device_id, b.listen_address, timeout=5.0)
        conn.send(GossipMessage("t", b"x", b"short", a.device_id))  # a 5-byte id
        conn.send(GossipMessage("", b"x", b"\1" * 16, a.device_id))  # an empty topic
        wait_until(lambda: b.gossip.stats().counter("invalid") == 2, 5.0, "two invalid")
        assert sub.get(0.2) is None
        for k in range(60):  # a flood: past the peer's burst, charged and dropped
            conn.send(GossipMessage("t", b"%d" % k, k.to_bytes(16, "big"), a.device_id))
        def handled() -> bool:
            stats = b.gossip.stats()
            return stats.counter("received") + stats.counter("rate_limited") >= 60

        wait_until(handled, 10.0, "the flood handled")
        stats = b.gossip.stats()
        assert stats.counter("rate_limited") > 0
        assert stats.counter("received") <= 20  # the peer's burst (less what it spent before)
        assert stats.counter("delivered") == stats.counter("received")
        with pytest.raises(InvalidArgument, match="payload"):
            a.gossip.publish("t", b"x" * (MAX_PAYLOAD + 1))
        with pytest.raises(InvalidArgument, match="topic"):
            a.gossip.publish("t" * 300, b"x")
        with pytest.raises(WrongType, match="payload"):
            a.gossip.publish("t", "text")  # type: ignore[arg-type]
    finally:
        a.stop()
        b.stop()


def test_gossip_is_off_unless_enabled(tmp_path: Path) -> None:
    with Node(load_config(None, {"data_dir": str(tmp_path), "listen": "127.0.0.1:0"})) as n:
        with pytest.raises(InvalidArgument, match="gossip"):
            n.gossip.publish("t", b"x")
    assert gossip.spec().id == "gossip"


def test_the_gossip_section_reaches_the_actor_and_its_counters_reach_metrics(
    tmp_path: Path,
) -> None:
    """fanout bounds a published message's first hop, max_payload both ways; /metrics shows it."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    def start(name: str, boot: list[str], **extra: object) -> Node:
        base = {
            "data_dir": str(tmp_path / name),
            "listen": "127.0.0.1:0",
            "bootstrap": boot,
            "protocols": ["gossip"],
            "gossip.max_payload": 100,
        }
        return Node(load_config(None, {**base, **extra})).start()

    hub = start("hub", [], **{"gossip.fanout": 1, "gossip.mesh_degree": 2, "metrics_port": 0})
    ends = [start(n, [hub.bootstrap_address]) for n in ("a", "c")]
    nodes = [hub, *ends]
    try:
        subs = [n.gossip.subscribe("t") for n in nodes]
        wait_until(lambda: dict(hub.gossip.stats().mesh).get("t") == 2, 20.0, "the hub's mesh")
        hub.gossip.publish("t", b"from the hub")
        assert hub.gossip.stats().counter("forwarded") == 1  # fanout 1 of the 2 subscribers
        ends[0].gossip.publish("t", b"from a")
        got = subs[0].get(10.0)
        assert got is not None and got.payload == b"from a"
        # seen here first: forwarded to the mesh (mesh_degree 2) except a, the sender
        wait_until(lambda: hub.gossip.stats().counter("forwarded") == 2, 10.0, "a forward")
        with pytest.raises(InvalidArgument, match="at most 100 bytes"):
            ends[0].gossip.publish("t", b"x" * 101)
        conn = ends[1].transport.connect(hub.device_id, hub.listen_address, timeout=5.0)
        conn.send(GossipMessage("t", b"y" * 101, b"\2" * 16, ends[1].device_id))
        wait_until(lambda: hub.gossip.stats().counter("invalid") == 1, 5.0, "the big one dropped")
        stats = hub.gossip.stats()
        assert stats.seen == 2 and stats.cached == 2
        url = f"http://{hub.metrics_address}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            text = resp.read().decode()
        got_samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
        }
        assert got_samples[("aura_sync_gossip_published_total", ())] == 1
        assert got_samples[("aura_sync_gossip_received_total", ())] == 1
        assert got_samples[("aura_sync_gossip_delivered_total", ())] == 1
        assert got_samples[("aura_sync_gossip_forwarded_total", ())] == 2
        assert got_samples[("aura_sync_gossip_refused_total", (("reason", "invalid"),))] == 1
        assert got_samples[("aura_sync_gossip_refused_total", (("reason", "rate_limited"),))] == 0
        assert got_samples[("aura_sync_gossip_seen_cache_ids", ())] == 2
    finally:
        for n in reversed(nodes):
            n.stop()
