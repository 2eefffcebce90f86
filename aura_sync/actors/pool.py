"""``PoolActor``: the connection-pool concern as an actor that waits without blocking.

Role
    Owns one :class:`~aura_sync.infrastructure.connections.ConnectionPool`
    and answers the messages of :mod:`aura_sync.messages.pool`.  The core
    never waits (it raises ``PoolExhausted``); waiting is this actor's job:

    * An :class:`~aura_sync.messages.pool.Acquire` that cannot be served now
      (every connection it could use is lent out) is queued, FIFO, and
      answered later as a *deferred reply*: when a connection frees up
      (release, close, eviction, health check, ``CloseAll``) the queue is
      scanned in arrival order and every waiter that can now be served is
      served; a waiter whose peer is still at its limit keeps its place.
      Requests that arrive while others wait never overtake them for the
      same resource.
    * After its timeout (the request's ``timeout``, else the pool's
      ``acquire_timeout``, in seconds on the injected clock) a waiter gets an
      ``AcquireTimeout`` error.  The timeout is a
      :class:`~aura_sync.effects.Scheduler` message to the actor itself; the
      actor thread never blocks.  ``timeout=0`` means "do not wait": the
      request fails at once with ``PoolExhausted``.
    * If the asker gave up (its ask timed out), its queue entry is dropped;
      a connection acquired for it in the same instant is given back.

Handles and connections
    Connections never travel in wire messages: the actor keeps each lent
    :class:`~aura_sync.infrastructure.connections.ConnectionHandle` under an
    integer ``handle_id`` (unique across restarts of the actor, so a handle
    from a crashed incarnation can never release someone else's
    connection) and clients name it in ``Release`` / ``CloseConnection``.
    In-process callers that need the live connection send
    :class:`AcquireConnection` instead and get a :class:`ConnectionLease`
    (``PoolClient`` does this).

The connector must not block
    ``ConnectionPool.acquire`` calls the injected
    :class:`~aura_sync.infrastructure.connections.Connector` on the actor's
    thread.  The connector used with a ``PoolActor`` must therefore return at
    once (or nearly): the transport's
    :class:`~aura_sync.transport.base.TransportConnector` returns the
    connection while it connects, and reports a failed connect through
    ``is_healthy()``.  This is a decision, not an accident: offloading a
    blocking ``connect`` to a worker thread would make the pool's limits
    racy (a connection being opened would be counted nowhere) and is the
    transport's job.

Periodic work
    Every ``maintenance_interval`` seconds (default: the smaller of
    ``health_check_interval`` and ``idle_timeout``) a scheduled tick closes
    expired idle connections (``evict_expired``) and, when health checks
    are enabled and ``health_check_interval`` has passed, checks the idle
    connections; freed capacity goes to waiters.  The tick and every waiter
    timeout are cancelled when the incarnation stops or crashes.

Crashes
    The pool does *not* keep its connections across a crash: ``on_crash``
    closes every connection of the dead incarnation (idle and lent: their
    handles die with it) and cancels its timers; the runtime answers every
    pending waiter with ``ErrorReply(ActorCrashed)``.  The next incarnation
    starts with an empty pool (and fresh statistics).  A clean stop closes
    them the same way; waiters then get ``ActorStopped``.

Layer: actors.
"""

from __future__ import annotations

import itertools
import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Final

from aura_sync.actors._faults import FaultInjectionMixin, Ticker, check_stash, resolve_effects
from aura_sync.actors._mailbox import LocalMessage
from aura_sync.actors._reply import DEFERRED, ReplySlot
from aura_sync.actors.base import AuraActor, handles
from aura_sync.effects import Clock, Scheduler, TimerHandle, check_seconds
from aura_sync.errors import AcquireTimeout, AuraError, InvalidArgument, InvalidHandle, WrongType
from aura_sync.ids import DeviceId
from aura_sync.infrastructure.connections import (
    Connection,
    ConnectionHandle,
    ConnectionPool,
    Connector,
    PoolConfig,
)
from aura_sync.messages.pool import (
    Acquire,
    Acquired,
    CloseAll,
    CloseConnection,
    ClosedAll,
    ConnectionsReply,
    Evicted,
    EvictExpired,
    GetPoolStatistics,
    HealthCheck,
    HealthChecked,
    ListConnections,
    PoolStatisticsReply,
    Release,
)

__all__ = ["STASH_IDS_KEY", "AcquireConnection", "ConnectionLease", "PoolActor"]

STASH_IDS_KEY: Final = "aura_sync.pool.ids"
"""Key of the id counter (handles and waiters) in the child's stash: ids stay unique
across incarnations."""

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AcquireConnection(LocalMessage):
    """In-process acquire: like ``request`` (an :class:`Acquire`), but the reply is a
    :class:`ConnectionLease` that carries the live connection.  Never encoded."""

    request: Acquire

    def __post_init__(self) -> None:
        if type(self.request) is not Acquire:
            raise WrongType(
                f"request must be an Acquire, got {type(self.request).__name__} {self.request!r}"
            )


@dataclass(frozen=True, slots=True)
class ConnectionLease(LocalMessage):
    """Answer to :class:`AcquireConnection`: the ``Acquired`` record and the connection.

    Use ``connection`` until you release ``acquired.handle_id``; the pool may
    close it afterwards.
    """

    acquired: Acquired
    connection: Connection


@dataclass(frozen=True, slots=True)
class _AcquireExpired(LocalMessage):
    """Scheduled: waiter ``waiter_id`` has waited its full timeout."""

    waiter_id: int


@dataclass(frozen=True, slots=True)
class _Maintenance(LocalMessage):
    """Scheduled: time for eviction and (if due) health checks."""


_MAINTENANCE: Final = _Maintenance()


class _Waiter:
    """A queued acquire: who asked, for which peer, how to answer, and its timer."""

    __slots__ = ("local", "peer_id", "slot", "timeout", "timer", "waiter_id")

    def __init__(
        self, waiter_id: int, peer_id: DeviceId, slot: ReplySlot, local: bool, timeout: float
    ) -> None:
        self.waiter_id = waiter_id
        self.peer_id = peer_id
        self.slot = slot
        self.local = local
        self.timeout = timeout
        self.timer: TimerHandle | None = None


class PoolActor(FaultInjectionMixin, AuraActor):
    """The pool actor: one :class:`ConnectionPool`, FIFO waiting by deferred replies.

    Parameters
        config: the :class:`PoolConfig` (default: the defaults).
        connector: the :class:`Connector` (non-blocking; see the module docstring).
        clock: time source (seconds); default the scheduler's clock, else
            :class:`~aura_sync.effects.SystemClock`.
        scheduler: delivers waiter timeouts and maintenance ticks; default one on ``clock``.
        maintenance_interval: seconds between eviction/health ticks (> 0);
            default ``min(health_check_interval, idle_timeout)``.
        stash: the dict that survives restarts (only the id counter is kept
            there: connections are not), or None for a private one.
        fault_injection: honour ``InjectCrash`` (tests and demos only).

    Raises :class:`~aura_sync.errors.WrongType` /
    :class:`~aura_sync.errors.InvalidArgument` for bad arguments.

    Messages (reply): ``Acquire`` (``Acquired``, maybe deferred; errors
    ``PoolExhausted``, ``AcquireTimeout``, ``ConnectFailed``);
    :class:`AcquireConnection` (:class:`ConnectionLease`); ``Release``,
    ``CloseConnection`` (``Ack``; ``InvalidHandle``); ``EvictExpired``
    (``Evicted``); ``HealthCheck`` (``HealthChecked``); ``CloseAll``
    (``ClosedAll``); ``GetPoolStatistics`` (``PoolStatisticsReply``);
    ``ListConnections`` (``ConnectionsReply``); ``InjectCrash``.
    """

    def __init__(
        self,
        config: PoolConfig | None,
        connector: Connector,
        *,
        clock: Clock | None = None,
        scheduler: Scheduler | None = None,
        maintenance_interval: float | None = None,
        stash: dict[str, Any] | None = None,
        fault_injection: bool = False,
    ) -> None:
        super().__init__()
        self._init_faults(fault_injection)
        stash = check_stash(stash)
        clock, scheduler = resolve_effects(clock, scheduler)
        if config is None:
            config = PoolConfig()
        self._pool = ConnectionPool(config, connector, clock=clock)
        if maintenance_interval is None:
            maintenance_interval = min(config.health_check_interval, config.idle_timeout)
        self._interval = check_seconds(
            maintenance_interval, "maintenance_interval", allow_zero=False
        )
        ids = stash.get(STASH_IDS_KEY)
        if ids is None:
            ids = itertools.count(1)
            stash[STASH_IDS_KEY] = ids
        elif not isinstance(ids, itertools.count):
            raise WrongType(
                f"stash[{STASH_IDS_KEY!r}] must be an itertools.count, got {type(ids).__name__}"
            )
        self._ids: itertools.count[int] = ids
        self._config = config
        self._clock = clock
        self._scheduler = scheduler
        self._handles: dict[int, ConnectionHandle] = {}
        self._waiters: OrderedDict[int, _Waiter] = OrderedDict()
        self._ticker: Ticker | None = None

    @property
    def pool(self) -> ConnectionPool:
        """The owned core (for inspection from the actor's own thread)."""
        return self._pool

    # --- lifecycle ---

    def on_start(self) -> None:
        """Arm the maintenance tick."""
        self._ticker = Ticker(self._scheduler, self._interval, self.address, _MAINTENANCE)
        self._ticker.arm()

    def on_stop(self) -> None:
        """Cancel every timer and close every connection (waiters get ActorStopped)."""
        self._shutdown()

    def on_crash(self, exc: BaseException) -> None:
        """Close every connection of this dead incarnation and cancel its timers.

        Its lent handles die with it; waiters are answered ``ActorCrashed``
        by the runtime.
        """
        self._shutdown()

    def _shutdown(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        for waiter in self._waiters.values():
            if waiter.timer is not None:
                waiter.timer.cancel()
        self._waiters.clear()
        self._handles.clear()
        closed = self._pool.close_all()
        if closed:
            _log.info("%s closed %d connection(s) on the way down", self, closed)

    # --- acquire / release ---

    @handles(Acquire)
    def _acquire(self, msg: Acquire) -> Any:
        return self._request(msg, local=False)

    @handles(AcquireConnection)
    def _acquire_connection(self, msg: AcquireConnection) -> Any:
        return self._request(msg.request, local=True)

    def _request(self, msg: Acquire, *, local: bool) -> Any:
        slot = self.current_reply()
        if slot is None:
            raise InvalidArgument(
                f"Acquire(peer_id={msg.peer_id}) must be asked, not told: "
                "nobody would receive the connection"
            )
        pool = self._pool
        peer_id = msg.peer_id
        if pool.can_acquire(peer_id):
            self._hand_over(slot, pool.acquire(peer_id), local)
            return DEFERRED  # answered (or given back) through the slot just now
        timeout = self._config.acquire_timeout if msg.timeout is None else msg.timeout
        if timeout <= 0.0:
            return self._lend(pool.acquire(peer_id), local)  # raises PoolExhausted
        waiter = _Waiter(next(self._ids), peer_id, slot, local, timeout)
        waiter.timer = self._scheduler.send_after(
            timeout, self.address, _AcquireExpired(waiter.waiter_id)
        )
        self._waiters[waiter.waiter_id] = waiter
        pool.record_wait()
        return DEFERRED

    def _lend(self, handle: ConnectionHandle, local: bool) -> Acquired | ConnectionLease:
        handle_id = next(self._ids)
        self._handles[handle_id] = handle
        connection = handle.connection
        session = getattr(connection, "session_id", None)
        acquired = Acquired(
            handle.peer_id,
            handle_id,
            handle.connection_id,
            session if type(session) is str else None,
            handle.reused,
        )
        return ConnectionLease(acquired, connection) if local else acquired

    def _hand_over(self, slot: ReplySlot, handle: ConnectionHandle, local: bool) -> bool:
        """Lend ``handle`` through ``slot``; if the asker has gone, give it back.

        Returns True if the asker got it.  An asker that timed out before
        this actor reached its request would otherwise leave the connection
        lent to nobody, for good.
        """
        if slot.set(self._lend(handle, local)):
            return True
        self._take_back(handle)
        return False

    def _take_back(self, handle: ConnectionHandle) -> None:
        """Release a handle that was lent to nobody (its asker had gone)."""
        for handle_id, lent in list(self._handles.items())[::-1]:
            if lent is handle:
                del self._handles[handle_id]
                break
        self._pool.release(handle.peer_id, handle)

    def _handle(self, handle_id: int) -> ConnectionHandle:
        handle = self._handles.get(handle_id)
        if handle is None:
            raise InvalidHandle(
                f"no live connection handle with handle_id={handle_id} in {self} "
                "(released before, never issued, or lent by a crashed incarnation)"
            )
        return handle

    @handles(Release)
    def _release(self, msg: Release) -> None:
        handle = self._handle(msg.handle_id)
        self._pool.release(msg.peer_id, handle)
        del self._handles[msg.handle_id]
        self._serve_waiters()

    @handles(CloseConnection)
    def _close(self, msg: CloseConnection) -> None:
        handle = self._handle(msg.handle_id)
        self._pool.close(handle)
        del self._handles[msg.handle_id]
        self._serve_waiters()

    @handles(_AcquireExpired)
    def _expired(self, msg: _AcquireExpired) -> None:
        waiter = self._waiters.pop(msg.waiter_id, None)
        if waiter is None:
            return  # served, abandoned, or from an earlier incarnation
        self._pool.record_timeout()
        waiter.slot.fail(
            AcquireTimeout(
                f"no connection to peer {waiter.peer_id} became available within "
                f"{waiter.timeout} s (acquire timeout)"
            )
        )

    def _serve_waiters(self) -> None:
        """Serve, in arrival order, every queued acquire that can be served now."""
        waiters = self._waiters
        pool = self._pool
        progress = True
        while waiters and progress:
            progress = False
            for waiter in list(waiters.values()):
                if not waiter.slot.is_pending():
                    self._forget(waiter)  # the asker gave up
                    continue
                if not pool.can_acquire(waiter.peer_id):
                    continue
                self._forget(waiter)
                try:
                    handle = pool.acquire(waiter.peer_id)
                except AuraError as exc:  # ConnectFailed: this waiter's answer
                    waiter.slot.fail(exc)
                    continue
                if not self._hand_over(waiter.slot, handle, waiter.local):
                    progress = True  # it was given back: someone else may use it
                    break

    def _forget(self, waiter: _Waiter) -> None:
        self._waiters.pop(waiter.waiter_id, None)
        if waiter.timer is not None:
            waiter.timer.cancel()
            waiter.timer = None

    # --- maintenance ---

    @handles(EvictExpired)
    def _evict(self, msg: EvictExpired) -> Evicted:
        count = self._pool.evict_expired()
        self._serve_waiters()
        return Evicted(count)

    @handles(HealthCheck)
    def _health_check(self, msg: HealthCheck) -> HealthChecked:
        broken = self._pool.health_check()
        self._serve_waiters()
        return HealthChecked(broken)

    @handles(CloseAll)
    def _close_all(self, msg: CloseAll) -> ClosedAll:
        count = self._pool.close_all()
        self._serve_waiters()
        return ClosedAll(count)

    @handles(_Maintenance)
    def _maintenance(self, msg: _Maintenance) -> None:
        if self._ticker is not None:
            self._ticker.arm()
        pool = self._pool
        evicted = pool.evict_expired()
        broken = 0
        if self._config.health_checks_enabled and pool.health_check_due():
            broken = pool.health_check()
        if evicted or broken:
            _log.debug("%s maintenance: %d evicted, %d broken", self, evicted, broken)
        self._serve_waiters()

    # --- statistics ---

    @handles(GetPoolStatistics)
    def _statistics(self, msg: GetPoolStatistics) -> PoolStatisticsReply:
        return PoolStatisticsReply.from_statistics(self._pool.statistics())

    @handles(ListConnections)
    def _connections(self, msg: ListConnections) -> ConnectionsReply:
        return ConnectionsReply.from_metadata(self._pool.connections())

    @property
    def waiting(self) -> int:
        """How many acquires are queued now (read from the actor's thread)."""
        return len(self._waiters)
