"""The README's shell sessions that start nodes run as written, in a temporary directory.

``.venv/bin/aura-sync`` there runs this interpreter's aura-sync; the nodes
the blocks start in the background are stopped by the blocks' own
``aura-sync stop`` (and killed with their process group if a block fails).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = [
    block
    for block in re.findall(r"```sh\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    if "aura-sync node" in block
]
BOOT = "import sys; from aura_sync.cli import main; sys.exit(main(sys.argv[1:]))"
WRAPPER = f'#!/bin/sh\nexec {sys.executable} -c "{BOOT}" "$@"\n'


def test_readme_has_node_sessions() -> None:
    assert len(BLOCKS) >= 2, "the Quickstart and 'Running nodes by hand' start nodes"


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_shell_block_runs_verbatim(index: int, tmp_path: Path) -> None:
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "aura-sync").write_text(WRAPPER)
    (bin_dir / "aura-sync").chmod(0o755)
    script = "set -eu\n" + BLOCKS[index] + "wait\n"  # the nodes exit after `aura-sync stop`
    proc = subprocess.Popen(
        ["bash", "-c", script],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"README block {index + 1} did not finish in 120 s:\n{out}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, f"README block {index + 1} failed:\n{out}"
    assert "stopped" in out
