"""PeerManager: the Rust module's reference behaviours, the status machine, sessions,
failure backoff, bounded discovery, snapshots, validation, and the peer messages."""

from __future__ import annotations

import dataclasses
import itertools
import warnings
from collections.abc import Callable, Iterable

import pytest

from aura_sync.effects import ManualClock
from aura_sync.errors import (
    ConfigError,
    DiscoveryError,
    InvalidArgument,
    InvalidTransition,
    PeerTableFull,
    PeerUnavailable,
    SessionLimitReached,
    UnknownPeer,
    WrongType,
)
from aura_sync.ids import DeviceId
from aura_sync.infrastructure.peer_scoring import ScoringConfig
from aura_sync.infrastructure.peers import (
    ALLOWED_TRANSITIONS,
    DEFAULT_TRUST_LEVEL,
    PeerDiscoveryConfig,
    PeerInfo,
    PeerManager,
    PeerManagerStatistics,
    PeerMetadata,
    PeerStatus,
    PeerTableSnapshot,
    StaticDiscovery,
    failure_backoff,
)
from aura_sync.messages import Ack, ErrorReply, codec
from aura_sync.messages import peers as msgs

S = PeerStatus
P1, P2, P3, P4, P5 = (DeviceId.from_int(i) for i in range(1, 6))


def make(clock: ManualClock | None = None, **config: object) -> PeerManager:
    return PeerManager(PeerDiscoveryConfig(**config), clock=clock or ManualClock())  # type: ignore[arg-type]


def ready(manager: PeerManager, peer: DeviceId, trust: int = DEFAULT_TRUST_LEVEL) -> None:
    """Track ``peer`` and make it selectable: CONNECTED, verified, capable, ``trust``."""
    manager.add_peer(peer)
    manager.set_peer_status(peer, S.CONNECTED)
    manager.update_peer_metadata(peer, trust_level=trust, verified=True, has_sync_capability=True)


# --- configuration ------------------------------------------------------------------------


def test_config_defaults_follow_the_rust_module() -> None:
    config = PeerDiscoveryConfig()
    assert config.max_concurrent_sessions == 10
    assert config.discovery_timeout == 30.0
    assert config.refresh_interval == 300.0
    assert config.min_trust_level == 50
    assert config.max_tracked_peers == 100
    assert config.capability_filtering is True
    assert config.root_public_key is None


@pytest.mark.parametrize(
    ("field", "value", "exc", "text"),
    [
        ("max_concurrent_sessions", 0, ConfigError, "max_concurrent_sessions must be >= 1, got 0"),
        ("max_concurrent_sessions", 2.5, WrongType, "max_concurrent_sessions must be an int"),
        ("discovery_timeout", 0, ConfigError, "discovery_timeout must be > 0 seconds, got 0"),
        ("discovery_timeout", float("nan"), ConfigError, "discovery_timeout.*nan"),
        ("refresh_interval", -1.0, ConfigError, "refresh_interval must be > 0 seconds, got -1.0"),
        ("min_trust_level", 101, ConfigError, "min_trust_level must be in 0..100, got 101"),
        ("min_trust_level", True, WrongType, "min_trust_level must be an int, got bool"),
        ("max_tracked_peers", 0, ConfigError, "max_tracked_peers must be >= 1, got 0"),
        ("capability_filtering", 1, WrongType, "capability_filtering must be a bool, got int 1"),
        ("root_public_key", "ab" * 16, WrongType, "root_public_key must be 32 raw bytes"),
    ],
)
def test_config_validation_names_field_and_value(
    field: str, value: object, exc: type[Exception], text: str
) -> None:
    with pytest.raises(exc, match=text):
        PeerDiscoveryConfig(**{field: value})  # type: ignore[arg-type]


def test_config_is_immutable_and_normalizes_seconds() -> None:
    config = PeerDiscoveryConfig(discovery_timeout=5)
    assert type(config.discovery_timeout) is float
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.min_trust_level = 0  # type: ignore[misc]


def test_manager_checks_its_arguments() -> None:
    with pytest.raises(WrongType, match=r"config must be a PeerDiscoveryConfig"):
        PeerManager({"max_tracked_peers": 3})  # type: ignore[arg-type]
    with pytest.raises(WrongType, match=r"clock must be a Clock"):
        PeerManager(PeerDiscoveryConfig(), clock=object())  # type: ignore[arg-type]
    assert PeerManager().config == PeerDiscoveryConfig()


# --- reference behaviours of the Rust module ----------------------------------------------


def test_reference_score_is_0_80() -> None:
    manager = make()
    manager.add_peer(P1)
    manager.update_peer_metadata(
        P1, trust_level=80, successful_syncs=8, failed_syncs=2, active_sessions=2
    )
    # 0.5*0.8 + 0.3*0.8 + 0.2*(1 - 2/10)
    assert manager.peer_score(P1) == pytest.approx(0.80)


def test_score_without_history_uses_half_success_rate() -> None:
    manager = make()
    manager.add_peer(P1)
    manager.update_peer_metadata(P1, trust_level=100)
    assert manager.peer_score(P1) == pytest.approx(0.5 + 0.15 + 0.2)
    manager.update_peer_metadata(P1, active_sessions=50)  # load is capped at 1
    assert manager.peer_score(P1) == pytest.approx(0.5 + 0.15)


@pytest.mark.parametrize(("limit", "available"), [(10, True), (5, False)])
def test_reference_availability_depends_on_session_limit(limit: int, available: bool) -> None:
    manager = make(max_concurrent_sessions=limit)
    manager.add_peer(P1)
    manager.set_peer_status(P1, S.CONNECTED)
    manager.update_peer_metadata(P1, active_sessions=5)
    assert manager.is_peer_available(P1) is available


def test_reference_selection_of_two() -> None:
    manager = make()
    ready(manager, P1, trust=90)
    ready(manager, P2, trust=70)
    ready(manager, P3, trust=95)
    manager.set_peer_status(P3, S.DISCONNECTED)
    assert manager.select_sync_peers(2) == [P1, P2]


# --- selection ----------------------------------------------------------------------------


def test_selection_breaks_ties_by_device_id() -> None:
    manager = make()
    for peer in (P4, P2, P3):
        ready(manager, peer, trust=70)
    assert manager.select_sync_peers(10) == [P2, P3, P4]
    assert manager.select_sync_peers(2) == [P2, P3]


def test_selection_filters_every_requirement() -> None:
    clock = ManualClock()
    manager = make(clock, min_trust_level=60, max_concurrent_sessions=2)
    for peer in (P1, P2, P3, P4, P5):
        ready(manager, peer, trust=80)
    manager.update_peer_metadata(P1, verified=False)
    manager.update_peer_metadata(P2, has_sync_capability=False)
    manager.update_peer_metadata(P3, trust_level=59)
    manager.update_peer_metadata(P4, active_sessions=2)
    assert manager.select_sync_peers(5) == [P5]
    manager.set_peer_status(P5, S.DEGRADED)
    assert manager.select_sync_peers(5) == []
    manager.set_peer_status(P5, S.CONNECTED)
    manager.record_failure(P5)
    assert manager.select_sync_peers(5) == []
    clock.advance(failure_backoff(1))
    assert manager.select_sync_peers(5) == [P5]
    manager.update_peer_metadata(P3, trust_level=60)  # exactly the minimum qualifies
    assert manager.select_sync_peers(5) == [P5, P3]  # trust 80 before trust 60


def test_selection_count_validation() -> None:
    manager = make()
    ready(manager, P1)
    assert manager.select_sync_peers(0) == []
    with pytest.raises(InvalidArgument, match=r"count must be >= 0, got -1"):
        manager.select_sync_peers(-1)
    with pytest.raises(WrongType, match=r"count must be an int, got float 1.0"):
        manager.select_sync_peers(1.0)  # type: ignore[arg-type]


# --- status machine -----------------------------------------------------------------------

_PATHS: dict[PeerStatus, tuple[PeerStatus, ...]] = {
    S.DISCOVERED: (),
    S.CONNECTING: (S.CONNECTING,),
    S.CONNECTED: (S.CONNECTED,),
    S.DEGRADED: (S.CONNECTED, S.DEGRADED),
    S.DISCONNECTED: (S.CONNECTED, S.DISCONNECTED),
    S.FAILED: (S.FAILED,),
    S.REMOVED: (S.REMOVED,),
}


@pytest.mark.parametrize(("src", "dst"), [(a, b) for a, b in itertools.product(S, S) if a is not b])
def test_transition_table_is_enforced(src: PeerStatus, dst: PeerStatus) -> None:
    clock = ManualClock()
    manager = make(clock)
    manager.add_peer(P1)
    for step in _PATHS[src]:
        manager.set_peer_status(P1, step)
    clock.advance(1.0)
    before = manager.get_peer(P1)
    if dst in ALLOWED_TRANSITIONS[src]:
        manager.set_peer_status(P1, dst)
        after = manager.get_peer(P1).metadata
        assert after.status is dst
        assert after.last_status_change == clock.now()
    else:
        with pytest.raises(InvalidTransition, match=f"{src.name} -> {dst.name}"):
            manager.set_peer_status(P1, dst)
        assert manager.get_peer(P1) == before


def test_removed_is_terminal_and_every_other_status_can_reconnect() -> None:
    assert ALLOWED_TRANSITIONS[S.REMOVED] == frozenset()
    for status in S:
        if status not in (S.REMOVED, S.CONNECTED):
            assert S.CONNECTED in ALLOWED_TRANSITIONS[status]
        if status is not S.REMOVED:
            assert S.REMOVED in ALLOWED_TRANSITIONS[status]


def test_same_status_is_a_no_op() -> None:
    clock = ManualClock()
    manager = make(clock)
    manager.add_peer(P1)
    manager.set_peer_status(P1, S.CONNECTED)
    before = manager.get_peer(P1)
    clock.advance(3.0)
    manager.set_peer_status(P1, S.CONNECTED)
    assert manager.get_peer(P1) == before


def test_status_type_is_checked() -> None:
    manager = make()
    manager.add_peer(P1)
    with pytest.raises(WrongType, match=r"status must be a PeerStatus, got str 'connected'"):
        manager.set_peer_status(P1, "connected")  # type: ignore[arg-type]


def test_removed_tombstone_is_not_revived_and_is_evicted_first() -> None:
    manager = make(max_tracked_peers=2)
    manager.add_peer(P1, "10.0.0.1:7400")
    manager.set_peer_status(P1, S.REMOVED)
    assert manager.add_peer(P1, "10.0.0.2:7400") is False
    assert manager.discover_peers(StaticDiscovery([(P1, "10.0.0.3:7400")])) == []
    info = manager.get_peer(P1)
    assert info.status is S.REMOVED and info.address == "10.0.0.1:7400"
    manager.add_peer(P2)
    manager.set_peer_status(P2, S.FAILED)
    assert manager.discover_peers(StaticDiscovery([(P3, None)])) == [P3]
    assert P1 not in manager and P2 in manager  # the tombstone went before a failed peer
    assert manager.discover_peers(StaticDiscovery([(P1, None)])) == [P1]
    assert manager.get_peer(P1).status is S.DISCOVERED


# --- membership ---------------------------------------------------------------------------


def test_add_peer_tracks_new_and_refreshes_known() -> None:
    clock = ManualClock(100.0)
    manager = make(clock)
    assert manager.add_peer(P1) is True
    info = manager.get_peer(P1)
    assert info.address is None
    assert info.metadata.status is S.DISCOVERED
    assert info.metadata.trust_level == DEFAULT_TRUST_LEVEL
    assert info.metadata.discovered_at == info.metadata.last_seen == 100.0
    clock.advance(5.0)
    assert manager.add_peer(P1, "host:1") is False
    assert manager.get_peer(P1).address == "host:1"
    assert manager.get_peer(P1).metadata.last_seen == 105.0
    assert manager.get_peer(P1).metadata.discovered_at == 100.0
    manager.add_peer(P1)  # None keeps the known address
    assert manager.get_peer(P1).address == "host:1"


def test_add_peer_validation_changes_nothing() -> None:
    manager = make()
    with pytest.raises(WrongType, match=r"peer_id must be a DeviceId, got bytes"):
        manager.add_peer(b"\x00" * 16)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match=r"address must be 1..1024 characters, got 0"):
        manager.add_peer(P1, "")
    with pytest.raises(WrongType, match=r"address must be a str or None, got int 7400"):
        manager.add_peer(P1, 7400)  # type: ignore[arg-type]
    assert len(manager) == 0


def test_add_peer_when_full() -> None:
    manager = make(max_tracked_peers=2)
    manager.add_peer(P1)
    manager.add_peer(P2)
    with pytest.raises(PeerTableFull, match=r"max_tracked_peers=2"):
        manager.add_peer(P3)
    assert {p.peer_id for p in manager.peers()} == {P1, P2}
    manager.set_peer_status(P2, S.FAILED)
    assert manager.add_peer(P3) is True
    assert {p.peer_id for p in manager.peers()} == {P1, P3}


def test_unknown_peer_everywhere() -> None:
    manager = make()
    calls: list[Callable[[], object]] = [
        lambda: manager.get_peer(P1),
        lambda: manager.set_peer_status(P1, S.CONNECTED),
        lambda: manager.update_peer_metadata(P1, trust_level=5),
        lambda: manager.peer_score(P1),
        lambda: manager.is_peer_available(P1),
        lambda: manager.start_sync_session(P1),
        lambda: manager.end_sync_session(P1, True, 0.1),
        lambda: manager.record_failure(P1),
        lambda: manager.update_peer_capabilities(P1, b"token"),
    ]
    for call in calls:
        with pytest.raises(UnknownPeer, match=str(P1)):
            call()


def test_update_peer_metadata_validates_before_applying() -> None:
    manager = make()
    manager.add_peer(P1)
    before = manager.get_peer(P1)
    with pytest.raises(InvalidArgument, match=r"unknown peer metadata field.*latency"):
        manager.update_peer_metadata(P1, trust_level=60, latency=0.5)
    with pytest.raises(InvalidArgument, match=r"trust_level must be in 0..100, got 101"):
        manager.update_peer_metadata(P1, verified=True, trust_level=101)
    with pytest.raises(WrongType, match=r"verified must be a bool, got int 1"):
        manager.update_peer_metadata(P1, trust_level=60, verified=1)
    with pytest.raises(InvalidArgument, match=r"failed_syncs must be >= 0, got -1"):
        manager.update_peer_metadata(P1, failed_syncs=-1)
    with pytest.raises(WrongType, match=r"successful_syncs must be an int, got float"):
        manager.update_peer_metadata(P1, successful_syncs=1.0)
    assert manager.get_peer(P1) == before
    manager.update_peer_metadata(P1)  # nothing to change
    assert manager.get_peer(P1) == before


def test_snapshots_are_immutable_and_detached() -> None:
    manager = make()
    manager.add_peer(P1)
    info = manager.get_peer(P1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.metadata.trust_level = 100  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.address = "x"  # type: ignore[misc]
    manager.update_peer_metadata(P1, trust_level=99)
    assert info.metadata.trust_level == DEFAULT_TRUST_LEVEL
    assert manager.get_peer(P1).metadata.trust_level == 99


# --- sessions, latency and failure backoff ------------------------------------------------


def test_backoff_formula() -> None:
    assert [failure_backoff(n) for n in range(0, 5)] == [0.0, 5.0, 6.0, 9.0, 14.0]
    assert failure_backoff(18) == 5.0 + 17**2  # 294 s, still under the cap
    assert failure_backoff(19) == 300.0
    assert failure_backoff(10_000) == 300.0
    with pytest.raises(InvalidArgument, match=r"consecutive_failures must be >= 0, got -1"):
        failure_backoff(-1)


def test_sessions_count_and_respect_the_limit() -> None:
    manager = make(max_concurrent_sessions=2)
    ready(manager, P1)
    assert manager.start_sync_session(P1) == 1
    assert manager.start_sync_session(P1) == 2
    before = manager.get_peer(P1)
    with pytest.raises(SessionLimitReached, match=r"2 active.*max_concurrent_sessions=2"):
        manager.start_sync_session(P1)
    assert manager.get_peer(P1) == before
    assert manager.statistics().total_active_sessions == 2
    manager.end_sync_session(P1, True, 0.25)
    assert manager.start_sync_session(P1) == 2


def test_session_needs_a_connected_peer() -> None:
    manager = make()
    manager.add_peer(P1)
    with pytest.raises(PeerUnavailable, match=r"DISCOVERED, not CONNECTED"):
        manager.start_sync_session(P1)
    assert manager.get_peer(P1).metadata.active_sessions == 0


def test_end_session_validation_changes_nothing() -> None:
    manager = make()
    ready(manager, P1)
    with pytest.raises(InvalidArgument, match=r"no active sync session"):
        manager.end_sync_session(P1, True, 0.1)
    manager.start_sync_session(P1)
    before = manager.get_peer(P1)
    with pytest.raises(InvalidArgument, match=r"latency must be >= 0 seconds, got -0.1"):
        manager.end_sync_session(P1, True, -0.1)
    with pytest.raises(InvalidArgument, match=r"latency must be a finite number.*inf"):
        manager.end_sync_session(P1, True, float("inf"))
    with pytest.raises(WrongType, match=r"success must be a bool, got str 'yes'"):
        manager.end_sync_session(P1, "yes", 0.1)  # type: ignore[arg-type]
    assert manager.get_peer(P1) == before


def test_latency_ewma_tracks_successful_syncs_only() -> None:
    manager = make()
    ready(manager, P1)
    for success, latency in [(True, 1.0), (True, 2.0), (False, 30.0)]:
        manager.start_sync_session(P1)
        manager.end_sync_session(P1, success, latency)
    meta = manager.get_peer(P1).metadata
    assert meta.latency_ewma == pytest.approx(0.8 * 1.0 + 0.2 * 2.0)
    assert (meta.successful_syncs, meta.failed_syncs) == (2, 1)


def test_failed_sessions_back_off_and_success_clears() -> None:
    clock = ManualClock()
    manager = make(clock, scoring=ScoringConfig(degraded_min_syncs=100))  # backoff alone
    ready(manager, P1)
    expected = [5.0, 6.0, 9.0, 14.0]
    for n, delay in enumerate(expected, start=1):
        manager.start_sync_session(P1)
        manager.end_sync_session(P1, False, 0.5)
        meta = manager.get_peer(P1).metadata
        assert meta.consecutive_failures == n
        assert meta.backoff_until == pytest.approx(clock.now() + delay)
        assert not manager.is_peer_available(P1)
        with pytest.raises(PeerUnavailable, match=r"backoff"):
            manager.start_sync_session(P1)
        deadline = meta.backoff_until
        assert deadline is not None
        clock.set(deadline - 0.001)
        assert manager.select_sync_peers(1) == []
        clock.set(deadline)  # exactly at the deadline the backoff is over
        assert manager.select_sync_peers(1) == [P1]
    manager.start_sync_session(P1)
    manager.end_sync_session(P1, True, 0.5)
    meta = manager.get_peer(P1).metadata
    assert meta.consecutive_failures == 0 and meta.backoff_until is None
    manager.record_failure(P1)  # counting restarts at the first step
    assert manager.get_peer(P1).metadata.backoff_until == pytest.approx(clock.now() + 5.0)


def test_record_failure_backs_off_without_counting_a_sync() -> None:
    clock = ManualClock()
    manager = make(clock)
    ready(manager, P1)
    assert manager.record_failure(P1) == 5.0
    assert manager.record_failure(P1) == 6.0
    meta = manager.get_peer(P1).metadata
    assert meta.failed_syncs == 0
    assert meta.consecutive_failures == 2
    assert meta.status is S.CONNECTED
    for _ in range(30):
        manager.record_failure(P1)
    assert manager.get_peer(P1).metadata.backoff_until == pytest.approx(clock.now() + 300.0)


# --- discovery ----------------------------------------------------------------------------


class _FailingDiscovery:
    def discover(self, timeout: float) -> Iterable[tuple[DeviceId, str | None]]:
        raise ConnectionError("bootstrap host unreachable")


class _RecordingDiscovery:
    def __init__(self, found: Iterable[object]) -> None:
        self.found = found
        self.timeouts: list[float] = []

    def discover(self, timeout: float) -> Iterable[tuple[DeviceId, str | None]]:
        self.timeouts.append(timeout)
        return self.found  # type: ignore[return-value]


def test_discovery_tracks_new_peers_and_schedules_refresh() -> None:
    clock = ManualClock()
    manager = make(clock, refresh_interval=60.0, discovery_timeout=2.5)
    assert manager.needs_refresh()
    discovery = _RecordingDiscovery([(P1, "a:1"), (P2, None), (P1, "a:2")])
    assert manager.discover_peers(discovery) == [P1, P2]
    assert discovery.timeouts == [2.5]
    assert manager.get_peer(P1).address == "a:2"  # a later duplicate refreshes the address
    assert not manager.needs_refresh()
    clock.advance(30.0)
    assert not manager.needs_refresh()
    assert manager.discover_peers(StaticDiscovery([(P2, None), (P3, None)])) == [P3]
    clock.advance(59.5)
    assert not manager.needs_refresh()
    clock.advance(0.5)  # refresh_interval after the last round
    assert manager.needs_refresh()


def test_discovery_errors_propagate_clearly_and_change_nothing() -> None:
    clock = ManualClock()
    manager = make(clock)
    manager.add_peer(P1)
    before = manager.snapshot()
    with pytest.raises(
        DiscoveryError, match=r"ConnectionError: bootstrap host unreachable"
    ) as info:
        manager.discover_peers(_FailingDiscovery())
    assert isinstance(info.value.__cause__, ConnectionError)
    with pytest.raises(DiscoveryError, match=r"candidates\[1\]"):
        manager.discover_peers(_RecordingDiscovery([(P2, None), ("not-an-id", None)]))
    with pytest.raises(DiscoveryError, match=r"failed"):
        manager.discover_peers(_RecordingDiscovery(42))  # type: ignore[arg-type]
    with pytest.raises(WrongType, match=r"discover"):
        manager.discover_peers(object())  # type: ignore[arg-type]
    assert manager.snapshot() == before
    assert manager.needs_refresh()


def test_discovery_never_evicts_live_peers() -> None:
    manager = make(max_tracked_peers=3)
    assert manager.discover_peers(StaticDiscovery([(P1, None), (P2, None), (P3, None)])) == [
        P1,
        P2,
        P3,
    ]
    manager.set_peer_status(P2, S.CONNECTING)
    manager.set_peer_status(P3, S.CONNECTED)
    manager.set_peer_status(P3, S.DEGRADED)
    assert manager.discover_peers(StaticDiscovery([(P4, None), (P5, None)])) == []
    assert {p.peer_id for p in manager.peers()} == {P1, P2, P3}


def test_discovery_evicts_the_worst_dead_peer_for_a_newcomer() -> None:
    manager = make(max_tracked_peers=4)
    ids = [DeviceId.from_int(i) for i in range(10, 14)]
    for peer in ids:
        manager.add_peer(peer)
    manager.set_peer_status(ids[0], S.CONNECTED)
    manager.set_peer_status(ids[0], S.DISCONNECTED)  # dead, ranked after FAILED
    manager.set_peer_status(ids[1], S.FAILED)
    manager.update_peer_metadata(ids[1], trust_level=90)
    manager.set_peer_status(ids[2], S.FAILED)
    manager.update_peer_metadata(ids[2], trust_level=10)  # the worst FAILED
    manager.set_peer_status(ids[3], S.REMOVED)  # tombstones go first
    new = [DeviceId.from_int(i) for i in range(20, 25)]
    # Round 1: the tombstone goes first, then the lower-scored FAILED peer.
    assert manager.discover_peers(StaticDiscovery([(new[0], None), (new[1], None)])) == new[:2]
    assert {p.peer_id for p in manager.peers()} == {ids[0], ids[1], new[0], new[1]}
    # Round 2: the remaining FAILED peer goes before the DISCONNECTED one.
    assert manager.discover_peers(StaticDiscovery([(new[2], None)])) == [new[2]]
    assert ids[0] in manager and ids[1] not in manager
    # Round 3: the DISCONNECTED peer makes room once; then only live peers remain.
    assert manager.discover_peers(StaticDiscovery([(new[3], None), (new[4], None)])) == [new[3]]
    assert {p.peer_id for p in manager.peers()} == set(new[:4])


def test_dead_peer_with_active_sessions_is_not_evicted() -> None:
    manager = make(max_tracked_peers=1)
    ready(manager, P1)
    manager.start_sync_session(P1)
    manager.set_peer_status(P1, S.DISCONNECTED)
    assert manager.discover_peers(StaticDiscovery([(P2, None)])) == []
    manager.end_sync_session(P1, False, 0.0)
    assert manager.discover_peers(StaticDiscovery([(P2, None)])) == [P2]


def test_track_discovered_validates_everything_first() -> None:
    manager = make()
    with pytest.raises(WrongType, match=r"candidates\[1\] must be a \(DeviceId, address\) tuple"):
        manager.track_discovered([(P1, None), (P2,)])  # type: ignore[list-item]
    with pytest.raises(WrongType, match=r"candidates must be an iterable"):
        manager.track_discovered(b"abc")  # type: ignore[arg-type]
    assert len(manager) == 0 and manager.snapshot().last_discovery is None


# --- statistics, snapshot and restore -----------------------------------------------------


def test_statistics() -> None:
    clock = ManualClock()
    manager = make(clock, max_concurrent_sessions=1)
    assert manager.statistics() == PeerManagerStatistics(0, 0, 0, 0, 0)
    ready(manager, P1)
    ready(manager, P2)
    ready(manager, P3)
    manager.add_peer(P4)
    manager.start_sync_session(P1)  # P1 now at its limit: connected but unavailable
    manager.record_failure(P2)  # P2 backing off
    manager.set_peer_status(P3, S.REMOVED)
    assert manager.statistics() == PeerManagerStatistics(
        total_tracked=4,
        connected_peers=2,
        available_peers=0,
        peers_with_sync_capability=2,
        total_active_sessions=1,
    )
    clock.advance(5.0)
    assert manager.statistics().available_peers == 1


def test_snapshot_restore_round_trip() -> None:
    clock = ManualClock()
    manager = make(clock)
    ready(manager, P1, trust=90)
    manager.add_peer(P2, "h:2")
    manager.start_sync_session(P1)
    manager.record_failure(P2)
    manager.track_discovered([(P3, None)])
    snapshot = manager.snapshot()
    assert [p.peer_id for p in snapshot.peers] == [P1, P2, P3]
    with pytest.raises(dataclasses.FrozenInstanceError):
        snapshot.last_discovery = 1.0  # type: ignore[misc]
    restored = PeerManager.restore(manager.config, snapshot, clock=clock)
    assert restored.snapshot() == snapshot
    assert restored.select_sync_peers(3) == manager.select_sync_peers(3) == [P1]
    assert restored.peer_score(P1) == manager.peer_score(P1)
    restored.end_sync_session(P1, True, 0.1)  # the open session survived
    assert manager.get_peer(P1).metadata.active_sessions == 1  # independent tables
    assert not restored.needs_refresh()


def test_restore_checks_what_comes_from_disk_or_the_wire() -> None:
    manager = make()
    for peer in (P1, P2, P3):
        manager.add_peer(peer)
    with pytest.raises(InvalidArgument, match=r"3 peers, over max_tracked_peers=2"):
        PeerManager.restore(PeerDiscoveryConfig(max_tracked_peers=2), manager.snapshot())
    with pytest.raises(WrongType, match=r"snapshot must be a PeerTableSnapshot"):
        PeerManager.restore(None, manager.peers())  # type: ignore[arg-type]
    info = manager.get_peer(P1)
    with pytest.raises(InvalidArgument, match=r"peers\[1\]: duplicate peer_id"):
        PeerManager.restore(None, PeerTableSnapshot((info, info), None))
    with pytest.raises(WrongType, match=r"snapshot.peers\[0\] must be a PeerInfo, got str"):
        PeerManager.restore(None, PeerTableSnapshot(("x",), None))  # type: ignore[arg-type]
    bad_trust = dataclasses.replace(info.metadata, trust_level=200)
    bad_time = dataclasses.replace(info.metadata, last_seen=float("nan"))
    for meta, words in ((bad_trust, "trust_level must be in 0..100, got 200"),
                        (bad_time, "last_seen must be finite")):  # fmt: skip
        snapshot = PeerTableSnapshot((dataclasses.replace(info, metadata=meta),), None)
        with pytest.raises(InvalidArgument, match=rf"snapshot.peers\[0\] {words}"):
            PeerManager.restore(None, snapshot)
    decoded = codec.decode(codec.encode(manager.snapshot()))  # the wire form restores
    assert isinstance(decoded, PeerTableSnapshot)
    assert PeerManager.restore(None, decoded).snapshot() == manager.snapshot()


# --- deprecated alias ---------------------------------------------------------------------


def test_deprecated_peer_discovery_service_alias() -> None:
    import aura_sync.peer_discovery as legacy

    with pytest.warns(DeprecationWarning, match=r"use aura_sync.infrastructure.peers.PeerManager"):
        alias = legacy.PeerDiscoveryService
    assert alias is PeerManager
    with pytest.warns(DeprecationWarning, match=r"PeerDiscoveryService is deprecated"):
        from aura_sync.peer_discovery import PeerDiscoveryService  # noqa: F401
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(AttributeError, match=r"no attribute 'Nope'"):
            legacy.Nope  # noqa: B018


# --- messages -----------------------------------------------------------------------------


def test_peer_message_tags_are_in_range() -> None:
    classes = [getattr(msgs, name) for name in msgs.__all__]
    classes += [PeerMetadata, PeerInfo, PeerManagerStatistics, PeerTableSnapshot]
    assert all(0x80 <= cls.TAG <= 0x9F for cls in classes)
    assert len({cls.TAG for cls in classes}) == len(classes)


def test_core_errors_travel_as_error_replies() -> None:
    manager = make()
    manager.add_peer(P1)
    try:
        manager.set_peer_status(P1, S.DEGRADED)
    except InvalidTransition as exc:
        reply = ErrorReply.from_exception(exc)
    decoded = codec.decode(codec.encode(reply))
    assert isinstance(decoded, ErrorReply)
    err = decoded.to_exception()
    assert isinstance(err, InvalidTransition)
    assert "DISCOVERED -> DEGRADED" in str(err)
    assert isinstance(codec.decode(codec.encode(Ack())), Ack)


def test_transition_table_is_the_documented_one() -> None:
    # The other status-machine tests take their expectations from ALLOWED_TRANSITIONS
    # itself, so a wrong entry there could not fail them: pin the documented table.
    expected = {
        S.DISCOVERED: {S.CONNECTING, S.CONNECTED, S.FAILED, S.REMOVED},
        S.CONNECTING: {S.CONNECTED, S.DISCONNECTED, S.FAILED, S.REMOVED},
        S.CONNECTED: {S.DEGRADED, S.DISCONNECTED, S.FAILED, S.REMOVED},
        S.DEGRADED: {S.CONNECTED, S.DISCONNECTED, S.FAILED, S.REMOVED},
        S.DISCONNECTED: {S.CONNECTING, S.CONNECTED, S.REMOVED},
        S.FAILED: {S.CONNECTING, S.CONNECTED, S.REMOVED},
        S.REMOVED: set(),
    }
    assert {status: set(targets) for status, targets in ALLOWED_TRANSITIONS.items()} == expected


# --- the Rust names and the address book --------------------------------------------------


def test_latency_and_success_rate_follow_the_sessions() -> None:
    manager = make()
    ready(manager, P1)
    meta = manager.get_peer(P1).metadata
    assert (meta.latency_ewma, meta.success_rate) == (None, 0.5)  # no history
    manager.start_sync_session(P1)
    manager.end_sync_session(P1, True, 0.5)
    meta = manager.get_peer(P1).metadata
    assert (meta.latency_ewma, meta.success_rate) == (0.5, 1.0)
    manager.start_sync_session(P1)
    manager.end_sync_session(P1, False, 9.0)  # a failure feeds the rate, not the latency
    meta = manager.get_peer(P1).metadata
    assert (meta.latency_ewma, meta.success_rate) == (0.5, 0.5)


def test_a_verified_address_wins_over_hearsay() -> None:
    manager = make()
    assert manager.learn_peer_address(P1, "heard:1", verified=False)  # tracks the peer
    assert manager.get_peer(P1).status is S.DISCOVERED
    assert not manager.get_peer(P1).address_verified
    assert manager.learn_peer_address(P1, "said:1", verified=True)
    assert not manager.learn_peer_address(P1, "said:1", verified=True)  # nothing new
    assert not manager.learn_peer_address(P1, "heard:2", verified=False)
    manager.add_peer(P1, "heard:3")  # hearsay through add_peer and discovery too
    manager.track_discovered([(P1, "heard:4")])
    info = manager.get_peer(P1)
    assert (info.address, info.address_verified) == ("said:1", True)
    assert manager.learn_peer_address(P1, "said:2", verified=True)  # the peer moved
    manager.add_peer(P2, "heard:5")
    assert [p.address_verified for p in manager.peers()] == [True, False]
    manager.set_peer_status(P1, S.REMOVED)  # a tombstone learns nothing
    assert not manager.learn_peer_address(P1, "said:3", verified=True)
    assert manager.get_peer(P1).address == "said:2"
    with pytest.raises(WrongType, match="address must be a str"):
        manager.learn_peer_address(P2, None, verified=True)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match=r"address must be 1\.\.1024 characters"):
        manager.learn_peer_address(P2, "", verified=True)
    with pytest.raises(WrongType, match="verified must be a bool"):
        manager.learn_peer_address(P2, "x:1", verified=1)  # type: ignore[arg-type]
    full = make(max_tracked_peers=1)
    full.add_peer(P1)
    with pytest.raises(PeerTableFull):
        full.learn_peer_address(P2, "x:1", verified=True)
