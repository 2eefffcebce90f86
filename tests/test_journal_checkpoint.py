"""The journal's WAL is checkpointed off the writer's thread.

- once the WAL file reaches the checkpointer's size, committed pages reach the
  database file while the writer only commits (its own autocheckpoint is far higher);
- the writer's ops are all there after close, which checkpoints and empties the WAL;
- a WAL under that size is left alone; stopping the checkpointer is prompt and idempotent.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from _node_helpers import wait_until

from aura_sync.identity import NodeIdentity
from aura_sync.protocols.journal import AUTOCHECKPOINT_PAGES, CHECKPOINT_PAGES, Journal
from aura_sync.protocols.journal_checkpoint import Checkpointer


def _wal_db(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA wal_autocheckpoint = 0")  # the writer never checkpoints
    conn.execute("CREATE TABLE t (x BLOB)")
    return conn


def test_committed_pages_reach_the_database_without_the_writer_checkpointing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "db"
    conn = _wal_db(path)
    checkpointer = Checkpointer(str(path), pages=64, page_size=4096)
    try:
        before = os.path.getsize(path)
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO t VALUES (?)", ((os.urandom(1000),) for _ in range(400)))
        conn.execute("COMMIT")
        assert os.path.getsize(path) == before  # committed to the WAL only
        checkpointer.nudge()
        wait_until(lambda: checkpointer.passes >= 1, 10, "a checkpoint")
        assert os.path.getsize(path) > before + 300_000  # the pages are in the database
    finally:
        checkpointer.stop()
        checkpointer.stop()  # idempotent
    reader = sqlite3.connect(path)
    assert reader.execute("SELECT count(*) FROM t").fetchone()[0] == 400
    reader.close()
    conn.close()


def test_a_small_wal_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "db"
    conn = _wal_db(path)
    checkpointer = Checkpointer(str(path), pages=10_000, page_size=4096)
    try:
        conn.execute("INSERT INTO t VALUES (x'00')")
        checkpointer.nudge()
        wait_until(lambda: not checkpointer._wake.is_set(), 10, "the nudge to be taken")
        checkpointer.stop()  # joins after the size check that nudge started
        assert checkpointer.passes == 0
    finally:
        conn.close()


def test_a_journal_checkpoints_in_the_background_and_keeps_every_op(tmp_path: Path) -> None:
    assert AUTOCHECKPOINT_PAGES >= 4 * CHECKPOINT_PAGES  # the writer's own is the far bound
    identity = NodeIdentity.generate()
    journal = Journal.open(tmp_path / "j", identity=identity)
    checkpointer = journal._checkpointer
    assert checkpointer is not None
    try:
        n = 0
        while checkpointer.passes == 0:  # ~20 MiB of WAL: about 60k ops
            journal.append_many(os.urandom(200) for _ in range(1000))
            n += 1000
            assert n <= 400_000, "no background checkpoint"
            if os.path.getsize(str(tmp_path / "j") + "-wal") >= CHECKPOINT_PAGES * 4096:
                wait_until(lambda: checkpointer.passes >= 1, 10, "a checkpoint")
        fingerprint = journal.digest().fingerprint
    finally:
        journal.close()
    wal = Path(str(tmp_path / "j") + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0  # close checkpointed it all
    again = Journal.open(tmp_path / "j", identity=identity)
    try:
        assert len(again) == n and again.digest().fingerprint == fingerprint
    finally:
        again.close()
