"""Inbound admission (``aura_sync.protocols.admission`` and the serving hook).

Properties of the cost function (never zero, monotone in the work asked,
bounded by the message bounds), then loopback nodes over real TCP and TLS:
a peer over its limit is answered ``RateLimited`` with a ``retry_after`` and
the limiter's counters move; flow-budget denials are counted in /metrics;
AIMD moves the peer's rate from served outcomes; and a heavy-digest flood no
longer starves a node (slow).
"""

from __future__ import annotations

import os
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from _node_helpers import Cluster, cluster, converged, wait_until
from hypothesis import given
from hypothesis import strategies as st

from aura_sync.errors import ConnectionClosed
from aura_sync.identity import NodeIdentity
from aura_sync.ids import DeviceId
from aura_sync.messages import ErrorReply, Message
from aura_sync.messages.rate_limit import GetPeerRate, GetRateLimiterStatistics
from aura_sync.messages.sync import (
    FULL_RANGE,
    MAX_IDS_BATCH,
    MAX_OP_PAYLOAD,
    MAX_OPS_BATCH,
    MAX_PEERS_PER_EXCHANGE,
    MAX_RANGES,
    MAX_TOKEN_SIZE,
    NO_PREV,
    ChildDigestsRequest,
    DigestReply,
    DigestRequest,
    IdRange,
    IdsReply,
    IdsRequest,
    NodeIdsRequest,
    Op,
    OpsRequest,
    PeerExchangeRequest,
    PresentCapability,
    PushOps,
)
from aura_sync.node.config import NODE_RATE_LIMIT
from aura_sync.node.node import Node
from aura_sync.protocols.admission import (
    BYTES_PER_UNIT,
    DEFAULT_COST,
    MAX_REQUEST_COST,
    OP_BYTES,
    request_cost,
)
from aura_sync.protocols.serving import _OP_OVERHEAD
from aura_sync.transport import TcpTransport


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Cluster]:
    yield from cluster(tmp_path)


# --- the cost function ------------------------------------------------------------------

_IDS = st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=MAX_OPS_BATCH)


def _op(payload: bytes) -> Op:
    return Op(DeviceId.from_int(1), 0, payload, NO_PREV)


def _pair(a: Message, b: Message) -> None:
    """``b`` asks for at least the work of ``a``: it costs at least as much; both >= 1."""
    ca, cb = request_cost(a), request_cost(b)
    assert 1 <= ca <= cb <= MAX_REQUEST_COST, (ca, cb)


@given(st.integers(1, MAX_RANGES), st.integers(1, MAX_RANGES))
def test_digest_cost_is_monotone_in_ranges(m: int, n: int) -> None:
    m, n = sorted((m, n))
    _pair(DigestRequest((FULL_RANGE,) * m), DigestRequest((FULL_RANGE,) * n))


@given(st.integers(1, MAX_RANGES), st.integers(1, MAX_RANGES))
def test_node_listing_cost_is_monotone_in_nodes(m: int, n: int) -> None:
    m, n = sorted((m, n))
    _pair(NodeIdsRequest(3, tuple(range(m))), NodeIdsRequest(3, tuple(range(n))))
    _pair(ChildDigestsRequest(3, tuple(range(m))), ChildDigestsRequest(3, tuple(range(n))))


@given(st.integers(1, MAX_IDS_BATCH), st.integers(1, MAX_IDS_BATCH))
def test_listing_cost_is_monotone_in_the_limit(m: int, n: int) -> None:
    m, n = sorted((m, n))
    _pair(IdsRequest(FULL_RANGE, m), IdsRequest(FULL_RANGE, n))


@given(_IDS, st.integers(0, MAX_OPS_BATCH))
def test_fetch_cost_is_monotone_in_the_ids(ids: list[bytes], cut: int) -> None:
    _pair(OpsRequest(tuple(ids[: max(1, cut)])), OpsRequest(tuple(ids)))


@given(
    st.lists(st.integers(0, 4096), min_size=1, max_size=MAX_OPS_BATCH),
    st.integers(1, MAX_OPS_BATCH),
    st.integers(0, 4096),
)
def test_push_cost_is_monotone_in_ops_and_bytes(sizes: list[int], cut: int, grow: int) -> None:
    ops = [_op(bytes(n)) for n in sizes]
    _pair(PushOps(tuple(ops[:cut])), PushOps(tuple(ops)))
    bigger = [_op(bytes(min(4096, n + grow))) for n in sizes]
    _pair(PushOps(tuple(ops)), PushOps(tuple(bigger)))


@given(st.integers(1, MAX_PEERS_PER_EXCHANGE), st.integers(1, MAX_TOKEN_SIZE))
def test_every_request_costs_at_least_one(peers: int, token: int) -> None:
    for msg in (PeerExchangeRequest(peers), PresentCapability(bytes(token))):
        assert 1 <= request_cost(msg) <= MAX_REQUEST_COST


def test_a_request_without_a_rule_and_a_malformed_one_are_priced() -> None:
    assert request_cost(DigestReply(())) == DEFAULT_COST
    assert request_cost(DigestRequest(None)) == MAX_REQUEST_COST  # type: ignore[arg-type]
    heavy = DigestRequest((FULL_RANGE,) * MAX_RANGES)
    assert request_cost(heavy) > 40 * request_cost(DigestRequest((FULL_RANGE,)))


# --- over loopback ----------------------------------------------------------------------


# Admission alone: denials also lower the peer's trust (peer scoring bans a flooder, which
# closes its connection); these tests keep it connected to count every answer.
_NO_BAN = {"scoring.rate_limited_penalty": 0}


def _client(tmp: Path, node: Node) -> tuple[TcpTransport, object]:
    client = TcpTransport(NodeIdentity.load_or_create(tmp / "attacker"))
    return client, client.connect(node.device_id, node.listen_address)


def _flood(conn: object, requests: list[Message], timeout: float = 30.0) -> list[Message]:
    futures = [conn.request(r, timeout) for r in requests]  # type: ignore[attr-defined]
    return [f.result(timeout) for f in futures]


def _scrape(address: str) -> str:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


def test_a_peer_over_a_one_per_second_limit_is_mostly_denied_with_retry_after(
    nodes: Cluster, tmp_path: Path
) -> None:
    a = nodes.add(
        "a",
        metrics_port=0,
        **{
            "rate_limit.peer_ops_per_second": 1.0,
            "rate_limit.peer_burst": 10,
            "rate_limit.adaptive": False,  # a fixed limit (AIMD would raise it on successes)
            **_NO_BAN,
        },
    )
    a.append([b"x"])
    client, conn = _client(tmp_path, a)
    try:
        started = time.monotonic()
        replies = _flood(conn, [DigestRequest((FULL_RANGE,))] * 300)
        took = time.monotonic() - started
    finally:
        client.close()
    denied = [r for r in replies if isinstance(r, ErrorReply) and r.error_type == "RateLimited"]
    served = [r for r in replies if isinstance(r, DigestReply)]
    assert len(denied) + len(served) == 300
    # served within burst + rate * elapsed work units (the limiter runs on the real clock)
    cost = request_cost(DigestRequest((FULL_RANGE,)))
    assert cost * len(served) <= 10 + 1.0 * took + cost, (len(served), took)
    assert len(denied) >= 150, (len(denied), len(served), took)  # mostly denied
    assert all(r.retry_after is not None and r.retry_after > 0 for r in denied)
    stats = a.address_of("rate_limiter").call(GetRateLimiterStatistics(), 5)
    assert stats.peer_limit_hits >= 1 and stats.operations_allowed >= len(served)
    assert a.sync_status().counter("requests_rate_limited") == len(denied)
    assert f"aura_sync_sync_requests_rate_limited_total {float(len(denied))}" in _scrape(
        a.metrics_address or ""
    )


def test_flow_budget_denials_are_counted_in_metrics(nodes: Cluster, tmp_path: Path) -> None:
    budget = {"defence.flow_budget": 60, "defence.flow_epoch": 600, **_NO_BAN}
    a = nodes.add("a", metrics_port=0, **budget)
    a.append([b"x"])
    client, conn = _client(tmp_path, a)
    try:
        replies = _flood(conn, [IdsRequest(FULL_RANGE, MAX_IDS_BATCH)] * 20)  # 17 units each
    finally:
        client.close()
    served = [r for r in replies if isinstance(r, IdsReply)]
    denied = [r for r in replies if isinstance(r, ErrorReply) and r.error_type == "RateLimited"]
    assert len(served) == 3 and len(denied) == 17, replies
    stats = a.address_of("rate_limiter").call(GetRateLimiterStatistics(), 5)
    assert stats.flow_budget_hits >= 1
    text = _scrape(a.metrics_address or "")
    assert 'aura_sync_rate_limit_decisions_total{decision="flow_budget"}' in text
    line = next(x for x in text.splitlines() if 'decision="flow_budget"' in x and "_total" in x)
    assert float(line.split()[-1]) >= 1


def _fetches_within(budget: int, priced: int, extra: int) -> int:
    """How many fetches a flow budget buys: each is admitted for ``priced`` units, then its
    reply's ``extra`` units are charged; a charge that does not fit refuses what follows."""
    left, served = budget, 0
    while left >= priced:
        left, served = left - priced, served + 1
        if extra > 0:
            if left < extra:
                break
            left -= extra
    return served


@pytest.mark.parametrize("payload", [MAX_OP_PAYLOAD, 8])
def test_the_bytes_of_a_big_ops_reply_are_charged_to_the_peer(
    nodes: Cluster, tmp_path: Path, payload: int
) -> None:
    """An ``OpsRequest`` is priced for small ops before it is served; a reply of bigger
    ops charges its extra bytes to the asker's flow budget once served, so one budget
    buys fewer fetches of big ops, and the charge that overdraws it refuses what follows."""
    budget = {"defence.flow_budget": 200, "defence.flow_epoch": 600, **_NO_BAN}
    a = nodes.add("a", **budget)
    a.append([os.urandom(payload) for _ in range(MAX_OPS_BATCH)])
    request = OpsRequest(tuple(a.journal.all_ids()))
    priced = request_cost(request)
    size = MAX_OPS_BATCH * (payload + _OP_OVERHEAD)
    extra = -(-size // BYTES_PER_UNIT) - -(-MAX_OPS_BATCH * OP_BYTES // BYTES_PER_UNIT)
    served = _fetches_within(200, priced, extra)
    assert served == (4 if payload == MAX_OP_PAYLOAD else 200 // priced)  # 4 of 9 for big ops
    client, conn = _client(tmp_path, a)
    try:  # one at a time: each charge reaches the limiter before the next request
        replies = [conn.request(request, 30).result(30) for _ in range(12)]  # type: ignore[attr-defined]
    finally:
        client.close()
    kinds = [type(r).__name__ for r in replies]
    assert kinds == ["OpsReply"] * served + ["ErrorReply"] * (12 - served), kinds
    assert all(len(r.ops) == MAX_OPS_BATCH for r in replies[:served])  # type: ignore[attr-defined]
    assert all(r.error_type == "RateLimited" for r in replies[served:])  # type: ignore[attr-defined]


@pytest.mark.parametrize(("latency", "rises"), [(60.0, True), (1e-9, False)])
def test_aimd_moves_the_peer_rate_from_served_outcomes(
    nodes: Cluster, tmp_path: Path, latency: float, rises: bool
) -> None:
    a = nodes.add(
        "a",
        **{
            "rate_limit.peer_ops_per_second": 100.0,
            "rate_limit.peer_burst": 400,
            "defence.overload_latency": latency,
            **_NO_BAN,
        },
    )
    a.append([b"x"])
    client, conn = _client(tmp_path, a)
    me = NodeIdentity.load_or_create(tmp_path / "attacker").device_id
    limiter = a.address_of("rate_limiter")
    try:
        _flood(conn, [IdsRequest(FULL_RANGE, MAX_IDS_BATCH)] * 20)  # 340 units: under load
        if rises:
            wait_until(lambda: limiter.call(GetPeerRate(me), 5) > 100.0, 10, "the rate to rise")
        else:
            wait_until(lambda: limiter.call(GetPeerRate(me), 5) < 100.0, 10, "the rate to fall")
    finally:
        client.close()
    rate = limiter.call(GetPeerRate(me), 5)
    assert NODE_RATE_LIMIT.adaptive_min_ops_per_second <= rate
    assert rate <= NODE_RATE_LIMIT.adaptive_max_ops_per_second


def _heavy_ranges() -> tuple[IdRange, ...]:
    return tuple(
        IdRange(bytes([i]) + os.urandom(31), b"\xff" * 31 + bytes([i])) for i in range(MAX_RANGES)
    )


@pytest.mark.slow
def test_heavy_digest_flood_no_longer_starves_the_node(nodes: Cluster, tmp_path: Path) -> None:
    # The node reads a connection only as fast as it serves it, so with the default limits a
    # loaded machine serves the flood below them and denies nothing; limits far below what
    # any machine serves make the denials certain. Scoring would ban the flooder: off.
    budget = {
        "rate_limit.peer_ops_per_second": 2000.0,
        "rate_limit.peer_burst": 4000,
        "rate_limit.adaptive": False,
    }
    a = nodes.add("a", **budget, **_NO_BAN)
    for _ in range(20):
        a.append([b"op-%d" % i for i in range(1000)])
    client, conn = _client(tmp_path, a)
    limiter = a.address_of("rate_limiter")
    before = limiter.call(GetRateLimiterStatistics(), 5)
    try:
        flood = 400  # 51,600 units: 13x the burst, denied unless served at < 15 a second
        futures = [conn.request(DigestRequest(_heavy_ranges()), 60) for _ in range(flood)]  # type: ignore[attr-defined]
        # the journal actor still answers a local write: its ask times out (fails) after 5 s
        a.append([b"local write during the flood"], timeout=5.0)
        b = nodes.add("b", bootstrap=[a.bootstrap_address])
        wait_until(lambda: converged([a, b], 20_001), 60, "an honest node to converge")
        replies = [f.exception(60) or f.result() for f in futures]
    finally:
        client.close()
    denied = sum(isinstance(r, ErrorReply) and r.error_type == "RateLimited" for r in replies)
    cut = sum(isinstance(r, ConnectionClosed) for r in replies)  # banned by peer scoring
    served = sum(isinstance(r, DigestReply) for r in replies)
    after = limiter.call(GetRateLimiterStatistics(), 5)
    assert denied > 0 and after.peer_limit_hits > before.peer_limit_hits
    assert served + denied + cut == flood and served < flood


def test_an_honest_session_honours_denials_and_still_converges(nodes: Cluster) -> None:
    tight = {
        "rate_limit.peer_ops_per_second": 100.0,
        "rate_limit.peer_burst": 200,
        "rate_limit.adaptive": False,
        **_NO_BAN,
    }
    a = nodes.add("a", **tight)
    for i in range(0, 2000, 1000):
        a.append([b"op-%d" % j for j in range(i, i + 1000)])
    b = nodes.add("b", bootstrap=[a.bootstrap_address], **tight)
    wait_until(lambda: converged([a, b], 2000), 60, "convergence through denials")
    assert b.sync_status().counter("requests_denied_by_peer") > 0  # it waited, then resent
    assert a.sync_status().counter("requests_rate_limited") > 0
