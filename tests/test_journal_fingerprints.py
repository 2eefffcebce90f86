"""Stateful properties: incremental range fingerprints equal a recomputation from scratch.

The journal machine runs with 64 buckets (so buckets hold many ids and a
range's edges fall inside them) and a sweep of its id index every 7 ops
(so ids move between the fresh and the swept tier, reopening rebuilds the
fresh tier, and a failed commit undoes its sweeps); the :class:`RangeSums`
machine checks the four-level sums alone with 512 buckets and bounds taken
from the held ids.
"""

from __future__ import annotations

import itertools
import shutil
import sqlite3
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from test_journal import _FullDisk

from aura_sync.identity import NodeIdentity
from aura_sync.messages.sync import IdRange, fingerprint
from aura_sync.protocols import journal as journal_module
from aura_sync.protocols import journal_ids, journal_index
from aura_sync.protocols.journal import JOURNAL_FILE_NAME, Journal
from aura_sync.protocols.journal_index import FAN_BITS, RangeSums

_MOD = 1 << 256  # sums are persisted mod 2**256, which is all the fingerprint uses
_ME, _PEER = NodeIdentity.generate(), NodeIdentity.generate()
_bound = st.one_of(
    st.binary(min_size=32, max_size=32),
    st.binary(min_size=1, max_size=2).map(lambda b: b.ljust(32, b"\x00")),  # bucket-aligned
)


class Fingerprints(RuleBasedStateMachine):
    """Random appends, peer batches, reopenings (snapshot + tail replay) and ranges."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="aura-fp-")
        self.path = Path(self.dir) / JOURNAL_FILE_NAME
        self.journal = Journal.open(self.path, identity=_ME, synchronous="NORMAL")
        self.source = Journal.open(":memory:", identity=_PEER)
        self.ids: set[bytes] = set()
        self.sent = 0

    @rule(n=st.integers(1, 40), size=st.integers(0, 16))
    def append(self, n: int, size: int) -> None:
        self.ids.update(self.journal.append_many(bytes([i]) * size for i in range(n)))

    @rule(n=st.integers(1, 30))
    def receive(self, n: int) -> None:
        new = self.source.append_many(b"%d" % (self.sent + i) for i in range(n))
        self.sent += n
        order = self.source.push_order(new)
        assert self.journal.add_many(self.source.get_many(order)) == n
        self.ids.update(new)

    @rule(n=st.integers(1, 40))
    def failed_commit(self, n: int) -> None:
        """A commit that fails (disk full) after its batch was indexed and swept: undone."""
        real = self.journal._conn
        self.journal._conn = _FullDisk(real)  # type: ignore[assignment]
        try:
            with pytest.raises(sqlite3.OperationalError, match="disk is full"):
                self.journal.append_many(b"lost-%d" % i for i in range(n))
        finally:
            self.journal._conn = real

    @precondition(lambda self: bool(self.ids))
    @rule()
    def reopen(self) -> None:
        self.journal.close()
        self.journal = Journal.open(self.path, identity=_ME, synchronous="NORMAL")

    @rule(a=_bound, b=st.one_of(st.none(), _bound))
    def range_matches(self, a: bytes, b: bytes | None) -> None:
        if b is not None and b == a:
            return
        lo, hi = (a, b) if b is None or a < b else (b, a)
        r = IdRange(lo, hi)
        digest = self.journal.digest(r)
        assert (digest.count, digest.fingerprint) == fingerprint(
            x for x in self.ids if r.contains(x)
        )

    @precondition(lambda self: bool(self.ids))
    @rule(data=st.data())
    def range_at_held_ids(self, data: st.DataObject) -> None:
        held = sorted(self.ids)
        lo = data.draw(st.sampled_from(held))
        hi = data.draw(st.one_of(st.none(), st.sampled_from(held)))
        if hi is not None and hi <= lo:
            lo, hi = hi, lo
        if hi == lo:
            return
        digests = self.journal.digests([IdRange(lo, hi), IdRange(lo, None)])
        for r, digest in zip([IdRange(lo, hi), IdRange(lo, None)], digests, strict=True):
            want = fingerprint(x for x in self.ids if r.contains(x))
            assert (digest.count, digest.fingerprint) == want

    @rule(a=_bound, b=st.one_of(st.none(), _bound), limit=st.integers(1, 9))
    def listing_pages_match(self, a: bytes, b: bytes | None, limit: int) -> None:
        lo, hi = (a, b) if b is None or a < b else (b, a)
        if hi == lo:
            return
        r, pages = IdRange(lo, hi), []
        page, next_lo = self.journal.list_ids(r, limit)
        pages += page
        while next_lo is not None:
            page, next_lo = self.journal.list_ids(IdRange(next_lo, hi), limit)
            pages += page
        assert pages == sorted(x for x in self.ids if r.contains(x))

    @rule()
    def index_tiers_are_whole(self) -> None:
        report = {name: (ok, detail) for name, ok, detail in self.journal.verify()}
        assert report["id_index"][0], report["id_index"][1]
        assert report["fingerprints"][0], report["fingerprints"][1]

    @invariant()
    def full_range_matches(self) -> None:
        digest = self.journal.digest()
        assert (digest.count, digest.fingerprint) == fingerprint(self.ids)
        assert len(self.journal) == len(self.ids)
        assert self.journal.all_ids() == tuple(sorted(self.ids))
        assert self.journal.missing(self.ids) == []

    def teardown(self) -> None:
        self.journal.close()
        self.source.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(autouse=True)
def _small_snapshots(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(journal_module, "SNAPSHOT_EVERY", 50)  # exercise snapshot + tail replay
    monkeypatch.setattr(journal_module, "BUCKET_BITS", 6)  # dense buckets: edges inside them
    monkeypatch.setattr(journal_ids, "STEP_OPS", 7)  # sweeps every few ops
    monkeypatch.setattr(journal_index, "_PENDING_MAX", 50)  # levels also caught up without reads


_id = st.one_of(
    st.binary(min_size=32, max_size=32),
    st.tuples(
        st.sampled_from([b"\x00", b"\x41\x7f", b"\xff\xff"]), st.binary(min_size=32, max_size=32)
    ).map(lambda t: (t[0] + t[1])[:32]),  # a few dense buckets
)


class Sums(RuleBasedStateMachine):
    """RangeSums alone: inserts, rolled-back inserts, reloads from its rows, and ranges."""

    def __init__(self) -> None:
        super().__init__()
        self.sums = RangeSums(9)
        self.ids: list[bytes] = []

    @rule(batch=st.lists(_id, min_size=1, max_size=60))
    def add(self, batch: list[bytes]) -> None:
        fresh = [x for x in dict.fromkeys(batch) if x not in set(self.ids)]
        self.sums.add(fresh)
        self.ids = sorted(self.ids + fresh)

    @rule(batch=st.lists(_id, min_size=1, max_size=20))
    def add_then_roll_back(self, batch: list[bytes]) -> None:
        self.sums.add(batch)
        self.sums.add(batch, -1)

    @rule()
    def reload(self) -> None:
        rows = [
            (b, c, (s % _MOD).to_bytes(32, "big"))
            for b, (c, s) in enumerate(zip(*self.sums.levels[0], strict=True))
            if c
        ]
        self.sums = RangeSums(9)
        self.sums.load(rows)

    @rule(data=st.data())
    def range_matches(self, data: st.DataObject) -> None:
        bound = st.binary(min_size=32, max_size=32)
        if self.ids:
            near = st.sampled_from(self.ids).map(
                lambda x: (int.from_bytes(x, "big") + 1) % (1 << 256)
            )
            bound = st.one_of(
                bound, st.sampled_from(self.ids), near.map(lambda v: v.to_bytes(32, "big"))
            )
        aligned = st.integers(0, 511).map(self.sums.bucket_start)
        lo = data.draw(st.one_of(bound, aligned))
        hi = data.draw(st.one_of(st.none(), bound, aligned))
        if hi is not None and hi <= lo:
            lo, hi = hi, lo
        if hi == lo:
            return
        r = IdRange(lo, hi)

        def fetch(bucket: int) -> list[bytes]:
            return [x for x in self.ids if self.sums.bucket_of(x) == bucket]

        inside = [int.from_bytes(x, "big") for x in self.ids if r.contains(x)]
        count, total = self.sums.range_sum(lo, hi, fetch)
        assert (count, total % _MOD) == (len(inside), sum(inside) % _MOD)

    @invariant()
    def totals_match(self) -> None:
        self.sums.refresh()  # the levels above the buckets catch up lazily (at reads)
        assert self.sums.count == len(self.ids)
        assert self.sums.total % _MOD == sum(int.from_bytes(x, "big") for x in self.ids) % _MOD
        assert self.sums.levels[-1][0] and sum(self.sums.levels[-1][0]) == len(self.ids)
        fan = 1 << FAN_BITS
        for (counts, sums), (up_counts, up_sums) in itertools.pairwise(self.sums.levels):
            for p, (count, total) in enumerate(zip(up_counts, up_sums, strict=True)):
                assert count == sum(counts[p * fan : (p + 1) * fan])
                assert total == sum(sums[p * fan : (p + 1) * fan])


Fingerprints.TestCase.settings = settings(max_examples=25, stateful_step_count=20, deadline=None)
test_fingerprints = Fingerprints.TestCase
Sums.TestCase.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
test_range_sums = Sums.TestCase
