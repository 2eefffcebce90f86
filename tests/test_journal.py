"""The SQLite journal: content addressing, idempotent adds, digests, paging, corruption."""

from __future__ import annotations

import itertools
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aura_sync.errors import InvalidArgument, JournalCorrupt, WrongType
from aura_sync.ids import DeviceId
from aura_sync.messages.sync import (
    FULL_RANGE,
    MAX_OP_PAYLOAD,
    MAX_OPS_BATCH,
    IdRange,
    Op,
    op_id,
)
from aura_sync.protocols.journal import APPLICATION_ID, JOURNAL_FILE_NAME, Journal

ME, PEER = DeviceId.from_int(1), DeviceId.from_int(2)


def _open(path: Path | str = ":memory:", author: DeviceId = ME) -> Journal:
    return Journal.open(path, author=author)


def test_append_assigns_sequence_and_content_address(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_FILE_NAME
    with _open(path) as journal:
        first = journal.append(b"one")
        second = journal.append(b"one")  # same payload, next seq: a distinct op
        assert first == op_id(ME, 0, b"one") and second == op_id(ME, 1, b"one")
        assert first != second and len(journal) == 2
        assert journal.get(first) == Op(ME, 0, b"one")
        assert journal.has(second) and not journal.has(bytes(32))
        assert journal.get(bytes(32)) is None
    assert journal.closed
    with _open(path) as reopened:  # a restarted node keeps its ops and its sequence
        assert reopened.all_ids() == tuple(sorted((first, second)))
        third = reopened.append(b"two")
        assert third == op_id(ME, 2, b"two")
        assert [op.seq for op in reopened.ops_by(ME)] == [0, 1, 2]


def test_ops_survive_the_process_being_killed(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_FILE_NAME
    script = (
        "import os, signal, sys\n"
        "from aura_sync.ids import DeviceId\n"
        "from aura_sync.protocols.journal import Journal\n"
        f"j = Journal.open({str(path)!r}, author=DeviceId.from_int(1))\n"
        "ids = j.append_many([b'a', b'b', b'c'])\n"
        "print(' '.join(i.hex() for i in ids), flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    ids = {bytes.fromhex(x) for x in done.stdout.split()}
    assert len(ids) == 3
    with _open(path) as reopened:  # nothing was checkpointed or closed: the WAL is replayed
        assert set(reopened.all_ids()) == ids
        assert reopened.append(b"d") == op_id(ME, 3, b"d")


def test_add_from_peer_is_idempotent_and_verifies_the_content_address() -> None:
    with _open() as journal:
        op = Op(PEER, 5, b"remote")
        assert journal.add(op) is True
        assert journal.add(op) is False
        assert journal.add(op, expected_id=op.op_id) is False
        assert len(journal) == 1
        forged = Op(PEER, 6, b"evil")
        with pytest.raises(InvalidArgument, match="does not match its content address"):
            journal.add(forged, expected_id=op_id(PEER, 6, b"good"))
        assert not journal.has(forged.op_id) and len(journal) == 1
        batch = [Op(PEER, i, b"x") for i in range(10)]
        assert journal.add_many(batch + batch) == 10
        assert journal.add_many(batch) == 0
        with pytest.raises(InvalidArgument, match="expected_ids has 1 ids for 2 ops"):
            journal.add_many(batch[:2], [batch[0].op_id])
        # a failing batch stores nothing at all
        bad = [Op(PEER, 100, b"ok"), Op(PEER, 101, b"bad")]
        with pytest.raises(InvalidArgument):
            journal.add_many(bad, [bad[0].op_id, bytes(32)])
        assert not journal.has(bad[0].op_id)


def test_missing_and_not_in_and_get_many() -> None:
    with _open() as journal:
        ids = journal.append_many([bytes([i]) for i in range(5)])
        unknown = op_id(PEER, 0, b"?")
        assert journal.missing([ids[0], unknown, unknown]) == [unknown]
        assert journal.not_in(ids[:2]) == sorted(ids[2:])
        assert journal.get_many([ids[3], unknown, ids[1]]) == [
            Op(ME, 3, b"\x03"),
            Op(ME, 1, b"\x01"),
        ]
        with pytest.raises(InvalidArgument, match="at most 128"):
            journal.get_many([ids[0]] * (MAX_OPS_BATCH + 1))


def test_list_ids_pages_through_ranges() -> None:
    with _open() as journal:
        journal.append_many([i.to_bytes(2, "big") for i in range(300)])
        everything = journal.all_ids()
        listed: list[bytes] = []
        current: IdRange | None = FULL_RANGE
        pages = 0
        while current is not None:
            page, next_lo = journal.list_ids(current, 128)
            assert len(page) <= 128
            listed += page
            pages += 1
            current = None if next_lo is None else IdRange(next_lo, current.hi)
        assert tuple(listed) == everything and pages == 3
        parts = FULL_RANGE.split(4)
        per_part = [journal.list_ids(r, 1024)[0] for r in parts]
        assert sum(per_part, ()) == everything
        for r, ids in zip(parts, per_part, strict=True):
            assert all(r.contains(x) for x in ids)
            assert journal.digest(r).count == len(ids)
        assert sum(journal.digest(r).count for r in parts) == 300


_pool = [Op(DeviceId.from_int(a), s, b"p") for a in range(1, 4) for s in range(12)]


@settings(max_examples=40, deadline=None)
@given(st.sets(st.sampled_from(range(len(_pool)))), st.sets(st.sampled_from(range(len(_pool)))))
def test_digest_equal_iff_same_set(left: set[int], right: set[int]) -> None:
    with _open() as a, _open() as b:
        a.add_many(_pool[i] for i in sorted(left))
        b.add_many(_pool[i] for i in reversed(sorted(right)))  # order does not matter
        assert (a.digest() == b.digest()) == (left == right)
        for r in FULL_RANGE.split(8):
            same = {x for x in a.all_ids() if r.contains(x)} == {
                x for x in b.all_ids() if r.contains(x)
            }
            assert (a.digest(r) == b.digest(r)) == same


def test_two_journals_reconcile_in_batches_of_128() -> None:
    """The journal API is enough for range-based reconciliation (what the protocol does)."""
    with _open(author=ME) as a, _open(author=PEER) as b:
        a.append_many(b"a%d" % i for i in range(300))
        b.append_many(b"b%d" % i for i in range(200))
        shared = [Op(DeviceId.from_int(9), i, b"s") for i in range(50)]
        a.add_many(shared)
        b.add_many(shared)
        assert a.digest() != b.digest()
        batches = 0
        for r in FULL_RANGE.split(16):
            if a.digest(r) == b.digest(r):
                continue
            theirs = b.list_ids(r, 1024)[0]
            pull = a.missing(theirs)
            push = a.not_in(theirs, r)
            for i in range(0, len(pull), MAX_OPS_BATCH):
                batch = pull[i : i + MAX_OPS_BATCH]
                a.add_many(b.get_many(batch), batch)
                batches += 1
            for i in range(0, len(push), MAX_OPS_BATCH):
                batch = push[i : i + MAX_OPS_BATCH]
                b.add_many(a.get_many(batch), batch)
                batches += 1
        assert a.digest() == b.digest() and len(a) == 550
        assert a.all_ids() == b.all_ids()
        assert batches >= 16  # each differing range needed its own pull and push


def test_garbage_file_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_FILE_NAME
    garbage = os.urandom(8192)
    path.write_bytes(garbage)
    with pytest.raises(JournalCorrupt, match="not a SQLite database") as info:
        _open(path)
    assert str(path) in str(info.value)
    assert path.read_bytes() == garbage


def test_corrupted_pages_are_detected(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_FILE_NAME
    with _open(path) as journal:
        journal.append_many(os.urandom(1000) for _ in range(200))
    data = bytearray(path.read_bytes())
    for offset in range(4096 * 3, 4096 * 6):
        data[offset] ^= 0x5A
    path.write_bytes(bytes(data))
    with pytest.raises(JournalCorrupt, match=r"corrupt|quick_check|does not match"):
        _open(path)
    assert path.read_bytes() == bytes(data)


def test_tampered_row_is_detected(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_FILE_NAME
    with _open(path) as journal:
        ids = journal.append_many([b"honest", b"also honest"])
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE ops SET payload = ? WHERE id = ?", (b"tampered", ids[0]))
    raw.close()
    with pytest.raises(JournalCorrupt, match=f"op {ids[0].hex()} does not match its content"):
        _open(path)


def test_foreign_and_wrong_schema_databases_are_refused(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as raw:
        raw.execute("CREATE TABLE things (x)")
    raw.close()
    with pytest.raises(JournalCorrupt, match="not an aura-sync journal"):
        _open(foreign)

    newer = tmp_path / "newer.db"
    with _open(newer):
        pass
    with sqlite3.connect(newer) as raw:
        raw.execute("PRAGMA user_version = 2")
    raw.close()
    with pytest.raises(JournalCorrupt, match="schema version 2"):
        _open(newer)

    odd = tmp_path / "odd.db"
    with sqlite3.connect(odd) as raw:
        raw.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        raw.execute("PRAGMA user_version = 1")
        raw.execute("CREATE TABLE ops (id BLOB, data BLOB)")
    raw.close()
    with pytest.raises(JournalCorrupt, match="wrong schema"):
        _open(odd)


def test_arguments_are_validated(tmp_path: Path) -> None:
    with pytest.raises(WrongType, match="author"):
        Journal.open(":memory:", author="me")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="synchronous"):
        Journal.open(":memory:", author=ME, synchronous="OFF")
    with pytest.raises(InvalidArgument, match="does not exist"):
        _open(tmp_path / "missing-dir" / JOURNAL_FILE_NAME)
    with _open() as journal:
        with pytest.raises(InvalidArgument, match=f"at most {MAX_OP_PAYLOAD} bytes"):
            journal.append(bytes(MAX_OP_PAYLOAD + 1))
        with pytest.raises(WrongType, match="payload"):
            journal.append("text")  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument, match="32 bytes"):
            journal.has(b"short")
        with pytest.raises(WrongType, match="ops"):
            journal.add_many([b"not an op"])  # type: ignore[list-item]
        with pytest.raises(InvalidArgument, match="limit"):
            journal.list_ids(FULL_RANGE, 0)
        assert len(journal) == 0  # nothing changed on rejected calls
    with pytest.raises(InvalidArgument, match="closed"):
        journal.append(b"late")


def test_sync_messages_validate_ids_ranges_and_batches() -> None:
    from aura_sync.messages.sync import (
        IdsReply,
        OpsRequest,
        PeerAddress,
        PeerExchange,
        PushOps,
        Request,
    )

    parts = FULL_RANGE.split(3)
    assert parts[0].lo == bytes(32) and parts[-1].hi is None
    assert all(p.hi == q.lo for p, q in itertools.pairwise(parts))
    tiny = IdRange(bytes(31) + b"\x01", bytes(31) + b"\x03")
    assert len(tiny.split(16)) == 2  # never an empty range
    with pytest.raises(InvalidArgument, match="hi must be above lo"):
        IdRange(bytes(32), bytes(32))
    with pytest.raises(InvalidArgument, match="32 bytes"):
        OpsRequest((b"short",))
    with pytest.raises(InvalidArgument, match=r"1\.\.128"):
        OpsRequest(tuple(op_id(ME, i, b"") for i in range(129)))
    with pytest.raises(InvalidArgument, match=r"duplicate|repeats id"):
        OpsRequest((op_id(ME, 0, b""),) * 2)
    with pytest.raises(InvalidArgument, match=r"1\.\.128"):
        PushOps(())
    with pytest.raises(WrongType, match=r"ops\[0\]"):
        PushOps((b"x",))  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="ascending"):
        IdsReply((op_id(ME, 1, b""), op_id(ME, 1, b"")))
    with pytest.raises(InvalidArgument, match="twice"):
        PeerExchange((PeerAddress(ME, "127.0.0.1:1"), PeerAddress(ME, "127.0.0.1:2")))
    with pytest.raises(InvalidArgument, match="address"):
        PeerAddress(ME, "")
    with pytest.raises(InvalidArgument, match="request_id"):
        Request(0, b"\x91\x01")


class _FullDisk:
    """A connection whose COMMIT fails after SQLite rolled back by itself (disk full)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    @property
    def in_transaction(self) -> bool:
        return self._conn.in_transaction

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        if sql == "COMMIT":
            self._conn.execute("ROLLBACK")
            raise sqlite3.OperationalError("database or disk is full")
        return self._conn.execute(sql, *args)

    def executemany(self, sql: str, rows: object) -> sqlite3.Cursor:
        return self._conn.executemany(sql, rows)  # type: ignore[arg-type]


def test_failed_commit_reports_the_real_error_and_stores_nothing(tmp_path: Path) -> None:
    journal = _open(tmp_path / JOURNAL_FILE_NAME)
    try:
        journal.append(b"kept")
        real = journal._conn
        journal._conn = _FullDisk(real)  # type: ignore[assignment]
        with pytest.raises(sqlite3.OperationalError, match="disk is full"):
            journal.append_many([b"lost-1", b"lost-2"])
        with pytest.raises(sqlite3.OperationalError, match="disk is full"):
            journal.add(Op(PEER, 0, b"theirs"))
        assert len(journal) == 1
        journal._conn = real
        assert journal.append(b"next") == op_id(ME, 1, b"next")  # the sequence did not move
        assert len(journal) == 2
    finally:
        journal.close()
