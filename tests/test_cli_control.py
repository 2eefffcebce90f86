"""The control commands end to end on two real node processes (append, log, peers, children,
crash, stop)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from _node_helpers import wait_until

BOOT = "import sys; from aura_sync.cli import main; sys.exit(main(sys.argv[1:]))"


def _cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BOOT, *args],
        check=False,
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _start(data_dir: Path, *args: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-c", BOOT, "node", "--data-dir", str(data_dir), "--listen",
         "127.0.0.1:0", "--ready-file", str(data_dir.with_suffix(".ready")), "--sync-interval",
         "0.1", "--log-level", "WARNING", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_until(lambda: data_dir.with_suffix(".ready").exists(), 30, f"{data_dir.name} ready")
    return proc


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_two_node_processes_driven_by_the_cli(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    procs.append(_start(a_dir, "--fault-injection"))
    ready = json.loads(a_dir.with_suffix(".ready").read_text())
    procs.append(_start(b_dir, "--bootstrap", f"{ready['device_id']}@{ready['listen']}"))
    a, b = (f"--data-dir={a_dir}",), (f"--data-dir={b_dir}",)

    out = _cli("append", *a, "hello", "world")
    assert out.returncode == 0, out.stderr
    assert "appended 2 ops" in out.stdout
    out = _cli("append", *b, "-", stdin=b"".join(b"line %d\n" % i for i in range(3000)))
    assert out.returncode == 0 and "appended 3000 ops" in out.stdout, out.stderr

    def b_has_all() -> bool:
        lines = _cli("log", *b).stdout.splitlines()
        return len(lines) == 3002

    wait_until(b_has_all, 60, "node b to hold a's ops")

    lines = _cli("log", *b, "--json").stdout.splitlines()
    docs = [json.loads(line) for line in lines]
    assert [d["cursor"] for d in docs] == sorted({d["cursor"] for d in docs})
    assert {"hello", "world"} <= {d["payload"] for d in docs}
    tail = _cli("log", *b, "--after", str(docs[-2]["cursor"])).stdout.splitlines()
    assert len(tail) == 1 and tail[0].split("\t")[0] == str(docs[-1]["cursor"])

    follow = subprocess.Popen(
        [sys.executable, "-c", BOOT, "log", *a, "--follow", "--after", "0"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines_seen: list[str] = []
    reader = threading.Thread(target=lambda: lines_seen.extend(follow.stdout or ()), daemon=True)
    reader.start()
    try:
        assert _cli("append", *b, "late").returncode == 0  # synced to a, then followed there
        wait_until(lambda: any(x.endswith("\tlate\n") for x in lines_seen), 60, "--follow")
        assert len(lines_seen) == 3003
    finally:
        follow.kill()
        follow.wait(10)

    peers = _cli("peers", *b)
    assert peers.returncode == 0 and ready["device_id"] in peers.stdout
    children = _cli("children", *a).stdout
    assert "anti_entropy\trunning\trestarts=0" in children
    crashed = _cli("crash", *a, "pool")
    assert crashed.returncode == 0, crashed.stderr
    wait_until(lambda: "pool\trunning\trestarts=1" in _cli("children", *a).stdout, 20, "restart")
    refused = _cli("crash", *b, "pool")
    assert refused.returncode == 1 and "fault injection is disabled" in refused.stderr

    for data_dir, proc in zip((b_dir, a_dir), reversed(procs), strict=True):
        out = _cli("stop", f"--data-dir={data_dir}")
        assert out.returncode == 0 and "stopped" in out.stdout, out.stderr
        assert proc.wait(30) == 0
    gone = _cli("log", *a)
    assert gone.returncode == 1 and "no node answers" in gone.stderr
