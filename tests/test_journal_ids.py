"""Stateful property: the id index agrees with a plain dict across inserts, sweeps,
failed commits and reopens.

The machine drives :class:`IdIndex` alone on a minimal ``ops`` table (arrival,
id), as the journal does inside its transactions, with a sweep an op and half
the sweeps going on to ``ids``: ids move between the three tiers, a failed
commit undoes its sweeps, a reopen after a crash rebuilds the fresh tier from
the sweep marks, and one after a clean close loads the tier's snapshot.  The
swept tiers key by 8-byte prefixes; real op ids are hashes, so sharing 8
bytes takes ~2**32 tries, and here many drawn ids share them.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from aura_sync.protocols import journal_ids
from aura_sync.protocols.journal_ids import INDEX_SCHEMA, PREFIX, IdIndex

_TIERS = ("ids", "recent")

_PREFIXES = [b"\x00" * PREFIX, b"\x41" * PREFIX, b"\x41" * (PREFIX - 1) + b"\x42", b"\xff" * PREFIX]
_id = st.one_of(
    st.binary(min_size=32, max_size=32),
    st.tuples(
        st.sampled_from(_PREFIXES), st.binary(min_size=32 - PREFIX, max_size=32 - PREFIX)
    ).map(lambda t: t[0] + t[1]),  # shared prefixes
)


def _database(path: Path) -> sqlite3.Connection:
    """The tables the index reads: a minimal ``ops`` (arrival, id), ``meta``, its own."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE ops (arrival INTEGER PRIMARY KEY, id BLOB NOT NULL)")
    conn.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID")
    for statement in INDEX_SCHEMA:
        conn.execute(statement)
    return conn


def _commit(index: IdIndex, ids: list[bytes], first: int) -> None:
    """Store ``ids`` as ops ``first`` on and index them, in one transaction."""
    conn = index._conn
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO ops VALUES (?, ?)", zip(range(first, first + len(ids)), ids, strict=True)
    )
    index.insert(ids, first, first + len(ids) - 1)
    conn.execute("COMMIT")
    index.committed()


@pytest.fixture(autouse=True)
def _small_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(journal_ids, "STEP_OPS", 1)  # a sweep an op: cycles of 256 sweeps
    monkeypatch.setattr(journal_ids, "LEVEL_SWEEPS", 2)  # half the sweeps go on to ids


class Index(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="aura-ids-")
        self.path = Path(self.dir) / "ids.sqlite3"
        self.conn = _database(self.path)
        self.index = IdIndex(self.conn)
        self.index.load(str(self.path), clean=False, last=0)
        self.model: dict[bytes, int] = {}
        self.absent: set[bytes] = set()

    def _insert(self, batch: list[bytes], commit: bool) -> None:
        ids = [key for key in dict.fromkeys(batch) if key not in self.model]
        if not ids:
            return
        first = len(self.model) + 1
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.executemany(
            "INSERT INTO ops VALUES (?, ?)", zip(range(first, first + len(ids)), ids, strict=True)
        )
        self.index.insert(ids, first, first + len(ids) - 1)
        if commit:
            self.conn.execute("COMMIT")
            self.index.committed()
            self.model.update(zip(ids, range(first, first + len(ids)), strict=True))
            self.absent -= set(ids)
        else:
            self.conn.execute("ROLLBACK")
            self.index.rolled_back()
            self.absent |= set(ids)

    @rule(batch=st.lists(_id, min_size=1, max_size=12))
    def insert(self, batch: list[bytes]) -> None:
        self._insert(batch, commit=True)

    @rule(batch=st.lists(st.binary(min_size=32, max_size=32), min_size=200, max_size=300))
    def insert_many(self, batch: list[bytes]) -> None:
        self._insert(batch, commit=True)  # (a cycle of sweeps or more: levels of every slice)

    @rule(batch=st.lists(_id, min_size=1, max_size=12))
    def insert_then_fail(self, batch: list[bytes]) -> None:
        self._insert(batch, commit=False)

    @rule(clean=st.booleans())
    def reopen(self, clean: bool) -> None:
        """Reopen after a clean close (the fresh tier saved) or a crash (rebuilt from ops)."""
        last = len(self.model)
        if clean:
            self.conn.execute("BEGIN")
            self.index.save(last)
            self.conn.execute("COMMIT")
        self.conn.close()
        self.conn = sqlite3.connect(self.path, isolation_level=None)
        self.index = IdIndex(self.conn)
        self.index.load(str(self.path), clean=clean, last=last)

    @rule(data=st.data())
    def lookups_match(self, data: st.DataObject) -> None:
        pool = sorted(self.model) + sorted(self.absent)
        asked = data.draw(st.lists(st.one_of(_id, st.sampled_from(pool)) if pool else _id))
        assert self.index.held(asked) == {key for key in asked if key in self.model}
        wanted = list(dict.fromkeys(asked))
        assert sorted(self.index.arrivals(wanted)) == sorted(
            self.model[key] for key in wanted if key in self.model
        )

    @rule(data=st.data())
    def ranges_match(self, data: st.DataObject) -> None:
        bound = st.one_of(_id, st.sampled_from(sorted(self.model))) if self.model else _id
        lo = data.draw(bound)
        hi = data.draw(st.one_of(st.none(), bound))
        if hi is not None and hi <= lo:
            lo, hi = hi, lo
        limit = data.draw(st.sampled_from([-1, 1, 2, 3, 7]))
        inside = [key for key in sorted(self.model) if key >= lo and (hi is None or key < hi)]
        expected = inside if limit < 0 else inside[:limit]
        assert list(self.index.iter_ids(lo, hi, limit)) == expected

    @invariant()
    def every_id_indexed_once(self) -> None:
        name, ok, detail = self.index.check()
        assert name == "id_index" and ok, detail
        swept = sum(self.conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in _TIERS)
        assert swept + self.index.fresh == len(self.model)

    def teardown(self) -> None:
        self.conn.close()
        shutil.rmtree(self.dir, ignore_errors=True)


TestIndex = Index.TestCase
TestIndex.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)


@pytest.fixture
def index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[IdIndex]:
    """An empty index sweeping a slice an op."""
    monkeypatch.setattr(journal_ids, "STEP_OPS", 1)
    conn = _database(tmp_path / "ids.sqlite3")
    index = IdIndex(conn)
    index.load(str(tmp_path), clean=False, last=0)
    yield index
    conn.close()


def test_ids_keep_prefixes_and_tell_ids_with_one_prefix_apart(index: IdIndex) -> None:
    """One insert owing a sweep of every slice leaves the fresh tier empty, ``ids`` exact."""
    conn = index._conn
    twins = [b"\x07" * PREFIX + bytes([i]) * (32 - PREFIX) for i in range(1, 4)]
    ids = [*twins[:2], *(bytes([i]) * 32 for i in range(journal_ids.SLICES))]
    _commit(index, ids, 1)
    assert index.fresh == 0
    rows = conn.execute(
        "SELECT prefix, arrival FROM ids UNION ALL SELECT prefix, arrival FROM recent"
    ).fetchall()
    assert sorted(rows) == sorted((key[:PREFIX], n) for n, key in enumerate(ids, 1))
    levelled = {row[0][0] for row in conn.execute("SELECT prefix FROM ids")}
    assert levelled == set(range(0, journal_ids.SLICES, 2))  # staggered: even slices first
    assert index.held(twins) == set(twins[:2])
    assert sorted(index.arrivals(twins)) == [1, 2]
    assert list(index.iter_ids(twins[0], None, 2)) == twins[:2]
    assert list(index.iter_ids(twins[1], twins[2], -1)) == [twins[1]]
    assert index.check()[1]


def test_every_other_cycle_a_slice_moves_its_recent_ids_on(index: IdIndex) -> None:
    conn = index._conn
    counts = []
    for cycle in range(3):
        ids = [bytes([i]) * 31 + bytes([cycle]) for i in range(journal_ids.SLICES)]
        first = cycle * len(ids) + 1
        _commit(index, ids, first)  # one sweep of every slice
        counts.append([conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in _TIERS])
        assert index.check()[1]
    # cycle 0: even slices (c + j) % 2 == 0 go to ids, odd ones to recent; cycle 1: the odd
    # ones take their recent ids along, the even ones wait in recent; cycle 2: even again
    assert counts == [[128, 128], [384, 128], [640, 128]]
    assert list(index.iter_ids(b"\x00" * 32, None, -1)) == sorted(
        bytes([i]) * 31 + bytes([c]) for i in range(journal_ids.SLICES) for c in range(3)
    )
