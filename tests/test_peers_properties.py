"""Property tests for the peer manager: selection against a brute-force reference,
score bounds, the status machine under random walks, backoff shape, the address book
against a model, and exact codec round-trips of every peer message and core value."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from aura_sync.effects import ManualClock
from aura_sync.errors import InvalidTransition
from aura_sync.ids import DeviceId
from aura_sync.infrastructure.peer_scoring import Offence, PeerBan
from aura_sync.infrastructure.peers import (
    ALLOWED_TRANSITIONS,
    BACKOFF_CAP,
    PeerDiscoveryConfig,
    PeerInfo,
    PeerManager,
    PeerManagerStatistics,
    PeerMetadata,
    PeerStatus,
    PeerTableSnapshot,
    failure_backoff,
)
from aura_sync.messages import Message, codec, registered_messages
from aura_sync.messages import peers as msgs

NOW = 1000.0
FAST = settings(max_examples=60, deadline=None)

device_ids = st.integers(0, 40).map(DeviceId.from_int)  # small range: ties and repeats happen


def _mostly(value: Any, others: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``value`` about three times in four, else something from ``others``."""
    return st.one_of(st.just(value), st.just(value), st.just(value), others)


# Biased towards selectable peers so that most examples have several candidates.
metadata = st.builds(
    PeerMetadata,
    status=_mostly(PeerStatus.CONNECTED, st.sampled_from(PeerStatus)),
    discovered_at=st.just(0.0),
    last_seen=st.just(0.0),
    last_status_change=st.just(0.0),
    successful_syncs=st.integers(0, 20),
    failed_syncs=st.integers(0, 20),
    trust_level=st.one_of(st.sampled_from([70, 80, 90, 100]), st.sampled_from([0, 49, 50, 51])),
    has_sync_capability=_mostly(True, st.just(False)),
    verified=_mostly(True, st.just(False)),
    active_sessions=st.one_of(st.integers(0, 1), st.integers(0, 6)),
    # No backoff, or one ending in the past, exactly now (over), or in the future.
    backoff_until=_mostly(None, st.sampled_from([NOW - 1.0, NOW, NOW + 1.0])),
)

configs = st.builds(
    PeerDiscoveryConfig,
    max_concurrent_sessions=st.integers(1, 5),
    min_trust_level=st.sampled_from([0, 50, 70]),
    capability_filtering=st.booleans(),
)

tables = st.lists(
    st.tuples(device_ids, metadata), min_size=3, max_size=25, unique_by=lambda t: t[0]
)


def _manager(
    config: PeerDiscoveryConfig, table: list[tuple[DeviceId, PeerMetadata]]
) -> PeerManager:
    snapshot = PeerTableSnapshot(tuple(PeerInfo(p, None, m) for p, m in table), None)
    return PeerManager.restore(config, snapshot, clock=ManualClock(NOW))


def _eligible(config: PeerDiscoveryConfig, meta: PeerMetadata) -> bool:
    """The selection rules, restated independently of the implementation."""
    return (
        meta.status is PeerStatus.CONNECTED
        and meta.active_sessions < config.max_concurrent_sessions
        and (meta.backoff_until is None or meta.backoff_until <= NOW)
        and meta.trust_level >= config.min_trust_level
        and meta.verified
        and (meta.has_sync_capability or not config.capability_filtering)
    )


def _score(config: PeerDiscoveryConfig, meta: PeerMetadata) -> float:
    total = meta.successful_syncs + meta.failed_syncs
    rate = meta.successful_syncs / total if total else 0.5
    load = min(meta.active_sessions / config.max_concurrent_sessions, 1.0)
    return 0.5 * meta.trust_level / 100 + 0.3 * rate + 0.2 * (1 - load)


@FAST
@given(config=configs, table=tables, count=st.integers(0, 30))
def test_selection_matches_brute_force(
    config: PeerDiscoveryConfig, table: list[tuple[DeviceId, PeerMetadata]], count: int
) -> None:
    manager = _manager(config, table)
    selected = manager.select_sync_peers(count)
    by_id = dict(table)
    eligible = {p for p, m in table if _eligible(config, m)}
    assert len(selected) == min(count, len(eligible))
    assert set(selected) <= eligible
    keys = [(-_score(config, by_id[p]), p) for p in selected]
    assert keys == sorted(keys)  # score descending, then DeviceId ascending
    reference = sorted(eligible, key=lambda p: (-_score(config, by_id[p]), p))[:count]
    assert selected == reference
    assert manager.select_sync_peers(count) == selected  # deterministic
    for p in selected:
        assert manager.is_peer_available(p)


@FAST
@given(meta=metadata, max_sessions=st.integers(1, 20))
def test_score_is_in_unit_interval_and_matches_formula(
    meta: PeerMetadata, max_sessions: int
) -> None:
    peer = DeviceId.from_int(1)
    config = PeerDiscoveryConfig(max_concurrent_sessions=max_sessions)
    manager = PeerManager.restore(config, PeerTableSnapshot((PeerInfo(peer, None, meta),), None))
    score = manager.peer_score(peer)
    assert 0.0 <= score <= 1.0
    assert score == _score(PeerDiscoveryConfig(max_concurrent_sessions=max_sessions), meta)


@FAST
@given(walk=st.lists(st.sampled_from(PeerStatus), max_size=20))
def test_status_random_walk_follows_the_table(walk: list[PeerStatus]) -> None:
    manager = PeerManager(PeerDiscoveryConfig(), clock=ManualClock())
    peer = DeviceId.from_int(1)
    manager.add_peer(peer)
    current = PeerStatus.DISCOVERED
    for target in walk:
        allowed = target is current or target in ALLOWED_TRANSITIONS[current]
        try:
            manager.set_peer_status(peer, target)
        except InvalidTransition:
            assert not allowed
        else:
            assert allowed
            current = target
        assert manager.get_peer(peer).status is current


@given(st.integers(1, 200))
@settings(max_examples=60, deadline=None)
def test_backoff_is_monotone_and_capped(n: int) -> None:
    assert failure_backoff(n) == min(5.0 + (n - 1) ** 2, BACKOFF_CAP)
    assert failure_backoff(n) <= failure_backoff(n + 1) <= BACKOFF_CAP


# --- the address book ----------------------------------------------------------------------

_learned = st.lists(
    st.tuples(st.integers(0, 3).map(DeviceId.from_int), st.sampled_from(["a:1", "b:2", "c:3"]),
              st.booleans()),
    max_size=30,
)  # fmt: skip


@FAST
@given(steps=_learned, hearsay=st.lists(st.tuples(st.integers(0, 3), st.sampled_from(["x:9"]))))
def test_a_verified_address_always_wins_over_hearsay(
    steps: list[tuple[DeviceId, str, bool]], hearsay: list[tuple[int, str]]
) -> None:
    """learn_peer_address against a plain model: hearsay never replaces what a peer said."""
    manager = PeerManager(PeerDiscoveryConfig(), clock=ManualClock())
    model: dict[DeviceId, tuple[str, bool]] = {}
    for peer, address, verified in steps:
        known = model.get(peer)
        expected = known != (address, verified) and not (known and known[1] and not verified)
        assert manager.learn_peer_address(peer, address, verified=verified) is expected
        if expected:
            model[peer] = (address, verified)
        for n, rumour in hearsay:  # discovery and add_peer are hearsay too
            manager.track_discovered([(DeviceId.from_int(n), rumour)])
            if model.get(DeviceId.from_int(n), ("", False))[1] is False:
                model[DeviceId.from_int(n)] = (rumour, False)
    for peer, (address, verified) in model.items():
        info = manager.get_peer(peer)
        assert (info.address, info.address_verified) == (address, verified)


# --- codec round-trips --------------------------------------------------------------------

PEER_MESSAGES = sorted(
    (cls for tag, cls in registered_messages().items() if 0x80 <= tag <= 0x9F),
    key=lambda c: c.TAG,
)

_addresses = st.one_of(st.none(), st.text(min_size=1, max_size=12))
_times = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
_counts = st.one_of(st.integers(0, 50), st.just(2**64 - 1))


def _strategy(tp: Any) -> st.SearchStrategy[Any]:
    simple: dict[Any, st.SearchStrategy[Any]] = {
        DeviceId: device_ids,
        str | None: _addresses,
        str: st.text(min_size=1, max_size=12),
        bool: st.booleans(),
        bool | None: st.one_of(st.none(), st.booleans()),
        int: _counts,
        int | None: st.one_of(st.none(), _counts),
        float: _times,
        float | None: st.one_of(st.none(), _times),
        bytes: st.binary(max_size=40),
        PeerStatus: st.sampled_from(PeerStatus),
        Offence: st.sampled_from(Offence),
        tuple[str, ...]: st.lists(st.text(max_size=8), max_size=3).map(tuple),
        tuple[tuple[DeviceId, str | None], ...]: st.lists(
            st.tuples(device_ids, _addresses), max_size=4
        ).map(tuple),
    }
    if tp in simple:
        return simple[tp]
    if tp == PeerBan | None:
        return st.one_of(st.none(), _messages_of(PeerBan))
    if tp == tuple[PeerBan, ...]:
        return st.lists(_messages_of(PeerBan), max_size=3).map(tuple)
    if tp == tuple[PeerInfo, ...]:
        return st.lists(_messages_of(PeerInfo), max_size=3, unique_by=lambda i: i.peer_id).map(
            tuple
        )
    if isinstance(tp, type) and issubclass(tp, Message):
        return _messages_of(tp)
    raise AssertionError(f"no strategy for {tp!r}")


def _messages_of(cls: type[Message]) -> st.SearchStrategy[Message]:
    hints = typing.get_type_hints(cls)
    fields = {f.name: _strategy(hints[f.name]) for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return st.builds(cls, **fields)


peer_messages = st.one_of([_messages_of(cls) for cls in PEER_MESSAGES])


def test_every_peer_message_and_value_is_covered() -> None:
    values = {PeerMetadata, PeerInfo, PeerManagerStatistics, PeerTableSnapshot, PeerBan}
    assert {c.__name__ for c in PEER_MESSAGES} == set(msgs.__all__) | {c.__name__ for c in values}


@settings(max_examples=150, deadline=None)
@given(msg=peer_messages)
def test_peer_messages_round_trip_exactly(msg: Message) -> None:
    data = codec.encode(msg)
    decoded = codec.decode(data)
    assert type(decoded) is type(msg)
    assert decoded == msg
    assert codec.encode(decoded) == data


@FAST
@given(config=configs, table=tables)
def test_table_snapshot_round_trips_through_the_codec_and_restores(
    config: PeerDiscoveryConfig, table: list[tuple[DeviceId, PeerMetadata]]
) -> None:
    manager = _manager(config, table)
    decoded = codec.decode(codec.encode(manager.snapshot()))
    assert decoded == manager.snapshot() and isinstance(decoded, PeerTableSnapshot)
    again = PeerManager.restore(config, decoded, clock=ManualClock(NOW))
    assert again.snapshot() == manager.snapshot()
    assert again.select_sync_peers(5) == manager.select_sync_peers(5)
