"""Peer management: a bounded peer table (statuses, scores, sessions, backoff, addresses).

:class:`PeerManager` picks the peers to sync with and is the node's one address book
(a verified address wins over hearsay).  Score = ``0.5*trust/100 + 0.3*success_rate +
0.2*(1 - min(active/max_concurrent, 1))``; the n-th failure in a row backs off
``min(5 + (n-1)**2, 300)`` s.  Trust, bans and DEGRADED follow behaviour (``peer_scoring``).
Public methods check their arguments and change nothing when they raise.  Layer: cores.
"""

from __future__ import annotations

import dataclasses
import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, Protocol, runtime_checkable

from aura_sync._checks import check_bool, check_clock_time, check_int, check_peer
from aura_sync.effects import Clock, SystemClock, check_seconds
from aura_sync.errors import (
    CapabilityError,
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
from aura_sync.infrastructure.capabilities import (
    SYNC_REQUEST_DIGEST,
    check_public_key,
    verify_capability_token,
)
from aura_sync.infrastructure.peer_scoring import BanBook, Offence, PeerBan, ScoringConfig
from aura_sync.infrastructure.peer_values import (
    ALLOWED_TRANSITIONS,
    DEFAULT_TRUST_LEVEL,
    LIVE_STATUSES,
    MAX_ADDRESS_LENGTH,
    METADATA_FIELDS,
    PeerInfo,
    PeerManagerStatistics,
    PeerMetadata,
    PeerStatus,
    PeerTableSnapshot,
    _check_address,
    _check_info,
)

__all__ = [
    "ALLOWED_TRANSITIONS", "BACKOFF_BASE", "BACKOFF_CAP", "BACKOFF_STEP", "DEFAULT_TRUST_LEVEL",
    "LATENCY_EWMA_ALPHA", "LIVE_STATUSES", "MAX_ADDRESS_LENGTH", "METADATA_FIELDS",
    "PeerDiscovery", "PeerDiscoveryConfig", "PeerInfo", "PeerManager", "PeerManagerStatistics",
    "PeerMetadata", "PeerStatus", "PeerTableSnapshot", "ScoringConfig", "StaticDiscovery",
    "failure_backoff",
]  # fmt: skip

LATENCY_EWMA_ALPHA: Final = 0.2  # weight of a new latency sample
BACKOFF_BASE: Final = 5.0  # seconds of backoff after the first consecutive failure
BACKOFF_STEP: Final = 1.0  # seconds: the n-th failure adds BACKOFF_STEP * (n-1)**2
BACKOFF_CAP: Final = 300.0  # longest backoff, seconds


@dataclass(frozen=True, slots=True)
class PeerDiscoveryConfig:
    """How the peer manager discovers, bounds and selects peers (times in seconds;
    ``root_public_key``: the Biscuit authority's Ed25519 key, None: no token verifies;
    ``scoring``: trust, ban and DEGRADED rules)."""

    max_concurrent_sessions: int = 10
    discovery_timeout: float = 30.0
    refresh_interval: float = 300.0
    min_trust_level: int = 50
    max_tracked_peers: int = 100
    capability_filtering: bool = True
    root_public_key: bytes | None = None
    scoring: ScoringConfig = field(default_factory=ScoringConfig)

    def __post_init__(self) -> None:
        try:
            check_int(self.max_concurrent_sessions, "max_concurrent_sessions", minimum=1)
            timeout = check_seconds(self.discovery_timeout, "discovery_timeout", allow_zero=False)
            interval = check_seconds(self.refresh_interval, "refresh_interval", allow_zero=False)
            check_int(self.min_trust_level, "min_trust_level", minimum=0, maximum=100)
            check_int(self.max_tracked_peers, "max_tracked_peers", minimum=1)
            check_bool(self.capability_filtering, "capability_filtering")
            if self.root_public_key is not None:
                check_public_key(self.root_public_key, "root_public_key")
            if type(self.scoring) is not ScoringConfig:
                raise WrongType(f"scoring must be a ScoringConfig, got {self.scoring!r}")
        except InvalidArgument as exc:
            raise ConfigError(str(exc)) from None
        object.__setattr__(self, "discovery_timeout", timeout)
        object.__setattr__(self, "refresh_interval", interval)


_S = PeerStatus
_EVICTION_RANK: Final = {_S.REMOVED: 0, _S.FAILED: 1, _S.DISCONNECTED: 2}
_UNAUTHORIZED_RANK: Final = 3  # a live peer without the capability (for an authorized newcomer)
_DISTRUSTED_RANK: Final = 4  # a live peer under min_trust_level (for an authorized newcomer)


def _score(metadata: PeerMetadata, max_concurrent_sessions: int) -> float:
    load = min(metadata.active_sessions / max_concurrent_sessions, 1.0)
    return 0.5 * metadata.trust_level / 100 + 0.3 * metadata.success_rate + 0.2 * (1.0 - load)


def failure_backoff(consecutive_failures: int) -> float:
    """Seconds of backoff after the n-th failure in a row: ``min(5 + (n-1)**2, 300)``; 0 for 0."""
    n = check_int(consecutive_failures, "consecutive_failures", minimum=0)
    return min(BACKOFF_BASE + BACKOFF_STEP * (n - 1) ** 2, BACKOFF_CAP) if n else 0.0


@runtime_checkable
class PeerDiscovery(Protocol):
    """The discovery effect: where new peers come from (bootstrap list, mDNS, peer exchange)."""

    def discover(self, timeout: float) -> Iterable[tuple[DeviceId, str | None]]:
        """The peers found within ``timeout`` seconds, as ``(peer_id, address)`` pairs."""
        ...


class StaticDiscovery:
    """A :class:`PeerDiscovery` that always returns the same ``(peer_id, address)`` pairs."""

    def __init__(self, candidates: Iterable[tuple[DeviceId, str | None]] = ()) -> None:
        self._candidates = _check_candidates(candidates)

    def discover(self, timeout: float) -> Iterable[tuple[DeviceId, str | None]]:
        """The configured candidates (at once: ``timeout`` is not needed)."""
        return self._candidates


def _check_candidates(candidates: object) -> tuple[tuple[DeviceId, str | None], ...]:
    if isinstance(candidates, str | bytes) or not isinstance(candidates, Iterable):
        kind = type(candidates).__name__
        raise WrongType(f"candidates must be an iterable of (DeviceId, address) pairs, got {kind}")
    checked: list[tuple[DeviceId, str | None]] = []
    for i, item in enumerate(candidates):
        if type(item) is not tuple or len(item) != 2:
            raise WrongType(f"candidates[{i}] must be a (DeviceId, address) tuple, got {item!r}")
        peer_id = check_peer(item[0], f"candidates[{i}] peer_id")
        checked.append((peer_id, _check_address(item[1], f"candidates[{i}] address")))
    return tuple(checked)


class PeerManager:
    """Tracks peers, their addresses and sessions; picks the best ones for sync.

    Unknown peers raise :class:`~aura_sync.errors.UnknownPeer`.  Not thread-safe.
    """

    def __init__(
        self, config: PeerDiscoveryConfig | None = None, *, clock: Clock | None = None
    ) -> None:
        config = PeerDiscoveryConfig() if config is None else config
        if type(config) is not PeerDiscoveryConfig:
            raise WrongType(f"config must be a PeerDiscoveryConfig, got {type(config).__name__}")
        clock = SystemClock() if clock is None else clock
        if not isinstance(clock, Clock):
            raise WrongType(f"clock must be a Clock, got {type(clock).__name__} {clock!r}")
        self._config = config
        self._clock = clock
        self._peers: dict[DeviceId, PeerInfo] = {}
        self._last_discovery: float | None = None
        self._book = BanBook(config.scoring, clock, DEFAULT_TRUST_LEVEL)
        self._degraded: dict[DeviceId, float] = {}  # DEGRADED by the success rate, until

    @property
    def config(self) -> PeerDiscoveryConfig:
        """The configuration this manager was built with."""
        return self._config

    def __len__(self) -> int:
        return len(self._peers)

    def __contains__(self, peer_id: object) -> bool:
        return peer_id in self._peers

    def get_peer(self, peer_id: DeviceId) -> PeerInfo:
        """An immutable snapshot of one peer."""
        self._expire()
        return self._get(peer_id)

    def peers(self) -> tuple[PeerInfo, ...]:
        """Snapshots of every tracked peer, sorted by ``DeviceId``."""
        self._expire()
        return tuple(self._peers[k] for k in sorted(self._peers))

    def report_offence(
        self, peer_id: DeviceId, offence: Offence, address: str | None = None
    ) -> PeerBan | None:
        """Lower the trust of ``peer_id`` (tracked or not) for ``offence``; the ban it
        earned, if this offence banned it (``address``: the host it connected from).
        A banned tracked peer is in failure backoff until the ban ends (not dialed)."""
        check_peer(peer_id)
        if type(offence) is not Offence:
            raise WrongType(f"offence must be an Offence, got {type(offence).__name__}")
        _check_address(address)
        self._expire()
        info = self._peers.get(peer_id)
        trust = self._book.untracked_trust(peer_id) if info is None else info.metadata.trust_level
        after, ban = self._book.offend(peer_id, trust, offence, address)
        if info is not None:
            backoff = info.metadata.backoff_until
            if ban is not None:
                backoff = ban.until if backoff is None else max(backoff, ban.until)
            self._replace(info, trust_level=after, backoff_until=backoff)
        return ban

    def bans(self) -> tuple[PeerBan, ...]:
        """The bans in force now, by id."""
        self._expire()
        return self._book.bans()

    def admit_peer(self, peer_id: DeviceId, address: str | None, token: bytes) -> tuple[str, ...]:
        """A peer on a live TLS-verified connection presents ``token``: verify it (as
        :meth:`update_peer_capabilities`), then track the peer as CONNECTED and verified,
        at ``address`` (its own Hello address, verified).  A newcomer that finds the table
        full evicts, besides dead peers, a live one without the capability or under
        ``min_trust_level`` (no sessions; ``PeerTableFull`` if none).  A banned peer is
        refused (``PeerUnavailable``); a bad token gives it no slot (``CapabilityError``)."""
        check_peer(peer_id)
        _check_address(address)
        if type(token) is not bytes:
            raise WrongType(f"token must be bytes, got {type(token).__name__}")
        self._expire()
        now = self._clock.now()
        if (ban := self._book.ban_of(peer_id)) is not None:
            raise PeerUnavailable(f"peer {peer_id} is banned for another {ban.until - now:.1f} s")
        if peer_id in self._peers:
            rights = self.update_peer_capabilities(peer_id, token)
        else:
            rights = self._verify_token(peer_id, token)
            self._make_room(peer_id, now, authorized=True)
            self._insert(peer_id, None, now)
        if address is not None:
            self.learn_peer_address(peer_id, address, verified=True)
        info = self._peers[peer_id]
        if PeerStatus.CONNECTED in ALLOWED_TRANSITIONS[info.status]:
            self._replace(info, status=PeerStatus.CONNECTED, last_status_change=now, last_seen=now)
        self._replace(self._peers[peer_id], verified=True, has_sync_capability=True,
                      capabilities=rights)  # fmt: skip
        return rights

    def add_peer(self, peer_id: DeviceId, address: str | None = None) -> bool:
        """Track ``peer_id`` as DISCOVERED; True if new (``PeerTableFull`` if no room).

        For a known peer, ``address`` (hearsay) replaces an unverified one and
        ``last_seen`` is refreshed (a REMOVED tombstone is left untouched).
        """
        check_peer(peer_id)
        _check_address(address)
        now = self._clock.now()
        if peer_id in self._peers:
            self._refresh_known(peer_id, address, now)
            return False
        self._make_room(peer_id, now)
        self._insert(peer_id, address, now)
        return True

    def learn_peer_address(self, peer_id: DeviceId, address: str, *, verified: bool) -> bool:
        """Record where ``peer_id`` listens (``verified``: the peer said so over a verified
        connection; it wins over hearsay); True if the table changed.  An unknown peer is
        tracked (as :meth:`add_peer`); a REMOVED one is left alone."""
        check_peer(peer_id)
        if _check_address(address) is None:
            raise WrongType("address must be a str, got None")
        check_bool(verified, "verified")
        info = self._peers.get(peer_id)
        if info is None:
            now = self._clock.now()
            self._make_room(peer_id, now)
            self._insert(peer_id, address, now, verified)
            return True
        stale = info.status is PeerStatus.REMOVED or (info.address_verified and not verified)
        if stale or (info.address, info.address_verified) == (address, verified):
            return False
        self._peers[peer_id] = dataclasses.replace(info, address=address, address_verified=verified)
        return True

    def set_peer_status(self, peer_id: DeviceId, status: PeerStatus) -> None:
        """Move ``peer_id`` to ``status`` along :data:`ALLOWED_TRANSITIONS` (else
        ``InvalidTransition``); the same status is a no-op; CONNECTED refreshes ``last_seen``."""
        info = self._get(peer_id)
        if type(status) is not PeerStatus:
            raise WrongType(f"status must be a PeerStatus, got {type(status).__name__} {status!r}")
        current = info.metadata.status
        if status is current:
            return
        if status not in ALLOWED_TRANSITIONS[current]:
            allowed = ", ".join(sorted(s.name for s in ALLOWED_TRANSITIONS[current])) or "none"
            raise InvalidTransition(
                f"peer {peer_id}: transition {current.name} -> {status.name} is not allowed "
                f"(from {current.name}: {allowed})"
            )
        now = self._clock.now()
        seen = {"last_seen": now} if status is PeerStatus.CONNECTED else {}
        self._replace(info, status=status, last_status_change=now, **seen)

    def update_peer_metadata(self, peer_id: DeviceId, **fields: object) -> None:
        """Set some of :data:`METADATA_FIELDS`, all checked first: ``trust_level`` (0-100),
        ``has_sync_capability``, ``verified`` (bools), counters (ints >= 0)."""
        info = self._get(peer_id)
        unknown = sorted(set(fields) - METADATA_FIELDS)
        if unknown:
            raise InvalidArgument(
                f"unknown peer metadata field(s) {', '.join(unknown)}; "
                f"allowed: {', '.join(sorted(METADATA_FIELDS))}"
            )
        for name, value in fields.items():
            if name in ("has_sync_capability", "verified"):
                check_bool(value, name)
            else:
                check_int(value, name, minimum=0, maximum=100 if name == "trust_level" else None)
        if fields:
            self._replace(info, **fields)

    def peer_score(self, peer_id: DeviceId) -> float:
        """The peer's selection score in [0, 1] (see the module docstring)."""
        return _score(self._get(peer_id).metadata, self._config.max_concurrent_sessions)

    def is_peer_available(self, peer_id: DeviceId) -> bool:
        """Whether the peer can take a sync session now (CONNECTED, under the limit, no backoff)."""
        return self._available(self._get(peer_id).metadata, self._clock.now())

    def select_sync_peers(self, count: int) -> list[DeviceId]:
        """At most ``count`` (>= 0) peers to sync with now, best score first, ties by id.

        Qualify: available, trust >= ``min_trust_level``, identity-verified, and
        (with ``capability_filtering``) holding the sync capability.  O(n log count).
        """
        check_int(count, "count", minimum=0)
        self._expire()
        now = self._clock.now()
        max_sessions = self._config.max_concurrent_sessions
        candidates = (
            (-_score(info.metadata, max_sessions), pid)
            for pid, info in self._peers.items()
            if self._eligible(info.metadata, now)
        )
        return [pid for _, pid in heapq.nsmallest(count, candidates)]

    def start_sync_session(self, peer_id: DeviceId) -> int:
        """Count one more session with the peer; its active count.  Raises ``PeerUnavailable``
        (not CONNECTED, or in backoff) or ``SessionLimitReached``."""
        info = self._get(peer_id)
        meta = info.metadata
        now = self._clock.now()
        if meta.status is not PeerStatus.CONNECTED:
            raise PeerUnavailable(f"peer {peer_id} is {meta.status.name}, not CONNECTED")
        if meta.backoff_until is not None and now < meta.backoff_until:
            left = meta.backoff_until - now
            raise PeerUnavailable(f"peer {peer_id} is in failure backoff for another {left:.3f} s")
        limit = self._config.max_concurrent_sessions
        if meta.active_sessions >= limit:
            raise SessionLimitReached(
                f"peer {peer_id} already has {meta.active_sessions} active sync sessions "
                f"(max_concurrent_sessions={limit})"
            )
        self._replace(info, active_sessions=meta.active_sessions + 1)
        return meta.active_sessions + 1

    def end_sync_session(self, peer_id: DeviceId, success: bool, latency: float) -> None:
        """Close a session that took ``latency`` s: a success feeds the latency EWMA and clears
        the backoff, a failure extends it.  ``InvalidArgument`` if none is active."""
        info = self._get(peer_id)
        check_bool(success, "success")
        seconds = check_seconds(latency, "latency")
        meta = info.metadata
        if meta.active_sessions == 0:
            raise InvalidArgument(f"peer {peer_id} has no active sync session to end")
        now = self._clock.now()
        active = meta.active_sessions - 1
        if success:
            old, a = meta.latency_ewma, LATENCY_EWMA_ALPHA
            ewma = seconds if old is None else (1 - a) * old + a * seconds
            trust = min(100, meta.trust_level + self._config.scoring.success_reward)
            ban = self._book.ban_of(peer_id)
            self._replace(
                info, active_sessions=active, successful_syncs=meta.successful_syncs + 1,
                latency_ewma=ewma, consecutive_failures=0, last_seen=now, trust_level=trust,
                backoff_until=None if ban is None else ban.until,
            )  # fmt: skip
        else:
            failures = meta.consecutive_failures + 1
            self._replace(
                info, active_sessions=active, failed_syncs=meta.failed_syncs + 1,
                consecutive_failures=failures, backoff_until=now + failure_backoff(failures),
                last_seen=now,
            )  # fmt: skip
        self._degrade_if_failing(self._peers[peer_id], now)

    def record_failure(self, peer_id: DeviceId) -> float:
        """A failure outside a session (a failed dial) extends the backoff; returns it (s)."""
        info = self._get(peer_id)
        failures = info.metadata.consecutive_failures + 1
        delay = failure_backoff(failures)
        self._replace(info, consecutive_failures=failures, backoff_until=self._clock.now() + delay)
        return delay

    def update_peer_capabilities(self, peer_id: DeviceId, token: bytes) -> tuple[str, ...]:
        """Verify the peer's Biscuit token (signed by ``root_public_key``, granting
        ``sync:request_digest``, bound to no other subject); returns the rights, sorted.
        Fails closed: on any failure the peer loses the capability (``CapabilityError``)."""
        info = self._get(peer_id)
        if type(token) is not bytes:
            raise WrongType(f"token must be bytes, got {type(token).__name__}")
        try:
            rights = self._verify_token(peer_id, token)
        except CapabilityError:
            self._replace(info, has_sync_capability=False, capabilities=())
            raise
        self._replace(info, has_sync_capability=True, capabilities=rights)
        return rights

    def _verify_token(self, peer_id: DeviceId, token: bytes) -> tuple[str, ...]:
        root = self._config.root_public_key
        try:
            if root is None:
                raise CapabilityError("no root_public_key configured: tokens cannot be verified")
            right = SYNC_REQUEST_DIGEST
            return verify_capability_token(token, root, required_right=right, subject=peer_id)
        except CapabilityError as exc:
            raise CapabilityError(f"peer {peer_id}: {exc}") from exc

    def discover_peers(self, discovery: PeerDiscovery) -> list[DeviceId]:
        """Track what ``discovery`` finds; the new peers (``DiscoveryError`` if it fails)."""
        if not callable(getattr(discovery, "discover", None)):
            kind = type(discovery).__name__
            raise WrongType(f"discovery must have a discover(timeout) method, got {kind}")
        try:
            found = list(discovery.discover(self._config.discovery_timeout))
        except Exception as exc:
            raise DiscoveryError(f"peer discovery failed: {type(exc).__name__}: {exc}") from exc
        try:
            candidates = _check_candidates(found)
        except (WrongType, InvalidArgument) as exc:
            raise DiscoveryError(f"peer discovery returned malformed candidates: {exc}") from exc
        return self._track(candidates)

    def track_discovered(self, candidates: Iterable[tuple[DeviceId, str | None]]) -> list[DeviceId]:
        """Apply one discovery round's ``(peer_id, address)`` pairs (as :meth:`add_peer`, but
        a newcomer that finds no room is skipped); returns the new peers.  A full table
        evicts its worst dead peer (REMOVED, FAILED, DISCONNECTED; lowest score)."""
        return self._track(_check_candidates(candidates))

    def needs_refresh(self) -> bool:
        """Whether ``refresh_interval`` seconds passed since the last discovery round (or none)."""
        last = self._last_discovery
        return last is None or self._clock.now() - last >= self._config.refresh_interval

    def statistics(self) -> PeerManagerStatistics:
        """Counts over the current table (O(n))."""
        self._expire()
        now = self._clock.now()
        connected = available = capable = sessions = 0
        for info in self._peers.values():
            meta = info.metadata
            sessions += meta.active_sessions
            if meta.status is PeerStatus.CONNECTED:
                connected += 1
                available += self._available(meta, now)
            capable += meta.has_sync_capability and meta.status is not PeerStatus.REMOVED
        return PeerManagerStatistics(len(self._peers), connected, available, capable, sessions)

    def snapshot(self) -> PeerTableSnapshot:
        """The whole table as an immutable value (for :meth:`restore`)."""
        return PeerTableSnapshot(self.peers(), self._last_discovery, self._book.remembered())

    @classmethod
    def restore(
        cls,
        config: PeerDiscoveryConfig | None,
        snapshot: PeerTableSnapshot,
        *,
        clock: Clock | None = None,
    ) -> PeerManager:
        """A manager holding the table of ``snapshot`` (times in ``clock``'s base).

        A table from disk or the wire: ``InvalidArgument`` for a value out of
        range, a duplicate peer, or more than ``max_tracked_peers`` peers."""
        manager = cls(config, clock=clock)
        if type(snapshot) is not PeerTableSnapshot:
            raise WrongType(f"snapshot must be a PeerTableSnapshot, got {type(snapshot).__name__}")
        if (n := len(snapshot.peers)) > (limit := manager._config.max_tracked_peers):
            raise InvalidArgument(f"snapshot holds {n} peers, over max_tracked_peers={limit}")
        for i, info in enumerate(snapshot.peers):
            _check_info(i, info)
            if info.peer_id in manager._peers:
                raise InvalidArgument(f"snapshot.peers[{i}]: duplicate peer_id {info.peer_id}")
            manager._peers[info.peer_id] = info
        if snapshot.last_discovery is not None:
            manager._last_discovery = check_clock_time(snapshot.last_discovery, "last_discovery")
        manager._book.restore(snapshot.bans)
        return manager

    def _get(self, peer_id: DeviceId) -> PeerInfo:
        check_peer(peer_id)
        info = self._peers.get(peer_id)
        if info is None:
            raise UnknownPeer(f"peer {peer_id} is not tracked")
        return info

    def _replace(self, info: PeerInfo, **changes: object) -> None:
        metadata = dataclasses.replace(info.metadata, **changes)  # type: ignore[arg-type]
        self._peers[info.peer_id] = dataclasses.replace(info, metadata=metadata)

    def _insert(self, peer_id: DeviceId, address: str | None, now: float, ok: bool = False) -> None:
        metadata = PeerMetadata(PeerStatus.DISCOVERED, now, now, now)
        self._peers[peer_id] = PeerInfo(peer_id, address, metadata, ok)

    def _refresh_known(self, peer_id: DeviceId, address: str | None, now: float) -> None:
        info = self._peers[peer_id]
        if info.metadata.status is PeerStatus.REMOVED:
            return
        if address is not None and not info.address_verified:
            info = dataclasses.replace(info, address=address)
        self._replace(info, last_seen=now)

    def _make_room(self, peer_id: DeviceId, now: float, *, authorized: bool = False) -> None:
        """Evict the worst dead peer without sessions if the table is full (else PeerTableFull);
        for an ``authorized`` newcomer, an unauthorized or distrusted live one after them."""
        if len(self._peers) < self._config.max_tracked_peers:
            return
        max_sessions = self._config.max_concurrent_sessions
        victims = [
            (rank, _score(m, max_sessions), m.last_seen, pid)
            for pid, info in self._peers.items()
            if (m := info.metadata).active_sessions == 0
            and (rank := self._eviction_rank(m, authorized)) is not None
        ]
        if not victims:
            raise PeerTableFull(
                f"cannot add peer {peer_id}: {len(self._peers)} peers tracked "
                f"(max_tracked_peers={self._config.max_tracked_peers}) and none can be evicted"
            )
        del self._peers[min(victims)[-1]]

    def _eviction_rank(self, meta: PeerMetadata, authorized: bool) -> int | None:
        if meta.status not in LIVE_STATUSES:
            return _EVICTION_RANK[meta.status]
        if not authorized:
            return None
        if not meta.has_sync_capability:
            return _UNAUTHORIZED_RANK
        return _DISTRUSTED_RANK if meta.trust_level < self._config.min_trust_level else None

    def _degrade_if_failing(self, info: PeerInfo, now: float) -> None:
        """DEGRADED follows the success rate (see :mod:`.peer_scoring`)."""
        meta, rules = info.metadata, self._config.scoring
        syncs = meta.successful_syncs + meta.failed_syncs
        if (
            meta.status is PeerStatus.CONNECTED
            and syncs >= rules.degraded_min_syncs
            and meta.success_rate < rules.degraded_below
        ):
            self._replace(info, status=PeerStatus.DEGRADED, last_status_change=now)
            self._degraded[info.peer_id] = now + rules.degraded_for

    def _expire(self) -> None:
        """Ended bans restore ``probation_trust``; ended DEGRADED periods, CONNECTED."""
        probation = self._config.scoring.probation_trust
        for peer_id in self._book.expire():
            info = self._peers.get(peer_id)
            if info is not None and info.metadata.trust_level < probation:
                self._replace(info, trust_level=probation)
        if not self._degraded:
            return
        now = self._clock.now()
        for peer_id, until in list(self._degraded.items()):
            if until <= now:
                del self._degraded[peer_id]
                info = self._peers.get(peer_id)
                if info is not None and info.status is PeerStatus.DEGRADED:
                    self._replace(info, status=PeerStatus.CONNECTED, last_status_change=now)

    def _available(self, meta: PeerMetadata, now: float) -> bool:
        return (
            meta.status is PeerStatus.CONNECTED
            and meta.active_sessions < self._config.max_concurrent_sessions
            and (meta.backoff_until is None or now >= meta.backoff_until)
        )

    def _eligible(self, meta: PeerMetadata, now: float) -> bool:
        config = self._config
        return (
            self._available(meta, now)
            and meta.trust_level >= config.min_trust_level
            and meta.verified
            and (meta.has_sync_capability or not config.capability_filtering)
        )

    def _track(self, candidates: tuple[tuple[DeviceId, str | None], ...]) -> list[DeviceId]:
        now = self._clock.now()
        added: list[DeviceId] = []
        for peer_id, address in candidates:
            if peer_id in self._peers:
                self._refresh_known(peer_id, address, now)
                continue
            try:
                self._make_room(peer_id, now)
            except PeerTableFull:
                continue  # full of live peers: skip the newcomer
            self._insert(peer_id, address, now)
            added.append(peer_id)
        self._last_discovery = now
        return added
