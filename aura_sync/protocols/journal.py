"""The journal: an append-only set of signed, content-addressed ops, stored in SQLite.

What is signed
    Each author's ops form a hash chain: an op's id is SHA-256 over (author,
    seq, prev, payload) where ``prev`` is the id of the author's op
    ``seq - 1``.  :meth:`Journal.append_many` signs only the last op of each
    call (its *head*: Ed25519 over ``HEAD_DOMAIN + id`` with the node's
    identity key); the signature covers every earlier op through the chain,
    so one verify (~110 us) is paid per batch, not per op.  Every op carries
    its author's public key, whose hash must be the author's DeviceId.

What a receiver checks (:mod:`~aura_sync.protocols.journal_chain`)
    An op is stored only once authenticated: its key is its author's, and
    its signature verifies or its successor (in the batch or already held)
    links to it; a signature it carries must verify, and is kept.  A forged
    op has no valid signature and no authenticated successor naming its
    id; a tampered payload or reordered ops change ids
    and break the links (or the head's signature); a truncated batch leaves
    its top op unsigned with no successor.  Any of these refuses the whole
    batch (:class:`~aura_sync.errors.OpRefused`), storing nothing.  Ops are
    verified when they enter, not at every open; ``verify`` re-checks all.
    The next own seq comes from the highest op of the local author, which
    only this node's key can have signed (own ops synced back from a peer,
    after a lost journal, move it too).

Fingerprints (:mod:`~aura_sync.protocols.journal_index`)
    A range's (count, fingerprint) is Negentropy's hashed sum of ids mod
    2**256 with the count, from a four-level tree of per-bucket sums plus
    the ids of at most the two buckets at its edges (read once per request).

Storage and losses
    SQLite (WAL, ``synchronous=FULL``, 4 KiB pages), schema version 6; ops
    are stored in arrival order, SQLite's indexes order (author, seq) and,
    in three tiers (:mod:`~aura_sync.protocols.journal_ids`), the ids — no
    in-memory copy of every id; open does no full scan (after a clean close
    it reads no op row).  A 0-byte,
    truncated, foreign or older-version file is refused
    (:class:`~aura_sync.errors.JournalCorrupt`), never re-created; a journal
    behind its high-water-mark sidecar is refused; after an unclean
    shutdown the full ``integrity_check`` runs once at open.

Threading: one owner (the sync actor); an internal lock makes each call atomic.

Layer: runtime (protocols).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from types import TracebackType
from typing import Final

from aura_sync.errors import InvalidArgument, JournalCorrupt, OpRefused, WrongType
from aura_sync.identity import NodeIdentity, sign_head
from aura_sync.ids import DeviceId
from aura_sync.messages.sync import (
    FULL_RANGE,
    MAX_IDS_BATCH,
    MAX_OPS_BATCH,
    NO_PREV,
    SEQ_LIMIT,
    IdRange,
    Op,
    RangeDigest,
    fingerprint_of,
)
from aura_sync.protocols.journal_chain import (
    CHAIN_ROWS,
    Checked,
    chain_ids,
    chain_rows,
    check_op_id,
    check_ops,
    check_payloads,
    push_order_of,
    push_prefix,
    verify_chains,
)
from aura_sync.protocols.journal_checkpoint import Checkpointer
from aura_sync.protocols.journal_files import HighWaterMark, check_journal_file, read_hwm
from aura_sync.protocols.journal_ids import INDEX_SCHEMA, IdIndex
from aura_sync.protocols.journal_ids import rollback as _rollback
from aura_sync.protocols.journal_index import BUCKET_BITS, COUNT_BITS, RangeSums
from aura_sync.protocols.journal_tree import SELECT_OP, TreeViews
from aura_sync.protocols.journal_tree import op_of_row as _op

__all__ = ["APPLICATION_ID", "JOURNAL_FILE_NAME", "SCHEMA_VERSION", "Journal"]

_log = logging.getLogger("aura_sync.protocols.journal")

APPLICATION_ID: Final = 0x41555241
"""SQLite ``application_id`` of a journal database ("AURA")."""

SCHEMA_VERSION: Final = 6
"""SQLite ``user_version`` of the current journal schema."""

JOURNAL_FILE_NAME: Final = "journal.sqlite3"
"""Conventional name of the journal inside a node's data directory."""

SNAPSHOT_EVERY: Final = 100_000
"""Ops inserted between two persisted snapshots of the bucket aggregates."""

_SCHEMA: Final = (
    "CREATE TABLE ops ("
    " arrival INTEGER PRIMARY KEY,"
    " id BLOB NOT NULL,"
    " author BLOB NOT NULL,"
    " seq INTEGER NOT NULL,"
    " prev BLOB NOT NULL,"
    " payload BLOB NOT NULL,"
    " sig BLOB"
    ")",
    "CREATE UNIQUE INDEX ops_by_author ON ops (author, seq)",
    "CREATE TABLE authors (author BLOB PRIMARY KEY, key BLOB NOT NULL) WITHOUT ROWID",
    "CREATE TABLE buckets (b INTEGER PRIMARY KEY, count INTEGER NOT NULL, total BLOB NOT NULL)",
    "CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID",
    *INDEX_SCHEMA,
)
CACHE_KIB: Final = 96 * 1024
"""SQLite page cache of a journal (KiB): the id index of ~2M ops stays in memory."""

PAGE_SIZE: Final = 4096
"""SQLite page size of a new journal: a sweep dirties most leaves of its slice of the id
index whatever their size, so 4 KiB pages write as many bytes as 1 KiB ones in a quarter
of the WAL frames (append CPU at 1M ops ~1.4x 1 KiB pages', no loss at 10M; measured)."""

CHECKPOINT_PAGES: Final = 5_000
"""WAL pages (~20 MiB) at which the background :class:`~aura_sync.protocols.journal_checkpoint.
Checkpointer` copies them back to the database, off the writer's thread."""

AUTOCHECKPOINT_PAGES: Final = 20_000
"""WAL pages (~80 MiB) at which the writer checkpoints in its own commit: the bound should
the background checkpointer fall behind."""

_TABLES: Final = ["authors", "buckets", "fresh", "ids", "meta", "ops", "recent", "sweeps"]
_SYNC_MODES: Final = ("NORMAL", "FULL")
_SNAPSHOT: Final = (
    f"INSERT OR REPLACE INTO buckets SELECT value >> {COUNT_BITS},"
    f" value & {(1 << COUNT_BITS) - 1}, substr(?2, key * 32 + 1, 32) FROM json_each(?1)"
)
_Row = tuple[int, bytes, bytes, int, bytes, bytes, bytes | None]
"""An ``ops`` row: arrival, id, author, seq, prev, payload, signature (of a signed head)."""


class Journal(TreeViews):
    """An append-only set of signed ops in SQLite (see the module docstring).

    Build it with :meth:`open`; close it with :meth:`close` (or a ``with``).
    """

    def __init__(self, conn: sqlite3.Connection, path: str, identity: NodeIdentity) -> None:
        """Internal: use :meth:`open`."""
        self._conn = conn
        self._path = path
        self._identity = identity
        self._author = identity.device_id
        self._lock = threading.RLock()
        self._sums = RangeSums(BUCKET_BITS)
        self._index = IdIndex(conn)
        self._since_snapshot = 0
        self._next_seq = 0
        self._head = NO_PREV
        self._authors: set[bytes] = set()
        self._arrival = 0
        self._full_digest: RangeDigest | None = None
        self._hwm: HighWaterMark | None = None
        self._checkpointer: Checkpointer | None = None
        self._closed = False

    # --- opening -------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        identity: NodeIdentity,
        synchronous: str = "FULL",
        full_check: bool = False,
    ) -> Journal:
        """Open (or create, if the file does not exist) the journal at ``path``.

        ``identity`` signs the ops :meth:`append` authors.  ``path``
        ":memory:" gives a journal that lives only in memory (tests).
        ``synchronous``: "FULL" (default: a commit is fsynced before the
        high-water mark moves) or "NORMAL".  ``full_check``: run
        ``integrity_check`` even after a clean shutdown.

        Raises :class:`~aura_sync.errors.JournalCorrupt` (see the module
        docstring), :class:`~aura_sync.errors.WrongType` /
        :class:`~aura_sync.errors.InvalidArgument` for bad arguments.
        """
        if not isinstance(path, str | os.PathLike):
            raise WrongType(f"path must be a path, got {type(path).__name__} {path!r}")
        if not isinstance(identity, NodeIdentity):
            raise WrongType(f"identity must be a NodeIdentity, got {type(identity).__name__}")
        if synchronous not in _SYNC_MODES:
            raise InvalidArgument(f"synchronous must be one of {_SYNC_MODES}, got {synchronous!r}")
        name = os.fspath(path)
        exists = name != ":memory:" and check_journal_file(name)
        try:
            conn = sqlite3.connect(name, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise JournalCorrupt(f"journal {name!r} cannot be opened: {exc}") from exc
        journal = cls(conn, name, identity)
        try:
            journal._prepare(exists, synchronous, full_check)
        except sqlite3.Error as exc:
            conn.close()
            raise JournalCorrupt(f"journal {name!r} is corrupt or unreadable: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        return journal

    def _prepare(self, exists: bool, synchronous: str, full_check: bool) -> None:
        conn, name = self._conn, self._path
        if not exists:
            self._create()
        tables = [
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if app_id != APPLICATION_ID:
            raise JournalCorrupt(
                f"{name!r} is a SQLite database but not an aura-sync journal "
                f"(application_id {app_id:#x}, expected {APPLICATION_ID:#x}; tables {tables})"
            )
        if version != SCHEMA_VERSION:
            raise JournalCorrupt(
                f"journal {name!r} has schema version {version}; this build reads version "
                f"{SCHEMA_VERSION} and, being a pre-1.0 release, does not migrate older "
                f"journals (keep it with the release that wrote it, or start a new one)"
            )
        if sorted(tables) != _TABLES:
            raise JournalCorrupt(f"journal {name!r} has the wrong tables {sorted(tables)}")
        meta = dict(conn.execute("SELECT name, value FROM meta").fetchall())
        clean = meta.get("clean", 0) == 1  # the last close was clean
        check = "integrity_check" if full_check or not clean else None
        if check is not None and exists:
            if not clean:
                _log.warning("event=journal_unclean path=%s running integrity_check", name)
            problems = [row[0] for row in conn.execute(f"PRAGMA {check}")]
            if problems != ["ok"]:
                raise JournalCorrupt(
                    f"journal {name!r} fails PRAGMA {check}: {'; '.join(map(str, problems[:5]))}"
                )
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal" and name != ":memory:":
            raise JournalCorrupt(f"journal {name!r} cannot use WAL mode (got {mode!r})")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        conn.execute(f"PRAGMA wal_autocheckpoint = {AUTOCHECKPOINT_PAGES}")
        conn.execute(f"PRAGMA journal_size_limit = {CHECKPOINT_PAGES * PAGE_SIZE // 2}")
        self._arrival = conn.execute("SELECT coalesce(max(arrival), 0) FROM ops").fetchone()[0]
        if name != ":memory:":
            mark = read_hwm(name)
            if mark is not None and self._arrival < mark:
                raise JournalCorrupt(
                    f"journal {name!r} is behind its high-water mark: op #{mark} was "
                    f"committed, the database ends at #{self._arrival}; committed ops were "
                    f"lost (WAL deleted or damaged?)"
                )
            if mark is None and self._arrival:
                _log.warning("event=journal_hwm_missing path=%s", name)
        self._index.load(name, clean, self._arrival)
        self._sums.load(conn.execute("SELECT b, count, total FROM buckets"))
        indexed = meta.get("indexed", 0)
        tail = [row[0] for row in conn.execute("SELECT id FROM ops WHERE arrival > ?", (indexed,))]
        self._sums.add(tail)
        self._since_snapshot = len(tail)
        row = conn.execute(
            "SELECT seq, id FROM ops WHERE author = ? ORDER BY seq DESC LIMIT 1",
            (self._author.raw,),
        ).fetchone()
        if row is not None:
            self._next_seq, self._head = row[0] + 1, row[1]
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('clean', 0)")
        self._mark()
        if name != ":memory:":
            self._checkpointer = Checkpointer(name, CHECKPOINT_PAGES, PAGE_SIZE)

    def _create(self) -> None:
        conn = self._conn
        conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
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

    def _mark(self) -> None:
        if self._path != ":memory:":
            if self._hwm is None:
                self._hwm = HighWaterMark(self._path)
            self._hwm.write(self._arrival)
            if self._checkpointer is not None:
                self._checkpointer.nudge()

    # --- writing -------------------------------------------------------------------------

    def append(self, payload: bytes) -> bytes:
        """Author and sign a new op with ``payload`` (<= 4096 bytes); returns its id."""
        return self.append_many((payload,))[0]

    def append_many(self, payloads: Iterable[bytes]) -> list[bytes]:
        """Author one op per payload in one transaction, signing the last; returns their ids.

        Raises :class:`~aura_sync.errors.WrongType` / :class:`~aura_sync.errors.InvalidArgument`
        for a bad payload, or when the author's seq space (2**63) is exhausted.
        """
        items = list(payloads)
        check_payloads(items)
        if not items:
            return []
        with self._lock:
            self._ensure_open()
            seq, prev = self._next_seq, self._head
            if seq + len(items) > SEQ_LIMIT:
                raise InvalidArgument(
                    f"author {self._author} has used its whole sequence space "
                    f"({seq} of {SEQ_LIMIT} ops): cannot append {len(items)} more"
                )
            author = self._author.raw
            ids = chain_ids(author, seq, prev, items)
            first, count = self._arrival + 1, len(items)
            rows: list[_Row] = list(
                zip(
                    range(first, first + count),
                    ids,
                    itertools.repeat(author, count),
                    range(seq, seq + count),
                    [prev, *ids[:-1]],
                    items,
                    itertools.repeat(None, count),
                    strict=True,
                )
            )
            rows[-1] = (*rows[-1][:6], sign_head(self._identity, ids[-1]))
            known = author in self._authors
            self._insert(rows, {} if known else {author: self._identity.public_key})
            self._next_seq, self._head = seq + count, ids[-1]
            return ids

    def add(self, op: Op) -> bool:
        """Add one op from a peer (it must carry a valid signature); True if it was new."""
        return self.add_many((op,)) == 1

    def add_many(self, ops: Iterable[Op]) -> int:
        """Add a batch of ops from a peer in one transaction; returns how many were new.

        Every op must be authenticated by the batch and the held ops (see the
        module docstring), else :class:`~aura_sync.errors.OpRefused` and
        nothing is stored.
        """
        op_list = list(ops)
        with self._lock:
            self._ensure_open()
            checked = check_ops(op_list, self, strict=True)
            self._store(checked.fresh)
            return len(checked.fresh)

    def ingest(
        self, ops: Sequence[Op], *, ids: Sequence[bytes] | None = None
    ) -> tuple[int, list[Op]]:
        """Like :meth:`add_many`, but ops not covered yet come back instead of refusing.

        Returns (ops added, pending ops): the pending ones lack a signature
        and their successor; pass them again with a later batch.  Forged,
        tampered or forked ops still refuse the whole batch.  ``ids``: the
        :attr:`Op.op_id` of each op if the caller hashed them already (this
        process's own hashes of these ops, never ids received with them).
        """
        op_list = list(ops)
        if ids is not None and len(ids) != len(op_list):
            raise InvalidArgument(f"ids must give one id an op, got {len(ids)} for {len(op_list)}")
        with self._lock:
            self._ensure_open()
            checked: Checked = check_ops(op_list, self, strict=False, ids=ids)
            self._store(checked.fresh)
            return len(checked.fresh), checked.pending

    def _store(self, fresh: Sequence[tuple[bytes, Op, bool]]) -> None:
        """Insert authenticated, not-yet-held ops in one transaction."""
        if not fresh:
            return
        first = self._arrival + 1  # arrival numbers: max + 1 on (nothing is ever deleted)
        rows: list[_Row] = [
            (first + i, key, op.author.raw, op.seq, op.prev, op.payload, op.sig if signed else None)
            for i, (key, op, signed) in enumerate(fresh)
        ]
        unseen = {row[2] for row in rows} - self._authors  # new authors: rare, looked up once
        new_authors: dict[bytes, bytes] = {}
        if unseen:
            new_authors = {op.author.raw: op.key for _, op, _ in fresh if op.author.raw in unseen}
        self._insert(rows, new_authors)
        own = self._author.raw
        mine = [row for row in rows if row[2] == own]  # own ops back from a peer (data lost)
        if mine:
            top = max(mine, key=lambda row: row[3])
            if top[3] >= self._next_seq:
                self._next_seq, self._head = top[3] + 1, top[1]

    def _insert(self, rows: list[_Row], new_authors: dict[bytes, bytes]) -> None:
        """Insert op rows (arrival numbers from max + 1 on) and their authors in one commit."""
        conn = self._conn
        ids = [row[1] for row in rows]
        self._sums.add(ids)
        snapshot = self._since_snapshot + len(ids) >= SNAPSHOT_EVERY
        conn.execute("BEGIN IMMEDIATE")
        try:
            if new_authors:
                conn.executemany("INSERT OR IGNORE INTO authors VALUES (?, ?)", new_authors.items())
            conn.executemany("INSERT INTO ops VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            arrival = self._arrival + len(rows)
            self._index.insert(ids, rows[0][0], arrival)
            if snapshot:
                self._write_snapshot(arrival)
            conn.execute("COMMIT")
        except sqlite3.IntegrityError as exc:
            _rollback(conn)
            self._index.rolled_back()
            self._sums.add(ids, -1)
            raise OpRefused(
                f"the batch holds an op at an (author, seq) where the journal holds another "
                f"op: a fork of its author's chain ({exc})"
            ) from None
        except BaseException:
            _rollback(conn)
            self._index.rolled_back()
            self._sums.add(ids, -1)
            raise
        self._index.committed()
        if snapshot:
            self._sums.dirty.clear()
        self._since_snapshot = 0 if snapshot else self._since_snapshot + len(ids)
        self._authors.update(new_authors)
        self._arrival = arrival
        self._full_digest = None
        self._mark()

    def _write_snapshot(self, arrival: int) -> None:
        # One statement whose rows SQLite cuts from two parameters: binding ~65k rows one
        # by one hands the GIL over per row (~1 s among busy threads, measured).
        self._conn.execute(_SNAPSHOT, self._sums.dirty_packed())
        self._conn.execute("INSERT OR REPLACE INTO meta VALUES ('indexed', ?)", (arrival,))

    # --- HeldChain (for journal_chain) --------------------------------------------------

    def held(self, ids: Sequence[bytes]) -> set[bytes]:
        """The ids among ``ids`` held here."""
        return self._index.held(ids)

    def span(self, author: bytes, lo: int, hi: int) -> list[tuple[int, bytes, bytes]]:
        """``(seq, id, prev)`` of the held ops of ``author`` with ``lo <= seq <= hi``."""
        rows: list[tuple[int, bytes, bytes]] = self._conn.execute(
            "SELECT seq, id, prev FROM ops WHERE author = ? AND seq BETWEEN ? AND ?",
            (author, lo, hi),
        ).fetchall()
        return rows

    # --- reading -------------------------------------------------------------------------

    @property
    def author(self) -> DeviceId:
        """The local node (author of :meth:`append`-ed ops)."""
        return self._author

    @property
    def own_ops(self) -> int:
        """How many ops the local author has written (its next seq)."""
        return self._next_seq

    @property
    def path(self) -> str:
        """The database file."""
        return self._path

    def __len__(self) -> int:
        return self._sums.count

    def has(self, op_id: bytes) -> bool:
        """Whether the op with this 32-byte id is held."""
        check_op_id(op_id, "op_id")
        with self._lock:
            self._ensure_open()
            return bool(self.held((op_id,)))

    def get(self, op_id: bytes) -> Op | None:
        """The op with this id, or None if it is not held."""
        check_op_id(op_id, "op_id")
        found = self._fetch([op_id])
        return found[0] if found else None

    def get_many(self, op_ids: Iterable[bytes]) -> list[Op]:
        """The held ops among ``op_ids`` (at most 128), in the order asked; absent ids skipped."""
        wanted = list(op_ids)
        if len(wanted) > MAX_OPS_BATCH:
            raise InvalidArgument(f"get_many takes at most {MAX_OPS_BATCH} ids, got {len(wanted)}")
        for i, item in enumerate(wanted):
            check_op_id(item, f"op_ids[{i}]")
        return self._fetch(wanted)

    def _fetch(self, wanted: list[bytes]) -> list[Op]:
        if not wanted:
            return []
        with self._lock:
            self._ensure_open()
            arrivals = self._index.arrivals(wanted)
            marks = ",".join("?" * len(arrivals))
            query = f"{SELECT_OP}WHERE o.arrival IN ({marks})"
            rows = self._conn.execute(query, arrivals).fetchall()
        found = {row[0]: _op(row) for row in rows}
        return [found[key] for key in wanted if key in found]

    def missing(self, op_ids: Iterable[bytes]) -> list[bytes]:
        """The ids among ``op_ids`` that this journal does not hold (order kept, no duplicates)."""
        wanted = list(dict.fromkeys(op_ids))
        for i, item in enumerate(wanted):
            check_op_id(item, f"op_ids[{i}]")
        with self._lock:
            self._ensure_open()
            held = self.held(wanted)
        return [key for key in wanted if key not in held]

    def not_in(self, their_ids: Iterable[bytes], id_range: IdRange = FULL_RANGE) -> list[bytes]:
        """The ids this journal holds in ``id_range`` that are not in ``their_ids`` (ascending)."""
        theirs = set(their_ids)
        return [key for key in self._iter_ids(id_range) if key not in theirs]

    def push_order(self, op_ids: Iterable[bytes], limit: int | None = None) -> list[bytes]:
        """The held ids among ``op_ids``, completed, ordered by author, then seq descending.

        Sent in this order (in batches), each batch's ops are authenticated
        by their signed heads or by the successors sent before them.  Above
        each run of an author's ops not topped by a signed head, the ops up
        to the next signed head are added: a peer that looked as if it held
        them may not (this journal can grow during a session, so ranges
        compared earlier may hide them); ops it holds are merely "known".
        With ``limit``: the first ``limit`` of that order, without reading
        the rest when ``op_ids`` are most of the journal.
        """
        wanted = list(op_ids)
        with self._lock:
            self._ensure_open()
            if limit is not None and limit < len(wanted) and len(self) <= 4 * len(wanted):
                with contextlib.closing(chain_rows(self._conn)) as rows:
                    return push_prefix(rows, set(wanted), limit, 1 + 2 * MAX_IDS_BATCH)
            order = push_order_of(self._conn, self._index.arrivals, wanted, 1 + 2 * MAX_IDS_BATCH)
        return order[:limit]

    def all_ids(self) -> tuple[bytes, ...]:
        """Every held id, ascending (O(n): for tests and tools)."""
        return tuple(self._iter_ids(FULL_RANGE))

    def ops_by(self, author: DeviceId, after: int = -1, limit: int = 1 << 62) -> list[Op]:
        """Held ops of ``author`` with seq above ``after``, by seq (at most ``limit``)."""
        if type(author) is not DeviceId:
            raise WrongType(f"author must be a DeviceId, got {type(author).__name__}")
        with self._lock:
            self._ensure_open()
            rows = self._conn.execute(
                f"{SELECT_OP}WHERE o.author = ? AND o.seq > ? ORDER BY o.seq LIMIT ?",
                (author.raw, after, limit),
            ).fetchall()
        return [_op(row) for row in rows]

    def digest(self, id_range: IdRange = FULL_RANGE) -> RangeDigest:
        """Count and fingerprint of the ids held in ``id_range`` (equal iff same id set)."""
        return self.digests((id_range,))[0]

    def digests(self, ranges: Iterable[IdRange]) -> tuple[RangeDigest, ...]:
        """:meth:`digest` of each range, in order (a bucket at several edges is read once)."""
        wanted = tuple(ranges)
        for i, id_range in enumerate(wanted):
            if type(id_range) is not IdRange:
                raise WrongType(f"ranges[{i}] must be an IdRange, got {type(id_range).__name__}")
        read: dict[int, list[bytes]] = {}
        prefixes: dict[int, tuple[int, int]] = {}

        def fetch(bucket: int) -> list[bytes]:
            if bucket not in read:
                read[bucket] = self._bucket_ids(bucket)
            return read[bucket]

        out: list[RangeDigest] = []
        with self._lock:
            self._ensure_open()
            for id_range in wanted:
                if id_range == FULL_RANGE and self._full_digest is not None:
                    out.append(self._full_digest)
                    continue
                count, total = self._sums.range_sum(id_range.lo, id_range.hi, fetch, prefixes)
                result = RangeDigest(id_range, count, fingerprint_of(count, total))
                if id_range == FULL_RANGE:
                    self._full_digest = result
                out.append(result)
        return tuple(out)

    def _bucket_ids(self, bucket: int) -> list[bytes]:
        """The held ids of one fingerprint bucket, ascending."""
        sums = self._sums
        hi = sums.bucket_start(bucket + 1) if bucket + 1 < 1 << sums.bits else None
        return list(self._iter_ids(IdRange(sums.bucket_start(bucket), hi)))

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
        page = list(self._iter_ids(id_range, limit + 1))
        if len(page) > limit:
            return tuple(page[:limit]), page[limit]
        return tuple(page), None

    def _iter_ids(self, id_range: IdRange, limit: int = -1) -> Iterator[bytes]:
        with self._lock:
            self._ensure_open()
            return self._index.iter_ids(id_range.lo, id_range.hi, limit)

    # --- checking ------------------------------------------------------------------------

    def verify(self) -> list[tuple[str, bool, str]]:
        """Run every check on the whole journal; ``(check, ok, detail)`` per check (O(n))."""
        out: list[tuple[str, bool, str]] = []
        with self._lock:
            self._ensure_open()
            problems = [row[0] for row in self._conn.execute("PRAGMA integrity_check")]
            out.append(("integrity_check", problems == ["ok"], "; ".join(problems[:5])))
            out.append(verify_chains(self._conn.execute(CHAIN_ROWS)))
            out.append(self._index.check())
            fresh = RangeSums(BUCKET_BITS)
            fresh.add(row[0] for row in self._conn.execute("SELECT id FROM ops"))
            same = fresh.count == self._sums.count and fresh.total % (1 << 256) == (
                self._sums.total % (1 << 256)
            )
            out.append(("fingerprints", same, f"{fresh.count} ids, aggregates match: {same}"))
            if self._path != ":memory:":
                mark = read_hwm(self._path)
                ok = mark is None or mark <= self._arrival
                out.append(("high_water_mark", ok, f"mark {mark}, database at {self._arrival}"))
        return out

    # --- closing -------------------------------------------------------------------------

    def close(self) -> None:
        """Persist the aggregates and the fresh ids, mark a clean shutdown, checkpoint and
        close.  Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._checkpointer is not None:
                self._checkpointer.stop()
            try:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("BEGIN IMMEDIATE")
                    self._write_snapshot(self._arrival)
                    self._index.save(self._arrival)
                    self._conn.execute("INSERT OR REPLACE INTO meta VALUES ('clean', 1)")
                    self._conn.execute("COMMIT")
                    self._sums.dirty.clear()
                    self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                _rollback(self._conn)
                self._conn.close()
                if self._hwm is not None:
                    self._hwm.close()

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
        state = " closed" if self._closed else ""
        return f"<Journal {self._path!r} ops={self._sums.count}{state}>"

    def _ensure_open(self) -> None:
        if self._closed:
            raise InvalidArgument(f"journal {self._path!r} is closed")
