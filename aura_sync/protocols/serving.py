"""Serving peers: the answers to the sync requests that arrive over the transport.

Peers are untrusted.  Every request passes the one admission hook first
(:class:`~aura_sync.protocols.admission.AdmissionHook`: charged at the rate
limiter, a denial is a ``RateLimited`` error reply with the exact
``retry_after``).  The codec checked the requests' field types; here each
request's bounds are checked (``check()``: range counts, id lengths, batch
sizes, see :mod:`aura_sync.messages.sync`) and every request is answered with a
reply or a clear :class:`~aura_sync.messages.ErrorReply`, never an exception:

* a request that is not a sync request: ``UnhandledMessage``;
* this node refuses to sync: ``PeerUnavailable``;
* capabilities are required and the peer has not presented a valid token:
  ``CapabilityError`` (fail closed; :class:`PresentCapability` is verified by
  the peer manager, asked from a task);
* bounds exceeded: ``InvalidArgument`` / ``WrongType`` naming the field;
* anything the journal refuses: its error (a refused op batch, unsigned or
  mis-signed, is also counted against the peer).

Pushed batches are stored in group commits: a :class:`PushOps` waits (unanswered)
until :meth:`Server.flush_pushes` stores every waiting batch in one transaction, at
:data:`PUSH_GROUP` ops or when the actor reaches the :class:`FlushPushes` it told
itself (after the messages queued before it); each batch is acknowledged only
after that commit.  If the group is refused, each batch is stored on its own, so
a refused batch refuses only itself (nothing of it stored, counted against its
peer) and the others still land.

A reply too large for a frame becomes an error reply at once (:func:`respond`),
so the peer does not wait out its timeout and retry.

Layer: runtime (protocols).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from aura_sync.actors._tasks import Ask, Step, Tasks
from aura_sync.actors.base import LocalMessage
from aura_sync.effects import Clock, SystemClock
from aura_sync.errors import (
    AuraError,
    CapabilityError,
    InvalidArgument,
    OpRefused,
    WrongType,
)
from aura_sync.ids import DeviceId
from aura_sync.infrastructure.peer_scoring import Offence
from aura_sync.messages import Ack, ErrorReply, Message
from aura_sync.messages.peers import AdmitPeer
from aura_sync.messages.sync import (
    MAX_HEADS,
    MAX_PEERS_PER_EXCHANGE,
    ChainRequest,
    ChildDigestsReply,
    ChildDigestsRequest,
    DigestReply,
    DigestRequest,
    HeadsReply,
    HeadsRequest,
    IdsReply,
    IdsRequest,
    NodeIdsReply,
    NodeIdsRequest,
    Op,
    OpsReply,
    OpsRequest,
    PeerAddress,
    PeerExchange,
    PeerExchangeRequest,
    PresentCapability,
    PushAck,
    PushOps,
)
from aura_sync.protocols.admission import (
    BYTES_PER_UNIT,
    OP_BYTES,
    AdmissionHook,
    journal_write,
    respond,
)
from aura_sync.protocols.journal import Journal
from aura_sync.transport.base import Connection, Inbound

if TYPE_CHECKING:
    from aura_sync.protocols.anti_entropy import AntiEntropyConfig, InfraAddresses, SyncObserver

__all__ = ["PUSH_GROUP", "SYNC_REQUESTS", "FlowEpochTick", "FlushPushes", "Server", "respond"]

_log = logging.getLogger("aura_sync.protocols.anti_entropy")
_RECONCILING: Final = (
    DigestRequest,
    ChildDigestsRequest,
    NodeIdsRequest,
    IdsRequest,
    OpsRequest,
    HeadsRequest,
    ChainRequest,
)
"""Requests of a peer reconciling with us (it pulls what it lacks from us)."""
SYNC_REQUESTS: Final = (*_RECONCILING, PushOps, PeerExchangeRequest)
"""The requests the server answers (besides :class:`PresentCapability`)."""


_OP_OVERHEAD: Final = 160  # encoded bytes of an op beside its payload (ids, key, signature)
PUSH_GROUP: Final = 2048
"""Pushed ops waiting for a group commit that make it commit at once."""


@dataclass(frozen=True, slots=True)
class FlowEpochTick(LocalMessage):
    """Timer: a flow-budget epoch begins (the actor rotates the limiter's budgets)."""


@dataclass(frozen=True, slots=True)
class FlushPushes(LocalMessage):
    """Told by the actor to itself: store and acknowledge the waiting pushed batches."""


class Server:
    """Answers peers' sync requests from the journal (see the module docstring).

    ``authorized`` holds the peers whose capability was verified (shared with
    the actor); ``verified_addresses()`` returns ``(peer, address)`` of the
    verified peers in the latest peer table, for peer exchange;
    ``on_authorized(connection)`` is called once a peer's token verified;
    ``report(peer, offence)`` is told each misbehaviour (the actor sets it);
    ``reconciled`` maps each peer to the clock time of its latest reconciliation
    request;
    ``schedule_flush()`` makes the actor call :meth:`flush_pushes` after the
    messages already queued (None: pushes are stored at once).
    """

    def __init__(
        self,
        config: AntiEntropyConfig,
        journal: Journal,
        *,
        infra: InfraAddresses,
        tasks: Tasks,
        stats: dict[str, int],
        bump_epoch: Callable[[], None],
        count_refusal: Callable[[DeviceId, OpRefused], None],
        verified_addresses: Callable[[], list[tuple[DeviceId, str]]],
        on_authorized: Callable[[Connection], None],
        observer: SyncObserver | None = None,
        clock: Clock | None = None,
        queued: Callable[[], int] = lambda: 0,
        schedule_flush: Callable[[], None] | None = None,
    ) -> None:
        self._config = config
        self._clock = clock or SystemClock()
        self.reconciled: dict[DeviceId, float] = {}  # peer -> clock time of its last one
        self._schedule_flush = schedule_flush
        self._pushes: list[tuple[Inbound, PushOps]] = []
        self._pushed_ops = 0
        self.pushed_at = float("-inf")  # clock time pushed ops last grew the journal
        self.admission = AdmissionHook(
            config.admission,
            infra.rate_limiter,
            tasks,
            clock=self._clock,
            ask_timeout=config.ask_timeout,
            stats=stats,
            report=lambda peer, offence: self.report(peer, offence),  # noqa: PLW0108 (set later)
            queued=queued,
            observe=None if observer is None else observer.observe_served_request,
        )
        self._journal = journal
        self._infra = infra
        self._tasks = tasks
        self._stats = stats
        self._bump_epoch = bump_epoch
        self._count_refusal = count_refusal
        self._verified_addresses = verified_addresses
        self._on_authorized = on_authorized
        self.authorized: set[DeviceId] = set()
        self.report: Callable[[DeviceId, Offence], None] = lambda peer, offence: None

    def serve(self, event: Inbound) -> None:
        """Answer one inbound request through the admission hook (a one-way message is
        ignored)."""
        if event.request_id is None:
            kind = type(event.message).__name__
            _log.debug("event=one_way_ignored peer=%s type=%s", event.connection.peer_id, kind)
            return
        self.admission.serve(event, self._dispatch)

    @property
    def flow_epoch(self) -> int:
        """The flow-budget epoch now (see :attr:`AdmissionHook.flow_epoch`)."""
        return self.admission.flow_epoch

    def rotate_flow_epoch(self) -> int:
        """The epoch that begins now (budgets are attached afresh in each epoch)."""
        return self.admission.flow_epoch

    def _dispatch(self, event: Inbound) -> bool:
        """Answer an admitted request; True if it was served (its outcome feeds AIMD)."""
        request = event.message
        peer = event.connection.peer_id
        if isinstance(request, PresentCapability):
            try:
                request.check()
            except AuraError as exc:
                self.report(peer, Offence.INVALID_REQUEST)
                respond(event, ErrorReply.from_exception(exc))
                return False
            self._tasks.spawn(self._verify_token(event, peer, request.token), f"token {peer}")
            return False
        if not isinstance(request, SYNC_REQUESTS):
            text = f"not a sync request: {type(request).__name__}"
            respond(event, ErrorReply("UnhandledMessage", text))
            return False
        if self._config.refuse_sync:
            self._stats["requests_refused"] += 1
            respond(event, ErrorReply("PeerUnavailable", "this node refuses to sync"))
            return False
        if self._config.require_capability and peer not in self.authorized:
            self._stats["requests_refused"] += 1
            text = (
                f"peer {peer} has not presented a valid capability token "
                f"granting sync:request_digest"
            )
            respond(event, ErrorReply("CapabilityError", text))
            return False
        try:
            request.check()  # the bounds of an untrusted request: a clear error reply
        except (InvalidArgument, WrongType) as exc:
            self.report(peer, Offence.INVALID_REQUEST)
            respond(event, ErrorReply.from_exception(exc))
            return False
        self._stats["requests_served"] += 1
        if isinstance(request, _RECONCILING):
            now = self._clock.now()
            if len(self.reconciled) >= 4096 and peer not in self.reconciled:
                for old in [p for p, t in self.reconciled.items() if now - t > 60.0]:
                    del self.reconciled[old]  # identities gone quiet
            self.reconciled[peer] = now
        if isinstance(request, PushOps):
            self._queue_push(event, request)
            return True
        try:
            reply = self._answer(request, peer)
        except AuraError as exc:
            reply = ErrorReply.from_exception(exc)
        respond(event, reply)
        return True

    def _queue_push(self, event: Inbound, request: PushOps) -> None:
        self._pushes.append((event, request))
        self._pushed_ops += len(request.ops)
        if self._schedule_flush is None or self._pushed_ops >= PUSH_GROUP:
            self.flush_pushes()
        elif len(self._pushes) == 1:
            self._schedule_flush()

    def flush_pushes(self) -> None:
        """Store the waiting pushed batches in one commit, then acknowledge each."""
        group, self._pushes, self._pushed_ops = self._pushes, [], 0
        if not group:
            return
        journal = self._journal
        ids = [[op.op_id for op in request.ops] for _, request in group]

        def store() -> set[bytes]:
            held = journal.held([key for batch in ids for key in batch])
            journal.add_many([op for _, request in group for op in request.ops])
            return held

        try:
            held = journal_write(self._stats, store)
        except OpRefused:  # someone's batch is bad: each on its own, in order
            for event, request in group:
                respond(event, self._store_one(event.connection.peer_id, request))
            return
        except AuraError as exc:
            for event, _ in group:
                respond(event, ErrorReply.from_exception(exc))
            return
        for (event, request), batch in zip(group, ids, strict=True):
            added = 0
            for key in batch:
                if key not in held:
                    held.add(key)
                    added += 1
            self._acked(added)
            respond(event, PushAck(added, len(request.ops) - added))

    def _store_one(self, peer: DeviceId, request: PushOps) -> Message:
        journal = self._journal
        try:
            added = journal_write(self._stats, lambda: journal.add_many(request.ops))
        except OpRefused as exc:
            self._count_refusal(peer, exc)
            return ErrorReply.from_exception(exc)
        except AuraError as exc:
            return ErrorReply.from_exception(exc)
        self._acked(added)
        return PushAck(added, len(request.ops) - added)

    def _acked(self, added: int) -> None:
        if added:
            self.pushed_at = self._clock.now()
            self._stats["ops_received"] += added
            self._bump_epoch()

    def _answer(self, request: Message, peer: DeviceId) -> Message:
        journal = self._journal
        if isinstance(request, DigestRequest):
            return DigestReply(journal.digests(request.ranges))
        if isinstance(request, ChildDigestsRequest):
            return ChildDigestsReply(*journal.children(request.depth, request.indexes))
        if isinstance(request, NodeIdsRequest):
            return NodeIdsReply(*journal.node_ids(request.depth, request.indexes))
        if isinstance(request, IdsRequest):
            ids, next_lo = journal.list_ids(request.id_range, request.limit)
            return IdsReply(ids, next_lo)
        if isinstance(request, OpsRequest):
            ops = journal.get_many(request.ids)
            found = {op.op_id for op in ops}
            self._served(peer, ops, len(request.ids))
            return OpsReply(tuple(ops), tuple(i for i in request.ids if i not in found))
        if isinstance(request, ChainRequest):  # top first: each reply covered by those before
            ops = journal.chain(request.author, request.lo, request.hi)
            self._served(peer, ops, request.hi - request.lo + 1)
            return OpsReply(tuple(ops))
        if isinstance(request, HeadsRequest):
            page = journal.heads(request.after, MAX_HEADS)
            authors, tops = tuple(a for a, _ in page), tuple(t for _, t in page)
            return HeadsReply(authors, tops, len(page) == MAX_HEADS)  # "more": maybe empty
        if isinstance(request, PeerExchangeRequest):
            limit = min(request.max_peers, MAX_PEERS_PER_EXCHANGE)
            entries = [PeerAddress(p, a) for p, a in self._verified_addresses() if p != peer]
            return PeerExchange(tuple(entries[:limit]))
        raise InvalidArgument(f"not a sync request: {type(request).__name__}")

    def _served(self, peer: DeviceId, ops: list[Op], asked: int) -> None:
        """Count served ops; charge the reply's bytes beyond what the request was priced for."""
        self._stats["ops_served"] += len(ops)
        size = sum(len(op.payload) for op in ops) + _OP_OVERHEAD * len(ops)
        priced = -(-asked * OP_BYTES // BYTES_PER_UNIT)
        self.admission.charge(peer, -(-size // BYTES_PER_UNIT) - priced)  # bigger ops

    def _verify_token(
        self, event: Inbound, peer: DeviceId, token: bytes
    ) -> Generator[Step, Any, None]:
        if not self._config.require_capability:
            respond(event, Ack())
            return
        manager = self._infra.peer_manager
        timeout = self._config.ask_timeout
        conn = event.connection
        try:  # a slot in the peer table only once the token verified
            yield Ask(manager, AdmitPeer(peer, conn.peer_listen_address, token), timeout)
        except AuraError as exc:
            self.authorized.discard(peer)
            self._stats["requests_refused"] += 1
            _log.warning("event=capability_refused peer=%s error=%r", peer, str(exc))
            if isinstance(exc, CapabilityError):
                self.report(peer, Offence.CAPABILITY)
            respond(event, ErrorReply.from_exception(exc))
            return
        self.authorized.add(peer)
        respond(event, Ack())
        self._on_authorized(event.connection)
