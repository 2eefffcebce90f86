"""Peer scoring from behaviour: trust bounds, growing bans, ban expiry, DEGRADED, and
peer-table admission of authorized newcomers (``PeerManager`` on a ``ManualClock``)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from aura_sync.effects import ManualClock
from aura_sync.errors import CapabilityError, ConfigError, PeerTableFull, PeerUnavailable
from aura_sync.ids import DeviceId
from aura_sync.infrastructure.capabilities import (
    generate_authority_keypair,
    issue_capability_token,
)
from aura_sync.infrastructure.peer_scoring import Offence, PeerBan, ScoringConfig, ban_period
from aura_sync.infrastructure.peers import PeerDiscoveryConfig, PeerManager, PeerStatus

PEERS = [DeviceId.from_int(i) for i in range(1, 5)]
AUTHORITY = generate_authority_keypair()


def _ban_of(manager: PeerManager, peer: DeviceId) -> PeerBan | None:
    return next((b for b in manager.bans() if b.peer_id == peer), None)


def _connected(manager: PeerManager, peer: DeviceId) -> None:
    manager.add_peer(peer, f"10.0.0.{PEERS.index(peer) + 1}:7400")
    manager.set_peer_status(peer, PeerStatus.CONNECTED)
    manager.update_peer_metadata(peer, verified=True, has_sync_capability=True)


class ScoringMachine(RuleBasedStateMachine):
    """Any mix of offences, sessions and time keeps trust in 0..100 and bans consistent."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock()
        self.rules = ScoringConfig(ban_base=10.0, ban_growth=2.0, ban_max=100.0)
        config = PeerDiscoveryConfig(scoring=self.rules, capability_filtering=False)
        self.manager = PeerManager(config, clock=self.clock)
        self.periods: dict[DeviceId, list[float]] = {p: [] for p in PEERS}
        for peer in PEERS[:3]:  # the last one stays outside the table
            _connected(self.manager, peer)

    @rule(peer=st.sampled_from(PEERS), offence=st.sampled_from(Offence))
    def offend(self, peer: DeviceId, offence: Offence) -> None:
        banned_before = _ban_of(self.manager, peer)
        ban = self.manager.report_offence(peer, offence, "10.9.9.9:1")
        if banned_before is not None:
            assert ban is None, "an offence during a ban bans nothing new"
        if ban is not None:
            assert ban.trust < self.rules.ban_threshold
            assert _ban_of(self.manager, peer) == ban
            period = ban_period(ban.bans, self.rules)
            assert ban.until - self.clock.now() == pytest.approx(period)
            self.periods[peer].append(period)
            if peer in self.manager:
                meta = self.manager.get_peer(peer).metadata
                assert meta.backoff_until is not None and meta.backoff_until >= ban.until
                assert not self.manager.is_peer_available(peer)

    @rule(peer=st.sampled_from(PEERS[:3]), success=st.booleans())
    def session(self, peer: DeviceId, success: bool) -> None:
        if not self.manager.is_peer_available(peer):
            return
        before = self.manager.get_peer(peer).metadata.trust_level
        self.manager.start_sync_session(peer)
        self.manager.end_sync_session(peer, success, 0.1)
        after = self.manager.get_peer(peer).metadata.trust_level
        assert after == (min(100, before + self.rules.success_reward) if success else before)

    @rule(seconds=st.floats(0.0, 150.0))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @invariant()
    def trust_in_range(self) -> None:
        for info in self.manager.peers():
            assert 0 <= info.metadata.trust_level <= 100

    @invariant()
    def bans_grow_until_the_cap(self) -> None:
        for periods in self.periods.values():
            assert periods == sorted(periods)  # offence_memory (1 day) never passes here
            assert all(p <= self.rules.ban_max for p in periods)

    @invariant()
    def bans_in_force_are_in_the_future(self) -> None:
        for ban in self.manager.bans():
            assert ban.until > self.clock.now()


TestScoringMachine = ScoringMachine.TestCase
TestScoringMachine.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)


@given(
    base=st.floats(1.0, 1000.0),
    growth=st.floats(1.0, 10.0),
    cap=st.floats(1000.0, 1e6),
    k=st.integers(1, 10_000),
)
def test_ban_period_never_shrinks_with_offences_and_stays_capped(
    base: float, growth: float, cap: float, k: int
) -> None:
    rules = ScoringConfig(ban_base=base, ban_growth=growth, ban_max=cap)
    assert base <= ban_period(k, rules) <= ban_period(k + 1, rules) <= cap


@given(offences=st.lists(st.sampled_from(Offence), min_size=1, max_size=30))
def test_a_ban_expires_on_the_clock_and_restores_probation_trust(
    offences: list[Offence],
) -> None:
    clock = ManualClock()
    manager = PeerManager(PeerDiscoveryConfig(capability_filtering=False), clock=clock)
    peer = PEERS[0]
    _connected(manager, peer)
    bans = [b for o in offences if (b := manager.report_offence(peer, o)) is not None]
    if not bans:
        assert _ban_of(manager, peer) is None
        return
    ban = bans[0]
    assert len(bans) == 1  # no time passed: one ban, the rest fall inside it
    clock.set(ban.until - 0.001)
    assert _ban_of(manager, peer) == ban
    assert manager.select_sync_peers(1) == []
    clock.set(ban.until)
    assert _ban_of(manager, peer) is None and manager.bans() == ()
    assert manager.get_peer(peer).metadata.trust_level == manager.config.scoring.probation_trust
    assert manager.select_sync_peers(1) == [peer]


def test_repeat_offenders_are_banned_longer_each_time() -> None:
    clock = ManualClock()
    manager = PeerManager(PeerDiscoveryConfig(capability_filtering=False), clock=clock)
    peer = PEERS[0]
    periods = []
    for _ in range(4):
        ban = None
        while ban is None:
            ban = manager.report_offence(peer, Offence.REFUSED_OPS)
        periods.append(ban.until - clock.now())
        clock.set(ban.until)
    assert periods == [60.0, 120.0, 240.0, 480.0]
    clock.advance(manager.config.scoring.offence_memory)  # forgiven after a quiet day
    while (ban := manager.report_offence(peer, Offence.REFUSED_OPS)) is None:
        pass
    assert ban.until - clock.now() == 60.0 and ban.bans == 1


def test_degraded_follows_the_success_rate_and_is_tried_again() -> None:
    clock = ManualClock()
    manager = PeerManager(PeerDiscoveryConfig(capability_filtering=False), clock=clock)
    peer = PEERS[0]
    _connected(manager, peer)
    outcomes = [True, False, False, False]  # 1 of 4: under 0.5 at the 4th session
    for success in outcomes:
        clock.advance(400)  # past any failure backoff
        assert manager.get_peer(peer).status is PeerStatus.CONNECTED
        manager.start_sync_session(peer)
        manager.end_sync_session(peer, success, 0.1)
    assert manager.get_peer(peer).status is PeerStatus.DEGRADED
    clock.advance(manager.config.scoring.degraded_for)
    assert manager.get_peer(peer).status is PeerStatus.CONNECTED


def test_scoring_config_names_the_bad_key() -> None:
    with pytest.raises(ConfigError, match="ban_growth"):
        ScoringConfig(ban_growth=0.5)
    with pytest.raises(ConfigError, match="capability_penalty"):
        ScoringConfig(capability_penalty=101)
    with pytest.raises(ConfigError, match="ban_max"):
        ScoringConfig(ban_base=100.0, ban_max=10.0)


# --- peer-table admission ------------------------------------------------------------------


def _token(peer: DeviceId) -> bytes:
    return issue_capability_token(AUTHORITY.private_key, subject=peer)


def _admission_manager(size: int, clock: ManualClock) -> PeerManager:
    config = PeerDiscoveryConfig(max_tracked_peers=size, root_public_key=AUTHORITY.public_key)
    return PeerManager(config, clock=clock)


def test_an_invalid_token_takes_no_slot_and_an_authorized_newcomer_evicts_a_sybil() -> None:
    clock = ManualClock()
    manager = _admission_manager(3, clock)
    sybils = [DeviceId.from_int(100 + i) for i in range(3)]
    for sybil in sybils:  # a full table of live peers without a token
        manager.add_peer(sybil, "10.0.0.1:1")
        manager.set_peer_status(sybil, PeerStatus.CONNECTED)
    with pytest.raises(PeerTableFull):
        manager.add_peer(PEERS[0])  # unauthorized newcomers still find no room
    stranger = DeviceId.from_int(200)
    with pytest.raises(CapabilityError):
        manager.admit_peer(stranger, "10.0.0.2:1", b"garbage")
    with pytest.raises(CapabilityError):
        manager.admit_peer(stranger, "10.0.0.2:1", _token(PEERS[1]))  # someone else's token
    assert stranger not in manager and len(manager) == 3
    member = PEERS[0]
    rights = manager.admit_peer(member, "10.0.0.3:7400", _token(member))
    assert "sync:request_digest" in rights
    info = manager.get_peer(member)
    assert info.status is PeerStatus.CONNECTED and info.address_verified
    assert info.metadata.verified and info.metadata.has_sync_capability
    assert len(manager) == 3 and sum(s in manager for s in sybils) == 2
    assert manager.select_sync_peers(3) == [member]


def test_an_authorized_newcomer_evicts_a_distrusted_peer_but_not_a_trusted_one() -> None:
    clock = ManualClock()
    manager = _admission_manager(2, clock)
    good, bad = PEERS[0], PEERS[1]
    for peer in (good, bad):
        manager.admit_peer(peer, None, _token(peer))
    manager.report_offence(bad, Offence.INVALID_REQUEST)  # 50 -> 45: under min trust
    newcomer = PEERS[2]
    manager.admit_peer(newcomer, None, _token(newcomer))
    assert good in manager and newcomer in manager and bad not in manager
    with pytest.raises(PeerTableFull):
        manager.admit_peer(PEERS[3], None, _token(PEERS[3]))  # both trusted: no room


def test_a_banned_identity_is_refused_admission_until_its_ban_ends() -> None:
    clock = ManualClock()
    manager = _admission_manager(4, clock)
    peer = PEERS[0]
    ban = None
    while ban is None:
        ban = manager.report_offence(peer, Offence.CAPABILITY, "10.0.0.7:5555")
    assert peer not in manager  # an identity outside the table can be banned too
    assert ban.address == "10.0.0.7:5555"
    with pytest.raises(PeerUnavailable, match="banned"):
        manager.admit_peer(peer, None, _token(peer))
    clock.set(ban.until)
    manager.admit_peer(peer, None, _token(peer))
    assert manager.get_peer(peer).metadata.trust_level == manager.config.scoring.probation_trust
