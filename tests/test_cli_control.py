"""The control commands end to end on two real node processes (append, log, peers, children,
crash, stop)."""

from __future__ import annotations

import io
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


# --- `append -` in this process: batching, the line limit, what is acknowledged ----------------


def test_stdin_batches_split_lines_within_the_count_and_the_frame() -> None:
    from aura_sync.cli_control import _BATCH_BYTES, _stdin_batches
    from aura_sync.node.control_client import MAX_CONTROL_FRAME

    assert _BATCH_BYTES <= MAX_CONTROL_FRAME // 2
    lines = [b"x" * (i % 50) for i in range(2500)]
    stream = io.BytesIO(b"\n".join(lines) + b"\r\nlast")
    batches = list(_stdin_batches(stream, 1000, 4096))
    assert [len(b) for b in batches] == [1000, 1000, 501]
    assert [p for b in batches for p in b] == [*lines, b"last"]  # CRLF: the CR is dropped
    big = io.BytesIO(b"".join(b"y" * 4096 + b"\n" for _ in range(1200)))
    sizes = [len(b) for b in _stdin_batches(big, 8192, 4096)]
    assert sum(sizes) == 1200 and max(sizes) * (4096 + 5) <= _BATCH_BYTES


def test_a_too_long_line_stops_the_input_after_the_lines_before_it() -> None:
    from aura_sync.cli_control import _LineTooLong, _stdin_batches

    stream = io.BytesIO(b"a\nb\n" + b"z" * 5000 + b"\nc\n")
    got: list[tuple[bytes, ...]] = []
    with pytest.raises(_LineTooLong) as caught:
        for batch in _stdin_batches(stream, 1000, 4096):
            got.append(batch)
    assert got == [(b"a", b"b")] and (caught.value.number, caught.value.size) == (3, 5000)


def test_append_reports_exactly_the_committed_ops(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from aura_sync.cli import cli
    from aura_sync.node.config import load_config
    from aura_sync.node.node import Node

    config = load_config(None, {"data_dir": str(tmp_path / "n"), "listen": "127.0.0.1:0"})
    node = Node(config).start()
    try:
        lines = b"".join(b"op %d\n" % i for i in range(20_000))
        run = CliRunner().invoke(cli, ["append", f"--data-dir={config.data_dir}", "-"], input=lines)
        assert run.exit_code == 0 and "appended 20000 ops (journal: 20000 ops)" in run.output
        bad = b"".join(b"more %d\n" % i for i in range(9000)) + b"w" * 4097 + b"\nnever\n"
        run = CliRunner().invoke(cli, ["append", f"--data-dir={config.data_dir}", "-"], input=bad)
        assert run.exit_code == 1 and "appended 9000 ops" in run.output
        assert "line 9001 has 4097 bytes" in run.output
        assert len(node.journal) == 29_000
        page = node.read(after=28_990, limit=100)
        assert [e.payload for e in page.entries][-1] == b"more 8999"
    finally:
        node.stop()
