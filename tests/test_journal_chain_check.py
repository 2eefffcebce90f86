"""check_ops against a reference model: the per-op checks of the journal before it read the
journal once per run of seqs (a held-id lookup per op, one read per chain neighbour).

Random batches of two authors' ops (signed heads anywhere, a fork of one chain signed by its
author, tampered payloads and links, forged signatures, repeats, any order) are checked
against random held parts of the chains; both must refuse, or both must give the same
fresh ops (and which keep their signature), pending ops and count of known ones.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aura_sync.errors import OpRefused
from aura_sync.identity import NodeIdentity, sign_head, verify_head
from aura_sync.messages.sync import NO_PREV, Op
from aura_sync.protocols.journal import Journal
from aura_sync.protocols.journal_chain import Checked, check_ops, check_shape

A, B, C = NodeIdentity.generate(), NodeIdentity.generate(), NodeIdentity.generate()
LENGTH = 6


def _chain(who: NodeIdentity, tag: bytes, heads: set[int]) -> list[Op]:
    out: list[Op] = []
    prev = NO_PREV
    for seq in range(LENGTH):
        op = Op(who.device_id, seq, tag + b"%d" % seq, prev, who.public_key)
        if seq in heads:
            op = Op(op.author, seq, op.payload, prev, op.key, sign_head(who, op.op_id))
        prev = op.op_id
        out.append(op)
    return out


def _reference(ops: Sequence[Op], journal: Journal, strict: bool) -> Checked:
    """The per-op checks as they were (``held`` per id, ``at`` per neighbour), plus the
    insert's refusal of an authenticated op at a held (author, seq)."""

    def at(author: bytes, seq: int) -> tuple[bytes, bytes] | None:
        rows = journal.span(author, seq, seq)
        return (rows[0][1], rows[0][2]) if rows else None

    checked = [check_shape(op, i) for i, op in enumerate(ops)]
    ids = [op.op_id for op in checked]
    held_ids = journal.held(ids)
    index: dict[tuple[bytes, int], int] = {}
    known = 0
    for i, key in enumerate(ids):
        if key in held_ids:
            known += 1
            continue
        pos = (checked[i].author.raw, checked[i].seq)
        j = index.get(pos)
        if j is not None:
            if ids[j] == key:
                known += 1
                continue
            raise OpRefused("fork in the batch")
        index[pos] = i
    for (author, seq), i in index.items():
        j = index.get((author, seq + 1))
        if j is not None and checked[j].prev != ids[i]:
            raise OpRefused("link")
    authed: set[int] = set()
    signed: set[int] = set()
    for author, seq in sorted(index, reverse=True):
        i = index[(author, seq)]
        op = checked[i]
        j = index.get((author, seq + 1))
        if j is not None:
            if j in authed:
                authed.add(i)
        else:
            succ = at(author, seq + 1)
            if succ is not None:
                if succ[1] != ids[i]:
                    raise OpRefused("held successor")
                authed.add(i)
        if op.sig:
            if not verify_head(op.key, op.sig, ids[i]):
                raise OpRefused("signature")
            authed.add(i)
            signed.add(i)
    for i in authed:
        op = checked[i]
        if at(op.author.raw, op.seq) is not None:
            raise OpRefused("held position (the insert's unique index)")
        if (op.author.raw, op.seq - 1) in index:
            continue
        if op.seq == 0:
            if op.prev != NO_PREV:
                raise OpRefused("first op with a prev")
            continue
        pred = at(op.author.raw, op.seq - 1)
        if pred is not None and pred[0] != op.prev:
            raise OpRefused("held predecessor")
    pending = [checked[i] for i in index.values() if i not in authed]
    if strict and pending:
        raise OpRefused("not covered")
    return Checked([(ids[i], checked[i], i in signed) for i in sorted(authed)], pending, known)


def _outcome(check: object) -> object:
    try:
        result = check()  # type: ignore[operator]
    except OpRefused:
        return "refused"
    assert isinstance(result, Checked)
    return (
        [(key, signed) for key, _, signed in result.fresh],
        [op.op_id for op in result.pending],
        result.known,
    )


def _tamper(op: Op, how: int) -> Op:
    if how == 0:
        return Op(op.author, op.seq, op.payload + b"!", op.prev, op.key, op.sig)
    if how == 1:
        return Op(op.author, op.seq, op.payload, bytes(31) + b"\x01", op.key, op.sig)
    if how == 2:  # a signature by another key
        return Op(op.author, op.seq, op.payload, op.prev, op.key, sign_head(C, op.op_id))
    return Op(op.author, op.seq, op.payload, op.prev, op.key, b"")  # a head's signature dropped


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    heads=st.lists(
        st.lists(st.booleans(), min_size=LENGTH, max_size=LENGTH), min_size=3, max_size=3
    ),
    held_runs=st.lists(st.tuples(st.integers(0, 2), st.integers(0, LENGTH - 1)), max_size=3),
    picks=st.lists(st.tuples(st.integers(0, 2), st.integers(0, LENGTH - 1)), max_size=16),
    tampers=st.lists(st.tuples(st.integers(0, 15), st.integers(0, 3)), max_size=2),
    strict=st.booleans(),
    order=st.randoms(use_true_random=False),
)
def test_check_ops_agrees_with_the_per_op_reference(
    heads: list[list[bool]],
    held_runs: list[tuple[int, int]],
    picks: list[tuple[int, int]],
    tampers: list[tuple[int, int]],
    strict: bool,
    order: object,
) -> None:
    marks = [{seq for seq, head in enumerate(h) if head} | {LENGTH - 1} for h in heads]
    chains = [
        _chain(A, b"a", marks[0]),
        _chain(B, b"b", marks[1]),
        _chain(A, b"fork", marks[2]),  # signed by A too: a fork of chain 0
    ]
    batch = [chains[which][seq] for which, seq in picks]
    for at_index, how in tampers:
        if at_index < len(batch):
            batch[at_index] = _tamper(batch[at_index], how)
    order.shuffle(batch)  # type: ignore[attr-defined]
    _agree(chains, held_runs, batch, strict)


def _agree(
    chains: list[list[Op]], held_runs: list[tuple[int, int]], batch: list[Op], strict: bool
) -> object:
    with Journal.open(":memory:", identity=NodeIdentity.generate()) as journal:
        for which, top in held_runs:  # a held run: ops 0..top up to the next head
            ops = chains[which][: top + 1]
            end = top
            while not ops[-1].sig and end + 1 < LENGTH:
                end += 1
                ops.append(chains[which][end])
            with contextlib.suppress(OpRefused):  # a fork of what is held: not held then
                journal.add_many(ops)
        ours = _outcome(lambda: check_ops(batch, journal, strict=strict))
        theirs = _outcome(lambda: _reference(batch, journal, strict))
        assert ours == theirs
        if batch and ours != "refused":  # the precomputed ids give the same answer
            given_ids = [op.op_id for op in batch]
            assert _outcome(lambda: check_ops(batch, journal, strict=strict, ids=given_ids)) == ours
        return ours


def test_forks_of_held_ops_are_refused_like_the_reference() -> None:
    """The rare shapes: a signed fork op on top of a held run, at a held position whose
    successor is not held, and linked to a held predecessor it does not name."""
    chain = _chain(A, b"a", {1, LENGTH - 1})
    fork = _chain(A, b"fork", {0, 2, LENGTH - 1})
    chains = [chain, chain, fork]
    assert _agree(chains, [(0, 0)], [fork[0]], False) == "refused"  # held at seq 0..1
    assert _agree(chains, [(0, 1)], [fork[2]], False) == "refused"  # links to no held op 1
    assert _agree(chains, [(0, 1)], [fork[1], fork[2]], False) == "refused"
    fresh, pending, known = _agree(chains, [(0, 1)], [*chain[5:1:-1], chain[0]], True)  # type: ignore[misc]
    assert (len(fresh), pending, known) == (4, [], 1)
