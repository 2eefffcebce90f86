"""``/health`` tells the truth: "degraded" with a named reason (``aura_sync.node.health``).

Real nodes on loopback TCP and TLS: a journal that refuses writes, rounds that
find peers and never succeed, connection slots taken, send buffers filled by
replies nobody reads, and admission that denies most inbound work each turn the
status to "degraded" naming the reason; a journal that accepts writes again, and
buffers that drained, turn it back.
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
from _tls_helpers import raw_tls_client, tls_retry

from aura_sync.errors import AuraError, JournalUnwritable
from aura_sync.identity import NodeIdentity
from aura_sync.ids import DeviceId
from aura_sync.messages import codec
from aura_sync.messages.sync import (
    FULL_RANGE,
    PROTOCOL_VERSION,
    DigestRequest,
    Hello,
    OpsRequest,
    Request,
)
from aura_sync.node.node import Node
from aura_sync.transport import TcpTransport
from aura_sync.transport._frames import encode_frame


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


def test_send_buffers_filled_by_unread_replies_degrade_health_until_they_drain(
    nodes: Cluster, tmp_path: Path
) -> None:
    cap = 1024 * 1024  # node-wide: two of the 512 KiB replies below
    settings = {"transport.max_total_send_buffer": cap, "defence.stalled_intervals": 10_000}
    a = nodes.add("a", metrics_port=0, **settings)  # (the mute attackers stall its rounds)
    a.append([bytes([i]) * 4096 for i in range(128)])
    ids, _ = a.journal.list_ids(FULL_RANGE, 128)
    body = codec.encode(OpsRequest(ids))  # answered by 128 ops of 4 KiB
    hello = encode_frame(codec.encode(Hello(PROTOCOL_VERSION, "")))
    frames = hello + b"".join(encode_frame(codec.encode(Request(k + 1, body))) for k in range(10))
    attackers = [
        raw_tls_client(NodeIdentity.generate(), a.listen_address, a.device_id) for _ in range(4)
    ]
    try:
        for sock, conn in attackers:  # ten requests each, and never a byte read back
            view = memoryview(frames)
            while view:
                chunk = view[:16384]
                view = view[tls_retry(sock, lambda c=conn, d=chunk: c.send(d), 5.0) :]
        wait_until(lambda: "send_buffers_exhausted" in _reasons(a), 15, "exhausted buffers")
        doc = _health(a.metrics_address or "")
        assert doc["status"] == "degraded" and "send_buffers_exhausted" in doc["reasons"]
        assert a.transport.stats().send_buffer_full >= 1
        assert a.transport.admission_status().send_buffer_bytes <= cap
    finally:
        for sock, _ in attackers:
            sock.close()
    wait_until(lambda: a.transport.admission_status().send_buffer_bytes == 0, 10, "buffers freed")
    wait_until(lambda: "send_buffers_exhausted" not in _reasons(a), 15, "health to recover")
    doc = _health(a.metrics_address or "")
    assert doc["status"] == "ok", doc.get("reasons")
