"""Stateful property: the id index agrees with a plain dict across inserts, sweeps,
failed commits and reopens.

The machine drives :class:`IdIndex` alone on a minimal ``ops`` table (arrival,
id), as the journal does inside its transactions, with a sweep every 3 ops:
ids move between the tiers, a failed commit undoes its sweeps, a reopen
rebuilds the fresh tier from the sweep marks.  The swept tier keys by
8-byte prefixes; real op ids are hashes, so sharing 8 bytes takes ~2**32
tries, and here many drawn ids share them.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from aura_sync.protocols import journal_ids
from aura_sync.protocols.journal_ids import INDEX_SCHEMA, PREFIX, IdIndex

_PREFIXES = [b"\x00" * PREFIX, b"\x41" * PREFIX, b"\x41" * (PREFIX - 1) + b"\x42", b"\xff" * PREFIX]
_id = st.one_of(
    st.binary(min_size=32, max_size=32),
    st.tuples(
        st.sampled_from(_PREFIXES), st.binary(min_size=32 - PREFIX, max_size=32 - PREFIX)
    ).map(lambda t: t[0] + t[1]),  # shared prefixes
)


@pytest.fixture(autouse=True)
def _small_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(journal_ids, "STEP_OPS", 3)  # a sweep every few ops


class Index(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="aura-ids-")
        self.path = Path(self.dir) / "ids.sqlite3"
        self.conn = sqlite3.connect(self.path, isolation_level=None)
        for statement in (
            "CREATE TABLE ops (arrival INTEGER PRIMARY KEY, id BLOB NOT NULL)",
            "CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID",
            *INDEX_SCHEMA,
        ):
            self.conn.execute(statement)
        self.index = IdIndex(self.conn)
        self.index.load()
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

    @rule(batch=st.lists(_id, min_size=1, max_size=12))
    def insert_then_fail(self, batch: list[bytes]) -> None:
        self._insert(batch, commit=False)

    @rule()
    def reopen(self) -> None:
        self.conn.close()
        self.conn = sqlite3.connect(self.path, isolation_level=None)
        self.index = IdIndex(self.conn)
        self.index.load()

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
        swept = self.conn.execute("SELECT count(*) FROM ids").fetchone()[0]
        assert swept + self.index.fresh == len(self.model)

    def teardown(self) -> None:
        self.conn.close()
        shutil.rmtree(self.dir, ignore_errors=True)


TestIndex = Index.TestCase
TestIndex.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)


def test_ids_keep_prefixes_and_tell_ids_with_one_prefix_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One insert owing a sweep of every slice leaves the fresh tier empty, ``ids`` exact."""
    monkeypatch.setattr(journal_ids, "STEP_OPS", 1)
    conn = sqlite3.connect(tmp_path / "ids.sqlite3", isolation_level=None)
    conn.execute("CREATE TABLE ops (arrival INTEGER PRIMARY KEY, id BLOB NOT NULL)")
    conn.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID")
    for statement in INDEX_SCHEMA:
        conn.execute(statement)
    index = IdIndex(conn)
    index.load()
    twins = [b"\x07" * PREFIX + bytes([i]) * (32 - PREFIX) for i in range(1, 4)]
    ids = [*twins[:2], *(bytes([i]) * 32 for i in range(journal_ids.SLICES))]
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO ops VALUES (?, ?)", zip(range(1, len(ids) + 1), ids, strict=True))
    index.insert(ids, 1, len(ids))
    conn.execute("COMMIT")
    index.committed()
    assert index.fresh == 0
    rows = conn.execute("SELECT prefix, arrival FROM ids ORDER BY prefix, arrival").fetchall()
    assert rows == sorted((key[:PREFIX], n) for n, key in enumerate(ids, 1))
    assert index.held(twins) == set(twins[:2])
    assert sorted(index.arrivals(twins)) == [1, 2]
    assert list(index.iter_ids(twins[0], None, 2)) == twins[:2]
    assert list(index.iter_ids(twins[1], twins[2], -1)) == [twins[1]]
    assert index.check()[1]
    with pytest.raises(ValueError, match="32-byte"):
        index.insert([b"\x00short"], len(ids) + 1, len(ids) + 1)  # slice 0: swept next
    conn.close()
