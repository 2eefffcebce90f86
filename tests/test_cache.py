"""Unit tests of the epoch cache: tracker, manager, value store, snapshots,
validation, the deprecated alias and the cache messages."""

from __future__ import annotations

import warnings

import pytest

from aura_sync.errors import DecodeError, InvalidArgument, WrongType
from aura_sync.infrastructure.cache import (
    CacheEpochTracker,
    CacheFloorSnapshot,
    CacheInvalidation,
    CacheManager,
    CacheStatistics,
)
from aura_sync.messages import Message, codec
from aura_sync.messages import cache as msgs
from aura_sync.messages._base import registered_messages

# --- reference behaviours of the Rust module ------------------------------------------


def test_floor_five_is_stale_at_four_fresh_at_five_and_six_and_raise_to_seven() -> None:
    cache = CacheManager()
    cache.invalidate_keys(["key1"], 5)
    assert not cache.is_fresh("key1", 4)
    assert cache.is_fresh("key1", 5)
    assert cache.is_fresh("key1", 6)
    cache.invalidate_keys(["key1"], 7)
    assert not cache.is_fresh("key1", 6)
    assert cache.is_fresh("key1", 7)
    assert cache.epoch_floor("key1") == 7


def test_never_invalidated_key_is_fresh_at_any_epoch() -> None:
    cache = CacheManager()
    cache.invalidate_keys(["other"], 100)
    for epoch in (0, 1, 99, 2**64 - 1):
        assert cache.is_fresh("never", epoch)
    assert cache.epoch_floor("never") == 0


def test_floors_never_go_down() -> None:
    cache = CacheManager()
    cache.invalidate_keys(["k"], 9)
    cache.invalidate_keys(["k"], 3)
    assert cache.epoch_floor("k") == 9
    assert not cache.is_fresh("k", 8)


def test_apply_invalidation_and_statistics() -> None:
    cache = CacheManager()
    cache.apply_invalidation(CacheInvalidation(("a", "b"), 4, reason="tree rotation"))
    cache.invalidate_keys(("b", "c", "d"), 6)
    stats = cache.statistics()
    assert stats == CacheStatistics(total_invalidations=2, total_keys_invalidated=5, tracked_keys=4)
    assert cache.epoch_floor("a") == 4
    assert cache.epoch_floor("b") == 6


def test_cache_invalidation_is_frozen_and_any_iterable_of_keys_applies() -> None:
    event = CacheInvalidation(["x", "y"], 3)  # type: ignore[arg-type]
    with pytest.raises(AttributeError):
        event.epoch_floor = 4  # type: ignore[misc]
    cache = CacheManager()
    cache.apply_invalidation(event)
    assert cache.epoch_floor("y") == 3


def test_raise_floor_all_applies_to_every_key_seen_or_not() -> None:
    cache = CacheManager()
    cache.invalidate_keys(["low"], 2)
    cache.invalidate_keys(["high"], 20)
    cache.raise_floor_all(10)
    assert cache.epoch_floor("low") == 10
    assert cache.epoch_floor("never-seen") == 10
    assert cache.epoch_floor("high") == 20
    assert not cache.is_fresh("never-seen", 9)
    assert cache.is_fresh("never-seen", 10)
    # a redundant tracked floor is dropped, the exact one kept
    assert cache.statistics().tracked_keys == 1
    cache.raise_floor_all(5)  # lower: no effect
    assert cache.epoch_floor("low") == 10


# --- bounded tracking with conservative eviction ----------------------------------------


def test_tracker_is_bounded_and_eviction_is_conservative() -> None:
    tracker = CacheEpochTracker(max_keys=4, eviction_buckets=1)
    for i in range(10):
        tracker.invalidate_key(f"k{i}", 10 + i)
    assert len(tracker) == 4
    assert tracker.evictions == 6
    for i in range(10):
        assert tracker.epoch_floor(f"k{i}") >= 10 + i
        assert not tracker.is_fresh(f"k{i}", 10 + i - 1)
    # with a single bucket every untracked key shares the conservative floor
    assert tracker.epoch_floor("never") == 15


def test_many_buckets_keep_most_untouched_keys_fresh() -> None:
    tracker = CacheEpochTracker(max_keys=8, eviction_buckets=4096)
    for i in range(40):
        tracker.invalidate_key(f"k{i}", 1000)
    fresh = sum(tracker.is_fresh(f"untouched{i}", 0) for i in range(200))
    assert fresh >= 190  # only bucket collisions (32 evicted keys / 4096 buckets) look stale


def test_eviction_drops_least_recently_invalidated_key() -> None:
    tracker = CacheEpochTracker(max_keys=2, eviction_buckets=64)
    tracker.invalidate_key("a", 1)
    tracker.invalidate_key("b", 2)
    tracker.invalidate_key("a", 1)  # touch a
    tracker.invalidate_key("c", 3)  # evicts b
    assert "a" in tracker and "c" in tracker and "b" not in tracker
    assert tracker.epoch_floor("b") >= 2


def test_invalidate_key_reports_whether_the_floor_went_up() -> None:
    tracker = CacheEpochTracker()
    assert tracker.invalidate_key("k", 3)
    assert not tracker.invalidate_key("k", 3)
    assert not tracker.invalidate_key("k", 1)
    assert tracker.invalidate_key("k", 4)
    assert tracker.invalidate_keys(["k", "j"], 4) == 1


def test_clear_keeps_floors_conservatively_and_drops_values() -> None:
    cache = CacheManager(max_keys=16)
    cache.invalidate_keys(["a", "b"], 7)
    cache.put("a", b"va", 8)
    cache.clear()
    assert cache.statistics().tracked_keys == 0
    assert cache.statistics().stored_values == 0
    assert cache.epoch_floor("a") >= 7
    assert not cache.is_fresh("b", 6)
    assert cache.get("a", 8) is None


# --- value store ------------------------------------------------------------------------


def test_value_store_returns_only_values_at_or_above_the_floor() -> None:
    cache = CacheManager()
    assert cache.put("k", b"v5", 5)
    assert cache.get("k", 5) == b"v5"
    cache.invalidate_keys(["k"], 6)
    assert cache.get("k", 6) is None
    assert cache.statistics().stored_values == 0  # dropped at once
    assert not cache.put("k", b"stale", 5)  # stale on arrival
    assert cache.put("k", b"v6", 6)
    assert cache.get("k", 7) == b"v6"
    stats = cache.statistics()
    assert (stats.hits, stats.misses, stats.rejected_writes) == (2, 1, 1)


def test_value_from_a_later_epoch_is_not_returned_to_an_earlier_reader() -> None:
    cache = CacheManager()
    cache.put("k", b"v9", 9)
    assert cache.get("k", 8) is None
    assert cache.get("k", 9) == b"v9"


def test_older_write_does_not_replace_a_newer_value() -> None:
    cache = CacheManager()
    assert cache.put("k", b"new", 9)
    assert not cache.put("k", b"old", 4)
    assert cache.get("k", 10) == b"new"
    assert cache.put("k", b"same-epoch", 9)
    assert cache.get("k", 10) == b"same-epoch"


def test_value_store_lru_bound_and_evictions() -> None:
    cache = CacheManager(max_values=2)
    cache.put("a", 1, 0)
    cache.put("b", 2, 0)
    assert cache.get("a", 0) == 1  # a is now most recently used
    cache.put("c", 3, 0)  # evicts b
    assert cache.get("b", 0) is None
    assert cache.get("a", 0) == 1
    assert cache.get("c", 0) == 3
    stats = cache.statistics()
    assert stats.evictions == 1
    assert stats.stored_values == 2


def test_disabled_value_store_refuses_writes() -> None:
    cache = CacheManager(max_values=0)
    assert not cache.put("a", b"x", 0)
    assert cache.get("a", 0) is None
    assert cache.statistics().rejected_writes == 1


def test_raise_floor_all_drops_stale_values() -> None:
    cache = CacheManager()
    cache.put("a", b"1", 1)
    cache.put("b", b"5", 5)
    cache.raise_floor_all(3)
    assert cache.statistics().stored_values == 1
    assert cache.get("b", 5) == b"5"


def test_discard_removes_a_value() -> None:
    cache = CacheManager()
    cache.put("a", b"1", 1)
    assert cache.discard("a")
    assert not cache.discard("a")
    assert cache.get("a", 1) is None


# --- snapshot / restore ----------------------------------------------------------------


def test_snapshot_restore_keeps_floors_across_a_restart() -> None:
    before = CacheManager(max_keys=3)
    for i in range(6):
        before.invalidate_keys([f"k{i}"], i + 1)
    before.raise_floor_all(2)
    snap = before.snapshot()
    after = CacheManager(max_keys=3)
    after.restore(snap)
    for key in [f"k{i}" for i in range(6)] + ["never"]:
        assert after.epoch_floor(key) >= before.epoch_floor(key), key
    assert after.snapshot() == snap


def test_restore_only_raises_floors() -> None:
    cache = CacheManager()
    cache.invalidate_keys(["a"], 10)
    cache.restore(CacheFloorSnapshot(floors=(("a", 3), ("b", 4))))
    assert cache.epoch_floor("a") == 10
    assert cache.epoch_floor("b") == 4


def test_restore_with_other_bucket_count_is_conservative() -> None:
    small = CacheEpochTracker(max_keys=1, eviction_buckets=8)
    small.invalidate_key("a", 5)
    small.invalidate_key("b", 6)  # evicts a into a bucket
    other = CacheEpochTracker(max_keys=1, eviction_buckets=16)
    other.restore(small.snapshot())
    assert other.epoch_floor("a") >= 5
    assert other.epoch_floor("b") >= 6


def test_restore_drops_values_it_makes_stale() -> None:
    cache = CacheManager()
    cache.put("a", b"x", 1)
    cache.restore(CacheFloorSnapshot(floors=(("a", 2),)))
    assert cache.get("a", 5) is None


# --- validation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "exc", "words"),
    [
        (lambda c: c.invalidate_keys(["k"], -1), InvalidArgument, ["epoch", "-1"]),
        (lambda c: c.invalidate_keys(["k"], 2**64), InvalidArgument, ["epoch", str(2**64)]),
        (lambda c: c.invalidate_keys(["k"], 1.5), WrongType, ["epoch", "1.5"]),
        (lambda c: c.invalidate_keys(["k"], True), WrongType, ["epoch", "True"]),
        (lambda c: c.invalidate_keys("key", 1), WrongType, ["keys", "'key'"]),
        (lambda c: c.invalidate_keys(["ok", 7], 1), WrongType, ["keys[1]", "7"]),
        (lambda c: c.is_fresh("k", -3), InvalidArgument, ["epoch", "-3"]),
        (lambda c: c.is_fresh(b"k", 3), WrongType, ["key", "b'k'"]),
        (lambda c: c.epoch_floor(None), WrongType, ["key", "None"]),
        (lambda c: c.raise_floor_all(-2), InvalidArgument, ["epoch", "-2"]),
        (lambda c: c.put("k", b"v", -1), InvalidArgument, ["epoch", "-1"]),
        (lambda c: c.put("k", None, 1), InvalidArgument, ["value", "None"]),
        (lambda c: c.get("k", "5"), WrongType, ["current_epoch", "'5'"]),
        (lambda c: c.apply_invalidation(("k",)), WrongType, ["event", "('k',)"]),
        (lambda c: c.restore({}), WrongType, ["snapshot", "{}"]),
    ],
)
def test_bad_arguments_name_argument_and_value_and_change_nothing(
    call: object, exc: type[Exception], words: list[str]
) -> None:
    cache = CacheManager()
    cache.invalidate_keys(["ok"], 3)
    cache.put("ok", b"v", 3)
    before = (cache.statistics(), cache.snapshot())
    with pytest.raises(exc) as info:
        call(cache)  # type: ignore[operator]
    for word in words:
        assert word in str(info.value)
    assert (cache.statistics(), cache.snapshot()) == before


@pytest.mark.parametrize(
    ("kwargs", "exc", "words"),
    [
        ({"max_keys": 0}, InvalidArgument, ["max_keys", "0"]),
        ({"max_keys": 1.0}, WrongType, ["max_keys", "1.0"]),
        ({"max_values": -1}, InvalidArgument, ["max_values", "-1"]),
        ({"eviction_buckets": 0}, InvalidArgument, ["eviction_buckets", "0"]),
    ],
)
def test_bad_constructor_arguments(
    kwargs: dict[str, object], exc: type[Exception], words: list[str]
) -> None:
    with pytest.raises(exc) as info:
        CacheManager(**kwargs)  # type: ignore[arg-type]
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize(
    ("event", "exc", "words"),
    [
        (CacheInvalidation(("k",), -1), InvalidArgument, ["epoch_floor", "-1"]),
        (CacheInvalidation(("k",), 1, reason=5), WrongType, ["reason", "5"]),  # type: ignore[arg-type]
        (CacheInvalidation((1,), 1), WrongType, ["keys[0]", "1"]),  # type: ignore[arg-type]
        (CacheInvalidation("key", 1), WrongType, ["keys", "'key'"]),  # type: ignore[arg-type]
    ],
)
def test_bad_invalidation_events_are_refused_when_applied(
    event: CacheInvalidation, exc: type[Exception], words: list[str]
) -> None:
    for target in (CacheManager(), CacheEpochTracker()):
        with pytest.raises(exc) as info:
            target.apply_invalidation(event)
        for word in words:
            assert word in str(info.value)
        assert target.all_floors() == ()


@pytest.mark.parametrize(
    ("kwargs", "exc", "words"),
    [
        ({"evicted_floors": ((9, 1),), "eviction_buckets": 4}, InvalidArgument, ["bucket", "9"]),
        ({"global_floor": -1}, InvalidArgument, ["global_floor", "-1"]),
        ({"floors": (("a", -1),)}, InvalidArgument, ["floors[0] floor", "-1"]),
        ({"eviction_buckets": 0}, InvalidArgument, ["eviction_buckets", "0"]),
    ],
)
def test_bad_snapshots_are_refused_by_restore_naming_field_and_value(
    kwargs: dict[str, object], exc: type[Exception], words: list[str]
) -> None:
    cache = CacheManager()
    cache.invalidate_keys(["ok"], 3)
    before = cache.snapshot()
    with pytest.raises(exc) as info:
        cache.restore(CacheFloorSnapshot(**kwargs))  # type: ignore[arg-type]
    for word in words:
        assert word in str(info.value)
    assert cache.snapshot() == before


# --- deprecated alias ----------------------------------------------------------------


def test_deprecated_alias_warns_and_names_the_replacement() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from aura_sync.cache import CacheEpochFloors
    assert CacheEpochFloors is CacheEpochTracker
    assert any(
        issubclass(w.category, DeprecationWarning) and "CacheEpochTracker" in str(w.message)
        for w in caught
    )


def test_deprecated_module_has_no_other_names() -> None:
    import aura_sync.cache as legacy

    with pytest.raises(AttributeError, match="Nope"):
        legacy.Nope  # noqa: B018


# --- the Rust names ------------------------------------------------------------------


def test_rust_names_on_the_tracker() -> None:
    tracker = CacheEpochTracker(max_keys=2, eviction_buckets=1)
    assert tracker.tracked_keys() == 0 and tracker.all_floors() == ()
    assert tracker.invalidate_key("a", 5) is True
    assert tracker.invalidate_key("a", 3) is False  # monotonic
    assert tracker.invalidate_keys(["b", "a"], 6) == 2
    assert tracker.apply_invalidation(CacheInvalidation(("b",), 9, "rotation")) == 1
    assert tracker.all_floors() == (("a", 6), ("b", 9))
    assert tracker.tracked_keys() == 2
    tracker.invalidate_key("c", 7)  # evicts "a" (least recently invalidated), conservatively
    assert tracker.tracked_keys() == 2
    assert dict(tracker.all_floors()) == {"b": 9, "c": 7}
    assert not tracker.is_fresh("a", 5)
    tracker.raise_floor_all(8)
    assert tracker.all_floors() == (("b", 9),)  # covered floors are dropped, the exact one kept


def test_rust_names_on_the_manager() -> None:
    cache = CacheManager()
    cache.invalidate_key("a", 4)
    cache.invalidate_keys(["b", "c"], 2)
    cache.apply_invalidation(CacheInvalidation(("a",), 3))  # lower: no change, still counted
    assert cache.tracked_keys() == 3
    assert cache.all_floors() == (("b", 2), ("c", 2), ("a", 4))
    stats = cache.statistics()
    assert (stats.total_invalidations, stats.total_keys_invalidated) == (3, 4)
    with pytest.raises(WrongType, match=r"key must be a str.*5"):
        cache.invalidate_key(5, 1)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match=r"epoch.*-1"):
        cache.invalidate_key("a", -1)
    assert cache.statistics() == stats


# --- messages ------------------------------------------------------------------------

SNAPSHOT = CacheFloorSnapshot((("a", 1),), ((3, 4),), 16, 2)
SAMPLES = [
    msgs.InvalidateKeys(("a", "b"), 5),
    msgs.ApplyInvalidation(CacheInvalidation(("a",), 2**64 - 1, "upgrade")),
    msgs.ApplyInvalidation(CacheInvalidation((), 0)),
    msgs.RaiseFloorAll(7),
    msgs.ClearCache(),
    msgs.IsFresh("k", 3),
    msgs.GetEpochFloor("k"),
    msgs.PutValue("k", b"\x00\xff", 4),
    msgs.GetValue("k", 4),
    msgs.DiscardValue("k"),
    msgs.GetCacheStatistics(),
    msgs.GetCacheSnapshot(),
    msgs.RestoreCacheFloors(SNAPSHOT),
    CacheInvalidation(("a",), 3),
    SNAPSHOT,
    CacheStatistics(1, 2, 3, 4, 5, 6, 7, 8, 9),
]


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_cache_messages_round_trip(msg: Message) -> None:
    decoded = codec.decode(codec.encode(msg))
    assert decoded == msg
    assert type(decoded) is type(msg)


def test_cache_message_tags_are_in_the_cache_range() -> None:
    ours = [c for c in registered_messages().values() if "cache" in c.__module__]
    requests = {
        n for n, v in vars(msgs).items() if isinstance(v, type) and v.__module__ == msgs.__name__
    }
    assert len(requests) == 12
    assert {c.__name__ for c in ours} == {
        *requests,
        "CacheInvalidation",
        "CacheStatistics",
        "CacheFloorSnapshot",
    }
    for cls in ours:
        assert 0x40 <= cls.TAG <= 0x5F, cls


def test_decoding_checks_field_types_and_the_core_checks_values() -> None:
    wire = codec.encode(msgs.IsFresh("k", 1)).replace(b"\xa1k", b"\x07", 1)  # key 7
    with pytest.raises(DecodeError, match="key"):
        codec.decode(wire)
    request = codec.decode(b"\x93\x44\xa1k\xd0\xff")  # IsFresh("k", -1) is well-typed
    assert request == msgs.IsFresh("k", -1)
    with pytest.raises(InvalidArgument, match="epoch"):
        CacheManager().is_fresh("k", -1)


def test_the_cores_values_drive_a_manager_after_a_round_trip() -> None:
    cache = CacheManager()
    event = codec.decode(codec.encode(CacheInvalidation(("a",), 5, "rotation")))
    assert isinstance(event, CacheInvalidation)
    cache.apply_invalidation(event)
    assert codec.decode(codec.encode(cache.statistics())) == cache.statistics()
    snap = codec.decode(codec.encode(cache.snapshot()))
    assert isinstance(snap, CacheFloorSnapshot)
    restored = CacheManager()
    restored.restore(snap)
    assert restored.epoch_floor("a") == 5
