"""Shared helpers of the infrastructure-actor tests (fakes, waits, the thread-leak check).

Imported by ``tests/test_actors_*.py``, ``tests/test_chaos.py`` and
``tests/test_infrastructure_supervisor.py``; it holds no tests of its own
except a self-check of the fakes.  No helper sleeps to wait: every wait is on
a condition with a timeout.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from aura_sync.ids import DeviceId

ACTOR_THREAD_PREFIXES = ("aura-actor:",)


def peer(n: int) -> DeviceId:
    """The test peer number ``n``."""
    return DeviceId.from_int(n)


class FakeConnection:
    """A pool connection: healthy until told otherwise; records closes."""

    def __init__(self, peer_id: DeviceId, number: int) -> None:
        self.peer_id = peer_id
        self.number = number
        self.session_id = f"session-{number}"
        self.healthy = True
        self.close_calls = 0

    @property
    def closed(self) -> bool:
        return self.close_calls > 0

    def is_healthy(self) -> bool:
        return self.healthy and not self.closed

    def close(self) -> None:
        self.close_calls += 1

    def __repr__(self) -> str:
        return f"FakeConnection({self.number}, closed={self.closed})"


class FakeConnector:
    """A non-blocking connector that records every connection it opened (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.opened: list[FakeConnection] = []
        self.fail_next = 0

    def connect(self, peer_id: DeviceId) -> FakeConnection:
        with self._lock:
            if self.fail_next:
                self.fail_next -= 1
                raise ConnectionRefusedError(f"fake refusal for {peer_id}")
            connection = FakeConnection(peer_id, len(self.opened) + 1)
            self.opened.append(connection)
            return connection

    def open_connections(self) -> list[FakeConnection]:
        with self._lock:
            return [c for c in self.opened if not c.closed]


def wait_until(
    predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition"
) -> None:
    """Block until ``predicate()`` is true (checked on a short condition wait), or fail."""
    deadline = time.monotonic() + timeout
    event = threading.Event()
    while not predicate():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        event.wait(min(0.002, remaining))


def actor_threads() -> list[threading.Thread]:
    """Live actor threads (the runtime names them ``aura-actor:<name>#<incarnation>``)."""
    return [
        t
        for t in threading.enumerate()
        if t.name.startswith(ACTOR_THREAD_PREFIXES) and t.is_alive()
    ]


@pytest.fixture
def no_leftover_threads() -> Iterator[None]:
    """Fail the test if actor threads it started are still alive afterwards (5 s grace)."""
    before = set(actor_threads())
    yield
    wait_until(
        lambda: not (set(actor_threads()) - before),
        timeout=5.0,
        what="actor threads to end",
    )


def test_fake_connector_records_and_fails_on_demand() -> None:
    connector = FakeConnector()
    first = connector.connect(peer(1))
    connector.fail_next = 1
    with pytest.raises(ConnectionRefusedError):
        connector.connect(peer(1))
    first.close()
    assert first.closed and not first.is_healthy()
    assert connector.opened == [first] and connector.open_connections() == []
