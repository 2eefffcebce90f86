"""Peer management: tracking, status machine, scoring, selection, sessions and backoff.

:class:`PeerManager` keeps a bounded table of known peers (``DeviceId`` ->
:class:`PeerInfo`) and answers the question the sync protocols ask: *which
peers should I sync with now?* (:meth:`PeerManager.select_sync_peers`).  It is
a plain, synchronous, single-threaded core: time comes from an injected
:class:`~aura_sync.effects.Clock`, discovery from an injected
:class:`PeerDiscovery` effect, and nothing here sleeps, spawns threads or
opens sockets.

Integration points

* ``aura_sync.actors`` wraps one ``PeerManager`` in ``PeerManagerActor``; the
  actor applies discovery results that arrive as ``DiscoverPeers`` messages
  through :meth:`PeerManager.track_discovered`, and keeps the table across
  restarts with :meth:`PeerManager.snapshot` / :meth:`PeerManager.restore`.
* The transport reports connection life-cycle with
  :meth:`PeerManager.set_peer_status` and identity verification (mutual TLS)
  with ``update_peer_metadata(peer, verified=True)``.
* Protocol actors bracket every sync with :meth:`PeerManager.start_sync_session`
  / :meth:`PeerManager.end_sync_session`, which feed the score and the
  failure backoff.
* Capability tokens are checked by :mod:`aura_sync.infrastructure.capabilities`
  (Biscuit), through :meth:`PeerManager.update_peer_capabilities`.

Status machine (``set_peer_status`` enforces it; setting the current status
again is a no-op)::

    DISCOVERED   -> CONNECTING, CONNECTED, FAILED, REMOVED
    CONNECTING   -> CONNECTED, DISCONNECTED, FAILED, REMOVED
    CONNECTED    -> DEGRADED, DISCONNECTED, FAILED, REMOVED
    DEGRADED     -> CONNECTED, DISCONNECTED, FAILED, REMOVED
    DISCONNECTED -> CONNECTING, CONNECTED, REMOVED
    FAILED       -> CONNECTING, CONNECTED, REMOVED
    REMOVED      -> (terminal)

``CONNECTED`` is reachable from every non-terminal status because the remote
side may dial us at any time.  ``DEGRADED`` only follows a connection.  A
``REMOVED`` peer stays in the table as a tombstone (so discovery does not
bring it back) until :meth:`PeerManager.remove_peer` forgets it or the table
evicts it to make room.

Score (in [0, 1])::

    0.5 * trust/100 + 0.3 * success_rate + 0.2 * (1 - min(active/max_concurrent, 1))

with ``success_rate = successes / (successes + failures)``, or 0.5 with no
history.

Failure backoff: after the n-th consecutive failure (a failed session or a
:meth:`PeerManager.record_failure`) the peer is not selectable for
``min(5 + (n-1)**2, 300)`` seconds (5, 6, 9, 14, ... capped at 5 minutes); a
successful session clears it.

Layer: cores.  Imports values, effects and :mod:`.capabilities`.
"""

from __future__ import annotations

import dataclasses
import enum
import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
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

__all__ = [
    "ALLOWED_TRANSITIONS",
    "BACKOFF_BASE",
    "BACKOFF_CAP",
    "BACKOFF_STEP",
    "DEFAULT_TRUST_LEVEL",
    "LATENCY_EWMA_ALPHA",
    "LIVE_STATUSES",
    "MAX_ADDRESS_LENGTH",
    "METADATA_FIELDS",
    "PeerDiscovery",
    "PeerDiscoveryConfig",
    "PeerInfo",
    "PeerManager",
    "PeerManagerStatistics",
    "PeerMetadata",
    "PeerStatus",
    "PeerTableSnapshot",
    "StaticDiscovery",
    "compute_score",
    "failure_backoff",
]

DEFAULT_TRUST_LEVEL: Final = 50
"""Trust level (0-100) of a newly tracked peer: neutral, equal to the default minimum."""

LATENCY_EWMA_ALPHA: Final = 0.2
"""Weight of a new latency sample in the latency EWMA."""

BACKOFF_BASE: Final = 5.0
"""Failure backoff after the first consecutive failure, in seconds."""

BACKOFF_STEP: Final = 1.0
"""Quadratic backoff growth, in seconds: the n-th failure adds ``BACKOFF_STEP * (n-1)**2``."""

BACKOFF_CAP: Final = 300.0
"""Longest failure backoff, in seconds (5 minutes)."""

MAX_ADDRESS_LENGTH: Final = 1024
"""Longest accepted peer address string, in characters."""


def _check_address(value: object, name: str = "address") -> str | None:
    if value is None:
        return None
    if type(value) is not str:
        raise WrongType(f"{name} must be a str or None, got {type(value).__name__} {value!r}")
    if not 0 < len(value) <= MAX_ADDRESS_LENGTH:
        raise InvalidArgument(
            f"{name} must be 1..{MAX_ADDRESS_LENGTH} characters, got {len(value)}: {value[:80]!r}"
        )
    return value


# --- configuration ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeerDiscoveryConfig:
    """How the peer manager discovers, bounds and selects peers.

    :param max_concurrent_sessions: sync sessions allowed per peer at once (>= 1).
    :param discovery_timeout: seconds the discovery effect may take (> 0); passed
        to :meth:`PeerDiscovery.discover`.
    :param refresh_interval: seconds between discovery rounds (> 0); see
        :meth:`PeerManager.needs_refresh`.
    :param min_trust_level: lowest trust (0-100) a peer needs to be selected.
    :param max_tracked_peers: bound on the peer table (>= 1).
    :param capability_filtering: select only peers holding the
        ``sync:request_digest`` capability.
    :param root_public_key: the 32-byte Ed25519 public key of the Biscuit
        authority that signs capability tokens.  With ``None`` no token can be
        verified, so :meth:`PeerManager.update_peer_capabilities` always fails
        closed.

    Raises :class:`~aura_sync.errors.ConfigError` (or ``WrongType``) naming the
    field and value on any invalid field.
    """

    max_concurrent_sessions: int = 10
    discovery_timeout: float = 30.0
    refresh_interval: float = 300.0
    min_trust_level: int = 50
    max_tracked_peers: int = 100
    capability_filtering: bool = True
    root_public_key: bytes | None = None

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
        except InvalidArgument as exc:
            raise ConfigError(str(exc)) from None
        object.__setattr__(self, "discovery_timeout", timeout)
        object.__setattr__(self, "refresh_interval", interval)


# --- status machine -----------------------------------------------------------------------


class PeerStatus(enum.Enum):
    """Where a peer is in its connection life cycle (see the module docstring)."""

    DISCOVERED = "discovered"
    """Known (from discovery or configuration) but never contacted."""
    CONNECTING = "connecting"
    """A connection attempt is in progress."""
    CONNECTED = "connected"
    """Connected and usable for sync."""
    DEGRADED = "degraded"
    """Connected but misbehaving (slow, errors); not selected for sync."""
    DISCONNECTED = "disconnected"
    """Was connected (or was being connected) and is not any more."""
    FAILED = "failed"
    """The last connection attempt failed or the connection broke badly."""
    REMOVED = "removed"
    """Taken out of service for good (terminal; kept as a tombstone)."""


_S = PeerStatus

ALLOWED_TRANSITIONS: Final[Mapping[PeerStatus, frozenset[PeerStatus]]] = MappingProxyType(
    {
        _S.DISCOVERED: frozenset({_S.CONNECTING, _S.CONNECTED, _S.FAILED, _S.REMOVED}),
        _S.CONNECTING: frozenset({_S.CONNECTED, _S.DISCONNECTED, _S.FAILED, _S.REMOVED}),
        _S.CONNECTED: frozenset({_S.DEGRADED, _S.DISCONNECTED, _S.FAILED, _S.REMOVED}),
        _S.DEGRADED: frozenset({_S.CONNECTED, _S.DISCONNECTED, _S.FAILED, _S.REMOVED}),
        _S.DISCONNECTED: frozenset({_S.CONNECTING, _S.CONNECTED, _S.REMOVED}),
        _S.FAILED: frozenset({_S.CONNECTING, _S.CONNECTED, _S.REMOVED}),
        _S.REMOVED: frozenset(),
    }
)
"""For each status, the statuses :meth:`PeerManager.set_peer_status` may move it to."""

LIVE_STATUSES: Final = frozenset({_S.DISCOVERED, _S.CONNECTING, _S.CONNECTED, _S.DEGRADED})
"""Statuses of peers that are never evicted from a full table to make room."""

_EVICTION_RANK: Final = {_S.REMOVED: 0, _S.FAILED: 1, _S.DISCONNECTED: 2}


# --- metadata -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeerMetadata:
    """An immutable snapshot of what the manager knows about one peer.

    Times are clock seconds (the injected clock's time base).

    :param status: connection life-cycle status.
    :param discovered_at: when the peer was first tracked.
    :param last_seen: last time the peer was heard of (discovered again,
        connected, or ended a sync session).
    :param last_status_change: when ``status`` last changed.
    :param successful_syncs: sync sessions that succeeded.
    :param failed_syncs: sync sessions that failed.
    :param latency_ewma: exponentially weighted mean latency of successful
        syncs, in seconds (``None`` before the first one).
    :param trust_level: 0-100.
    :param has_sync_capability: holds the ``sync:request_digest`` right.
    :param verified: identity verified (e.g. by the mutual-TLS handshake).
    :param capabilities: rights granted by the last verified capability token.
    :param active_sessions: sync sessions in progress.
    :param consecutive_failures: failures since the last success.
    :param backoff_until: clock time until which the peer is not selected
        (``None`` when not backing off).
    """

    status: PeerStatus
    discovered_at: float
    last_seen: float
    last_status_change: float
    successful_syncs: int = 0
    failed_syncs: int = 0
    latency_ewma: float | None = None
    trust_level: int = DEFAULT_TRUST_LEVEL
    has_sync_capability: bool = False
    verified: bool = False
    capabilities: tuple[str, ...] = ()
    active_sessions: int = 0
    consecutive_failures: int = 0
    backoff_until: float | None = None

    def __post_init__(self) -> None:
        if type(self.status) is not PeerStatus:
            raise WrongType(
                f"status must be a PeerStatus, got {type(self.status).__name__} {self.status!r}"
            )
        object.__setattr__(
            self, "discovered_at", check_clock_time(self.discovered_at, "discovered_at")
        )
        object.__setattr__(self, "last_seen", check_clock_time(self.last_seen, "last_seen"))
        object.__setattr__(
            self,
            "last_status_change",
            check_clock_time(self.last_status_change, "last_status_change"),
        )
        check_int(self.successful_syncs, "successful_syncs", minimum=0)
        check_int(self.failed_syncs, "failed_syncs", minimum=0)
        if self.latency_ewma is not None:
            object.__setattr__(
                self, "latency_ewma", check_seconds(self.latency_ewma, "latency_ewma")
            )
        check_int(self.trust_level, "trust_level", minimum=0, maximum=100)
        check_bool(self.has_sync_capability, "has_sync_capability")
        check_bool(self.verified, "verified")
        if type(self.capabilities) is not tuple or not all(
            type(c) is str for c in self.capabilities
        ):
            raise WrongType(f"capabilities must be a tuple of str, got {self.capabilities!r}")
        check_int(self.active_sessions, "active_sessions", minimum=0)
        check_int(self.consecutive_failures, "consecutive_failures", minimum=0)
        if self.backoff_until is not None:
            object.__setattr__(
                self, "backoff_until", check_clock_time(self.backoff_until, "backoff_until")
            )

    @property
    def success_rate(self) -> float:
        """``successful / (successful + failed)`` syncs, or 0.5 with no history."""
        total = self.successful_syncs + self.failed_syncs
        return self.successful_syncs / total if total else 0.5

    def in_backoff(self, now: float) -> bool:
        """Whether the peer is still in failure backoff at clock time ``now`` (seconds).

        :raises WrongType, InvalidArgument: ``now`` is not finite clock seconds.
        """
        return self._in_backoff(check_clock_time(now, "now"))

    def _in_backoff(self, now: float) -> bool:
        return self.backoff_until is not None and now < self.backoff_until


METADATA_FIELDS: Final = frozenset(
    {
        "trust_level",
        "has_sync_capability",
        "verified",
        "successful_syncs",
        "failed_syncs",
        "active_sessions",
    }
)
"""Fields that :meth:`PeerManager.update_peer_metadata` may set."""


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """An immutable snapshot of one tracked peer: its id, address and metadata.

    :param peer_id: the peer's identity.
    :param address: where to reach it (transport specific, e.g. ``"10.0.0.7:7400"``),
        or ``None`` when unknown.
    :param metadata: status, counters and scores.
    """

    peer_id: DeviceId
    address: str | None
    metadata: PeerMetadata

    def __post_init__(self) -> None:
        check_peer(self.peer_id)
        _check_address(self.address)
        if type(self.metadata) is not PeerMetadata:
            raise WrongType(f"metadata must be a PeerMetadata, got {type(self.metadata).__name__}")

    @property
    def status(self) -> PeerStatus:
        """Shortcut for ``metadata.status``."""
        return self.metadata.status


@dataclass(frozen=True, slots=True)
class PeerManagerStatistics:
    """Counts over the peer table at one instant.

    :param total_tracked: entries in the table (REMOVED tombstones included).
    :param connected_peers: peers whose status is CONNECTED.
    :param available_peers: peers for which :meth:`PeerManager.is_peer_available` holds.
    :param peers_with_sync_capability: non-REMOVED peers holding the sync capability.
    :param total_active_sessions: sync sessions in progress, over all peers.

    Every field is an int >= 0 (else ``WrongType`` / ``InvalidArgument``).
    """

    total_tracked: int
    connected_peers: int
    available_peers: int
    peers_with_sync_capability: int
    total_active_sessions: int

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            check_int(getattr(self, name), name, minimum=0)


@dataclass(frozen=True, slots=True)
class PeerTableSnapshot:
    """The whole peer table, immutable, for :meth:`PeerManager.restore`.

    :param peers: every tracked peer, sorted by ``DeviceId``.
    :param last_discovery: clock time of the last discovery round, or ``None``.
    """

    peers: tuple[PeerInfo, ...]
    last_discovery: float | None

    def __post_init__(self) -> None:
        if type(self.peers) is not tuple:
            raise WrongType(f"peers must be a tuple of PeerInfo, got {type(self.peers).__name__}")
        seen: set[DeviceId] = set()
        for i, info in enumerate(self.peers):
            if type(info) is not PeerInfo:
                raise WrongType(f"peers[{i}] must be a PeerInfo, got {type(info).__name__}")
            if info.peer_id in seen:
                raise InvalidArgument(f"peers[{i}]: duplicate peer_id {info.peer_id}")
            seen.add(info.peer_id)
        if self.last_discovery is not None:
            object.__setattr__(
                self, "last_discovery", check_clock_time(self.last_discovery, "last_discovery")
            )


# --- pure helpers -------------------------------------------------------------------------


def compute_score(metadata: PeerMetadata, max_concurrent_sessions: int) -> float:
    """The selection score (in [0, 1]) of a peer with ``metadata``.

    ``0.5*trust/100 + 0.3*success_rate + 0.2*(1 - min(active/max_concurrent_sessions, 1))``.

    :param metadata: the peer's :class:`PeerMetadata`.
    :param max_concurrent_sessions: the session limit per peer (int >= 1).
    :raises WrongType, InvalidArgument: on a bad argument.
    """
    if type(metadata) is not PeerMetadata:
        raise WrongType(
            f"metadata must be a PeerMetadata, got {type(metadata).__name__} {metadata!r}"
        )
    check_int(max_concurrent_sessions, "max_concurrent_sessions", minimum=1)
    return _score(metadata, max_concurrent_sessions)


def _score(metadata: PeerMetadata, max_concurrent_sessions: int) -> float:
    """:func:`compute_score` without the checks (the manager's arguments are valid)."""
    load = min(metadata.active_sessions / max_concurrent_sessions, 1.0)
    return 0.5 * metadata.trust_level / 100 + 0.3 * metadata.success_rate + 0.2 * (1.0 - load)


def failure_backoff(consecutive_failures: int) -> float:
    """Seconds a peer backs off after its ``consecutive_failures``-th failure in a row.

    ``min(5 + (n-1)**2, 300)`` for ``n >= 1`` (5, 6, 9, 14, ... s); 0 for ``n == 0``.
    Raises ``WrongType``/``InvalidArgument`` for a non-int or negative ``n``.
    """
    n = check_int(consecutive_failures, "consecutive_failures", minimum=0)
    if n == 0:
        return 0.0
    return min(BACKOFF_BASE + BACKOFF_STEP * (n - 1) ** 2, BACKOFF_CAP)


# --- discovery effect ---------------------------------------------------------------------


@runtime_checkable
class PeerDiscovery(Protocol):
    """The discovery effect: where new peers come from (bootstrap list, mDNS, peer exchange)."""

    def discover(self, timeout: float) -> Iterable[tuple[DeviceId, str | None]]:
        """Return the peers found within ``timeout`` seconds as ``(peer_id, address)`` pairs.

        Any exception it raises is reported by :meth:`PeerManager.discover_peers`
        as a :class:`~aura_sync.errors.DiscoveryError`.
        """
        ...


class StaticDiscovery:
    """A :class:`PeerDiscovery` that always returns the same candidates (bootstrap lists, tests).

    :param candidates: ``(peer_id, address)`` pairs; ``address`` may be ``None``.
    """

    def __init__(self, candidates: Iterable[tuple[DeviceId, str | None]] = ()) -> None:
        self._candidates = _check_candidates(candidates)

    def discover(self, timeout: float) -> Iterable[tuple[DeviceId, str | None]]:
        """Return the configured candidates (``timeout``, seconds > 0, is not needed).

        :raises WrongType, InvalidArgument: ``timeout`` is not positive finite seconds.
        """
        check_seconds(timeout, "timeout", allow_zero=False)
        return self._candidates


def _check_candidates(candidates: object) -> tuple[tuple[DeviceId, str | None], ...]:
    if isinstance(candidates, str | bytes) or not isinstance(candidates, Iterable):
        raise WrongType(
            f"candidates must be an iterable of (DeviceId, address) pairs, "
            f"got {type(candidates).__name__}"
        )
    checked: list[tuple[DeviceId, str | None]] = []
    for i, item in enumerate(candidates):
        if type(item) is not tuple or len(item) != 2:
            raise WrongType(f"candidates[{i}] must be a (DeviceId, address) tuple, got {item!r}")
        peer_id = check_peer(item[0], f"candidates[{i}] peer_id")
        address = _check_address(item[1], f"candidates[{i}] address")
        checked.append((peer_id, address))
    return tuple(checked)


# --- the manager --------------------------------------------------------------------------


class PeerManager:
    """Tracks peers and picks the best ones for sync.

    :param config: limits and policy; defaults to ``PeerDiscoveryConfig()``.
    :param clock: time source (seconds); defaults to :class:`SystemClock`.
        Tests pass :class:`~aura_sync.effects.ManualClock`.

    Every method validates its arguments and raises an
    :mod:`aura_sync.errors` exception naming the argument and value; a
    rejected call changes nothing.  Unknown peers raise
    :class:`~aura_sync.errors.UnknownPeer`.  Not thread-safe: one owner (the
    actor) calls it.
    """

    def __init__(
        self, config: PeerDiscoveryConfig | None = None, *, clock: Clock | None = None
    ) -> None:
        if config is None:
            config = PeerDiscoveryConfig()
        if type(config) is not PeerDiscoveryConfig:
            raise WrongType(f"config must be a PeerDiscoveryConfig, got {type(config).__name__}")
        if clock is None:
            clock = SystemClock()
        elif not isinstance(clock, Clock):
            raise WrongType(f"clock must be a Clock, got {type(clock).__name__} {clock!r}")
        self._config = config
        self._clock = clock
        self._peers: dict[DeviceId, PeerInfo] = {}
        self._last_discovery: float | None = None

    # -- introspection ------------------------------------------------------------

    @property
    def config(self) -> PeerDiscoveryConfig:
        """The configuration this manager was built with."""
        return self._config

    @property
    def clock(self) -> Clock:
        """The injected clock."""
        return self._clock

    @property
    def last_discovery(self) -> float | None:
        """Clock time of the last successful discovery round, or ``None``."""
        return self._last_discovery

    def __len__(self) -> int:
        return len(self._peers)

    def __contains__(self, peer_id: object) -> bool:
        return peer_id in self._peers

    def get_peer(self, peer_id: DeviceId) -> PeerInfo:
        """An immutable snapshot of one peer.  Raises ``UnknownPeer`` if not tracked."""
        return self._get(peer_id)

    def peers(self) -> tuple[PeerInfo, ...]:
        """Snapshots of every tracked peer, sorted by ``DeviceId``."""
        return tuple(self._peers[k] for k in sorted(self._peers))

    # -- membership -------------------------------------------------------------------

    def add_peer(self, peer_id: DeviceId, address: str | None = None) -> bool:
        """Track ``peer_id`` (status DISCOVERED, trust :data:`DEFAULT_TRUST_LEVEL`).

        :param peer_id: the peer to track.
        :param address: where to reach it, or ``None``.
        :returns: ``True`` if the peer is new; ``False`` if it was already
            tracked (then a non-``None`` ``address`` replaces the known one and
            ``last_seen`` is refreshed, unless the peer is REMOVED, which is left
            untouched).
        :raises PeerTableFull: the table is at ``max_tracked_peers`` and holds no
            dead peer (FAILED, DISCONNECTED or REMOVED, without active sessions)
            to evict.
        """
        check_peer(peer_id)
        _check_address(address)
        now = self._clock.now()
        if peer_id in self._peers:
            self._refresh_known(peer_id, address, now)
            return False
        if len(self._peers) >= self._config.max_tracked_peers:
            victims = self._eviction_heap(now)
            if not victims:
                raise PeerTableFull(
                    f"cannot add peer {peer_id}: {len(self._peers)} peers tracked "
                    f"(max_tracked_peers={self._config.max_tracked_peers}) and none can be evicted"
                )
            del self._peers[heapq.heappop(victims)[-1]]
        self._insert(peer_id, address, now)
        return True

    def remove_peer(self, peer_id: DeviceId) -> PeerInfo:
        """Forget ``peer_id`` entirely (it may be discovered again later).

        To keep a peer out of service *and* out of rediscovery, set its status
        to ``REMOVED`` instead.  Returns the last snapshot of the peer.
        Raises ``UnknownPeer``.
        """
        info = self._get(peer_id)
        del self._peers[peer_id]
        return info

    def set_peer_status(self, peer_id: DeviceId, status: PeerStatus) -> None:
        """Move ``peer_id`` to ``status`` along :data:`ALLOWED_TRANSITIONS`.

        Setting the current status again does nothing.  Moving to CONNECTED
        refreshes ``last_seen``.
        :raises InvalidTransition: the move is not allowed (names both statuses).
        :raises UnknownPeer, WrongType: bad ``peer_id`` or ``status``.
        """
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
        changes: dict[str, object] = {"status": status, "last_status_change": now}
        if status is PeerStatus.CONNECTED:
            changes["last_seen"] = now
        self._replace(info, **changes)

    def update_peer_metadata(self, peer_id: DeviceId, **fields: object) -> None:
        """Set some of the peer's metadata fields (all validated before any is applied).

        Allowed fields (:data:`METADATA_FIELDS`): ``trust_level`` (int 0-100),
        ``has_sync_capability`` (bool), ``verified`` (bool),
        ``successful_syncs``, ``failed_syncs``, ``active_sessions`` (ints >= 0).
        Setting ``has_sync_capability`` directly is an operator override; the
        normal path is :meth:`update_peer_capabilities`.
        :raises InvalidArgument: an unknown field name or an out-of-range value.
        :raises WrongType: a value of the wrong type.
        :raises UnknownPeer: ``peer_id`` is not tracked.
        """
        info = self._get(peer_id)
        unknown = sorted(set(fields) - METADATA_FIELDS)
        if unknown:
            raise InvalidArgument(
                f"unknown peer metadata field(s) {', '.join(unknown)}; "
                f"allowed: {', '.join(sorted(METADATA_FIELDS))}"
            )
        for name, value in fields.items():
            if name == "trust_level":
                check_int(value, name, minimum=0, maximum=100)
            elif name in ("has_sync_capability", "verified"):
                check_bool(value, name)
            else:
                check_int(value, name, minimum=0)
        if fields:
            self._replace(info, **fields)

    # -- scoring and selection ----------------------------------------------------------

    def peer_score(self, peer_id: DeviceId) -> float:
        """The peer's selection score in [0, 1] (see :func:`compute_score`).

        Raises ``UnknownPeer``.
        """
        return _score(self._get(peer_id).metadata, self._config.max_concurrent_sessions)

    def is_peer_available(self, peer_id: DeviceId) -> bool:
        """Whether the peer can take a sync session now.

        True when it is CONNECTED, has fewer than ``max_concurrent_sessions``
        active sessions, and is not in failure backoff.  Raises ``UnknownPeer``.
        """
        return self._available(self._get(peer_id).metadata, self._clock.now())

    def select_sync_peers(self, count: int) -> list[DeviceId]:
        """The best ``count`` peers to sync with now, best first.

        A peer qualifies when it is available (:meth:`is_peer_available`),
        at or above ``min_trust_level``, identity-verified, and (with
        ``capability_filtering``) holds the sync capability.  Ordered by score
        descending, ties by ``DeviceId`` ascending; deterministic.  Runs in
        O(n log count).

        :param count: how many peers at most (int >= 0).
        :returns: at most ``count`` peer ids.
        """
        check_int(count, "count", minimum=0)
        if count == 0:
            return []
        now = self._clock.now()
        max_sessions = self._config.max_concurrent_sessions
        candidates = (
            (-_score(info.metadata, max_sessions), pid)
            for pid, info in self._peers.items()
            if self._eligible(info.metadata, now)
        )
        return [pid for _, pid in heapq.nsmallest(count, candidates)]

    # -- sessions and failures -----------------------------------------------------------

    def start_sync_session(self, peer_id: DeviceId) -> int:
        """Count one more sync session with the peer; returns its active session count.

        :raises PeerUnavailable: the peer is not CONNECTED or is in failure backoff.
        :raises SessionLimitReached: it already has ``max_concurrent_sessions``.
        :raises UnknownPeer: ``peer_id`` is not tracked.
        """
        info = self._get(peer_id)
        meta = info.metadata
        now = self._clock.now()
        if meta.status is not PeerStatus.CONNECTED:
            raise PeerUnavailable(f"peer {peer_id} is {meta.status.name}, not CONNECTED")
        if meta.backoff_until is not None and now < meta.backoff_until:
            raise PeerUnavailable(
                f"peer {peer_id} is in failure backoff for another {meta.backoff_until - now:.3f} s"
            )
        limit = self._config.max_concurrent_sessions
        if meta.active_sessions >= limit:
            raise SessionLimitReached(
                f"peer {peer_id} already has {meta.active_sessions} active sync sessions "
                f"(max_concurrent_sessions={limit})"
            )
        self._replace(info, active_sessions=meta.active_sessions + 1)
        return meta.active_sessions + 1

    def end_sync_session(self, peer_id: DeviceId, success: bool, latency: float) -> None:
        """Close one sync session and record its outcome.

        A success counts in ``successful_syncs``, feeds ``latency`` into the
        latency EWMA and clears the failure backoff.  A failure counts in
        ``failed_syncs`` and starts (or extends) the backoff (:func:`failure_backoff`).

        :param success: whether the sync succeeded.
        :param latency: how long the sync took, in seconds (finite, >= 0).
        :raises InvalidArgument: the peer has no active session, or bad latency.
        :raises UnknownPeer, WrongType: bad ``peer_id`` or ``success``.
        """
        info = self._get(peer_id)
        check_bool(success, "success")
        seconds = check_seconds(latency, "latency")
        meta = info.metadata
        if meta.active_sessions == 0:
            raise InvalidArgument(f"peer {peer_id} has no active sync session to end")
        now = self._clock.now()
        if success:
            ewma = (
                seconds
                if meta.latency_ewma is None
                else (1 - LATENCY_EWMA_ALPHA) * meta.latency_ewma + LATENCY_EWMA_ALPHA * seconds
            )
            self._replace(
                info,
                active_sessions=meta.active_sessions - 1,
                successful_syncs=meta.successful_syncs + 1,
                latency_ewma=ewma,
                consecutive_failures=0,
                backoff_until=None,
                last_seen=now,
            )
        else:
            failures = meta.consecutive_failures + 1
            self._replace(
                info,
                active_sessions=meta.active_sessions - 1,
                failed_syncs=meta.failed_syncs + 1,
                consecutive_failures=failures,
                backoff_until=now + failure_backoff(failures),
                last_seen=now,
            )

    def record_failure(self, peer_id: DeviceId) -> float:
        """Record a failure outside a sync session (e.g. a connection attempt that failed).

        Extends the failure backoff like a failed session, without touching
        ``failed_syncs`` or the status.  Returns the backoff in seconds.
        Raises ``UnknownPeer``.
        """
        info = self._get(peer_id)
        failures = info.metadata.consecutive_failures + 1
        delay = failure_backoff(failures)
        self._replace(
            info,
            consecutive_failures=failures,
            backoff_until=self._clock.now() + delay,
        )
        return delay

    # -- capabilities --------------------------------------------------------------------------

    def update_peer_capabilities(self, peer_id: DeviceId, token: bytes) -> tuple[str, ...]:
        """Verify the peer's Biscuit capability token and record what it grants.

        The token must be signed by ``config.root_public_key``, grant
        ``sync:request_digest`` in its authority block, and not be bound to
        another subject (see :mod:`.capabilities`).  On success the peer's
        ``capabilities`` become the granted rights and ``has_sync_capability``
        becomes True.  **Fails closed:** on any failure the peer is left with
        ``has_sync_capability=False`` and no capabilities, and
        :class:`~aura_sync.errors.CapabilityError` is raised.

        :returns: the granted rights, sorted.
        :raises CapabilityError: the token is not valid for this peer, or no
            ``root_public_key`` is configured.
        :raises UnknownPeer, WrongType: bad ``peer_id``, or ``token`` not bytes
            (nothing changes then).
        """
        info = self._get(peer_id)
        if type(token) is not bytes:
            raise WrongType(f"token must be bytes, got {type(token).__name__}")
        root = self._config.root_public_key
        try:
            if root is None:
                raise CapabilityError(
                    "no root_public_key configured: capability tokens cannot be verified"
                )
            rights = verify_capability_token(
                token, root, required_right=SYNC_REQUEST_DIGEST, subject=peer_id
            )
        except CapabilityError as exc:
            self._replace(info, has_sync_capability=False, capabilities=())
            raise CapabilityError(f"peer {peer_id}: {exc}") from exc
        self._replace(info, has_sync_capability=True, capabilities=rights)
        return rights

    # -- discovery ----------------------------------------------------------------------------

    def discover_peers(self, discovery: PeerDiscovery) -> list[DeviceId]:
        """Run one discovery round through the ``discovery`` effect and track new peers.

        Calls ``discovery.discover(config.discovery_timeout)`` and passes the
        result to :meth:`track_discovered`.

        :returns: the newly tracked peer ids, in discovery order.
        :raises DiscoveryError: the effect raised (cause chained) or returned
            malformed candidates; nothing changes then, and ``needs_refresh()``
            stays as it was.
        :raises WrongType: ``discovery`` has no ``discover`` method.
        """
        discover = getattr(discovery, "discover", None)
        if not callable(discover):
            raise WrongType(
                f"discovery must have a discover(timeout) method, got {type(discovery).__name__}"
            )
        try:
            found = list(discover(self._config.discovery_timeout))
        except Exception as exc:
            raise DiscoveryError(f"peer discovery failed: {type(exc).__name__}: {exc}") from exc
        try:
            candidates = _check_candidates(found)
        except (WrongType, InvalidArgument) as exc:
            raise DiscoveryError(f"peer discovery returned malformed candidates: {exc}") from exc
        return self._track(candidates)

    def track_discovered(self, candidates: Iterable[tuple[DeviceId, str | None]]) -> list[DeviceId]:
        """Apply one discovery round's results (what ``discover_peers`` does after asking).

        Each ``(peer_id, address)`` pair is tracked as DISCOVERED if new; a
        known peer gets its address (when not ``None``) and ``last_seen``
        refreshed (REMOVED tombstones are left alone).  When the table is full,
        the worst dead peer (REMOVED, then FAILED, then DISCONNECTED; lowest
        score first; never one with active sessions) is evicted to make room;
        a live peer is never evicted, and a newcomer that finds no room is
        skipped.  Records the round's time for :meth:`needs_refresh`.

        :returns: the newly tracked peer ids, in order (duplicates count once).
        :raises WrongType, InvalidArgument: a malformed pair (nothing changes).
        """
        return self._track(_check_candidates(candidates))

    def needs_refresh(self) -> bool:
        """Whether ``refresh_interval`` seconds have passed since the last discovery round
        (or there has been none)."""
        if self._last_discovery is None:
            return True
        return self._clock.now() - self._last_discovery >= self._config.refresh_interval

    # -- statistics and persistence ---------------------------------------------------------

    def statistics(self) -> PeerManagerStatistics:
        """Counts over the current table (O(n))."""
        now = self._clock.now()
        connected = available = capable = sessions = 0
        for info in self._peers.values():
            meta = info.metadata
            sessions += meta.active_sessions
            if meta.status is PeerStatus.CONNECTED:
                connected += 1
                if self._available(meta, now):
                    available += 1
            if meta.has_sync_capability and meta.status is not PeerStatus.REMOVED:
                capable += 1
        return PeerManagerStatistics(
            total_tracked=len(self._peers),
            connected_peers=connected,
            available_peers=available,
            peers_with_sync_capability=capable,
            total_active_sessions=sessions,
        )

    def snapshot(self) -> PeerTableSnapshot:
        """The whole table as an immutable value (for :meth:`restore` after an actor restart)."""
        return PeerTableSnapshot(peers=self.peers(), last_discovery=self._last_discovery)

    @classmethod
    def restore(
        cls,
        config: PeerDiscoveryConfig | None,
        snapshot: PeerTableSnapshot,
        *,
        clock: Clock | None = None,
    ) -> PeerManager:
        """A manager holding the table of ``snapshot``.

        Times in the snapshot are in the clock's time base, so pass the clock
        (or one sharing its time base) the snapshot was taken with.

        :raises WrongType: ``snapshot`` is not a :class:`PeerTableSnapshot`.
        :raises InvalidArgument: it holds more than ``config.max_tracked_peers`` peers.
        """
        manager = cls(config, clock=clock)
        if type(snapshot) is not PeerTableSnapshot:
            raise WrongType(f"snapshot must be a PeerTableSnapshot, got {type(snapshot).__name__}")
        limit = manager._config.max_tracked_peers
        if len(snapshot.peers) > limit:
            raise InvalidArgument(
                f"snapshot holds {len(snapshot.peers)} peers, over max_tracked_peers={limit}"
            )
        manager._peers = {info.peer_id: info for info in snapshot.peers}
        manager._last_discovery = snapshot.last_discovery
        return manager

    # -- internals -----------------------------------------------------------------------------

    def _get(self, peer_id: DeviceId) -> PeerInfo:
        check_peer(peer_id)
        info = self._peers.get(peer_id)
        if info is None:
            raise UnknownPeer(f"peer {peer_id} is not tracked")
        return info

    def _replace(self, info: PeerInfo, **changes: object) -> None:
        metadata = dataclasses.replace(info.metadata, **changes)  # type: ignore[arg-type]
        self._peers[info.peer_id] = PeerInfo(info.peer_id, info.address, metadata)

    def _insert(self, peer_id: DeviceId, address: str | None, now: float) -> None:
        metadata = PeerMetadata(
            status=PeerStatus.DISCOVERED, discovered_at=now, last_seen=now, last_status_change=now
        )
        self._peers[peer_id] = PeerInfo(peer_id, address, metadata)

    def _refresh_known(self, peer_id: DeviceId, address: str | None, now: float) -> None:
        info = self._peers[peer_id]
        if info.metadata.status is PeerStatus.REMOVED:
            return
        metadata = dataclasses.replace(info.metadata, last_seen=now)
        self._peers[peer_id] = PeerInfo(
            peer_id, address if address is not None else info.address, metadata
        )

    def _available(self, meta: PeerMetadata, now: float) -> bool:
        return (
            meta.status is PeerStatus.CONNECTED
            and meta.active_sessions < self._config.max_concurrent_sessions
            and not meta._in_backoff(now)
        )

    def _eligible(self, meta: PeerMetadata, now: float) -> bool:
        config = self._config
        return (
            self._available(meta, now)
            and meta.trust_level >= config.min_trust_level
            and meta.verified
            and (meta.has_sync_capability or not config.capability_filtering)
        )

    def _eviction_heap(self, now: float) -> list[tuple[int, float, float, DeviceId]]:
        """Dead peers without sessions, worst first (a heap)."""
        max_sessions = self._config.max_concurrent_sessions
        heap = [
            (
                _EVICTION_RANK[info.metadata.status],
                _score(info.metadata, max_sessions),
                info.metadata.last_seen,
                pid,
            )
            for pid, info in self._peers.items()
            if info.metadata.status not in LIVE_STATUSES and info.metadata.active_sessions == 0
        ]
        heapq.heapify(heap)
        return heap

    def _track(self, candidates: tuple[tuple[DeviceId, str | None], ...]) -> list[DeviceId]:
        now = self._clock.now()
        added: list[DeviceId] = []
        victims: list[tuple[int, float, float, DeviceId]] | None = None
        limit = self._config.max_tracked_peers
        for peer_id, address in candidates:
            if peer_id in self._peers:
                self._refresh_known(peer_id, address, now)
                continue
            if len(self._peers) >= limit:
                if victims is None:
                    victims = self._eviction_heap(now)
                if not victims:
                    continue  # full of live peers: skip the newcomer
                del self._peers[heapq.heappop(victims)[-1]]
            self._insert(peer_id, address, now)
            added.append(peer_id)
        self._last_discovery = now
        return added
