"""The journal: an append-only set of content-addressed operations, stored in SQLite.

Role
    A node's journal is what anti-entropy sync replicates.  It holds
    :class:`~aura_sync.messages.sync.Op` values (author DeviceId, the
    author's sequence number, payload bytes).  An op's id is
    :func:`~aura_sync.messages.sync.op_id`: SHA-256 over a domain tag, the
    author, ``seq`` (8 bytes big-endian) and the payload.  Including the
    author and sequence number means two nodes writing the same bytes make
    two distinct ops, and an author's ops are numbered so a restarted node
    continues its own sequence.  Ops are never modified or removed; adding
    an op twice is a no-op (the set only grows), so sync is idempotent and
    order-free.

Anti-entropy support
    The id space is ordered bytewise.  :meth:`Journal.digest` summarises
    the ids in an :class:`~aura_sync.messages.sync.IdRange` as (count,
    fingerprint) where the fingerprint is SHA-256 over the sorted ids
    (:func:`~aura_sync.messages.sync.fingerprint`): two journals have the
    same digest for a range iff they hold the same ids there.  A protocol
    compares digests of the full range, splits differing ranges
    (``IdRange.split``) until they are small, lists them with
    :meth:`Journal.list_ids` (pages of up to 1024 ids), and exchanges the
    missing ops (:meth:`Journal.missing`, :meth:`Journal.get_many`,
    :meth:`Journal.add_many`) in batches of at most 128.  Digests are
    computed from an in-memory sorted index of the ids (32 bytes each,
    loaded at open), so a range digest costs one slice and one hash; the
    full-range digest is cached until the journal changes.

Storage
    One SQLite database (stdlib :mod:`sqlite3`) in WAL mode, table ``ops``
    (arrival order as the rowid, a unique index on the id),
    ``application_id`` 0x41555241 ("AURA") and ``user_version`` 1.
    ``synchronous=NORMAL`` by default: a committed op survives a crash or
    kill of the process; pass ``synchronous="FULL"`` to survive power loss
    too.  Each append or batch is one transaction.

Corruption
    :meth:`Journal.open` refuses, with :class:`~aura_sync.errors.JournalCorrupt`
    naming the file and the problem, a file that is not SQLite, a SQLite
    database that is not an aura-sync journal (other application id,
    version or schema), one failing ``PRAGMA quick_check`` (or
    ``integrity_check`` with ``full_check=True``), and any op whose id does
    not match its content.  It never rewrites or repairs the file.

Threading
    A journal is owned by one actor (the sync protocol actor), which calls
    it from its own thread; the connection is opened with
    ``check_same_thread=False`` so that the owner may be a different thread
    from the one that opened it, and an internal lock makes each call
    atomic.  Sequences of calls are not atomic: only the owner should write.

Layer: runtime (protocols).
"""

from __future__ import annotations

import bisect
import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Final

from aura_sync._checks import check_peer
from aura_sync.errors import InvalidArgument, JournalCorrupt, WrongType
from aura_sync.ids import DeviceId
from aura_sync.messages.sync import (
    FULL_RANGE,
    MAX_IDS_BATCH,
    MAX_OPS_BATCH,
    OP_ID_SIZE,
    IdRange,
    Op,
    RangeDigest,
    fingerprint,
    op_id,
)

__all__ = ["APPLICATION_ID", "JOURNAL_FILE_NAME", "SCHEMA_VERSION", "Journal"]

APPLICATION_ID: Final = 0x41555241
"""SQLite ``application_id`` of a journal database ("AURA")."""

SCHEMA_VERSION: Final = 1
"""SQLite ``user_version`` of the current journal schema."""

JOURNAL_FILE_NAME: Final = "journal.sqlite3"
"""Conventional name of the journal inside a node's data directory."""

_SQLITE_MAGIC: Final = b"SQLite format 3\x00"
_SCHEMA: Final = (
    "CREATE TABLE ops ("
    " arrival INTEGER PRIMARY KEY,"
    " id BLOB NOT NULL UNIQUE CHECK (length(id) = 32),"
    " author BLOB NOT NULL CHECK (length(author) = 16),"
    " seq INTEGER NOT NULL CHECK (seq >= 0),"
    " payload BLOB NOT NULL"
    ")",
    "CREATE INDEX ops_by_author ON ops (author, seq)",
)
_EXPECTED_COLUMNS: Final = (
    ("arrival", "INTEGER", 1),
    ("id", "BLOB", 0),
    ("author", "BLOB", 0),
    ("seq", "INTEGER", 0),
    ("payload", "BLOB", 0),
)
_SYNC_MODES: Final = ("NORMAL", "FULL")


class Journal:
    """An append-only, content-addressed set of ops in SQLite (see the module docstring).

    Build it with :meth:`open`; close it with :meth:`close` (or use it as a
    context manager).
    """

    def __init__(self, conn: sqlite3.Connection, path: str, author: DeviceId) -> None:
        """Internal: use :meth:`open`."""
        self._conn = conn
        self._path = path
        self._author = author
        self._lock = threading.RLock()
        self._ids: list[bytes] = []
        self._id_set: set[bytes] = set()
        self._next_seq = 0
        self._full_digest: RangeDigest | None = None
        self._closed = False

    # --- opening -------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        author: DeviceId,
        synchronous: str = "NORMAL",
        full_check: bool = False,
    ) -> Journal:
        """Open (or create) the journal at ``path`` for the local node ``author``.

        ``path`` ":memory:" gives a journal that lives only in memory (tests).
        ``synchronous``: "NORMAL" (survives process crashes) or "FULL"
        (survives power loss; one fsync per transaction).  ``full_check``:
        run ``PRAGMA integrity_check`` instead of the faster ``quick_check``.
        Every stored op's content address is verified.

        Raises :class:`~aura_sync.errors.JournalCorrupt` for a corrupt or
        foreign file (see the module docstring), :class:`~aura_sync.errors.WrongType`
        / :class:`~aura_sync.errors.InvalidArgument` for bad arguments.
        """
        if not isinstance(path, str | os.PathLike):
            raise WrongType(f"path must be a path, got {type(path).__name__} {path!r}")
        check_peer(author, "author")
        if synchronous not in _SYNC_MODES:
            raise InvalidArgument(f"synchronous must be one of {_SYNC_MODES}, got {synchronous!r}")
        name = os.fspath(path)
        if name != ":memory:":
            _check_header(name)
        try:
            conn = sqlite3.connect(name, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise JournalCorrupt(f"journal {name!r} cannot be opened: {exc}") from exc
        journal = cls(conn, name, author)
        try:
            journal._prepare(synchronous, full_check)
        except sqlite3.Error as exc:
            conn.close()
            raise JournalCorrupt(f"journal {name!r} is corrupt or unreadable: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        return journal

    def _prepare(self, synchronous: str, full_check: bool) -> None:
        conn = self._conn
        name = self._path
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ]
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if not tables and app_id == 0 and version == 0:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
        else:
            if app_id != APPLICATION_ID:
                raise JournalCorrupt(
                    f"{name!r} is a SQLite database but not an aura-sync journal "
                    f"(application_id {app_id:#x}, expected {APPLICATION_ID:#x}; tables {tables})"
                )
            if version != SCHEMA_VERSION:
                raise JournalCorrupt(
                    f"journal {name!r} has schema version {version}; this build reads "
                    f"version {SCHEMA_VERSION}"
                )
            columns = tuple(
                (row[1], row[2].upper(), row[5]) for row in conn.execute("PRAGMA table_info(ops)")
            )
            if columns != _EXPECTED_COLUMNS:
                raise JournalCorrupt(
                    f"journal {name!r} has the wrong schema: table ops has columns {columns}, "
                    f"expected {_EXPECTED_COLUMNS}"
                )
        check = "integrity_check" if full_check else "quick_check"
        problems = [row[0] for row in conn.execute(f"PRAGMA {check}")]
        if problems != ["ok"]:
            raise JournalCorrupt(
                f"journal {name!r} fails PRAGMA {check}: {'; '.join(map(str, problems[:5]))}"
            )
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal" and name != ":memory:":
            raise JournalCorrupt(f"journal {name!r} cannot use WAL mode (got {mode!r})")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        self._load_index()

    def _load_index(self) -> None:
        """Verify every op's content address and load the sorted id index."""
        ids: list[bytes] = []
        next_seq = 0
        author_raw = self._author.raw
        for row_id, author, seq, payload in self._conn.execute(
            "SELECT id, author, seq, payload FROM ops ORDER BY id"
        ):
            if (
                type(row_id) is not bytes
                or type(author) is not bytes
                or type(payload) is not bytes
                or type(seq) is not int
                or len(row_id) != OP_ID_SIZE
                or len(author) != DeviceId.SIZE
            ):
                raise JournalCorrupt(
                    f"journal {self._path!r} holds a malformed op row "
                    f"(id {row_id!r:.80}, seq {seq!r})"
                )
            try:
                expected = op_id(DeviceId(author), seq, payload)
            except (ValueError, TypeError) as exc:
                raise JournalCorrupt(
                    f"journal {self._path!r} holds an invalid op {row_id.hex()}: {exc}"
                ) from None
            if expected != row_id:
                raise JournalCorrupt(
                    f"journal {self._path!r}: op {row_id.hex()} does not match its content "
                    f"(content hashes to {expected.hex()}); the database was altered"
                )
            if author == author_raw and seq >= next_seq:
                next_seq = seq + 1
            ids.append(row_id)
        self._ids = ids
        self._id_set = set(ids)
        self._next_seq = next_seq

    # --- writing -------------------------------------------------------------------------

    def append(self, payload: bytes) -> bytes:
        """Author a new op with ``payload`` (<= 4096 bytes); returns its 32-byte id.

        Durable once this returns.  Raises :class:`~aura_sync.errors.WrongType`
        / :class:`~aura_sync.errors.InvalidArgument` for a bad payload.
        """
        return self.append_many((payload,))[0]

    def append_many(self, payloads: Iterable[bytes]) -> list[bytes]:
        """Author one op per payload in one transaction; returns their ids in order."""
        with self._lock:
            self._ensure_open()
            ops = []
            seq = self._next_seq
            for payload in payloads:
                ops.append(Op(self._author, seq, payload))  # validates the payload
                seq += 1
            self._insert(ops)
            self._next_seq = seq
            return [op.op_id for op in ops]

    def add(self, op: Op, expected_id: bytes | None = None) -> bool:
        """Add an op received from a peer; True if it was new, False if already held.

        The op's id is computed from its content; if ``expected_id`` (the id
        the peer advertised, e.g. in an IdsReply) is given it must match.
        Raises :class:`~aura_sync.errors.WrongType` for a non-Op and
        :class:`~aura_sync.errors.InvalidArgument` if the content does not
        hash to ``expected_id`` (nothing is stored then).
        """
        return self.add_many((op,), None if expected_id is None else (expected_id,)) == 1

    def add_many(self, ops: Iterable[Op], expected_ids: Iterable[bytes] | None = None) -> int:
        """Add ops from a peer in one transaction; returns how many were new.

        With ``expected_ids`` (same length and order as ``ops``) every op
        must hash to its expected id, else
        :class:`~aura_sync.errors.InvalidArgument` and nothing is stored.
        """
        op_list = list(ops)
        for i, op in enumerate(op_list):
            if type(op) is not Op:
                raise WrongType(f"ops[{i}] must be an Op, got {type(op).__name__} {op!r:.80}")
        if expected_ids is not None:
            wanted = list(expected_ids)
            if len(wanted) != len(op_list):
                raise InvalidArgument(f"expected_ids has {len(wanted)} ids for {len(op_list)} ops")
            for i, (op, want) in enumerate(zip(op_list, wanted, strict=True)):
                actual = op.op_id
                if actual != want:
                    raise InvalidArgument(
                        f"op {i} does not match its content address: expected "
                        f"{_hex(want)}, its content hashes to {actual.hex()}"
                    )
        with self._lock:
            self._ensure_open()
            return len(self._insert(op_list))

    def _insert(self, ops: list[Op]) -> list[bytes]:
        """Store the ops not yet held (one transaction); returns the ids newly added."""
        fresh: dict[bytes, Op] = {}
        for op in ops:
            key = op.op_id
            if key not in self._id_set and key not in fresh:
                fresh[key] = op
        if not fresh:
            return []
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                "INSERT OR IGNORE INTO ops (id, author, seq, payload) VALUES (?, ?, ?, ?)",
                [(key, op.author.raw, op.seq, op.payload) for key, op in fresh.items()],
            )
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
        for key in fresh:
            bisect.insort(self._ids, key)
            self._id_set.add(key)
        self._full_digest = None
        return list(fresh)

    # --- reading -------------------------------------------------------------------------

    @property
    def author(self) -> DeviceId:
        """The local node (author of :meth:`append`-ed ops)."""
        return self._author

    @property
    def path(self) -> str:
        """The database file."""
        return self._path

    def __len__(self) -> int:
        with self._lock:
            return len(self._ids)

    def has(self, op_id: bytes) -> bool:
        """Whether the op with this 32-byte id is held."""
        _check_op_id(op_id, "op_id")
        with self._lock:
            return op_id in self._id_set

    def get(self, op_id: bytes) -> Op | None:
        """The op with this id, or None if it is not held."""
        _check_op_id(op_id, "op_id")
        with self._lock:
            self._ensure_open()
            row = self._conn.execute(
                "SELECT author, seq, payload FROM ops WHERE id = ?", (op_id,)
            ).fetchone()
        return None if row is None else Op(DeviceId(row[0]), row[1], row[2])

    def get_many(self, op_ids: Iterable[bytes]) -> list[Op]:
        """The held ops among ``op_ids`` (at most 128), in the order asked; absent ids skipped."""
        wanted = list(op_ids)
        if len(wanted) > MAX_OPS_BATCH:
            raise InvalidArgument(f"get_many takes at most {MAX_OPS_BATCH} ids, got {len(wanted)}")
        for i, item in enumerate(wanted):
            _check_op_id(item, f"op_ids[{i}]")
        if not wanted:
            return []
        with self._lock:
            self._ensure_open()
            marks = ",".join("?" * len(wanted))
            rows = self._conn.execute(
                f"SELECT id, author, seq, payload FROM ops WHERE id IN ({marks})", wanted
            ).fetchall()
        found = {row[0]: Op(DeviceId(row[1]), row[2], row[3]) for row in rows}
        return [found[key] for key in wanted if key in found]

    def missing(self, op_ids: Iterable[bytes]) -> list[bytes]:
        """The ids among ``op_ids`` that this journal does not hold (order kept, no duplicates)."""
        out: list[bytes] = []
        seen: set[bytes] = set()
        with self._lock:
            for i, item in enumerate(op_ids):
                _check_op_id(item, f"op_ids[{i}]")
                if item not in self._id_set and item not in seen:
                    seen.add(item)
                    out.append(item)
        return out

    def not_in(self, their_ids: Iterable[bytes], id_range: IdRange = FULL_RANGE) -> list[bytes]:
        """The ids this journal holds in ``id_range`` that are not in ``their_ids`` (ascending).

        What to push to a peer after listing its ids in that range.
        """
        theirs = set(their_ids)
        return [key for key in self._slice(id_range) if key not in theirs]

    def all_ids(self) -> tuple[bytes, ...]:
        """Every held id, ascending."""
        with self._lock:
            return tuple(self._ids)

    def ops_by(self, author: DeviceId) -> list[Op]:
        """Every held op of ``author``, by sequence number."""
        check_peer(author, "author")
        with self._lock:
            self._ensure_open()
            rows = self._conn.execute(
                "SELECT seq, payload FROM ops WHERE author = ? ORDER BY seq", (author.raw,)
            ).fetchall()
        return [Op(author, seq, payload) for seq, payload in rows]

    def digest(self, id_range: IdRange = FULL_RANGE) -> RangeDigest:
        """Count and fingerprint of the ids held in ``id_range`` (equal iff same id set)."""
        if type(id_range) is not IdRange:
            raise WrongType(f"id_range must be an IdRange, got {type(id_range).__name__}")
        with self._lock:
            if id_range == FULL_RANGE and self._full_digest is not None:
                return self._full_digest
            count, print_ = fingerprint(self._slice(id_range))
            result = RangeDigest(id_range, count, print_)
            if id_range == FULL_RANGE:
                self._full_digest = result
            return result

    def digests(self, ranges: Iterable[IdRange]) -> tuple[RangeDigest, ...]:
        """:meth:`digest` of each range, in order."""
        return tuple(self.digest(r) for r in ranges)

    def list_ids(
        self, id_range: IdRange = FULL_RANGE, limit: int = MAX_IDS_BATCH
    ) -> tuple[tuple[bytes, ...], bytes | None]:
        """Up to ``limit`` (1..1024) held ids in ``id_range``, ascending, and the next page's start.

        The second item is None when the page is the last one; otherwise
        list ``IdRange(next_lo, id_range.hi)`` for the rest.
        """
        if type(id_range) is not IdRange:
            raise WrongType(f"id_range must be an IdRange, got {type(id_range).__name__}")
        if type(limit) is not int:
            raise WrongType(f"limit must be an int, got {type(limit).__name__} {limit!r}")
        if not 1 <= limit <= MAX_IDS_BATCH:
            raise InvalidArgument(f"limit must be in 1..{MAX_IDS_BATCH}, got {limit}")
        with self._lock:
            lo = bisect.bisect_left(self._ids, id_range.lo)
            hi = (
                len(self._ids)
                if id_range.hi is None
                else bisect.bisect_left(self._ids, id_range.hi, lo)
            )
            end = min(hi, lo + limit)
            page = tuple(self._ids[lo:end])
            next_lo = self._ids[end] if end < hi else None
        return page, next_lo

    def _slice(self, id_range: IdRange) -> list[bytes]:
        with self._lock:
            lo = bisect.bisect_left(self._ids, id_range.lo)
            if id_range.hi is None:
                return self._ids[lo:]
            return self._ids[lo : bisect.bisect_left(self._ids, id_range.hi, lo)]

    # --- closing -------------------------------------------------------------------------

    def close(self) -> None:
        """Checkpoint the WAL into the database file and close it.  Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                with contextlib.suppress(sqlite3.Error):  # else SQLite replays the WAL at open
                    self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                self._conn.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def __enter__(self) -> Journal:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Journal {self._path!r} ops={len(self._ids)}{' closed' if self._closed else ''}>"

    def _ensure_open(self) -> None:
        if self._closed:
            raise InvalidArgument(f"journal {self._path!r} is closed")


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back the open transaction, if SQLite has not already done so.

    Some failures (a full disk, an I/O error) make SQLite roll back by
    itself; a second ROLLBACK would then raise and hide the real error.
    """
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def _check_op_id(value: object, name: str) -> None:
    if type(value) is not bytes:
        raise WrongType(f"{name} must be bytes, got {type(value).__name__} {value!r:.80}")
    if len(value) != OP_ID_SIZE:
        raise InvalidArgument(f"{name} must be {OP_ID_SIZE} bytes, got {len(value)}")


def _hex(value: object) -> str:
    return value.hex() if isinstance(value, bytes) else repr(value)


def _check_header(name: str) -> None:
    """Refuse a non-empty file that does not start with SQLite's magic header."""
    try:
        with open(name, "rb") as stream:
            head = stream.read(len(_SQLITE_MAGIC))
    except FileNotFoundError:
        parent = Path(name).parent
        if not parent.is_dir():
            raise InvalidArgument(f"journal directory {str(parent)!r} does not exist") from None
        return
    except IsADirectoryError:
        raise JournalCorrupt(f"journal path {name!r} is a directory") from None
    except OSError as exc:
        raise JournalCorrupt(f"journal {name!r} cannot be read: {exc}") from exc
    if head and head != _SQLITE_MAGIC:
        raise JournalCorrupt(
            f"journal {name!r} is not a SQLite database (header {head[:16]!r}); "
            f"refusing to touch it"
        )
