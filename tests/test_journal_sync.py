"""Reconciliation through a pipelined remote: several requests per round trip, same result."""

from __future__ import annotations

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
        raise AssertionError("a pipelined remote is asked through push_many")

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

    def push_many(self, batches: list[tuple[Op, ...]]) -> Call[int]:
        self._window("push", len(batches))
        return (yield from _now(sum(self.journal.add_many(b) for b in batches)))


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
        b.append_many(b"b%d" % i for i in range(700))
    remote = PipelinedRemote(b)
    assert isinstance(remote, Pipelined)
    agreed = _drive(reconcile(a, remote, list_threshold=64, batch_size=128))
    assert agreed == a.digest().fingerprint == b.digest().fingerprint
    assert len(a) == len(b) == 4800
    assert max(remote.windows["fetch"]) == PIPELINE_DEPTH  # 2100 ids: 17 batches
    assert max(remote.windows["push"]) == PIPELINE_DEPTH
    assert sum(remote.windows["fetch"]) == -(-2100 // 128)
    assert max(remote.windows["list"]) > 1  # the ranges of one level listed at once
    assert all(ok for _, ok, _ in a.verify()) and all(ok for _, ok, _ in b.verify())
