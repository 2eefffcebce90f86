"""Typed clients of the four infrastructure actors: plain calls, typed errors, asyncio forms.

Each client wraps an actor's stable :class:`~aura_sync.actors.ActorAddress`
(valid across restarts) and turns every operation into one ask with a
timeout (the client's default, 5 s, or the call's ``timeout=`` in seconds):

* the reply is converted to the plain value the core would return
  (``bool``, ``int``, a statistics dataclass, a ``PeerInfo``...);
* an :class:`~aura_sync.messages.ErrorReply` is raised as the
  :mod:`aura_sync.errors` exception it stands for (``UnknownPeer``,
  ``InvalidHandle``, ``AcquireTimeout``, ``ActorCrashed``...);
* no reply in time raises :class:`~aura_sync.errors.AskTimeout`.

Arguments are validated before anything is sent (message construction
validates every field), so a bad call raises ``WrongType`` /
``InvalidArgument`` naming the argument and value.

Every method has an asyncio form named ``<method>_async`` that awaits the
reply without blocking the event loop (``await pool.acquire_async(peer)``).
The blocking forms must not be called from inside an actor (an actor
never blocks: it tells and handles the reply, or defers).

Layer: actors.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from aura_sync.actors.client import ActorClient
from aura_sync.errors import (
    ActorCrashed,
    InvalidArgument,
    WrongType,
)
from aura_sync.ids import DeviceId
from aura_sync.infrastructure.peers import (
    METADATA_FIELDS,
    PeerInfo,
    PeerManagerStatistics,
    PeerStatus,
    PeerTableSnapshot,
)
from aura_sync.messages import Ack, ErrorReply
from aura_sync.messages.faults import InjectCrash
from aura_sync.messages.peers import (
    AddPeer,
    CapabilitiesReply,
    DiscoverPeers,
    EndSyncSession,
    FailureRecorded,
    GetPeer,
    GetPeerScore,
    GetPeerStatistics,
    GetPeerTable,
    IsPeerAvailable,
    NeedsRefresh,
    PeerAdded,
    PeerAvailabilityReply,
    PeerInfoReply,
    PeerScoreReply,
    PeersDiscovered,
    PeerStatisticsReply,
    PeerTableReply,
    RecordFailure,
    RefreshDue,
    RefreshNeededReply,
    RemovePeer,
    RestorePeerTable,
    SelectedPeers,
    SelectSyncPeers,
    SetPeerStatus,
    StartSyncSession,
    UpdatePeerCapabilities,
    UpdatePeerMetadata,
)

__all__ = [
    "InfrastructureClient",
    "PeerManagerClient",
]

_log = logging.getLogger(__name__)

Timeout = float | None


class InfrastructureClient(ActorClient):
    """Base of the four infrastructure clients: adds :meth:`inject_crash`.

    ``address``: the actor's address; ``timeout``: default ask timeout in
    seconds (> 0).
    """

    __slots__ = ()

    def inject_crash(self, reason: str = "injected crash", *, timeout: Timeout = None) -> None:
        """Make the actor crash (fault injection; the supervisor restarts it).

        Returns once the actor has crashed on it.  Raises
        :class:`~aura_sync.errors.InvalidArgument` if the actor was created
        without fault injection (nothing happens then), ``AskTimeout``.
        """
        self._crashed(self._address.ask(InjectCrash(reason), self._pick(timeout)))

    async def inject_crash_async(
        self, reason: str = "injected crash", *, timeout: Timeout = None
    ) -> None:
        """Async form of :meth:`inject_crash`."""
        self._crashed(await self._address.ask_async(InjectCrash(reason), self._pick(timeout)))

    def _pick(self, timeout: Timeout) -> float:
        return self._timeout if timeout is None else timeout

    def _crashed(self, reply: Any) -> None:
        if isinstance(reply, ErrorReply):
            if reply.error_type == ActorCrashed.__name__:
                return
            raise reply.to_exception()
        raise InvalidArgument(f"{self._address.name} did not crash on InjectCrash: {reply!r}")


# --- peers ---------------------------------------------------------------------------------


def _metadata_message(peer_id: DeviceId, fields: dict[str, Any]) -> UpdatePeerMetadata:
    unknown = sorted(set(fields) - METADATA_FIELDS)
    if unknown:
        raise InvalidArgument(
            f"unknown peer metadata field(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(METADATA_FIELDS))}"
        )
    return UpdatePeerMetadata(peer_id, **fields)


def _discover_message(candidates: object) -> DiscoverPeers:
    if isinstance(candidates, str | bytes) or not isinstance(candidates, Iterable):
        raise WrongType(
            "candidates must be an iterable of (DeviceId, address) pairs, got "
            f"{type(candidates).__name__}"
        )
    pairs = []
    for i, item in enumerate(candidates):
        if type(item) is not tuple or len(item) != 2:
            raise WrongType(f"candidates[{i}] must be a (DeviceId, address) tuple, got {item!r}")
        pairs.append(item)
    return DiscoverPeers.from_pairs(pairs)


class PeerManagerClient(InfrastructureClient):
    """Client of a :class:`~aura_sync.actors.peer_manager.PeerManagerActor`.

    Unknown peers raise :class:`~aura_sync.errors.UnknownPeer`; refused
    transitions ``InvalidTransition``; sessions at the limit
    ``SessionLimitReached`` (or ``PeerUnavailable``).
    """

    __slots__ = ()

    def add_peer(
        self, peer_id: DeviceId, address: str | None = None, *, timeout: Timeout = None
    ) -> bool:
        """Track ``peer_id``; True if new (False: already tracked, address refreshed)."""
        return self._call(AddPeer(peer_id, address), PeerAdded, timeout).added

    async def add_peer_async(
        self, peer_id: DeviceId, address: str | None = None, *, timeout: Timeout = None
    ) -> bool:
        """Async form of :meth:`add_peer`."""
        return (await self._call_async(AddPeer(peer_id, address), PeerAdded, timeout)).added

    def remove_peer(self, peer_id: DeviceId, *, timeout: Timeout = None) -> None:
        """Forget ``peer_id`` entirely."""
        self._call(RemovePeer(peer_id), Ack, timeout)

    async def remove_peer_async(self, peer_id: DeviceId, *, timeout: Timeout = None) -> None:
        """Async form of :meth:`remove_peer`."""
        await self._call_async(RemovePeer(peer_id), Ack, timeout)

    def set_peer_status(
        self, peer_id: DeviceId, status: PeerStatus, *, timeout: Timeout = None
    ) -> None:
        """Move ``peer_id`` to ``status`` (the status machine is enforced)."""
        self._call(SetPeerStatus(peer_id, status), Ack, timeout)

    async def set_peer_status_async(
        self, peer_id: DeviceId, status: PeerStatus, *, timeout: Timeout = None
    ) -> None:
        """Async form of :meth:`set_peer_status`."""
        await self._call_async(SetPeerStatus(peer_id, status), Ack, timeout)

    def update_peer_metadata(
        self, peer_id: DeviceId, *, timeout: Timeout = None, **fields: Any
    ) -> None:
        """Set metadata fields (trust_level, has_sync_capability, verified,
        successful_syncs, failed_syncs, active_sessions)."""
        self._call(_metadata_message(peer_id, fields), Ack, timeout)

    async def update_peer_metadata_async(
        self, peer_id: DeviceId, *, timeout: Timeout = None, **fields: Any
    ) -> None:
        """Async form of :meth:`update_peer_metadata`."""
        await self._call_async(_metadata_message(peer_id, fields), Ack, timeout)

    def get_peer(self, peer_id: DeviceId, *, timeout: Timeout = None) -> PeerInfo:
        """An immutable snapshot of one peer."""
        return self._call(GetPeer(peer_id), PeerInfoReply, timeout).to_info()

    async def get_peer_async(self, peer_id: DeviceId, *, timeout: Timeout = None) -> PeerInfo:
        """Async form of :meth:`get_peer`."""
        return (await self._call_async(GetPeer(peer_id), PeerInfoReply, timeout)).to_info()

    def peer_score(self, peer_id: DeviceId, *, timeout: Timeout = None) -> float:
        """The peer's selection score in [0, 1]."""
        return self._call(GetPeerScore(peer_id), PeerScoreReply, timeout).score

    async def peer_score_async(self, peer_id: DeviceId, *, timeout: Timeout = None) -> float:
        """Async form of :meth:`peer_score`."""
        return (await self._call_async(GetPeerScore(peer_id), PeerScoreReply, timeout)).score

    def is_peer_available(self, peer_id: DeviceId, *, timeout: Timeout = None) -> bool:
        """Whether the peer can take a sync session now."""
        return self._call(IsPeerAvailable(peer_id), PeerAvailabilityReply, timeout).available

    async def is_peer_available_async(self, peer_id: DeviceId, *, timeout: Timeout = None) -> bool:
        """Async form of :meth:`is_peer_available`."""
        reply = await self._call_async(IsPeerAvailable(peer_id), PeerAvailabilityReply, timeout)
        return reply.available

    def select_sync_peers(self, count: int, *, timeout: Timeout = None) -> list[DeviceId]:
        """At most ``count`` peers to sync with now, best first."""
        return list(self._call(SelectSyncPeers(count), SelectedPeers, timeout).peers)

    async def select_sync_peers_async(
        self, count: int, *, timeout: Timeout = None
    ) -> list[DeviceId]:
        """Async form of :meth:`select_sync_peers`."""
        return list((await self._call_async(SelectSyncPeers(count), SelectedPeers, timeout)).peers)

    def start_sync_session(self, peer_id: DeviceId, *, timeout: Timeout = None) -> None:
        """Open a sync session with the peer (refused at the limit or when unavailable)."""
        self._call(StartSyncSession(peer_id), Ack, timeout)

    async def start_sync_session_async(self, peer_id: DeviceId, *, timeout: Timeout = None) -> None:
        """Async form of :meth:`start_sync_session`."""
        await self._call_async(StartSyncSession(peer_id), Ack, timeout)

    def end_sync_session(
        self, peer_id: DeviceId, success: bool, latency: float, *, timeout: Timeout = None
    ) -> None:
        """Close a session and record its outcome (``latency`` in seconds)."""
        self._call(EndSyncSession(peer_id, success, latency), Ack, timeout)

    async def end_sync_session_async(
        self, peer_id: DeviceId, success: bool, latency: float, *, timeout: Timeout = None
    ) -> None:
        """Async form of :meth:`end_sync_session`."""
        await self._call_async(EndSyncSession(peer_id, success, latency), Ack, timeout)

    def record_failure(self, peer_id: DeviceId, *, timeout: Timeout = None) -> float:
        """Record a failure outside a session; returns the backoff in seconds."""
        return self._call(RecordFailure(peer_id), FailureRecorded, timeout).backoff

    async def record_failure_async(self, peer_id: DeviceId, *, timeout: Timeout = None) -> float:
        """Async form of :meth:`record_failure`."""
        return (await self._call_async(RecordFailure(peer_id), FailureRecorded, timeout)).backoff

    def update_peer_capabilities(
        self, peer_id: DeviceId, token: bytes, *, timeout: Timeout = None
    ) -> tuple[str, ...]:
        """Verify the peer's Biscuit token; returns the granted rights (CapabilityError if not)."""
        message = UpdatePeerCapabilities(peer_id, token)
        return self._call(message, CapabilitiesReply, timeout).capabilities

    async def update_peer_capabilities_async(
        self, peer_id: DeviceId, token: bytes, *, timeout: Timeout = None
    ) -> tuple[str, ...]:
        """Async form of :meth:`update_peer_capabilities`."""
        message = UpdatePeerCapabilities(peer_id, token)
        return (await self._call_async(message, CapabilitiesReply, timeout)).capabilities

    def track_discovered(
        self, candidates: Iterable[tuple[DeviceId, str | None]], *, timeout: Timeout = None
    ) -> list[DeviceId]:
        """Apply one discovery round's ``(peer_id, address)`` pairs; returns the new peers."""
        return list(self._call(_discover_message(candidates), PeersDiscovered, timeout).added)

    async def track_discovered_async(
        self, candidates: Iterable[tuple[DeviceId, str | None]], *, timeout: Timeout = None
    ) -> list[DeviceId]:
        """Async form of :meth:`track_discovered`."""
        reply = await self._call_async(_discover_message(candidates), PeersDiscovered, timeout)
        return list(reply.added)

    def needs_refresh(self, *, timeout: Timeout = None) -> bool:
        """Whether a discovery round is due."""
        return self._call(NeedsRefresh(), RefreshNeededReply, timeout).needed

    async def needs_refresh_async(self, *, timeout: Timeout = None) -> bool:
        """Async form of :meth:`needs_refresh`."""
        return (await self._call_async(NeedsRefresh(), RefreshNeededReply, timeout)).needed

    def refresh(self, *, timeout: Timeout = None) -> None:
        """Run the refresh tick now (discovery if due and configured); restarts its period."""
        self._call(RefreshDue(), Ack, timeout)

    async def refresh_async(self, *, timeout: Timeout = None) -> None:
        """Async form of :meth:`refresh`."""
        await self._call_async(RefreshDue(), Ack, timeout)

    def statistics(self, *, timeout: Timeout = None) -> PeerManagerStatistics:
        """Counts over the peer table."""
        return self._call(GetPeerStatistics(), PeerStatisticsReply, timeout).to_statistics()

    async def statistics_async(self, *, timeout: Timeout = None) -> PeerManagerStatistics:
        """Async form of :meth:`statistics`."""
        reply = await self._call_async(GetPeerStatistics(), PeerStatisticsReply, timeout)
        return reply.to_statistics()

    def snapshot(self, *, timeout: Timeout = None) -> PeerTableSnapshot:
        """The whole peer table (to persist it)."""
        return self._call(GetPeerTable(), PeerTableReply, timeout).to_snapshot()

    async def snapshot_async(self, *, timeout: Timeout = None) -> PeerTableSnapshot:
        """Async form of :meth:`snapshot`."""
        return (await self._call_async(GetPeerTable(), PeerTableReply, timeout)).to_snapshot()

    def restore(self, snapshot: PeerTableSnapshot, *, timeout: Timeout = None) -> None:
        """Replace the peer table with ``snapshot``."""
        self._call(RestorePeerTable.from_snapshot(snapshot), Ack, timeout)

    async def restore_async(self, snapshot: PeerTableSnapshot, *, timeout: Timeout = None) -> None:
        """Async form of :meth:`restore`."""
        await self._call_async(RestorePeerTable.from_snapshot(snapshot), Ack, timeout)
