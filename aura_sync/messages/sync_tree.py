"""Range fingerprints and the reconciliation tree's wire messages (tags 0x00DA-0x00DD,
re-exported by :mod:`aura_sync.messages.sync`).  A tree node is named by (depth,
index), a few bytes instead of two 32-byte bounds (see :func:`tree_range`).

Layer: messages.
"""

from __future__ import annotations

from collections.abc import Iterable
from hashlib import sha256 as _sha256
from typing import Final

from aura_sync._checks import check_int
from aura_sync.errors import InvalidArgument, WrongType
from aura_sync.messages._base import Message, message
from aura_sync.messages.sync import (
    _ID_SPACE,
    _RANGE_DOMAIN,
    _U64_MAX,
    MAX_RANGES,
    OP_ID_SIZE,
    IdRange,
    _check_id,
    _check_ids,
    _check_tuple,
)

__all__ = [
    "CHILD_PRINT_SIZE",
    "MAX_NODE_IDS",
    "TREE_DEPTH",
    "TREE_PARTS",
    "ChildDigestsReply",
    "ChildDigestsRequest",
    "NodeIdsReply",
    "NodeIdsRequest",
    "fingerprint",
    "fingerprint_of",
    "tree_range",
]


def fingerprint_of(count: int, total: int) -> bytes:
    """The fingerprint of ``count`` ids summing (as 256-bit integers) to ``total``: SHA-256
    of a domain tag, ``total mod 2**256`` and the count (Negentropy's).  Unlike an XOR,
    another set with the same sum and count takes a generalised-birthday attack."""
    return _sha256(
        _RANGE_DOMAIN + (total % _ID_SPACE).to_bytes(OP_ID_SIZE, "big") + count.to_bytes(8, "big")
    ).digest()


def fingerprint(ids: Iterable[bytes]) -> tuple[int, bytes]:
    """``(count, fingerprint)`` of distinct 32-byte ids in any order, from scratch (the journal
    keeps the same from aggregates); WrongType/InvalidArgument names the first bad item."""
    given: object = ids
    if isinstance(given, str | bytes | bytearray) or not isinstance(given, Iterable):
        raise WrongType(
            f"sorted_ids must be an iterable of 32-byte ids, got {type(given).__name__} {given!r}"
        )
    count = total = 0
    for item in ids:
        if type(item) is not bytes or len(item) != OP_ID_SIZE:
            _check_id(item, f"sorted_ids[{count}]")
        total += int.from_bytes(item, "big")
        count += 1
    return count, fingerprint_of(count, total)


TREE_PARTS: Final = 4
"""Children per node of the reconciliation tree (the id space split 4 ways, recursively)."""

TREE_DEPTH: Final = 128
"""Depth of the tree's leaves (4**128 = 2**256: a leaf is a single id)."""

CHILD_PRINT_SIZE: Final = 12
"""Bytes of a child's fingerprint sent in a :class:`ChildDigestsReply` (96 bits)."""


def tree_range(depth: int, index: int) -> IdRange:
    """Node ``index`` (0..4**depth - 1) at ``depth`` (0..128): the root is the whole id space,
    a node's children its range cut in :data:`TREE_PARTS` exact parts, ``4 * index + j``."""
    check_int(depth, "depth", minimum=0, maximum=TREE_DEPTH)
    check_int(index, "index", minimum=0, maximum=TREE_PARTS**depth - 1)
    width = _ID_SPACE // TREE_PARTS**depth
    lo, hi = index * width, (index + 1) * width
    return IdRange(
        lo.to_bytes(OP_ID_SIZE, "big"), None if hi == _ID_SPACE else hi.to_bytes(OP_ID_SIZE, "big")
    )


@message(0x00DA)
class ChildDigestsRequest(Message):
    """Ask for the digests of the children of tree nodes (1..64 nodes, all at ``depth``)."""

    depth: int
    indexes: tuple[int, ...]

    def check(self) -> None:
        _check_nodes(self.depth, self.indexes, TREE_DEPTH - 1)


@message(0x00DB)
class ChildDigestsReply(Message):
    """Per child (4 per requested node, in order): its count, and in ``prints`` its
    fingerprint's first 12 bytes (~14 bytes a child, against ~180 for a RangeDigest)."""

    counts: tuple[int, ...]
    prints: bytes

    def check(self) -> None:
        _check_tuple(self.counts, "counts", 0, TREE_PARTS * MAX_RANGES, int)
        for i, count in enumerate(self.counts):
            check_int(count, f"counts[{i}]", minimum=0, maximum=_U64_MAX)
        if type(self.prints) is not bytes or len(self.prints) != CHILD_PRINT_SIZE * len(
            self.counts
        ):
            raise InvalidArgument(
                f"prints must be {CHILD_PRINT_SIZE} bytes per count ({len(self.counts)})"
            )


MAX_NODE_IDS: Final = 16
"""Most ids listed per tree node in a :class:`NodeIdsReply`."""


@message(0x00DC)
class NodeIdsRequest(Message):
    """List the ids in small tree nodes (1..64 nodes, all at ``depth``)."""

    depth: int
    indexes: tuple[int, ...]

    def check(self) -> None:
        _check_nodes(self.depth, self.indexes, TREE_DEPTH)


def _check_nodes(depth: int, indexes: tuple[int, ...], max_depth: int) -> None:
    check_int(depth, "depth", minimum=0, maximum=max_depth)
    _check_tuple(indexes, "indexes", 1, MAX_RANGES, int)
    for i, index in enumerate(indexes):
        check_int(index, f"indexes[{i}]", minimum=0, maximum=TREE_PARTS**depth - 1)


@message(0x00DD)
class NodeIdsReply(Message):
    """Per requested node, in order, how many ids are listed (its first 16 at most), then
    all of them."""

    counts: tuple[int, ...]
    ids: tuple[bytes, ...]

    def check(self) -> None:
        _check_tuple(self.counts, "counts", 0, MAX_RANGES, int)
        for i, count in enumerate(self.counts):
            check_int(count, f"counts[{i}]", minimum=0, maximum=MAX_NODE_IDS)
        _check_ids(self.ids, "ids", 0, MAX_RANGES * MAX_NODE_IDS, ordered=False)
        if sum(self.counts) != len(self.ids):
            raise InvalidArgument(f"ids must hold sum(counts) = {sum(self.counts)} ids")
