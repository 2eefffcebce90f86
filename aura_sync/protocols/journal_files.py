"""Files around the journal: header checks, the high-water-mark sidecar, the data-directory lock.

* :func:`check_journal_file` refuses, before SQLite touches it, a 0-byte
  file, a file that is not SQLite, and a file shorter than the size its own
  header declares (truncated).  A missing file is a new journal.
* The high-water mark (``<journal>.hwm``) records the highest arrival number
  committed (rewritten in place after each commit, which ``synchronous=FULL``
  fsyncs).  It lives outside the database and its WAL, so a lost
  or damaged WAL cannot roll it back: a journal behind it fails to open.
* :class:`DataDirLock` holds ``fcntl.flock`` on ``<data_dir>/lock`` (with the
  holder's PID in it) for the life of a node: one process per data directory.

Layer: runtime (protocols).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Final

from aura_sync.errors import DataDirLocked, InvalidArgument, JournalCorrupt

__all__ = [
    "LOCK_FILE_NAME",
    "DataDirLock",
    "HighWaterMark",
    "check_journal_file",
    "hwm_path",
    "read_hwm",
]

LOCK_FILE_NAME: Final = "lock"
"""Name of the lock file inside a node's data directory."""

_SQLITE_MAGIC: Final = b"SQLite format 3\x00"
_HWM_MAGIC: Final = "aura-sync-hwm 1 "


def check_journal_file(name: str) -> bool:
    """True if ``name`` exists and looks like a whole SQLite file; False if it is absent.

    Raises :class:`~aura_sync.errors.JournalCorrupt` for a directory, a
    0-byte file, a non-SQLite file or a truncated one.
    """
    try:
        with open(name, "rb") as stream:
            head = stream.read(100)
            size = os.fstat(stream.fileno()).st_size
    except FileNotFoundError:
        parent = Path(name).parent
        if not parent.is_dir():
            raise InvalidArgument(f"journal directory {str(parent)!r} does not exist") from None
        return False
    except IsADirectoryError:
        raise JournalCorrupt(f"journal path {name!r} is a directory") from None
    except OSError as exc:
        raise JournalCorrupt(f"journal {name!r} cannot be read: {exc}") from exc
    if not head:
        raise JournalCorrupt(
            f"journal {name!r} is an empty (0-byte) file: its ops were lost; refusing to "
            f"re-create it (move it away to start an empty journal)"
        )
    if head[:16] != _SQLITE_MAGIC or len(head) < 100:
        raise JournalCorrupt(
            f"journal {name!r} is not a SQLite database (header {head[:16]!r}); "
            f"refusing to touch it"
        )
    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(head[28:32], "big")
    valid = head[24:28] == head[92:96]  # the in-header size is valid (SQLite >= 3.7.0)
    wal = _size(name + "-wal")
    if valid and pages and size < pages * page_size and not wal:  # a WAL may still extend it
        raise JournalCorrupt(
            f"journal {name!r} is truncated: {size} bytes, its header declares "
            f"{pages} pages of {page_size} bytes"
        )
    return True


def _size(name: str) -> int:
    try:
        return os.stat(name).st_size
    except OSError:
        return 0


def hwm_path(name: str) -> str:
    """The sidecar of the journal file ``name``."""
    return name + ".hwm"


def read_hwm(name: str) -> int | None:
    """The high-water mark recorded for the journal ``name`` (None: no sidecar)."""
    try:
        text = Path(hwm_path(name)).read_text("ascii")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise JournalCorrupt(f"high-water mark {hwm_path(name)!r} is unreadable: {exc}") from exc
    value = text[len(_HWM_MAGIC) :].strip()
    if not text.startswith(_HWM_MAGIC) or not value.isdigit():
        raise JournalCorrupt(f"high-water mark {hwm_path(name)!r} is damaged: {text[:40]!r}")
    return int(value)


class HighWaterMark:
    """The open sidecar of a journal; :meth:`write` records a new mark in place.

    Each record has the same length and is written with one ``pwrite`` at
    offset 0, so a killed process leaves the old or the new record, whole.
    """

    def __init__(self, name: str) -> None:
        """Open (or create) the sidecar of the journal file ``name``."""
        self._fd: int | None = os.open(hwm_path(name), os.O_RDWR | os.O_CREAT, 0o600)

    def write(self, arrival: int) -> None:
        """Record ``arrival`` (call after the commit that made it durable)."""
        if self._fd is not None:
            os.pwrite(self._fd, f"{_HWM_MAGIC}{arrival:020d}\n".encode("ascii"), 0)

    def close(self) -> None:
        """Close the sidecar (idempotent)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


class DataDirLock:
    """An exclusive ``flock`` on ``<data_dir>/lock`` held until :meth:`release`."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        """Take the lock; :class:`~aura_sync.errors.DataDirLocked` if another process has it."""
        self.path = Path(data_dir) / LOCK_FILE_NAME
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            finally:
                os.close(fd)
            raise DataDirLocked(
                f"data directory {str(Path(data_dir))!r} is in use by another aura-sync "
                f"process (PID {holder}, holding {str(self.path)!r}); one process per "
                f"data directory"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._fd: int | None = fd

    def release(self) -> None:
        """Drop the lock (idempotent)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)
