"""Range-based set reconciliation of two journals, against a small :class:`Remote` interface.

:func:`reconcile` makes the local journal and the remote one hold the union
of their ops: compare full-range digests; split each range whose digests
differ 16 ways until it holds at most ``list_threshold`` ids on both sides;
list the remote ids of those ranges; pull what we lack (stored in few
commits as their signed heads cover them) and push what the remote lacks in
an order where each batch is authenticated, ``batch_size`` ops per message.
A :class:`Chained` remote (a peer) holding many ops more than we do is first
asked for its chains' heads, and the seqs we lack of each chain are pulled by
seq, top first (:func:`_pull_chains`): each reply is then covered by the
replies before it and stored while the next ones arrive.
Ops are content-addressed and journals only grow, so every step is
idempotent and an interrupted run still made progress (counted in
:class:`Progress` as it goes).

With a :class:`Pipelined` remote (a peer), differing ranges are found by
walking down a fixed tree (each node's range cut 4 ways, see
:func:`~aura_sync.messages.sync.tree_range`): a node is named by its
depth and index, and each child's digest costs ~14 bytes (count and a
96-bit fingerprint prefix), so the bytes grow with the difference, not the
journals; a big range we hold nothing of is not descended but listed at once
in pieces of about a page (a fresh node spends no round trips on the tree).
A Pipelined remote is also given up to :data:`PIPELINE_DEPTH` requests at
once (listings, digests, pulls: one round trip for several).  A
:class:`Streamed` remote (a peer) hands each fetched batch over as it comes
(stored while the next ones are in flight; a window's ids are looked up again
only if the journal got ops from elsewhere meanwhile) and takes pushes several
at a time on one connection, which the peer handles in order: each batch is
authenticated by the ones before it.  Without it, pushes go one at a time.

No actors, no sockets: a :class:`Remote`'s calls are generators, so the same
code runs inside an actor task (each call yields network requests, see
:mod:`aura_sync.protocols.session`) and directly in tests against an
in-memory remote (calls that never yield).

Layer: runtime (protocols); pure apart from the local journal.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

from aura_sync.errors import InvalidArgument
from aura_sync.ids import DeviceId
from aura_sync.messages.sync import (
    CHILD_PRINT_SIZE,
    FULL_RANGE,
    MAX_HEADS,
    MAX_IDS_BATCH,
    MAX_NODE_IDS,
    MAX_RANGES,
    TREE_DEPTH,
    TREE_PARTS,
    IdRange,
    Op,
    RangeDigest,
    _op_id,
    tree_range,
)
from aura_sync.protocols.journal import Journal

__all__ = [
    "CHAIN_AT_LEAST",
    "CHAIN_DEPTH",
    "PIPELINE_DEPTH",
    "Call",
    "ChainBuffer",
    "Chained",
    "Pipelined",
    "Progress",
    "Remote",
    "Streamed",
    "chunks",
    "push_ops",
    "reconcile",
]

T = TypeVar("T")
Call = Generator[Any, Any, T]
"""A remote call: ``result = yield from remote.digests(...)``."""


class Remote(Protocol):
    """The other side of a reconciliation (a peer over a connection, or a fake)."""

    def digests(self, ranges: tuple[IdRange, ...]) -> Call[tuple[RangeDigest, ...]]:
        """One :class:`RangeDigest` per range, in order (at most ``MAX_RANGES`` ranges)."""

    def list_ids(self, id_range: IdRange) -> Call[list[bytes]]:
        """Every id the remote holds in ``id_range``, ascending."""

    def fetch(self, ids: tuple[bytes, ...]) -> Call[tuple[Op, ...]]:
        """The remote's ops with these ids (those it has)."""

    def push(self, ops: tuple[Op, ...]) -> Call[int]:
        """Give the remote these ops; returns how many it added."""


@runtime_checkable
class Pipelined(Remote, Protocol):
    """A remote that can have several requests in flight (one round trip for many).

    Each method answers like the one-at-a-time call for each item, in order.
    """

    def digests_many(
        self, chunks: list[tuple[IdRange, ...]]
    ) -> Call[list[tuple[RangeDigest, ...]]]:
        """:meth:`Remote.digests` of each chunk."""

    def list_many(self, ranges: list[IdRange]) -> Call[list[list[bytes]]]:
        """:meth:`Remote.list_ids` of each range."""

    def fetch_many(self, batches: list[tuple[bytes, ...]]) -> Call[list[tuple[Op, ...]]]:
        """:meth:`Remote.fetch` of each batch."""

    def children_many(
        self, depth: int, parts: list[tuple[int, ...]]
    ) -> Call[list[tuple[tuple[int, ...], bytes]]]:
        """For each part, :meth:`~aura_sync.protocols.journal.Journal.children` of its nodes."""

    def node_ids_many(self, depth: int, parts: list[tuple[int, ...]]) -> Call[list[list[bytes]]]:
        """The ids of each node of each part (nodes of at most 16 ids), flattened in order."""


@runtime_checkable
class Streamed(Protocol):
    """A remote that streams fetched batches and pipelines pushes (a peer)."""

    def fetch_each(
        self, batches: list[tuple[bytes, ...]], take: Callable[[int, tuple[Op, ...]], None]
    ) -> Call[None]:
        """:meth:`Remote.fetch` of each batch, ``take(i, ops)`` called as each reply comes."""

    def push_many(self, batches: list[tuple[Op, ...]]) -> Call[int]:
        """:meth:`Remote.push` of each batch, in order, several in flight; ops added."""

    def list_many(
        self, ranges: list[IdRange], counts: list[int] | None = None
    ) -> Call[list[list[bytes]]]:
        """:meth:`Pipelined.list_many`, each first page sized by ``counts``."""


@runtime_checkable
class Chained(Protocol):
    """A remote that serves its authors' chains by seq (a peer)."""

    def heads(self, pages: int) -> Call[list[tuple[DeviceId, int]]]:
        """The remote's authors, each with the top seq it holds (at most ``pages`` pages of
        :data:`~aura_sync.messages.sync.MAX_HEADS`)."""

    def chain_each(
        self,
        spans: Iterable[tuple[DeviceId, int, int]],
        take: Callable[[int, tuple[Op, ...]], None],
    ) -> Call[None]:
        """For each ``(author, lo, hi)`` (at most 128 seqs), the remote's ops of ``author``
        with seq in ``lo..hi``, top first: ``take(i, ops)`` as each reply comes.  ``spans``
        is read as the requests go out (a ``take`` may end it early)."""


@dataclass(slots=True)
class Progress:
    """What a reconciliation did so far (updated as it goes, so valid after a failure)."""

    pulled: int = 0
    pushed: int = 0
    sent: int = 0  # ops pushed, new to the remote or not


PIPELINE_DEPTH = 8
"""Requests a :class:`Pipelined` remote is given at once (pulls, pushes)."""

CHAIN_DEPTH = 64
"""Chain requests a :class:`Chained` remote is given at once (8192 ops of 128: about what
our journal stores in one commit, so that the peer serves the next ones meanwhile); the
held seqs of as many pieces are read at once."""


LOPSIDED = 8
"""A node of 17..1024 ids whose counts differ by 1/8 of the larger is listed, not descended."""

TREE_LIST_THRESHOLD = 4
"""In the tree descent, a differing node holding at most this many ids is listed."""


CHAIN_AT_LEAST = MAX_IDS_BATCH
"""A :class:`Chained` remote holding this many ops more than we do is first asked for its
chains' heads, and the tops of its chains above ours are pulled by seq (see
:func:`_pull_chains`), before the ranges are compared."""


LIST_PIECE = 768
"""Ids a piece holds on average when a range we hold nothing of is listed in pieces."""


def _pieces(id_range: IdRange, count: int) -> tuple[list[IdRange], list[int]]:
    """``id_range`` (the peer holds ``count`` ids there, we none) cut into at most 256 equal
    pieces of about :data:`LIST_PIECE` ids (ids are hashes: spread evenly), each with the
    page size to ask for (a piece holding more is paged)."""
    pieces = list(id_range.split(min(256, max(2, -(-count // LIST_PIECE)))))
    page = min(MAX_IDS_BATCH, count // len(pieces) * 5 // 4 + 16)
    return pieces, [page] * len(pieces)


def _descend(
    journal: Journal,
    remote: Pipelined,
    threshold: int,
    pull: list[bytes],
    push: list[bytes] | None,
    *,
    total: int,
) -> Call[None]:
    """Walk down the tree of ranges whose digests differ (the root does: the peer holds
    ``total`` ids); fill pull and push (None: nothing is pushed, so nothing to collect).

    A range we hold nothing of is listed at once, in pieces, not descended."""
    depth, nodes = 0, [0]
    size = CHILD_PRINT_SIZE
    if not len(journal) and total > MAX_IDS_BATCH:
        nodes = []
        pieces, pages = _pieces(FULL_RANGE, total)
        for ids in (yield from _list_sized(remote, pieces, pages)):
            pull.extend(journal.missing(ids))
    while nodes:
        parts = list(chunks(nodes, MAX_RANGES))
        replies = yield from remote.children_many(depth, parts)
        deeper: list[int] = []
        listed: list[IdRange] = []
        sizes: list[int] = []
        small_nodes: list[int] = []
        for part, (counts, prints) in zip(parts, replies, strict=True):
            if len(counts) != TREE_PARTS * len(part):
                raise InvalidArgument(
                    f"peer answered {len(part)} tree nodes with {len(counts)} children"
                )
            for k, count in enumerate(counts):
                index = part[k // TREE_PARTS] * TREE_PARTS + k % TREE_PARTS
                id_range = tree_range(depth + 1, index)
                ours = journal.digest(id_range)
                if (
                    ours.count == count
                    and ours.fingerprint[:size] == prints[k * size : (k + 1) * size]
                ):
                    continue
                most = max(ours.count, count)
                # A big node whose counts alone show that an eighth or more of it
                # differs is listed: descending would cost as many bytes, more round
                # trips and a digest per child on both sides.
                lopsided = (
                    MAX_NODE_IDS < most <= MAX_IDS_BATCH  # one page: all listed at once
                    and abs(ours.count - count) * LOPSIDED >= most
                )
                if count == 0:
                    _collect(push, journal, (), id_range)
                elif most <= threshold:
                    small_nodes.append(index)
                elif (
                    lopsided
                    or (not ours.count and count <= MAX_IDS_BATCH)  # one page, one request
                    or depth + 1 == TREE_DEPTH
                ):
                    listed.append(id_range)
                    sizes.append(count)
                elif not ours.count:  # a big node we lack: listed in pieces of one page each
                    pieces, pages = _pieces(id_range, count)
                    listed += pieces
                    sizes += pages
                else:
                    deeper.append(index)
        lists = yield from _list_sized(remote, listed, sizes)
        for id_range, ids in zip(listed, lists, strict=True):
            pull.extend(journal.missing(ids))
            _collect(push, journal, ids, id_range)
        node_parts = list(chunks(small_nodes, MAX_RANGES))
        listings = yield from remote.node_ids_many(depth + 1, node_parts)
        for index, ids in zip(small_nodes, listings, strict=True):
            pull.extend(journal.missing(ids))
            _collect(push, journal, ids, tree_range(depth + 1, index))
        depth, nodes = depth + 1, deeper


def _list_sized(
    remote: Pipelined, ranges: list[IdRange], counts: list[int]
) -> Call[list[list[bytes]]]:
    if isinstance(remote, Streamed):  # pages sized by the peer's counts (cheaper to admit)
        return (yield from remote.list_many(ranges, counts))
    return (yield from remote.list_many(ranges))


def _collect(
    push: list[bytes] | None, journal: Journal, theirs: Sequence[bytes], id_range: IdRange
) -> None:
    if push is not None:
        push.extend(journal.not_in(theirs, id_range))


def _digests_many(remote: Remote, parts: list[tuple[IdRange, ...]]) -> Call[list[Any]]:
    if isinstance(remote, Pipelined):
        return (yield from remote.digests_many(parts))
    out = []
    for part in parts:
        out.append((yield from remote.digests(part)))
    return out


def _list_many(remote: Remote, ranges: list[IdRange]) -> Call[list[list[bytes]]]:
    if isinstance(remote, Pipelined):
        return (yield from remote.list_many(ranges))
    out = []
    for id_range in ranges:
        out.append((yield from remote.list_ids(id_range)))
    return out


def _fetch_many(remote: Remote, batches: list[tuple[bytes, ...]]) -> Call[list[tuple[Op, ...]]]:
    if isinstance(remote, Pipelined):
        return (yield from remote.fetch_many(batches))
    out = []
    for batch in batches:
        out.append((yield from remote.fetch(batch)))
    return out


def chunks(items: Sequence[T], size: int) -> Iterator[tuple[T, ...]]:
    """``items`` in consecutive tuples of at most ``size``."""
    for start in range(0, len(items), size):
        yield tuple(items[start : start + size])


def reconcile(
    journal: Journal,
    remote: Remote,
    *,
    list_threshold: int,
    batch_size: int,
    progress: Progress | None = None,
    push_limit: int | None = None,
) -> Call[bytes | None]:
    """Make ``journal`` and ``remote`` hold the union; return the agreed fingerprint, if any.

    With ``push_limit``, at most that many ops are pushed (the rest is left to the
    remote's own pulls and later runs); none to a :class:`Chained` remote holding
    :data:`CHAIN_AT_LEAST` ops fewer than we do (it pulls our chains itself).
    Returns None when the remote's final full-range fingerprint differs from ours
    (it changed meanwhile, or pushes were cut or left to it); raises what the
    remote's calls raise.
    """
    progress = progress if progress is not None else Progress()
    theirs = (yield from remote.digests((FULL_RANGE,)))[0]
    if theirs.fingerprint == journal.digest().fingerprint:
        return theirs.fingerprint
    if isinstance(remote, Chained) and theirs.count - len(journal) >= CHAIN_AT_LEAST:
        yield from _pull_chains(journal, remote, theirs.count - len(journal), batch_size, progress)
        if theirs.fingerprint == journal.digest().fingerprint:
            return theirs.fingerprint
    elif isinstance(remote, Chained) and len(journal) - theirs.count >= CHAIN_AT_LEAST:
        # The peer is far behind: its own sessions pull our chains by seq.  Pushing too
        # would walk the tree on both sides and send each op twice.
        push_limit = 0
        if not theirs.count:
            return None
    held = len(journal)  # before the listings: pulled ids are missing unless it grew since
    pull: list[bytes] = []
    push: list[bytes] | None = None if push_limit == 0 else []
    pending = [] if isinstance(remote, Pipelined) else [(FULL_RANGE, theirs)]
    if isinstance(remote, Pipelined):
        threshold = min(list_threshold, TREE_LIST_THRESHOLD)
        yield from _descend(journal, remote, threshold, pull, push, total=theirs.count)
    while pending:
        split: list[IdRange] = []
        listed: list[IdRange] = []
        for id_range, digest in pending:
            ours = journal.digest(id_range)
            if ours.fingerprint == digest.fingerprint:
                continue
            if digest.count == 0:
                _collect(push, journal, (), id_range)
            elif max(ours.count, digest.count) <= list_threshold or ours.count == 0:
                listed.append(id_range)
            else:
                split.extend(id_range.split(16))
        for id_range, ids in zip(listed, (yield from _list_many(remote, listed)), strict=True):
            pull.extend(journal.missing(ids))
            _collect(push, journal, ids, id_range)
        pending = []
        parts = list(chunks(split, MAX_RANGES))
        for chunk, digests in zip(parts, (yield from _digests_many(remote, parts)), strict=True):
            pending.extend(zip(chunk, digests, strict=True))
    yield from _pull(journal, remote, pull, batch_size, progress, held=held)
    if push:
        order = journal.push_order(push, push_limit)  # each batch authenticated by those before
        yield from push_ops(journal, remote, order, batch_size, progress)
    final = (yield from remote.digests((FULL_RANGE,)))[0].fingerprint
    return final if final == journal.digest().fingerprint else None


FETCH_WINDOW = 128
"""Batches fetched per window; ids that arrived meanwhile (pushed) are dropped first."""


class ChainBuffer:
    """Pulled ops, stored in commits of ``group`` once their chains show them covered.

    Ops arrive in id order, unrelated to their chains.  An op is *ready* when it
    carries a signature or its successor (same author, ``seq + 1``) is ready; ready
    ops are queued in chain order (each author's seq descending), so the journal
    finds each op's successor in the same batch or already stored, and checks each
    op once.  :meth:`flush` also offers the rest (their successors may be held from
    before); what the journal still finds uncovered is dropped (a later session
    pulls it again).  At most ``max_waiting`` ops of at most ``max_waiting_bytes``
    payload bytes wait: a peer's uncovered ops cannot hold more memory than that.
    """

    def __init__(
        self,
        journal: Journal,
        group: int = 8192,
        max_waiting: int = 500_000,
        max_waiting_bytes: int = 64 << 20,
    ) -> None:
        """Buffer for ``journal``."""
        self._journal = journal
        self._group = group
        self._max_waiting = max_waiting
        self._room = max_waiting_bytes  # payload bytes that may still wait
        self._waiting: dict[tuple[bytes, int], tuple[Op, bytes]] = {}
        self._ready: set[tuple[bytes, int]] = set()
        self._queue: list[Op] = []
        self._ids: list[bytes] = []  # the queued ops' ids, hashed here once
        self._authors: dict[bytes, bytes] = {}

    def take(self, ops: Sequence[Op], wanted: Container[bytes] | None = None) -> int:
        """Add the ops of one reply (those whose id is ``wanted``, if given); returns how
        many were stored by this call."""
        waiting, ready, queue, ids = self._waiting, self._ready, self._queue, self._ids
        authors = self._authors
        for op in ops:
            author, seq = op.author.raw, op.seq
            author = authors.setdefault(author, author)  # one object per author: fast keys
            key = _op_id(author, seq, op.prev, op.payload)  # op.op_id, on the shared author
            if wanted is not None and key not in wanted:
                continue
            pos = (author, seq)
            if pos in ready or pos in waiting:
                continue
            if not op.sig and (author, seq + 1) not in ready:
                size = len(op.payload)
                if len(waiting) < self._max_waiting and size <= self._room:
                    waiting[pos] = (op, key)
                    self._room -= size
                continue
            run: tuple[Op, bytes] | None = (op, key)
            while run is not None:  # ready: so is the run waiting below it
                ready.add((author, seq))
                queue.append(run[0])
                ids.append(run[1])
                seq -= 1
                run = waiting.pop((author, seq), None)
                if run is not None:
                    self._room += len(run[0].payload)
        return self._store(self._group)

    def take_piece(self, author: DeviceId, lo: int, hi: int, ops: Sequence[Op]) -> tuple[int, bool]:
        """Add the reply to a chain piece: ``author``'s ops of seqs ``lo..hi`` (others are
        dropped).  Returns (ops stored by this call, whether the reply was the whole piece
        and left nothing waiting).  A whole piece in order, top first, whose top is signed
        or below a ready op (the common case) is queued at once."""
        raw = self._authors.setdefault(author.raw, author.raw)
        ready = self._ready
        if (
            len(ops) == hi - lo + 1
            and not self._waiting
            and (ops[0].sig or (raw, hi + 1) in ready)
            and [op.seq for op in ops] == list(range(hi, lo - 1, -1))
            and all(op.author == author for op in ops)
        ):
            positions = [(raw, seq) for seq in range(hi, lo - 1, -1)]
            if ready.isdisjoint(positions):
                ready.update(positions)
                self._queue += ops
                self._ids += [_op_id(raw, op.seq, op.prev, op.payload) for op in ops]
                return self._store(self._group), True
        mine = [op for op in ops if op.author == author and lo <= op.seq <= hi]
        waiting = len(self._waiting)
        stored = self.take(mine)
        return stored, len(mine) > hi - lo and len(self._waiting) == waiting

    def covered(self, author: bytes, seq: int) -> None:
        """Count the op of ``author`` at ``seq`` as ready: the journal holds it (the ops
        below it are then checked against it)."""
        self._ready.add((self._authors.setdefault(author, author), seq))

    def _store(self, at_least: int) -> int:
        stored, group = 0, self._group
        while self._queue and len(self._queue) >= at_least:
            batch, self._queue = self._queue[:group], self._queue[group:]
            keys, self._ids = self._ids[:group], self._ids[group:]
            stored += self._journal.ingest(batch, ids=keys)[0]
        return stored

    def flush(self) -> int:
        """Store the ready ops, then offer the rest; returns how many were stored."""
        stored = self._store(1)
        rest = sorted(self._waiting.values(), key=lambda item: (item[0].author.raw, -item[0].seq))
        self._waiting.clear()
        self._room += sum(len(op.payload) for op, _ in rest)
        for start in range(0, len(rest), self._group):
            part = rest[start : start + self._group]
            ops, keys = [op for op, _ in part], [key for _, key in part]
            stored += self._journal.ingest(ops, ids=keys)[0]
        return stored


def _pull(
    journal: Journal,
    remote: Remote,
    pull: list[bytes],
    batch_size: int,
    progress: Progress,
    *,
    held: int,
) -> Call[None]:
    """Fetch ``pull`` (ids missing when the journal held ``held`` ops) and store it through
    a :class:`ChainBuffer` (few commits); a window's ids held meanwhile are not fetched."""
    buffer = ChainBuffer(journal)  # pulled ops are stored once authenticated
    streamed = isinstance(remote, Streamed)
    ours = progress.pulled
    try:
        for window in chunks(pull, batch_size * (FETCH_WINDOW if streamed else PIPELINE_DEPTH)):
            if len(journal) != held + progress.pulled - ours:  # ops came from elsewhere too
                window = tuple(journal.missing(window))  # noqa: PLW2901 (drop what came)
            batches = list(chunks(window, batch_size))

            def take(
                i: int, reply: tuple[Op, ...], batches: list[tuple[bytes, ...]] = batches
            ) -> None:
                progress.pulled += buffer.take(reply, set(batches[i]))

            if isinstance(remote, Streamed):
                yield from remote.fetch_each(batches, take)
            else:
                for i, reply in enumerate((yield from _fetch_many(remote, batches))):
                    take(i, reply)
    finally:
        progress.pulled += buffer.flush()


def _pull_chains(
    journal: Journal, remote: Chained, lack: int, batch_size: int, progress: Progress
) -> Call[None]:
    """Pull the seqs we lack of the remote's chains (it holds ``lack`` ops more), by seq.

    Each chain is walked down from the remote's top, ``batch_size`` seqs a
    request, skipping what we hold.  Asked top first, each reply is
    authenticated by the signed top of its chain (or the held op above it) and
    the replies before it, so it is ready at once and stored while the next
    ones arrive (ids are not listed; fetched by id, in id order, almost nothing
    is covered until the end).  A chain stops at a reply short of what it asked
    (a hole, or the remote's bottom) or one whose ops are not covered (not in
    chain order: a peer cannot make us walk down a chain it does not prove);
    the walks read at most ``lack`` held ops in all (chains whose top we lack
    first), and the ranges compared next find the rest.  At most ``lack //``
    :data:`~aura_sync.messages.sync.MAX_HEADS` pages of heads are asked for.
    """
    heads = yield from remote.heads(max(1, lack // MAX_HEADS))
    ours = journal.tops(author.raw for author, _ in heads)
    heads.sort(key=lambda head: ours.get(head[0].raw, -1) >= head[1])  # stable
    stopped: set[DeviceId] = set()
    sent: list[tuple[DeviceId, int, int]] = []
    buffer = ChainBuffer(journal)

    def spans() -> Iterator[tuple[DeviceId, int, int]]:
        budget = lack  # held ops the walks may read
        for author, top in heads:
            hi, read = top, -1  # held: the held seqs in read..top + 1
            held: set[int] = set()
            while hi >= 0 and budget > 0 and author not in stopped:
                lo = max(0, hi - batch_size + 1)
                if lo < read or read < 0:  # read the held seqs of the next pieces at once
                    read = max(0, hi - batch_size * CHAIN_DEPTH + 1)
                    held = {row[0] for row in journal.span(author.raw, read, hi + 1)}
                    budget -= len(held)
                lacking = [seq for seq in range(lo, hi + 1) if seq not in held]
                hi = lo - 1
                if lacking:
                    if lacking[-1] + 1 in held:  # the held op above covers the piece
                        buffer.covered(author.raw, lacking[-1] + 1)
                    sent.append((author, lacking[0], lacking[-1]))
                    yield sent[-1]

    def take(i: int, ops: tuple[Op, ...]) -> None:
        author, lo, hi = sent[i]
        if author in stopped:
            return
        stored, whole = buffer.take_piece(author, lo, hi, ops)
        progress.pulled += stored
        if not whole:  # short, or not covered
            stopped.add(author)

    try:
        yield from remote.chain_each(spans(), take)
    finally:
        progress.pulled += buffer.flush()


def push_ops(
    journal: Journal, remote: Remote, order: list[bytes], batch_size: int, progress: Progress
) -> Call[None]:
    """Push the held ops ``order`` (in :meth:`Journal.push_order`), ``batch_size`` per message."""
    batches = [b for b in (tuple(journal.get_many(ids)) for ids in chunks(order, batch_size)) if b]
    if isinstance(remote, Streamed):
        progress.sent += sum(len(b) for b in batches)
        progress.pushed += yield from remote.push_many(batches)
        return
    for ops in batches:
        progress.sent += len(ops)
        progress.pushed += yield from remote.push(ops)
