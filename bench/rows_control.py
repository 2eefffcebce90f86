"""Row group 11, control socket: ``aura-sync append -`` and a control-socket ask.

One :class:`~aura_sync.node.node.Node` runs in this process (TCP on
loopback, a temporary data directory); clients reach it through
``control.sock``.

- **append -**: per repetition, ``aura-sync append --data-dir D -`` runs as
  a new process fed N lines on stdin (one op per line, batches of up to
  ``MAX_APPEND`` lines, 4 requests in flight, one journal transaction per
  batch); the clock covers the whole process, start-up included (tiny size:
  the command runs in this process, so the smoke test stays short).
  Baseline: ``Journal.append_many`` of the same N lines (batches of
  ``MAX_APPEND``) into a journal in a temporary file, in this process,
  repetitions interleaved: the ratio is what the process, the socket and
  the actor add to the journal's own cost.  The note gives the share of the
  command's wall time the node spent inside ``Journal.append_many`` (the
  rest: process start-up, reading stdin, the socket, the actor).
  N: 200 (tiny), 100 000 (quick and full, as the issue states).  Target:
  >= 50k ops/s (the issue's goal, on the median).
- **ask round trip**: ``ControlClient.call("rate_limiter", GetPeerRate(p))``
  against ``address.call(GetPeerRate(p))`` of the same actor in-process
  (calls per second; ratio < 1 is the cost of the socket, the codec and the
  server's event loop).
"""

from __future__ import annotations

import io
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._harness import Context, Stats, Target, optional_module

APPEND_ROW = "`aura-sync append -` of {n:,} lines vs Journal.append_many in-process"
ASK_ROW = "control-socket ask round trip vs in-process ask (GetPeerRate)"
_LINES = {"tiny": 200, "quick": 100_000, "full": 100_000}
_BOOT = "import sys; from aura_sync.cli import main; sys.exit(main(sys.argv[1:]))"


def run(ctx: Context) -> None:
    """Both rows (clean skips if the node runtime is missing)."""
    module, why = optional_module("aura_sync.node.control", "ControlClient")
    n = _LINES.get(ctx.size.name, _LINES["quick"])
    if module is None:
        ctx.unavailable(APPEND_ROW.format(n=n), why)
        ctx.unavailable(ASK_ROW, why)
        return
    from aura_sync.node.config import load_config
    from aura_sync.node.node import Node

    quiet = logging.getLogger("aura_sync")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config = load_config(None, {"data_dir": str(root / "node"), "listen": "127.0.0.1:0"})
        node = Node(config).start()
        try:
            _append_row(ctx, root, node, n)
            _ask_row(ctx, node)
        finally:
            node.stop()
            quiet.setLevel(level)


def _append_row(ctx: Context, root: Path, node: object, n: int) -> None:
    from aura_sync.identity import NodeIdentity
    from aura_sync.messages.sync import MAX_APPEND
    from aura_sync.protocols.journal import Journal

    data_dir = node.config.data_dir  # type: ignore[attr-defined]
    ours: list[float] = []
    base: list[float] = []
    shares: list[float] = []
    inside = _time_appends(node.journal)  # type: ignore[attr-defined]
    identity = NodeIdentity.load_or_create(root / "baseline")
    with Journal.open(root / "baseline" / "journal.sqlite3", identity=identity) as journal:
        for rep in range(ctx.size.reps + 1):  # the first is the warm-up
            lines = [f"line {rep} {i}".encode() for i in range(n)]
            stdin = b"\n".join(lines) + b"\n"
            inside[0] = 0.0
            started = time.perf_counter()
            said = _append(data_dir, stdin, in_process=ctx.size.name == "tiny")
            elapsed = time.perf_counter() - started
            shares.append(inside[0] / elapsed)
            if f"appended {n} ops".encode() not in said:
                raise RuntimeError(f"aura-sync append said {said!r}")
            payloads = [b"b" + line for line in lines]
            started = time.perf_counter()
            for at in range(0, n, MAX_APPEND):
                journal.append_many(payloads[at : at + MAX_APPEND])
            baseline = time.perf_counter() - started
            if rep:
                ours.append(n / elapsed)
                base.append(n / baseline)
    share = f"{statistics.median(shares[1:]):.0%}"
    ctx.compare(
        APPEND_ROW.format(n=n),
        Stats("aura-sync append -", "ops/s", ours, n=n),
        Stats("Journal.append_many in-process", "ops/s", base, n=n),
        target=Target(">=", 50_000, on="median"),
        note=(
            "the command in this process (tiny size: no process start-up)"
            if ctx.size.name == "tiny"
            else "the whole CLI process, start-up included; the node in the bench process"
        )
        + f"; {share} of it inside the node's Journal.append_many",
    )


def _time_appends(journal: Any) -> list[float]:
    """Time the node's ``journal.append_many`` calls: seconds summed into the cell returned."""
    cell = [0.0]
    original = journal.append_many

    def timed(payloads: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(payloads)
        finally:
            cell[0] += time.perf_counter() - started

    journal.append_many = timed  # this journal object only (the node's, for this run)
    return cell


def _append(data_dir: Path, stdin: bytes, *, in_process: bool) -> bytes:
    """Run ``aura-sync append --data-dir D -`` on ``stdin``; what it printed."""
    argv = ["append", "--data-dir", str(data_dir), "-"]
    if not in_process:
        out = subprocess.run(
            [sys.executable, "-c", _BOOT, *argv], input=stdin, capture_output=True, check=True
        )
        return out.stdout
    from aura_sync.cli import main

    saved_in, saved_out = sys.stdin, sys.stdout
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
    sys.stdout = buffer = io.StringIO()
    try:
        main(argv)
    finally:
        sys.stdin, sys.stdout = saved_in, saved_out
    return buffer.getvalue().encode()


def _ask_row(ctx: Context, node: object) -> None:
    from aura_sync.messages.rate_limit import GetPeerRate
    from aura_sync.node.control import ControlClient

    request = GetPeerRate(node.device_id)  # type: ignore[attr-defined]
    address = node.address_of("rate_limiter")  # type: ignore[attr-defined]
    with ControlClient(node.config.data_dir) as client:  # type: ignore[attr-defined]
        assert client.call("rate_limiter", request, 5.0) == address.call(request, 5.0)
        remote = ctx.latency("ControlClient.call over control.sock", lambda: client.call(
            "rate_limiter", request, 5.0))  # fmt: skip
        local = ctx.latency("ActorAddress.call in-process", lambda: address.call(request, 5.0))
    ctx.compare(ASK_ROW, remote, local, note="the same request to the same actor, same run")
