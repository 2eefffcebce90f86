"""``CacheActor``: one :class:`CacheManager` answering the requests of
:mod:`aura_sync.messages.cache`, each with the core's own value.

The manager lives in the ``stash`` under :data:`STASH_KEY`, so a restarted
incarnation keeps floors (which never go down), stored values and counters.
"""

from __future__ import annotations

from typing import Any, Final

from aura_sync.actors._faults import FaultInjectionMixin, check_stash
from aura_sync.actors.base import AuraActor, forward, handles
from aura_sync.infrastructure.cache import DEFAULT_MAX_KEYS, DEFAULT_MAX_VALUES, CacheManager
from aura_sync.messages import cache as m

__all__ = ["STASH_KEY", "CacheActor"]

STASH_KEY: Final = "aura_sync.cache"
"""Key of the :class:`CacheManager` in the child's stash."""


class CacheActor(FaultInjectionMixin, AuraActor):
    """The cache actor: ``max_keys``, ``max_values``, ``eviction_buckets`` size a new
    manager (one already in ``stash`` is used as is); ``fault_injection``: honour
    ``InjectCrash``."""

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
        if STASH_KEY not in stash:
            stash[STASH_KEY] = CacheManager(
                max_keys, max_values=max_values, eviction_buckets=eviction_buckets
            )
        self._cache: CacheManager = stash[STASH_KEY]

    @handles(m.IsFresh)  # the hot path, without forward's indirection
    def _is_fresh(self, msg: m.IsFresh) -> bool:
        return self._cache.is_fresh(msg.key, msg.epoch)

    _invalidate_keys = forward("_cache", "invalidate_keys", m.InvalidateKeys)
    _apply_invalidation = forward("_cache", "apply_invalidation", m.ApplyInvalidation)
    _raise_floor_all = forward("_cache", "raise_floor_all", m.RaiseFloorAll)
    _clear = forward("_cache", "clear", m.ClearCache)
    _epoch_floor = forward("_cache", "epoch_floor", m.GetEpochFloor)
    _put = forward("_cache", "put", m.PutValue)
    _get = forward("_cache", "get", m.GetValue)
    _discard = forward("_cache", "discard", m.DiscardValue)
    _statistics = forward("_cache", "statistics", m.GetCacheStatistics)
    _snapshot = forward("_cache", "snapshot", m.GetCacheSnapshot)
    _restore = forward("_cache", "restore", m.RestoreCacheFloors)
