"""The README's shell sessions that start nodes run as written, in a temporary directory.

``.venv/bin/aura-sync`` there runs this interpreter's aura-sync; the nodes
the blocks start in the background are stopped by the blocks' own
``aura-sync stop`` (and killed with their process group if a block fails).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
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


PORTS = (7400, 7401, 9100)  # the fixed ports the README's commands use
LOCK = Path("/tmp/aura-sync-readme-ports.lock")  # shared by every checkout on this machine


def _free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@contextlib.contextmanager
def _ports(timeout: float) -> Iterator[None]:
    """Hold the machine-wide lock of the README's ports, and wait until they are free."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    with open(LOCK, "a") as fh:
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.skip("another run holds the README's ports")
                pause.wait(0.2)
        try:
            while not all(_free(p) for p in PORTS):
                if time.monotonic() > deadline:
                    pytest.skip(f"ports {PORTS} are taken by something else on this machine")
                pause.wait(0.2)
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def test_readme_has_node_sessions() -> None:
    assert len(BLOCKS) >= 2, "the Quickstart and 'Running nodes by hand' start nodes"


@pytest.mark.timeout(400)
@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_shell_block_runs_verbatim(index: int, tmp_path: Path) -> None:
    with _ports(200):
        _run_block(index, tmp_path)


def _run_block(index: int, tmp_path: Path) -> None:
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
        out, _ = proc.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"README block {index + 1} did not finish in 150 s:\n{out}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, f"README block {index + 1} failed:\n{out}"
    assert "stopped" in out
