"""The :class:`~aura_sync.protocols.reconcile.Remote` of a peer over a connection.

Each call is a network request through :meth:`Sessions.request
<aura_sync.protocols.session.Sessions.request>` (retried on timeouts and on
the peer's admission denials, after their ``retry_after``; every sync request
is idempotent); several are kept in flight at once where the reconciliation
allows (:data:`~aura_sync.protocols.reconcile.PIPELINE_DEPTH`, or
:data:`FETCH_DEPTH` while pulling).  Each reply of the untrusted peer is
checked for its type and shape (``check()``) before it is used; the ops it
sends are checked by the journal that stores them.

Layer: runtime (protocols).
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from aura_sync.actors._tasks import Await, Step
from aura_sync.errors import AskTimeout, InvalidArgument, RateLimited, RequestTimeout
from aura_sync.ids import DeviceId
from aura_sync.messages import Message
from aura_sync.messages.sync import (
    MAX_IDS_BATCH,
    ChainRequest,
    ChildDigestsReply,
    ChildDigestsRequest,
    DigestReply,
    DigestRequest,
    HeadsReply,
    HeadsRequest,
    IdRange,
    IdsReply,
    IdsRequest,
    NodeIdsReply,
    NodeIdsRequest,
    Op,
    OpsReply,
    OpsRequest,
    PushAck,
    PushOps,
    RangeDigest,
)
from aura_sync.protocols.reconcile import CHAIN_DEPTH, PIPELINE_DEPTH, Call
from aura_sync.transport.base import Connection

if TYPE_CHECKING:
    from aura_sync.protocols.session import Sessions

__all__ = ["FETCH_DEPTH", "PeerRemote"]

FETCH_DEPTH = 16
"""Op and listing requests in flight at once while pulling: the peer serves the next ones
while our journal stores the last."""


class PeerRemote:
    """The :class:`~aura_sync.protocols.reconcile.Remote` of a peer over ``conn``."""

    def __init__(self, sessions: Sessions, conn: Connection) -> None:
        self._sessions = sessions
        self._conn = conn

    def _call(self, msg: Message, expected: type[Any]) -> Generator[Step, Any, Any]:
        reply = yield from self._sessions.request(self._conn, msg)
        if not isinstance(reply, expected):
            raise InvalidArgument(f"peer answered {type(msg).__name__} with {type(reply).__name__}")
        reply.check()  # the bounds of an untrusted reply
        return reply

    def digests(self, ranges: tuple[IdRange, ...]) -> Call[tuple[RangeDigest, ...]]:
        reply = yield from self._call(DigestRequest(ranges), DigestReply)
        if len(reply.digests) != len(ranges):
            raise InvalidArgument(
                f"peer answered {len(ranges)} ranges with {len(reply.digests)} digests"
            )
        digests: tuple[RangeDigest, ...] = reply.digests
        return digests

    def list_ids(self, id_range: IdRange) -> Call[list[bytes]]:
        out: list[bytes] = []
        current = id_range
        while True:
            reply = yield from self._call(IdsRequest(current, MAX_IDS_BATCH), IdsReply)
            out.extend(reply.ids)
            if reply.next_lo is None:
                return out
            current = IdRange(reply.next_lo, id_range.hi)

    def fetch(self, ids: tuple[bytes, ...]) -> Call[tuple[Op, ...]]:
        reply = yield from self._call(OpsRequest(ids), OpsReply)
        ops: tuple[Op, ...] = reply.ops
        return ops

    def push(self, ops: tuple[Op, ...]) -> Call[int]:
        reply = yield from self._call(PushOps(ops), PushAck)
        added: int = reply.added
        return added

    def _pipeline(
        self,
        msgs: Iterable[Message],
        expected: type[Any],
        each: Callable[[int, Any], None] | None = None,
        depth: int = PIPELINE_DEPTH,
    ) -> Generator[Step, Any, list[Any]]:
        """Send up to ``depth`` requests at once; the replies, in order
        (or, with ``each``, ``each(i, reply)`` as they come, and ``[]``).

        A request that times out is sent again on its own (with the retry
        planner of :meth:`Sessions.request`); every request is idempotent.
        """
        timeout = self._sessions.config.request_timeout
        inflight: deque[tuple[Message, Future[Any]]] = deque()
        out: list[Any] = []
        done = 0
        queued = iter(msgs)
        window = depth  # after a denial 1, growing back by 1 a reply (the peer's budget)
        for msg in itertools.islice(queued, depth):
            inflight.append((msg, self._conn.request(msg, timeout)))
        while inflight:
            msg, future = inflight.popleft()
            try:
                reply = yield Await(future, timeout + 1.0)
            except (RequestTimeout, AskTimeout, RateLimited) as exc:  # sent again on its own
                if isinstance(exc, RateLimited):
                    window = 1
                reply = yield from self._sessions.request(self._conn, msg)
            if not isinstance(reply, expected):
                raise InvalidArgument(
                    f"peer answered {type(msg).__name__} with {type(reply).__name__}"
                )
            reply.check()  # the bounds of an untrusted reply
            window = min(depth, window + 1)
            while len(inflight) < window and (following := next(queued, None)) is not None:
                inflight.append((following, self._conn.request(following, timeout)))
            if each is None:
                out.append(reply)
            else:
                each(done, reply)
            done += 1
        return out

    def digests_many(
        self, chunks: list[tuple[IdRange, ...]]
    ) -> Call[list[tuple[RangeDigest, ...]]]:
        replies = yield from self._pipeline([DigestRequest(c) for c in chunks], DigestReply)
        for chunk, reply in zip(chunks, replies, strict=True):
            if len(reply.digests) != len(chunk):
                raise InvalidArgument(
                    f"peer answered {len(chunk)} ranges with {len(reply.digests)} digests"
                )
        return [reply.digests for reply in replies]

    def list_many(
        self, ranges: list[IdRange], counts: list[int] | None = None
    ) -> Call[list[list[bytes]]]:
        """Each range's ids; ``counts`` (the peer's, from its digests) size each first page
        (its price), the rest is paged."""
        limits = [MAX_IDS_BATCH] * len(ranges) if counts is None else counts
        requests: list[Message] = [
            IdsRequest(r, min(MAX_IDS_BATCH, max(1, n)))
            for r, n in zip(ranges, limits, strict=True)
        ]
        replies = yield from self._pipeline(requests, IdsReply, depth=FETCH_DEPTH)
        out: list[list[bytes]] = []
        for id_range, reply in zip(ranges, replies, strict=True):
            ids = list(reply.ids)
            if reply.next_lo is not None:  # a long range: page through the rest
                ids += yield from self.list_ids(IdRange(reply.next_lo, id_range.hi))
            out.append(ids)
        return out

    def fetch_many(self, batches: list[tuple[bytes, ...]]) -> Call[list[tuple[Op, ...]]]:
        replies = yield from self._pipeline([OpsRequest(b) for b in batches], OpsReply)
        return [reply.ops for reply in replies]

    def fetch_each(
        self, batches: list[tuple[bytes, ...]], take: Callable[[int, tuple[Op, ...]], None]
    ) -> Call[None]:
        requests: list[Message] = [OpsRequest(b) for b in batches]
        yield from self._pipeline(requests, OpsReply, lambda i, r: take(i, r.ops), FETCH_DEPTH)

    def heads(self, pages: int) -> Call[list[tuple[DeviceId, int]]]:
        """The peer's authors and their top seqs, at most ``pages`` pages."""
        out: list[tuple[DeviceId, int]] = []
        after = b""
        for _ in range(pages):
            reply = yield from self._call(HeadsRequest(after), HeadsReply)
            if reply.authors and reply.authors[0].raw <= after:
                raise InvalidArgument("peer answered a page of heads out of order")
            out += zip(reply.authors, reply.tops, strict=True)
            if not reply.more or not reply.authors:
                break
            after = reply.authors[-1].raw
        return out

    def chain_each(
        self,
        spans: Iterable[tuple[DeviceId, int, int]],
        take: Callable[[int, tuple[Op, ...]], None],
    ) -> Call[None]:
        requests = (ChainRequest(author, lo, hi) for author, lo, hi in spans)
        yield from self._pipeline(requests, OpsReply, lambda i, r: take(i, r.ops), CHAIN_DEPTH)

    def push_many(self, batches: list[tuple[Op, ...]]) -> Call[int]:
        added = [0]

        def count(i: int, reply: PushAck) -> None:
            added[0] += reply.added

        yield from self._pipeline([PushOps(b) for b in batches], PushAck, count)
        return added[0]

    def children_many(
        self, depth: int, parts: list[tuple[int, ...]]
    ) -> Call[list[tuple[tuple[int, ...], bytes]]]:
        requests: list[Message] = [ChildDigestsRequest(depth, part) for part in parts]
        replies = yield from self._pipeline(requests, ChildDigestsReply)
        for reply in replies:
            reply.check()  # an untrusted peer's counts and prints
        return [(reply.counts, reply.prints) for reply in replies]

    def node_ids_many(self, depth: int, parts: list[tuple[int, ...]]) -> Call[list[list[bytes]]]:
        requests: list[Message] = [NodeIdsRequest(depth, part) for part in parts]
        replies = yield from self._pipeline(requests, NodeIdsReply)
        out: list[list[bytes]] = []
        for part, reply in zip(parts, replies, strict=True):
            reply.check()  # an untrusted peer's counts and ids
            if len(reply.counts) != len(part):
                raise InvalidArgument(f"peer answered {len(part)} nodes with {len(reply.counts)}")
            start = 0
            for count in reply.counts:
                out.append(list(reply.ids[start : start + count]))
                start += count
        return out
