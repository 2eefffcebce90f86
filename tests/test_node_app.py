"""The application API: read by cursor, subscribe across crashes and restarts, asyncio forms."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from _node_helpers import make_node, wait_until

from aura_sync.errors import InvalidArgument, WrongType
from aura_sync.node.config import load_config
from aura_sync.node.node import Node
from aura_sync.node.wire import LogEntry


def _payloads(prefix: str, n: int) -> list[bytes]:
    return [f"{prefix}-{i}".encode() for i in range(n)]


def test_read_is_in_local_order_and_resumes_from_its_cursor(tmp_path: Path) -> None:
    node = make_node(tmp_path / "a")
    try:
        node.append(_payloads("x", 7))
        first = node.read(after=0, limit=3)
        assert [e.payload for e in first.entries] == _payloads("x", 3)
        assert first.cursor == first.entries[-1].cursor
        rest = node.read(after=first.cursor, limit=100)
        assert [e.payload for e in rest.entries] == _payloads("x", 7)[3:]
        cursors = [e.cursor for e in first.entries + rest.entries]
        assert cursors == sorted(set(cursors))
        empty = node.read(after=rest.cursor)
        assert empty.entries == () and empty.cursor == rest.cursor
        with pytest.raises(InvalidArgument, match="after"):
            node.read(after=-1)
        with pytest.raises(InvalidArgument, match="limit"):
            node.read(limit=0)
        with pytest.raises(WrongType, match=r"payloads\[1\]"):
            node.append([b"ok", "text"])  # type: ignore[list-item]
        held = len(node.journal)
        with pytest.raises(InvalidArgument, match=r"payloads\[1\] must be at most 4096"):
            node.append([b"ok", b"x" * 4097])  # refused at the edge: nothing of it stored
        assert len(node.journal) == held
    finally:
        node.stop()


def _drain(sub_get: object, seen: list[LogEntry], want: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while len(seen) < want:
        assert time.monotonic() < deadline, f"only {len(seen)} of {want} ops delivered"
        entry = sub_get(0.5)  # type: ignore[operator]
        if entry is not None:
            seen.append(entry)


def test_subscription_delivers_each_op_once_per_cursor_across_a_crash_and_a_restart(
    tmp_path: Path,
) -> None:
    """Local and synced ops, a crash of the protocol actor, a restart from the stored cursor."""
    a = make_node(tmp_path / "a", fault_injection=True)
    b = make_node(tmp_path / "b", bootstrap=[a.bootstrap_address])
    seen: list[LogEntry] = []
    try:
        sub = a.subscribe(after=0)
        a.append(_payloads("a1", 50))
        b.append(_payloads("b1", 30))  # reaches a by anti-entropy
        _drain(sub.get, seen, 80, 30)
        a.inject_crash("anti_entropy")
        wait_until(lambda: a.root is not None and _restarts(a) >= 1, 10, "the restart")
        a.append(_payloads("a2", 20))
        _drain(sub.get, seen, 100, 30)
        stored = sub.cursor
        sub.close()
        a.stop()
        b.append(_payloads("b2", 25))  # written while a is down
        a = Node(load_config(None, _settings(tmp_path / "a", b))).start()
        sub = a.subscribe(after=stored)
        a.append(_payloads("a3", 5))
        _drain(sub.get, seen, 130, 30)
        assert sub.get(0.3) is None  # nothing more: no duplicate after the restart
        sub.close()
    finally:
        a.stop()
        b.stop()
    cursors = [e.cursor for e in seen]
    assert cursors == sorted(set(cursors)), "cursor order, each once"
    expected = {*_payloads("a1", 50), *_payloads("b1", 30), *_payloads("a2", 20)}
    expected |= {*_payloads("b2", 25), *_payloads("a3", 5)}
    assert sorted(e.payload for e in seen) == sorted(expected)


def _restarts(node: Node) -> int:
    protocols = node.supervisors()["protocols"]
    assert protocols is not None
    return protocols.restart_count("anti_entropy")


def _settings(data_dir: Path, peer: Node) -> dict[str, object]:
    return {
        "data_dir": str(data_dir),
        "listen": "127.0.0.1:0",
        "sync_interval": 0.1,
        "request_timeout": 2.0,
        "shutdown_timeout": 5.0,
        "bootstrap": [peer.bootstrap_address],
    }


def test_asyncio_forms_never_block_the_event_loop(tmp_path: Path) -> None:
    """A reader waits on the loop for ops that only a writer on the same loop appends.

    Were ``ops()`` or ``append_async`` to wait on the loop's thread, the other
    coroutine could not run and the reader would never get its 5000 ops.
    """
    config = load_config(None, {"data_dir": str(tmp_path / "a"), "listen": "127.0.0.1:0"})

    async def main() -> list[bytes]:
        got: list[bytes] = []
        async with Node(config) as node:

            async def read() -> None:
                async for op in node.ops(after=0):
                    got.append(op.payload)
                    if len(got) == 5000:
                        return

            reader = asyncio.create_task(read())  # starts waiting at the first await below
            for i in range(10):
                await node.append_async(_payloads(f"w{i}", 500))
            await asyncio.wait_for(reader, 30)
        return got

    got = asyncio.run(main())
    assert got == [p for i in range(10) for p in _payloads(f"w{i}", 500)]


def test_closing_a_subscription_ends_an_iteration_in_another_thread(tmp_path: Path) -> None:
    import threading

    node = make_node(tmp_path / "a")
    try:
        sub = node.subscribe(after=0)
        got: list[bytes] = []
        finished = threading.Event()

        def follow() -> None:
            for entry in sub:  # waits for new ops, a second at a time
                got.append(entry.payload)
            finished.set()

        worker = threading.Thread(target=follow, daemon=True)
        worker.start()
        node.append(_payloads("s", 3))
        wait_until(lambda: len(got) == 3, 10, "the three ops")
        sub.close()
        assert finished.wait(5.0), "the iteration did not end"
        assert sub.closed and sub.get(0.1) is None
        sub.close()  # idempotent
        node.append(_payloads("t", 1))
        assert got == _payloads("s", 3)
    finally:
        node.stop()
