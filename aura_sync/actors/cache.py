"""``CacheActor``: one :class:`CacheManager`, one handler per request of
:mod:`aura_sync.messages.cache`, each returning the core's value as is.

The manager lives in the ``stash`` under :data:`STASH_KEY`, so a restarted
incarnation keeps floors (which never go down), stored values and counters.
"""

from __future__ import annotations

from typing import Any, Final

from aura_sync.actors._faults import FaultInjectionMixin, check_stash
from aura_sync.actors.base import AuraActor, handles
from aura_sync.errors import WrongType
from aura_sync.ids import Epoch
from aura_sync.infrastructure.cache import (
    DEFAULT_MAX_KEYS,
    DEFAULT_MAX_VALUES,
    CacheFloorSnapshot,
    CacheManager,
    CacheStatistics,
)
from aura_sync.messages import cache as m

__all__ = ["STASH_KEY", "CacheActor"]

STASH_KEY: Final = "aura_sync.cache"
"""Key of the :class:`CacheManager` in the child's stash."""


class CacheActor(FaultInjectionMixin, AuraActor):
    """The cache actor.

    ``max_keys``, ``max_values``, ``eviction_buckets``: the manager's sizes
    (ignored when the stash already holds a manager); ``stash``: the dict that
    survives restarts (None: a private one); ``fault_injection``: honour
    ``InjectCrash`` (tests and demos).
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
        """The owned core (for tests, from the actor's own thread)."""
        return self._cache

    @handles(m.InvalidateKeys)
    def _invalidate_keys(self, msg: m.InvalidateKeys) -> None:
        self._cache.invalidate_keys(msg.keys, msg.epoch)

    @handles(m.ApplyInvalidation)
    def _apply_invalidation(self, msg: m.ApplyInvalidation) -> None:
        self._cache.apply_invalidation(msg.event)

    @handles(m.RaiseFloorAll)
    def _raise_floor_all(self, msg: m.RaiseFloorAll) -> None:
        self._cache.raise_floor_all(msg.epoch)

    @handles(m.ClearCache)
    def _clear(self, msg: m.ClearCache) -> None:
        self._cache.clear()

    @handles(m.IsFresh)
    def _is_fresh(self, msg: m.IsFresh) -> bool:
        return self._cache.is_fresh(msg.key, msg.epoch)

    @handles(m.GetEpochFloor)
    def _epoch_floor(self, msg: m.GetEpochFloor) -> Epoch:
        return self._cache.epoch_floor(msg.key)

    @handles(m.PutValue)
    def _put(self, msg: m.PutValue) -> bool:
        return self._cache.put(msg.key, msg.value, msg.epoch)

    @handles(m.GetValue)
    def _get(self, msg: m.GetValue) -> bytes | None:
        value: bytes | None = self._cache.get(msg.key, msg.current_epoch)
        return value

    @handles(m.DiscardValue)
    def _discard(self, msg: m.DiscardValue) -> bool:
        return self._cache.discard(msg.key)

    @handles(m.GetCacheStatistics)
    def _statistics(self, msg: m.GetCacheStatistics) -> CacheStatistics:
        return self._cache.statistics()

    @handles(m.GetCacheSnapshot)
    def _snapshot(self, msg: m.GetCacheSnapshot) -> CacheFloorSnapshot:
        return self._cache.snapshot()

    @handles(m.RestoreCacheFloors)
    def _restore(self, msg: m.RestoreCacheFloors) -> None:
        self._cache.restore(msg.snapshot)
