"""The application API of a node: read the journal by cursor, follow it, and asyncio forms.

* :class:`JournalReader`: a read-only SQLite connection of its own on the
  journal file (WAL: readers never block the protocol actor that writes).
  Ops are read in their local arrival order; a cursor is the arrival number
  of the last op read, stable across restarts (nothing is ever deleted, and
  one writer commits arrivals in order), so ``read(after=c)`` resumes
  exactly after ``c``.
* :class:`Subscription`: every op after a cursor, local or synced, in cursor
  order, at least once (exactly once per cursor while the subscriber keeps
  its position; after a restart, resume from the last cursor it stored).
* :class:`ApplicationApi`: the methods :class:`~aura_sync.node.node.Node`
  gains from it (``read``, ``subscribe``, ``append_async``, ``ops``,
  ``async with``); the asyncio forms run blocking steps in a worker thread,
  never on the event loop.

Layer: runtime.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Final, Self

from aura_sync.errors import InvalidArgument, WrongType
from aura_sync.ids import DeviceId
from aura_sync.messages.sync import OpsAppended
from aura_sync.node.wire import LogEntry, OpsPage
from aura_sync.protocols.journal_chain import check_payloads as check_items

__all__ = ["MAX_READ", "POLL_INTERVAL", "ApplicationApi", "JournalReader", "Subscription"]

MAX_READ: Final = 10_000
"""The most entries one read returns."""

POLL_INTERVAL: Final = 0.02
"""Seconds between two looks for new ops while a follower waits (a cheap PRAGMA)."""

_SELECT: Final = (
    "SELECT arrival, id, author, seq, payload FROM ops WHERE arrival > ? ORDER BY arrival LIMIT ?"
)


def check_cursor(after: object, limit: object) -> None:
    """Refuse a cursor or a limit a user passed that cannot be right (naming the value)."""
    if type(after) is not int or after < 0:
        raise InvalidArgument(f"after must be a cursor (an int >= 0), got {after!r}")
    if type(limit) is not int or not 1 <= limit <= MAX_READ:
        raise InvalidArgument(f"limit must be an int in 1..{MAX_READ}, got {limit!r}")


class JournalReader:
    """A read-only view of a journal file in arrival order (thread-safe, one lock)."""

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
        )
        self._lock = threading.Lock()
        self._version = -1

    def read(self, after: int = 0, limit: int = 1000) -> OpsPage:
        """Up to ``limit`` entries with a cursor above ``after``, in cursor order."""
        check_cursor(after, limit)
        with self._lock:
            rows = self._conn.execute(_SELECT, (after, limit)).fetchall()
        entries = tuple(
            LogEntry(arrival, op_id, DeviceId(author), seq, payload)
            for arrival, op_id, author, seq, payload in rows
        )
        return OpsPage(entries, entries[-1].cursor if entries else after)

    def changed(self) -> bool:
        """Whether another connection committed since the last call (cheap: no table read)."""
        with self._lock:
            version = self._conn.execute("PRAGMA data_version").fetchone()[0]
        if version == self._version:
            return False
        self._version = version
        return True

    def wait_read(self, after: int, limit: int, wait: float, stop: threading.Event) -> OpsPage:
        """:meth:`read`, waiting up to ``wait`` seconds (or until ``stop``) for an entry."""
        deadline = time.monotonic() + wait
        while True:
            page = self.read(after, limit)
            remaining = deadline - time.monotonic()
            if page.entries or remaining <= 0 or stop.is_set():
                return page
            while not self.changed() and not stop.wait(min(POLL_INTERVAL, remaining)):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class Subscription:
    """Every op after a cursor, in cursor order; iterate it, or :meth:`get` with a timeout.

    ``cursor`` is the position of the last entry handed out: store it and
    pass it as ``after`` to resume (after a restart too).  :meth:`close`
    ends the iteration and closes the subscription's journal connection.
    """

    def __init__(self, reader: JournalReader, after: int, batch: int = 1000) -> None:
        check_cursor(after, batch)
        self._reader = reader
        self._batch = batch
        self._buffer: deque[LogEntry] = deque()
        self._read_to = after
        self.cursor = after
        self._closed = threading.Event()
        self._reading = threading.Lock()  # close() waits for a read in progress

    def get(self, timeout: float) -> LogEntry | None:
        """The next entry, waiting up to ``timeout`` seconds; None if none came (or closed)."""
        if not self._buffer:
            with self._reading:
                if self._closed.is_set():
                    return None
                page = self._reader.wait_read(self._read_to, self._batch, timeout, self._closed)
            self._buffer.extend(page.entries)
            self._read_to = page.cursor
        if not self._buffer:
            return None
        entry = self._buffer.popleft()
        self.cursor = entry.cursor
        return entry

    def __iter__(self) -> Iterator[LogEntry]:
        while not self._closed.is_set():
            entry = self.get(1.0)
            if entry is not None:
                yield entry

    def close(self) -> None:
        """End the subscription (an iteration in another thread stops soon after); idempotent."""
        self._closed.set()  # a wait in progress returns at once
        with self._reading:
            self._reader.close()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ApplicationApi:
    """The application methods of a node (mixed into :class:`~aura_sync.node.node.Node`)."""

    _reader: JournalReader | None = None

    def _journal_reader(self) -> JournalReader:
        if self._reader is None:
            self._reader = JournalReader(self._journal_reader_path())
        return self._reader

    def _close_reader(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()

    def append(
        self, payloads: list[bytes] | tuple[bytes, ...], timeout: float = 10.0
    ) -> OpsAppended:
        raise NotImplementedError  # pragma: no cover - provided by Node

    def start(self, timeout: float = 30.0) -> ApplicationApi:
        raise NotImplementedError  # pragma: no cover - provided by Node

    def stop(self, timeout: float | None = None) -> None:
        raise NotImplementedError  # pragma: no cover - provided by Node

    def read(self, after: int = 0, limit: int = 1000) -> OpsPage:
        """Up to ``limit`` ops after the cursor ``after`` (0: from the start), in local order.

        Resume with ``read(after=page.cursor)``; an empty page means nothing
        newer yet.
        """
        return self._journal_reader().read(after, limit)

    def subscribe(self, after: int = 0) -> Subscription:
        """Every op after ``after`` from any source, as it arrives (see :class:`Subscription`)."""
        check_cursor(after, 1)
        path = self._journal_reader_path()
        return Subscription(JournalReader(path), after)

    def _journal_reader_path(self) -> Path:  # pragma: no cover - provided by Node
        raise NotImplementedError

    async def append_async(
        self, payloads: list[bytes] | tuple[bytes, ...], timeout: float = 10.0
    ) -> OpsAppended:
        """:meth:`append` without blocking the event loop (the wait runs in a worker thread)."""
        return await asyncio.to_thread(self.append, payloads, timeout)

    async def ops(self, after: int = 0, batch: int = 1000) -> AsyncIterator[LogEntry]:
        """``async for op in node.ops(after=c)``: :meth:`subscribe` for asyncio (never ends).

        Each wait for new ops runs in a worker thread and lasts at most a
        second, so cancelling the iterating task ends it promptly.
        """
        check_cursor(after, batch)
        reader = JournalReader(self._journal_reader_path())
        closed = threading.Event()
        try:
            while True:
                page = await asyncio.to_thread(reader.wait_read, after, batch, 1.0, closed)
                for entry in page.entries:
                    after = entry.cursor
                    yield entry
        finally:
            closed.set()
            reader.close()

    async def __aenter__(self) -> Self:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)


def check_payloads(payloads: object, limit: int) -> None:
    """Refuse payloads a user passed that the journal cannot take (naming the value)."""
    if not isinstance(payloads, list | tuple):
        raise WrongType(f"payloads must be a list of bytes, got {type(payloads).__name__}")
    if not 1 <= len(payloads) <= limit:
        raise InvalidArgument(f"payloads must hold 1..{limit} items, got {len(payloads)}")
    check_items(payloads)
