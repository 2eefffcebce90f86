"""Helpers shared by the node tests: building nodes, waiting on conditions, raw TLS peers."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from _tls_helpers import tls_retry
from OpenSSL import SSL

from aura_sync.actors._mailbox import WAKE
from aura_sync.actors.address import ActorAddress
from aura_sync.effects import ManualClock
from aura_sync.node.config import load_config
from aura_sync.node.node import Node

_TICK = threading.Event()


def wait_until(predicate: Callable[[], bool], timeout: float, what: str = "condition") -> None:
    """Poll ``predicate`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        _TICK.wait(0.02)


def make_node(data_dir: Path, **overrides: Any) -> Node:
    """A started TCP node on 127.0.0.1 with a fast sync interval."""
    settings: dict[str, Any] = {
        "data_dir": str(data_dir),
        "listen": "127.0.0.1:0",
        "sync_interval": 0.1,
        "request_timeout": 2.0,
        "shutdown_timeout": 5.0,
    }
    settings.update(overrides)
    return Node(load_config(None, settings)).start()


def digests(nodes: Iterable[Node]) -> set[bytes]:
    return {n.journal.digest().fingerprint for n in nodes}


def converged(nodes: list[Node], total: int) -> bool:
    return len(digests(nodes)) == 1 and all(len(n.journal) == total for n in nodes)


def stop_all(nodes: Iterable[Node]) -> None:
    for node in nodes:
        node.stop()


class Cluster:
    """Nodes started for one test, stopped at the end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.nodes: list[Node] = []

    def add(self, name: str, **overrides: Any) -> Node:
        node = make_node(self.root / name, **overrides)
        self.nodes.append(node)
        return node

    def close(self) -> None:
        stop_all(reversed(self.nodes))


def cluster(root: Path) -> Iterator[Cluster]:
    c = Cluster(root)
    try:
        yield c
    finally:
        c.close()


# --- a raw TLS peer (to send garbage) -----------------------------------------------------


def send_raw(sock: socket.socket, conn: SSL.Connection, data: bytes) -> None:
    tls_retry(sock, lambda: conn.sendall(data))


def read_until_closed(sock: socket.socket, conn: SSL.Connection, timeout: float = 5.0) -> bytes:
    """Read until the node closes the connection; fail after ``timeout`` seconds."""
    data = bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = tls_retry(sock, lambda: conn.recv(65536), deadline - time.monotonic())
        except (SSL.ZeroReturnError, SSL.SysCallError, SSL.Error, OSError):
            return bytes(data)
        if not chunk:
            return bytes(data)
        data += chunk
    raise AssertionError("the node did not close the connection")


# --- nodes on a ManualClock -----------------------------------------------------------------


class VirtualTime:
    """Drives nodes on a ManualClock: time advances in steps, and between steps the
    actors in ``addresses`` handle everything sent to them (see :meth:`settle`)."""

    def __init__(self, clock: ManualClock, step: float = 0.05) -> None:
        self.clock = clock
        self.step = step
        self.addresses: list[ActorAddress] = []

    def settle(self, timeout: float = 30.0) -> None:
        """Wait until the actors are quiet: two rounds in a row in which every mailbox
        was empty before and after a barrier ask to each actor (a WAKE is answered once
        every message queued before it was handled; an empty mailbox alone does not say
        that its actor finished the message it took, and on a loaded machine stepping
        on early lets timers such as heartbeats bunch up). Fails after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        clean = 0
        while clean < 2:
            if time.monotonic() > deadline:
                busy = {str(a): a.queued() for a in self.addresses if a.queued()}
                raise AssertionError(f"actors not quiet after {timeout} s: {busy}")
            empty = all(a.queued() == 0 for a in self.addresses)
            for address in self.addresses:
                address.ask(WAKE, timeout=max(0.1, deadline - time.monotonic()))
            empty = empty and all(a.queued() == 0 for a in self.addresses)
            clean = clean + 1 if empty else 0

    def run(self, seconds: float, until: Callable[[], bool] | None = None) -> bool:
        """Advance up to ``seconds`` of virtual time, stopping early once ``until()`` holds."""
        end = self.clock.now() + seconds
        while self.clock.now() < end:
            self.settle()
            if until is not None and until():
                return True
            self.clock.advance(self.step)
        return until() if until is not None else True
