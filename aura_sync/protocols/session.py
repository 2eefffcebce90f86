"""Sync sessions with peers: dialing, one session per peer, peer exchange — with all compensation.

Every task here borrows something and gives it back on every path, in one
place: a pool loan (its connection comes with it) is released, or closed
when the transport broke; a session opened with the peer manager is ended
with its outcome and latency (which feeds the peer's score and failure
backoff); a failed session is retried through the retry planner
(``policy.plan``) and the scheduler (:class:`RetrySync`).  Should the actor
stop or crash meanwhile, :meth:`Sessions.abandon` closes the loans and ends
the sessions still open, and :func:`give_back` returns what an ask obtained
after nobody waited for it any more.

:meth:`Sessions.request` is one network request, retried on timeouts and on
the peer's admission denials after their ``retry_after`` (every sync request is
idempotent); a session reconciles through
:class:`~aura_sync.protocols.peer_remote.PeerRemote`, the
:class:`~aura_sync.protocols.reconcile.Remote` over a connection built on it.

Layer: runtime (protocols).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aura_sync.actors._tasks import Ask, Await, Send, Sleep, Step, Tasks, call
from aura_sync.actors.address import ActorAddress
from aura_sync.actors.pool import PoolLease
from aura_sync.effects import Clock, Rng, Scheduler
from aura_sync.errors import (
    AuraError,
    CapabilityError,
    ConnectionClosed,
    InvalidArgument,
    JournalUnwritable,
    OpRefused,
    PeerUnavailable,
    RateLimited,
    RequestTimeout,
    TransportError,
)
from aura_sync.ids import DeviceId
from aura_sync.infrastructure.rate_limit import Allowed, Denied
from aura_sync.messages import Ack, Message
from aura_sync.messages.peers import (
    DiscoverPeers,
    EndSyncSession,
    RecordFailure,
    StartSyncSession,
)
from aura_sync.messages.pool import Acquire, CloseConnection, Release
from aura_sync.messages.rate_limit import CheckRateLimit
from aura_sync.messages.sync import (
    PeerExchange,
    PeerExchangeRequest,
    PresentCapability,
    RetrySync,
)
from aura_sync.protocols.journal import Journal
from aura_sync.protocols.peer_remote import PeerRemote
from aura_sync.protocols.reconcile import Progress, push_ops, reconcile
from aura_sync.transport.base import Connection

if TYPE_CHECKING:
    from aura_sync.protocols.anti_entropy import AntiEntropyConfig, InfraAddresses, SyncObserver

__all__ = ["PeerRemote", "Sessions", "give_back"]

_log = logging.getLogger("aura_sync.protocols.anti_entropy")
_Task = Generator[Step, Any, None]


RECONCILING_FOR = 0.5
"""Seconds after a peer's last reconciliation request during which we push it nothing in
our sessions (it pulls)."""
PUSHES_SETTLE = 0.25
"""Seconds after pushed ops last grew our journal during which our sessions wait: what a
session would find now is mostly the pushes in flight, and its tree walk would only slow
them (both sides digest every differing node)."""
DEFER_AT_MOST = 2.0
"""Seconds a session with a peer may be put off for pushes (ours to it, or any to us): under
a steady stream of pushes each peer is still reconciled at least this often (the default
``sync_interval``: at most one round late)."""


def give_back(ask: Ask, reply: Any, delivered: bool) -> None:
    """Undo what an ask obtained for a task that is gone (nobody will ever use it).

    A lent connection is released (unless the pool was told nobody took it:
    then it took the loan back itself) and an opened sync session is ended
    as a failure, so a crash, stop or timeout never leaks a loan or a
    peer's session count.
    """
    undo: Message | None = None
    if isinstance(reply, PoolLease):
        if delivered:
            undo = Release(reply.peer_id, reply.handle_id)
    elif isinstance(ask.message, StartSyncSession) and isinstance(reply, int):  # a session count
        undo = EndSyncSession(ask.message.peer_id, False, 0.0)
    if undo is not None:
        _log.info("event=orphaned_reply_given_back undo=%s", type(undo).__name__)
        ask.target.tell(undo)


@dataclass(slots=True)
class _Open:
    """What one task holds (for cleanup on stop or crash)."""

    peer: DeviceId
    handle: int | None = None
    started: bool = False


@dataclass(slots=True)
class Sessions:
    """The anti-entropy actor's outgoing work: sessions, dials, exchanges (see the module doc).

    ``stats`` is the actor's counter dict; ``bump_epoch`` is called when the
    journal grew; ``count_refusal`` when a peer's ops were refused;
    ``owner`` receives :class:`RetrySync`.
    """

    config: AntiEntropyConfig
    journal: Journal
    infra: InfraAddresses
    tasks: Tasks
    owner: Callable[[], ActorAddress]
    clock: Clock
    scheduler: Scheduler
    rng: Rng
    stats: dict[str, int]
    bump_epoch: Callable[[], None]
    count_refusal: Callable[[DeviceId, OpRefused], None]
    observer: SyncObserver | None = None
    # peer -> clock time it last sent us a reconciliation request (the server's)
    reconciled: dict[DeviceId, float] = field(default_factory=dict)
    held: dict[int, _Open] = field(default_factory=dict)
    syncing: set[DeviceId] = field(default_factory=set)
    dialing: set[DeviceId] = field(default_factory=set)
    presented: set[str] = field(default_factory=set)
    # peer -> (failed dial attempts, clock time of the next attempt, last delay)
    dial_plan: dict[DeviceId, tuple[int, float, float | None]] = field(default_factory=dict)
    # peer -> the full fingerprint both sides agreed on last, and rounds skipped on it since
    agreed: dict[DeviceId, tuple[bytes, int]] = field(default_factory=dict)
    # peer -> ids of our new ops not yet pushed to it (see announce)
    fresh: dict[DeviceId, list[bytes]] = field(default_factory=dict)
    # peer -> (clock time its push window began, ops sent to it in that window)
    pushed: dict[DeviceId, tuple[float, int]] = field(default_factory=dict)
    # the clock time pushed ops last grew our journal (the server's)
    pushes_in: Callable[[], float] = lambda: float("-inf")
    # peer -> clock time its session was first put off for pushes (see _defer)
    deferred: dict[DeviceId, float] = field(default_factory=dict)

    def push_allowance(self, peer: DeviceId) -> int:
        """Ops we may still push to ``peer`` in this second (``push_limit`` a second, so
        that our pushes stay within an honest peer's admission)."""
        start, sent = self.pushed.get(peer, (float("-inf"), 0))
        now = self.clock.now()
        if now - start >= 1.0:
            if len(self.pushed) >= 4096:  # windows over are worth nothing: forget them
                for gone in [p for p, (t, _) in self.pushed.items() if now - t >= 1.0]:
                    del self.pushed[gone]
            self.pushed[peer] = (now, 0)
            return self.config.push_limit
        return max(0, self.config.push_limit - sent)

    def _push_limit(self, peer: DeviceId) -> int:
        """0 while ``peer`` reconciles with us (it pulls what it lacks: pushing it too would
        send it twice), else :meth:`push_allowance`."""
        last = self.reconciled.get(peer)
        if last is not None and self.clock.now() - last < RECONCILING_FOR:
            return 0
        return self.push_allowance(peer)

    def _spend(self, peer: DeviceId, sent: int) -> None:
        start, before = self.pushed.get(peer, (self.clock.now(), 0))
        self.pushed[peer] = (start, before + sent)

    def abandon(self, why: str) -> None:
        """Close the loans and end the sessions of every task in flight (stop or crash)."""
        held = list(self.held.values())
        self.held.clear()
        for entry in held:
            if entry.handle is not None:
                self.infra.pool.tell(CloseConnection(entry.handle))
            if entry.started:
                self.infra.peer_manager.tell(EndSyncSession(entry.peer, False, 0.0))
        if held:
            _log.info("event=sessions_abandoned count=%d reason=%r", len(held), why)

    def may_dial(self, peer: DeviceId, now: float) -> bool:
        """Not dialing it already, past its dial retry delay, under ``max_dials``."""
        return (
            peer not in self.dialing
            and self.dial_plan.get(peer, (0, 0.0, None))[1] <= now
            and len(self.dialing) < self.config.max_dials
        )

    # --- asks and requests ---------------------------------------------------------

    def _ask(self, target: ActorAddress, msg: Any) -> Ask:
        return Ask(target, msg, self.config.ask_timeout)

    def _borrow(self, entry: _Open, timeout: float | None) -> Generator[Step, Any, Connection]:
        lease = yield from call(
            self.infra.pool, Acquire(entry.peer, timeout), self.config.ask_timeout
        )
        entry.handle = lease.handle_id
        conn = lease.connection
        if not isinstance(conn, Connection):  # a pool whose connector is not a transport
            raise ConnectionClosed(f"the pool lent {entry.peer} no transport connection")
        return conn

    def _give_loan_back(self, entry: _Open, error: BaseException | None) -> None:
        if entry.handle is not None:
            broken = isinstance(error, TransportError)
            self.infra.pool.tell(
                CloseConnection(entry.handle) if broken else Release(entry.peer, entry.handle)
            )
            entry.handle = None

    def request(self, conn: Connection, msg: Message) -> Generator[Step, Any, Any]:
        """One network request, retried with the request retry planner on timeouts and on
        the peer's admission denials (the planner waits at least their ``retry_after``)."""
        policy = self.config.request_retry
        attempt = 0
        prev: float | None = None
        start = self.clock.now()
        while True:
            try:
                reply = yield Send(conn, msg, self.config.request_timeout)
            except (RequestTimeout, RateLimited) as exc:
                elapsed = max(0.0, self.clock.now() - start)
                decision = policy.plan(attempt, exc, prev, elapsed, self.rng)
                if not decision.should_retry:
                    raise
                if isinstance(exc, RateLimited):
                    self.stats["requests_denied_by_peer"] += 1
                self.stats["request_retries"] += 1
                prev = decision.delay
                attempt += 1
                yield Sleep(decision.delay)
                continue
            policy.record_success()
            return reply

    def present(self, conn: Connection) -> Generator[Step, Any, None]:
        """Present our capability token once per connection (when capabilities are on)."""
        token = self.config.token
        if not self.config.require_capability or token is None:
            return
        if conn.session_id in self.presented:
            return
        reply = yield from self.request(conn, PresentCapability(token))
        if not isinstance(reply, Ack):
            raise CapabilityError(f"peer {conn.peer_id} answered our token with {reply!r:.80}")
        self.presented.add(conn.session_id)

    # --- tasks ------------------------------------------------------------------------

    def dial(self, peer: DeviceId) -> _Task:
        """Connect to a known peer through the pool; on success it becomes CONNECTED."""
        self.stats["dials"] += 1
        entry = self._hold(peer)
        self.dialing.add(peer)
        try:
            try:
                conn = yield from self._borrow(entry, 0.0)
                yield Await(conn.ready, self.config.request_timeout * 2)
                yield from self.present(conn)
            except AuraError as exc:
                self.stats["dial_failures"] += 1
                if entry.handle is not None:
                    self.infra.pool.tell(CloseConnection(entry.handle))
                    entry.handle = None
                self._plan_redial(peer, exc)
                return
            self.dial_plan.pop(peer, None)
            self._give_loan_back(entry, None)
        finally:
            self._release(entry)
            self.dialing.discard(peer)

    def _plan_redial(self, peer: DeviceId, exc: AuraError) -> None:
        attempt, _, prev = self.dial_plan.get(peer, (0, 0.0, None))
        plan = self.config.retry.plan(attempt, exc, prev, 0.0, self.rng)
        if plan.should_retry:
            self.stats["retries"] += 1
            self.dial_plan[peer] = (attempt + 1, self.clock.now() + plan.delay, plan.delay)
        else:  # the retry policy gave up: the peer manager's failure backoff takes over
            self.dial_plan.pop(peer, None)
            self.infra.peer_manager.tell(RecordFailure(peer))
        _log.info(
            "event=dial_failed peer=%s attempt=%d retry_in=%s error=%r",
            peer,
            attempt,
            f"{plan.delay:.3f}" if plan.should_retry else "backoff",
            str(exc),
        )

    def sync(self, peer: DeviceId, attempt: int, prev_delay: float | None, started: float) -> _Task:
        """One session with ``peer`` (attempt ``attempt``, 0-based), compensated on every path."""
        entry = self._hold(peer)
        self.syncing.add(peer)
        try:
            if attempt == 0 and (self._skip(peer) or self._defer(peer)):
                return
            t0 = self.clock.now()
            progress = Progress()
            error: AuraError | None = None
            conn: Connection | None = None
            try:
                decision = yield Ask(
                    self.infra.rate_limiter, CheckRateLimit(peer, 1), self.config.ask_timeout
                )
                _raise_if_denied(decision)
                yield self._ask(self.infra.peer_manager, StartSyncSession(peer))
                entry.started = True
                conn = yield from self._borrow(entry, None)
                yield from self.present(conn)
                agreed = yield from reconcile(
                    self.journal,
                    PeerRemote(self, conn),
                    list_threshold=self.config.list_threshold,
                    batch_size=self.config.batch_size,
                    progress=progress,
                    push_limit=self._push_limit(peer),
                )
            except sqlite3.Error as exc:  # storing what we pulled failed
                self.stats["journal_write_failures"] += 1
                self.stats["journal_write_failing"] = 1
                error = JournalUnwritable(f"the journal cannot be written: {exc}")
            except AuraError as exc:
                error = exc
                if isinstance(exc, OpRefused):
                    self.count_refusal(peer, exc)
                if isinstance(exc, CapabilityError) and conn is not None:
                    self.presented.discard(conn.session_id)  # present again next time
            else:
                if agreed is not None:
                    self.agreed[peer] = (agreed, 0)
            self._spend(peer, progress.sent)
            self._record(entry, progress, error, t0)
            self._finish(peer, attempt, prev_delay, started, error)
        finally:
            self._release(entry)
            self.syncing.discard(peer)

    def _skip(self, peer: DeviceId) -> bool:
        """Skip a peer we agreed with on the fingerprint our journal still has (a few rounds)."""
        known = self.agreed.get(peer)
        limit = self.config.max_cached_skips
        if known is None or limit == 0:
            return False
        fingerprint, skips = known
        if fingerprint != self.journal.digest().fingerprint or skips >= limit:
            del self.agreed[peer]
            return False
        self.agreed[peer] = (fingerprint, skips + 1)
        self.stats["rounds_skipped"] += 1
        self.stats["ticks_without_success"] = 0  # still in agreement: as good as a success
        return True

    def _defer(self, peer: DeviceId) -> bool:
        """Put off a session while we push our fresh ops to ``peer`` or pushes still grow our
        journal (at most :data:`DEFER_AT_MOST` in a row): sessions reconcile after them."""
        now = self.clock.now()
        if peer not in self.fresh and now - self.pushes_in() >= PUSHES_SETTLE:
            self.deferred.pop(peer, None)
            return False
        since = self.deferred.setdefault(peer, now)
        if now - since >= DEFER_AT_MOST:
            del self.deferred[peer]
            return False
        self.stats["rounds_skipped"] += 1
        self.stats["ticks_without_success"] = 0  # ops are flowing: as good as a success
        return True

    def _record(self, entry: _Open, progress: Progress, error: AuraError | None, t0: float) -> None:
        """Count the work, give the loan back, end the session with its outcome and latency."""
        self.stats["ops_pulled"] += progress.pulled
        self.stats["ops_pushed"] += progress.pushed
        if progress.pulled:
            self.bump_epoch()
        self._give_loan_back(entry, error)
        latency = max(0.0, self.clock.now() - t0)
        if self.observer is not None:
            self.observer.observe_sync_session(latency, success=error is None)
        if entry.started:
            self.infra.peer_manager.tell(EndSyncSession(entry.peer, error is None, latency))
            entry.started = False
        _log.debug(
            "event=sync_session peer=%s ok=%s seconds=%.4f error=%r",
            entry.peer,
            error is None,
            latency,
            None if error is None else str(error),
        )

    def _finish(
        self,
        peer: DeviceId,
        attempt: int,
        prev_delay: float | None,
        started: float,
        error: AuraError | None,
    ) -> None:
        """Count the outcome; plan a retry of a failed session."""
        if error is None:
            self.stats["rounds_succeeded"] += 1
            self.stats["ticks_without_success"] = 0
            self.config.retry.record_success()
            return
        if isinstance(error, RateLimited):
            self.stats["rate_limited"] += 1
        elif not isinstance(error, PeerUnavailable):
            self.stats["rounds_failed"] += 1
        _log.info("event=sync_failed peer=%s attempt=%d error=%r", peer, attempt, str(error))
        elapsed = max(0.0, self.clock.now() - started)
        plan = self.config.retry.plan(attempt, error, prev_delay, elapsed, self.rng)
        if plan.should_retry:
            self.stats["retries"] += 1
            retry = RetrySync(peer, attempt + 1, float(plan.delay), float(max(0.0, started)))
            self.scheduler.send_after(plan.delay, self.owner(), retry)

    def exchange(self, peer: DeviceId, known: set[DeviceId]) -> _Task:
        """Ask ``peer`` for the addresses of its verified peers; report the unknown ones."""
        entry = self._hold(peer)
        try:
            conn = yield from self._borrow(entry, 0.0)
            error: AuraError | None = None
            try:
                reply = yield from self.request(conn, PeerExchangeRequest())
            except AuraError as exc:
                error, reply = exc, None
            self._give_loan_back(entry, error)
        finally:
            self._release(entry)
        if not isinstance(reply, PeerExchange):
            return
        reply.check()  # the bounds of an untrusted reply (the task fails if exceeded)
        self.stats["peer_exchanges"] += 1
        me = self.journal.author
        candidates = tuple(
            (e.device_id, e.address)
            for e in reply.peers
            if e.device_id != me and e.device_id not in known  # hearsay never replaces
        )
        if candidates:
            yield self._ask(self.infra.peer_manager, DiscoverPeers(candidates))

    def announce(self, ids: list[bytes], conns: dict[DeviceId, Connection]) -> None:
        """Push our new ops ``ids`` at once to these connected peers (best effort: what a
        push misses, sessions reconcile).  One push task per peer drains its queue within
        :meth:`push_allowance`; a queue keeps its newest ``push_limit`` ids."""
        for peer, conn in conns.items():
            queue = self.fresh.get(peer)
            if queue is None:
                self.fresh[peer] = list(ids)
                self.tasks.spawn(self._push_fresh(peer, conn), f"push {peer}")
            else:
                queue.extend(ids)
                del queue[: max(0, len(queue) - self.config.push_limit)]

    def _push_fresh(self, peer: DeviceId, conn: Connection) -> _Task:
        progress = Progress()
        try:
            yield from self.present(conn)
            remote = PeerRemote(self, conn)
            while self.fresh.get(peer):
                allowed = self.push_allowance(peer)
                if not allowed:
                    yield Sleep(max(0.001, self.pushed[peer][0] + 1.0 - self.clock.now()))
                    continue
                ids, self.fresh[peer] = self.fresh[peer], []  # the oldest are left to sessions
                order = self.journal.push_order(ids[-allowed:])
                before = progress.sent
                try:
                    yield from push_ops(
                        self.journal, remote, order, self.config.batch_size, progress
                    )
                finally:
                    self._spend(peer, progress.sent - before)
        except AuraError as exc:
            _log.debug("event=push_failed peer=%s error=%r", peer, str(exc))
        finally:
            self.fresh.pop(peer, None)
            self.stats["ops_pushed"] += progress.pushed

    def _hold(self, peer: DeviceId) -> _Open:
        entry = _Open(peer)
        self.held[id(entry)] = entry
        return entry

    def _release(self, entry: _Open) -> None:
        self.held.pop(id(entry), None)


def _raise_if_denied(decision: Any) -> None:
    """Turn a denial into :class:`RateLimited` carrying the limiter's exact ``retry_after``."""
    if isinstance(decision, Denied):
        raise RateLimited(decision.retry_after, f"rate limited ({decision.reason.name})")
    if not isinstance(decision, Allowed):
        raise InvalidArgument(
            f"the rate limiter answered CheckRateLimit with {type(decision).__name__}"
        )
