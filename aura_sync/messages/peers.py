"""Peer-management messages: requests to the peer manager actor and its replies.

Tags 0x0080-0x009F.  Every operation of
:class:`~aura_sync.infrastructure.peers.PeerManager` is reachable:

=================================  ==============================================
request                            reply
=================================  ==============================================
:class:`AddPeer`                   :class:`PeerAdded`
:class:`RemovePeer`                :class:`~aura_sync.messages.common.Ack`
:class:`SetPeerStatus`             :class:`~aura_sync.messages.common.Ack`
:class:`UpdatePeerMetadata`        :class:`~aura_sync.messages.common.Ack`
:class:`GetPeer`                   :class:`PeerInfoReply`
:class:`GetPeerScore`              :class:`PeerScoreReply`
:class:`IsPeerAvailable`           :class:`PeerAvailabilityReply`
:class:`SelectSyncPeers`           :class:`SelectedPeers`
:class:`StartSyncSession`          :class:`~aura_sync.messages.common.Ack`
:class:`EndSyncSession`            :class:`~aura_sync.messages.common.Ack`
:class:`RecordFailure`             :class:`FailureRecorded`
:class:`UpdatePeerCapabilities`    :class:`CapabilitiesReply`
:class:`DiscoverPeers`             :class:`PeersDiscovered`
:class:`RefreshDue`                (none: a scheduled tick, told, not asked)
:class:`NeedsRefresh`              :class:`RefreshNeededReply`
:class:`GetPeerStatistics`         :class:`PeerStatisticsReply`
:class:`GetPeerTable`              :class:`PeerTableReply`
:class:`RestorePeerTable`          :class:`~aura_sync.messages.common.Ack`
=================================  ==============================================

Expected failures (unknown peer, invalid transition, session limit, a
capability token that does not verify) come back as
:class:`~aura_sync.messages.common.ErrorReply`.

Discovery over the wire: an actor cannot be handed a discovery *object*, so
whoever runs discovery (a bootstrap list, peer exchange) sends its results as
:class:`DiscoverPeers` carrying :class:`PeerCandidate` values; the actor
applies them with :meth:`~aura_sync.infrastructure.peers.PeerManager.track_discovered`.

:class:`PeerTableReply` (and :class:`RestorePeerTable`) carry the whole table,
so ``codec.encode(reply)`` is also a persistence format for the peer table.
Its times are clock seconds of the node's monotonic clock.

Every field is validated in ``__post_init__``, so a decoded message is checked
exactly like one built in code.

Layer: messages.  Imports the peers core for conversions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from aura_sync._checks import check_bool, check_int, check_peer, check_u64
from aura_sync.errors import InvalidArgument, WrongType
from aura_sync.ids import DeviceId
from aura_sync.infrastructure.peers import (
    MAX_ADDRESS_LENGTH,
    PeerInfo,
    PeerManagerStatistics,
    PeerMetadata,
    PeerStatus,
    PeerTableSnapshot,
)
from aura_sync.messages._base import Message, message

__all__ = [
    "AddPeer",
    "CapabilitiesReply",
    "DiscoverPeers",
    "EndSyncSession",
    "FailureRecorded",
    "GetPeer",
    "GetPeerScore",
    "GetPeerStatistics",
    "GetPeerTable",
    "IsPeerAvailable",
    "NeedsRefresh",
    "PeerAdded",
    "PeerAvailabilityReply",
    "PeerCandidate",
    "PeerInfoReply",
    "PeerMetadataRecord",
    "PeerScoreReply",
    "PeerStatisticsReply",
    "PeerTableReply",
    "PeersDiscovered",
    "RecordFailure",
    "RefreshDue",
    "RefreshNeededReply",
    "RemovePeer",
    "RestorePeerTable",
    "SelectSyncPeers",
    "SelectedPeers",
    "SetPeerStatus",
    "StartSyncSession",
    "UpdatePeerCapabilities",
    "UpdatePeerMetadata",
]


def _float(msg: Message, name: str, *, optional: bool = False, nonneg: bool = False) -> None:
    """Check that field ``name`` is a finite float (an int is converted) and normalize it."""
    value = getattr(msg, name)
    if value is None and optional:
        return
    if type(value) is int:
        given = value
        try:
            value = float(value)
        except OverflowError:  # an int too large for a float
            value = math.inf
        if math.isfinite(value):
            object.__setattr__(msg, name, value)
        else:
            bound = "finite and >= 0" if nonneg else "finite"
            raise InvalidArgument(f"{name} must be {bound}, got {given!r}")
    if type(value) is not float:
        kind = "a float or None" if optional else "a float"
        raise WrongType(f"{name} must be {kind}, got {type(value).__name__} {value!r}")
    if not math.isfinite(value) or (nonneg and value < 0):
        bound = "finite and >= 0" if nonneg else "finite"
        raise InvalidArgument(f"{name} must be {bound}, got {value!r}")


def _address(value: object, name: str = "address") -> None:
    if value is None:
        return
    if type(value) is not str:
        raise WrongType(f"{name} must be a str or None, got {type(value).__name__} {value!r}")
    if not 0 < len(value) <= MAX_ADDRESS_LENGTH:
        raise InvalidArgument(
            f"{name} must be 1..{MAX_ADDRESS_LENGTH} characters, got {len(value)}: {value[:80]!r}"
        )


def _distinct_peers(value: tuple[DeviceId, ...], name: str) -> None:
    seen: set[DeviceId] = set()
    for i, peer in enumerate(value):
        if peer in seen:
            raise InvalidArgument(f"{name}[{i}] names peer {peer} a second time")
        seen.add(peer)


def _tuple_of(value: object, item_type: type, name: str) -> None:
    if type(value) is not tuple:
        raise WrongType(f"{name} must be a tuple, got {type(value).__name__} {value!r}")
    for i, item in enumerate(value):
        if type(item) is not item_type:
            raise WrongType(
                f"{name}[{i}] must be a {item_type.__name__}, got {type(item).__name__} {item!r}"
            )


# --- membership ---------------------------------------------------------------------------


@message(0x0080)
class AddPeer(Message):
    """Track a peer.  Reply: :class:`PeerAdded`.

    :ivar peer_id: the peer.
    :ivar address: where to reach it, or None.
    """

    peer_id: DeviceId
    address: str | None = None

    def __post_init__(self) -> None:
        check_peer(self.peer_id)
        _address(self.address)


@message(0x0081)
class PeerAdded(Message):
    """Answer to :class:`AddPeer`: ``added`` is False if the peer was already tracked."""

    peer_id: DeviceId
    added: bool

    def __post_init__(self) -> None:
        check_peer(self.peer_id)
        check_bool(self.added, "added")


@message(0x0082)
class RemovePeer(Message):
    """Forget a peer entirely.  Reply: ``Ack``."""

    peer_id: DeviceId

    def __post_init__(self) -> None:
        check_peer(self.peer_id)


@message(0x0083)
class SetPeerStatus(Message):
    """Move a peer to ``status`` (the status machine is enforced).  Reply: ``Ack``."""

    peer_id: DeviceId
    status: PeerStatus

    def __post_init__(self) -> None:
        check_peer(self.peer_id)
        if type(self.status) is not PeerStatus:
            raise WrongType(
                f"status must be a PeerStatus, got {type(self.status).__name__} {self.status!r}"
            )


@message(0x0084)
class UpdatePeerMetadata(Message):
    """Set some metadata fields of a peer; a field left ``None`` is unchanged.  Reply: ``Ack``.

    :ivar trust_level: 0-100.
    :ivar has_sync_capability: operator override of the sync capability.
    :ivar verified: identity verified.
    :ivar successful_syncs, failed_syncs, active_sessions: counters (>= 0).
    """

    peer_id: DeviceId
    trust_level: int | None = None
    has_sync_capability: bool | None = None
    verified: bool | None = None
    successful_syncs: int | None = None
    failed_syncs: int | None = None
    active_sessions: int | None = None

    def __post_init__(self) -> None:
        check_peer(self.peer_id)
        if self.trust_level is not None:
            check_int(self.trust_level, "trust_level", minimum=0, maximum=100)
        for name in ("has_sync_capability", "verified"):
            value = getattr(self, name)
            if value is not None:
                check_bool(value, name)
        for name in ("successful_syncs", "failed_syncs", "active_sessions"):
            value = getattr(self, name)
            if value is not None:
                check_u64(value, name)

    def fields(self) -> dict[str, Any]:
        """The fields to change, as keyword arguments for
        :meth:`~aura_sync.infrastructure.peers.PeerManager.update_peer_metadata`."""
        names = (
            "trust_level",
            "has_sync_capability",
            "verified",
            "successful_syncs",
            "failed_syncs",
            "active_sessions",
        )
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}


# --- snapshots of one peer ----------------------------------------------------------------


@message(0x0085)
class GetPeer(Message):
    """Ask for one peer's snapshot.  Reply: :class:`PeerInfoReply`."""

    peer_id: DeviceId

    def __post_init__(self) -> None:
        check_peer(self.peer_id)


@message(0x0086)
class PeerMetadataRecord(Message):
    """The wire form of :class:`~aura_sync.infrastructure.peers.PeerMetadata` (nested in replies).

    Same fields and units (times in clock seconds, latency in seconds).
    """

    status: PeerStatus
    discovered_at: float
    last_seen: float
    last_status_change: float
    successful_syncs: int
    failed_syncs: int
    latency_ewma: float | None
    trust_level: int
    has_sync_capability: bool
    verified: bool
    capabilities: tuple[str, ...]
    active_sessions: int
    consecutive_failures: int
    backoff_until: float | None

    def __post_init__(self) -> None:
        for name in ("successful_syncs", "failed_syncs", "active_sessions", "consecutive_failures"):
            check_u64(getattr(self, name), name)
        for name in ("discovered_at", "last_seen", "last_status_change"):
            _float(self, name)
        _float(self, "latency_ewma", optional=True, nonneg=True)
        _float(self, "backoff_until", optional=True)
        _tuple_of(self.capabilities, str, "capabilities")
        self.to_metadata()  # the core's own range checks

    @classmethod
    def from_metadata(cls, meta: PeerMetadata) -> PeerMetadataRecord:
        """The record that carries ``meta``."""
        if type(meta) is not PeerMetadata:
            raise WrongType(f"meta must be a PeerMetadata, got {type(meta).__name__}")
        return cls(
            meta.status,
            meta.discovered_at,
            meta.last_seen,
            meta.last_status_change,
            meta.successful_syncs,
            meta.failed_syncs,
            meta.latency_ewma,
            meta.trust_level,
            meta.has_sync_capability,
            meta.verified,
            meta.capabilities,
            meta.active_sessions,
            meta.consecutive_failures,
            meta.backoff_until,
        )

    def to_metadata(self) -> PeerMetadata:
        """The :class:`~aura_sync.infrastructure.peers.PeerMetadata` this record carries."""
        return PeerMetadata(
            status=self.status,
            discovered_at=self.discovered_at,
            last_seen=self.last_seen,
            last_status_change=self.last_status_change,
            successful_syncs=self.successful_syncs,
            failed_syncs=self.failed_syncs,
            latency_ewma=self.latency_ewma,
            trust_level=self.trust_level,
            has_sync_capability=self.has_sync_capability,
            verified=self.verified,
            capabilities=self.capabilities,
            active_sessions=self.active_sessions,
            consecutive_failures=self.consecutive_failures,
            backoff_until=self.backoff_until,
        )


@message(0x0087)
class PeerInfoReply(Message):
    """Answer to :class:`GetPeer`: the peer's id, address and metadata."""

    peer_id: DeviceId
    address: str | None
    metadata: PeerMetadataRecord

    def __post_init__(self) -> None:
        check_peer(self.peer_id)
        _address(self.address)
        if type(self.metadata) is not PeerMetadataRecord:
            raise WrongType(
                f"metadata must be a PeerMetadataRecord, got {type(self.metadata).__name__}"
            )

    @classmethod
    def from_info(cls, info: PeerInfo) -> PeerInfoReply:
        """The reply that carries ``info``."""
        if type(info) is not PeerInfo:
            raise WrongType(f"info must be a PeerInfo, got {type(info).__name__}")
        return cls(info.peer_id, info.address, PeerMetadataRecord.from_metadata(info.metadata))

    def to_info(self) -> PeerInfo:
        """The :class:`~aura_sync.infrastructure.peers.PeerInfo` this reply carries."""
        return PeerInfo(self.peer_id, self.address, self.metadata.to_metadata())


@message(0x0088)
class GetPeerScore(Message):
    """Ask for a peer's selection score.  Reply: :class:`PeerScoreReply`."""

    peer_id: DeviceId

    def __post_init__(self) -> None:
        check_peer(self.peer_id)


@message(0x0089)
class PeerScoreReply(Message):
    """Answer to :class:`GetPeerScore`: ``score`` in [0, 1]."""

    peer_id: DeviceId
    score: float

    def __post_init__(self) -> None:
        check_peer(self.peer_id)
        _float(self, "score")
        if not 0.0 <= self.score <= 1.0:
            raise InvalidArgument(f"score must be in [0, 1], got {self.score!r}")


@message(0x008A)
class IsPeerAvailable(Message):
    """Can the peer take a sync session now?  Reply: :class:`PeerAvailabilityReply`."""

    peer_id: DeviceId

    def __post_init__(self) -> None:
        check_peer(self.peer_id)


@message(0x008B)
class PeerAvailabilityReply(Message):
    """Answer to :class:`IsPeerAvailable`."""

    peer_id: DeviceId
    available: bool

    def __post_init__(self) -> None:
        check_peer(self.peer_id)
        check_bool(self.available, "available")


# --- selection and sessions ---------------------------------------------------------------


@message(0x008C)
class SelectSyncPeers(Message):
    """Pick at most ``count`` peers to sync with, best first.  Reply: :class:`SelectedPeers`."""

    count: int

    def __post_init__(self) -> None:
        check_u64(self.count, "count")


@message(0x008D)
class SelectedPeers(Message):
    """Answer to :class:`SelectSyncPeers`: the chosen peers, best first, each at most once."""

    peers: tuple[DeviceId, ...]

    def __post_init__(self) -> None:
        _tuple_of(self.peers, DeviceId, "peers")
        _distinct_peers(self.peers, "peers")


@message(0x008E)
class StartSyncSession(Message):
    """Open a sync session with a peer (refused at the session limit).  Reply: ``Ack``."""

    peer_id: DeviceId

    def __post_init__(self) -> None:
        check_peer(self.peer_id)


@message(0x008F)
class EndSyncSession(Message):
    """Close a sync session and record its outcome.  Reply: ``Ack``.

    :ivar success: whether the sync succeeded.
    :ivar latency: how long it took, in seconds (finite, >= 0).
    """

    peer_id: DeviceId
    success: bool
    latency: float

    def __post_init__(self) -> None:
        check_peer(self.peer_id)
        check_bool(self.success, "success")
        _float(self, "latency", nonneg=True)


@message(0x0090)
class RecordFailure(Message):
    """Record a failure outside a session (e.g. a failed dial).  Reply: :class:`FailureRecorded`."""

    peer_id: DeviceId

    def __post_init__(self) -> None:
        check_peer(self.peer_id)


@message(0x0091)
class FailureRecorded(Message):
    """Answer to :class:`RecordFailure`: the peer now backs off for ``backoff`` seconds."""

    peer_id: DeviceId
    backoff: float

    def __post_init__(self) -> None:
        check_peer(self.peer_id)
        _float(self, "backoff", nonneg=True)


# --- capabilities -------------------------------------------------------------------------


@message(0x0092)
class UpdatePeerCapabilities(Message):
    """Verify a peer's Biscuit capability token.  Reply: :class:`CapabilitiesReply`.

    Fails closed: a token that does not verify leaves the peer without the
    sync capability and the reply is an ``ErrorReply`` of type ``CapabilityError``.
    """

    peer_id: DeviceId
    token: bytes

    def __post_init__(self) -> None:
        check_peer(self.peer_id)
        if type(self.token) is not bytes:
            raise WrongType(f"token must be bytes, got {type(self.token).__name__}")


@message(0x0093)
class CapabilitiesReply(Message):
    """Answer to :class:`UpdatePeerCapabilities`: the rights the token granted."""

    peer_id: DeviceId
    capabilities: tuple[str, ...]

    def __post_init__(self) -> None:
        check_peer(self.peer_id)
        _tuple_of(self.capabilities, str, "capabilities")


# --- discovery ----------------------------------------------------------------------------


@message(0x0094)
class PeerCandidate(Message):
    """One discovered peer: its id and address (or None)."""

    peer_id: DeviceId
    address: str | None = None

    def __post_init__(self) -> None:
        check_peer(self.peer_id)
        _address(self.address)


@message(0x0095)
class DiscoverPeers(Message):
    """The results of one discovery round, to track.  Reply: :class:`PeersDiscovered`."""

    candidates: tuple[PeerCandidate, ...]

    def __post_init__(self) -> None:
        _tuple_of(self.candidates, PeerCandidate, "candidates")

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[DeviceId, str | None]]) -> DiscoverPeers:
        """The message carrying ``(peer_id, address)`` pairs.

        :raises WrongType, InvalidArgument: ``pairs`` is not an iterable of
            ``(DeviceId, address)`` tuples, naming the bad item.
        """
        return cls(_candidates(pairs))

    def to_pairs(self) -> tuple[tuple[DeviceId, str | None], ...]:
        """The ``(peer_id, address)`` pairs, for
        :meth:`~aura_sync.infrastructure.peers.PeerManager.track_discovered`."""
        return tuple((c.peer_id, c.address) for c in self.candidates)


def _candidates(pairs: object) -> tuple[PeerCandidate, ...]:
    if isinstance(pairs, str | bytes) or not isinstance(pairs, Iterable):
        raise WrongType(
            "pairs must be an iterable of (DeviceId, address) tuples, "
            f"got {type(pairs).__name__} {pairs!r}"
        )
    candidates = []
    for i, pair in enumerate(pairs):
        if type(pair) is not tuple or len(pair) != 2:
            raise WrongType(f"pairs[{i}] must be a (DeviceId, address) tuple, got {pair!r}")
        candidates.append(PeerCandidate(pair[0], pair[1]))
    return tuple(candidates)


@message(0x0096)
class PeersDiscovered(Message):
    """Answer to :class:`DiscoverPeers`: the peers that were newly tracked, each once."""

    added: tuple[DeviceId, ...]

    def __post_init__(self) -> None:
        _tuple_of(self.added, DeviceId, "added")
        _distinct_peers(self.added, "added")


@message(0x0097)
class RefreshDue(Message):
    """A scheduled tick (told, no reply): a discovery round may be due.

    The actor checks ``needs_refresh()`` and starts discovery if so.
    """


@message(0x0098)
class NeedsRefresh(Message):
    """Is a discovery round due?  Reply: :class:`RefreshNeededReply`."""


@message(0x0099)
class RefreshNeededReply(Message):
    """Answer to :class:`NeedsRefresh`."""

    needed: bool

    def __post_init__(self) -> None:
        check_bool(self.needed, "needed")


# --- statistics and the whole table -------------------------------------------------------


@message(0x009A)
class GetPeerStatistics(Message):
    """Ask for the peer statistics.  Reply: :class:`PeerStatisticsReply`."""


@message(0x009B)
class PeerStatisticsReply(Message):
    """The wire form of :class:`~aura_sync.infrastructure.peers.PeerManagerStatistics`."""

    total_tracked: int
    connected_peers: int
    available_peers: int
    peers_with_sync_capability: int
    total_active_sessions: int

    def __post_init__(self) -> None:
        for name in (
            "total_tracked",
            "connected_peers",
            "available_peers",
            "peers_with_sync_capability",
            "total_active_sessions",
        ):
            check_u64(getattr(self, name), name)

    @classmethod
    def from_statistics(cls, stats: PeerManagerStatistics) -> PeerStatisticsReply:
        """The reply that carries ``stats``."""
        if type(stats) is not PeerManagerStatistics:
            raise WrongType(f"stats must be PeerManagerStatistics, got {type(stats).__name__}")
        return cls(
            stats.total_tracked,
            stats.connected_peers,
            stats.available_peers,
            stats.peers_with_sync_capability,
            stats.total_active_sessions,
        )

    def to_statistics(self) -> PeerManagerStatistics:
        """The :class:`~aura_sync.infrastructure.peers.PeerManagerStatistics` it carries."""
        return PeerManagerStatistics(
            self.total_tracked,
            self.connected_peers,
            self.available_peers,
            self.peers_with_sync_capability,
            self.total_active_sessions,
        )


@message(0x009C)
class GetPeerTable(Message):
    """Ask for every tracked peer (the table snapshot).  Reply: :class:`PeerTableReply`."""


def _check_table(msg: PeerTableReply | RestorePeerTable) -> None:
    _tuple_of(msg.peers, PeerInfoReply, "peers")
    _float(msg, "last_discovery", optional=True)
    _to_snapshot(msg.peers, msg.last_discovery)  # duplicate ids


def _to_snapshot(peers: tuple[PeerInfoReply, ...], last: float | None) -> PeerTableSnapshot:
    return PeerTableSnapshot(tuple(p.to_info() for p in peers), last)


@message(0x009D)
class PeerTableReply(Message):
    """Answer to :class:`GetPeerTable`: every peer (sorted by id) and the last discovery time."""

    peers: tuple[PeerInfoReply, ...]
    last_discovery: float | None

    def __post_init__(self) -> None:
        _check_table(self)

    @classmethod
    def from_snapshot(cls, snapshot: PeerTableSnapshot) -> PeerTableReply:
        """The reply that carries ``snapshot``."""
        if type(snapshot) is not PeerTableSnapshot:
            raise WrongType(f"snapshot must be a PeerTableSnapshot, got {type(snapshot).__name__}")
        return cls(
            tuple(PeerInfoReply.from_info(i) for i in snapshot.peers), snapshot.last_discovery
        )

    def to_snapshot(self) -> PeerTableSnapshot:
        """The :class:`~aura_sync.infrastructure.peers.PeerTableSnapshot` it carries."""
        return _to_snapshot(self.peers, self.last_discovery)


@message(0x009E)
class RestorePeerTable(Message):
    """Replace the actor's table with this snapshot (e.g. loaded from disk).  Reply: ``Ack``."""

    peers: tuple[PeerInfoReply, ...]
    last_discovery: float | None

    def __post_init__(self) -> None:
        _check_table(self)

    @classmethod
    def from_snapshot(cls, snapshot: PeerTableSnapshot) -> RestorePeerTable:
        """The message that carries ``snapshot``."""
        reply = PeerTableReply.from_snapshot(snapshot)
        return cls(reply.peers, reply.last_discovery)

    def to_snapshot(self) -> PeerTableSnapshot:
        """The :class:`~aura_sync.infrastructure.peers.PeerTableSnapshot` it carries."""
        return _to_snapshot(self.peers, self.last_discovery)
