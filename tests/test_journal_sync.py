"""Reconciliation through a pipelined remote: several requests per round trip, same result."""

from __future__ import annotations

import itertools
from typing import Any, TypeVar

from aura_sync.identity import NodeIdentity
from aura_sync.messages.sync import IdRange, Op, RangeDigest
from aura_sync.protocols.journal import Journal
from aura_sync.protocols.reconcile import PIPELINE_DEPTH, Call, Pipelined, reconcile

T = TypeVar("T")


def _now(value: T) -> Call[T]:
    if False:
        yield
    return value


class PipelinedRemote:
    """Another journal, answering windows of requests; records each window's size."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.windows: dict[str, list[int]] = {}

    def _window(self, name: str, n: int) -> None:
        self.windows.setdefault(name, []).append(n)

    def digests(self, ranges: tuple[IdRange, ...]) -> Call[tuple[RangeDigest, ...]]:
        return (yield from _now(self.journal.digests(ranges)))

    def list_ids(self, id_range: IdRange) -> Call[list[bytes]]:
        return (yield from _now(list(self.journal.list_ids(id_range, 1024)[0])))

    def fetch(self, ids: tuple[bytes, ...]) -> Call[tuple[Op, ...]]:
        raise AssertionError("a pipelined remote is asked through fetch_many")

    def push(self, ops: tuple[Op, ...]) -> Call[int]:
        self._window("push", 1)  # one at a time: each batch authenticated by those before
        return (yield from _now(self.journal.add_many(ops)))

    def digests_many(
        self, chunks: list[tuple[IdRange, ...]]
    ) -> Call[list[tuple[RangeDigest, ...]]]:
        self._window("digests", len(chunks))
        return (yield from _now([self.journal.digests(c) for c in chunks]))

    def list_many(self, ranges: list[IdRange]) -> Call[list[list[bytes]]]:
        self._window("list", len(ranges))
        return (yield from _now([list(self.journal.list_ids(r, 1024)[0]) for r in ranges]))

    def fetch_many(self, batches: list[tuple[bytes, ...]]) -> Call[list[tuple[Op, ...]]]:
        self._window("fetch", len(batches))
        return (yield from _now([tuple(self.journal.get_many(b)) for b in batches]))

    def children_many(
        self, depth: int, parts: list[tuple[int, ...]]
    ) -> Call[list[tuple[tuple[int, ...], bytes]]]:
        self._window("children", len(parts))
        return (yield from _now([self.journal.children(depth, part) for part in parts]))

    def node_ids_many(self, depth: int, parts: list[tuple[int, ...]]) -> Call[list[list[bytes]]]:
        self._window("node_ids", len(parts))
        out: list[list[bytes]] = []
        for part in parts:
            counts, ids = self.journal.node_ids(depth, part)
            start = 0
            for count in counts:
                out.append(list(ids[start : start + count]))
                start += count
        return (yield from _now(out))


def _drive(call: Call[Any]) -> Any:
    try:
        step = next(call)
    except StopIteration as stop:
        return stop.value
    raise AssertionError(f"yielded {step!r}")


def test_a_pipelined_remote_gets_windows_and_the_journals_agree() -> None:
    a = Journal.open(":memory:", identity=NodeIdentity.generate())
    b = Journal.open(":memory:", identity=NodeIdentity.generate())
    for _ in range(3):
        a.append_many(b"a%d" % i for i in range(900))
        b.append_many(b"b%d" % i for i in range(400))
    remote = PipelinedRemote(b)
    assert isinstance(remote, Pipelined)
    agreed = _drive(reconcile(a, remote, list_threshold=64, batch_size=128))
    assert agreed == a.digest().fingerprint == b.digest().fingerprint
    assert len(a) == len(b) == 3900
    assert max(remote.windows["fetch"]) == PIPELINE_DEPTH  # 1200 ids: 10 batches
    assert set(remote.windows["push"]) == {1}
    assert sum(remote.windows["fetch"]) == -(-1200 // 128)
    assert remote.windows["children"] == [1]  # far apart: the root's children are listed
    # a small difference in a large shared set: descend the tree, list small nodes by index
    a.append_many(b"late-a%d" % i for i in range(20))
    b.append_many(b"late-b%d" % i for i in range(20))
    remote = PipelinedRemote(b)
    agreed = _drive(reconcile(a, remote, list_threshold=64, batch_size=128))
    assert agreed == a.digest().fingerprint == b.digest().fingerprint and len(a) == 3940
    assert len(remote.windows["children"]) > 3 and max(remote.windows["node_ids"]) >= 1
    assert all(ok for _, ok, _ in a.verify()) and all(ok for _, ok, _ in b.verify())


def test_the_tree_cuts_the_id_space_exactly_and_children_match_digests() -> None:
    import pytest

    from aura_sync.errors import InvalidArgument
    from aura_sync.messages.sync import (
        CHILD_PRINT_SIZE,
        FULL_RANGE,
        TREE_DEPTH,
        ChildDigestsReply,
        ChildDigestsRequest,
        tree_range,
    )

    assert tree_range(0, 0) == FULL_RANGE
    for depth, index in ((0, 0), (3, 17), (60, 4**60 - 1)):
        parent = tree_range(depth, index)
        kids = [tree_range(depth + 1, 4 * index + j) for j in range(4)]
        assert kids[0].lo == parent.lo and kids[-1].hi == parent.hi
        assert all(a.hi == b.lo for a, b in itertools.pairwise(kids))
    leaf = tree_range(TREE_DEPTH, 5)
    assert (
        leaf.hi is not None and int.from_bytes(leaf.hi, "big") - int.from_bytes(leaf.lo, "big") == 1
    )
    with pytest.raises(InvalidArgument, match="index"):
        tree_range(2, 16)
    with pytest.raises(InvalidArgument, match="indexes"):
        ChildDigestsRequest(1, (4,)).check()
    with pytest.raises(InvalidArgument, match="prints"):
        ChildDigestsReply((1, 2), b"short").check()
    journal = Journal.open(":memory:", identity=NodeIdentity.generate())
    journal.append_many(b"%d" % i for i in range(500))
    counts, prints = journal.children(2, (3, 9))
    assert len(counts) == 8 and len(prints) == 8 * CHILD_PRINT_SIZE
    for k, index in enumerate(4 * node + j for node in (3, 9) for j in range(4)):
        digest = journal.digest(tree_range(3, index))
        assert counts[k] == digest.count
        assert prints[k * CHILD_PRINT_SIZE : (k + 1) * CHILD_PRINT_SIZE] == digest.fingerprint[:12]
    assert sum(journal.children(0, (0,))[0]) == 500


def test_an_empty_journal_lists_a_big_remote_in_pieces_without_descending() -> None:
    a = Journal.open(":memory:", identity=NodeIdentity.generate())
    b = Journal.open(":memory:", identity=NodeIdentity.generate())
    for start in range(0, 3000, 1000):
        b.append_many(b"b%d" % i for i in range(start, start + 1000))
    remote = PipelinedRemote(b)
    agreed = _drive(reconcile(a, remote, list_threshold=64, batch_size=128))
    assert agreed == a.digest().fingerprint == b.digest().fingerprint and len(a) == 3000
    assert "children" not in remote.windows  # no tree round trips: we hold nothing
    assert remote.windows["list"] == [4]  # 3000 ids in 4 pieces of ~750, listed at once


class ArrivingRemote(PipelinedRemote):
    """A remote during whose first fetch the local journal receives ops from elsewhere."""

    def __init__(self, journal: Journal, local: Journal, arriving: list[Op]) -> None:
        super().__init__(journal)
        self.local, self.arriving = local, arriving
        self.fetched: list[bytes] = []

    def fetch_many(self, batches: list[tuple[bytes, ...]]) -> Call[list[tuple[Op, ...]]]:
        if self.arriving:
            self.local.add_many(self.arriving)  # pushed by another peer meanwhile
            self.arriving = []
        self.fetched += [key for batch in batches for key in batch]
        return (yield from super().fetch_many(batches))


def test_a_pull_does_not_fetch_what_arrived_from_elsewhere_meanwhile() -> None:
    a = Journal.open(":memory:", identity=NodeIdentity.generate())
    b = Journal.open(":memory:", identity=NodeIdentity.generate())
    b.append_many(b"b%d" % i for i in range(600))
    top = b.get_many(b.push_order(b.all_ids())[:100])  # ops 599..500: covered by the head
    remote = ArrivingRemote(b, a, top)
    agreed = _drive(reconcile(a, remote, list_threshold=1024, batch_size=16))
    assert agreed == a.digest().fingerprint == b.digest().fingerprint and len(a) == 600
    first = set(remote.fetched[: 16 * PIPELINE_DEPTH])  # the window asked before they came
    again = [op.op_id for op in top if op.op_id in remote.fetched and op.op_id not in first]
    assert not again and len(remote.fetched) < 600  # later windows skipped what arrived
