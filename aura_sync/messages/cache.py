"""Cache messages: requests to the cache actor and its replies.

Tags 0x0040-0x005F.  Every operation of
:class:`~aura_sync.infrastructure.cache.CacheManager` is reachable:

===========================  ==========================================
request                      reply
===========================  ==========================================
:class:`InvalidateKeys`      :class:`~aura_sync.messages.common.Ack`
:class:`ApplyInvalidation`   :class:`~aura_sync.messages.common.Ack`
:class:`IsFresh`             :class:`FreshnessReply`
:class:`GetEpochFloor`       :class:`EpochFloorReply`
:class:`RaiseFloorAll`       :class:`~aura_sync.messages.common.Ack`
:class:`ClearCache`          :class:`~aura_sync.messages.common.Ack`
:class:`PutValue`            :class:`ValueStored`
:class:`GetValue`            :class:`ValueReply`
:class:`GetCacheStatistics`  :class:`CacheStatisticsReply`
:class:`GetCacheSnapshot`    :class:`CacheSnapshotReply`
:class:`RestoreCacheFloors`  :class:`~aura_sync.messages.common.Ack`
===========================  ==========================================

Values travel as ``bytes``.  Epochs are ints in ``0 .. 2**64-1``, checked
in ``__post_init__`` so that a decoded message is validated exactly like one
built in code.  Snapshots (:class:`CacheSnapshotReply`,
:class:`RestoreCacheFloors`) let a node persist the floors and restore them
after a restart; restoring only ever raises floors.

Layer: messages.  Imports the cache core for conversions.
"""

from __future__ import annotations

from aura_sync._checks import check_u64
from aura_sync.errors import WrongType
from aura_sync.ids import EPOCH_MAX, check_epoch
from aura_sync.infrastructure.cache import CacheFloorSnapshot, CacheInvalidation, CacheStatistics
from aura_sync.messages._base import Message, message

__all__ = [
    "ApplyInvalidation",
    "CacheSnapshotReply",
    "CacheStatisticsReply",
    "ClearCache",
    "EpochFloorReply",
    "FreshnessReply",
    "GetCacheSnapshot",
    "GetCacheStatistics",
    "GetEpochFloor",
    "GetValue",
    "InvalidateKeys",
    "IsFresh",
    "PutValue",
    "RaiseFloorAll",
    "RestoreCacheFloors",
    "ValueReply",
    "ValueStored",
]


def _check_str(value: object, name: str) -> None:
    if type(value) is not str:
        raise WrongType(f"{name} must be a str, got {type(value).__name__} {value!r}")


def _check_keys(keys: object) -> None:
    if type(keys) is not tuple:
        raise WrongType(f"keys must be a tuple of str, got {type(keys).__name__} {keys!r}")
    for key in keys:
        if key.__class__ is not str:
            break
    else:
        return  # the common case: no per-key call and no name formatting
    for i, key in enumerate(keys):
        _check_str(key, f"keys[{i}]")


def _check_bytes(value: object, name: str) -> None:
    if type(value) is not bytes:
        raise WrongType(f"{name} must be bytes, got {type(value).__name__} {value!r}")


# --- invalidation ----------------------------------------------------------------------


@message(0x0040)
class InvalidateKeys(Message):
    """Raise the floor of ``keys`` to ``epoch`` (one invalidation event).  Reply: ``Ack``.

    :ivar keys: the cache keys.
    :ivar epoch: the new floor (epoch).
    """

    keys: tuple[str, ...]
    epoch: int

    def __post_init__(self) -> None:
        _check_keys(self.keys)
        check_epoch(self.epoch)


@message(0x0041)
class ApplyInvalidation(Message):
    """Apply a :class:`~aura_sync.infrastructure.cache.CacheInvalidation`.  Reply: ``Ack``.

    :ivar keys: the cache keys.
    :ivar epoch_floor: the new floor (epoch).
    :ivar reason: free text for logs, or None.
    """

    keys: tuple[str, ...]
    epoch_floor: int
    reason: str | None = None

    def __post_init__(self) -> None:
        _check_keys(self.keys)
        # The rest of the core's CacheInvalidation checks, in its order and with
        # its messages (its keys check cannot fail on a tuple of str):
        epoch_floor = self.epoch_floor
        if epoch_floor.__class__ is not int or not 0 <= epoch_floor <= EPOCH_MAX:
            check_epoch(epoch_floor, "epoch_floor")
        reason = self.reason
        if reason is not None and type(reason) is not str:
            raise WrongType(f"reason must be a str or None, got {type(reason).__name__} {reason!r}")

    @classmethod
    def from_event(cls, event: CacheInvalidation) -> ApplyInvalidation:
        """The message that carries ``event``."""
        if not isinstance(event, CacheInvalidation):
            raise WrongType(
                f"event must be a CacheInvalidation, got {type(event).__name__} {event!r}"
            )
        return cls(event.keys, event.epoch_floor, event.reason)

    def to_event(self) -> CacheInvalidation:
        """The :class:`~aura_sync.infrastructure.cache.CacheInvalidation` this message carries."""
        return CacheInvalidation(self.keys, self.epoch_floor, self.reason)


@message(0x0042)
class RaiseFloorAll(Message):
    """Raise the floor of every key to ``epoch`` (upgrade activation).  Reply: ``Ack``."""

    epoch: int

    def __post_init__(self) -> None:
        check_epoch(self.epoch)


@message(0x0043)
class ClearCache(Message):
    """Drop every stored value and stop tracking keys exactly (floors are kept
    conservatively, see :meth:`~aura_sync.infrastructure.cache.CacheManager.clear`).
    Reply: ``Ack``."""


# --- freshness -------------------------------------------------------------------------


@message(0x0044)
class IsFresh(Message):
    """Is data for ``key`` cached at ``epoch`` fresh?  Reply: :class:`FreshnessReply`."""

    key: str
    epoch: int

    def __post_init__(self) -> None:
        _check_str(self.key, "key")
        check_epoch(self.epoch)


@message(0x0045)
class FreshnessReply(Message):
    """Answer to :class:`IsFresh`: ``fresh`` is ``epoch >= floor(key)``."""

    key: str
    epoch: int
    fresh: bool

    def __post_init__(self) -> None:
        _check_str(self.key, "key")
        check_epoch(self.epoch)
        if type(self.fresh) is not bool:
            raise WrongType(f"fresh must be a bool, got {type(self.fresh).__name__} {self.fresh!r}")


@message(0x0046)
class GetEpochFloor(Message):
    """What is the floor of ``key``?  Reply: :class:`EpochFloorReply`."""

    key: str

    def __post_init__(self) -> None:
        _check_str(self.key, "key")


@message(0x0047)
class EpochFloorReply(Message):
    """Answer to :class:`GetEpochFloor`: the key's floor (epoch; 0 if never invalidated)."""

    key: str
    epoch_floor: int

    def __post_init__(self) -> None:
        _check_str(self.key, "key")
        check_epoch(self.epoch_floor, "epoch_floor")


# --- value store -----------------------------------------------------------------------


@message(0x0048)
class PutValue(Message):
    """Store ``value`` for ``key`` as written at ``epoch``.  Reply: :class:`ValueStored`."""

    key: str
    value: bytes
    epoch: int

    def __post_init__(self) -> None:
        _check_str(self.key, "key")
        _check_bytes(self.value, "value")
        check_epoch(self.epoch)


@message(0x0049)
class ValueStored(Message):
    """Answer to :class:`PutValue`: ``stored`` is False if the write was refused
    (stale on arrival, older than the stored value, or the store is disabled)."""

    key: str
    stored: bool

    def __post_init__(self) -> None:
        _check_str(self.key, "key")
        if type(self.stored) is not bool:
            raise WrongType(
                f"stored must be a bool, got {type(self.stored).__name__} {self.stored!r}"
            )


@message(0x004A)
class GetValue(Message):
    """Read the value of ``key`` for a reader at ``current_epoch``.  Reply: :class:`ValueReply`."""

    key: str
    current_epoch: int

    def __post_init__(self) -> None:
        _check_str(self.key, "key")
        check_epoch(self.current_epoch, "current_epoch")


@message(0x004B)
class ValueReply(Message):
    """Answer to :class:`GetValue`: the fresh value, or None (a miss)."""

    key: str
    value: bytes | None

    def __post_init__(self) -> None:
        _check_str(self.key, "key")
        if self.value is not None:
            _check_bytes(self.value, "value")


# --- statistics ------------------------------------------------------------------------


@message(0x004C)
class GetCacheStatistics(Message):
    """Ask for the cache's counters.  Reply: :class:`CacheStatisticsReply`."""


@message(0x004D)
class CacheStatisticsReply(Message):
    """The fields of :class:`~aura_sync.infrastructure.cache.CacheStatistics`, in order."""

    total_invalidations: int
    total_keys_invalidated: int
    tracked_keys: int
    hits: int
    misses: int
    evictions: int
    floor_evictions: int
    stored_values: int
    rejected_writes: int

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            check_u64(getattr(self, name), name)

    @classmethod
    def from_statistics(cls, stats: CacheStatistics) -> CacheStatisticsReply:
        """The reply that carries ``stats``."""
        if not isinstance(stats, CacheStatistics):
            raise WrongType(
                f"stats must be a CacheStatistics, got {type(stats).__name__} {stats!r}"
            )
        return cls(
            stats.total_invalidations,
            stats.total_keys_invalidated,
            stats.tracked_keys,
            stats.hits,
            stats.misses,
            stats.evictions,
            stats.floor_evictions,
            stats.stored_values,
            stats.rejected_writes,
        )

    def to_statistics(self) -> CacheStatistics:
        """The :class:`~aura_sync.infrastructure.cache.CacheStatistics` this reply carries."""
        return CacheStatistics(
            total_invalidations=self.total_invalidations,
            total_keys_invalidated=self.total_keys_invalidated,
            tracked_keys=self.tracked_keys,
            hits=self.hits,
            misses=self.misses,
            evictions=self.evictions,
            floor_evictions=self.floor_evictions,
            stored_values=self.stored_values,
            rejected_writes=self.rejected_writes,
        )


# --- snapshots -------------------------------------------------------------------------


class _SnapshotFields(Message):
    """Shared fields and conversions of the two snapshot messages (not registered)."""

    __slots__ = ()
    floors: tuple[tuple[str, int], ...]
    evicted_floors: tuple[tuple[int, int], ...]
    eviction_buckets: int
    global_floor: int

    def __post_init__(self) -> None:
        # A message is immutable all the way down: the core accepts any
        # iterable, the message only tuples (a list would be kept as is).
        for name in ("floors", "evicted_floors"):
            value = getattr(self, name)
            if type(value) is not tuple:
                raise WrongType(
                    f"{name} must be a tuple of pairs, got {type(value).__name__} {value!r}"
                )
        self.to_snapshot()  # the core's own validation
        check_u64(self.eviction_buckets, "eviction_buckets")  # and it must fit the wire

    def to_snapshot(self) -> CacheFloorSnapshot:
        """The :class:`~aura_sync.infrastructure.cache.CacheFloorSnapshot` carried."""
        return CacheFloorSnapshot(
            floors=self.floors,
            evicted_floors=self.evicted_floors,
            eviction_buckets=self.eviction_buckets,
            global_floor=self.global_floor,
        )


@message(0x004E)
class GetCacheSnapshot(Message):
    """Ask for a copy of the floors.  Reply: :class:`CacheSnapshotReply`."""


@message(0x004F)
class CacheSnapshotReply(_SnapshotFields):
    """A :class:`~aura_sync.infrastructure.cache.CacheFloorSnapshot` on the wire."""

    floors: tuple[tuple[str, int], ...]
    evicted_floors: tuple[tuple[int, int], ...]
    eviction_buckets: int
    global_floor: int

    @classmethod
    def from_snapshot(cls, snapshot: CacheFloorSnapshot) -> CacheSnapshotReply:
        """The reply that carries ``snapshot``."""
        return cls(*_snapshot_fields(snapshot))


@message(0x0050)
class RestoreCacheFloors(_SnapshotFields):
    """Merge a floor snapshot into the cache (floors only go up).  Reply: ``Ack``."""

    floors: tuple[tuple[str, int], ...]
    evicted_floors: tuple[tuple[int, int], ...]
    eviction_buckets: int
    global_floor: int

    @classmethod
    def from_snapshot(cls, snapshot: CacheFloorSnapshot) -> RestoreCacheFloors:
        """The request that carries ``snapshot``."""
        return cls(*_snapshot_fields(snapshot))


def _snapshot_fields(
    snapshot: CacheFloorSnapshot,
) -> tuple[tuple[tuple[str, int], ...], tuple[tuple[int, int], ...], int, int]:
    if not isinstance(snapshot, CacheFloorSnapshot):
        raise WrongType(
            f"snapshot must be a CacheFloorSnapshot, got {type(snapshot).__name__} {snapshot!r}"
        )
    return (
        snapshot.floors,
        snapshot.evicted_floors,
        snapshot.eviction_buckets,
        snapshot.global_floor,
    )
