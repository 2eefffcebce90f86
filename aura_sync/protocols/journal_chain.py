"""Proof checks for ops entering a journal: author keys, hash chains and signed heads.

An op is *authenticated* if its key hashes to its author and either its own
signature (of ``HEAD_DOMAIN + op_id``) verifies with that key, or the op of
the same author at ``seq + 1`` is authenticated (in the same batch, or
already held) and names this op's id as its ``prev``.  A batch is checked as
a whole: any op failing a check (bad shape, key not the author's, signature
not verifying, a link that does not match, a second op at a held or batched
(author, seq), a seq-0 op with a ``prev``) refuses the whole batch with
:class:`~aura_sync.errors.OpRefused`.  Ops that are merely not covered yet
(unsigned, and no successor known) are refused in strict mode, or returned
as pending so that a puller can retry them once their successor arrived.

The push order of ops (each batch authenticated by those sent before it) is
read here too.

Layer: runtime (protocols).  Pure apart from the :class:`HeldChain` callbacks
and the push-order reads.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections import deque
from collections.abc import Callable, Container, Generator, Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from aura_sync.errors import InvalidArgument, OpRefused, WrongType
from aura_sync.identity import verify_head
from aura_sync.ids import DeviceId
from aura_sync.messages.sync import (
    _OP_DOMAIN,
    MAX_OP_PAYLOAD,
    NO_PREV,
    OP_ID_SIZE,
    PUBLIC_KEY_SIZE,
    SEQ_LIMIT,
    SIGNATURE_SIZE,
    Op,
)

__all__ = [
    "CHAIN_ROWS",
    "Checked",
    "HeldChain",
    "author_of_key",
    "chain_ids",
    "chain_rows",
    "check_op_id",
    "check_ops",
    "check_payloads",
    "check_shape",
    "push_order_of",
    "push_prefix",
    "verify_chains",
]

_key_authors: dict[bytes, bytes] = {}
_MAX_CACHED: Final = 4096


class HeldChain(Protocol):
    """What the checks need to know of the journal."""

    def span(self, author: bytes, lo: int, hi: int) -> list[tuple[int, bytes, bytes]]:
        """``(seq, id, prev)`` of the held ops of ``author`` (raw) with ``lo <= seq <= hi``."""
        ...


@dataclass(slots=True)
class Checked:
    """The result of :func:`check_ops`.

    ``fresh``: ``(id, op, signed)`` for the authenticated ops not yet held
    (``signed``: authenticated by its own signature, which is then kept);
    ``pending``: ops not covered yet (non-strict mode only); ``known``: ops
    already held (or repeated in the batch).
    """

    fresh: list[tuple[bytes, Op, bool]]
    pending: list[Op]
    known: int


def chain_ids(author: bytes, seq: int, prev: bytes, payloads: Sequence[bytes]) -> list[bytes]:
    """The ids of ``payloads`` as ``author``'s ops from ``seq`` on, the first after ``prev``.

    Equal to :attr:`Op.op_id <aura_sync.messages.sync.Op.op_id>` of each op,
    without building the ops (the append path).
    """
    head = _OP_DOMAIN + author
    ids: list[bytes] = []
    for payload in payloads:
        prev = hashlib.sha256(b"".join((head, seq.to_bytes(8, "big"), prev, payload))).digest()
        ids.append(prev)
        seq += 1
    return ids


def check_payloads(items: Sequence[bytes]) -> None:
    """Refuse ``items`` unless each is bytes of at most 4096 (the error names the first bad one)."""
    if set(map(type, items)) == {bytes} and max(map(len, items)) <= MAX_OP_PAYLOAD:
        return
    for i, payload in enumerate(items):
        if type(payload) is not bytes:
            raise WrongType(f"payloads[{i}] must be bytes, got {type(payload).__name__}")
        if len(payload) > MAX_OP_PAYLOAD:
            raise InvalidArgument(
                f"payloads[{i}] must be at most {MAX_OP_PAYLOAD} bytes, got {len(payload)}"
            )


def check_op_id(value: object, name: str) -> None:
    """Refuse ``value`` unless it is a 32-byte op id (the error names ``name``)."""
    if type(value) is not bytes:
        raise WrongType(f"{name} must be bytes, got {type(value).__name__} {value!r:.80}")
    if len(value) != OP_ID_SIZE:
        raise InvalidArgument(f"{name} must be {OP_ID_SIZE} bytes, got {len(value)}")


def author_of_key(key: bytes) -> bytes:
    """The raw DeviceId of a 32-byte public key (cached)."""
    author = _key_authors.get(key)
    if author is None:
        author = hashlib.sha256(key).digest()[: DeviceId.SIZE]
        if len(_key_authors) >= _MAX_CACHED:
            _key_authors.clear()
        _key_authors[key] = author
    return author


def _name(op: Op) -> str:
    return f"op {op.seq} of author {op.author}"


def check_shape(op: object, i: int) -> Op:
    """``op`` if it is a well-formed Op whose key is its author's, else OpRefused."""
    if type(op) is not Op:
        raise OpRefused(f"ops[{i}] must be an Op, got {type(op).__name__} {op!r:.80}")
    if (
        type(op.author) is not DeviceId
        or type(op.seq) is not int
        or not 0 <= op.seq < SEQ_LIMIT
        or type(op.payload) is not bytes
        or len(op.payload) > MAX_OP_PAYLOAD
        or type(op.prev) is not bytes
        or len(op.prev) != OP_ID_SIZE
        or type(op.sig) is not bytes
        or len(op.sig) not in (0, SIGNATURE_SIZE)
    ):
        raise OpRefused(
            f"ops[{i}] is malformed (seq in 0..2**63-1, payload <= {MAX_OP_PAYLOAD} bytes, "
            f"prev {OP_ID_SIZE} bytes, sig empty or {SIGNATURE_SIZE} bytes): {op!r:.120}"
        )
    if type(op.key) is not bytes or len(op.key) != PUBLIC_KEY_SIZE:
        raise OpRefused(
            f"ops[{i}] ({_name(op)}) carries no {PUBLIC_KEY_SIZE}-byte author key "
            f"(unsigned op), got {len(op.key) if type(op.key) is bytes else op.key!r}"
        )
    if author_of_key(op.key) != op.author.raw:
        raise OpRefused(
            f"ops[{i}] ({_name(op)}) carries the key of "
            f"{DeviceId(author_of_key(op.key))}, not its author's"
        )
    return op


def _shapes(ops: Sequence[object]) -> tuple[list[Op], list[tuple[bytes, int]]]:
    """The ops (each as :func:`check_shape` checks it) and their ``(author, seq)``."""
    checked: list[Op] = []
    positions: list[tuple[bytes, int]] = []
    keys: dict[bytes, bytes] = {}  # key -> its author (raw), checked in this batch
    for i, item in enumerate(ops):
        if type(item) is Op:
            op = item
            author, seq, key, sig = op.author, op.seq, op.key, op.sig
            if (
                type(author) is DeviceId
                and type(seq) is int
                and 0 <= seq < SEQ_LIMIT
                and type(op.payload) is bytes
                and len(op.payload) <= MAX_OP_PAYLOAD
                and type(op.prev) is bytes
                and len(op.prev) == OP_ID_SIZE
                and type(sig) is bytes
                and (not sig or len(sig) == SIGNATURE_SIZE)
                and type(key) is bytes
            ):
                raw = keys.get(key)
                if raw == author.raw:  # the common case: the key seen before
                    checked.append(op)
                    positions.append((raw, seq))  # one bytes object per author: fast keys
                    continue
        op = check_shape(item, i)  # the full checks (raising the precise error)
        keys[op.key] = raw = op.author.raw
        checked.append(op)
        positions.append((raw, op.seq))
    return checked, positions


def _held_rows(
    held: HeldChain, positions: Sequence[tuple[bytes, int]]
) -> dict[tuple[bytes, int], tuple[bytes, bytes]]:
    """``(id, prev)`` of the held ops at the batch's positions and next to them, keyed by
    ``(author, seq)``: one span read per run of consecutive seqs of an author."""
    out: dict[tuple[bytes, int], tuple[bytes, bytes]] = {}
    for author, lo, hi in _runs(positions):
        for seq, key, prev in held.span(author, max(0, lo - 1), min(SEQ_LIMIT - 1, hi + 1)):
            out[(author, seq)] = (key, prev)
    return out


def _runs(positions: Iterable[tuple[bytes, int]]) -> list[tuple[bytes, int, int]]:
    """The runs ``(author, lo, hi)`` of consecutive seqs among ``positions`` (no sort)."""
    present = set(positions)
    runs: list[tuple[bytes, int, int]] = []
    for author, hi in present:
        if (author, hi + 1) in present:
            continue  # not the top of its run
        lo = hi
        while (author, lo - 1) in present:
            lo -= 1
        runs.append((author, lo, hi))
    return runs


def check_ops(
    ops: Sequence[object], held: HeldChain, *, strict: bool, ids: Sequence[bytes] | None = None
) -> Checked:
    """Check a batch of ops against itself and the journal (see the module docstring).

    ``ids``: the ops' ids as this process hashed them (else hashed here).  The
    journal is read once per run of consecutive seqs of an author in the batch
    (an op is held iff the held op at its (author, seq) has its id).
    """
    checked, positions = _shapes(ops)
    if ids is None:
        ids = [op.op_id for op in checked]
    rows = _held_rows(held, positions)
    index: dict[tuple[bytes, int], int] = {}
    known = 0
    for i, pos in enumerate(positions):
        key = ids[i]
        row = rows.get(pos)
        if row is not None and row[0] == key:
            known += 1
            continue
        first = index.setdefault(pos, i)
        if first != i:
            if ids[first] == key:
                known += 1
                continue
            op = checked[i]
            raise OpRefused(
                f"ops[{first}] and ops[{i}] are two different ops as {_name(op)} (a fork)"
            )
    authed = [False] * len(checked)
    signed: set[int] = set()
    for (author, top), at_top in index.items():
        if (author, top + 1) in index:
            continue  # each run is walked down from its top, once
        i = at_top
        succ = rows.get((author, top + 1))
        ok = False
        if succ is not None:
            if succ[1] != ids[i]:
                raise OpRefused(
                    f"ops[{i}] ({_name(checked[i])}) is not the op the held op {top + 1} "
                    f"links to: tampered, or a fork of its author's chain"
                )
            ok = True
        seq = top
        while True:
            op = checked[i]
            if op.sig:  # a head keeps its signature (checked) even when a link covers it too
                if not verify_head(op.key, op.sig, ids[i]):
                    raise OpRefused(
                        f"ops[{i}] ({_name(op)}): its signature does not verify with its "
                        f"author's key (forged or tampered)"
                    )
                ok = True
                signed.add(i)
            authed[i] = ok  # covered by itself, or by the authenticated ops above
            seq -= 1
            below = index.get((author, seq))
            if below is None:
                break
            if op.prev != ids[below]:
                raise OpRefused(
                    f"ops[{i}] ({_name(op)}) does not link to ops[{below}] (its prev is "
                    f"{op.prev.hex()[:16]}, op {seq} hashes to {ids[below].hex()[:16]}): "
                    f"tampered or reordered"
                )
            i = below
    pending: list[Op] = []
    for (author, seq), i in index.items():
        op = checked[i]
        if not authed[i]:
            pending.append(op)
            continue
        if (author, seq) in rows:  # another op is held there (a valid one: signed)
            raise OpRefused(
                f"ops[{i}] ({_name(op)}) is a second op at a held (author, seq): a fork of "
                f"its author's chain"
            )
        if (author, seq - 1) in index:
            continue
        if seq == 0:
            if op.prev != NO_PREV:
                raise OpRefused(f"ops[{i}] ({_name(op)}) is a first op with a prev")
            continue
        pred = rows.get((author, seq - 1))
        if pred is not None and pred[0] != op.prev:
            raise OpRefused(
                f"ops[{i}] ({_name(op)}) does not link to the held op {seq - 1} "
                f"(a fork of its author's chain)"
            )
    if strict and pending:
        raise OpRefused(
            f"{len(pending)} op(s) are not covered by a signature: {_name(pending[0])} is "
            f"unsigned and neither the batch nor the journal holds its successor "
            f"(a truncated batch?)"
        )
    fresh = [(ids[i], checked[i], i in signed) for i in range(len(checked)) if authed[i]]
    return Checked(fresh, pending, known)


PushRow = tuple[bytes, int, bytes, bytes | None]
"""A stored op for the push order: (author, seq, id, sig)."""


def chain_rows(conn: sqlite3.Connection) -> Generator[PushRow, None, None]:
    """The stored ops by author, then seq descending, read lazily."""
    for (author,) in conn.execute("SELECT author FROM authors ORDER BY author").fetchall():
        for seq, key, sig in conn.execute(
            "SELECT seq, id, sig FROM ops WHERE author = ? ORDER BY seq DESC", (author,)
        ):
            yield author, seq, key, sig


def push_order_of(
    conn: sqlite3.Connection,
    arrivals: Callable[[Sequence[bytes]], list[int]],
    wanted: Sequence[bytes],
    reach: int,
) -> list[bytes]:
    """The whole push order of ``wanted`` (see ``Journal.push_order``), reading their rows.

    ``arrivals``: the arrival numbers of held ids (at most 400 at a time).
    """
    keyed: dict[bytes, tuple[bytes, int, bytes]] = {}
    tops: list[tuple[bytes, int]] = []
    for start in range(0, len(wanted), 400):
        found = arrivals(wanted[start : start + 400])
        marks = ",".join("?" * len(found))
        for author, seq, key, sig in conn.execute(
            f"SELECT author, seq, id, sig FROM ops WHERE arrival IN ({marks})", found
        ):
            keyed[key] = (author, -seq, key)
            if sig is None:
                tops.append((author, seq))
    present = {(author, -neg) for author, neg, _ in keyed.values()}
    for author, seq in tops:
        if (author, seq + 1) in present:
            continue  # not the top of its run
        for above, key, sig in conn.execute(
            "SELECT seq, id, sig FROM ops WHERE author = ? AND seq > ? ORDER BY seq LIMIT ?",
            (author, seq, reach),
        ):
            if (author, above) in present:
                break
            keyed[key] = (author, -above, key)
            present.add((author, above))
            if sig is not None:
                break
    return [row[2] for row in sorted(keyed.values())]


def push_prefix(
    rows: Iterable[PushRow],
    wanted: Container[bytes],
    limit: int,
    reach: int,
) -> list[bytes]:
    """The first ``limit`` ids of the push order of ``wanted`` (see ``Journal.push_order``).

    ``rows``: the stored ops as ``(author, seq, id, sig)``, by author, then seq
    descending; read only until ``limit`` ids are out.  Above the top of each
    unsigned run of wanted ops, the held ops up to the next signed head (at
    most ``reach``, stopping below the next wanted op) are added first.
    """
    out: list[bytes] = []
    above: deque[tuple[bytes, bytes | None]] = deque(maxlen=reach)  # not wanted; nearest last
    current, last = b"", -1  # the author read, the seq of its last wanted op (or -1)
    for author, seq, key, sig in rows:
        if author != current:
            current, last = author, -1
            above.clear()
        if key not in wanted:
            above.append((key, sig))
            continue
        if sig is None and last != seq + 1:  # the top of an unsigned run
            fill: list[bytes] = []
            for upper, upper_sig in reversed(above):
                fill.append(upper)
                if upper_sig is not None:
                    break
            out.extend(reversed(fill))
        above.clear()
        out.append(key)
        last = seq
        if len(out) >= limit:
            break
    return out[:limit]


CHAIN_ROWS: Final = (
    "SELECT o.author, o.seq, o.id, o.prev, o.payload, o.sig, a.key FROM ops o "
    "LEFT JOIN authors a ON a.author = o.author ORDER BY o.author, o.seq DESC"
)
"""The stored ops as :data:`ChainRow` s, in the order :func:`verify_chains` needs."""

ChainRow = tuple[bytes, int, bytes, bytes, bytes, bytes | None, bytes | None]
"""A stored op: (author, seq, id, prev, payload, sig, key)."""


def verify_chains(rows: Iterable[ChainRow]) -> tuple[str, bool, str]:
    """Re-check stored ops given by author, then seq descending: ``("signatures", ok, detail)``.

    Each op must hash to its id, carry its author's key, and be signed or
    linked to by the op above it.
    """
    count, bad = 0, []
    above: tuple[bytes, int, bytes] | None = None  # (author, seq, prev) of the op above
    for author, seq, key, prev, payload, sig, pub in rows:
        count += 1
        name = f"op {seq} of {DeviceId(author)}"
        if Op(DeviceId(author), seq, payload, prev).op_id != key:
            bad.append(f"{name} does not match its id")
        elif pub is None or author_of_key(pub) != author:
            bad.append(f"{name}: its author's key is missing or not its author's")
        elif sig is not None:
            if not verify_head(pub, sig, key):
                bad.append(f"{name}: bad signature")
        elif above is None or above[0] != author or above[1] != seq + 1 or above[2] != key:
            bad.append(f"{name} is unsigned and unlinked")
        above = (author, seq, prev)
    detail = f"{count} ops checked" + (f"; {len(bad)} bad: {'; '.join(bad[:3])}" if bad else "")
    return ("signatures", not bad, detail)
