"""Incremental range fingerprints of the journal: a four-level tree of sums of the op ids.

The 256-bit id space is cut into 65,536 buckets by the ids' first two
bytes.  For each bucket the journal keeps the count of its ids and their
sum as exact integers, and the same for every aligned group of 16, 256 and
4,096 buckets (four levels, fan-out 16), in memory.  An insert updates
its bucket; the entries above the changed buckets are summed again from
the level below at the next read (or after 65,536 inserts without one), so
a batch of inserts costs O(1) an id plus O(levels) per touched entry, paid
once per read.  The buckets are persisted in the ``buckets`` table now and then
(:class:`RangeSums` marks the dirty ones).  The (count, sum) of the ids
below a bound is at most 15 entries per level plus, for a bound inside a
bucket, the smaller side of that one bucket's ids (about n/131,072 on
average, read through a callback); a range is the difference of its two
bounds.  So a range costs O(levels + n/65,536), whatever its width.  The
fingerprint is Negentropy's ``SHA-256(domain, sum mod 2**256, count)``
(:func:`~aura_sync.messages.sync.fingerprint_of`), equal to the one
recomputed from scratch by :func:`~aura_sync.messages.sync.fingerprint`.

Layer: runtime (protocols); pure, no I/O (the bucket read is a callback).
"""

from __future__ import annotations

import json
from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import Final

__all__ = ["BUCKET_BITS", "COUNT_BITS", "FAN_BITS", "RangeSums"]

BUCKET_BITS: Final = 16
"""Buckets are cut by the first ``BUCKET_BITS`` bits of an id (65,536 buckets)."""

FAN_BITS: Final = 4
"""Each level above the buckets sums ``2**FAN_BITS`` entries of the level below."""

COUNT_BITS: Final = 40
"""Bits of a bucket's count in :meth:`RangeSums.dirty_packed` (a journal holds < 2**40 ops)."""

_PENDING_MAX: Final = 65_536
"""Ids added before the levels above the buckets are brought up to date without a read."""

Fetch = Callable[[int], list[bytes]]
"""``fetch(bucket)``: the held ids of one bucket, ascending."""


class RangeSums:
    """Count and sum of the ids per bucket and per aligned group of buckets, by level.

    ``bits`` (default :data:`BUCKET_BITS`) sets the number of buckets,
    ``2**bits``; tests use fewer to make buckets dense.
    """

    __slots__ = ("_pending", "_waiting", "bits", "count", "dirty", "levels", "total")

    def __init__(self, bits: int = BUCKET_BITS) -> None:
        self.bits = bits
        self.levels: list[tuple[list[int], list[int]]] = []
        size = 1 << bits
        while True:
            self.levels.append(([0] * size, [0] * size))
            if size <= 1 << FAN_BITS:
                break
            size >>= FAN_BITS
        self.count = 0
        self.total = 0
        self.dirty: set[int] = set()
        self._pending: list[list[int]] = []  # buckets changed since the levels above were summed
        self._waiting = 0

    @property
    def counts(self) -> list[int]:
        """The ids per bucket."""
        return self.levels[0][0]

    @property
    def sums(self) -> list[int]:
        """The sum of the ids per bucket."""
        return self.levels[0][1]

    def bucket_of(self, op_id: bytes) -> int:
        """The bucket of a 32-byte id."""
        return int.from_bytes(op_id[:4], "big") >> (32 - self.bits)

    def bucket_start(self, bucket: int) -> bytes:
        """The smallest id of ``bucket`` (< ``2**bits``)."""
        return (bucket << (256 - self.bits)).to_bytes(32, "big")

    def load(self, rows: Iterable[tuple[int, int, bytes]]) -> None:
        """Set the buckets from persisted ``(bucket, count, sum bytes)`` rows."""
        counts, sums = self.levels[0]
        for bucket, count, raw in rows:
            counts[bucket] = count
            sums[bucket] = int.from_bytes(raw, "big")
        for level in range(1, len(self.levels)):
            below_c, below_s = self.levels[level - 1]
            up_c, up_s = self.levels[level]
            fan = 1 << FAN_BITS
            for i in range(len(up_c)):
                up_c[i] = sum(below_c[i * fan : (i + 1) * fan])
                up_s[i] = sum(below_s[i * fan : (i + 1) * fan])
        self.count = sum(self.levels[-1][0])
        self.total = sum(self.levels[-1][1])
        self._pending.clear()
        self._waiting = 0

    def add(self, ids: Iterable[bytes], sign: int = 1) -> None:
        """Account for new ids (``sign`` -1 takes them back out, after a failed commit).

        Only the buckets are updated here; the levels above catch up at the
        next read (:meth:`refresh`), or once :data:`_PENDING_MAX` ids wait.
        """
        values = [int.from_bytes(key, "big") for key in ids]
        shift = 256 - self.bits
        buckets = [value >> shift for value in values]
        if sign != 1:
            values = [value * sign for value in values]
        counts, sums = self.levels[0]
        for bucket, value in zip(buckets, values, strict=True):
            counts[bucket] += sign
            sums[bucket] += value
        self.dirty.update(buckets)
        self._pending.append(buckets)
        self._waiting += len(buckets)
        self.count += sign * len(values)
        self.total += sum(values)
        if self._waiting >= _PENDING_MAX:
            self.refresh()

    def refresh(self) -> None:
        """Recompute the entries above the buckets changed since the last refresh."""
        touched = {bucket for batch in self._pending for bucket in batch}
        self._pending.clear()
        self._waiting = 0
        fan = 1 << FAN_BITS
        for level in range(1, len(self.levels)):
            (below_c, below_s), (counts, sums) = self.levels[level - 1], self.levels[level]
            touched = {entry >> FAN_BITS for entry in touched}
            for p in touched:
                counts[p] = sum(below_c[p * fan : (p + 1) * fan])
                sums[p] = sum(below_s[p * fan : (p + 1) * fan])

    def dirty_packed(self) -> tuple[str, bytes]:
        """The dirty buckets, packed for one SQL statement (the caller clears ``dirty``): a
        JSON array of ``bucket << COUNT_BITS | count`` and their sums mod 2**256, 32 bytes
        each, in the same order."""
        counts, sums = self.levels[0]
        dirty = sorted(self.dirty)
        keys = json.dumps([b << COUNT_BITS | counts[b] for b in dirty])
        mod = (1 << 256) - 1
        return keys, b"".join([(sums[b] & mod).to_bytes(32, "big") for b in dirty])

    def _prefix(self, bucket: int) -> tuple[int, int]:
        """(count, sum) of the buckets ``0 .. bucket - 1``: at most 15 entries per level."""
        if self._pending and bucket:
            self.refresh()
        count, total = 0, 0
        top = len(self.levels) - 1
        for level, (counts, sums) in enumerate(self.levels):
            end = bucket >> (FAN_BITS * level)
            start = 0 if level == top else end >> FAN_BITS << FAN_BITS
            if end > start:
                count += sum(counts[start:end])
                total += sum(sums[start:end])
        return count, total

    def below(
        self, bound: bytes, fetch: Fetch, memo: dict[int, tuple[int, int]] | None = None
    ) -> tuple[int, int]:
        """(count, sum) of the ids ``< bound``; ``fetch`` reads the bound's bucket if needed.

        ``memo`` (bucket -> prefix) spares recomputing a prefix; valid until the next insert.
        """
        bucket = self.bucket_of(bound)
        if memo is None:
            count, total = self._prefix(bucket)
        elif bucket in memo:
            count, total = memo[bucket]
        else:
            count, total = memo[bucket] = self._prefix(bucket)
        if bound == self.bucket_start(bucket):
            return count, total
        ids = fetch(bucket)
        k = bisect_left(ids, bound)
        if k <= len(ids) - k:
            return count + k, total + sum(int.from_bytes(x, "big") for x in ids[:k])
        above = ids[k:]
        counts, sums = self.levels[0]
        return (
            count + counts[bucket] - len(above),
            total + sums[bucket] - sum(int.from_bytes(x, "big") for x in above),
        )

    def range_sum(
        self,
        lo: bytes,
        hi: bytes | None,
        fetch: Fetch,
        memo: dict[int, tuple[int, int]] | None = None,
    ) -> tuple[int, int]:
        """(count, sum) of the ids in ``[lo, hi)`` (``hi`` None: to the end); see :meth:`below`."""
        c_lo, s_lo = self.below(lo, fetch, memo)
        if hi is None:
            return self.count - c_lo, self.total - s_lo
        c_hi, s_hi = self.below(hi, fetch, memo)
        return c_hi - c_lo, s_hi - s_lo
