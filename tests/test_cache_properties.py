"""Property tests of the epoch cache: floors never decrease, eviction and clear
never make a key fresh below the floor it had, the value store never returns a
value below its key's floor, and the bounds hold."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from aura_sync.infrastructure.cache import (
    CacheEpochTracker,
    CacheFloorSnapshot,
    CacheInvalidation,
    CacheManager,
)
from aura_sync.messages import codec

KEYS = [f"k{i}" for i in range(8)]
keys = st.sampled_from(KEYS)
epochs = st.integers(0, 30)

tracker_ops = st.one_of(
    st.tuples(st.just("raise"), keys, epochs),
    st.tuples(st.just("raise_many"), st.lists(keys, max_size=4), epochs),
    st.tuples(st.just("raise_all"), epochs),
    st.tuples(st.just("forget_all")),
    st.tuples(st.just("restore_own")),
    st.tuples(
        st.just("restore"),
        st.lists(st.tuples(keys, epochs), max_size=4),
        st.lists(st.tuples(st.integers(0, 3), epochs), max_size=3),
        st.sampled_from([4, 8]),
        epochs,
    ),
)

SETTINGS = settings(max_examples=150, deadline=None)


def _apply_tracker_op(
    tracker: CacheEpochTracker, op: tuple[Any, ...], model: dict[str, int]
) -> None:
    """Apply ``op`` to ``tracker`` and raise ``model`` (the exact, unbounded floors)."""
    kind = op[0]
    if kind == "raise":
        tracker.invalidate_key(op[1], op[2])
        model[op[1]] = max(model[op[1]], op[2])
    elif kind == "raise_many":
        tracker.invalidate_keys(op[1], op[2])
        for key in op[1]:
            model[key] = max(model[key], op[2])
    elif kind == "raise_all":
        tracker.raise_floor_all(op[1])
        for key, floor in model.items():
            model[key] = max(floor, op[1])
    elif kind == "forget_all":
        tracker.forget_all()
    elif kind == "restore_own":
        tracker.restore(tracker.snapshot())
    else:
        _, floors, evicted, buckets, global_floor = op
        snap = CacheFloorSnapshot(
            tuple(floors), tuple(dict(evicted).items()), buckets, global_floor
        )
        # the exact floors the snapshot stands for: its keys, at least the global floor
        snap_floor = {key: global_floor for key in KEYS}
        for key, floor in floors:
            snap_floor[key] = max(snap_floor[key], floor)
        tracker.restore(snap)
        for key, floor in model.items():
            model[key] = max(floor, snap_floor[key])


@SETTINGS
@given(
    max_keys=st.integers(1, 5),
    buckets=st.integers(1, 6),
    ops=st.lists(tracker_ops, min_size=5, max_size=40),
)
def test_floors_never_decrease_and_evicted_keys_are_never_fresh_below_their_floor(
    max_keys: int, buckets: int, ops: list[tuple[Any, ...]]
) -> None:
    tracker = CacheEpochTracker(max_keys, eviction_buckets=buckets)
    model = dict.fromkeys(KEYS, 0)
    previous = dict.fromkeys(KEYS, 0)
    for op in ops:
        _apply_tracker_op(tracker, op, model)
        assert len(tracker) == tracker.tracked_keys() == len(tracker.all_floors()) <= max_keys
        for key, exact in tracker.all_floors():
            assert tracker.epoch_floor(key) == exact  # a tracked floor is the key's floor
        for key in KEYS:
            floor = tracker.epoch_floor(key)
            assert floor >= previous[key], (key, op)  # never decreases
            assert floor >= model[key], (key, op)  # never below the true floor
            if model[key] > 0:
                assert not tracker.is_fresh(key, model[key] - 1)
            assert tracker.is_fresh(key, floor)
            previous[key] = floor


@SETTINGS
@given(ops=st.lists(st.tuples(keys, epochs), max_size=40))
def test_without_evictions_floors_are_exact(ops: list[tuple[str, int]]) -> None:
    tracker = CacheEpochTracker(max_keys=len(KEYS))
    model = dict.fromkeys(KEYS, 0)
    for key, epoch in ops:
        tracker.invalidate_key(key, epoch)
        model[key] = max(model[key], epoch)
    for key in KEYS:
        assert tracker.epoch_floor(key) == model[key]
    assert tracker.evictions == 0


few_keys = st.sampled_from(KEYS[:3])  # few keys and epochs: reads often meet invalidations
few_epochs = st.integers(0, 8)
manager_ops = st.one_of(
    st.tuples(st.just("put"), few_keys, few_epochs),
    st.tuples(st.just("get"), few_keys, few_epochs),
    st.tuples(st.just("invalidate"), st.lists(few_keys, max_size=3), few_epochs),
    st.tuples(st.just("raise_all"), few_epochs),
    st.tuples(st.just("clear")),
    st.tuples(st.just("restart")),
)


@SETTINGS
@given(
    max_keys=st.integers(1, 5),
    max_values=st.integers(0, 4),
    ops=st.lists(manager_ops, min_size=10, max_size=60),
)
def test_value_store_never_returns_a_value_below_its_floor(
    max_keys: int, max_values: int, ops: list[tuple[Any, ...]]
) -> None:
    cache = CacheManager(max_keys, max_values=max_values, eviction_buckets=3)
    model = dict.fromkeys(KEYS, 0)  # the exact floors
    written: dict[str, int] = {}  # last accepted write epoch per key, as the value says
    serial = 0
    for op in ops:
        kind = op[0]
        if kind == "put":
            _, key, epoch = op
            serial += 1
            stored = cache.put(key, (key, epoch, serial), epoch)
            if epoch < model[key]:
                assert not stored  # stale on arrival is refused
            if stored:
                written[key] = epoch
                assert cache.get(key, epoch) == (key, epoch, serial)  # readable at once
        elif kind == "get":
            _, key, current = op
            value = cache.get(key, current)
            if value is not None:
                v_key, v_epoch, _ = value
                assert v_key == key
                assert v_epoch >= model[key]  # never below the floor
                assert v_epoch >= cache.epoch_floor(key)
                assert v_epoch <= current
                assert v_epoch == written[key]  # the newest accepted write
        elif kind == "invalidate":
            cache.invalidate_keys(op[1], op[2])
            for key in op[1]:
                model[key] = max(model[key], op[2])
        elif kind == "raise_all":
            cache.raise_floor_all(op[1])
            for key, floor in model.items():
                model[key] = max(floor, op[1])
        elif kind == "clear":
            cache.clear()
        else:  # an actor restart: a new manager restored from the snapshot
            reply = codec.decode(codec.encode(cache.snapshot()))
            assert isinstance(reply, CacheFloorSnapshot)
            cache = CacheManager(max_keys, max_values=max_values, eviction_buckets=3)
            cache.restore(reply)
        stats = cache.statistics()
        assert stats.tracked_keys <= max_keys
        assert stats.stored_values <= max_values
        for key in KEYS:
            assert cache.epoch_floor(key) >= model[key]


class CacheMachine(RuleBasedStateMachine):
    """A CacheManager driven through every public mutation, the Rust names included,
    against an exact unbounded model of the floors and a count of the events."""

    def __init__(self) -> None:
        super().__init__()
        self.cache = CacheManager(3, max_values=2, eviction_buckets=2)
        self.model = dict.fromkeys(KEYS, 0)
        self.seen = dict.fromkeys(KEYS, 0)  # the floors last observed, which never go down
        self.events = 0
        self.named = 0

    def _raise(self, keys: list[str], epoch: int) -> None:
        for key in keys:
            self.model[key] = max(self.model[key], epoch)
        self.events += 1
        self.named += len(keys)

    @rule(key=keys, epoch=epochs)
    def invalidate_key(self, key: str, epoch: int) -> None:
        self.cache.invalidate_key(key, epoch)
        self._raise([key], epoch)

    @rule(many=st.lists(keys, max_size=4), epoch=epochs)
    def invalidate_keys(self, many: list[str], epoch: int) -> None:
        self.cache.invalidate_keys(many, epoch)
        self._raise(many, epoch)

    @rule(many=st.lists(keys, max_size=4), epoch=epochs)
    def apply_invalidation(self, many: list[str], epoch: int) -> None:
        event = codec.decode(codec.encode(CacheInvalidation(tuple(many), epoch, "rotation")))
        assert isinstance(event, CacheInvalidation)
        self.cache.apply_invalidation(event)
        self._raise(many, epoch)

    @rule(epoch=epochs)
    def raise_floor_all(self, epoch: int) -> None:
        self.cache.raise_floor_all(epoch)
        self._raise([], epoch)
        for key in KEYS:
            self.model[key] = max(self.model[key], epoch)

    @rule()
    def clear(self) -> None:
        self.cache.clear()

    @rule(key=keys, epoch=epochs)
    def put(self, key: str, epoch: int) -> None:
        self.cache.put(key, (key, epoch), epoch)

    @rule(key=keys, epoch=epochs)
    def get(self, key: str, epoch: int) -> None:
        value = self.cache.get(key, epoch)
        if value is not None:
            assert value[0] == key and self.model[key] <= value[1] <= epoch

    @rule()
    def restart(self) -> None:
        snapshot = codec.decode(codec.encode(self.cache.snapshot()))
        assert isinstance(snapshot, CacheFloorSnapshot)
        stats = self.cache.statistics()
        self.cache = CacheManager(3, max_values=2, eviction_buckets=2)
        self.cache.restore(snapshot)
        self.events -= stats.total_invalidations  # a new manager counts from zero
        self.named -= stats.total_keys_invalidated

    @invariant()
    def floors_hold(self) -> None:
        cache = self.cache
        for key in KEYS:
            floor = cache.epoch_floor(key)
            assert floor >= self.model[key] and floor >= self.seen[key]
            assert cache.is_fresh(key, floor) and not (floor and cache.is_fresh(key, floor - 1))
            self.seen[key] = floor
        floors = cache.all_floors()
        assert len(floors) == cache.tracked_keys() == cache.statistics().tracked_keys <= 3
        assert all(cache.epoch_floor(key) == floor for key, floor in floors)
        stats = cache.statistics()
        assert (stats.total_invalidations, stats.total_keys_invalidated) == (
            self.events,
            self.named,
        )


TestCacheMachine = CacheMachine.TestCase
TestCacheMachine.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
