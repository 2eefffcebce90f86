"""Inbound admission: what a peer's request costs, and the one hook every protocol serves through.

:func:`request_cost` prices a request in *work units* (one unit is about 0.03
ms of the serving actor's time on the reference machine: a live node served a
100k-op pull, 782 ``ChainRequest`` of 21 units, in 0.47 s; ``bench`` row group
``admission`` measures the heaviest digest request against its price): a base
of 1 for every request plus a term for each piece of work it asks for (ranges
digested, ids listed or hashed, ops returned or pushed, bytes carried; an op
request is priced for ops of :data:`OP_BYTES`, and the server charges a bigger
reply's bytes once served, :meth:`AdmissionHook.charge`). Guarantees
(property-tested): the cost is at least 1 and never falls when a request asks
for more work. The message bounds (``check()``,
:mod:`aura_sync.messages.sync`) cap the work of one request, so
:data:`MAX_REQUEST_COST` bounds every cost. A protocol registers its requests'
prices with :func:`cost_rule`; a request without a rule costs
:data:`DEFAULT_COST`.

:class:`AdmissionHook` is the one admission point of the serving path: every
inbound message of every protocol (anti-entropy's :class:`~aura_sync.protocols.
serving.Server`, gossip, any plug-in through :meth:`~aura_sync.protocols.plugin.
ProtocolContext.admission`) is charged ``min(cost, max_cost)`` to its peer at the
``RateLimiterActor`` (an ``Ask`` of the task runtime, never blocking) before it is
handled.  A denial is a ``RateLimited`` error reply carrying the limiter's exact
``retry_after`` (a one-way message is dropped), the peer's later messages are
refused until then (none overtakes a denied one) and the denial is reported as a
``RATE_LIMITED`` offence once per window.  The peer's flow budget is attached for
each epoch; each served request's outcome (OVERLOAD over the queue or latency
threshold, else SUCCESS) feeds AIMD.  A limiter that does not answer fails closed.

Layer: runtime (protocols).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar

from aura_sync._checks import check_bool, check_int
from aura_sync.actors._tasks import Ask, Step, Tasks
from aura_sync.effects import Clock, check_seconds
from aura_sync.errors import (
    AuraError,
    InvalidArgument,
    JournalUnwritable,
    RateLimited,
    TransportError,
)
from aura_sync.ids import DeviceId
from aura_sync.infrastructure.peer_scoring import Offence
from aura_sync.infrastructure.rate_limit import Denied, Outcome
from aura_sync.messages import ErrorReply, Message
from aura_sync.messages.rate_limit import CheckRateLimit, ReportOutcome, SetFlowBudget
from aura_sync.messages.sync import (
    MAX_HEADS,
    MAX_IDS_BATCH,
    MAX_NODE_IDS,
    MAX_OP_PAYLOAD,
    MAX_OPS_BATCH,
    MAX_PEERS_PER_EXCHANGE,
    MAX_RANGES,
    MAX_TOKEN_SIZE,
    ChainRequest,
    ChildDigestsRequest,
    DigestRequest,
    HeadsRequest,
    IdsRequest,
    NodeIdsRequest,
    OpsRequest,
    PeerExchangeRequest,
    PresentCapability,
    PushOps,
)

if TYPE_CHECKING:
    from aura_sync.actors.address import ActorAddress
    from aura_sync.transport.base import Inbound

__all__ = [
    "DEFAULT_COST",
    "MAX_REQUEST_COST",
    "AdmissionConfig",
    "AdmissionHook",
    "cost_rule",
    "journal_write",
    "request_cost",
    "respond",
]

_log = logging.getLogger("aura_sync.protocols.admission")

M = TypeVar("M", bound=Message)
T = TypeVar("T")

RANGE_UNITS: Final = 2  # one range digest: index sums plus two edge-bucket scans (~0.2 ms)
IDS_PER_UNIT: Final = 64  # ids listed (or fetched by id) per unit
OPS_PER_UNIT: Final = 8  # ops read and encoded per unit
PUSHED_OP_UNITS: Final = 1  # a pushed op: a signature check and an insert
BYTES_PER_UNIT: Final = 16 * 1024  # bytes carried per unit
OP_BYTES: Final = 256  # encoded bytes of a returned op an op request is priced for
TOKEN_UNITS: Final = 10  # a capability token's verification
DEFAULT_COST: Final = 8  # a request without a rule

_RULES: dict[type[Message], Callable[[Any], int]] = {}


def cost_rule(kind: type[M]) -> Callable[[Callable[[M], int]], Callable[[M], int]]:
    """Register ``rule(request) -> units of work beyond the base`` for requests of ``kind``."""

    def register(rule: Callable[[M], int]) -> Callable[[M], int]:
        _RULES[kind] = rule
        return rule

    return register


def _ceil(n: int, per: int) -> int:
    return -(-n // per)


@cost_rule(DigestRequest)
def _digests(req: DigestRequest) -> int:
    return RANGE_UNITS * len(req.ranges)


@cost_rule(ChildDigestsRequest)
def _children(req: ChildDigestsRequest) -> int:
    return RANGE_UNITS * len(req.indexes)  # 4 aligned child ranges per node: one range's work


@cost_rule(IdsRequest)
def _ids(req: IdsRequest) -> int:
    return _ceil(req.limit, IDS_PER_UNIT)


@cost_rule(NodeIdsRequest)
def _node_ids(req: NodeIdsRequest) -> int:
    n = len(req.indexes)  # one small scan per node, up to MAX_NODE_IDS ids each
    return n + _ceil(n * MAX_NODE_IDS, IDS_PER_UNIT)


@cost_rule(OpsRequest)
def _ops(req: OpsRequest) -> int:
    # Priced for OP_BYTES a returned op; more is charged once known (AdmissionHook.charge).
    n = len(req.ids)
    return _ceil(n, IDS_PER_UNIT) + _ceil(n, OPS_PER_UNIT) + _ceil(n * OP_BYTES, BYTES_PER_UNIT)


@cost_rule(ChainRequest)
def _chain(req: ChainRequest) -> int:
    # An op request by seq: priced as one by id for as many ops (it saves the id lookups).
    n = max(1, min(MAX_OPS_BATCH, req.hi - req.lo + 1))  # priced before check(): capped
    return _ceil(n, IDS_PER_UNIT) + _ceil(n, OPS_PER_UNIT) + _ceil(n * OP_BYTES, BYTES_PER_UNIT)


@cost_rule(HeadsRequest)
def _heads(req: HeadsRequest) -> int:
    return _ceil(MAX_HEADS, IDS_PER_UNIT) + _ceil(MAX_HEADS * 32, BYTES_PER_UNIT)  # a full page


@cost_rule(PushOps)
def _push(req: PushOps) -> int:
    size = sum(len(op.payload) for op in req.ops)
    return PUSHED_OP_UNITS * len(req.ops) + _ceil(size, BYTES_PER_UNIT)


@cost_rule(PeerExchangeRequest)
def _exchange(req: PeerExchangeRequest) -> int:
    return _ceil(req.max_peers, IDS_PER_UNIT)


@cost_rule(PresentCapability)
def _present(req: PresentCapability) -> int:
    return TOKEN_UNITS + _ceil(len(req.token), BYTES_PER_UNIT)


def journal_write(stats: dict[str, int], write: Callable[[], T]) -> T:
    """Run one journal write; a database error becomes :class:`JournalUnwritable` and
    marks ``stats["journal_write_failing"]`` (``/health``: "journal_unwritable") until
    a write succeeds again."""
    try:
        result = write()
    except sqlite3.Error as exc:
        stats["journal_write_failures"] += 1
        stats["journal_write_failing"] = 1
        raise JournalUnwritable(f"the journal cannot be written: {exc}") from exc
    stats["journal_write_failing"] = 0
    return result


def request_cost(request: Message) -> int:
    """The work units ``request`` asks for (>= 1): 1 plus its rule's terms.

    Requests are priced as received (before their bounds are checked), so a
    term never raises: an out-of-bounds request is refused by ``check()``
    after it was charged."""
    rule = _RULES.get(type(request))
    if rule is None:
        return DEFAULT_COST
    try:
        extra = rule(request)
    except (TypeError, AttributeError, ValueError):  # a malformed field: the most we price
        return MAX_REQUEST_COST
    return 1 + max(0, extra)


MAX_REQUEST_COST: Final = 1 + max(
    RANGE_UNITS * MAX_RANGES,
    _ceil(MAX_IDS_BATCH, IDS_PER_UNIT),
    MAX_RANGES + _ceil(MAX_RANGES * MAX_NODE_IDS, IDS_PER_UNIT),
    _ceil(MAX_OPS_BATCH, IDS_PER_UNIT)
    + _ceil(MAX_OPS_BATCH, OPS_PER_UNIT)
    + _ceil(MAX_OPS_BATCH * MAX_OP_PAYLOAD, BYTES_PER_UNIT),
    PUSHED_OP_UNITS * MAX_OPS_BATCH + _ceil(MAX_OPS_BATCH * MAX_OP_PAYLOAD, BYTES_PER_UNIT),
    _ceil(MAX_PEERS_PER_EXCHANGE, IDS_PER_UNIT),
    TOKEN_UNITS + _ceil(MAX_TOKEN_SIZE, BYTES_PER_UNIT),
    DEFAULT_COST,
)
"""The cost of the largest request the message bounds allow (161 units)."""


@dataclass(frozen=True, slots=True)
class AdmissionConfig:
    """Settings of inbound admission (the node's ``[defence]`` table; checked here).

    :param enabled: charge every peer message at the rate limiter before serving it.
    :param max_cost: the largest cost charged (the limiter's ``max_cost``); a
        request priced above it is charged this much.
    :param overload_queue: the serving actor is overloaded when more than this
        many messages wait in its mailbox as a request is answered.
    :param overload_latency: ... or when a request took longer than this many
        seconds from arrival to answer (the limiter's round trip included).
    :param report_outcomes: tell the limiter each served request's outcome
        (SUCCESS, or OVERLOAD as above) for AIMD.
    :param flow_budget: work units a peer may spend per epoch (0: no budget).
    :param flow_epoch: seconds per flow-budget epoch (> 0).
    :param stalled_intervals: ``/health`` is degraded ("sync_stalled") once this
        many sync rounds in a row found peers but no session succeeded.
    :param shedding_above: ``/health`` is degraded ("shedding_inbound") while
        more than this fraction of recent peer requests is denied (0..1).
    """

    enabled: bool = True
    max_cost: int = MAX_REQUEST_COST
    overload_queue: int = 256
    overload_latency: float = 0.5
    report_outcomes: bool = True
    flow_budget: int = 0
    flow_epoch: float = 60.0
    stalled_intervals: int = 10
    shedding_above: float = 0.5

    def __post_init__(self) -> None:
        check_bool(self.enabled, "enabled")
        check_bool(self.report_outcomes, "report_outcomes")
        check_int(self.max_cost, "max_cost", minimum=1, maximum=2**53)
        check_int(self.overload_queue, "overload_queue", minimum=1, maximum=2**31)
        check_int(self.flow_budget, "flow_budget", minimum=0, maximum=2**64 - 1)
        check_int(self.stalled_intervals, "stalled_intervals", minimum=1, maximum=2**31)
        shed = check_seconds(self.shedding_above, "shedding_above")  # a number >= 0
        if shed > 1.0:
            raise InvalidArgument(f"shedding_above must be in [0, 1], got {shed!r}")
        object.__setattr__(self, "shedding_above", shed)
        for name in ("overload_latency", "flow_epoch"):
            value = check_seconds(getattr(self, name), name, allow_zero=False)
            object.__setattr__(self, name, value)


class AdmissionHook:
    """The one admission point of the serving path (see the module docstring).

    ``stats`` gets ``denied_key`` (denials), ``shed_permille`` (the denied fraction of
    recent messages) and ``overload_reports``; ``report(peer, offence)`` is told each
    rate-limit violation; ``queued()`` is the serving actor's mailbox depth;
    ``observe(seconds)`` is told each served request's time from arrival to answer.
    """

    def __init__(
        self,
        config: AdmissionConfig,
        limiter: ActorAddress,
        tasks: Tasks,
        *,
        clock: Clock,
        ask_timeout: float,
        stats: dict[str, int],
        report: Callable[[DeviceId, Offence], object],
        queued: Callable[[], int] = lambda: 0,
        denied_key: str = "requests_rate_limited",
        observe: Callable[[float], None] | None = None,
    ) -> None:
        self.config = config
        self._limiter = limiter
        self._tasks = tasks
        self._clock = clock
        self._timeout = ask_timeout
        self._stats = stats
        self._report = report
        self._queued = queued
        self._denied_key = denied_key
        self._observe = observe
        self._denied_until: dict[DeviceId, float] = {}
        self._budgeted: set[DeviceId] = set()  # peers whose budget is set for this epoch
        self._epoch = -1
        self._shed_ratio = 0.0

    @property
    def flow_epoch(self) -> int:
        """The flow-budget epoch now: clock time over ``flow_epoch`` seconds (never goes back)."""
        return int(self._clock.now() // self.config.flow_epoch)

    def serve(self, event: Inbound, handler: Callable[[Inbound], bool]) -> None:
        """Charge ``event`` to its peer, then call ``handler(event)`` (True: it served a
        request, whose outcome feeds AIMD); with admission off, at once."""
        started = time.perf_counter()
        if not self.config.enabled:
            self._handle(event, handler, started)
            return
        peer = event.connection.peer_id
        now = self._clock.now()
        until = self._denied_until.get(peer)
        if until is not None:
            if now < until:  # still inside a denial: refused without asking the limiter
                self._deny(event, until - now, "PEER")
                return
            del self._denied_until[peer]
        self._tasks.spawn(self._admit(event, peer, handler, started), "admit")

    def _admit(
        self, event: Inbound, peer: DeviceId, handler: Callable[[Inbound], bool], started: float
    ) -> Generator[Step, Any, None]:
        config = self.config
        cost = min(request_cost(event.message), config.max_cost)
        epoch = self.flow_epoch
        if epoch != self._epoch:  # budgets are attached afresh; ended denials are forgotten
            self._epoch, self._budgeted, now = epoch, set(), self._clock.now()
            self._denied_until = {p: t for p, t in self._denied_until.items() if t > now}
        if config.flow_budget and peer not in self._budgeted:
            self._budgeted.add(peer)
            self._limiter.tell(SetFlowBudget(peer, config.flow_budget, epoch))
        try:
            decision = yield Ask(self._limiter, CheckRateLimit(peer, cost), self._timeout)
        except AuraError as exc:  # the limiter is restarting: fail closed, briefly
            self._deny(event, 0.05, f"limiter: {exc}")
            return
        until = self._denied_until.get(peer)
        now = self._clock.now()
        if isinstance(decision, Denied):
            self._denied_until[peer] = max(until or now, now + decision.retry_after)
            self._deny(event, decision.retry_after, decision.reason.name)
            if until is None or now >= until:  # once per denial window, not per message
                self._report(peer, Offence.RATE_LIMITED)  # (a pipeline's asks come back together)
            return
        if until is not None and now < until:  # a later message must not overtake a denied one
            self._deny(event, until - now, "PEER")
            return
        self._shed(False)
        self._handle(event, handler, started)

    def charge(self, peer: DeviceId, cost: int) -> None:
        """Charge ``cost`` more units of work found while serving (the bytes of a reply);
        if the limiter denies it, the peer's later requests are refused until its
        ``retry_after`` (it pays in time)."""
        if self.config.enabled and cost > 0:
            self._tasks.spawn(self._charge(peer, min(cost, self.config.max_cost)), "charge")

    def _charge(self, peer: DeviceId, cost: int) -> Generator[Step, Any, None]:
        try:
            decision = yield Ask(self._limiter, CheckRateLimit(peer, cost), self._timeout)
        except AuraError:
            return
        if isinstance(decision, Denied):
            now = self._clock.now()
            until = self._denied_until.get(peer, now)
            self._denied_until[peer] = max(until, now + decision.retry_after)

    def _handle(self, event: Inbound, handler: Callable[[Inbound], bool], started: float) -> None:
        if not handler(event):
            return
        elapsed = time.perf_counter() - started
        if self._observe is not None:
            self._observe(elapsed)
        if self.config.enabled and self.config.report_outcomes:
            self._outcome(event.connection.peer_id, elapsed)

    def _shed(self, denied: bool) -> None:
        """The denied fraction of recent messages (an EWMA over ~32), in per mille."""
        self._shed_ratio += (float(denied) - self._shed_ratio) / 32.0
        self._stats["shed_permille"] = round(1000 * self._shed_ratio)

    def _deny(self, event: Inbound, retry_after: float, reason: str) -> None:
        self._shed(True)
        self._stats[self._denied_key] = self._stats.get(self._denied_key, 0) + 1
        if event.request_id is not None:
            kind = type(event.message).__name__
            exc = RateLimited(retry_after, f"{kind} refused by admission ({reason})")
            respond(event, ErrorReply.from_exception(exc))

    def _outcome(self, peer: DeviceId, elapsed: float) -> None:
        """AIMD's input: OVERLOAD when the actor's queue or this request's latency is
        over its threshold, else SUCCESS (told; the limiter ignores it unless adaptive)."""
        config = self.config
        overloaded = self._queued() > config.overload_queue or elapsed > config.overload_latency
        if overloaded:
            self._stats["overload_reports"] = self._stats.get("overload_reports", 0) + 1
        self._limiter.tell(ReportOutcome(peer, Outcome.OVERLOAD if overloaded else Outcome.SUCCESS))


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
