"""The journal's views for peers: the reconciliation tree and the authors' chains (a mixin
of the Journal).

Answers :class:`~aura_sync.messages.sync.ChildDigestsRequest` and
:class:`~aura_sync.messages.sync.NodeIdsRequest` from the journal's range
digests and id index, :class:`~aura_sync.messages.sync.HeadsRequest` and
:class:`~aura_sync.messages.sync.ChainRequest` from its (author, seq) index (one
index seek per author, one range scan per chain piece); values from a peer are
checked here.

Layer: runtime (protocols).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence

from aura_sync._checks import check_int
from aura_sync.ids import DeviceId
from aura_sync.messages.sync import (
    CHILD_PRINT_SIZE,
    MAX_HEADS,
    MAX_NODE_IDS,
    MAX_OPS_BATCH,
    SEQ_LIMIT,
    TREE_DEPTH,
    TREE_PARTS,
    IdRange,
    Op,
    RangeDigest,
    tree_range,
)

__all__ = ["SELECT_OP", "TreeViews", "op_of_row"]

_HEADS = (
    "SELECT a.author, (SELECT max(o.seq) FROM ops o WHERE o.author = a.author) FROM authors a "
    "WHERE a.author > ? ORDER BY a.author LIMIT ?"
)
SELECT_OP = (
    "SELECT o.id, o.author, o.seq, o.payload, o.prev, o.sig, a.key "
    "FROM ops o JOIN authors a ON a.author = o.author "
)
"""The columns :func:`op_of_row` reads, for a query on ``ops o``."""


def op_of_row(row: tuple[bytes, bytes, int, bytes, bytes, bytes | None, bytes]) -> Op:
    """The op of a :data:`SELECT_OP` row."""
    return Op(DeviceId(row[1]), row[2], row[3], row[4], row[6], row[5] or b"")


class TreeViews:
    """Tree digests and listings, from the journal's :meth:`digest` and id index; heads and
    chain pieces from its tables."""

    _conn: sqlite3.Connection
    _lock: threading.RLock

    def _ensure_open(self) -> None:
        raise NotImplementedError

    def digest(self, id_range: IdRange) -> RangeDigest:
        """Count and fingerprint of the ids in ``id_range`` (the journal implements it)."""
        raise NotImplementedError

    def _iter_ids(self, id_range: IdRange, limit: int = -1) -> Iterator[bytes]:
        raise NotImplementedError

    def children(self, depth: int, indexes: Sequence[int]) -> tuple[tuple[int, ...], bytes]:
        """Counts and 12-byte fingerprint prefixes of the children of tree nodes.

        For each node ``index`` at ``depth`` (see :func:`~aura_sync.messages.sync.tree_range`),
        its 4 children in order; the prefixes are concatenated.  Raises
        :class:`~aura_sync.errors.InvalidArgument` for a node outside the tree.
        """
        check_int(depth, "depth", minimum=0, maximum=TREE_DEPTH - 1)
        counts: list[int] = []
        prints: list[bytes] = []
        for i, index in enumerate(indexes):
            check_int(index, f"indexes[{i}]", minimum=0, maximum=TREE_PARTS**depth - 1)
            for j in range(TREE_PARTS):
                digest = self.digest(tree_range(depth + 1, index * TREE_PARTS + j))
                counts.append(digest.count)
                prints.append(digest.fingerprint[:CHILD_PRINT_SIZE])
        return tuple(counts), b"".join(prints)

    def node_ids(
        self, depth: int, indexes: Sequence[int]
    ) -> tuple[tuple[int, ...], tuple[bytes, ...]]:
        """The ids (at most 16 each, ascending) of tree nodes: per-node counts, then all ids."""
        check_int(depth, "depth", minimum=0, maximum=TREE_DEPTH)
        counts: list[int] = []
        ids: list[bytes] = []
        for i, index in enumerate(indexes):
            check_int(index, f"indexes[{i}]", minimum=0, maximum=TREE_PARTS**depth - 1)
            page = list(self._iter_ids(tree_range(depth, index), MAX_NODE_IDS))
            counts.append(len(page))
            ids += page
        return tuple(counts), tuple(ids)

    def heads(self, after: bytes = b"", limit: int = MAX_HEADS) -> list[tuple[DeviceId, int]]:
        """``(author, top seq held)`` of up to ``limit`` authors above the raw id ``after``,
        ascending."""
        check_int(limit, "limit", minimum=1, maximum=MAX_HEADS)
        with self._lock:
            self._ensure_open()
            rows = self._conn.execute(_HEADS, (after, limit)).fetchall()
        return [(DeviceId(author), top) for author, top in rows if top is not None]

    def tops(self, authors: Iterable[bytes]) -> dict[bytes, int]:
        """The top seq held of each of ``authors`` (raw ids) held at all."""
        out: dict[bytes, int] = {}
        with self._lock:
            self._ensure_open()
            for author in authors:
                row = self._conn.execute(
                    "SELECT max(seq) FROM ops WHERE author = ?", (author,)
                ).fetchone()
                if row[0] is not None:
                    out[author] = row[0]
        return out

    def chain(self, author: DeviceId, lo: int, hi: int) -> list[Op]:
        """``author``'s held ops with ``lo <= seq <= hi`` (at most 128 seqs), seq descending."""
        check_int(hi, "hi", minimum=0, maximum=SEQ_LIMIT - 1)
        check_int(lo, "lo", minimum=max(0, hi - MAX_OPS_BATCH + 1), maximum=hi)
        with self._lock:
            self._ensure_open()
            rows = self._conn.execute(
                f"{SELECT_OP}WHERE o.author = ? AND o.seq BETWEEN ? AND ? ORDER BY o.seq DESC",
                (author.raw, lo, hi),
            ).fetchall()
        return [op_of_row(row) for row in rows]
