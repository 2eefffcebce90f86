"""The journal's id index: two swept tables on disk and a fresh tier in memory.

Op ids are random, so one B-tree of them takes each insert at a random
leaf: a 1000-op commit dirties ~1000 index pages once the index has more
leaves than that.  Here every held op's id (with its arrival number) is in
exactly one of three tiers:

* the fresh tier, in memory: one list per slice (new ids are appended; a
  slice is sorted when it is next read or swept) and a dict from id to
  arrival (about 170 bytes an id, ~22 MB on average);
* ``recent`` and ``ids`` (on disk, ``WITHOUT ROWID``): swept ops, as (the
  id's first :data:`PREFIX` bytes, arrival) ordered by prefix, ~20 bytes a
  row (~40 with the whole id).  Prefixes may repeat (anyone can make two
  ops share 8 bytes with ~2**32 hashes), so every read joins ``ops`` by
  arrival and keeps the rows whose full id matches: a shared prefix costs a
  row read, never a wrong answer.

The id space is cut into 256 slices by the ids' first byte.  Every
:data:`STEP_OPS` ops inserted, the next slice (round robin; 256 sweeps make
a cycle) is *swept* in the transaction of the commit: its fresh ids go to
``recent``; in one cycle of every :data:`LEVEL_SWEEPS` (staggered over the
slices, so a quarter of all sweeps) they go to ``ids`` instead, with the
slice's rows of ``recent``, which are deleted.  Each sweep is one ordered
insert into one contiguous 1/256 of a table, as one statement whose rows
SQLite cuts from two parameters (the prefixes joined, the arrivals as a
JSON array; binding 1000 rows one by one cost ~2.5x the insert itself).

Cost per op, and why it does not grow with n: an insert into a slice of a
B-tree rewrites most of that slice's pages, ~n/256 ids' worth.  ``recent``
holds at most ``LEVEL_SWEEPS - 1`` sweeps of each slice (~3000 ids, a few
pages) whatever n; the big ``ids`` is rewritten a slice at a time once per
4 sweeps of it, with ~4000 ids, so its pages rewritten per op are a
quarter of a single-table sweep's, for ~1.75 row writes and ~0.75 row
deletes per id instead of 1 write.  Measured (1000-op batches alternating
with a 10k-op journal, one locked run): at 10M held 0.68-0.69x the 10k
rate with one table, 0.73-0.78x with two; at 1M ~0.8x either way.

Open: a clean close stores the fresh tier in ``fresh`` (one row: the
journal's last arrival number and the ids with their arrivals, 40 bytes
each, a few MB), so a clean open reads that blob and no op row.  After an
unclean shutdown the tier is rebuilt from ``ops``: the ``sweeps`` table
records, per slice, the arrival number of its last sweep (``meta`` 'sweep'
the number of sweeps done); an op is swept iff its arrival is at most its
slice's mark, so open reads only the ops that arrived after the oldest
mark (about ``256 * STEP_OPS`` plus the last batch), whatever n, but whole
rows with their payloads (cold, 1 KiB payloads: ~1 s).  Reads ask all tiers:
lookups one statement over both tables, ordered ranges a lazy merge of both
(about ``limit`` ops rows read) and the fresh tier.  A sweep's rows and
arrivals are kept until its transaction ends, so a failed commit puts them
back in the fresh tier (the tables roll back with it).

Layer: runtime (protocols).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import json
import sqlite3
import struct
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from operator import itemgetter
from typing import Final

from aura_sync.errors import JournalCorrupt

__all__ = ["INDEX_SCHEMA", "LEVEL_SWEEPS", "PREFIX", "SLICES", "STEP_OPS", "IdIndex", "rollback"]

SLICES: Final = 256
"""Slices of the id space (by the first byte), swept round robin."""

STEP_OPS: Final = 1000
"""Ops inserted between two sweeps (the fresh tier holds about ``SLICES * STEP_OPS / 2``)."""

LEVEL_SWEEPS: Final = 4
"""A slice's swept ids go to ``recent``; every this many sweeps of it, they all go on to ``ids``."""

PREFIX: Final = 8
"""Bytes of an id kept in ``ids``: its prefix, verified against the full id in ``ops``."""

INDEX_SCHEMA: Final = (
    "CREATE TABLE ids (prefix BLOB NOT NULL, arrival INTEGER NOT NULL,"
    " PRIMARY KEY (prefix, arrival)) WITHOUT ROWID",
    "CREATE TABLE recent (prefix BLOB NOT NULL, arrival INTEGER NOT NULL,"
    " PRIMARY KEY (prefix, arrival)) WITHOUT ROWID",
    "CREATE TABLE sweeps (slice INTEGER PRIMARY KEY, arrival INTEGER NOT NULL)",
    "CREATE TABLE fresh (arrival INTEGER PRIMARY KEY, ids BLOB NOT NULL)",
)
_ENTRY: Final = struct.Struct(">32sQ")  # a fresh id and its arrival number, in ``fresh``
_TIERS: Final = ("ids", "recent")
_FRESH_ROWS: Final = f"SELECT substr(?1, key * {PREFIX} + 1, {PREFIX}), value FROM json_each(?2)"
_IN_SLICE: Final = "prefix >= ?3 AND prefix < ?4"
_ABOVE_ALL: Final = b"\xff" * (PREFIX + 1)  # the last slice's upper bound: above every prefix

_CHUNK: Final = 400

_SWEEP: Final = f"INSERT INTO recent {_FRESH_ROWS}"  # rows cut from 2 parameters in C
_LEVEL: Final = (  # a slice's recent rows and fresh ids, in order, into ids
    f"INSERT INTO ids SELECT * FROM (SELECT prefix, arrival FROM recent WHERE {_IN_SLICE}"
    f" UNION ALL {_FRESH_ROWS}) ORDER BY 1, 2"
)


def _prefix(key: bytes) -> bytes:
    return key[:PREFIX]


_Undo = tuple[int, int, list[tuple[int, list[bytes], list[int]]], Sequence[bytes]]
"""What :meth:`IdIndex.rolled_back` restores: cursor, owed ops, sweeps (slice, ids,
arrivals) and the ids added."""


def rollback(conn: sqlite3.Connection) -> None:
    """Roll back the open transaction, if SQLite has not already done so."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


class IdIndex:
    """Both tiers of one journal's id index (the journal holds its lock around each call)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        """Internal: the journal builds it on its connection, then calls :meth:`load`."""
        self._conn = conn
        self._count = 0  # sweeps done (the next slice: count % SLICES)
        self._owed = 0
        self._arrival: dict[bytes, int] = {}
        self._slices: list[list[bytes]] = [[] for _ in range(SLICES)]
        self._sorted = [0] * SLICES  # per slice: the length of its sorted prefix
        self._undo: _Undo | None = None

    @property
    def fresh(self) -> int:
        """How many ids the fresh tier holds."""
        return len(self._arrival)

    def load(self, name: str, clean: bool, last: int) -> None:
        """Fill the fresh tier: from the snapshot of a ``clean`` close of the journal
        ``name`` whose last arrival number is ``last``, else from the ops no sweep has
        covered yet.  Raises :class:`~aura_sync.errors.JournalCorrupt` for a snapshot of
        another state or size."""
        conn = self._conn
        row = conn.execute("SELECT value FROM meta WHERE name = 'sweep'").fetchone()
        self._count = 0 if row is None else row[0]
        snapshot = conn.execute("SELECT arrival, ids FROM fresh").fetchone() if clean else None
        if snapshot is not None:
            arrival, blob = snapshot
            if arrival != last or not isinstance(blob, bytes) or len(blob) % _ENTRY.size:
                size = len(blob) if isinstance(blob, bytes) else type(blob).__name__
                raise JournalCorrupt(
                    f"journal {name!r}: its fresh-id snapshot is of op #{arrival} ({size} "
                    f"bytes), not of its last op #{last} in {_ENTRY.size}-byte entries"
                )
            self._arrival = dict(_ENTRY.iter_unpack(blob))
            for key in self._arrival:
                self._slices[key[0]].append(key)
            return
        marks = [0] * SLICES  # arrival number of each slice's last sweep
        for piece, arrival in conn.execute("SELECT slice, arrival FROM sweeps"):
            marks[piece] = arrival
        for key, arrival in conn.execute(
            "SELECT id, arrival FROM ops WHERE arrival > ?", (min(marks),)
        ):
            if arrival > marks[key[0]]:
                self._arrival[key] = arrival
                self._slices[key[0]].append(key)

    def save(self, last: int) -> None:
        """Store the fresh tier for the next clean open (in the caller's transaction);
        ``last``: the journal's last arrival number."""
        blob = b"".join(itertools.starmap(_ENTRY.pack, self._arrival.items()))
        self._conn.execute("DELETE FROM fresh")
        self._conn.execute("INSERT INTO fresh VALUES (?, ?)", (last, blob))

    def _slice(self, piece: int) -> list[bytes]:
        """The fresh ids of one slice, sorted (appended ids are sorted when first read)."""
        ids = self._slices[piece]
        if self._sorted[piece] != len(ids):
            ids.sort()
            self._sorted[piece] = len(ids)
        return ids

    def insert(self, ids: Sequence[bytes], first: int, arrival: int) -> None:
        """Index new ids (arrival numbers ``first`` on) and sweep what they owe.

        Runs in the caller's transaction; ``arrival`` is the highest arrival
        number after the commit.  Call :meth:`committed` or
        :meth:`rolled_back` once the transaction ended.
        """
        slices, known = self._slices, self._arrival
        known.update(zip(ids, range(first, first + len(ids)), strict=True))
        for key in ids:
            slices[key[0]].append(key)
        undo: list[tuple[int, list[bytes], list[int]]] = []
        self._undo = (self._count, self._owed, undo, ids)
        self._owed += len(ids)
        steps = min(SLICES, self._owed // STEP_OPS)
        self._owed = 0 if steps == SLICES else self._owed - steps * STEP_OPS
        for _ in range(steps):
            piece = self._count % SLICES
            moved = self._slice(piece)
            arrivals = list(map(known.pop, moved))  # given back if the commit fails
            undo.append((piece, moved, arrivals))
            self._sweep(piece, moved, arrivals)
            self._conn.execute("INSERT OR REPLACE INTO sweeps VALUES (?, ?)", (piece, arrival))
            slices[piece] = []
            self._sorted[piece] = 0
            self._count += 1
        if steps:
            self._conn.execute("INSERT OR REPLACE INTO meta VALUES ('sweep', ?)", (self._count,))

    def _sweep(self, piece: int, moved: list[bytes], arrivals: list[int]) -> None:
        """Write one slice's fresh ids to ``recent``, or with its recent rows to ``ids``."""
        prefixes = b"".join([key[:PREFIX] for key in moved])  # op ids: 32-byte hashes
        if (self._count // SLICES + piece) % LEVEL_SWEEPS:  # staggered over the slices
            self._conn.execute(_SWEEP, (prefixes, json.dumps(arrivals)))
            return
        bounds = (bytes([piece]), bytes([piece + 1]) if piece + 1 < SLICES else _ABOVE_ALL)
        self._conn.execute(_LEVEL, (prefixes, json.dumps(arrivals), *bounds))
        self._conn.execute(f"DELETE FROM recent WHERE {_IN_SLICE}", (None, None, *bounds))

    def committed(self) -> None:
        """The transaction of the last :meth:`insert` committed (its sweeps stand)."""
        self._undo = None

    def rolled_back(self) -> None:
        """The transaction of the last :meth:`insert` rolled back: undo it in memory."""
        if self._undo is None:
            return
        self._count, self._owed, undo, added = self._undo
        for piece, moved, arrivals in reversed(undo):
            self._slices[piece] = moved
            self._sorted[piece] = len(moved)
            self._arrival.update(zip(moved, arrivals, strict=True))
        gone = set(added)
        for key in added:
            del self._arrival[key]
        for piece in {key[0] for key in added}:
            self._slices[piece] = [key for key in self._slices[piece] if key not in gone]
            self._sorted[piece] = 0
        self._undo = None

    # --- reading (both tiers) -----------------------------------------------------------

    def held(self, ids: Sequence[bytes]) -> set[bytes]:
        """The ids among ``ids`` held in either tier."""
        known = self._arrival
        out = {key for key in ids if key in known}
        rest = [key for key in ids if key not in known]
        for start in range(0, len(rest), _CHUNK):
            out.update(key for key, _ in self._swept(rest[start : start + _CHUNK]))
        return out

    def arrivals(self, ids: Sequence[bytes]) -> list[int]:
        """The arrival numbers of the held ids among ``ids`` (at most ``_CHUNK``), unordered."""
        known = self._arrival
        out = [known[key] for key in ids if key in known]
        rest = [key for key in ids if key not in known]
        if rest:
            out += [arrival for _, arrival in self._swept(rest)]
        return out

    def _swept(self, ids: Sequence[bytes]) -> list[tuple[bytes, int]]:
        """``(id, arrival)`` of the swept ids among ``ids``: by prefix, checked against ``ops``."""
        wanted = set(ids)
        marks = ",".join(f"?{i}" for i in range(1, len(wanted) + 1))
        rows = self._conn.execute(
            "SELECT o.id, o.arrival FROM (SELECT arrival FROM ids WHERE prefix IN "
            f"({marks}) UNION ALL SELECT arrival FROM recent WHERE prefix IN ({marks})) i "
            "JOIN ops o ON o.arrival = i.arrival",
            [key[:PREFIX] for key in wanted],
        )
        return [(key, arrival) for key, arrival in rows if key in wanted]

    def iter_ids(self, lo: bytes, hi: bytes | None, limit: int = -1) -> Iterator[bytes]:
        """Held ids in ``[lo, hi)`` (``hi`` None: to the end), ascending, at most ``limit``."""
        swept = self._swept_in(lo, hi, limit)
        fresh = self._fresh_in(lo, hi)
        more = list(fresh if limit < 0 else itertools.islice(fresh, limit))
        if not more:
            return iter(swept)
        merged = sorted(swept + more)  # two sorted runs: one linear merge
        return iter(merged if limit < 0 else merged[:limit])

    def _swept_in(self, lo: bytes, hi: bytes | None, limit: int) -> list[bytes]:
        """Swept ids in ``[lo, hi)``, ascending, at most ``limit``.

        Both tables are read lazily, merged by prefix, so about ``limit`` ops
        rows are read; ids sharing a prefix come in arrival order, so the
        prefix group the limit cuts is read whole, then sorted by full id.
        """
        where = "i.prefix >= ? AND o.id >= ?"
        bounds: tuple[bytes, ...] = (lo[:PREFIX], lo)
        if hi is not None:
            where += " AND i.prefix <= ? AND o.id < ?"
            bounds += (hi[:PREFIX], hi)
        cursors = [
            self._conn.execute(
                f"SELECT o.id FROM {table} i JOIN ops o ON o.arrival = i.arrival WHERE {where}"
                " ORDER BY i.prefix",
                bounds,
            )
            for table in _TIERS
        ]
        try:
            rows = heapq.merge(*(map(itemgetter(0), c) for c in cursors), key=_prefix)
            if limit < 0:
                return sorted(rows)  # sorted but for ids sharing a prefix
            out = list(itertools.islice(rows, limit))
            if len(out) == limit:
                last = out[-1][:PREFIX]
                out += itertools.takewhile(lambda key: key[:PREFIX] == last, rows)
            out.sort()
            return out[:limit]
        finally:
            for cursor in cursors:
                cursor.close()

    def _fresh_in(self, lo: bytes, hi: bytes | None) -> Iterable[bytes]:
        last = SLICES - 1 if hi is None else min(SLICES - 1, hi[0])
        for piece in range(lo[0], last + 1):
            ids = self._slice(piece)
            start = bisect_left(ids, lo) if piece == lo[0] else 0
            end = len(ids) if hi is None or piece < hi[0] else bisect_left(ids, hi)
            yield from ids[start:end]

    def check(self) -> tuple[str, bool, str]:
        """Whether the tiers hold every op's id exactly once (O(n); for ``verify``)."""
        conn = self._conn
        ops = conn.execute("SELECT count(*) FROM ops").fetchone()[0]
        swept = sum(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in _TIERS)
        unswept = conn.execute(
            "SELECT count(*) FROM ops o WHERE "
            + " AND ".join(
                f"NOT EXISTS (SELECT 1 FROM {t} i WHERE i.prefix = substr(o.id, 1, {PREFIX})"
                " AND i.arrival = o.arrival)"
                for t in _TIERS
            )
        ).fetchone()[0]
        items = list(self._arrival.items())
        matched = 0
        for start in range(0, len(items), _CHUNK):
            chunk = dict(items[start : start + _CHUNK])
            marks = ",".join("?" * len(chunk))
            rows = conn.execute(
                f"SELECT id, arrival FROM ops WHERE arrival IN ({marks})", list(chunk.values())
            )
            matched += sum(1 for key, arrival in rows if chunk.get(key) == arrival)
        ok = swept + len(items) == ops and unswept == len(items) == matched
        detail = (
            f"{ops} ops: {swept} swept ids, {len(items)} fresh ({matched} found), {unswept} unswept"
        )
        return ("id_index", ok, detail)
