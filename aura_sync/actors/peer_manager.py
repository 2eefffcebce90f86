"""``PeerManagerActor``: the peer-management concern as an actor.

Role
    Owns one :class:`~aura_sync.infrastructure.peers.PeerManager` and answers
    the messages of :mod:`aura_sync.messages.peers`, one core call per
    message.  Expected failures (unknown peer, invalid transition, session
    limit, a capability token that does not verify, a full table) come back
    as ``ErrorReply``; the actor carries on.  ``PeerManagerClient`` in
    :mod:`aura_sync.actors.clients` wraps the asks.

Surviving restarts
    The manager (the whole peer table: statuses, scores' inputs, sessions,
    failure backoffs, capabilities) lives in the ``stash`` dict handed to
    every incarnation, under :data:`STASH_KEY`; a restarted incarnation
    continues with the same table.  :class:`~aura_sync.messages.peers.RestorePeerTable`
    replaces it (and the stash entry) with a snapshot, e.g. loaded from disk.

Periodic work
    A :class:`~aura_sync.messages.peers.RefreshDue` tick is scheduled every
    ``refresh_interval`` seconds through the :class:`~aura_sync.effects.Scheduler`
    (the actor never sleeps).  On a tick, if a discovery round is due
    (``needs_refresh()``) and a discovery effect was injected, the actor runs
    ``discover_peers(discovery)``; a failing round is logged and retried at
    the next tick.  The injected discovery runs on the actor's thread, so it
    **must not block** (a bootstrap list such as
    :class:`~aura_sync.infrastructure.peers.StaticDiscovery`, or a collector
    of peer-exchange results).  Slow discovery belongs elsewhere: run it in
    its own actor or thread and send the results as
    :class:`~aura_sync.messages.peers.DiscoverPeers`.  The tick is cancelled
    when the incarnation stops or crashes.

Layer: actors.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from aura_sync.actors._faults import FaultInjectionMixin, Ticker, check_stash, resolve_effects
from aura_sync.actors.base import AuraActor, handles
from aura_sync.effects import Clock, Scheduler
from aura_sync.errors import DiscoveryError, WrongType
from aura_sync.infrastructure.peers import PeerDiscovery, PeerDiscoveryConfig, PeerManager
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

__all__ = ["STASH_KEY", "PeerManagerActor"]

STASH_KEY: Final = "aura_sync.peers"
"""Key of the :class:`PeerManager` in the child's stash."""

_log = logging.getLogger(__name__)
_REFRESH_DUE: Final = RefreshDue()


class PeerManagerActor(FaultInjectionMixin, AuraActor):
    """The peer manager actor: one :class:`PeerManager`, reached by peer messages.

    Parameters
        config: the :class:`PeerDiscoveryConfig` (default: the defaults).
        clock: time source (seconds) for the core; default the scheduler's
            clock, else :class:`~aura_sync.effects.SystemClock`.
        scheduler: delivers the ``RefreshDue`` ticks; default one on ``clock``.
        discovery: optional non-blocking :class:`PeerDiscovery` effect run
            when a refresh is due (see the module docstring).
        stash: the dict that survives restarts (a ``ChildContext.stash``), or
            None for a private one.  If it holds a manager already, that
            manager (and its config) is used.
        fault_injection: honour ``InjectCrash`` (tests and demos only).

    Raises :class:`~aura_sync.errors.WrongType` /
    :class:`~aura_sync.errors.ConfigError` for bad arguments.

    Messages (reply): ``AddPeer`` (``PeerAdded``); ``RemovePeer``,
    ``SetPeerStatus``, ``UpdatePeerMetadata``, ``StartSyncSession``,
    ``EndSyncSession``, ``RestorePeerTable``, ``RefreshDue`` (``Ack``);
    ``GetPeer`` (``PeerInfoReply``); ``GetPeerScore`` (``PeerScoreReply``);
    ``IsPeerAvailable`` (``PeerAvailabilityReply``); ``SelectSyncPeers``
    (``SelectedPeers``); ``RecordFailure`` (``FailureRecorded``);
    ``UpdatePeerCapabilities`` (``CapabilitiesReply``); ``DiscoverPeers``
    (``PeersDiscovered``); ``NeedsRefresh`` (``RefreshNeededReply``);
    ``GetPeerStatistics`` (``PeerStatisticsReply``); ``GetPeerTable``
    (``PeerTableReply``); ``InjectCrash``.
    """

    def __init__(
        self,
        config: PeerDiscoveryConfig | None = None,
        *,
        clock: Clock | None = None,
        scheduler: Scheduler | None = None,
        discovery: PeerDiscovery | None = None,
        stash: dict[str, Any] | None = None,
        fault_injection: bool = False,
    ) -> None:
        super().__init__()
        self._init_faults(fault_injection)
        stash = check_stash(stash)
        clock, scheduler = resolve_effects(clock, scheduler)
        if discovery is not None and not callable(getattr(discovery, "discover", None)):
            raise WrongType(
                "discovery must have a discover(timeout) method, got "
                f"{type(discovery).__name__} {discovery!r}"
            )
        manager = stash.get(STASH_KEY)
        if manager is None:
            manager = PeerManager(config, clock=clock)
            stash[STASH_KEY] = manager
        elif not isinstance(manager, PeerManager):
            raise WrongType(
                f"stash[{STASH_KEY!r}] must be a PeerManager, got {type(manager).__name__}"
            )
        self._stash = stash
        self._peers: PeerManager = manager
        self._clock = clock
        self._scheduler = scheduler
        self._discovery = discovery
        self._ticker: Ticker | None = None

    @property
    def peers(self) -> PeerManager:
        """The owned core (for inspection from the actor's own thread)."""
        return self._peers

    # --- lifecycle ---

    def on_start(self) -> None:
        """Arm the refresh tick; with a discovery effect, run a due round at once."""
        self._ticker = Ticker(
            self._scheduler, self._peers.config.refresh_interval, self.address, _REFRESH_DUE
        )
        self._ticker.arm()
        if self._discovery is not None and self._peers.needs_refresh():
            self.address.tell(_REFRESH_DUE)

    def on_stop(self) -> None:
        """Cancel the refresh tick."""
        if self._ticker is not None:
            self._ticker.cancel()

    def on_crash(self, exc: BaseException) -> None:
        """Cancel the refresh tick (the table itself stays in the stash)."""
        self.on_stop()

    # --- membership and status ---

    @handles(AddPeer)
    def _add_peer(self, msg: AddPeer) -> PeerAdded:
        return PeerAdded(msg.peer_id, self._peers.add_peer(msg.peer_id, msg.address))

    @handles(RemovePeer)
    def _remove_peer(self, msg: RemovePeer) -> None:
        self._peers.remove_peer(msg.peer_id)

    @handles(SetPeerStatus)
    def _set_status(self, msg: SetPeerStatus) -> None:
        self._peers.set_peer_status(msg.peer_id, msg.status)

    @handles(UpdatePeerMetadata)
    def _update_metadata(self, msg: UpdatePeerMetadata) -> None:
        self._peers.update_peer_metadata(msg.peer_id, **msg.fields())

    # --- queries ---

    @handles(GetPeer)
    def _get_peer(self, msg: GetPeer) -> PeerInfoReply:
        return PeerInfoReply.from_info(self._peers.get_peer(msg.peer_id))

    @handles(GetPeerScore)
    def _score(self, msg: GetPeerScore) -> PeerScoreReply:
        return PeerScoreReply(msg.peer_id, self._peers.peer_score(msg.peer_id))

    @handles(IsPeerAvailable)
    def _available(self, msg: IsPeerAvailable) -> PeerAvailabilityReply:
        return PeerAvailabilityReply(msg.peer_id, self._peers.is_peer_available(msg.peer_id))

    @handles(SelectSyncPeers)
    def _select(self, msg: SelectSyncPeers) -> SelectedPeers:
        return SelectedPeers(tuple(self._peers.select_sync_peers(msg.count)))

    # --- sessions, failures, capabilities ---

    @handles(StartSyncSession)
    def _start_session(self, msg: StartSyncSession) -> None:
        self._peers.start_sync_session(msg.peer_id)

    @handles(EndSyncSession)
    def _end_session(self, msg: EndSyncSession) -> None:
        self._peers.end_sync_session(msg.peer_id, msg.success, msg.latency)

    @handles(RecordFailure)
    def _record_failure(self, msg: RecordFailure) -> FailureRecorded:
        return FailureRecorded(msg.peer_id, self._peers.record_failure(msg.peer_id))

    @handles(UpdatePeerCapabilities)
    def _capabilities(self, msg: UpdatePeerCapabilities) -> CapabilitiesReply:
        rights = self._peers.update_peer_capabilities(msg.peer_id, msg.token)
        return CapabilitiesReply(msg.peer_id, rights)

    # --- discovery ---

    @handles(DiscoverPeers)
    def _discovered(self, msg: DiscoverPeers) -> PeersDiscovered:
        return PeersDiscovered(tuple(self._peers.track_discovered(msg.to_pairs())))

    @handles(RefreshDue)
    def _refresh_due(self, msg: RefreshDue) -> None:
        if self._ticker is not None:
            self._ticker.arm()
        discovery = self._discovery
        if discovery is None or not self._peers.needs_refresh():
            return
        try:
            added = self._peers.discover_peers(discovery)
        except DiscoveryError as exc:
            _log.warning("%s: discovery round failed, retrying next tick: %s", self, exc)
            return
        if added:
            _log.info("%s: discovered %d new peer(s)", self, len(added))

    @handles(NeedsRefresh)
    def _needs_refresh(self, msg: NeedsRefresh) -> RefreshNeededReply:
        return RefreshNeededReply(self._peers.needs_refresh())

    # --- statistics and the table ---

    @handles(GetPeerStatistics)
    def _statistics(self, msg: GetPeerStatistics) -> PeerStatisticsReply:
        return PeerStatisticsReply.from_statistics(self._peers.statistics())

    @handles(GetPeerTable)
    def _table(self, msg: GetPeerTable) -> PeerTableReply:
        return PeerTableReply.from_snapshot(self._peers.snapshot())

    @handles(RestorePeerTable)
    def _restore(self, msg: RestorePeerTable) -> None:
        manager = PeerManager.restore(self._peers.config, msg.to_snapshot(), clock=self._clock)
        self._peers = manager
        self._stash[STASH_KEY] = manager
