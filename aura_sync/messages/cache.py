"""Cache requests (tags 0x0040-0x005F): one per ``CacheManager`` operation, each
naming the core method's return type; the core checks the values."""

from __future__ import annotations

from aura_sync.ids import Epoch
from aura_sync.infrastructure.cache import CacheFloorSnapshot, CacheInvalidation, CacheStatistics
from aura_sync.messages._base import Request, message


@message(0x0040)
class InvalidateKeys(Request[None]):
    """``CacheManager.invalidate_keys(keys, epoch)``."""

    keys: tuple[str, ...]
    epoch: int


@message(0x0041)
class ApplyInvalidation(Request[None]):
    """``CacheManager.apply_invalidation(event)``."""

    event: CacheInvalidation


@message(0x0042)
class RaiseFloorAll(Request[None]):
    """``CacheManager.raise_floor_all(epoch)`` (upgrade activation)."""

    epoch: int


@message(0x0043)
class ClearCache(Request[None]):
    """``CacheManager.clear()`` (floors are kept conservatively)."""


@message(0x0044)
class IsFresh(Request[bool]):
    """``CacheManager.is_fresh(key, epoch)``."""

    key: str
    epoch: int


@message(0x0046)
class GetEpochFloor(Request[Epoch]):
    """``CacheManager.epoch_floor(key)``."""

    key: str


@message(0x0048)
class PutValue(Request[bool]):
    """``CacheManager.put(key, value, epoch)``: whether the value was stored."""

    key: str
    value: bytes
    epoch: int


@message(0x004A)
class GetValue(Request[bytes | None]):
    """``CacheManager.get(key, current_epoch)``: the fresh value or None (a miss)."""

    key: str
    current_epoch: int


@message(0x004B)
class DiscardValue(Request[bool]):
    """``CacheManager.discard(key)``: whether a value was stored."""

    key: str


@message(0x004C)
class GetCacheStatistics(Request[CacheStatistics]):
    """``CacheManager.statistics()``."""


@message(0x004E)
class GetCacheSnapshot(Request[CacheFloorSnapshot]):
    """``CacheManager.snapshot()``."""


@message(0x0050)
class RestoreCacheFloors(Request[None]):
    """``CacheManager.restore(snapshot)`` (floors only go up)."""

    snapshot: CacheFloorSnapshot
