"""Range reconciliation (``aura_sync.protocols.reconcile``) against an in-memory remote.

No actors, no sockets: the fake remote's calls never yield, so a
reconciliation runs to completion in :func:`drive`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aura_sync.errors import TransportError
from aura_sync.identity import NodeIdentity
from aura_sync.messages.sync import MAX_RANGES, IdRange, Op, RangeDigest
from aura_sync.protocols.journal import Journal
from aura_sync.protocols.reconcile import Call, Progress, chunks, reconcile

T = TypeVar("T")
IDENTITIES = {n: NodeIdentity.generate() for n in (1, 2, 3)}


def now(value: T) -> Call[T]:
    """A call that completes without suspending."""
    if False:
        yield
    return value


class MemoryRemote:
    """A :class:`~aura_sync.protocols.reconcile.Remote` over another journal; counts calls."""

    def __init__(self, journal: Journal, *, fail_on_push: bool = False) -> None:
        self.journal = journal
        self.calls: dict[str, int] = {}
        self.fail_on_push = fail_on_push

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def digests(self, ranges: tuple[IdRange, ...]) -> Call[tuple[RangeDigest, ...]]:
        self._count("digests")
        assert 1 <= len(ranges) <= MAX_RANGES
        return (yield from now(self.journal.digests(ranges)))

    def list_ids(self, id_range: IdRange) -> Call[list[bytes]]:
        self._count("list_ids")
        ids, _ = self.journal.list_ids(id_range, 1024)
        return (yield from now(list(ids)))

    def fetch(self, ids: tuple[bytes, ...]) -> Call[tuple[Op, ...]]:
        self._count("fetch")
        return (yield from now(tuple(self.journal.get_many(ids))))

    def push(self, ops: tuple[Op, ...]) -> Call[int]:
        self._count("push")
        if self.fail_on_push:
            raise TransportError("connection lost while pushing")
        return (yield from now(self.journal.add_many(ops)))


def drive(call: Call[Any]) -> Any:
    """Run a call whose steps never suspend; return its result."""
    try:
        step = next(call)
    except StopIteration as stop:
        return stop.value
    raise AssertionError(f"the reconciliation yielded {step!r} to an in-memory remote")


def journal(author: int, payloads: list[bytes] | None = None) -> Journal:
    j = Journal.open(":memory:", identity=IDENTITIES[author])
    if payloads:
        j.append_many(payloads)
    return j


@pytest.fixture
def pair() -> Iterator[tuple[Journal, Journal]]:
    a, b = journal(1), journal(2)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def test_equal_journals_agree_in_one_digest_call(pair: tuple[Journal, Journal]) -> None:
    a, b = pair
    a.append_many([b"x", b"y"])
    b.add_many(a.get_many(a.all_ids()))
    remote = MemoryRemote(b)
    agreed = drive(reconcile(a, remote, list_threshold=16, batch_size=8))
    assert agreed == a.digest().fingerprint == b.digest().fingerprint
    assert remote.calls == {"digests": 1}


def test_pulls_and_pushes_until_both_hold_the_union(pair: tuple[Journal, Journal]) -> None:
    a, b = pair
    a.append_many([f"a{i}".encode() for i in range(300)])
    b.append_many([f"b{i}".encode() for i in range(200)])
    progress = Progress()
    remote = MemoryRemote(b)
    agreed = drive(reconcile(a, remote, list_threshold=16, batch_size=32, progress=progress))
    assert (progress.pulled, progress.pushed) == (200, 300)
    assert len(a) == len(b) == 500
    assert agreed == a.digest().fingerprint == b.digest().fingerprint
    assert remote.calls["push"] == 10 and remote.calls["fetch"] == 7  # batches of 32


def test_an_empty_side_gets_everything_pushed_without_listing(
    pair: tuple[Journal, Journal],
) -> None:
    a, b = pair
    a.append_many([f"op{i}".encode() for i in range(50)])
    remote = MemoryRemote(b)
    drive(reconcile(a, remote, list_threshold=4, batch_size=128))
    assert len(b) == 50 and "list_ids" not in remote.calls and "fetch" not in remote.calls


def test_progress_counts_what_was_done_before_a_failure(pair: tuple[Journal, Journal]) -> None:
    a, b = pair
    a.append_many([b"mine"])
    b.append_many([b"theirs"])
    progress = Progress()
    with pytest.raises(TransportError):
        drive(
            reconcile(
                a,
                MemoryRemote(b, fail_on_push=True),
                list_threshold=16,
                batch_size=8,
                progress=progress,
            )
        )
    assert progress.pulled == 1 and len(a) == 2  # the pull stays done: journals only grow


def test_chunks_cuts_in_order() -> None:
    assert list(chunks([1, 2, 3, 4, 5], 2)) == [(1, 2), (3, 4), (5,)]
    assert list(chunks([], 3)) == []


payload_lists = st.lists(st.binary(min_size=0, max_size=12), max_size=60)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    mine=payload_lists,
    theirs=payload_lists,
    shared=payload_lists,
    list_threshold=st.integers(1, 64),
    batch_size=st.integers(1, 128),
)
def test_two_random_journals_converge(
    mine: list[bytes],
    theirs: list[bytes],
    shared: list[bytes],
    list_threshold: int,
    batch_size: int,
) -> None:
    a, b, c = journal(1, mine), journal(2, theirs), journal(3, shared)
    try:
        common = c.get_many(c.all_ids())
        a.add_many(common)
        b.add_many(common)
        union = set(a.all_ids()) | set(b.all_ids())
        remote = MemoryRemote(b)
        agreed = drive(reconcile(a, remote, list_threshold=list_threshold, batch_size=batch_size))
        assert set(a.all_ids()) == set(b.all_ids()) == union
        assert agreed == a.digest().fingerprint == b.digest().fingerprint
        # A second run finds nothing to do: one digest exchange.
        again = MemoryRemote(b)
        drive(reconcile(a, again, list_threshold=list_threshold, batch_size=batch_size))
        assert again.calls == {"digests": 1}
    finally:
        a.close()
        b.close()
        c.close()
