"""Row group 9 (journal v2), sync throughput: real nodes over loopback TCP + mutual TLS.

Nodes are built as in :mod:`bench.rows_node` (one temporary data directory
each, ``sync_interval`` 0.05 s, defaults otherwise: admission on).

- **2 nodes**: node A is started once in this process, appends N ops
  (64-byte payloads, ``Node.append`` of 1000) and is stopped: its data
  directory is the template.  Per repetition a copy of it runs as
  ``aura-sync node`` in its own process (as deployed: its own interpreter
  and GIL; ready once it wrote ``--ready-file``), and a fresh node B
  (bootstrap: A) is started in this process; the clock runs from B's
  ``start()`` returning (dial, TLS, reconciliation, pulls) until B's journal
  holds all N ops, so A's own appends and start-up are not in it.  The
  note gives the CPU seconds B's process (this one) and A's used over the
  clock (medians; A's read from ``/proc``).  N: 300 (tiny), 20k (quick),
  100k (full).  Targets: >= 0.9x the baseline, and >= 30k ops/s.
- **5 nodes converge**: each node appends its share of N ops; the clock runs
  from the last append's return until every journal holds all ops with
  equal full-range digests.  N: 100 (tiny, 3 nodes), 2k (quick), 10k
  (full).  Target: median <= 1 s.

Baseline of both rows, measured after each repetition: *the same ops* (read
back from the writers' journals, already signed) verified and inserted into
a fresh SQLite :class:`~aura_sync.protocols.journal.Journal` in a temporary
file with ``add_many`` in batches of 128 (the wire batch size), each batch
its own commit.  The ratio is sync throughput over local-insert throughput.
The 2-node row's note also gives the ratio against batches of 2048 (the
receiver's group commit), a stricter baseline.
Unpinned only: the absolute target is for this 2-vCPU machine.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench._harness import Context, Stats, Target, optional_module
from bench.rows_node import (
    APPEND_CHUNK,
    INSERT_BATCH,
    SYNC_INTERVAL,
    _Cluster,
    _gc_paused,
    _payloads,
    _wait,
)

PAIR_ROW = "sync 2 nodes over loopback TLS, {n:,} fresh signed ops A to B vs local insert"
PAIR_ABS_ROW = "sync 2 nodes over loopback TLS, {n:,} fresh signed ops A to B (ops/s)"
CONVERGE_ROW = "{k} nodes converge on {n:,} ops after the last write (s)"
PAIR_OPS_PER_S = 30_000.0
GROUPED_BATCH = 2048  # the receiver's group commit: the stricter baseline, in the note
CONVERGE_S = 1.0
_BOOT = "import sys; from aura_sync.cli import main; sys.exit(main(sys.argv[1:]))"

# (2-node ops, convergence nodes, convergence ops) per size
_SIZES: dict[str, tuple[int, int, int]] = {
    "tiny": (300, 3, 100),
    "quick": (20_000, 5, 2_000),
    "full": (100_000, 5, 10_000),
}


def _node(data_dir: Path, bootstrap: str | None = None) -> Any:
    """A started node built as :class:`bench.rows_node._Cluster` builds its nodes."""
    from aura_sync.node.config import load_config
    from aura_sync.node.node import Node

    settings: dict[str, Any] = {
        "data_dir": str(data_dir),
        "listen": "127.0.0.1:0",
        "sync_interval": SYNC_INTERVAL,
        "request_timeout": 5.0,
        "shutdown_timeout": 5.0,
        "log_level": "warning",
    }
    if bootstrap is not None:
        settings["bootstrap"] = [bootstrap]
    return Node(load_config(None, settings)).start()


@contextlib.contextmanager
def _node_process(data_dir: Path, timeout: float) -> Iterator[tuple[str, int]]:
    """``aura-sync node`` on ``data_dir`` in its own process, set up as :func:`_node` sets up
    its nodes; yields its bootstrap address and pid once it is ready, stops it with SIGTERM."""
    config = data_dir.with_name(data_dir.name + ".toml")
    config.write_text(
        f"sync_interval = {SYNC_INTERVAL}\nrequest_timeout = 5.0\nshutdown_timeout = 5.0\n",
        encoding="utf-8",
    )
    ready = data_dir.with_name(data_dir.name + ".ready")
    log = data_dir.with_name(data_dir.name + ".log")
    argv = ["node", "--config", str(config), "--data-dir", str(data_dir)]
    argv += ["--listen", "127.0.0.1:0", "--ready-file", str(ready), "--log-level", "WARNING"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", _BOOT, *argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:

        def is_ready() -> bool:
            if proc.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"node A exited with {proc.returncode}:\n{tail}")
            return ready.exists()

        _wait(is_ready, timeout, "node A's process to be ready")
        doc = json.loads(ready.read_text(encoding="utf-8"))
        yield f"{doc['device_id']}@{doc['listen']}", proc.pid
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            raise RuntimeError("node A's process did not stop within 30 s of SIGTERM") from None
        if code != 0:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"node A's process exited with {code}:\n{tail}")


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` used so far; NaN without ``/proc``."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _signed_ops(journal: Any, ids: list[bytes]) -> list[Any]:
    """The ops ``ids`` of ``journal``, in an order where every batch of 128 is authenticated."""
    order = journal.push_order(ids)
    return [op for i in range(0, len(order), 128) for op in journal.get_many(order[i : i + 128])]


def _baseline(path: Path, ops: list[Any], batch: int = INSERT_BATCH) -> float:
    """Seconds to verify and insert ``ops`` into a fresh journal at ``path``, ``batch`` per
    commit."""
    from aura_sync.identity import NodeIdentity
    from aura_sync.protocols.journal import Journal

    target = Journal.open(path, identity=NodeIdentity.generate())
    try:
        add = target.add_many
        with _gc_paused():
            t0 = time.perf_counter()
            for i in range(0, len(ops), batch):
                add(ops[i : i + batch])
            dt = time.perf_counter() - t0
        if len(target) != len(ops):
            raise RuntimeError(f"baseline journal holds {len(target)}, want {len(ops)}")
    finally:
        target.close()
    return max(dt, 1e-9)


def _holds(node: Any, n: int) -> bool:
    return len(node.journal) >= n


def _new_ids(node: Any, before: int) -> list[bytes]:
    """Ids of the ops ``node`` authored after its first ``before`` own ops."""
    journal = node.journal
    return [op.op_id for op in journal.ops_by(journal.author, before - 1)]


def _pair(ctx: Context, root: Path, n: int) -> tuple[Stats, Stats]:
    """Per repetition: a copy of node A holding ``n`` ops, and a fresh node B syncing them."""
    template = root / "a-template"
    a = _node(template)
    try:
        payloads = _payloads("s", n)
        for i in range(0, n, APPEND_CHUNK):
            a.append(payloads[i : i + APPEND_CHUNK], timeout=30.0)
        ops = _signed_ops(a.journal, _new_ids(a, 0))
    finally:
        a.stop()
    sync_s: list[float] = []
    base_s: list[float] = []
    grouped_s: list[float] = []
    cpu_b: list[float] = []  # CPU seconds of this process (B) and of A's over the clock
    cpu_a: list[float] = []
    timeout = max(60.0, n / 200)
    for rep in range(ctx.size.reps + 1):  # repetition 0 is the warm-up
        shutil.copytree(template, root / f"a{rep}")
        with _node_process(root / f"a{rep}", timeout) as (a_address, a_pid):
            b = None
            try:
                with _gc_paused():
                    b = _node(root / f"b{rep}", a_address)
                    t0, a0, b0 = time.perf_counter(), _cpu_s(a_pid), time.process_time()
                    _wait(functools.partial(_holds, b, n), timeout, f"node B to hold {n} ops")
                    s = max(time.perf_counter() - t0, 1e-9)
                    cpu = (time.process_time() - b0, _cpu_s(a_pid) - a0)
            finally:
                if b is not None:
                    b.stop()
        base = _baseline(root / f"baseline-{rep}.journal", ops)
        grouped = _baseline(root / f"grouped-{rep}.journal", ops, GROUPED_BATCH)
        if rep:
            sync_s.append(s)
            base_s.append(base)
            grouped_s.append(grouped)
            cpu_b.append(cpu[0])
            cpu_a.append(cpu[1])
        shutil.rmtree(root / f"a{rep}")
        shutil.rmtree(root / f"b{rep}")
    measured, baseline = _stats("2 nodes, loopback TLS", sync_s, base_s, n)
    baseline.extra["grouped_ops_per_s"] = n / statistics.median(grouped_s)
    measured.extra["b_cpu_s"] = float(statistics.median(cpu_b))
    measured.extra["a_cpu_s"] = float(statistics.median(cpu_a))
    return measured, baseline


def _converge(ctx: Context, root: Path, k: int, n: int) -> tuple[Stats, Stats]:
    sync_s: list[float] = []
    base_s: list[float] = []
    cluster = _Cluster(root, k)
    try:
        nodes = cluster.nodes
        timeout = max(60.0, n / 100)
        cluster.append(nodes[-1], _payloads("hello", 1))  # peer exchange: everyone meets
        _wait(lambda: cluster.converged(1), timeout, "the nodes to meet")
        shares = [n // k + (1 if i < n % k else 0) for i in range(k)]
        for rep in range(ctx.size.reps + 1):
            total = len(nodes[0].journal) + n
            before = [node.journal.own_ops for node in nodes]
            with _gc_paused():
                for i, (node, share) in enumerate(zip(nodes, shares, strict=True)):
                    cluster.append(node, _payloads(f"c{rep}-{i}", share))
                t0 = time.perf_counter()
                _wait(
                    functools.partial(cluster.converged, total), timeout, f"{k} nodes to converge"
                )
                s = max(time.perf_counter() - t0, 1e-9)
            ids = [i for node, b in zip(nodes, before, strict=True) for i in _new_ids(node, b)]
            base = _baseline(root / f"baseline-{rep}.journal", _signed_ops(nodes[0].journal, ids))
            if rep:
                sync_s.append(s)
                base_s.append(base)
    finally:
        cluster.stop()
    return _stats(f"{k} nodes converge", sync_s, base_s, n)


def _stats(label: str, sync_s: list[float], base_s: list[float], n: int) -> tuple[Stats, Stats]:
    measured = Stats(label, "ops/s", [n / s for s in sync_s], n=n)
    baseline = Stats("Journal.add_many of the same ops", "ops/s", [n / s for s in base_s], n=n)
    measured.extra["seconds_median"] = float(statistics.median(sync_s))
    measured.extra["seconds_max"] = float(max(sync_s))
    baseline.extra["seconds_median"] = float(statistics.median(base_s))
    return measured, baseline


def run(ctx: Context) -> None:
    """Both rows, unpinned (clean skips if the node runtime is missing)."""
    n_pair, k, n_conv = _SIZES.get(ctx.size.name, _SIZES["quick"])
    names = (
        PAIR_ROW.format(n=n_pair),
        PAIR_ABS_ROW.format(n=n_pair),
        CONVERGE_ROW.format(k=k, n=n_conv),
    )
    node, why = optional_module("aura_sync.node.node", "Node")
    if node is None:
        for name in names:
            ctx.unavailable(name, why)
        return
    quiet = logging.getLogger("aura_sync")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with tempfile.TemporaryDirectory(prefix="aura-bench-sync-") as tmp:
            try:
                m, b = _pair(ctx, Path(tmp) / "pair", n_pair)
                note = (
                    f"A in its own process (aura-sync node), B in this one; B started to all "
                    f"{n_pair:,} on B, median {m.extra['seconds_median']:.3g} s (CPU: B "
                    f"{m.extra['b_cpu_s']:.3g} s, A {m.extra['a_cpu_s']:.3g} s); "
                    f"sync_interval {SYNC_INTERVAL:g} s; baseline: batches of {INSERT_BATCH} "
                    f"(in batches of {GROUPED_BATCH}: "
                    f"{b.extra['grouped_ops_per_s'] / 1e3:.1f}k ops/s, ratio "
                    f"{m.median / b.extra['grouped_ops_per_s']:.2f}x)"
                )
                ctx.compare(names[0], m, b, target=Target(">=", 0.9), pinned=False, note=note)
                ctx.compare(
                    names[1],
                    m,
                    b,
                    target=Target(">=", PAIR_OPS_PER_S, on="median"),
                    pinned=False,
                    note=note,
                )
            except Exception as exc:
                ctx.error(names[0], exc)
            try:
                m, b = _converge(ctx, Path(tmp) / "converge", k, n_conv)
                note = (
                    f"last append to equal digests on all {k}, median "
                    f"{m.extra['seconds_median']:.3g} s, max {m.extra['seconds_max']:.3g} s; "
                    f"writes spread over the {k} nodes"
                )
                target = Target("<=", CONVERGE_S, on="seconds_median")
                ctx.compare(names[2], m, b, target=target, pinned=False, note=note)
            except Exception as exc:
                ctx.error(names[2], exc)
    finally:
        quiet.setLevel(level)
