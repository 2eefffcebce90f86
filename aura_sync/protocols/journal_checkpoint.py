"""The journal's background checkpointer: WAL pages go back to the database off the writer.

SQLite checkpoints a WAL in whichever commit first finds it over its
``wal_autocheckpoint`` size: that commit then copies and fsyncs every page in
the WAL (up to 80 MiB here), a stall of up to a second for the actor that
wrote it. A :class:`Checkpointer` runs ``PRAGMA wal_checkpoint(PASSIVE)`` on
its own connection in its own thread once the WAL file reaches ``pages`` pages
(the writer calls :meth:`Checkpointer.nudge` after each commit: an event, no
I/O; its ``journal_size_limit`` of half that cuts the file back when the WAL
restarts, so the file's size tells how much it holds). A passive checkpoint
never blocks the writer (WAL mode lets one checkpointer run beside readers and
the writer); the writer's own autocheckpoint, set higher, stays as the bound
should this thread fall behind. It copies committed pages only: nothing it
does can lose an op.

Layer: runtime (protocols).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading

__all__ = ["Checkpointer"]

_log = logging.getLogger("aura_sync.protocols.journal")


class Checkpointer:
    """A thread checkpointing the WAL of the journal at ``path`` once it holds ``pages``."""

    def __init__(self, path: str, pages: int, page_size: int) -> None:
        """Start the thread (it opens its connection on its first checkpoint)."""
        self._path = path
        self._wal = path + "-wal"
        self._bytes = pages * page_size
        self._wake = threading.Event()
        self._stopping = False
        self.passes = 0
        """Checkpoints run so far."""
        self._thread = threading.Thread(
            target=self._run, name=f"aura-checkpoint:{os.path.basename(path)}", daemon=True
        )
        self._thread.start()

    def nudge(self) -> None:
        """A commit happened: check the WAL's size soon (called by the writer)."""
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the thread after the checkpoint it may be running; idempotent."""
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout)

    def _due(self) -> bool:
        try:
            return os.stat(self._wal).st_size >= self._bytes
        except OSError:
            return False

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stopping:
                    return
                if not self._due():
                    continue
                try:
                    if conn is None:
                        conn = sqlite3.connect(self._path, isolation_level=None)
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self.passes += 1
                except sqlite3.Error as exc:  # the writer's autocheckpoint still bounds the WAL
                    _log.warning("event=checkpoint_failed path=%s error=%r", self._path, str(exc))
        finally:
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
