"""Pulls by chain: a node that lacks much of a peer's chains pulls them by seq, top first.

- through a chained remote, a fresh journal pulls everything without listing ids,
  and stores it while the pull goes on (each reply covered by those before it);
- what it holds already (the top of a chain, pushed to it) is skipped, the rest pulled;
- a peer's reply that its chain does not cover (its top unsigned), or that lacks
  the seqs its heads claimed, stops that chain (no walk down a chain the peer does
  not prove); the id reconciliation still completes the sync; a forged op refuses
  its batch;
- the wire: HeadsReply's bounds, and a fresh node over TCP pulls by chain.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from _node_helpers import cluster, wait_until
from test_journal_sync import _drive
from test_sync_batching import StreamedRemote, _fill, _journal, _now

from aura_sync.errors import InvalidArgument, OpRefused, WrongType
from aura_sync.ids import DeviceId
from aura_sync.messages.sync import (
    MAX_HEADS,
    SEQ_LIMIT,
    ChainRequest,
    HeadsReply,
    HeadsRequest,
    Op,
)
from aura_sync.protocols.admission import MAX_REQUEST_COST, request_cost
from aura_sync.protocols.journal import Journal
from aura_sync.protocols.reconcile import Call, ChainBuffer, Chained, Progress, reconcile


class ChainedRemote(StreamedRemote):
    """A streamed remote that also serves heads and chain pieces; records what it served."""

    def __init__(self, journal: Journal, on_reply: Callable[[], None] | None = None) -> None:
        super().__init__(journal)
        self.spans: list[tuple[DeviceId, int, int]] = []
        self.on_reply = on_reply

    def heads(self, pages: int) -> Call[list[tuple[DeviceId, int]]]:
        return (yield from _now(self.journal.heads()))

    def answer(self, author: DeviceId, lo: int, hi: int) -> tuple[Op, ...]:
        return tuple(self.journal.chain(author, lo, hi))

    def chain_each(
        self,
        spans: Iterable[tuple[DeviceId, int, int]],
        take: Callable[[int, tuple[Op, ...]], None],
    ) -> Call[None]:
        for i, span in enumerate(spans):
            self.spans.append(span)
            take(i, self.answer(*span))
            if self.on_reply is not None:
                self.on_reply()
        return (yield from _now(None))


def _sync(a: Journal, remote: ChainedRemote) -> tuple[bytes | None, Progress]:
    progress = Progress()
    agreed = _drive(reconcile(a, remote, list_threshold=1024, batch_size=128, progress=progress))
    return agreed, progress


def test_a_fresh_journal_pulls_by_chain_and_stores_as_it_goes() -> None:
    a, b = _journal(), _journal()
    _fill(b, 20_000, b"b")
    seen: list[int] = []
    remote = ChainedRemote(b, lambda: seen.append(len(a)))
    assert isinstance(remote, Chained)
    agreed, progress = _sync(a, remote)
    assert agreed == b.digest().fingerprint and len(a) == 20_000 == progress.pulled
    assert "list" not in remote.windows and "fetch" not in remote.windows  # no id listed
    assert len(remote.spans) == -(-20_000 // 128)
    assert remote.spans[0] == (b.author, 20_000 - 128, 19_999)  # top first
    # stored while pulling: half-way through the replies, thousands of ops are in
    assert seen[len(seen) // 2] >= 8192
    assert all(ok for _, ok, _ in a.verify())


def test_held_tops_are_skipped_and_the_chain_below_is_pulled() -> None:
    a, b = _journal(), _journal()
    _fill(b, 5000, b"b")
    top = b.ops_by(b.author, 5000 - 2049)  # the top 2048, as a push brings them
    a.add_many(reversed(top))
    assert len(a) == 2048
    remote = ChainedRemote(b)
    agreed, progress = _sync(a, remote)
    assert agreed == b.digest().fingerprint and len(a) == 5000
    assert progress.pulled == 5000 - 2048
    assert remote.spans[0][2] == 5000 - 2049  # the first piece asked is below the held top
    assert "fetch" not in remote.windows


class ClaimingRemote(ChainedRemote):
    """Claims a top far above its real one; answers with its heads' signatures stripped."""

    def heads(self, pages: int) -> Call[list[tuple[DeviceId, int]]]:
        return (yield from _now([(a, top + 10_000) for a, top in self.journal.heads()]))

    def answer(self, author: DeviceId, lo: int, hi: int) -> tuple[Op, ...]:
        ops = super().answer(author, lo, hi)
        return tuple(Op(op.author, op.seq, op.payload, op.prev, op.key) for op in ops)


def test_a_peer_that_does_not_prove_its_chain_stops_it_and_ids_do_the_rest() -> None:
    a, b = _journal(), _journal()
    _fill(b, 3000, b"b")
    remote = ClaimingRemote(b)
    agreed, _ = _sync(a, remote)
    assert agreed == b.digest().fingerprint and len(a) == 3000  # by id, after the chain stopped
    assert len(remote.spans) == 1  # the empty top piece (a claim) stopped the walk
    remote = ClaimingRemote(b)
    remote.heads = lambda pages: _now(b.heads())  # type: ignore[method-assign]
    c = _journal()
    agreed, _ = _sync(c, remote)
    assert len(remote.spans) == 1  # its top unsigned: not covered, stopped
    assert agreed == b.digest().fingerprint and len(c) == 3000
    assert sum(remote.windows["fetch"]) > 0


class ForgingRemote(ChainedRemote):
    def answer(self, author: DeviceId, lo: int, hi: int) -> tuple[Op, ...]:
        ops = list(super().answer(author, lo, hi))
        ops[5] = Op(ops[5].author, ops[5].seq, b"forged", ops[5].prev, ops[5].key)
        return tuple(ops)


def test_a_forged_op_in_a_chain_reply_refuses_its_batch() -> None:
    a, b = _journal(), _journal()
    _fill(b, 3000, b"b")
    with pytest.raises(OpRefused):
        _sync(a, ForgingRemote(b))
    assert len(a) < 3000
    assert all(op.payload != b"forged" for op in a.ops_by(b.author))


def test_heads_and_chain_pieces_are_bounded_on_the_wire() -> None:
    author = DeviceId.from_int(7)
    ChainRequest(author, 0, 127).check()
    ChainRequest(author, SEQ_LIMIT - 128, SEQ_LIMIT - 1).check()
    for lo, hi in ((0, 128), (5, 4), (-1, 3)):
        with pytest.raises(InvalidArgument):
            ChainRequest(author, lo, hi).check()
    with pytest.raises(InvalidArgument):
        HeadsRequest(b"x" * 17).check()
    ids = [DeviceId.from_int(i) for i in range(1, 4)]
    HeadsReply(tuple(ids), (1, 2, 3), True).check()
    with pytest.raises(InvalidArgument):
        HeadsReply((ids[1], ids[0]), (1, 2)).check()  # not ascending
    with pytest.raises(InvalidArgument):
        HeadsReply(tuple(ids), (1, 2)).check()  # a top missing
    with pytest.raises(WrongType):
        HeadsReply(tuple(ids), (1, 2, True)).check()  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        HeadsReply((ids[0],) * (MAX_HEADS + 1), (1,) * (MAX_HEADS + 1)).check()
    for request in (ChainRequest(author, 0, 127), ChainRequest(author, 0, 2**70), HeadsRequest()):
        assert 1 < request_cost(request) <= MAX_REQUEST_COST


def test_a_fresh_node_pulls_a_peers_chain_by_seq_over_tcp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served: list[tuple[int, int]] = []
    chain = Journal.chain

    def counting(self: Journal, author: DeviceId, lo: int, hi: int) -> list[Op]:
        served.append((lo, hi))
        return chain(self, author, lo, hi)

    monkeypatch.setattr(Journal, "chain", counting)
    for c in cluster(tmp_path):
        a = c.add("a")
        a.append([b"a-%d" % i for i in range(5000)])
        b = c.add("b", bootstrap=[a.bootstrap_address])
        wait_until(lambda: len(b.journal) == 5000, 20.0, "b to hold a's ops")  # noqa: B023
        assert b.journal.digest() == a.journal.digest()
        assert len(served) >= (5000 - 2048) // 128  # pulled by seq (a may push its top)
        assert max(hi for _, hi in served) <= 4999


def test_a_chain_piece_is_queued_whole_or_filtered_like_any_reply() -> None:
    b = _journal()
    _fill(b, 600, b"b")  # one append: only the top op (599) is signed
    author = b.author
    a = _journal()
    buffer = ChainBuffer(a, group=10_000)
    top = tuple(b.chain(author, 472, 599))
    assert buffer.take_piece(author, 472, 599, top) == (0, True)  # whole, signed top
    assert buffer.take_piece(author, 472, 599, top) == (0, True)  # again: known, kept once
    below = list(b.chain(author, 344, 471))
    stranger = b.chain(author, 200, 200)[0]
    mixed = (*below[:3], Op(DeviceId.from_int(9), 400, b"x", stranger.prev), *below[3:])
    assert buffer.take_piece(author, 344, 471, mixed) == (0, True)  # the stranger dropped
    bottom_first = tuple(reversed(b.chain(author, 216, 343)))
    assert buffer.take_piece(author, 216, 343, bottom_first) == (0, True)  # covered all the same
    gap = tuple(b.chain(author, 0, 127))  # its successor 128 not taken: waits, not whole
    assert buffer.take_piece(author, 0, 127, gap) == (0, False)
    assert buffer.flush() == 384 == len(a)  # 128..215 never came: 0..127 is dropped
    assert {op.seq for op in a.ops_by(author)} == set(range(216, 600))


def test_a_peer_far_behind_is_left_to_pull_our_chains_itself() -> None:
    a, b = _journal(), _journal()
    _fill(a, 5000, b"a")
    empty = ChainedRemote(b)
    agreed, progress = _sync(a, empty)  # b holds nothing: one digest, no walk, no push
    assert agreed is None and progress.pushed == progress.sent == 0 and len(b) == 0
    assert empty.windows == {}
    _fill(b, 10, b"b")  # b now holds ops a lacks, and still lacks 5000 of a's
    agreed, progress = _sync(a, ChainedRemote(b))
    assert agreed is None and len(a) == 5010 and progress.pushed == 0 and len(b) == 10
    agreed, progress = _sync(b, ChainedRemote(a))  # b's own session pulls by chain
    assert agreed == a.digest().fingerprint == b.digest().fingerprint and len(b) == 5010
