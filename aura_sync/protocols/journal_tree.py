"""The journal's views of the reconciliation tree (a mixin of the Journal).

Answers :class:`~aura_sync.messages.sync.ChildDigestsRequest` and
:class:`~aura_sync.messages.sync.NodeIdsRequest` from the journal's range
digests and id index; values from a peer are checked here.

Layer: runtime (protocols).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from aura_sync._checks import check_int
from aura_sync.messages.sync import (
    CHILD_PRINT_SIZE,
    MAX_NODE_IDS,
    TREE_DEPTH,
    TREE_PARTS,
    IdRange,
    RangeDigest,
    tree_range,
)

__all__ = ["TreeViews"]


class TreeViews:
    """Tree digests and listings, from the journal's :meth:`digest` and id index."""

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
