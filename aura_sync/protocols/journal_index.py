"""Incremental range fingerprints of the journal: per-bucket sums of the op ids.

The 256-bit id space is cut into 65,536 buckets by the ids' first two
bytes.  For each bucket the journal keeps the count of its ids and their
sum as 256-bit integers (and the same for 256 groups of 256 buckets), in
memory, updated in O(1) per insert and persisted in the ``buckets`` table
now and then (:class:`RangeSums` marks the dirty buckets).  A range's
(count, sum) is the sum of at most ~760 bucket or group entries plus a scan
of the ids in the two partial buckets at its edges (about n/65,536 ids
each): it does not grow with the range.  The fingerprint is Negentropy's
``SHA-256(domain, sum mod 2**256, count)``
(:func:`~aura_sync.messages.sync.fingerprint_of`), equal to the one
recomputed from scratch by :func:`~aura_sync.messages.sync.fingerprint`.

Layer: runtime (protocols); pure, no I/O (the edge scan is a callback).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final

__all__ = ["BUCKETS", "RangeSums", "bucket_of"]

BUCKETS: Final = 1 << 16
"""Number of buckets (by the first two bytes of an id)."""

_GROUP: Final = 256
_ZERO_TAIL: Final = bytes(30)

Scan = Callable[[bytes, bytes | None], tuple[int, int]]
"""``scan(lo, hi)``: (count, sum) of the held ids in ``[lo, hi)`` (``hi`` None: to the end)."""


def bucket_of(op_id: bytes) -> int:
    """The bucket of a 32-byte id."""
    return op_id[0] << 8 | op_id[1]


def _bucket_start(bucket: int) -> bytes | None:
    return None if bucket >= BUCKETS else bucket.to_bytes(2, "big") + _ZERO_TAIL


class RangeSums:
    """Count and sum of the ids per bucket and per group of 256 buckets."""

    __slots__ = ("count", "counts", "dirty", "group_counts", "group_sums", "sums", "total")

    def __init__(self) -> None:
        self.counts = [0] * BUCKETS
        self.sums = [0] * BUCKETS
        self.group_counts = [0] * (BUCKETS // _GROUP)
        self.group_sums = [0] * (BUCKETS // _GROUP)
        self.count = 0
        self.total = 0
        self.dirty: set[int] = set()

    def load(self, rows: Iterable[tuple[int, int, bytes]]) -> None:
        """Set the buckets from persisted ``(bucket, count, sum bytes)`` rows."""
        for bucket, count, raw in rows:
            value = int.from_bytes(raw, "big")
            self.counts[bucket] = count
            self.sums[bucket] = value
            self.group_counts[bucket >> 8] += count
            self.group_sums[bucket >> 8] += value
            self.count += count
            self.total += value

    def add(self, ids: Iterable[bytes], sign: int = 1) -> None:
        """Account for new ids (``sign`` -1 takes them back out, after a failed commit)."""
        counts, sums = self.counts, self.sums
        gcounts, gsums = self.group_counts, self.group_sums
        dirty = self.dirty
        n = 0
        added = 0
        for key in ids:
            bucket = key[0] << 8 | key[1]
            value = int.from_bytes(key, "big") * sign
            counts[bucket] += sign
            sums[bucket] += value
            gcounts[key[0]] += sign
            gsums[key[0]] += value
            dirty.add(bucket)
            n += sign
            added += value
        self.count += n
        self.total += added

    def dirty_rows(self) -> list[tuple[int, int, bytes]]:
        """The dirty buckets as ``(bucket, count, sum mod 2**256)`` rows (the caller clears)."""
        return [
            (b, self.counts[b], (self.sums[b] % (1 << 256)).to_bytes(32, "big"))
            for b in sorted(self.dirty)
        ]

    def _whole(self, first: int, last: int) -> tuple[int, int]:
        """(count, sum) of the buckets ``first .. last - 1``."""
        if last <= first:
            return 0, 0
        counts, sums = self.counts, self.sums
        if last - first <= 2 * _GROUP:
            return sum(counts[first:last]), sum(sums[first:last])
        g_first = -(-first // _GROUP)
        g_last = last // _GROUP
        a, b = g_first * _GROUP, g_last * _GROUP
        return (
            sum(counts[first:a]) + sum(self.group_counts[g_first:g_last]) + sum(counts[b:last]),
            sum(sums[first:a]) + sum(self.group_sums[g_first:g_last]) + sum(sums[b:last]),
        )

    def range_sum(self, lo: bytes, hi: bytes | None, scan: Scan) -> tuple[int, int]:
        """(count, sum) of the ids in ``[lo, hi)``; ``scan`` reads the partial edge buckets."""
        if hi is None and lo == bytes(32):
            return self.count, self.total
        b_lo = bucket_of(lo)
        lo_aligned = lo[2:] == _ZERO_TAIL
        if hi is None:
            b_hi, hi_aligned = BUCKETS, True
        else:
            b_hi, hi_aligned = bucket_of(hi), hi[2:] == _ZERO_TAIL
        if b_lo == b_hi:
            return scan(lo, hi)
        count, total = 0, 0
        first = b_lo
        if not lo_aligned:
            c, s = scan(lo, _bucket_start(b_lo + 1))
            count, total, first = count + c, total + s, b_lo + 1
        c, s = self._whole(first, b_hi)
        count, total = count + c, total + s
        if not hi_aligned:
            start = _bucket_start(b_hi)
            assert start is not None
            c, s = scan(start, hi)
            count, total = count + c, total + s
        return count, total
