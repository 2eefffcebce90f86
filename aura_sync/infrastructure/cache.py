"""Epoch-based cache invalidation: per-key epoch floors and an optional value store.

Role
    A cached item is tagged with the epoch at which it was produced.  An
    invalidation raises the *epoch floor* of some keys; an item is fresh when
    its epoch is at or above its key's floor.  Floors never go down, so once
    data is stale it stays stale.

Types
    :class:`CacheInvalidation`
        An invalidation event (keys, epoch floor, optional reason), as carried
        by maintenance events.
    :class:`CacheEpochTracker`
        The floors themselves, bounded to ``max_keys`` tracked keys.
    :class:`CacheManager`
        A tracker plus :class:`CacheStatistics` and an optional bounded LRU
        value store that only ever returns values written at or above their
        key's floor.
    :class:`CacheFloorSnapshot`
        An immutable copy of the floors, so the actor layer can keep them
        across a restart (:meth:`CacheManager.snapshot` /
        :meth:`CacheManager.restore`).

Conservative eviction (beyond the Rust design)
    Forgetting a floor would make stale data look fresh again.  So when the
    tracker is full and evicts its least recently invalidated key, the key's
    floor is folded into a fixed array of *eviction buckets*: bucket
    ``crc32(key) % eviction_buckets`` keeps the maximum floor of every key
    evicted into it, and an untracked key's floor is its bucket's value.
    Hence an evicted key never looks fresh below the floor it had.  The price
    is false staleness: a key that was never invalidated but shares a bucket
    with an evicted key looks stale below that bucket's floor (the caller
    refetches; it never uses stale data).  Memory stays bounded by
    ``max_keys + eviction_buckets`` entries.  ``eviction_buckets=1`` is the
    simplest choice (one "evicted floor" for every untracked key); the default,
    ``max_keys`` buckets, keeps collisions rare.  The bucket hash is CRC-32 of
    the UTF-8 key, stable across processes, so snapshots stay meaningful after
    a restart.

Upgrade activation
    :meth:`CacheEpochTracker.raise_floor_all` raises the floor of every key,
    tracked or not (a global floor), as an OTA upgrade activation requires.

Integration
    ``aura_sync.actors`` wraps :class:`CacheManager` in the cache actor
    (messages in :mod:`aura_sync.messages.cache`); the actor snapshots the
    floors so a restart does not lose them.  Epochs are validated with
    :func:`aura_sync.ids.check_epoch` (ints in ``0 .. 2**64-1``).

Layer: cores (plain synchronous single-threaded classes; no time is needed).
"""

from __future__ import annotations

import zlib
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from aura_sync._checks import check_int
from aura_sync.errors import InvalidArgument, WrongType
from aura_sync.ids import Epoch, check_epoch

__all__ = [
    "DEFAULT_MAX_KEYS",
    "DEFAULT_MAX_VALUES",
    "CacheEpochTracker",
    "CacheFloorSnapshot",
    "CacheInvalidation",
    "CacheManager",
    "CacheStatistics",
]

DEFAULT_MAX_KEYS: Final = 1024
"""Default number of keys whose floors are tracked exactly."""

DEFAULT_MAX_VALUES: Final = 1024
"""Default capacity of the :class:`CacheManager` value store (entries)."""


# --- validation helpers ---------------------------------------------------------------


def _check_key(key: object, name: str = "key") -> str:
    if type(key) is not str:
        raise WrongType(f"{name} must be a str, got {type(key).__name__} {key!r}")
    return key


def _check_keys(keys: object, name: str = "keys") -> tuple[str, ...]:
    if isinstance(keys, str | bytes | bytearray) or not isinstance(keys, Iterable):
        raise WrongType(
            f"{name} must be an iterable of str (not a single str), "
            f"got {type(keys).__name__} {keys!r}"
        )
    result = tuple(keys)
    for i, key in enumerate(result):
        _check_key(key, f"{name}[{i}]")
    return result


def _check_pairs(value: object, name: str) -> tuple[object, ...]:
    if isinstance(value, str | bytes | bytearray) or not isinstance(value, Iterable):
        raise WrongType(
            f"{name} must be an iterable of pairs, got {type(value).__name__} {value!r}"
        )
    return tuple(value)


def _bucket(key: str, buckets: int) -> int:
    return zlib.crc32(key.encode("utf-8", "surrogatepass")) % buckets


# --- values ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CacheInvalidation:
    """An invalidation event: raise the floor of ``keys`` to ``epoch_floor``.

    Parameters
        keys: the cache keys to invalidate (any iterable of ``str`` except a
            bare ``str``; stored as a tuple).  May be empty (a no-op).
        epoch_floor: the new floor (epoch, ``0 .. 2**64-1``); data cached at a
            lower epoch becomes stale.
        reason: free text for logs (e.g. ``"tree rotation"``), or ``None``.

    Raises :class:`~aura_sync.errors.WrongType` /
    :class:`~aura_sync.errors.InvalidArgument` naming the bad field and value.
    """

    keys: tuple[str, ...]
    epoch_floor: int
    reason: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", _check_keys(self.keys))
        check_epoch(self.epoch_floor, "epoch_floor")
        if self.reason is not None and type(self.reason) is not str:
            raise WrongType(
                f"reason must be a str or None, got {type(self.reason).__name__} {self.reason!r}"
            )


@dataclass(frozen=True, slots=True)
class CacheFloorSnapshot:
    """An immutable copy of a tracker's floors (for keeping them across restarts).

    Fields
        floors: ``(key, floor)`` pairs of the tracked keys, least recently
            invalidated first.
        evicted_floors: ``(bucket, floor)`` pairs of the non-zero eviction
            buckets.
        eviction_buckets: the number of buckets the ``evicted_floors``
            indices refer to.
        global_floor: the floor every key has at least
            (:meth:`CacheEpochTracker.raise_floor_all`).

    Restoring a snapshot (:meth:`CacheEpochTracker.restore`) only ever raises
    floors, so restoring an old or foreign snapshot never makes data fresher.
    """

    floors: tuple[tuple[str, int], ...] = ()
    evicted_floors: tuple[tuple[int, int], ...] = ()
    eviction_buckets: int = DEFAULT_MAX_KEYS
    global_floor: int = 0

    def __post_init__(self) -> None:
        floors = _check_pairs(self.floors, "floors")
        for i, pair in enumerate(floors):
            if type(pair) is not tuple or len(pair) != 2:
                raise WrongType(f"floors[{i}] must be a (key, floor) tuple, got {pair!r}")
            _check_key(pair[0], f"floors[{i}] key")
            check_epoch(pair[1], f"floors[{i}] floor")
        object.__setattr__(self, "floors", floors)
        buckets = check_int(self.eviction_buckets, "eviction_buckets", minimum=1)
        evicted = _check_pairs(self.evicted_floors, "evicted_floors")
        for i, pair in enumerate(evicted):
            if type(pair) is not tuple or len(pair) != 2:
                raise WrongType(
                    f"evicted_floors[{i}] must be a (bucket, floor) tuple, got {pair!r}"
                )
            index, floor = pair
            if type(index) is not int:
                raise WrongType(
                    f"evicted_floors[{i}] bucket must be an int, "
                    f"got {type(index).__name__} {index!r}"
                )
            if not 0 <= index < buckets:
                raise InvalidArgument(
                    f"evicted_floors[{i}] bucket must be an int in 0..{buckets - 1}, got {index!r}"
                )
            check_epoch(floor, f"evicted_floors[{i}] floor")
        object.__setattr__(self, "evicted_floors", evicted)
        check_epoch(self.global_floor, "global_floor")


@dataclass(frozen=True, slots=True)
class CacheStatistics:
    """A snapshot of a :class:`CacheManager`'s counters (Rust names first).

    Fields
        total_invalidations: invalidation events applied
            (:meth:`~CacheManager.apply_invalidation`,
            :meth:`~CacheManager.invalidate_keys`,
            :meth:`~CacheManager.raise_floor_all`).
        total_keys_invalidated: keys named by those events (with repeats).
        tracked_keys: keys whose floor is currently tracked exactly.
        hits: value-store reads that returned a value.
        misses: value-store reads that returned nothing (absent or stale).
        evictions: values dropped by the value store's LRU bound.
        floor_evictions: tracked floors folded into the eviction buckets
            because ``max_keys`` was reached.
        stored_values: values currently in the value store.
        rejected_writes: :meth:`~CacheManager.put` calls refused because the
            value was already stale (below its key's floor) or older than the
            stored one, or the store is disabled.

    Every field is an int >= 0 (else ``WrongType`` / ``InvalidArgument``).
    """

    total_invalidations: int = 0
    total_keys_invalidated: int = 0
    tracked_keys: int = 0
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    floor_evictions: int = 0
    stored_values: int = 0
    rejected_writes: int = 0

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            check_int(getattr(self, name), name, minimum=0)


# --- the tracker ----------------------------------------------------------------------


class CacheEpochTracker:
    """Per-key epoch floors that never go down, bounded to ``max_keys`` keys.

    ``is_fresh(key, epoch)`` is ``epoch >= epoch_floor(key)``; a key that was
    never invalidated has floor 0 (fresh at any epoch) unless
    :meth:`raise_floor_all` was used or it shares an eviction bucket with an
    evicted key (see the module docstring: eviction is conservative).

    Parameters
        max_keys: keys tracked exactly (>= 1); default 1024.
        eviction_buckets: buckets that keep the floors of evicted keys (>= 1);
            default ``max_keys``.  Fewer buckets use less memory but make more
            untracked keys look stale.

    Raises :class:`~aura_sync.errors.WrongType` /
    :class:`~aura_sync.errors.InvalidArgument` on a bad argument.
    """

    __slots__ = ("_buckets", "_evicted", "_evictions", "_floors", "_global", "_max_keys")

    def __init__(
        self, max_keys: int = DEFAULT_MAX_KEYS, *, eviction_buckets: int | None = None
    ) -> None:
        self._max_keys = check_int(max_keys, "max_keys", minimum=1)
        if eviction_buckets is None:
            eviction_buckets = self._max_keys
        self._buckets = check_int(eviction_buckets, "eviction_buckets", minimum=1)
        # key -> floor, least recently invalidated first
        self._floors: OrderedDict[str, int] = OrderedDict()
        self._evicted: dict[int, int] = {}  # bucket -> max floor of keys evicted into it
        self._global = 0
        self._evictions = 0

    @property
    def max_keys(self) -> int:
        """How many keys are tracked exactly."""
        return self._max_keys

    @property
    def eviction_buckets(self) -> int:
        """How many buckets keep the floors of evicted keys."""
        return self._buckets

    @property
    def evictions(self) -> int:
        """How many tracked floors were folded into eviction buckets so far."""
        return self._evictions

    @property
    def global_floor(self) -> Epoch:
        """The floor every key has at least (raised by :meth:`raise_floor_all`)."""
        return Epoch(self._global)

    def __len__(self) -> int:
        """The number of keys tracked exactly."""
        return len(self._floors)

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` is tracked exactly."""
        return key in self._floors

    def _untracked_floor(self, key: str) -> int:
        return self._evicted.get(_bucket(key, self._buckets), 0) if self._evicted else 0

    def _floor(self, key: str) -> int:
        own = self._floors.get(key)
        if own is None:
            own = self._untracked_floor(key)
        return own if own > self._global else self._global

    def epoch_floor(self, key: str) -> Epoch:
        """The floor of ``key``: data cached at a lower epoch is stale.

        Raises :class:`~aura_sync.errors.WrongType` if ``key`` is not a str.
        """
        return Epoch(self._floor(_check_key(key)))

    def is_fresh(self, key: str, epoch: int) -> bool:
        """Whether data for ``key`` cached at ``epoch`` is still fresh (``epoch >= floor``).

        Raises :class:`~aura_sync.errors.WrongType` /
        :class:`~aura_sync.errors.InvalidArgument` on a bad key or epoch.
        """
        _check_key(key)
        check_epoch(epoch)
        return epoch >= self._floor(key)

    def raise_floor(self, key: str, epoch: int) -> bool:
        """Raise the floor of ``key`` to ``epoch`` (never lowers it).

        Returns whether the key's floor went up.  May evict the least recently
        invalidated key (conservatively, see the class docstring).
        """
        _check_key(key)
        check_epoch(epoch)
        return self._raise(key, epoch)

    def raise_floors(self, keys: Iterable[str], epoch: int) -> int:
        """Raise the floor of every key in ``keys`` to ``epoch``; returns how many went up.

        All arguments are validated before anything changes.
        """
        checked = _check_keys(keys)
        check_epoch(epoch)
        return sum(self._raise(key, epoch) for key in checked)

    def _raise(self, key: str, epoch: int) -> bool:
        floors = self._floors
        current = floors.get(key)
        if current is not None:
            floors.move_to_end(key)
            if epoch > current:
                floors[key] = epoch
                return epoch > self._global
            return False
        inherited = max(self._untracked_floor(key), self._global)
        if epoch <= inherited:
            return False  # the effective floor is already at least epoch
        if len(floors) >= self._max_keys:
            self._evict_oldest()
        floors[key] = epoch
        return True

    def _evict_oldest(self) -> None:
        old_key, old_floor = self._floors.popitem(last=False)
        self._fold(old_key, old_floor)
        self._evictions += 1

    def _fold(self, key: str, floor: int) -> None:
        if floor <= self._global:
            return  # the global floor already covers it
        index = _bucket(key, self._buckets)
        if floor > self._evicted.get(index, 0):
            self._evicted[index] = floor

    def raise_floor_all(self, epoch: int) -> bool:
        """Raise the floor of every key (tracked, evicted or never seen) to ``epoch``.

        Used on upgrade activation.  Tracked floors at or below the new global
        floor are dropped (they add nothing).  Returns whether the global
        floor went up.
        """
        check_epoch(epoch)
        if epoch <= self._global:
            return False
        self._global = epoch
        for key in [k for k, f in self._floors.items() if f <= epoch]:
            del self._floors[key]
        self._evicted = {i: f for i, f in self._evicted.items() if f > epoch}
        return True

    def forget_all(self) -> None:
        """Stop tracking every key exactly, conservatively.

        Every tracked floor is folded into the eviction buckets (as if
        evicted), so no key becomes fresh below the floor it had.  The
        eviction counter is not changed.
        """
        for key, floor in self._floors.items():
            self._fold(key, floor)
        self._floors.clear()

    def snapshot(self) -> CacheFloorSnapshot:
        """An immutable copy of every floor, to restore after a restart."""
        return CacheFloorSnapshot(
            floors=tuple(self._floors.items()),
            evicted_floors=tuple(sorted(self._evicted.items())),
            eviction_buckets=self._buckets,
            global_floor=self._global,
        )

    def restore(self, snapshot: CacheFloorSnapshot) -> None:
        """Merge ``snapshot`` into this tracker; floors only ever go up.

        Each key's floor becomes the maximum of its current and its snapshot
        floor (keys beyond ``max_keys`` are evicted conservatively).  If the
        snapshot used a different number of eviction buckets, the highest of
        its bucket floors is applied to every bucket (conservative).

        Raises :class:`~aura_sync.errors.WrongType` if ``snapshot`` is not a
        :class:`CacheFloorSnapshot`.
        """
        if not isinstance(snapshot, CacheFloorSnapshot):
            raise WrongType(
                f"snapshot must be a CacheFloorSnapshot, got {type(snapshot).__name__} {snapshot!r}"
            )
        self.raise_floor_all(snapshot.global_floor)
        if snapshot.evicted_floors:
            if snapshot.eviction_buckets == self._buckets:
                for index, floor in snapshot.evicted_floors:
                    if floor > max(self._evicted.get(index, 0), self._global):
                        self._evicted[index] = floor
            else:
                top = max(floor for _, floor in snapshot.evicted_floors)
                if top > self._global:
                    for index in range(self._buckets):
                        if top > self._evicted.get(index, 0):
                            self._evicted[index] = top
        for key, floor in snapshot.floors:
            self._raise(key, floor)

    def __repr__(self) -> str:
        return (
            f"CacheEpochTracker(max_keys={self._max_keys}, tracked={len(self._floors)}, "
            f"global_floor={self._global}, evictions={self._evictions})"
        )


# --- the manager ----------------------------------------------------------------------


class CacheManager:
    """The high-level cache: epoch floors, statistics and an optional value store.

    Parameters
        max_keys: keys whose floors are tracked exactly (>= 1); default 1024.
        max_values: capacity of the value store in entries (>= 0); default
            1024; 0 disables it (every :meth:`put` is refused).
        eviction_buckets: see :class:`CacheEpochTracker`; default ``max_keys``.

    The value store keeps at most one value per key, with the epoch it was
    written at; :meth:`get` returns a value only if that epoch is at or above
    the key's current floor (and not above the reader's epoch).  Values of
    the keys an invalidation names are dropped at once when they become
    stale (others, made stale by a conservative eviction, on their next
    read); when full, the least recently used value is evicted.

    Raises :class:`~aura_sync.errors.WrongType` /
    :class:`~aura_sync.errors.InvalidArgument` on a bad argument.
    """

    __slots__ = (
        "_hits",
        "_invalidations",
        "_keys_invalidated",
        "_max_values",
        "_misses",
        "_rejected",
        "_tracker",
        "_value_evictions",
        "_values",
    )

    def __init__(
        self,
        max_keys: int = DEFAULT_MAX_KEYS,
        *,
        max_values: int = DEFAULT_MAX_VALUES,
        eviction_buckets: int | None = None,
    ) -> None:
        max_keys = check_int(max_keys, "max_keys", minimum=1)
        self._max_values = check_int(max_values, "max_values", minimum=0)
        self._tracker = CacheEpochTracker(max_keys, eviction_buckets=eviction_buckets)
        # key -> (epoch written at, value), least recently used first
        self._values: OrderedDict[str, tuple[int, Any]] = OrderedDict()
        self._invalidations = 0
        self._keys_invalidated = 0
        self._hits = 0
        self._misses = 0
        self._value_evictions = 0
        self._rejected = 0

    @property
    def max_keys(self) -> int:
        """How many keys' floors are tracked exactly."""
        return self._tracker.max_keys

    @property
    def max_values(self) -> int:
        """Capacity of the value store (entries; 0 = disabled)."""
        return self._max_values

    # --- invalidation ---

    def apply_invalidation(self, event: CacheInvalidation) -> None:
        """Apply an invalidation event (e.g. from a maintenance event).

        Raises :class:`~aura_sync.errors.WrongType` if ``event`` is not a
        :class:`CacheInvalidation`.
        """
        if not isinstance(event, CacheInvalidation):
            raise WrongType(
                f"event must be a CacheInvalidation, got {type(event).__name__} {event!r}"
            )
        tracker = self._tracker
        for key in event.keys:
            tracker._raise(key, event.epoch_floor)
        self._invalidations += 1
        self._keys_invalidated += len(event.keys)
        if self._values:
            self._drop_stale(event.keys)

    def invalidate_keys(self, keys: Iterable[str], epoch: int) -> None:
        """Raise the floor of ``keys`` to ``epoch`` (one invalidation event).

        ``keys`` is any iterable of ``str`` except a bare ``str``.  Validates
        everything before changing anything.
        """
        self.apply_invalidation(CacheInvalidation(_check_keys(keys), check_epoch(epoch)))

    def raise_floor_all(self, epoch: int) -> None:
        """Raise the floor of every key to ``epoch`` (upgrade activation).

        Counts as one invalidation event naming no keys; drops every stored
        value written below ``epoch``.
        """
        check_epoch(epoch)
        self._tracker.raise_floor_all(epoch)
        self._invalidations += 1
        if self._values:
            self._drop_stale(list(self._values))

    def _drop_stale(self, keys: Iterable[str]) -> None:
        values = self._values
        for key in keys:
            entry = values.get(key)
            if entry is not None and entry[0] < self._tracker._floor(key):
                del values[key]

    # --- freshness ---

    def is_fresh(self, key: str, epoch: int) -> bool:
        """Whether data for ``key`` cached at ``epoch`` is fresh (``epoch >= floor``)."""
        return self._tracker.is_fresh(key, epoch)

    def epoch_floor(self, key: str) -> Epoch:
        """The current floor of ``key`` (0 for a key never invalidated)."""
        return self._tracker.epoch_floor(key)

    # --- value store ---

    def put(self, key: str, value: object, epoch: int) -> bool:
        """Store ``value`` for ``key`` as written at ``epoch``; returns whether it was stored.

        Refused (``False``, counted in ``rejected_writes``) when the store is
        disabled, when ``epoch`` is already below the key's floor (stale on
        arrival), or when a value written at a later epoch is already stored.
        ``value`` must not be ``None`` (``None`` means "miss" in :meth:`get`).
        Evicts the least recently used value when full.
        """
        _check_key(key)
        check_epoch(epoch)
        if value is None:
            raise InvalidArgument("value must not be None (None means a cache miss)")
        current = self._values.get(key)
        if (
            self._max_values == 0
            or epoch < self._tracker._floor(key)
            or (current is not None and current[0] > epoch)
        ):
            self._rejected += 1
            return False
        self._values[key] = (epoch, value)
        self._values.move_to_end(key)
        while len(self._values) > self._max_values:
            self._values.popitem(last=False)
            self._value_evictions += 1
        return True

    def get(self, key: str, current_epoch: int) -> Any:
        """The value stored for ``key``, or ``None`` (a miss).

        A value is returned only if it was written at an epoch at or above
        the key's current floor and not after ``current_epoch`` (the reader's
        epoch).  A stale value is dropped.  Counts a hit or a miss.
        """
        _check_key(key)
        check_epoch(current_epoch, "current_epoch")
        entry = self._values.get(key)
        if entry is None:
            self._misses += 1
            return None
        written = entry[0]
        if written < self._tracker._floor(key):
            del self._values[key]
            self._misses += 1
            return None
        if written > current_epoch:
            self._misses += 1
            return None
        self._values.move_to_end(key)
        self._hits += 1
        return entry[1]

    def discard(self, key: str) -> bool:
        """Remove the stored value of ``key`` (floors stay); returns whether there was one."""
        _check_key(key)
        return self._values.pop(key, None) is not None

    # --- lifecycle ---

    def clear(self) -> None:
        """Drop every stored value and stop tracking keys exactly, conservatively.

        Floors are never lost: each tracked floor is folded into the eviction
        buckets (see :class:`CacheEpochTracker`), so clearing never makes stale
        data fresh.  Counters are kept (they are cumulative).
        """
        self._values.clear()
        self._tracker.forget_all()

    def snapshot(self) -> CacheFloorSnapshot:
        """An immutable copy of the floors (values are not included: they are a cache)."""
        return self._tracker.snapshot()

    def restore(self, snapshot: CacheFloorSnapshot) -> None:
        """Merge a snapshot of floors (floors only go up); drops values it makes stale."""
        self._tracker.restore(snapshot)
        if self._values:
            self._drop_stale(list(self._values))

    def statistics(self) -> CacheStatistics:
        """A frozen snapshot of the counters."""
        return CacheStatistics(
            total_invalidations=self._invalidations,
            total_keys_invalidated=self._keys_invalidated,
            tracked_keys=len(self._tracker),
            hits=self._hits,
            misses=self._misses,
            evictions=self._value_evictions,
            floor_evictions=self._tracker.evictions,
            stored_values=len(self._values),
            rejected_writes=self._rejected,
        )

    def __repr__(self) -> str:
        return (
            f"CacheManager(max_keys={self.max_keys}, max_values={self._max_values}, "
            f"tracked={len(self._tracker)}, values={len(self._values)})"
        )
