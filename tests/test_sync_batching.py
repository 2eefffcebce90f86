"""Sync in bulk: pulled rounds and pushed batches land in few commits, acked only once stored.

- reconcile through a streamed remote stores a round of many fetched batches
  in at most a few commits (counted as SQLite COMMIT statements) and pipelines
  its pushes (in order, on one remote);
- the server keeps pushed batches unanswered until the group commit, then
  acknowledges each; a refused batch in a group refuses only itself;
- a node pushes its new ops to a connected peer at once, without waiting for
  a sync round.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _node_helpers import cluster, wait_until
from test_anti_entropy_serving import FakeConnection
from test_anti_entropy_serving import Rig as ServingRig
from test_anti_entropy_session import Rig as SessionRig
from test_journal_sync import PipelinedRemote, _drive

from aura_sync.errors import InvalidArgument, OpRefused
from aura_sync.identity import NodeIdentity
from aura_sync.ids import DeviceId
from aura_sync.messages import ErrorReply, Message
from aura_sync.messages.sync import IdRange, Op, PushAck, PushOps
from aura_sync.protocols.journal import Journal
from aura_sync.protocols.reconcile import Call, ChainBuffer, Progress, Streamed, reconcile
from aura_sync.protocols.serving import PUSH_GROUP
from aura_sync.protocols.session import RECONCILING_FOR
from aura_sync.transport.base import Inbound


def _journal() -> Journal:
    return Journal.open(":memory:", identity=NodeIdentity.generate())


def _commits(journal: Journal) -> list[str]:
    """The COMMIT statements ``journal`` runs from now on."""
    seen: list[str] = []
    journal._conn.set_trace_callback(  # counting real transactions
        lambda sql: seen.append(sql) if sql.strip().upper().startswith("COMMIT") else None
    )
    return seen


class StreamedRemote(PipelinedRemote):
    """A pipelined remote that also streams fetches and takes pushes several at a time."""

    def fetch_each(
        self, batches: list[tuple[bytes, ...]], take: Callable[[int, tuple[Op, ...]], None]
    ) -> Call[None]:
        self._window("fetch", len(batches))
        for i, batch in enumerate(batches):
            take(i, tuple(self.journal.get_many(batch)))
        return (yield from _now(None))

    def list_many(
        self, ranges: list[IdRange], counts: list[int] | None = None
    ) -> Call[list[list[bytes]]]:
        return (yield from super().list_many(ranges))

    def push_many(self, batches: list[tuple[Op, ...]]) -> Call[int]:
        self._window("push", len(batches))
        return (yield from _now(sum(self.journal.add_many(b) for b in batches)))


def _now(value: Any) -> Call[Any]:
    if False:
        yield
    return value


def _fill(journal: Journal, n: int, tag: bytes) -> None:
    for start in range(0, n, 1000):
        journal.append_many(b"%s%d" % (tag, i) for i in range(start, min(n, start + 1000)))


def test_a_pulled_round_of_many_batches_lands_in_few_commits() -> None:
    a, b = _journal(), _journal()
    _fill(b, 5000, b"b")  # 40 batches of 128 to pull
    remote = StreamedRemote(b)
    assert isinstance(remote, Streamed)
    commits = _commits(a)
    progress = Progress()
    agreed = _drive(reconcile(a, remote, list_threshold=1024, batch_size=128, progress=progress))
    assert progress.pulled == 5000 and len(a) == 5000
    assert agreed == b.digest().fingerprint
    assert sum(remote.windows["fetch"]) == 40
    # Groups of 2048 (each may take a second commit for the ops its heads released):
    # a handful of commits, not one per batch.
    assert 1 <= len(commits) <= 6, commits


def test_pushes_go_several_at_a_time_and_the_journals_agree() -> None:
    a, b = _journal(), _journal()
    _fill(a, 1500, b"a")  # 12 batches to push, each authenticated by those before it
    remote = StreamedRemote(b)
    progress = Progress()
    agreed = _drive(reconcile(a, remote, list_threshold=1024, batch_size=128, progress=progress))
    assert progress.pushed == progress.sent == 1500 and len(b) == 1500
    assert agreed == a.digest().fingerprint
    assert remote.windows["push"] == [12]


def test_a_push_limit_leaves_the_rest_for_later() -> None:
    a, b = _journal(), _journal()
    _fill(a, 1500, b"a")
    remote = StreamedRemote(b)
    progress = Progress()
    agreed = _drive(
        reconcile(a, remote, list_threshold=1024, batch_size=128, progress=progress, push_limit=300)
    )
    assert agreed is None and progress.sent == 300 == len(b)
    nothing = Progress()
    _drive(
        reconcile(a, remote, list_threshold=1024, batch_size=128, progress=nothing, push_limit=0)
    )
    assert nothing.sent == 0 and len(b) == 300  # pull-only: the remote gets nothing
    _drive(reconcile(a, remote, list_threshold=1024, batch_size=128))
    assert b.digest() == a.digest()


# --- the server's group commit ----------------------------------------------------------------


class Conn(FakeConnection):
    def __init__(self, peer: DeviceId) -> None:
        super().__init__()
        self.peer_id = peer  # type: ignore[misc]


HELD = 2  # the serving rig's journal holds two ops of its own


class Rig(ServingRig):
    """The serving rig with a flush the test runs itself."""

    def __init__(self) -> None:
        self.flushes = 0
        super().__init__(schedule_flush=self._scheduled)
        self.request_id = 0

    def _scheduled(self) -> None:
        self.flushes += 1

    def push(self, conn: Conn, ops: list[Op]) -> None:
        self.request_id += 1
        self.server.serve(Inbound(conn, PushOps(tuple(ops)), self.request_id))  # type: ignore[arg-type]


@pytest.fixture
def rig() -> Iterator[Rig]:
    r = Rig()
    try:
        yield r
    finally:
        r.journal.close()


def _signed(n: int, tag: bytes) -> list[list[Op]]:
    """``n`` ops of a new author in push batches of 128 (each authenticated by those before)."""
    source = _journal()
    _fill(source, n, tag)
    order = source.push_order(source.all_ids())
    return [source.get_many(order[i : i + 128]) for i in range(0, n, 128)]


def _reply(conn: Conn) -> Message:
    assert len(conn.sent) == 1, conn.sent
    return conn.sent[0][1]


def test_a_push_is_acknowledged_only_after_its_commit(rig: Rig) -> None:
    conn = Conn(DeviceId.from_int(1))
    first, second = _signed(256, b"x")
    commits = _commits(rig.journal)
    rig.push(conn, first)
    rig.push(conn, second)
    assert conn.sent == [] and len(rig.journal) == HELD  # waiting for the group commit
    assert rig.flushes == 1  # one flush asked for the group
    rig.server.flush_pushes()
    assert len(commits) == 1 and len(rig.journal) == HELD + 256
    assert [reply for _, reply in conn.sent] == [PushAck(128, 0), PushAck(128, 0)]


def test_a_full_group_commits_at_once(rig: Rig) -> None:
    conn = Conn(DeviceId.from_int(1))
    batches = _signed(PUSH_GROUP, b"x")
    for batch in batches:
        rig.push(conn, batch)
    assert len(conn.sent) == len(batches) and len(rig.journal) == HELD + PUSH_GROUP
    assert all(isinstance(reply, PushAck) for _, reply in conn.sent)


def test_a_refused_batch_in_a_group_refuses_only_its_own(rig: Rig) -> None:
    honest, forger, again = (
        Conn(DeviceId.from_int(1)),
        Conn(DeviceId.from_int(2)),
        Conn(DeviceId.from_int(3)),
    )
    (good,) = _signed(100, b"h")
    (bad,) = _signed(100, b"f")
    tampered = [
        bad[0],
        *(Op(op.author, op.seq, op.payload + b"!", op.prev, op.key, op.sig) for op in bad[1:]),
    ]
    (later,) = _signed(50, b"l")
    rig.push(honest, good)
    rig.push(forger, tampered)
    rig.push(again, later)
    rig.server.flush_pushes()
    assert _reply(honest) == PushAck(100, 0)
    assert _reply(again) == PushAck(50, 0)
    refused = _reply(forger)
    assert isinstance(refused, ErrorReply) and refused.error_type == "OpRefused", refused
    assert rig.refusals == [forger.peer_id]
    assert len(rig.journal) == HELD + 150
    assert not any(rig.journal.has(op.op_id) for op in tampered)


# --- pushing new ops at once ------------------------------------------------------------------


def test_new_ops_are_pushed_to_a_connected_peer_without_waiting_for_a_round(tmp_path: Path) -> None:
    for c in cluster(tmp_path):
        a = c.add("a", sync_interval=20.0)
        b = c.add("b", sync_interval=20.0, bootstrap=[a.bootstrap_address])
        wait_until(lambda: b.sync_status().connected == 1, 15.0, "b to connect to a")  # noqa: B023
        for node in (a, b):  # each ran its first round; the next is 18+ s away
            wait_until(lambda n=node: n.sync_status().counter("rounds_started") >= 1, 15.0)
        rounds = a.sync_status().counter("rounds_started") + b.sync_status().counter(
            "rounds_started"
        )
        a.append([b"fresh-%d" % i for i in range(300)])
        wait_until(lambda: len(b.journal) == 300, 5.0, "b to get a's new ops")  # noqa: B023
        later = a.sync_status().counter("rounds_started") + b.sync_status().counter(
            "rounds_started"
        )
        assert later == rounds  # no sync round ran: the push brought them


def test_pulled_ops_below_a_held_successor_are_stored_at_the_end() -> None:
    source, sink = _journal(), _journal()
    _fill(source, 300, b"s")  # one chain: only op 299 is signed
    order = source.push_order(source.all_ids())
    sink.add_many(source.get_many(order[:100]))  # the top 100 (ops 299..200) already held
    below = sorted(order[100:])  # ops 199..0, in id order as pulled
    buffer = ChainBuffer(sink)
    stored = sum(buffer.take(source.get_many(below[i : i + 128])) for i in range(0, 200, 128))
    assert stored == 0 and len(sink) == 100  # none of them looks covered on its own
    assert buffer.flush() == 200 and sink.digest() == source.digest()


def test_uncovered_pulled_ops_wait_within_a_byte_bound_and_free_it_once_covered() -> None:
    source, sink = _journal(), _journal()
    _fill(source, 50, b"s")  # one chain: only op 49 (the head) is signed
    ops = source.get_many(source.push_order(source.all_ids()))  # seq 49 down to 0
    head, unsigned = ops[0], ops[1:]
    bound = sum(len(op.payload) for op in unsigned[:10])  # room for ops 48..39 only
    buffer = ChainBuffer(sink, group=1000, max_waiting_bytes=bound)
    assert buffer.take(unsigned) == 0  # none covered: 10 wait, the 39 that do not fit are dropped
    buffer.take([head])  # covers the 10 waiting below it, which frees their bytes
    assert buffer.flush() == 11
    assert sorted(op.seq for op in sink.get_many(sink.all_ids())) == list(range(39, 50))
    assert buffer.take(unsigned[10:]) == 0  # pulled again: covered by the held op 39
    assert buffer.flush() == 39 and sink.digest() == source.digest()


def test_a_forged_pulled_op_refuses_its_batch() -> None:
    source, sink = _journal(), _journal()
    _fill(source, 50, b"s")
    ops = source.get_many(source.push_order(source.all_ids()))
    head = ops[0]
    forged = Op(head.author, head.seq, head.payload + b"!", head.prev, head.key, head.sig)
    buffer = ChainBuffer(sink, group=10)
    with pytest.raises(OpRefused):
        buffer.take([forged, *ops[1:]])
    assert len(sink) == 0


def test_pulled_ops_not_asked_for_are_dropped_and_a_forged_one_still_refuses() -> None:
    source, sink = _journal(), _journal()
    _fill(source, 50, b"s")
    ops = source.get_many(source.push_order(source.all_ids()))  # head first: all covered
    buffer = ChainBuffer(sink, group=10)
    asked = {op.op_id for op in ops[:30]}
    assert buffer.take(ops, asked) + buffer.flush() == 30  # the 20 not asked for: dropped
    assert set(sink.all_ids()) == asked
    head = ops[30]  # op 19: held op 20 links to it, so only its hash can vouch for it
    forged = Op(head.author, head.seq, head.payload + b"!", head.prev, head.key)
    fresh = ChainBuffer(sink, group=1)
    with pytest.raises(OpRefused):
        fresh.take([forged], {forged.op_id})  # asked for by its forged id: still checked
        fresh.flush()
    assert set(sink.all_ids()) == asked
    with pytest.raises(InvalidArgument):
        sink.ingest(ops[30:32], ids=[ops[30].op_id])


def test_pushes_to_a_peer_stay_within_push_limit_a_second_and_stop_while_it_pulls() -> None:
    rig = SessionRig(push_limit=1000)
    sessions, peer = rig.sessions, DeviceId.from_int(7)
    assert sessions._push_limit(peer) == 1000
    sessions._spend(peer, 700)
    assert sessions._push_limit(peer) == 300
    sessions._spend(peer, 400)
    assert sessions._push_limit(peer) == 0  # this second's share is spent
    rig.clock.advance(1.0)
    assert sessions._push_limit(peer) == 1000  # a new second
    sessions.reconciled[peer] = rig.clock.now()  # it is reconciling with us: it pulls
    assert sessions._push_limit(peer) == 0
    rig.clock.advance(RECONCILING_FOR)
    assert sessions._push_limit(peer) == 1000
