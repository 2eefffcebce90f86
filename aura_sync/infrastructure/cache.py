"""Epoch-based cache invalidation: per-key floors that never go down, and a value store.

Data cached at epoch ``e`` is fresh while ``e >= floor(key)`` (0 for a key never
invalidated).  :class:`CacheEpochTracker` keeps ``max_keys`` exact floors; an
evicted key's floor folds into bucket ``crc32(key) % eviction_buckets``, which
untracked keys read, so eviction never makes a key fresh below its floor (a
colliding key may look stale).  :class:`CacheManager` adds counters and a bounded
LRU value store.  The values crossing the actor boundary are registered messages.
"""

from __future__ import annotations

import zlib
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, Final

from aura_sync._checks import check_int
from aura_sync.errors import InvalidArgument, WrongType
from aura_sync.ids import EPOCH_MAX, Epoch, check_epoch
from aura_sync.messages._base import Message, message

__all__ = [
    "DEFAULT_MAX_KEYS",
    "DEFAULT_MAX_VALUES",
    "CacheEpochTracker",
    "CacheFloorSnapshot",
    "CacheInvalidation",
    "CacheManager",
    "CacheStatistics",
]

DEFAULT_MAX_KEYS: Final = 1024  # keys whose floors are tracked exactly
DEFAULT_MAX_VALUES: Final = 1024  # entries of the CacheManager's value store


def _check_key(key: object, name: str = "key") -> str:
    if type(key) is not str:
        raise WrongType(f"{name} must be a str, got {type(key).__name__} {key!r}")
    return key


def _check_keys(keys: object, name: str = "keys") -> tuple[str, ...]:
    if isinstance(keys, str | bytes | bytearray) or not isinstance(keys, Iterable):
        raise WrongType(f"{name} must be an iterable of str (not a str), got {keys!r}")
    result = tuple(keys)
    for i, key in enumerate(result):
        if key.__class__ is not str:
            _check_key(key, f"{name}[{i}]")
    return result


def _bucket(key: str, buckets: int) -> int:
    return zlib.crc32(key.encode("utf-8", "surrogatepass")) % buckets


# --- values that cross the actor boundary ----------------------------------------------


@message(0x0058)
class CacheInvalidation(Message):
    """An event raising the floor of ``keys`` to ``epoch_floor`` (``reason``: for logs)."""

    keys: tuple[str, ...]
    epoch_floor: int
    reason: str | None = None


@message(0x0059)
class CacheFloorSnapshot(Message):
    """A tracker's floors across a restart (restoring only raises): ``(key, floor)`` of the
    tracked keys, ``(bucket, floor)`` of the non-zero buckets, every key's minimum."""

    floors: tuple[tuple[str, int], ...] = ()
    evicted_floors: tuple[tuple[int, int], ...] = ()
    eviction_buckets: int = DEFAULT_MAX_KEYS
    global_floor: int = 0


@message(0x005A)
class CacheStatistics(Message):
    """A :class:`CacheManager`'s counters (Rust names first): events (``raise_floor_all``
    too) and the keys they named; ``evictions`` are LRU value drops, ``floor_evictions``
    floors folded into buckets, ``rejected_writes`` refused ``put`` calls."""

    total_invalidations: int = 0
    total_keys_invalidated: int = 0
    tracked_keys: int = 0
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    floor_evictions: int = 0
    stored_values: int = 0
    rejected_writes: int = 0


# --- the tracker ----------------------------------------------------------------------


class CacheEpochTracker:
    """Per-key epoch floors that never go down: ``max_keys`` (>= 1) exact ones, and
    ``eviction_buckets`` (>= 1, default ``max_keys``) keeping the floors of evicted keys
    (fewer use less memory but make more untracked keys look stale)."""

    def __init__(
        self, max_keys: int = DEFAULT_MAX_KEYS, *, eviction_buckets: int | None = None
    ) -> None:
        self._max_keys = check_int(max_keys, "max_keys", minimum=1)
        buckets = self._max_keys if eviction_buckets is None else eviction_buckets
        self._buckets = check_int(buckets, "eviction_buckets", minimum=1)
        self._floors: OrderedDict[str, int] = OrderedDict()  # least recently invalidated first
        self._evicted: dict[int, int] = {}  # bucket -> max floor of the keys evicted into it
        self._global = self._evictions = self._invalidations = self._keys_invalidated = 0

    @property
    def evictions(self) -> int:
        """How many tracked floors were folded into eviction buckets so far."""
        return self._evictions

    @property
    def global_floor(self) -> Epoch:
        """The floor every key has at least (raised by :meth:`raise_floor_all`)."""
        return Epoch(self._global)

    def __len__(self) -> int:
        return len(self._floors)

    def __contains__(self, key: object) -> bool:
        return key in self._floors

    def tracked_keys(self) -> int:
        """How many keys are tracked exactly (Rust ``tracked_keys``)."""
        return len(self._floors)

    def all_floors(self) -> tuple[tuple[str, Epoch], ...]:
        """``(key, floor)`` of the keys tracked exactly, least recently invalidated first."""
        return tuple((key, Epoch(floor)) for key, floor in self._floors.items())

    def _untracked_floor(self, key: str) -> int:
        return self._evicted.get(_bucket(key, self._buckets), 0) if self._evicted else 0

    def _floor(self, key: str) -> int:
        own = self._floors.get(key)
        if own is None:
            own = self._untracked_floor(key)
        return own if own > self._global else self._global

    def epoch_floor(self, key: str) -> Epoch:
        """The floor of ``key``: data cached at a lower epoch is stale (0 if never raised)."""
        return Epoch(self._floor(_check_key(key)))

    def is_fresh(self, key: str, epoch: int) -> bool:
        """Whether data for ``key`` cached at ``epoch`` is fresh (``epoch >= floor``)."""
        if key.__class__ is not str or epoch.__class__ is not int or not 0 <= epoch <= EPOCH_MAX:
            _check_key(key)
            check_epoch(epoch)
        return epoch >= self._floor(key)

    def invalidate_key(self, key: str, epoch: int) -> bool:
        """Raise the floor of ``key`` to ``epoch`` (never lowers it); whether it went up."""
        return self._invalidate((_check_key(key),), check_epoch(epoch)) > 0

    def invalidate_keys(self, keys: Iterable[str], epoch: int) -> int:
        """Raise the floor of ``keys`` (an iterable of str) to ``epoch``; how many went up."""
        return self._invalidate(_check_keys(keys), check_epoch(epoch))

    def apply_invalidation(self, event: CacheInvalidation) -> int:
        """Apply ``event`` (its keys to its floor); how many floors went up."""
        return self._invalidate(*_check_event(event))

    def _invalidate(self, keys: tuple[str, ...], epoch: int) -> int:
        """One invalidation event on checked values."""
        raised = sum(self._raise(key, epoch) for key in keys)
        self._invalidations += 1
        self._keys_invalidated += len(keys)
        self._drop_stale(keys)
        return raised

    def _drop_stale(self, keys: Iterable[str] | None) -> None:
        """Drop the stored values of ``keys`` (None: all) now below their floor (none here)."""

    def _raise(self, key: str, epoch: int) -> bool:
        floors = self._floors
        current = floors.get(key)
        if current is not None:
            floors.move_to_end(key)
            if epoch > current:
                floors[key] = epoch
                return epoch > self._global
            return False
        if epoch <= max(self._untracked_floor(key), self._global):
            return False  # the effective floor is already at least epoch
        if len(floors) >= self._max_keys:
            old_key, old_floor = floors.popitem(last=False)
            self._fold(old_key, old_floor)
            self._evictions += 1
        floors[key] = epoch
        return True

    def _fold(self, key: str, floor: int) -> None:
        if floor > self._global:
            index = _bucket(key, self._buckets)
            if floor > self._evicted.get(index, 0):
                self._evicted[index] = floor

    def raise_floor_all(self, epoch: int) -> bool:
        """Raise every key's floor, tracked or not, to ``epoch`` (one event); whether it rose."""
        raised = self._raise_all(check_epoch(epoch))
        self._invalidations += 1
        self._drop_stale(None)
        return raised

    def _raise_all(self, epoch: int) -> bool:
        if epoch <= self._global:
            return False
        self._global = epoch
        for key in [k for k, f in self._floors.items() if f <= epoch]:
            del self._floors[key]  # covered by the global floor
        self._evicted = {i: f for i, f in self._evicted.items() if f > epoch}
        return True

    def forget_all(self) -> None:
        """Stop tracking keys exactly; their floors fold into the buckets (none goes down)."""
        for key, floor in self._floors.items():
            self._fold(key, floor)
        self._floors.clear()

    def snapshot(self) -> CacheFloorSnapshot:
        """An immutable copy of every floor, to restore after a restart."""
        return CacheFloorSnapshot(
            tuple(self._floors.items()),
            tuple(sorted(self._evicted.items())),
            self._buckets,
            self._global,
        )

    def restore(self, snapshot: CacheFloorSnapshot) -> None:
        """Merge ``snapshot``: each floor becomes the max of both (bucket floors of another
        bucket count raise every bucket)."""
        _check_snapshot(snapshot)
        self._raise_all(snapshot.global_floor)
        if snapshot.evicted_floors:
            if snapshot.eviction_buckets == self._buckets:
                pairs: Iterable[tuple[int, int]] = snapshot.evicted_floors
            else:
                top = max(floor for _, floor in snapshot.evicted_floors)
                pairs = ((index, top) for index in range(self._buckets))
            for index, floor in pairs:
                if floor > max(self._evicted.get(index, 0), self._global):
                    self._evicted[index] = floor
        for key, floor in snapshot.floors:
            self._raise(key, floor)
        self._drop_stale(None)


def _check_event(event: object) -> tuple[tuple[str, ...], int]:
    if not isinstance(event, CacheInvalidation):
        raise WrongType(f"event must be a CacheInvalidation, got {type(event).__name__} {event!r}")
    keys = _check_keys(event.keys)
    epoch = check_epoch(event.epoch_floor, "epoch_floor")
    if event.reason is not None and type(event.reason) is not str:
        raise WrongType(f"reason must be a str or None, got {event.reason!r}")
    return keys, epoch


def _check_snapshot(snapshot: object) -> None:
    """A snapshot's values (the codec checks the field types of a decoded one)."""
    if not isinstance(snapshot, CacheFloorSnapshot):
        raise WrongType(f"snapshot must be a CacheFloorSnapshot, got {snapshot!r}")
    buckets = check_int(snapshot.eviction_buckets, "eviction_buckets", minimum=1)
    for i, (_, floor) in enumerate(snapshot.floors):
        check_epoch(floor, f"floors[{i}] floor")
    for i, (index, floor) in enumerate(snapshot.evicted_floors):
        if not 0 <= index < buckets:
            raise InvalidArgument(
                f"evicted_floors[{i}] bucket must be in 0..{buckets - 1}, got {index!r}"
            )
        check_epoch(floor, f"evicted_floors[{i}] floor")
    check_epoch(snapshot.global_floor, "global_floor")


# --- the manager ----------------------------------------------------------------------


class CacheManager(CacheEpochTracker):
    """A tracker plus :class:`CacheStatistics` and a value store of ``max_values`` (0: none),
    least recently used evicted first.  :meth:`get` returns a value only if written at or
    above its key's floor and not after the reader's epoch; stale values are dropped."""

    def __init__(
        self,
        max_keys: int = DEFAULT_MAX_KEYS,
        *,
        max_values: int = DEFAULT_MAX_VALUES,
        eviction_buckets: int | None = None,
    ) -> None:
        super().__init__(max_keys, eviction_buckets=eviction_buckets)
        self._max_values = check_int(max_values, "max_values", minimum=0)
        self._values: OrderedDict[str, tuple[int, Any]] = OrderedDict()  # key -> (epoch, value)
        self._hits = self._misses = self._value_evictions = self._rejected = 0

    def _drop_stale(self, keys: Iterable[str] | None) -> None:
        values, floor = self._values, self._floor
        if values:
            for key in list(values) if keys is None else keys:
                entry = values.get(key)
                if entry is not None and entry[0] < floor(key):
                    del values[key]

    def put(self, key: str, value: object, epoch: int) -> bool:
        """Store ``value`` (not None) for ``key`` as written at ``epoch``; False if the store
        is disabled, the value is stale or a later one is stored."""
        _check_key(key)
        check_epoch(epoch)
        if value is None:
            raise InvalidArgument("value must not be None (None means a cache miss)")
        values = self._values
        current = values.get(key)
        if (
            self._max_values == 0
            or epoch < self._floor(key)
            or (current is not None and current[0] > epoch)
        ):
            self._rejected += 1
            return False
        values[key] = (epoch, value)
        values.move_to_end(key)
        while len(values) > self._max_values:
            values.popitem(last=False)
            self._value_evictions += 1
        return True

    def get(self, key: str, current_epoch: int) -> Any:
        """The fresh value of ``key`` for a reader at ``current_epoch``, or None (a miss)."""
        _check_key(key)
        check_epoch(current_epoch, "current_epoch")
        entry = self._values.get(key)
        if entry is not None and entry[0] < self._floor(key):
            del self._values[key]
            entry = None
        if entry is None or entry[0] > current_epoch:
            self._misses += 1
            return None
        self._values.move_to_end(key)
        self._hits += 1
        return entry[1]

    def discard(self, key: str) -> bool:
        """Remove the stored value of ``key`` (floors stay); whether there was one."""
        return self._values.pop(_check_key(key), None) is not None

    def clear(self) -> None:
        """Drop every value and fold every tracked floor into the buckets; counters stay."""
        self._values.clear()
        self.forget_all()

    def statistics(self) -> CacheStatistics:
        """A frozen copy of the counters."""
        return CacheStatistics(
            self._invalidations,
            self._keys_invalidated,
            len(self._floors),
            self._hits,
            self._misses,
            self._value_evictions,
            self._evictions,
            len(self._values),
            self._rejected,
        )
