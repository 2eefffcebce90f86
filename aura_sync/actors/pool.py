"""``PoolActor``: the connection pool as an actor that waits without blocking.

An ``Acquire`` that cannot be served now waits FIFO (a deferred reply) until a
connection frees up, or gets ``AcquireTimeout`` (a scheduled message).  The reply
is a :class:`PoolLease`: the live connection and its handle id (unique across
restarts).  The connector must return at once.  A tick evicts and health-checks
idle connections; a crash or stop closes every connection.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from aura_sync.actors._faults import FaultInjectionMixin, Ticker, check_stash, resolve_effects
from aura_sync.actors._mailbox import LocalMessage
from aura_sync.actors._reply import DEFERRED, ReplySlot
from aura_sync.actors.address import DEFAULT_ASK_TIMEOUT, ActorAddress
from aura_sync.actors.base import AuraActor, forward, handles
from aura_sync.effects import Clock, Scheduler, TimerHandle, check_seconds
from aura_sync.errors import AcquireTimeout, ActorStopped, AuraError, InvalidArgument, InvalidHandle
from aura_sync.ids import DeviceId
from aura_sync.infrastructure.connections import (
    Connection,
    ConnectionHandle,
    ConnectionPool,
    Connector,
    PoolConfig,
)
from aura_sync.messages import pool as msgs

__all__ = ["STASH_IDS_KEY", "PoolActor", "PoolLease"]

STASH_IDS_KEY: Final = "aura_sync.pool.ids"
"""Stash key of the id counter (handles, waiters): ids stay unique across incarnations."""

_log = logging.getLogger(__name__)


class PoolLease(LocalMessage):
    """The reply to ``Acquire``: a lent, live ``connection``, released once (again:
    ``InvalidHandle``), also by ``with`` / ``async with`` (a pool gone meanwhile is
    logged); inside an actor, tell ``Release(lease.peer_id, lease.handle_id)``."""

    __slots__ = (
        "_address", "_claim", "connection", "connection_id", "handle_id", "peer_id", "reused",
        "session_id",
    )  # fmt: skip

    def __init__(self, address: ActorAddress, handle_id: int, handle: ConnectionHandle) -> None:
        self._address = address
        self._claim = threading.Lock()
        self.handle_id = handle_id
        self.peer_id: DeviceId = handle.peer_id
        self.connection_id: int = handle.connection_id
        self.session_id: str | None = handle.session_id
        self.reused: bool = handle.reused
        self.connection: Connection = handle.connection

    @property
    def released(self) -> bool:
        """Whether :meth:`release` was called."""
        return self._claim.locked()

    def __repr__(self) -> str:
        state = "released" if self.released else "lent"
        return f"PoolLease(peer_id={self.peer_id}, handle_id={self.handle_id}, {state})"

    def _take(self, broken: bool) -> msgs.Release | msgs.CloseConnection:
        if not self._claim.acquire(blocking=False):
            raise InvalidHandle(f"handle {self.handle_id} was already released")
        handle_id = self.handle_id
        return msgs.CloseConnection(handle_id) if broken else msgs.Release(self.peer_id, handle_id)

    def release(self, timeout: float = DEFAULT_ASK_TIMEOUT, *, broken: bool = False) -> None:
        """Give the connection back to the pool, once (``broken``: close it instead)."""
        self._address.call(self._take(broken), timeout)

    async def release_async(
        self, timeout: float = DEFAULT_ASK_TIMEOUT, *, broken: bool = False
    ) -> None:
        """:meth:`release` for asyncio."""
        await self._address.call_async(self._take(broken), timeout)

    def __enter__(self) -> PoolLease:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self.released:
            try:
                self.release()
            except (InvalidHandle, ActorStopped) as error:  # the pool restarted or stopped
                _log.info("release of %r on exit failed: %s", self, error)

    async def __aenter__(self) -> PoolLease:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if not self.released:
            try:
                await self.release_async()
            except (InvalidHandle, ActorStopped) as error:  # the pool restarted or stopped
                _log.info("release of %r on exit failed: %s", self, error)


@dataclass(frozen=True, slots=True)
class _AcquireExpired(LocalMessage):
    """Scheduled: waiter ``waiter_id`` has waited its full timeout."""

    waiter_id: int


@dataclass(frozen=True, slots=True)
class _Maintenance(LocalMessage):
    """Scheduled: time for eviction and (if due) health checks."""


_MAINTENANCE: Final = _Maintenance()
_SWEEPS: Final[dict[type, Callable[[ConnectionPool], int]]] = {
    msgs.EvictExpired: ConnectionPool.evict_expired,
    msgs.HealthCheck: ConnectionPool.health_check,
    msgs.CloseAll: ConnectionPool.close_all,
}


@dataclass(frozen=True, slots=True, eq=False)
class _Waiter:
    """A queued acquire: who asked, for which peer, and its timer."""

    waiter_id: int
    peer_id: DeviceId
    slot: ReplySlot
    timeout: float
    timer: TimerHandle


class PoolActor(FaultInjectionMixin, AuraActor):
    """One :class:`ConnectionPool`; ``maintenance_interval``: seconds between ticks (default
    the smaller of ``health_check_interval`` and ``idle_timeout``); ``stash`` keeps
    only the id counter (connections do not survive a restart)."""

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
        config = PoolConfig() if config is None else config
        self._pool = ConnectionPool(config, connector, clock=clock)
        if maintenance_interval is None:
            maintenance_interval = min(config.health_check_interval, config.idle_timeout)
        interval = check_seconds(maintenance_interval, "maintenance_interval", allow_zero=False)
        self._ids: itertools.count[int] = stash.setdefault(STASH_IDS_KEY, itertools.count(1))
        self._scheduler = scheduler
        self._handles: dict[int, ConnectionHandle] = {}
        self._waiters: OrderedDict[int, _Waiter] = OrderedDict()
        self._ticker = Ticker(scheduler, interval, None, _MAINTENANCE)

    def on_start(self) -> None:
        self._ticker.arm(self.address)

    def on_crash(self, exc: BaseException) -> None:
        self.on_stop()  # the leases of this incarnation die with it

    def on_stop(self) -> None:
        """Cancel every timer and close every connection (waiters get ActorStopped)."""
        self._ticker.cancel()
        for waiter in list(self._waiters.values()):
            self._forget(waiter)
        self._handles.clear()
        closed = self._pool.close_all()
        if closed:
            _log.info("%s closed %d connection(s) on the way down", self, closed)

    # --- acquire / release ---

    @handles(msgs.Acquire)
    def _acquire(self, msg: msgs.Acquire) -> Any:
        slot = self.current_reply()
        if slot is None:
            raise InvalidArgument(f"Acquire(peer_id={msg.peer_id}) must be asked, not told")
        timeout = self._pool.config.acquire_timeout
        if msg.timeout is not None:
            timeout = check_seconds(msg.timeout, "timeout")
        pool = self._pool
        peer_id = msg.peer_id
        if pool.can_acquire(peer_id):
            self._hand_over(slot, pool.acquire(peer_id))
            return DEFERRED  # answered (or given back) through the slot just now
        if timeout <= 0.0:
            return self._lend(pool.acquire(peer_id))  # raises PoolExhausted
        waiter_id = next(self._ids)
        timer = self._scheduler.send_after(timeout, self.address, _AcquireExpired(waiter_id))
        self._waiters[waiter_id] = _Waiter(waiter_id, peer_id, slot, timeout, timer)
        pool.record_wait()
        return DEFERRED

    def _lend(self, handle: ConnectionHandle) -> PoolLease:
        handle_id = next(self._ids)
        self._handles[handle_id] = handle
        return PoolLease(self.address, handle_id, handle)

    def _hand_over(self, slot: ReplySlot, handle: ConnectionHandle) -> bool:
        """Lend ``handle`` through ``slot``; if the asker has gone (timed out), give it back."""
        lease = self._lend(handle)
        if slot.set(lease):
            return True
        del self._handles[lease.handle_id]
        self._pool.release(handle.peer_id, handle)
        return False

    @handles(msgs.Release, msgs.CloseConnection)
    def _give_back(self, msg: msgs.Release | msgs.CloseConnection) -> None:
        handle = self._handles.get(msg.handle_id)
        if handle is None:
            raise InvalidHandle(
                f"no live connection handle with handle_id={msg.handle_id!r} in {self} "
                "(released before, never issued, or lent by a crashed incarnation)"
            )
        if isinstance(msg, msgs.Release):
            self._pool.release(msg.peer_id, handle)
        else:
            self._pool.close(handle)
        del self._handles[msg.handle_id]  # only once the core accepted it
        self._serve_waiters()

    @handles(_AcquireExpired)
    def _expired(self, msg: _AcquireExpired) -> None:
        waiter = self._waiters.pop(msg.waiter_id, None)
        if waiter is None:
            return  # served, abandoned, or from an earlier incarnation
        self._pool.record_timeout()
        why = f"no connection to peer {waiter.peer_id} became available within {waiter.timeout} s"
        waiter.slot.fail(AcquireTimeout(f"{why} (acquire timeout)"))

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
                if not self._hand_over(waiter.slot, handle):
                    progress = True  # it was given back: someone else may use it
                    break

    def _forget(self, waiter: _Waiter) -> None:
        self._waiters.pop(waiter.waiter_id, None)
        waiter.timer.cancel()

    # --- maintenance and inspection ---

    @handles(msgs.EvictExpired, msgs.HealthCheck, msgs.CloseAll)
    def _sweep(self, msg: msgs.EvictExpired | msgs.HealthCheck | msgs.CloseAll) -> int:
        closed = _SWEEPS[msg.__class__](self._pool)
        self._serve_waiters()
        return closed

    @handles(_Maintenance)
    def _maintenance(self, msg: _Maintenance) -> None:
        self._ticker.arm()
        self._pool.evict_expired()
        if self._pool.config.health_checks_enabled and self._pool.health_check_due():
            self._pool.health_check()
        self._serve_waiters()

    _statistics = forward("_pool", "statistics", msgs.GetPoolStatistics)
    _connections = forward("_pool", "connections", msgs.ListConnections)
    _peer_connections = forward("_pool", "get_connection_metadata", msgs.GetConnectionMetadata)
    _total = forward("_pool", "total_connections", msgs.TotalConnections)
    _peer_count = forward("_pool", "peer_count", msgs.PeerCount)
