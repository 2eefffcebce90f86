"""``PeerManagerActor``: the peer manager as an actor, one core call per request.

Replies are the core's values; expected failures come back as ``ErrorReply``.  The
table lives in the child's stash (it survives restarts).  A ``RefreshDue`` tick runs
a due round of the injected discovery on the actor's thread, so it must not block.
"""

from __future__ import annotations

import logging
from typing import Any, Final, cast

from aura_sync.actors._faults import FaultInjectionMixin, Ticker, check_stash, resolve_effects
from aura_sync.actors.base import AuraActor, forward, handles
from aura_sync.effects import Clock, Scheduler
from aura_sync.errors import DiscoveryError, WrongType
from aura_sync.ids import DeviceId
from aura_sync.infrastructure import PeerDiscovery, PeerDiscoveryConfig, PeerManager
from aura_sync.messages import peers as msgs

__all__ = ["STASH_KEY", "PeerManagerActor"]

STASH_KEY: Final = "aura_sync.peers"
"""Key of the :class:`PeerManager` in the child's stash."""

_log = logging.getLogger(__name__)
_REFRESH_DUE: Final = msgs.RefreshDue()
_FIELDS: Final = ("trust_level", "has_sync_capability", "verified")


class PeerManagerActor(FaultInjectionMixin, AuraActor):
    """One :class:`PeerManager` (kept in ``stash``; one found there is used as it is);
    ``discovery``: an optional non-blocking :class:`PeerDiscovery` run when due."""

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
            kind = type(discovery).__name__
            raise WrongType(f"discovery must have a discover(timeout) method, got {kind}")
        if STASH_KEY not in stash:
            stash[STASH_KEY] = PeerManager(config, clock=clock)
        self._stash, self._peers = stash, cast(PeerManager, stash[STASH_KEY])
        self._clock = clock
        self._scheduler = scheduler
        self._discovery = discovery
        self._ticker: Ticker | None = None

    def on_start(self) -> None:
        """Arm the refresh tick; with a discovery effect, run a due round at once."""
        interval = self._peers.config.refresh_interval
        self._ticker = Ticker(self._scheduler, interval, self.address, _REFRESH_DUE)
        self._ticker.arm()
        if self._discovery is not None and self._peers.needs_refresh():
            self.address.tell(_REFRESH_DUE)

    def on_crash(self, exc: BaseException) -> None:
        """Cancel the refresh tick (the table stays in the stash)."""
        self.on_stop()

    def on_stop(self) -> None:
        """Cancel the refresh tick."""
        if self._ticker is not None:
            self._ticker.cancel()

    @handles(msgs.IsPeerAvailable)  # a bench row's hot path, without forward's indirection
    def _available(self, msg: msgs.IsPeerAvailable) -> bool:
        return self._peers.is_peer_available(msg.peer_id)

    _add = forward("_peers", "add_peer", msgs.AddPeer)
    _set_status = forward("_peers", "set_peer_status", msgs.SetPeerStatus)
    _get = forward("_peers", "get_peer", msgs.GetPeer)
    _start_session = forward("_peers", "start_sync_session", msgs.StartSyncSession)
    _end_session = forward("_peers", "end_sync_session", msgs.EndSyncSession)
    _failure = forward("_peers", "record_failure", msgs.RecordFailure)
    _admit = forward("_peers", "admit_peer", msgs.AdmitPeer)
    _offence = forward("_peers", "report_offence", msgs.ReportOffence)
    _bans = forward("_peers", "bans", msgs.ListBans)
    _table = forward("_peers", "snapshot", msgs.GetPeerTable)

    @handles(msgs.UpdatePeerMetadata)
    def _update(self, msg: msgs.UpdatePeerMetadata) -> None:
        fields = {f: v for f in _FIELDS if (v := getattr(msg, f)) is not None}
        self._peers.update_peer_metadata(msg.peer_id, **fields)

    @handles(msgs.SelectSyncPeers)
    def _select(self, msg: msgs.SelectSyncPeers) -> tuple[DeviceId, ...]:
        return tuple(self._peers.select_sync_peers(msg.count))

    @handles(msgs.DiscoverPeers)
    def _discovered(self, msg: msgs.DiscoverPeers) -> tuple[DeviceId, ...]:
        return tuple(self._peers.track_discovered(msg.candidates))

    @handles(msgs.RefreshDue)
    def _refresh_due(self, msg: msgs.RefreshDue) -> None:
        if self._ticker is not None:
            self._ticker.arm()
        if self._discovery is None or not self._peers.needs_refresh():
            return
        try:
            self._peers.discover_peers(self._discovery)
        except DiscoveryError as exc:
            _log.warning("%s: discovery round failed, retrying next tick: %s", self, exc)

    @handles(msgs.RestorePeerTable)
    def _restore(self, msg: msgs.RestorePeerTable) -> None:
        manager = PeerManager.restore(self._peers.config, msg.snapshot, clock=self._clock)
        self._peers = self._stash[STASH_KEY] = manager
