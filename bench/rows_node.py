"""Row group 7, node: anti-entropy between in-process nodes over loopback TCP.

Real :class:`~aura_sync.node.node.Node` objects (mutual TLS over
``127.0.0.1``, one temporary data directory each, ``sync_interval`` 0.05 s)
run in this process; every later node bootstraps from the first and finds
the others through peer exchange.

- anti-entropy ops/s, 2 nodes: per repetition, N fresh ops (64-byte
  payloads) are appended on node A (``Node.append``, 1000 per call); the
  clock runs from the first append until node B's journal holds them all
  (polled every millisecond).  N: 50 (tiny), 2000 (quick), 10 000 (full).
- convergence: k nodes each append N/k ops, then the clock runs from the
  last append's return until every journal holds all ops and the full-range
  digests are equal; reported as N / time (ops/s) with the seconds in the
  note.  k, N: 2, 50 (tiny); 3, 1000 (quick); 5, 10 000 (full).  The full
  run keeps 1 warm-up + at most 5 repetitions (each takes seconds).

Baseline of both rows: the same number of signed ops (same payload size,
signed and ordered before the clock starts) verified and inserted straight
into one SQLite :class:`~aura_sync.protocols.journal.Journal` in a
temporary file (``add_many`` in batches of 128, the wire batch size), its
repetitions interleaved with the node's.  The ratio is sync throughput over
local-insert throughput: what replication costs over writing locally.
Journals and nodes grow across repetitions on both sides alike.

Threaded: each row runs pinned to one CPU and unpinned; nodes are started
inside the mode and always stopped (``try``/``finally``).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench._harness import Context, Stats, Target, optional_module

PAIR_ROW = "anti-entropy ops/s, 2 nodes over loopback TCP vs local Journal insert"
CONVERGE_ROW = "{k} nodes converge on {n:,} operations vs local Journal insert"
SYNC_INTERVAL = 0.05  # seconds between sync rounds of the benchmark nodes
PAYLOAD_BYTES = 64
APPEND_CHUNK = 1000  # payloads per Node.append (the protocol allows 1..1024)
INSERT_BATCH = 128  # ops per add_many in the baseline (the wire batch size)
POLL_S = 0.001
_TICK = threading.Event()  # never set: a sleep that is not time.sleep

# (2-node ops, convergence nodes, convergence ops, max convergence reps) per size
_SIZES: dict[str, tuple[int, int, int, int]] = {
    "tiny": (50, 2, 50, 99),
    "quick": (2000, 3, 1000, 99),
    "full": (10_000, 5, 10_000, 5),
}


def _payloads(tag: str, n: int) -> list[bytes]:
    """``n`` distinct payloads of PAYLOAD_BYTES bytes."""
    return [(b"%s-%08d-" % (tag.encode(), i)).ljust(PAYLOAD_BYTES, b".") for i in range(n)]


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` every millisecond; TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        _TICK.wait(POLL_S)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class _Cluster:
    """k started nodes under ``root``; node 0 is everyone's bootstrap peer."""

    def __init__(self, root: Path, k: int) -> None:
        from aura_sync.node.config import load_config
        from aura_sync.node.node import Node

        self.nodes: list[Any] = []
        try:
            for i in range(k):
                settings: dict[str, Any] = {
                    "data_dir": str(root / f"node{i}"),
                    "listen": "127.0.0.1:0",
                    "sync_interval": SYNC_INTERVAL,
                    "request_timeout": 5.0,
                    "shutdown_timeout": 5.0,
                    "log_level": "warning",
                }
                if self.nodes:
                    settings["bootstrap"] = [self.nodes[0].bootstrap_address]
                self.nodes.append(Node(load_config(None, settings)).start())
        except BaseException:
            self.stop()
            raise

    def append(self, node: Any, payloads: list[bytes]) -> None:
        for i in range(0, len(payloads), APPEND_CHUNK):
            node.append(payloads[i : i + APPEND_CHUNK], timeout=30.0)

    def holds(self, node: Any, total: int) -> bool:
        return len(node.journal) >= total

    def converged(self, total: int) -> bool:
        if not all(len(n.journal) == total for n in self.nodes):
            return False
        return len({n.journal.digest().fingerprint for n in self.nodes}) == 1

    def stop(self) -> None:
        for node in reversed(self.nodes):
            with contextlib.suppress(Exception):
                node.stop()
        self.nodes.clear()


class _LocalInsert:
    """The baseline: ops inserted straight into one SQLite Journal."""

    def __init__(self, path: Path) -> None:
        from aura_sync.identity import NodeIdentity
        from aura_sync.protocols.journal import Journal

        self._source = Journal.open(":memory:", identity=NodeIdentity.generate())
        self.journal = Journal.open(path, identity=NodeIdentity.generate())
        self._seq = 0

    def seconds(self, n: int) -> float:
        """Insert ``n`` fresh signed ops (built and signed before the clock starts); seconds."""
        payloads = _payloads("b", n)
        ids: list[bytes] = []
        for i in range(0, n, APPEND_CHUNK):
            ids += self._source.append_many(payloads[i : i + APPEND_CHUNK])
        order = self._source.push_order(ids)
        ops = [op for i in range(0, n, 128) for op in self._source.get_many(order[i : i + 128])]
        self._seq += n
        add = self.journal.add_many
        with _gc_paused():
            t0 = time.perf_counter()
            for i in range(0, n, INSERT_BATCH):
                add(ops[i : i + INSERT_BATCH])
            dt = time.perf_counter() - t0
        if len(self.journal) != self._seq:
            raise RuntimeError(f"baseline journal holds {len(self.journal)}, want {self._seq}")
        return max(dt, 1e-9)

    def close(self) -> None:
        self.journal.close()
        self._source.close()


def _pair_rep(cluster: _Cluster, n: int, rep: int, timeout: float) -> float:
    """Seconds from the first append on A until B holds all ``n`` new ops."""
    a, b = cluster.nodes
    payloads = _payloads(f"p{rep}", n)
    total = len(b.journal) + n
    with _gc_paused():
        t0 = time.perf_counter()
        cluster.append(a, payloads)
        _wait(lambda: cluster.holds(b, total), timeout, f"node B to hold {total} ops")
        return max(time.perf_counter() - t0, 1e-9)


def _converge_rep(cluster: _Cluster, n: int, rep: int, timeout: float) -> float:
    """Each node appends its share of ``n`` ops; seconds from the last append to convergence."""
    k = len(cluster.nodes)
    total = len(cluster.nodes[0].journal) + n
    if not cluster.converged(total - n):
        raise RuntimeError("nodes were not converged before the repetition")
    shares = [n // k + (1 if i < n % k else 0) for i in range(k)]
    with _gc_paused():
        for i, (node, share) in enumerate(zip(cluster.nodes, shares, strict=True)):
            cluster.append(node, _payloads(f"c{rep}-{i}", share))
        t0 = time.perf_counter()
        _wait(lambda: cluster.converged(total), timeout, f"{k} nodes to converge on {total}")
        return max(time.perf_counter() - t0, 1e-9)


def _measure(
    ctx: Context,
    k: int,
    n: int,
    reps: int,
    rep_fn: Callable[[_Cluster, int, int, float], float],
    label: str,
) -> tuple[Stats, Stats, list[float]]:
    """Warm-up + ``reps`` interleaved repetitions of the node side and the baseline."""
    timeout = max(30.0, n / 200)
    sync_s: list[float] = []
    base_s: list[float] = []
    with tempfile.TemporaryDirectory(prefix="aura-bench-node-") as tmp:
        root = Path(tmp)
        cluster = _Cluster(root, k)
        base = _LocalInsert(root / "baseline.journal")
        try:
            if k > 2:  # let peer exchange connect everyone before timing
                cluster.append(cluster.nodes[-1], _payloads("hello", 1))
                _wait(lambda: cluster.converged(1), timeout, "the nodes to meet")
            for rep in range(reps + 1):  # repetition 0 is the warm-up
                s = rep_fn(cluster, n, rep, timeout)
                b = base.seconds(n)
                if rep:
                    sync_s.append(s)
                    base_s.append(b)
        finally:
            cluster.stop()
            base.close()
    measured = Stats(label, "ops/s", [n / s for s in sync_s], n=n)
    baseline = Stats("SQLite Journal.add_many", "ops/s", [n / s for s in base_s], n=n)
    measured.extra["seconds_median"] = float(statistics.median(sync_s))
    baseline.extra["seconds_median"] = float(statistics.median(base_s))
    return measured, baseline, sync_s


def _rows(ctx: Context, pinned: bool) -> None:
    n_pair, k, n_conv, max_conv_reps = _SIZES.get(ctx.size.name, _SIZES["quick"])
    try:
        m, b, _ = _measure(ctx, 2, n_pair, ctx.size.reps, _pair_rep, "2 nodes, loopback TCP")
        ctx.compare(
            PAIR_ROW,
            m,
            b,
            target=Target(">=", 0.9),
            pinned=pinned,
            note=(
                f"{n_pair} ops, first append on A to all on B, "
                f"median {m.extra['seconds_median'] * 1e3:.0f} ms; "
                f"sync_interval {SYNC_INTERVAL:g} s"
            ),
        )
    except Exception as exc:
        ctx.error(PAIR_ROW, exc)
    name = CONVERGE_ROW.format(k=k, n=n_conv)
    reps = min(ctx.size.reps, max_conv_reps)
    try:
        m, b, _ = _measure(ctx, k, n_conv, reps, _converge_rep, f"{k} nodes converge")
        ctx.compare(
            name,
            m,
            b,
            pinned=pinned,
            note=(
                f"last write to equal digests, median {m.extra['seconds_median']:.3g} s "
                f"(min {n_conv / m.max:.3g}, max {n_conv / m.min:.3g}); "
                f"1 warm-up + {reps} reps; writes spread over the {k} nodes"
            ),
        )
    except Exception as exc:
        ctx.error(name, exc)


def run(ctx: Context) -> None:
    """Both rows, pinned and unpinned (clean skips if the node runtime is missing)."""
    node, why = optional_module("aura_sync.node.node", "Node")
    if node is None:
        _, k, n_conv, _ = _SIZES.get(ctx.size.name, _SIZES["quick"])
        ctx.unavailable(PAIR_ROW, why)
        ctx.unavailable(CONVERGE_ROW.format(k=k, n=n_conv), why)
        return
    quiet = logging.getLogger("aura_sync")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        for pinned, mode in ctx.affinity_modes():
            with mode():
                _rows(ctx, pinned)
    finally:
        quiet.setLevel(level)
