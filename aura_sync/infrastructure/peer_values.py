"""The peer table's values: statuses and their transitions, a peer's metadata and entry,
the statistics and the snapshot (registered messages, tags 0x009C-0x009F), and the checks
of a restored entry.  Re-exported by :mod:`aura_sync.infrastructure.peers`.  Layer: cores.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from aura_sync._checks import check_clock_time, check_int
from aura_sync.effects import check_seconds
from aura_sync.errors import InvalidArgument, WrongType
from aura_sync.ids import DeviceId
from aura_sync.infrastructure.peer_scoring import PeerBan
from aura_sync.messages._base import Message, message

__all__ = [
    "ALLOWED_TRANSITIONS", "DEFAULT_TRUST_LEVEL", "LIVE_STATUSES", "MAX_ADDRESS_LENGTH",
    "METADATA_FIELDS", "PeerInfo", "PeerManagerStatistics", "PeerMetadata", "PeerStatus",
    "PeerTableSnapshot",
]  # fmt: skip

DEFAULT_TRUST_LEVEL: Final = 50  # of a new peer (0-100): neutral, the default minimum
MAX_ADDRESS_LENGTH: Final = 1024  # characters


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


class PeerStatus(enum.Enum):
    """Where a peer is in its connection life cycle."""

    DISCOVERED = "discovered"  # known, never contacted
    CONNECTING = "connecting"  # a connection attempt is in progress
    CONNECTED = "connected"  # usable for sync
    DEGRADED = "degraded"  # connected but misbehaving: not selected
    DISCONNECTED = "disconnected"  # was connected (or connecting), is not any more
    FAILED = "failed"  # the last attempt failed or the connection broke badly
    REMOVED = "removed"  # out of service for good (terminal; kept as a tombstone)


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
"""The moves :meth:`PeerManager.set_peer_status` allows (CONNECTED from any live status)."""

LIVE_STATUSES: Final = frozenset({_S.DISCOVERED, _S.CONNECTING, _S.CONNECTED, _S.DEGRADED})
"""Statuses of peers never evicted for a newcomer (but for an authorized one, see
:meth:`PeerManager.admit_peer`)."""


@message(0x009C)
class PeerMetadata(Message):
    """What the manager knows about one peer (times in clock seconds; ``latency_ewma`` in
    seconds over successful syncs; ``verified``: identity verified by mutual TLS)."""

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

    @property
    def success_rate(self) -> float:
        """``successful / (successful + failed)`` syncs, or 0.5 with no history."""
        total = self.successful_syncs + self.failed_syncs
        return self.successful_syncs / total if total else 0.5


METADATA_FIELDS: Final = frozenset({
    "trust_level", "has_sync_capability", "verified", "successful_syncs", "failed_syncs",
    "active_sessions",
})  # fmt: skip
"""Fields that :meth:`PeerManager.update_peer_metadata` may set."""


@message(0x009D)
class PeerInfo(Message):
    """One tracked peer: id, dial address (``"host:port"`` or None) and metadata.

    ``address_verified``: the peer gave it over a verified connection."""

    peer_id: DeviceId
    address: str | None
    metadata: PeerMetadata
    address_verified: bool = False

    @property
    def status(self) -> PeerStatus:
        """Shortcut for ``metadata.status``."""
        return self.metadata.status


@message(0x009E)
class PeerManagerStatistics(Message):
    """Counts over the peer table at one instant (REMOVED tombstones count as tracked)."""

    total_tracked: int
    connected_peers: int
    available_peers: int
    peers_with_sync_capability: int
    total_active_sessions: int


@message(0x009F)
class PeerTableSnapshot(Message):
    """The whole peer table (sorted by id), the last discovery time and the bans remembered
    (in force, or ended while their repeat count still counts)."""

    peers: tuple[PeerInfo, ...]
    last_discovery: float | None
    bans: tuple[PeerBan, ...] = ()


def _check_info(i: int, info: PeerInfo) -> None:
    """The values of a restored entry (from disk or the wire: the codec checked the types)."""
    where = f"snapshot.peers[{i}]"
    if type(info) is not PeerInfo:
        raise WrongType(f"{where} must be a PeerInfo, got {type(info).__name__}")
    _check_address(info.address, f"{where}.address")
    meta = info.metadata
    check_int(meta.trust_level, f"{where} trust_level", minimum=0, maximum=100)
    for name in ("successful_syncs", "failed_syncs", "active_sessions", "consecutive_failures"):
        check_int(getattr(meta, name), f"{where} {name}", minimum=0)
    for name in ("discovered_at", "last_seen", "last_status_change", "backoff_until"):
        if getattr(meta, name) is not None:
            check_clock_time(getattr(meta, name), f"{where} {name}")
    if meta.latency_ewma is not None:
        check_seconds(meta.latency_ewma, f"{where} latency_ewma")
