"""`aura-sync demo`: a 3-node cluster on loopback converges through faults; divergence fails."""

from __future__ import annotations

import subprocess
import sys
import time

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


def test_demo_three_nodes_converges_through_faults_in_under_a_minute() -> None:
    code, out, elapsed = run_demo("--nodes", "3", "--ops", "200", "--timeout", "55", timeout=90)
    assert code == 0, out
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
