"""``CacheActor``: the epoch-based cache concern as an actor.

Role
    Owns one :class:`~aura_sync.infrastructure.cache.CacheManager` and
    answers the messages of :mod:`aura_sync.messages.cache`, one core call
    per message.  Expected failures (a bad key or epoch) come back as
    ``ErrorReply``; the actor carries on.  :class:`~aura_sync.actors.cache.CacheClient`
    in :mod:`aura_sync.actors.clients` wraps the asks.

Surviving restarts
    The manager lives in the ``stash`` dict handed to every incarnation
    (a supervisor's :class:`~aura_sync.supervisors.ChildContext.stash`), under
    :data:`STASH_KEY`.  A restarted incarnation continues with the very same
    manager: floors (which never go down), conservative eviction buckets,
    stored values and counters are all kept, so a crash can never make
    stale data look fresh.  Without a stash (an unsupervised actor) the
    manager is private to the actor.

Integration
    Started by :func:`aura_sync.supervisors.infrastructure.infrastructure_supervisor`
    (first child of the infrastructure supervisor).  Handles
    :class:`~aura_sync.messages.faults.InjectCrash` when created with
    ``fault_injection=True``.

Layer: actors.
"""

from __future__ import annotations

from typing import Any, Final

from aura_sync.actors._faults import FaultInjectionMixin, check_stash
from aura_sync.actors.base import AuraActor, handles
from aura_sync.errors import WrongType
from aura_sync.infrastructure.cache import DEFAULT_MAX_KEYS, DEFAULT_MAX_VALUES, CacheManager
from aura_sync.messages.cache import (
    ApplyInvalidation,
    CacheSnapshotReply,
    CacheStatisticsReply,
    ClearCache,
    EpochFloorReply,
    FreshnessReply,
    GetCacheSnapshot,
    GetCacheStatistics,
    GetEpochFloor,
    GetValue,
    InvalidateKeys,
    IsFresh,
    PutValue,
    RaiseFloorAll,
    RestoreCacheFloors,
    ValueReply,
    ValueStored,
)

__all__ = ["STASH_KEY", "CacheActor"]

STASH_KEY: Final = "aura_sync.cache"
"""Key of the :class:`CacheManager` in the child's stash."""


class CacheActor(FaultInjectionMixin, AuraActor):
    """The cache actor: one :class:`CacheManager`, reached by cache messages.

    Parameters
        max_keys: keys whose floors are tracked exactly (>= 1); 1024.
        max_values: value-store capacity in entries (>= 0; 0 disables it); 1024.
        eviction_buckets: conservative-eviction buckets (>= 1) or None (= ``max_keys``).
        stash: the dict that survives restarts (a ``ChildContext.stash``), or
            None for a private one.  If it already holds a manager (an earlier
            incarnation's), that manager is used and the sizes are ignored.
        fault_injection: honour ``InjectCrash`` (tests and demos only).

    Raises :class:`~aura_sync.errors.WrongType` /
    :class:`~aura_sync.errors.InvalidArgument` for bad arguments (naming them).

    Messages (reply):  ``InvalidateKeys``, ``ApplyInvalidation``,
    ``RaiseFloorAll``, ``ClearCache``, ``RestoreCacheFloors`` (``Ack``);
    ``IsFresh`` (``FreshnessReply``); ``GetEpochFloor`` (``EpochFloorReply``);
    ``PutValue`` (``ValueStored``); ``GetValue`` (``ValueReply``);
    ``GetCacheStatistics`` (``CacheStatisticsReply``); ``GetCacheSnapshot``
    (``CacheSnapshotReply``); ``InjectCrash`` (crash, or ``InvalidArgument``).
    """

    def __init__(
        self,
        max_keys: int = DEFAULT_MAX_KEYS,
        *,
        max_values: int = DEFAULT_MAX_VALUES,
        eviction_buckets: int | None = None,
        stash: dict[str, Any] | None = None,
        fault_injection: bool = False,
    ) -> None:
        super().__init__()
        self._init_faults(fault_injection)
        stash = check_stash(stash)
        cache = stash.get(STASH_KEY)
        if cache is None:
            cache = CacheManager(max_keys, max_values=max_values, eviction_buckets=eviction_buckets)
            stash[STASH_KEY] = cache
        elif not isinstance(cache, CacheManager):
            raise WrongType(
                f"stash[{STASH_KEY!r}] must be a CacheManager, got {type(cache).__name__}"
            )
        self._cache: CacheManager = cache

    @property
    def cache(self) -> CacheManager:
        """The owned core (for tests and inspection from the actor's own thread)."""
        return self._cache

    # --- invalidation ---

    @handles(InvalidateKeys)
    def _invalidate_keys(self, msg: InvalidateKeys) -> None:
        self._cache.invalidate_keys(msg.keys, msg.epoch)

    @handles(ApplyInvalidation)
    def _apply_invalidation(self, msg: ApplyInvalidation) -> None:
        self._cache.apply_invalidation(msg.to_event())

    @handles(RaiseFloorAll)
    def _raise_floor_all(self, msg: RaiseFloorAll) -> None:
        self._cache.raise_floor_all(msg.epoch)

    @handles(ClearCache)
    def _clear(self, msg: ClearCache) -> None:
        self._cache.clear()

    # --- freshness ---

    @handles(IsFresh)
    def _is_fresh(self, msg: IsFresh) -> FreshnessReply:
        return FreshnessReply(msg.key, msg.epoch, self._cache.is_fresh(msg.key, msg.epoch))

    @handles(GetEpochFloor)
    def _epoch_floor(self, msg: GetEpochFloor) -> EpochFloorReply:
        return EpochFloorReply(msg.key, self._cache.epoch_floor(msg.key))

    # --- value store ---

    @handles(PutValue)
    def _put(self, msg: PutValue) -> ValueStored:
        return ValueStored(msg.key, self._cache.put(msg.key, msg.value, msg.epoch))

    @handles(GetValue)
    def _get(self, msg: GetValue) -> ValueReply:
        value = self._cache.get(msg.key, msg.current_epoch)
        return ValueReply(msg.key, value)

    # --- statistics and snapshots ---

    @handles(GetCacheStatistics)
    def _statistics(self, msg: GetCacheStatistics) -> CacheStatisticsReply:
        return CacheStatisticsReply.from_statistics(self._cache.statistics())

    @handles(GetCacheSnapshot)
    def _snapshot(self, msg: GetCacheSnapshot) -> CacheSnapshotReply:
        return CacheSnapshotReply.from_snapshot(self._cache.snapshot())

    @handles(RestoreCacheFloors)
    def _restore(self, msg: RestoreCacheFloors) -> None:
        self._cache.restore(msg.to_snapshot())
