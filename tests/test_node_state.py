"""The node's state across process restarts: peer table, spend, cache floors, bans (issue 11.5)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from _node_helpers import Cluster, cluster, converged, make_node, wait_until

from aura_sync.errors import StateCorrupt
from aura_sync.ids import DeviceId
from aura_sync.infrastructure.peer_scoring import Offence, PeerBan
from aura_sync.infrastructure.rate_limit import (
    Allowed,
    DenialReason,
    Denied,
    PeerBucketState,
    RateLimitConfig,
    RateLimiterSnapshot,
)
from aura_sync.messages.cache import GetEpochFloor, InvalidateKeys, RaiseFloorAll
from aura_sync.messages.peers import GetPeerTable, ListBans, ReportOffence
from aura_sync.messages.rate_limit import CheckRateLimit, GetFlowBudget, SetFlowBudget
from aura_sync.node.node import Node
from aura_sync.node.state import STATE_FILE, SavedState, StateStore, merge_spend

T = 5.0
# 5 ops of burst, one new token every 1000 s: a spent bucket stays spent for the whole test.
SLOW = {
    "rate_limit.peer_burst": 5,
    "rate_limit.peer_ops_per_second": 0.001,
    "rate_limit.adaptive_min_ops_per_second": 0.0001,
}


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Cluster]:
    yield from cluster(tmp_path)


def test_a_node_restarted_without_bootstrap_dials_the_peers_it_knew(
    nodes: Cluster, tmp_path: Path
) -> None:
    a = nodes.add("a")
    b = make_node(tmp_path / "b", bootstrap=[a.bootstrap_address])
    try:
        b.append([b"b-%d" % i for i in range(20)])
        wait_until(lambda: converged([a, b], 20), 20, "a and b to converge")
    finally:
        b.stop()
    a.append([b"a-%d" % i for i in range(30)])
    b = make_node(tmp_path / "b")  # no bootstrap: only the saved table knows a
    nodes.nodes.append(b)
    table = b.address_of("peer_manager").call(GetPeerTable(), T)
    known = {p.peer_id: p.address for p in table.peers}
    assert known.get(a.device_id) == a.listen_address
    wait_until(lambda: converged([a, b], 50), 20, "restarted b to sync a's new ops")


def test_without_the_store_the_same_restart_knows_nobody(tmp_path: Path) -> None:
    """The control: what the test above checks would fail without persistence."""
    a = make_node(tmp_path / "a")
    try:
        b = make_node(tmp_path / "b", bootstrap=[a.bootstrap_address], **{"state.enabled": False})
        wait_until(lambda: a.device_id in _peer_ids(b), 10, "b to know a")
        b.stop()
        b = make_node(tmp_path / "b", **{"state.enabled": False})
        try:
            assert a.device_id not in _peer_ids(b)
        finally:
            b.stop()
    finally:
        a.stop()


def _peer_ids(node: object) -> set[DeviceId]:
    table = node.address_of("peer_manager").call(GetPeerTable(), T)  # type: ignore[attr-defined]
    return {p.peer_id for p in table.peers}


def _spend(node: object, peer: DeviceId, n: int) -> list[bool]:
    limiter = node.address_of("rate_limiter")  # type: ignore[attr-defined]
    return [isinstance(limiter.call(CheckRateLimit(peer), T), Allowed) for _ in range(n)]


def test_a_peer_at_its_limit_is_still_limited_right_after_a_restart(tmp_path: Path) -> None:
    peer, other = DeviceId.from_int(101), DeviceId.from_int(102)
    node = make_node(tmp_path / "n", **SLOW)
    try:
        assert _spend(node, peer, 6) == [True] * 5 + [False]
        assert _spend(node, other, 2) == [True, True]
        node.address_of("rate_limiter").call(SetFlowBudget(peer, 100, 7), T)
    finally:
        node.stop()
    node = make_node(tmp_path / "n", **SLOW)
    try:
        limiter = node.address_of("rate_limiter")
        denied = limiter.call(CheckRateLimit(peer), T)
        assert isinstance(denied, Denied) and denied.reason is DenialReason.PEER
        assert denied.retry_after > 900  # no credit for the time the node was down
        assert _spend(node, other, 4) == [True, True, True, False]  # 2 of 5 were spent
        budget = limiter.call(GetFlowBudget(peer), T)
        assert budget is not None and (budget.limit, budget.epoch) == (100, 7)
    finally:
        node.stop()
    node = make_node(tmp_path / "n", **SLOW, **{"state.enabled": False})
    try:  # the control: a node that does not restore admits the peer again
        assert _spend(node, peer, 1) == [True]
    finally:
        node.stop()


def test_cache_floors_and_bans_survive_a_restart(tmp_path: Path) -> None:
    bad = DeviceId.from_int(103)
    node = make_node(tmp_path / "n")
    try:
        cache = node.address_of("cache")
        cache.call(InvalidateKeys(("users/1",), 41), T)
        cache.call(RaiseFloorAll(7), T)
        peers = node.address_of("peer_manager")
        ban = None
        while ban is None:
            ban = peers.call(ReportOffence(bad, Offence.CAPABILITY), T)
    finally:
        node.stop()
    node = make_node(tmp_path / "n")
    try:
        cache = node.address_of("cache")
        assert cache.call(GetEpochFloor("users/1"), T) == 41
        assert cache.call(GetEpochFloor("other"), T) == 7
        bans = node.address_of("peer_manager").call(ListBans(), T)
        assert [b.peer_id for b in bans] == [bad]
        assert bans[0].bans == ban.bans and bans[0].until >= ban.until - 1.0
    finally:
        node.stop()


def test_a_ban_that_ended_before_a_restart_still_makes_the_next_one_longer(
    tmp_path: Path,
) -> None:
    bad = DeviceId.from_int(104)
    short = {"scoring.ban_base": 0.3, "scoring.ban_growth": 20.0}  # 0.3 s, then 6 s

    def ban_it(node: Node) -> PeerBan:
        peers = node.address_of("peer_manager")
        ban = None
        while ban is None:
            ban = peers.call(ReportOffence(bad, Offence.CAPABILITY), T)
        return ban

    node = make_node(tmp_path / "n", **short)
    try:
        assert ban_it(node).bans == 1
        peers = node.address_of("peer_manager")
        wait_until(lambda: peers.call(ListBans(), T) == (), 10, "the first ban to end")
    finally:
        node.stop()
    node = make_node(tmp_path / "n", **short)
    try:
        ban = ban_it(node)  # the repeat offence escalates: the count survived the restart
        assert ban.bans == 2
        assert node.address_of("peer_manager").call(ListBans(), T) == (ban,)
    finally:
        node.stop()


def test_a_periodic_save_happens_while_running(tmp_path: Path) -> None:
    node = make_node(tmp_path / "n", **{"state.save_interval": 0.05})
    try:
        node.address_of("cache").call(RaiseFloorAll(3), T)
        store_path = tmp_path / "n" / STATE_FILE

        def saved_floor() -> int | None:
            with sqlite3.connect(store_path) as conn:  # a reader: never writes
                rows = conn.execute("SELECT count(*) FROM part WHERE name = 'cache'").fetchone()
            if not rows[0]:
                return None
            store = StateStore.open(store_path)
            try:
                state = store.load()
            finally:
                store.close()
            return None if state is None or state.cache is None else state.cache.global_floor

        wait_until(lambda: saved_floor() == 3, 10, "a tick to save the floor")
    finally:
        node.stop()


@pytest.mark.parametrize(
    "damage",
    ["garbage", "empty", "foreign", "flipped"],
)
def test_a_corrupt_state_file_is_refused_and_left_alone(tmp_path: Path, damage: str) -> None:
    data = tmp_path / "n"
    make_node(data).stop()  # writes a state file
    path = data / STATE_FILE
    if damage == "garbage":
        path.write_bytes(b"not a database at all" * 10)
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "foreign":
        path.unlink()
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE t (x)")
    else:
        with sqlite3.connect(path) as conn:
            body = conn.execute("SELECT body FROM part WHERE name = 'peers'").fetchone()[0]
            flipped = bytes([body[0] ^ 1]) + body[1:]
            conn.execute("UPDATE part SET body = ? WHERE name = 'peers'", (flipped,))
    before = path.read_bytes()
    with pytest.raises(StateCorrupt, match="state store"):
        make_node(data)
    assert path.read_bytes() == before


def test_after_a_crash_the_saved_buckets_restart_empty() -> None:
    config = RateLimitConfig(global_burst=10, global_ops_per_second=10.0, peer_burst=4,
                             peer_ops_per_second=2.0)  # fmt: skip
    saved = RateLimiterSnapshot(0, 0.1, 10.0, (PeerBucketState(b"p", 0.5, 2.0),))
    now = RateLimiterSnapshot(0, 0.2, 10.0, (PeerBucketState(b"q", 0.5, 2.0),))
    clean = merge_spend(saved, now, config, clean=True)
    assert clean.global_debt == pytest.approx(0.3)  # spend adds up
    assert {p.key: p.debt for p in clean.peers} == {b"p": 0.5, b"q": 0.5}
    crashed = merge_spend(saved, now, config, clean=False)
    assert crashed.global_debt == pytest.approx(1.0)  # 10 ops at 10/s: empty
    assert {p.key: p.debt for p in crashed.peers} == {b"p": 2.0, b"q": 0.5}


def test_a_save_round_trips_through_the_store(tmp_path: Path) -> None:
    store = StateStore.open(tmp_path / STATE_FILE)
    try:
        assert store.load() is None
        state = SavedState(1.5, 2.5, False, rate_limit=RateLimiterSnapshot(3, 0.0, 1.0, ()))
        store.save(state)
        assert store.load() == state
    finally:
        store.close()
    assert (tmp_path / STATE_FILE).stat().st_mode & 0o077 == 0


def test_a_carried_table_has_no_sessions_nor_connections_and_keeps_its_times() -> None:
    from aura_sync.infrastructure.peer_values import PeerInfo, PeerMetadata, PeerStatus
    from aura_sync.infrastructure.peer_values import PeerTableSnapshot as Table
    from aura_sync.node.state import carry_table

    meta = PeerMetadata(PeerStatus.CONNECTED, 1.0, 2.0, 3.0, trust_level=70, active_sessions=2,
                        backoff_until=9.0)  # fmt: skip
    peer = DeviceId.from_int(7)
    ban = PeerBan(peer, 50.0, 2, "capability", 10)
    table = Table((PeerInfo(peer, "127.0.0.1:1", meta),), 4.0, (ban,))
    carried = carry_table(table, 100.0)
    got = carried.peers[0].metadata
    assert (got.status, got.active_sessions, got.trust_level) == (PeerStatus.DISCONNECTED, 0, 70)
    assert (got.discovered_at, got.last_seen, got.backoff_until) == (101.0, 102.0, 109.0)
    assert carried.last_discovery == 104.0 and carried.bans[0].until == 150.0
    assert carried.peers[0].address == "127.0.0.1:1"


def test_a_killed_node_process_restarted_without_bootstrap_reconnects(
    nodes: Cluster, tmp_path: Path
) -> None:
    from test_node_process import NodeProcess

    a = nodes.add("a")
    config = tmp_path / "b.toml"
    config.write_text("[state]\nsave_interval = 0.1\n")
    data = tmp_path / "b"
    first = NodeProcess(data, "--config", str(config), "--bootstrap", a.bootstrap_address)
    try:
        first.start()
        assert first.append(30).added == 30
        wait_until(lambda: len(a.journal) == 30, 20, "b to sync with a")
        wait_until(lambda: _saved_peers(data / STATE_FILE) >= {a.device_id}, 10, "a tick save")
        first.kill()  # SIGKILL: no clean save, only the ticks' ones
    finally:
        first.close()
    a.append([b"while b was down %d" % i for i in range(20)])
    again = NodeProcess(data, "--config", str(config))  # no --bootstrap
    try:
        again.start()
        wait_until(lambda: again.health()["journal"]["ops"] == 50, 30, "b to reconnect to a")
    finally:
        again.close()


def _saved_peers(path: Path) -> set[DeviceId]:
    try:
        store = StateStore.open(path)
    except (StateCorrupt, sqlite3.Error):  # not created yet, or mid-write
        return set()
    try:
        state = store.load()
    finally:
        store.close()
    return set() if state is None or state.peers is None else {p.peer_id for p in state.peers.peers}


def test_a_smaller_peer_table_limit_keeps_the_most_trusted_saved_peers(tmp_path: Path) -> None:
    from aura_sync.messages.peers import AddPeer, UpdatePeerMetadata

    ids = [DeviceId.from_int(200 + i) for i in range(5)]
    node = make_node(tmp_path / "n")
    try:
        peers = node.address_of("peer_manager")
        for i, peer in enumerate(ids):
            peers.call(AddPeer(peer, f"127.0.0.1:{20000 + i}"), T)
            peers.call(UpdatePeerMetadata(peer, trust_level=60 + i), T)
    finally:
        node.stop()
    node = make_node(tmp_path / "n", **{"peers.max_tracked_peers": 3})
    try:
        assert _peer_ids(node) == set(ids[2:])  # the three most trusted
    finally:
        node.stop()


def test_a_store_is_created_whole_and_a_leftover_of_a_crashed_creation_is_ignored(
    tmp_path: Path,
) -> None:
    tmp_path.joinpath(STATE_FILE + ".new").write_bytes(b"half a database")
    store = StateStore.open(tmp_path / STATE_FILE)
    store.close()
    assert not tmp_path.joinpath(STATE_FILE + ".new").exists()
    StateStore.open(tmp_path / STATE_FILE).close()  # a whole, valid store
