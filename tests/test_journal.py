"""The SQLite journal: signed chains, idempotent adds, digests, paging, losses and corruption."""

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

from aura_sync.errors import InvalidArgument, JournalCorrupt, OpRefused, WrongType
from aura_sync.identity import NodeIdentity, sign_head
from aura_sync.messages.sync import (
    FULL_RANGE,
    MAX_OP_PAYLOAD,
    MAX_OPS_BATCH,
    NO_PREV,
    SEQ_LIMIT,
    IdRange,
    Op,
    fingerprint,
    op_id,
)
from aura_sync.protocols.journal import (
    APPLICATION_ID,
    JOURNAL_FILE_NAME,
    SCHEMA_VERSION,
    Journal,
)
from aura_sync.protocols.reconcile import ChainBuffer

ME, PEER, OTHER = NodeIdentity.generate(), NodeIdentity.generate(), NodeIdentity.generate()


def _open(path: Path | str = ":memory:", identity: NodeIdentity = ME) -> Journal:
    return Journal.open(path, identity=identity)


def chain(
    who: NodeIdentity,
    payloads: list[bytes],
    *,
    start: int = 0,
    prev: bytes = NO_PREV,
    sign: str = "last",
) -> list[Op]:
    """``who``'s ops for ``payloads`` from seq ``start``; ``sign``: "last", "all" or "none"."""
    out: list[Op] = []
    for i, payload in enumerate(payloads):
        op = Op(who.device_id, start + i, payload, prev, who.public_key)
        prev = op.op_id
        out.append(op)
    for i, op in enumerate(out):
        if sign == "all" or (sign == "last" and i == len(out) - 1):
            out[i] = Op(op.author, op.seq, op.payload, op.prev, op.key, sign_head(who, op.op_id))
    return out


def test_append_builds_a_signed_chain_and_reopening_continues_it(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_FILE_NAME
    me = ME.device_id
    with _open(path) as journal:
        first, second = journal.append_many([b"one", b"one"])  # same payload: two ops
        assert first == op_id(me, 0, b"one") and second == op_id(me, 1, b"one", first)
        assert len(journal) == 2 and journal.own_ops == 2
        op0, op1 = journal.get_many([first, second])
        assert (op0.sig, op0.key) == (b"", ME.public_key)  # covered by the chain
        assert len(op1.sig) == 64  # the signed head of the batch
        assert journal.has(second) and not journal.has(bytes(32))
        assert journal.get(bytes(32)) is None
    assert journal.closed
    with _open(path) as reopened:  # a restarted node keeps its ops and its chain
        assert set(reopened.all_ids()) == {first, second}
        third = reopened.append(b"two")
        assert third == op_id(me, 2, b"two", second)
        assert [op.seq for op in reopened.ops_by(me)] == [0, 1, 2]
        assert all(ok for _, ok, _ in reopened.verify())


def test_ops_survive_the_process_being_killed(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_FILE_NAME
    ids = _append_and_kill(path, ME)
    assert len(ids) == 3
    with _open(path) as reopened:  # nothing was checkpointed or closed: the WAL is replayed
        assert set(reopened.all_ids()) == ids
        reopened.append(b"d")
        assert reopened.own_ops == 4


def _append_and_kill(path: Path, who: NodeIdentity) -> set[bytes]:
    key = tmp_key = path.parent / "key.pem"
    from cryptography.hazmat.primitives import serialization

    key.write_bytes(
        who.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key.chmod(0o600)
    script = (
        "import os, signal\n"
        "from aura_sync.identity import NodeIdentity\n"
        "from aura_sync.protocols.journal import Journal\n"
        f"j = Journal.open({str(path)!r}, identity=NodeIdentity.load({str(tmp_key)!r}))\n"
        "ids = j.append_many([b'a', b'b', b'c'])\n"
        "print(' '.join(i.hex() for i in ids), flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    return {bytes.fromhex(x) for x in done.stdout.split()}


def test_a_wal_deleted_after_a_kill_is_detected(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_FILE_NAME
    with _open(path) as journal:
        journal.append(b"checkpointed")
    assert len(_append_and_kill(path, ME)) == 3
    wal = Path(f"{path}-wal")
    assert wal.stat().st_size > 0
    wal.unlink()
    with pytest.raises(JournalCorrupt, match="behind its high-water mark") as info:
        _open(path)
    assert str(path) in str(info.value) and "lost" in str(info.value)


def test_signed_ops_from_peers_are_checked_and_idempotent() -> None:
    theirs = chain(PEER, [b"p%d" % i for i in range(10)])
    with _open() as journal:
        assert journal.add_many(theirs + theirs) == 10
        assert journal.add_many(theirs) == 0
        assert journal.add(theirs[-1]) is False
        more = chain(PEER, [b"q"], start=10, prev=theirs[-1].op_id, sign="none")
        with pytest.raises(OpRefused, match="not covered by a signature"):
            journal.add_many(more)
        signed_more = chain(PEER, [b"q"], start=10, prev=theirs[-1].op_id)
        assert journal.add_many(signed_more) == 1
        assert len(journal) == 11
        assert all(ok for _, ok, _ in journal.verify())


def _refused(journal: Journal, batch: list[Op], match: str) -> None:
    before = (len(journal), journal.digest())
    with pytest.raises(OpRefused, match=match):
        journal.add_many(batch)
    assert (len(journal), journal.digest()) == before  # nothing of the batch was stored
    assert not any(journal.has(op.op_id) for op in batch)


def test_unsigned_forged_and_mismatched_ops_are_refused_whole() -> None:
    good = chain(PEER, [b"a", b"b", b"c"])
    with _open() as journal:
        _refused(journal, chain(PEER, [b"a", b"b"], sign="none"), "not covered")
        unkeyed = Op(PEER.device_id, 0, b"a")
        _refused(journal, [unkeyed], "no 32-byte author key")
        # author B, key and signature of C: C cannot write as B
        as_b = Op(PEER.device_id, 0, b"evil", NO_PREV, OTHER.public_key)
        as_b = Op(as_b.author, 0, b"evil", NO_PREV, OTHER.public_key, sign_head(OTHER, as_b.op_id))
        _refused(journal, [*good[:2], as_b], "not its author's")
        # B's key, but a signature that B did not make
        forged = Op(PEER.device_id, 3, b"evil", good[2].op_id, PEER.public_key)
        forged = Op(
            forged.author, 3, b"evil", forged.prev, PEER.public_key, sign_head(OTHER, forged.op_id)
        )
        _refused(journal, [*good, forged], "signature does not verify")
        tampered = [good[0], Op(PEER.device_id, 1, b"B", good[1].prev, PEER.public_key), good[2]]
        _refused(journal, tampered, "does not link")
        swapped = [
            good[0],
            *chain(PEER, [b"c", b"b"], start=1, prev=good[0].op_id, sign="none"),
            good[2],
        ]
        _refused(journal, swapped[:3], "not covered")
        reordered = [good[1], good[0], good[2]]
        assert journal.add_many(reordered) == 3  # the list order never mattered
        with _open() as other:
            _refused(other, good[:2], "truncated")


def test_a_peer_cannot_move_the_local_sequence() -> None:
    with _open() as journal:
        journal.append(b"mine")
        poison = Op(ME.device_id, SEQ_LIMIT - 1, b"poison", NO_PREV, PEER.public_key, bytes(64))
        _refused(journal, [poison], "not its author's")
        keyed = Op(ME.device_id, SEQ_LIMIT - 1, b"poison", NO_PREV, ME.public_key, bytes(64))
        _refused(journal, [keyed], "signature does not verify")
        assert journal.own_ops == 1
        journal.append(b"still writing")
        assert journal.own_ops == 2


def test_own_ops_synced_back_after_a_lost_journal_move_the_local_sequence() -> None:
    """A node whose journal was lost gets its own signed ops back from a peer: its next
    append continues its chain after them instead of forking it at an early seq."""
    with _open() as before, _open() as peer, _open() as after:
        before.append_many([b"one", b"two", b"three"])
        assert peer.add_many(before.ops_by(ME.device_id)[::-1]) == 3  # in push order
        assert after.own_ops == 0  # same key, empty journal
        assert after.add_many(peer.ops_by(ME.device_id)[1:][::-1]) == 2  # seq 1 and 2 first
        assert after.add_many(peer.ops_by(ME.device_id)[:1]) == 1  # then seq 0 (no move back)
        assert after.own_ops == 3
        new = after.append(b"four")
        assert [op.seq for op in after.ops_by(ME.device_id)] == [0, 1, 2, 3]
        assert after.get(new).prev == before.ops_by(ME.device_id)[-1].op_id  # type: ignore[union-attr]
        assert peer.add_many(after.ops_by(ME.device_id, after=2)) == 1  # no fork for the peer


def test_an_exhausted_sequence_space_is_a_clear_error_on_append() -> None:
    with _open() as journal:
        journal._next_seq = SEQ_LIMIT - 1  # as if 2**63-1 ops had been written
        with pytest.raises(InvalidArgument, match="whole sequence space"):
            journal.append_many([b"a", b"b"])
        assert len(journal) == 0
        journal.append(b"the very last")
        assert journal.own_ops == SEQ_LIMIT


def test_missing_and_not_in_and_get_many() -> None:
    with _open() as journal:
        ids = journal.append_many([bytes([i]) for i in range(5)])
        unknown = op_id(PEER.device_id, 0, b"?")
        assert journal.missing([ids[0], unknown, unknown]) == [unknown]
        assert journal.not_in(ids[:2]) == sorted(ids[2:])
        got = journal.get_many([ids[3], unknown, ids[1]])
        assert [(op.seq, op.payload) for op in got] == [(3, b"\x03"), (1, b"\x01")]
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


_pool = [op for who in (ME, PEER, OTHER) for op in chain(who, [b"p"] * 12, sign="all")]


@settings(max_examples=30, deadline=None)
@given(st.sets(st.sampled_from(range(len(_pool)))), st.sets(st.sampled_from(range(len(_pool)))))
def test_digest_equal_iff_same_set(left: set[int], right: set[int]) -> None:
    with _open(identity=OTHER) as a, _open(identity=OTHER) as b:
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
    with _open(identity=ME) as a, _open(identity=PEER) as b:
        a.append_many(b"a%d" % i for i in range(300))
        b.append_many(b"b%d" % i for i in range(200))
        shared = chain(OTHER, [b"s%d" % i for i in range(50)])
        a.add_many(shared)
        b.add_many(shared)
        assert a.digest() != b.digest()
        batches = 0
        buffer = ChainBuffer(a, group=MAX_OPS_BATCH)
        push: list[bytes] = []
        for r in FULL_RANGE.split(16):
            if a.digest(r) == b.digest(r):
                continue
            theirs = b.list_ids(r, 1024)[0]
            pull = a.missing(theirs)
            push += a.not_in(theirs, r)
            for i in range(0, len(pull), MAX_OPS_BATCH):
                buffer.take(b.get_many(pull[i : i + MAX_OPS_BATCH]))
                batches += 1
        buffer.flush()
        order = a.push_order(push)
        for i in range(0, len(order), MAX_OPS_BATCH):
            b.add_many(a.get_many(order[i : i + MAX_OPS_BATCH]))
            batches += 1
        assert a.digest() == b.digest() and len(a) == 550
        assert a.all_ids() == b.all_ids()
        assert batches >= 16  # each differing range needed its own pull


def test_incremental_fingerprints_match_a_recomputation(tmp_path: Path) -> None:
    with _open(tmp_path / JOURNAL_FILE_NAME) as journal:
        for _ in range(5):
            journal.append_many([os.urandom(8) for _ in range(400)])
        ids = sorted(journal.all_ids())
        edges = {bytes(32), ids[7], ids[7][:2] + bytes(30), ids[1500], b"\x80" + bytes(31)}
        cuts: list[bytes | None] = [*sorted(edges), None]
        for lo, hi in itertools.combinations(cuts, 2):
            assert lo is not None
            r = IdRange(lo, hi)
            expected = fingerprint(x for x in ids if r.contains(x))
            assert (journal.digest(r).count, journal.digest(r).fingerprint) == expected


def test_empty_truncated_and_garbage_files_are_refused_and_left_untouched(
    tmp_path: Path,
) -> None:
    path = tmp_path / JOURNAL_FILE_NAME
    path.write_bytes(b"")
    with pytest.raises(JournalCorrupt, match="0-byte") as info:
        _open(path)
    assert str(path) in str(info.value) and path.read_bytes() == b""
    garbage = os.urandom(8192)
    path.write_bytes(garbage)
    with pytest.raises(JournalCorrupt, match="not a SQLite database"):
        _open(path)
    assert path.read_bytes() == garbage
    path.unlink()
    with _open(path) as journal:
        journal.append_many(os.urandom(1000) for _ in range(100))
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(JournalCorrupt, match="truncated"):
        _open(path)


def test_corrupted_pages_are_found_by_the_full_check(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_FILE_NAME
    with _open(path) as journal:
        journal.append_many(os.urandom(1000) for _ in range(200))
    data = bytearray(path.read_bytes())
    for offset in range(4096 * 3, 4096 * 6):
        data[offset] ^= 0x5A
    path.write_bytes(bytes(data))
    with pytest.raises(JournalCorrupt, match=r"corrupt|integrity_check|malformed"):
        Journal.open(path, identity=ME, full_check=True)
    assert path.read_bytes() == bytes(data)


def test_an_unclean_shutdown_runs_the_integrity_check(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / JOURNAL_FILE_NAME
    _append_and_kill(path, ME)
    with caplog.at_level("WARNING", "aura_sync.protocols.journal"), _open(path):
        pass
    assert "journal_unclean" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", "aura_sync.protocols.journal"), _open(path):
        pass
    assert "journal_unclean" not in caplog.text  # once: the last close was clean


def test_a_clean_reopen_loads_the_fresh_ids_from_their_snapshot(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_FILE_NAME
    with _open(path) as journal:
        ids = journal.append_many([b"op-%d" % i for i in range(50)])
    # a clean open reads the snapshot, not the op rows: an id changed in ``ops`` alone is
    # not seen, and verify reports that the two disagree
    other = b"\x00" * 32
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE ops SET id = ? WHERE id = ?", (other, ids[0]))
    raw.close()
    with _open(path) as journal:
        assert journal.has(ids[0]) and not journal.has(other)
        report = {name: ok for name, ok, _ in journal.verify()}
    assert report["id_index"] is False


def test_after_a_kill_the_fresh_ids_come_from_the_ops_not_an_older_snapshot(
    tmp_path: Path,
) -> None:
    path = tmp_path / JOURNAL_FILE_NAME
    with _open(path) as journal:
        first = journal.append(b"before the snapshot")
    later = _append_and_kill(path, ME)  # appended after the clean close, then killed
    with _open(path) as journal:
        assert set(journal.all_ids()) == {first} | later
        assert all(journal.has(key) for key in later)
        assert all(ok for _, ok, _ in journal.verify())


@pytest.mark.parametrize(
    ("change", "what"),
    [
        ("UPDATE fresh SET arrival = arrival - 1", "of op #2"),  # a snapshot of another state
        ("UPDATE fresh SET ids = substr(ids, 1, 39)", "(39 bytes)"),  # cut inside an entry
    ],
)
def test_a_snapshot_that_does_not_match_its_journal_is_refused(
    tmp_path: Path, change: str, what: str
) -> None:
    path = tmp_path / JOURNAL_FILE_NAME
    with _open(path) as journal:
        journal.append_many([b"a", b"b", b"c"])
    with sqlite3.connect(path) as raw:
        raw.execute(change)
    raw.close()
    with pytest.raises(JournalCorrupt, match="fresh-id snapshot") as info:
        _open(path)
    assert what in str(info.value) and str(path) in str(info.value)


def test_verify_finds_a_tampered_row(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_FILE_NAME
    with _open(path) as journal:
        journal.append_many([b"honest", b"also honest"])
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE ops SET payload = ? WHERE seq = 0", (b"tampered",))
    raw.close()
    with _open(path) as journal:
        report = dict((name, (ok, detail)) for name, ok, detail in journal.verify())
    assert report["signatures"][0] is False
    assert "does not match its id" in report["signatures"][1]


def test_foreign_old_and_wrong_schema_databases_are_refused(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as raw:
        raw.execute("CREATE TABLE things (x)")
    raw.close()
    with pytest.raises(JournalCorrupt, match="not an aura-sync journal"):
        _open(foreign)

    old = tmp_path / "v1.db"
    with sqlite3.connect(old) as raw:
        raw.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        raw.execute("PRAGMA user_version = 1")
        raw.execute(
            "CREATE TABLE ops (arrival INTEGER PRIMARY KEY, id BLOB, author BLOB,"
            " seq INTEGER, payload BLOB)"
        )
    raw.close()
    with pytest.raises(JournalCorrupt, match=r"schema version 1.*pre-1\.0.*does not migrate"):
        _open(old)

    earlier = {
        2: "CREATE TABLE ops (arrival INTEGER PRIMARY KEY, id BLOB NOT NULL UNIQUE)",  # one index
        3: "CREATE TABLE ids (id BLOB PRIMARY KEY, arrival INTEGER) WITHOUT ROWID",  # whole ids
        4: "CREATE TABLE ids (prefix BLOB, arrival INTEGER)",  # one swept table of prefixes
        5: "CREATE TABLE recent (prefix BLOB, arrival INTEGER)",  # no fresh-id snapshot
    }
    for version, table in earlier.items():
        path = tmp_path / f"v{version}.db"
        with sqlite3.connect(path) as raw:
            raw.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            raw.execute(f"PRAGMA user_version = {version}")
            raw.execute(table)
        raw.close()
        expected = rf"version {version}.*reads version {SCHEMA_VERSION}.*does not"
        with pytest.raises(JournalCorrupt, match=expected):
            _open(path)

    odd = tmp_path / "odd.db"
    with sqlite3.connect(odd) as raw:
        raw.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        raw.execute("CREATE TABLE ops (id BLOB, data BLOB)")
    raw.close()
    with pytest.raises(JournalCorrupt, match="wrong tables"):
        _open(odd)


def test_arguments_are_validated(tmp_path: Path) -> None:
    with pytest.raises(WrongType, match="identity"):
        Journal.open(":memory:", identity="me")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="synchronous"):
        Journal.open(":memory:", identity=ME, synchronous="OFF")
    with pytest.raises(InvalidArgument, match="does not exist"):
        _open(tmp_path / "missing-dir" / JOURNAL_FILE_NAME)
    with _open() as journal:
        with pytest.raises(InvalidArgument, match=f"at most {MAX_OP_PAYLOAD} bytes"):
            journal.append(bytes(MAX_OP_PAYLOAD + 1))
        with pytest.raises(WrongType, match="payload"):
            journal.append("text")  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument, match="32 bytes"):
            journal.has(b"short")
        with pytest.raises(OpRefused, match="ops"):
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
        OpsRequest((b"short",)).check()
    with pytest.raises(InvalidArgument, match=r"1\.\.128"):
        OpsRequest(tuple(op_id(ME.device_id, i, b"") for i in range(129))).check()
    with pytest.raises(InvalidArgument, match=r"duplicate|repeats id"):
        OpsRequest((op_id(ME.device_id, 0, b""),) * 2).check()
    with pytest.raises(InvalidArgument, match=r"1\.\.128"):
        PushOps(()).check()
    with pytest.raises(WrongType, match=r"ops\[0\]"):
        PushOps((b"x",)).check()  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="ascending"):
        IdsReply((op_id(ME.device_id, 1, b""), op_id(ME.device_id, 1, b""))).check()
    with pytest.raises(InvalidArgument, match="twice"):
        PeerExchange(
            (PeerAddress(ME.device_id, "127.0.0.1:1"), PeerAddress(ME.device_id, "127.0.0.1:2"))
        ).check()
    with pytest.raises(InvalidArgument, match="address"):
        PeerAddress(ME.device_id, "").check()
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


def test_failed_commit_reports_the_real_error_and_stores_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aura_sync.protocols import journal_ids

    journal = _open(tmp_path / JOURNAL_FILE_NAME)
    try:
        kept = journal.append_many(b"kept-%d" % i for i in range(60))  # in the fresh tier
        monkeypatch.setattr(journal_ids, "STEP_OPS", 1)  # the failed commits sweep every slice
        real = journal._conn
        journal._conn = _FullDisk(real)  # type: ignore[assignment]
        with pytest.raises(sqlite3.OperationalError, match="disk is full"):
            journal.append_many(b"lost-%d" % i for i in range(300))
        with pytest.raises(sqlite3.OperationalError, match="disk is full"):
            journal.add(chain(PEER, [b"theirs"])[0])
        assert len(journal) == 60
        journal._conn = real
        assert journal.own_ops == 60  # the sequence did not move
        assert journal.all_ids() == tuple(sorted(kept))  # the undone sweeps gave them back
        journal.append(b"next")
        assert len(journal) == 61 and journal.digest().count == 61
        assert all(ok for _, ok, _ in journal.verify())
        assert len(journal.all_ids()) == 61
    finally:
        journal.close()


def test_the_data_directory_lock_admits_one_process(tmp_path: Path) -> None:
    from aura_sync.errors import DataDirLocked
    from aura_sync.protocols.journal_files import DataDirLock

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom aura_sync.protocols.journal_files import DataDirLock\n"
            f"lock = DataDirLock({str(tmp_path)!r})\nprint('held', flush=True)\nsys.stdin.read()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(DataDirLocked, match=f"PID {holder.pid}") as info:
            DataDirLock(tmp_path)
        assert str(tmp_path) in str(info.value)
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(10)
    lock = DataDirLock(tmp_path)  # free again once the holder exited
    lock.release()


def test_push_order_completes_a_run_up_to_its_signed_head() -> None:
    """A push list missing an author's head (the sender's journal grew meanwhile) still lands."""
    with _open(identity=PEER) as sender, _open() as receiver:
        ids = sender.append_many(b"%d" % i for i in range(300))
        order = sender.push_order(ids[:-1])  # as if the peer had looked as holding the head
        assert set(order) == set(ids) and order[0] == ids[-1]
        for i in range(0, len(order), MAX_OPS_BATCH):
            receiver.add_many(sender.get_many(order[i : i + MAX_OPS_BATCH]))
        assert receiver.digest() == sender.digest()
        relayed = receiver.get_many([ids[-1]])[0]
        assert len(relayed.sig) == 64  # a head keeps its signature at every hop
