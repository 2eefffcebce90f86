"""Serving peers: the answers to the sync requests that arrive over the transport.

Peers are untrusted.  Every request a peer sends is first charged to it at
the rate limiter, priced by :func:`~aura_sync.protocols.admission.request_cost`
(the one admission hook, :meth:`Server.serve`, which any later protocol's
requests pass too); a denial is a ``RateLimited`` error reply carrying the
limiter's exact ``retry_after``, and the peer's later requests are refused
until then (so none overtakes a denied one).  The codec checked the
requests' field types; here each request's bounds are checked (``check()``:
range counts, id lengths, batch sizes, see :mod:`aura_sync.messages.sync`)
and every request is
answered with a reply or a clear :class:`~aura_sync.messages.ErrorReply`,
never an exception:

* over the peer's rate or flow budget: ``RateLimited`` with ``retry_after``;
* a request that is not a sync request: ``UnhandledMessage``;
* this node refuses to sync: ``PeerUnavailable``;
* capabilities are required and the peer has not presented a valid token:
  ``CapabilityError`` (fail closed; :class:`PresentCapability` is verified by
  the peer manager, asked from a task);
* bounds exceeded: ``InvalidArgument`` / ``WrongType`` naming the field;
* anything the journal refuses: its error (a refused op batch, unsigned or
  mis-signed, is also counted against the peer).

A reply too large for a frame becomes an error reply at once (:func:`respond`),
so the peer does not wait out its timeout and retry.

Layer: runtime (protocols).
"""

from __future__ import annotations

import logging
import time
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
    RateLimited,
    TransportError,
    WrongType,
)
from aura_sync.ids import DeviceId
from aura_sync.infrastructure.peer_scoring import Offence
from aura_sync.infrastructure.rate_limit import Denied, Outcome
from aura_sync.messages import Ack, ErrorReply, Message
from aura_sync.messages.peers import AdmitPeer
from aura_sync.messages.rate_limit import CheckRateLimit, ReportOutcome, SetFlowBudget
from aura_sync.messages.sync import (
    MAX_PEERS_PER_EXCHANGE,
    ChildDigestsReply,
    ChildDigestsRequest,
    DigestReply,
    DigestRequest,
    IdsReply,
    IdsRequest,
    NodeIdsReply,
    NodeIdsRequest,
    OpsReply,
    OpsRequest,
    PeerAddress,
    PeerExchange,
    PeerExchangeRequest,
    PresentCapability,
    PushAck,
    PushOps,
)
from aura_sync.protocols.admission import AdmissionConfig, journal_write, request_cost
from aura_sync.protocols.journal import Journal
from aura_sync.transport.base import Connection, Inbound

if TYPE_CHECKING:
    from aura_sync.protocols.anti_entropy import AntiEntropyConfig, InfraAddresses, SyncObserver

__all__ = ["FlowEpochTick", "Server", "respond"]

_log = logging.getLogger("aura_sync.protocols.anti_entropy")
_SYNC_REQUESTS: Final = (
    DigestRequest,
    ChildDigestsRequest,
    NodeIdsRequest,
    IdsRequest,
    OpsRequest,
    PushOps,
    PeerExchangeRequest,
)


@dataclass(frozen=True, slots=True)
class FlowEpochTick(LocalMessage):
    """Timer: a flow-budget epoch begins (the actor rotates the limiter's budgets)."""


class Server:
    """Answers peers' sync requests from the journal (see the module docstring).

    ``authorized`` holds the peers whose capability was verified (shared with
    the actor); ``verified_addresses()`` returns ``(peer, address)`` of the
    verified peers in the latest peer table, for peer exchange;
    ``on_authorized(connection)`` is called once a peer's token verified;
    ``report(peer, offence)`` is told each misbehaviour (the actor sets it).
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
    ) -> None:
        self._config = config
        self._admission: AdmissionConfig = config.admission
        self._clock: Clock = clock or SystemClock()
        self._queued = queued
        self._denied_until: dict[DeviceId, float] = {}
        self._budgeted: set[DeviceId] = set()
        self._shed_ratio = 0.0
        self._journal = journal
        self._infra = infra
        self._tasks = tasks
        self._stats = stats
        self._bump_epoch = bump_epoch
        self._count_refusal = count_refusal
        self._verified_addresses = verified_addresses
        self._on_authorized = on_authorized
        self._observer = observer
        self.authorized: set[DeviceId] = set()
        self.report: Callable[[DeviceId, Offence], None] = lambda peer, offence: None

    def serve(self, event: Inbound) -> None:
        """Answer one inbound request (a one-way message is ignored).

        The one admission hook: every request, whatever its type, is charged to
        its peer at the rate limiter (:meth:`_admit`, a task) before it is
        dispatched, unless admission is off."""
        if event.request_id is None:
            kind = type(event.message).__name__
            _log.debug("event=one_way_ignored peer=%s type=%s", event.connection.peer_id, kind)
            return
        if not self._admission.enabled:
            self._dispatch(event, time.perf_counter())
            return
        peer = event.connection.peer_id
        now = self._clock.now()
        until = self._denied_until.get(peer)
        if until is not None:
            if now < until:  # still inside a denial: refused without asking the limiter
                self._deny(event, until - now, "PEER")
                return
            del self._denied_until[peer]
        self._tasks.spawn(self._admit(event, peer, time.perf_counter()), "admit")

    def _admit(self, event: Inbound, peer: DeviceId, started: float) -> Generator[Step, Any, None]:
        admission = self._admission
        cost = min(request_cost(event.message), admission.max_cost)
        limiter = self._infra.rate_limiter
        if admission.flow_budget and peer not in self._budgeted:
            self._budgeted.add(peer)
            limiter.tell(SetFlowBudget(peer, admission.flow_budget, self.flow_epoch))
        try:
            decision = yield Ask(limiter, CheckRateLimit(peer, cost), self._config.ask_timeout)
        except AuraError as exc:  # the limiter is restarting: fail closed, briefly
            self._stats["requests_rate_limited"] += 1
            respond(event, ErrorReply.from_exception(RateLimited(0.05, f"admission: {exc}")))
            return
        until = self._denied_until.get(peer)
        now = self._clock.now()
        if isinstance(decision, Denied):
            self._denied_until[peer] = max(until or now, now + decision.retry_after)
            self._deny(event, decision.retry_after, decision.reason.name)
            self.report(peer, Offence.RATE_LIMITED)  # once per denial window, not per request
        elif until is not None and now < until:  # a later request must not overtake a denied one
            self._deny(event, until - now, "PEER")
        else:
            self._dispatch(event, started)

    def _shed(self, denied: bool) -> None:
        """The denied fraction of recent requests (an EWMA over ~32), in per mille."""
        self._shed_ratio += (float(denied) - self._shed_ratio) / 32.0
        self._stats["shed_permille"] = round(1000 * self._shed_ratio)

    def _deny(self, event: Inbound, retry_after: float, reason: str) -> None:
        self._shed(True)
        self._stats["requests_rate_limited"] += 1
        kind = type(event.message).__name__
        exc = RateLimited(retry_after, f"{kind} refused by admission ({reason})")
        respond(event, ErrorReply.from_exception(exc))

    @property
    def flow_epoch(self) -> int:
        """The flow-budget epoch now: clock time over ``flow_epoch`` seconds (never goes back)."""
        return int(self._clock.now() // self._admission.flow_epoch)

    def rotate_flow_epoch(self) -> int:
        """Start the current epoch: budgets are attached afresh; return it (for RotateEpoch)."""
        self._budgeted.clear()
        return self.flow_epoch

    def _dispatch(self, event: Inbound, started: float) -> None:
        self._shed(False)
        request = event.message
        peer = event.connection.peer_id
        if isinstance(request, PresentCapability):
            try:
                request.check()
            except AuraError as exc:
                self.report(peer, Offence.INVALID_REQUEST)
                respond(event, ErrorReply.from_exception(exc))
                return
            self._tasks.spawn(self._verify_token(event, peer, request.token), f"token {peer}")
            return
        if not isinstance(request, _SYNC_REQUESTS):
            text = f"not a sync request: {type(request).__name__}"
            respond(event, ErrorReply("UnhandledMessage", text))
            return
        if self._config.refuse_sync:
            self._stats["requests_refused"] += 1
            respond(event, ErrorReply("PeerUnavailable", "this node refuses to sync"))
            return
        if self._config.require_capability and peer not in self.authorized:
            self._stats["requests_refused"] += 1
            text = (
                f"peer {peer} has not presented a valid capability token "
                f"granting sync:request_digest"
            )
            respond(event, ErrorReply("CapabilityError", text))
            return
        try:
            request.check()  # the bounds of an untrusted request: a clear error reply
        except (InvalidArgument, WrongType) as exc:
            self.report(peer, Offence.INVALID_REQUEST)
            respond(event, ErrorReply.from_exception(exc))
            return
        try:
            reply = self._answer(request, peer)
        except AuraError as exc:
            reply = ErrorReply.from_exception(exc)
        self._stats["requests_served"] += 1
        respond(event, reply)
        elapsed = time.perf_counter() - started
        if self._observer is not None:
            self._observer.observe_served_request(elapsed)
        if self._admission.enabled and self._admission.report_outcomes:
            self._report(peer, elapsed)

    def _report(self, peer: DeviceId, elapsed: float) -> None:
        """AIMD's input: OVERLOAD when the actor's queue or this request's latency is
        over its threshold, else SUCCESS (told; the limiter ignores it unless adaptive)."""
        admission = self._admission
        overloaded = self._queued() > admission.overload_queue or (
            elapsed > admission.overload_latency
        )
        if overloaded:
            self._stats["overload_reports"] += 1
        outcome = Outcome.OVERLOAD if overloaded else Outcome.SUCCESS
        self._infra.rate_limiter.tell(ReportOutcome(peer, outcome))

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
            self._stats["ops_served"] += len(ops)
            return OpsReply(tuple(ops), tuple(i for i in request.ids if i not in found))
        if isinstance(request, PushOps):
            try:
                added = journal_write(self._stats, lambda: journal.add_many(request.ops))
            except OpRefused as exc:
                self._count_refusal(peer, exc)
                raise
            if added:
                self._stats["ops_received"] += added
                self._bump_epoch()
            return PushAck(added, len(request.ops) - added)
        if isinstance(request, PeerExchangeRequest):
            limit = min(request.max_peers, MAX_PEERS_PER_EXCHANGE)
            entries = [PeerAddress(p, a) for p, a in self._verified_addresses() if p != peer]
            return PeerExchange(tuple(entries[:limit]))
        raise InvalidArgument(f"not a sync request: {type(request).__name__}")

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


def respond(event: Inbound, reply: Message) -> None:
    """Send ``reply``; one that cannot be encoded becomes an error reply at once."""
    peer = event.connection.peer_id
    try:
        event.respond(reply)
    except TransportError as exc:
        _log.debug("event=respond_failed peer=%s error=%r", peer, str(exc))
    except AuraError as exc:  # e.g. over the frame limit
        _log.warning("event=reply_unsendable peer=%s error=%r", peer, str(exc))
        try:
            event.respond(ErrorReply.from_exception(exc))
        except AuraError as again:
            _log.debug("event=respond_failed peer=%s error=%r", peer, str(again))
