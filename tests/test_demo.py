"""`aura-sync demo`: a 3-node cluster on loopback converges through faults; divergence fails."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console

from aura_sync.node.demo import DemoOptions
from aura_sync.node.demo import run_demo as run_demo_in_process

BOOT = "import sys; from aura_sync.cli import main; sys.exit(main(sys.argv[1:]))"


def run_demo(*args: str, timeout: float) -> tuple[int, str, float]:
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", BOOT, "demo", "--no-live", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return proc.returncode, proc.stdout + proc.stderr, time.monotonic() - started


def run_demo_streaming(*args: str, timeout: float) -> tuple[int, list[tuple[float, str]], float]:
    """Like run_demo, recording when each output line arrived (seconds after the start)."""
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-c", BOOT, "demo", "--no-live", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[tuple[float, str]] = []
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            lines.append((time.monotonic() - started, line.rstrip("\n")))
            if time.monotonic() - started > timeout:
                break
        code = proc.wait(max(1.0, timeout - (time.monotonic() - started)))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return code, lines, time.monotonic() - started


def test_demo_three_nodes_converges_through_faults_in_under_a_minute() -> None:
    code, lines, elapsed = run_demo_streaming(
        "--nodes", "3", "--ops", "200", "--timeout", "55", timeout=90
    )
    out = "\n".join(text for _, text in lines)
    assert code == 0, out
    # --no-live reports as the run goes: events and progress lines long before the end
    first_event = next(t for t, text in lines if "nodes up, bootstrapping" in text)
    assert elapsed - first_event > 1.0, out
    assert any("nodes hold the same journal" in text for _, text in lines), out
    summary_at = next(t for t, text in lines if "aura-sync demo summary" in text)
    assert first_event < summary_at
    rows = [text for t, text in lines if t >= summary_at and text.lstrip().startswith("node-")]
    assert len(rows) == 3 and all("…" not in row and len(row) <= 80 for row in rows), out
    assert all(row.rstrip().endswith("same") for row in rows), out  # the convergence mark
    assert elapsed < 60, out
    assert "CONVERGED: 200 ops on 3 nodes" in out
    assert "lost ops: 0" in out
    assert "supervisor restarted pool" in out  # the injected actor crash was recovered
    assert "killed node-2 with SIGKILL" in out
    assert "own ops kept" in out and "LOST" not in out
    assert "every node stopped cleanly" in out


def test_demo_with_forced_divergence_exits_non_zero() -> None:
    code, out, elapsed = run_demo(
        "--nodes", "3", "--ops", "60", "--force-divergence", "--timeout", "55", timeout=90
    )
    assert code != 0, out
    assert "FAILED" in out
    assert "diverge" in out
    assert elapsed < 60, out


def test_demo_refuses_a_data_dir_left_by_an_earlier_run(tmp_path: Path) -> None:
    # A journal from an earlier run would make the final op count wrong and the
    # verdict "diverged" although the nodes agree: refuse up front, start nothing.
    (tmp_path / "node-1").mkdir()
    (tmp_path / "node-1" / "journal.sqlite3").write_bytes(b"")
    out = io.StringIO()
    result = run_demo_in_process(
        DemoOptions(nodes=2, ops=10, data_dir=tmp_path, live=False),
        Console(file=out, width=200),
    )
    assert not result.ok
    assert result.error is not None and "node-1" in result.error
    assert "already holds a journal" in result.error
    assert not (tmp_path / "node-0").exists()  # no identity, no process: nothing started
