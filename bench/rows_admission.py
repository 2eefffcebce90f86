"""Row group 10, inbound admission: what serving a heavy request costs, and what admission
costs honest sync.

- serving path: a 64-range ``DigestRequest`` of near-full ranges (the heaviest
  digest request the bounds allow) answered as the anti-entropy actor does
  (priced by ``request_cost``, bounds-checked, answered from the journal,
  the reply encoded) on a journal of 1M ops (2k tiny; the journal group's
  1M-op journal, copied), against
  ``Journal.digests`` of the same ranges alone; target: <= 5 ms a request;
- honest sync: two TCP+TLS nodes on loopback, a fresh node pulling N ops
  from one that holds them (20k full, 5k quick, 300 tiny), ops/s from start
  to convergence, with admission on (the node's defaults) against off
  (``[defence] enabled = false``), sides interleaved; target: >= 0.9x.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._harness import Context, Stats, Target

_JOURNAL_OPS = {"tiny": 2_000, "quick": 1_000_000, "full": 1_000_000}
_SYNC_OPS = {"tiny": 300, "quick": 5_000, "full": 20_000}
_PER_SAMPLE = {"tiny": 5, "quick": 20, "full": 50}


def _serving_rows(ctx: Context, root: Path) -> None:
    from aura_sync.messages import codec
    from aura_sync.messages.sync import MAX_RANGES, DigestReply, DigestRequest, IdRange
    from aura_sync.protocols.admission import request_cost
    from aura_sync.protocols.journal import Journal
    from bench.rows_journal import _identity, filled

    n = _JOURNAL_OPS.get(ctx.size.name, _JOURNAL_OPS["quick"])
    path = root / "serve.db"
    filled(n, path)
    journal = Journal.open(path, identity=_identity())
    try:
        ranges = tuple(
            IdRange(bytes([i]) + os.urandom(31), b"\xff" * 31 + bytes([i]))
            for i in range(MAX_RANGES)
        )
        request = DigestRequest(ranges)
        k = _PER_SAMPLE.get(ctx.size.name, 20)

        def serve() -> None:
            request_cost(request)
            request.check()
            codec.encode(DigestReply(journal.digests(request.ranges)))

        def digests() -> None:
            journal.digests(ranges)

        def sample(fn: Any) -> float:
            t0 = time.perf_counter()
            for _ in range(k):
                fn()
            return (time.perf_counter() - t0) / k * 1e6

        serve()
        digests()
        ours, base = [], []
        for _ in range(ctx.size.reps):
            ours.append(sample(serve))
            base.append(sample(digests))
        ctx.compare(
            f"serving a 64-range DigestRequest, {n:,} ops",
            Stats("price + check + answer + encode", "us/op", ours, n=k),
            Stats("Journal.digests of the ranges alone", "us/op", base, n=k),
            target=Target("<=", 5000.0, on="median"),
            note=f"target: <= 5 ms of actor time a request; it is charged {request_cost(request)} "
            "units",
        )
    finally:
        journal.close()


def _sync_once(root: Path, source: Path, n: int, rep: int, admission: bool) -> float:
    from aura_sync.node.config import load_config
    from aura_sync.node.node import Node

    settings: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "sync_interval": 0.05,
        "shutdown_timeout": 5.0,
        "defence.enabled": admission,
    }
    a = Node(load_config(None, {**settings, "data_dir": str(source)})).start()
    try:
        target = root / f"b-{rep}-{int(admission)}"
        t0 = time.perf_counter()
        b_settings = {**settings, "data_dir": str(target), "bootstrap": [a.bootstrap_address]}
        b = Node(load_config(None, b_settings)).start()
        try:
            deadline = t0 + 120.0
            while len(b.journal) < n:
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"no convergence of {n} ops in 120 s")
                time.sleep(0.005)  # polling another process's progress: no condition to wait on
            return n / (time.perf_counter() - t0)
        finally:
            b.stop()
    finally:
        a.stop()


def _sync_rows(ctx: Context, root: Path) -> None:
    from aura_sync.node.config import load_config
    from aura_sync.node.node import Node

    n = _SYNC_OPS.get(ctx.size.name, _SYNC_OPS["quick"])
    source = root / "a"
    a = Node(load_config(None, {"data_dir": str(source), "listen": "127.0.0.1:0"})).start()
    try:
        for i in range(0, n, 1000):
            a.append([b"op-%d" % j for j in range(i, min(n, i + 1000))], timeout=60.0)
        n = len(a.journal)
    finally:
        a.stop()
    on, off = [], []
    for rep in range(ctx.size.reps):
        on.append(_sync_once(root, source, n, rep, True))
        off.append(_sync_once(root, source, n, rep, False))
    ctx.compare(
        f"honest two-node sync of {n:,} ops, admission on vs off",
        Stats("admission on (node defaults)", "ops/s", on, n=n),
        Stats("admission off", "ops/s", off, n=n),
        target=Target(">=", 0.9),
        note="TCP+TLS on loopback, from start to convergence; target: >= 0.9x",
    )


def run(ctx: Context) -> None:
    """Every row of the group."""
    with tempfile.TemporaryDirectory(prefix="aura-bench-admission-") as tmp:
        root = Path(tmp)
        try:
            _serving_rows(ctx, root)
        except Exception as exc:
            ctx.error("serving a 64-range DigestRequest", exc)
        try:
            _sync_rows(ctx, root)
        except Exception as exc:
            ctx.error("honest two-node sync, admission on vs off", exc)
