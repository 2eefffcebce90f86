"""Peer-manager requests, one per ``PeerManager`` operation, each naming its reply (tags
0x0080-0x009F; the core's values are 0x009C-0x009F).  The core checks the values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from aura_sync.ids import DeviceId
from aura_sync.infrastructure import PeerInfo, PeerStatus, PeerTableSnapshot
from aura_sync.infrastructure.peer_scoring import Offence, PeerBan
from aura_sync.messages._base import Request, message

__all__ = [
    "AddPeer", "AdmitPeer", "DiscoverPeers", "EndSyncSession", "GetPeer", "GetPeerTable",
    "IsPeerAvailable", "ListBans", "RecordFailure", "RefreshDue", "ReportOffence",
    "RestorePeerTable", "SelectSyncPeers", "SetPeerStatus", "StartSyncSession",
    "UpdatePeerMetadata",
]  # fmt: skip

R_co = TypeVar("R_co", covariant=True)


@dataclass(frozen=True, slots=True)
class _OfPeer(Request[R_co]):
    """A request about one peer (an unregistered base)."""

    peer_id: DeviceId


@message(0x0080)
class AddPeer(_OfPeer[bool]):
    """``add_peer(peer_id, address)``: True if new (the address is hearsay)."""

    address: str | None = None


@message(0x0084)
class SetPeerStatus(_OfPeer[None]):
    """``set_peer_status`` (the transitions are enforced)."""

    status: PeerStatus


@message(0x0088)
class UpdatePeerMetadata(_OfPeer[None]):
    """``update_peer_metadata``: the fields that are not None."""

    trust_level: int | None = None
    has_sync_capability: bool | None = None
    verified: bool | None = None


@message(0x0089)
class GetPeer(_OfPeer[PeerInfo]):
    """``get_peer``: the peer's snapshot."""


@message(0x008D)
class IsPeerAvailable(_OfPeer[bool]):
    """``is_peer_available``: can it take a sync session now?"""


@message(0x008E)
class SelectSyncPeers(Request[tuple[DeviceId, ...]]):
    """``select_sync_peers(count)``: best first."""

    count: int


@message(0x008F)
class StartSyncSession(_OfPeer[int]):
    """``start_sync_session``: the peer's active session count."""


@message(0x0090)
class EndSyncSession(_OfPeer[None]):
    """``end_sync_session``: ``latency`` in seconds."""

    success: bool
    latency: float


@message(0x0091)
class RecordFailure(_OfPeer[float]):
    """``record_failure`` (outside a session): the backoff in seconds."""


@message(0x0093)
class DiscoverPeers(Request[tuple[DeviceId, ...]]):
    """``track_discovered``: one discovery round's ``(peer_id, address)`` pairs; the new peers."""

    candidates: tuple[tuple[DeviceId, str | None], ...]


@message(0x0094)
class RefreshDue(Request[None]):
    """The refresh tick (also told by the actor's timer): discover if due."""


@message(0x0095)
class AdmitPeer(_OfPeer[tuple[str, ...]]):
    """``admit_peer``: a connected peer's token; the rights (a slot only once it verifies)."""

    address: str | None
    token: bytes


@message(0x0099)
class ReportOffence(_OfPeer[PeerBan | None]):
    """``report_offence``: lower the peer's trust; the ban this offence earned, if any."""

    offence: Offence
    address: str | None = None


@message(0x009A)
class ListBans(Request[tuple[PeerBan, ...]]):
    """``bans()``: the bans in force, by id."""


@message(0x0097)
class GetPeerTable(Request[PeerTableSnapshot]):
    """``snapshot()``: the whole table."""


@message(0x0098)
class RestorePeerTable(Request[None]):
    """Replace the table with ``snapshot`` (``PeerManager.restore`` checks it)."""

    snapshot: PeerTableSnapshot
