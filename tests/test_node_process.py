"""`aura-sync node` as a real process: SIGKILL and restart from the data directory,
SIGTERM for a clean stop, and a non-zero exit when the root supervisor gives up."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _node_helpers import Cluster, cluster, wait_until

from aura_sync.errors import AuraError
from aura_sync.messages.sync import AppendOps, OpsAppended
from aura_sync.node.control_client import ControlClient
from aura_sync.node.wire import CrashActor

BOOT = "import sys; from aura_sync.cli import main; sys.exit(main(sys.argv[1:]))"


class NodeProcess:
    def __init__(self, data_dir: Path, *args: str) -> None:
        self.data_dir = data_dir
        self.args = list(args)
        self.proc: subprocess.Popen[bytes] | None = None
        self.metrics = ""
        self.listen = ""

    @property
    def ready(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}.ready"

    def start(self, listen: str = "127.0.0.1:0") -> None:
        self.ready.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                BOOT,
                "node",
                "--data-dir",
                str(self.data_dir),
                "--listen",
                listen,
                "--metrics-port",
                "0",
                "--ready-file",
                str(self.ready),
                "--fault-injection",
                "--sync-interval",
                "0.1",
                "--log-level",
                "WARNING",
                *self.args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        wait_until(self._is_ready, 30, "the node process to be ready")

    def _is_ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            out = self.proc.stdout.read().decode() if self.proc.stdout else ""
            raise AssertionError(f"node exited with {self.proc.returncode}:\n{out}")
        try:
            doc = json.loads(self.ready.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return False
        self.metrics, self.listen = doc["metrics"], doc["listen"]
        return True

    def health(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://{self.metrics}/health", timeout=5) as resp:
            doc: dict[str, Any] = json.loads(resp.read())
            return doc

    def append(self, count: int) -> OpsAppended:
        """``count`` ops through the control socket, as ``aura-sync append`` writes them."""
        payloads = tuple(b"op %d" % i for i in range(count))
        with ControlClient(self.data_dir) as client:
            return client.call("anti_entropy", AppendOps(payloads), 10.0)

    def crash(self, target: str) -> None:
        with ControlClient(self.data_dir, connect_timeout=1.0) as client:
            client.call("node", CrashActor(target), 5.0)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Cluster]:
    yield from cluster(tmp_path)


def test_killed_node_restarts_from_its_data_dir_catches_up_and_loses_nothing(
    nodes: Cluster, tmp_path: Path
) -> None:
    a = nodes.add("a")
    b = NodeProcess(tmp_path / "b", "--bootstrap", a.bootstrap_address)
    try:
        b.start()
        assert b.append(60).added == 60
        b.kill()  # right after the acknowledgement: maybe nothing was synced yet
        a.append([b"while b was down %d" % i for i in range(40)])
        b.start(b.listen)
        wait_until(
            lambda: b.health()["journal"]["ops"] == 100 and len(a.journal) == 100,
            30,
            "the restarted node to catch up",
        )
        doc = b.health()
        assert doc["journal"]["own_ops"] == 60  # none of its acknowledged ops was lost
        assert doc["journal"]["digest"] == a.journal.digest().fingerprint.hex()
        assert doc["status"] == "ok"
        assert b.proc is not None
        b.proc.send_signal(signal.SIGTERM)
        assert b.proc.wait(15) == 0  # clean stop on SIGTERM
    finally:
        b.close()


def test_sigint_stops_a_connected_node_cleanly_within_its_shutdown_timeout(
    nodes: Cluster, tmp_path: Path
) -> None:
    a = nodes.add("a")
    b = NodeProcess(tmp_path / "b", "--bootstrap", a.bootstrap_address)
    try:
        b.start()
        b.append(5)
        wait_until(lambda: len(a.journal) == 5, 15, "a connection and a sync round")
        assert b.proc is not None
        started = time.monotonic()
        b.proc.send_signal(signal.SIGINT)
        assert b.proc.wait(15) == 0  # clean stop on SIGINT, not a KeyboardInterrupt
        # the default shutdown_timeout is 5 s; the rest is the interpreter exiting
        assert time.monotonic() - started < 5.0 + 2.0
    finally:
        b.close()


def test_node_exits_non_zero_when_its_root_supervisor_gives_up(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "n")
    try:
        node.start()
        assert node.proc is not None
        # Crash every incarnation of the protocol actor, faster than any intensity allows,
        # until the root gives up: crashes queued when its supervisor gives up are dropped
        # with its mailbox, so a fixed burst of them may not reach the root's limit.
        deadline = time.monotonic() + 30
        while node.proc.poll() is None:
            assert time.monotonic() < deadline, "the root supervisor never gave up"
            with contextlib.suppress(OSError, AuraError):  # restarting, or already stopping
                node.crash("anti_entropy")
        assert node.proc.wait(30) == 1
    finally:
        node.close()
