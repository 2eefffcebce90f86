"""``/health`` tells the truth: "degraded" with a named reason (``aura_sync.node.health``).

Real nodes on loopback TCP and TLS: a journal that refuses writes, rounds that
find peers and never succeed, connection slots taken, and admission that
denies most inbound work each turn the status to "degraded" naming the reason;
a journal that accepts writes again turns it back.
"""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _node_helpers import Cluster, cluster, wait_until

from aura_sync.errors import AuraError, JournalUnwritable
from aura_sync.identity import NodeIdentity
from aura_sync.ids import DeviceId
from aura_sync.messages.sync import FULL_RANGE, DigestRequest
from aura_sync.node.node import Node
from aura_sync.transport import TcpTransport


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Cluster]:
    yield from cluster(tmp_path)


def _reasons(node: Node) -> tuple[str, ...]:
    snap = node.snapshot()
    return snap.reasons if snap.status == "degraded" else ()


def _health(address: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"http://{address}/health", timeout=5) as resp:
            return dict(json.loads(resp.read()))
    except urllib.error.HTTPError as exc:  # 503 while degraded: the body still says why
        return dict(json.loads(exc.read()))


def test_a_journal_that_cannot_be_written_degrades_health_until_it_can(nodes: Cluster) -> None:
    a = nodes.add("a", metrics_port=0)
    a.append([b"fine"])
    assert a.snapshot().status == "ok"
    a.journal._conn.execute("PRAGMA query_only = ON")  # every write now fails in SQLite
    with pytest.raises(JournalUnwritable):
        a.append([b"refused"])
    assert "journal_unwritable" in _reasons(a)
    doc = _health(a.metrics_address or "")
    assert doc["status"] == "degraded" and "journal_unwritable" in doc["reasons"]
    a.journal._conn.execute("PRAGMA query_only = OFF")
    a.append([b"written again"])
    assert "journal_unwritable" not in _reasons(a)


def test_rounds_that_find_peers_but_never_sync_degrade_health(nodes: Cluster) -> None:
    ghost = f"{DeviceId.from_int(77)}@127.0.0.1:1"  # a known peer nobody answers for
    a = nodes.add("a", bootstrap=[ghost], **{"defence.stalled_intervals": 3})
    wait_until(lambda: "sync_stalled" in _reasons(a), 15, "a stalled sync to show")


def test_taken_connection_slots_degrade_health(nodes: Cluster, tmp_path: Path) -> None:
    a = nodes.add("a", **{"transport.max_established": 2, "transport.reserved_outbound": 1})
    first = TcpTransport(NodeIdentity.load_or_create(tmp_path / "first"))
    second = TcpTransport(NodeIdentity.load_or_create(tmp_path / "second"))
    try:
        first.connect(a.device_id, a.listen_address)
        with contextlib.suppress(AuraError, OSError):  # refused: no accept slot left
            second.connect(a.device_id, a.listen_address).request(
                DigestRequest((FULL_RANGE,)), 2
            ).result(2)
        wait_until(lambda: "connection_slots_exhausted" in _reasons(a), 10, "slots to show")
    finally:
        first.close()
        second.close()


def test_shedding_most_inbound_work_degrades_health(nodes: Cluster, tmp_path: Path) -> None:
    a = nodes.add(
        "a",
        **{
            "rate_limit.peer_ops_per_second": 1.0,
            "rate_limit.peer_burst": 10,
            "rate_limit.adaptive": False,
            "scoring.rate_limited_penalty": 0,
        },
    )
    assert "shedding_inbound" not in _reasons(a)
    client = TcpTransport(NodeIdentity.load_or_create(tmp_path / "flooder"))
    try:
        conn = client.connect(a.device_id, a.listen_address)
        futures = [conn.request(DigestRequest((FULL_RANGE,)), 10) for _ in range(100)]
        for f in futures:
            f.result(10)
    finally:
        client.close()
    assert "shedding_inbound" in _reasons(a)
    assert a.sync_status().counter("shed_permille") > 500
