"""``Journal.push_order`` with a limit: the prefix of the full order, read lazily."""

from __future__ import annotations

from collections.abc import Iterator

from hypothesis import given, settings
from hypothesis import strategies as st

from aura_sync.identity import NodeIdentity
from aura_sync.messages.sync import MAX_OPS_BATCH
from aura_sync.protocols.journal import Journal
from aura_sync.protocols.journal_chain import PushRow, chain_rows, push_prefix

AUTHORS = [NodeIdentity.generate() for _ in range(3)]


def _journal(runs: list[list[int]]) -> Journal:
    """A journal holding each author's ops, appended in runs (the last of a run signed)."""
    target = Journal.open(":memory:", identity=NodeIdentity.generate())
    for who, sizes in zip(AUTHORS, runs, strict=False):
        with Journal.open(":memory:", identity=who) as source:
            for n, size in enumerate(sizes):
                source.append_many(b"%d %d" % (n, i) for i in range(size))
            order = source.push_order(source.all_ids())
            for i in range(0, len(order), MAX_OPS_BATCH):
                target.add_many(source.get_many(order[i : i + MAX_OPS_BATCH]))
    return target


def _received(journal: Journal, order: list[bytes]) -> Journal:
    """A fresh journal that was pushed ``order`` in batches (raises if one is refused)."""
    receiver = Journal.open(":memory:", identity=NodeIdentity.generate())
    for i in range(0, len(order), MAX_OPS_BATCH):
        receiver.add_many(journal.get_many(order[i : i + MAX_OPS_BATCH]))
    return receiver


@settings(max_examples=40, deadline=None)
@given(
    runs=st.lists(st.lists(st.integers(1, 40), min_size=1, max_size=4), min_size=1, max_size=3),
    data=st.data(),
)
def test_a_limited_push_order_is_the_prefix_of_the_full_one(
    runs: list[list[int]], data: st.DataObject
) -> None:
    with _journal(runs) as journal:
        ids = list(journal.all_ids())
        wanted = data.draw(st.lists(st.sampled_from(ids), min_size=1, unique=True))
        limit = data.draw(st.integers(1, len(wanted) + 2))
        full = journal.push_order(wanted)
        assert journal.push_order(wanted, limit) == full[:limit]
        # the prefix is authenticated batch by batch when pushed in that order
        with _received(journal, full[:limit]) as receiver:
            assert len(receiver) == min(limit, len(full))


def test_the_lazy_order_reads_only_the_rows_it_needs() -> None:
    with _journal([[500, 500]]) as journal:
        ids = list(journal.all_ids())
        read: list[PushRow] = []

        def counted() -> Iterator[PushRow]:
            for row in chain_rows(journal._conn):
                read.append(row)
                yield row

        prefix = push_prefix(counted(), set(ids), 100, 1)
        assert prefix == journal.push_order(ids)[:100]
        assert len(read) == 100
        # a wanted run whose top is not wanted: the rows up to the signed head come first
        read.clear()
        below = set(journal.push_order(ids)[10:])  # the top 10 ops (the head: signed) not wanted
        assert push_prefix(counted(), below, 20, 64) == journal.push_order(ids)[:20]
        assert len(read) == 20
