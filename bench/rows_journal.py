"""Row group 9, journal v2: signed appends at scale, open time, reconciliation cost, memory.

- **append**: ``Journal.append_many`` of signed ops (batches of 1000, 64-byte
  payloads) into a journal already holding N ops, against raw ``sqlite3``
  ``executemany`` of the very same rows into a copy of the same database
  (same schema, same pragmas, one transaction per 1000 rows, each row into
  ``ops`` and its id into the ``ids`` index, unswept); and the rate
  at the large N against the rate at the small N (the same run; the sizes
  take turns, one repetition each, so a slow spell of the machine is shared).
- **open**: ``Journal.open`` of a cleanly closed N-op journal, against
  ``sqlite3.connect`` plus one query of the same file.
- **reconcile**: two N-op journals differing by 100 ops (50 on each side)
  made equal by :func:`aura_sync.protocols.reconcile.reconcile` through an
  in-process remote that encodes every request and reply with the codec
  (bytes counted both ways); the baseline is the encoded size of the 100
  ops alone.  Two equal journals: bytes of the one round trip.
- **memory**: peak RSS of a subprocess that opens the N-op journal, digests
  64 ranges and appends 1000 ops, against one that only imports the module.

The held ops are pre-filled as synthetic rows (random ids, one SQL insert
each, then one open to index them): the rows measured are real signed ops.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

from bench._harness import Context, Stats, Target, optional_module

# (small N, large N) held ops per run size
_SIZES = {
    "tiny": (500, 1_500),
    "quick": (10_000, 1_000_000),
    "full": (10_000, 1_000_000, 10_000_000),
}
"""Held ops per run size: appends at each, opens at each but the first, the rest at the last."""
_BATCH = 1000
_BATCHES_PER_REP = 5
_PAYLOAD = 64


def _identity() -> Any:
    from aura_sync.identity import NodeIdentity

    return NodeIdentity.generate()


def _fill(path: Path, n: int) -> None:
    """A closed journal at ``path`` holding ``n`` synthetic ops (indexed by one open).

    The id index is left as a long run of appends leaves it: slice ``j`` was
    last swept ``SLICES - j`` steps ago, its later ops are in the fresh tier,
    and the ops of its sweeps since its last one into ``ids`` are in ``recent``.
    """
    from aura_sync.protocols.journal import Journal
    from aura_sync.protocols.journal_ids import LEVEL_SWEEPS, PREFIX, SLICES, STEP_OPS

    Journal.open(path, identity=_identity()).close()
    raw = sqlite3.connect(path, isolation_level=None)
    try:
        raw.execute("PRAGMA synchronous = OFF")
        raw.execute("PRAGMA cache_size = -1048576")  # 1 GiB while building (10M random ids)
        done = 0
        while done < n:
            k = min(100_000, n - done)
            author = os.urandom(16)
            raw.execute("BEGIN")
            raw.execute("INSERT INTO authors VALUES (?, ?)", (author, os.urandom(32)))
            raw.executemany(
                "INSERT INTO ops (id, author, seq, prev, payload, sig) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    (os.urandom(32), author, i, os.urandom(32), os.urandom(_PAYLOAD), None)
                    for i in range(k)
                ),
            )
            raw.execute("COMMIT")
            done += k
        cycles = n // (SLICES * STEP_OPS)  # complete sweep cycles; the next sweep is slice 0
        swept = SLICES * cycles

        def mark(count: int) -> int:  # arrival number covered by sweep number ``count``
            return max(0, n - (swept - count) * STEP_OPS)

        marks = [(j, mark(swept - SLICES + j)) for j in range(SLICES)]
        levelled = [  # slice j's last sweep into ids: its cycle c has (c + j) % LEVEL_SWEEPS == 0
            (j, mark((cycles - 1 - (cycles - 1 + j) % LEVEL_SWEEPS) * SLICES + j))
            for j in range(SLICES)
        ]
        raw.executemany("INSERT INTO sweeps VALUES (?, ?)", marks)
        raw.execute("INSERT OR REPLACE INTO meta VALUES ('sweep', ?)", (swept,))
        raw.execute("CREATE TEMP TABLE levelled (slice INTEGER PRIMARY KEY, arrival INTEGER)")
        raw.executemany("INSERT INTO levelled VALUES (?, ?)", levelled)
        for table, low, high in (("ids", "0", "l.arrival"), ("recent", "l.arrival", "s.arrival")):
            raw.execute(
                f"INSERT INTO {table} SELECT substr(o.id, 1, {PREFIX}), o.arrival FROM ops o"
                f" JOIN sweeps s ON s.slice = {_FIRST_BYTE} JOIN levelled l ON l.slice = s.slice"
                f" WHERE o.arrival > {low} AND o.arrival <= {high} ORDER BY 1, 2"
            )
        raw.execute("DELETE FROM fresh")  # the empty journal's: the open below rebuilds it
        raw.execute("UPDATE meta SET value = 1 WHERE name = 'clean'")
    finally:
        raw.close()
    Journal.open(path, identity=_identity()).close()  # index the tail, snapshot the buckets


_HEX = "'0123456789ABCDEF'"
_FIRST_BYTE = (  # the first byte of o.id as an integer (SQLite has no blob-to-int)
    f"(instr({_HEX}, substr(hex(o.id), 1, 1)) - 1) * 16"
    f" + instr({_HEX}, substr(hex(o.id), 2, 1)) - 1"
)
_FILLED: dict[int, Path] = {}
_FILL_DIRS: list[tempfile.TemporaryDirectory[str]] = []


def filled(n: int, target: Path) -> None:
    """Copy a closed journal of ``n`` synthetic ops to ``target``.

    Each size is built once per process (under the temporary directory,
    removed at exit) and shared by the row groups: the 1M-op journal is the
    append row's and the serving row's.
    """
    source = _FILLED.get(n)
    if source is None:
        if not _FILL_DIRS:
            _FILL_DIRS.append(tempfile.TemporaryDirectory(prefix="aura-bench-filled-"))
            atexit.register(_FILL_DIRS[0].cleanup)
        source = Path(_FILL_DIRS[0].name) / f"filled-{n}.sqlite3"
        _fill(source, n)
        _FILLED[n] = source
    _copy(source, target)


def _raw_insert(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> float:
    """Each 1000 rows in one transaction: into ``ops`` and into the ``ids`` index at once."""
    first = conn.execute("SELECT max(arrival) FROM ops").fetchone()[0] + 1
    numbered = [(first + i, *row) for i, row in enumerate(rows)]
    keyed = [(row[1], row[0]) for row in numbered]
    t0 = time.perf_counter()
    for i in range(0, len(rows), _BATCH):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO ops VALUES (?, ?, ?, ?, ?, ?, ?)", numbered[i : i + _BATCH])
        conn.executemany("INSERT INTO ids VALUES (?, ?)", keyed[i : i + _BATCH])
        conn.execute("COMMIT")
    return time.perf_counter() - t0


class _Appender:
    """One size of the append row: an ``n``-op journal and a raw copy of it, side by side."""

    def __init__(self, root: Path, n: int) -> None:
        from aura_sync.protocols.journal import Journal

        path = root / f"append-{n}.sqlite3"
        filled(n, path)
        self.raw_path = root / f"raw-{n}.sqlite3"
        shutil.copy(path, self.raw_path)
        self.raw = sqlite3.connect(self.raw_path, isolation_level=None)
        self.raw.execute("PRAGMA journal_mode = WAL")
        self.raw.execute("PRAGMA synchronous = FULL")
        self.journal = Journal.open(path, identity=_identity())
        author = self.journal.author.raw
        self.raw.execute("INSERT OR IGNORE INTO authors VALUES (?, ?)", (author, b"k" * 32))

    def rep(self, per_rep: int) -> tuple[float, float]:
        """Seconds to append ``per_rep`` signed ops, and to insert the same rows raw."""
        payloads = [os.urandom(_PAYLOAD) for _ in range(per_rep)]
        t0 = time.perf_counter()
        ids: list[bytes] = []
        for i in range(0, per_rep, _BATCH):
            ids += self.journal.append_many(payloads[i : i + _BATCH])
        dt = time.perf_counter() - t0
        rows = [
            (op.op_id, op.author.raw, op.seq, op.prev, op.payload, op.sig or None)
            for k in range(0, len(ids), 128)
            for op in self.journal.get_many(ids[k : k + 128])
        ]
        return dt, _raw_insert(self.raw, rows)

    def close(self) -> None:
        self.journal.close()
        self.raw.close()
        self.raw_path.unlink()


def _append_rows(
    ctx: Context, root: Path, sizes: tuple[int, ...]
) -> dict[int, tuple[Stats, Stats]]:
    """Signed appends into an ``n``-op journal vs raw executemany of the same rows, per size.

    The sizes take turns, one repetition each (10k, 1M, 10k, 1M, ...), so a
    slow spell of the machine falls on every size alike instead of on one
    size's whole block: the ratio between sizes is the same run's.
    """
    per_rep = _BATCH * (1 if ctx.size.name == "tiny" else _BATCHES_PER_REP)
    appenders: dict[int, _Appender] = {}
    ours: dict[int, list[float]] = {n: [] for n in sizes}
    base: dict[int, list[float]] = {n: [] for n in sizes}
    try:
        for n in sizes:
            appenders[n] = _Appender(root, n)
        for rep in range(ctx.size.reps + 1):
            for n in sizes:
                dt, b = appenders[n].rep(per_rep)
                if rep:
                    ours[n].append(per_rep / dt)
                    base[n].append(per_rep / b)
    finally:
        for appender in appenders.values():
            appender.close()
    return {
        n: (
            Stats(f"Journal.append_many, {n:,} held", "ops/s", ours[n], n=per_rep),
            Stats(f"sqlite3 executemany, {n:,} held", "ops/s", base[n], n=per_rep),
        )
        for n in sizes
    }


def _open_rows(ctx: Context, path: Path, n: int) -> None:
    from aura_sync.protocols.journal import Journal

    ours: list[float] = []
    base: list[float] = []
    identity = _identity()
    for rep in range(ctx.size.reps + 1):
        t0 = time.perf_counter()
        journal = Journal.open(path, identity=identity)
        dt = time.perf_counter() - t0
        journal.close()
        t0 = time.perf_counter()
        raw = sqlite3.connect(path)
        raw.execute("SELECT count(*) FROM sqlite_master").fetchone()
        b = time.perf_counter() - t0
        raw.close()
        if rep:
            ours.append(dt * 1e6)
            base.append(b * 1e6)
    ctx.compare(
        f"journal open, {n:,} ops",
        Stats("Journal.open (clean shutdown)", "us/op", ours),
        Stats("sqlite3.connect + 1 query", "us/op", base),
        target=Target("<=", 1e6, on="median"),
        note="target: <= 1 s (no full scan at open)",
    )


class _Remote:
    """The other journal behind the codec: every request and reply is encoded, bytes counted."""

    def __init__(self, journal: Any) -> None:
        from aura_sync.messages import codec

        self.journal = journal
        self.bytes = 0
        self.trips = 0
        self._encode = codec.encode

    def _count(self, *messages: Any) -> None:
        self.trips += 1
        self.bytes += sum(len(self._encode(m)) for m in messages)

    def digests(self, ranges: tuple[Any, ...]) -> Generator[Any, Any, tuple[Any, ...]]:
        from aura_sync.messages.sync import DigestReply, DigestRequest

        out = self.journal.digests(ranges)
        self._count(DigestRequest(ranges), DigestReply(out))
        return out
        yield

    def list_ids(self, id_range: Any) -> Generator[Any, Any, list[bytes]]:
        from aura_sync.messages.sync import MAX_IDS_BATCH, IdRange, IdsReply, IdsRequest

        out: list[bytes] = []
        current = id_range
        while True:
            ids, next_lo = self.journal.list_ids(current, MAX_IDS_BATCH)
            self._count(IdsRequest(current, MAX_IDS_BATCH), IdsReply(ids, next_lo))
            out.extend(ids)
            if next_lo is None:
                return out
            current = IdRange(next_lo, id_range.hi)
        yield

    def fetch(self, ids: tuple[bytes, ...]) -> Generator[Any, Any, tuple[Any, ...]]:
        from aura_sync.messages.sync import OpsReply, OpsRequest

        ops = tuple(self.journal.get_many(ids))
        self._count(OpsRequest(ids), OpsReply(ops))
        return ops
        yield

    def push(self, ops: tuple[Any, ...]) -> Generator[Any, Any, int]:
        from aura_sync.messages.sync import PushAck, PushOps

        added = self.journal.add_many(ops)
        self._count(PushOps(ops), PushAck(added, len(ops) - added))
        return int(added)
        yield

    # pipelined forms (what a peer over a connection offers): one round trip per window

    def digests_many(self, parts: list[tuple[Any, ...]]) -> Generator[Any, Any, list[Any]]:
        out = []
        for part in parts:
            out.append((yield from self.digests(part)))
        self.trips -= len(parts) - 1
        return out

    def list_many(self, ranges: list[Any]) -> Generator[Any, Any, list[list[bytes]]]:
        out = []
        for id_range in ranges:
            out.append((yield from self.list_ids(id_range)))
        self.trips -= max(0, len(ranges) - 1)
        return out

    def fetch_many(self, batches: list[tuple[bytes, ...]]) -> Generator[Any, Any, list[Any]]:
        out = []
        for batch in batches:
            out.append((yield from self.fetch(batch)))
        self.trips -= max(0, len(batches) - 1)
        return out

    def children_many(
        self, depth: int, parts: list[tuple[int, ...]]
    ) -> Generator[Any, Any, list[tuple[tuple[int, ...], bytes]]]:
        from aura_sync.messages.sync import ChildDigestsReply, ChildDigestsRequest

        out = []
        for part in parts:
            counts, prints = self.journal.children(depth, part)
            self.bytes += len(self._encode(ChildDigestsRequest(depth, part)))
            self.bytes += len(self._encode(ChildDigestsReply(counts, prints)))
            out.append((counts, prints))
        self.trips += 1
        return out
        yield


def _node_ids_many(
    self: _Remote, depth: int, parts: list[tuple[int, ...]]
) -> Generator[Any, Any, list[list[bytes]]]:
    from aura_sync.messages.sync import NodeIdsReply, NodeIdsRequest

    out: list[list[bytes]] = []
    for part in parts:
        counts, ids = self.journal.node_ids(depth, part)
        self.bytes += len(self._encode(NodeIdsRequest(depth, part)))
        self.bytes += len(self._encode(NodeIdsReply(counts, ids)))
        start = 0
        for count in counts:
            out.append(list(ids[start : start + count]))
            start += count
    self.trips += 1 if parts else 0
    return out
    yield


_Remote.node_ids_many = _node_ids_many  # type: ignore[attr-defined]


def _drive(gen: Generator[Any, Any, Any]) -> Any:
    try:
        while True:
            next(gen)
    except StopIteration as stop:
        return stop.value


def _reconcile_rows(ctx: Context, root: Path, path: Path, n: int) -> None:
    module, why = optional_module("aura_sync.protocols.reconcile", "reconcile")
    if module is None:
        ctx.unavailable(f"reconcile, 2 x {n:,} ops differing by 100", why)
        return
    from aura_sync.messages import codec
    from aura_sync.protocols.journal import Journal

    reconcile_mod = module.reconcile
    other = root / "other.sqlite3"
    _copy(path, other)
    a = Journal.open(path, identity=_identity())
    b = Journal.open(other, identity=_identity())
    sizes: list[float] = []
    base: list[float] = []
    times: list[float] = []
    direct: list[float] = []
    x = Journal.open(":memory:", identity=_identity())
    y = Journal.open(":memory:", identity=_identity())
    try:
        for rep in range(ctx.size.reps + 1):
            fresh = x.push_order(x.append_many(os.urandom(_PAYLOAD) for _ in range(100)))
            t0 = time.perf_counter()
            y.add_many(x.get_many(fresh))
            direct_s = time.perf_counter() - t0
            new = a.append_many(os.urandom(_PAYLOAD) for _ in range(50))
            b.append_many(os.urandom(_PAYLOAD) for _ in range(50))
            remote = _Remote(b)
            t0 = time.perf_counter()
            agreed = _drive(reconcile_mod(a, remote, list_threshold=64, batch_size=128))
            dt = time.perf_counter() - t0
            if agreed is None or a.digest() != b.digest():
                raise RuntimeError("the journals did not agree after reconciling")
            minimum = sum(len(codec.encode(op)) for op in a.get_many(new)) * 2
            if rep:
                sizes.append(remote.bytes / 100)
                base.append(minimum / 100)
                times.append(dt * 1e6)
                direct.append(direct_s * 1e6)
        remote = _Remote(b)
        t0 = time.perf_counter()
        _drive(reconcile_mod(a, remote, list_threshold=64, batch_size=128))
        equal_s = time.perf_counter() - t0
        equal = (remote.bytes, remote.trips)
    finally:
        a.close()
        b.close()
        x.close()
        y.close()
        other.unlink()
        Path(f"{other}.hwm").unlink()
    name = f"reconcile, 2 x {n:,} ops differing by 100"
    ctx.compare(
        f"{name}: bytes",
        Stats("bytes exchanged per differing op", "bytes/item", sizes, n=100),
        Stats("the 100 ops alone, encoded", "bytes/item", base, n=100),
        target=Target("<=", 65536 / 100, on="median"),
        note="target: <= 64 KB in both directions (655 bytes per differing op)",
    )
    ctx.compare(
        f"{name}: time",
        Stats("reconcile (in process, codec-encoded)", "us/op", times),
        Stats("add_many of the 100 ops, no reconciliation", "us/op", direct),
        target=Target("<=", 1e6, on="median"),
        note=f"target: <= 1 s; equal journals: {equal[0]} bytes in {equal[1]} round trip(s), "
        f"{equal_s * 1e3:.1f} ms",
    )
    ctx.compare(
        f"reconcile, 2 equal x {n:,} ops: bytes",
        Stats("bytes of the agreeing round trip", "bytes/item", [float(equal[0])] * 5),
        Stats("one DigestRequest + DigestReply", "bytes/item", [float(equal[0])] * 5),
        target=Target("<=", 1024, on="median"),
        note=f"target: one round trip of <= 1 KB (took {equal[1]})",
    )


_RSS_SCRIPT = """
import os, sys
from aura_sync.identity import NodeIdentity
from aura_sync.messages.sync import FULL_RANGE
from aura_sync.protocols.journal import Journal
if sys.argv[1] == "open":
    j = Journal.open(sys.argv[2], identity=NodeIdentity.generate())
    j.digests(FULL_RANGE.split(64))
    j.append_many([os.urandom(64) for _ in range(1000)])
    j.close()
with open("/proc/self/status") as status:  # VmHWM: this process's peak (not the parent's)
    peak = [line for line in status if line.startswith("VmHWM:")][0].split()[1]
print(int(peak) * 1024)
"""


def _copy(path: Path, target: Path) -> None:
    """Copy a closed journal with its high-water mark."""
    shutil.copy(path, target)
    shutil.copy(f"{path}.hwm", f"{target}.hwm")


def _rss_row(ctx: Context, path: Path, n: int) -> None:
    if ctx.size.name == "tiny":  # ten interpreters would outlast the smoke test's budget
        ctx.unavailable(f"peak RSS holding {n:,} ops", "measured in quick and full runs only")
        return

    def peaks(mode: str, paths: list[Path]) -> list[float]:
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _RSS_SCRIPT, mode, str(p)], stdout=subprocess.PIPE, text=True
            )
            for p in paths
        ]
        out = [proc.communicate(timeout=600)[0] for proc in procs]
        if any(proc.returncode for proc in procs):
            raise RuntimeError(f"the RSS probe failed: {[p.returncode for p in procs]}")
        return [float(text.split()[-1]) for text in out]

    if n <= 100_000:  # small journals: five copies, probed at once
        copies = [path.with_name(f"rss-{i}.sqlite3") for i in range(5)]
        for copy in copies:
            _copy(path, copy)
        ours = peaks("open", copies)
    else:  # one at a time: they share the journal
        ours = [peaks("open", [path])[0] for _ in range(5)]
    base = peaks("import", [path] * 5)  # these touch no journal
    ctx.compare(
        f"peak RSS holding {n:,} ops",
        Stats("open + 64 digests + 1000 appends", "bytes/item", ours),
        Stats("python + import only", "bytes/item", base),
        target=Target("<=", 300e6, on="median"),
        note="target: <= 300 MB (bytes per process, not per op)",
    )


def run(ctx: Context) -> None:
    """Every row of the group."""
    sizes = _SIZES.get(ctx.size.name, _SIZES["quick"])
    small, large = sizes[0], sizes[-1]
    with tempfile.TemporaryDirectory(prefix="aura-bench-journal-") as tmp:
        root = Path(tmp)
        try:
            rates = {}
            for n, (ours, raw) in _append_rows(ctx, root, sizes).items():
                rates[n] = ours
                ctx.compare(
                    f"journal append, {n:,} held",
                    ours,
                    raw,
                    target=Target(">=", 0.5),
                    note="signed ops vs raw executemany of the same rows",
                )
            for n in sizes[1:]:
                ctx.compare(
                    f"journal append, {n:,} vs {small:,} held",
                    rates[n],
                    rates[small],
                    target=Target(">=", 0.8),
                    note="no per-op O(n) work",
                )
        except Exception as exc:
            ctx.error("journal append", exc)
        steps: list[tuple[str, Any]] = [
            (
                f"journal open, {n:,} ops",
                lambda n=n: _open_rows(ctx, root / f"append-{n}.sqlite3", n),
            )
            for n in sizes[1:]
        ]
        path = root / f"append-{large}.sqlite3"
        steps += [
            ("reconcile", lambda: _reconcile_rows(ctx, root, path, large)),
            ("peak RSS", lambda: _rss_row(ctx, path, large)),
        ]
        for name, step in steps:
            try:
                step()
            except Exception as exc:
                ctx.error(name, exc)
