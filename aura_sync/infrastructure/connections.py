"""Connection pool: reuse connections to peers within per-peer and total limits.

Role
    :class:`ConnectionPool` hands out :class:`ConnectionHandle` objects for
    connections to peers, reusing a healthy idle connection when it can and
    opening a new one through an injected :class:`Connector` (the transport
    effect) otherwise.  It never blocks: when no connection can be handed
    out it raises :class:`~aura_sync.errors.PoolExhausted`.  Waiting for a
    connection to free up (FIFO, up to ``acquire_timeout``) is the pool
    actor's job; it reports its waits and timeouts with :meth:`record_wait`
    and :meth:`record_timeout` so that the statistics stay in one place.

States
    Every connection is in exactly one :class:`ConnectionState`:

    * ``IDLE``: open, in the pool, available for reuse;
    * ``IN_USE``: open, lent out through exactly one live handle;
    * ``CLOSED``: closed and forgotten by the pool (final).

    Transitions: *new* -> IN_USE (acquire opens one); IDLE -> IN_USE (reuse);
    IN_USE -> IDLE (release of a healthy, not too old connection);
    IN_USE -> CLOSED (release of a broken or too old one, :meth:`close`,
    :meth:`close_all`); IDLE -> CLOSED (expiry, failed health check,
    reclaimed for another peer, :meth:`close_all`).

Rules
    * Broken or expired connections are never handed out: on borrow an idle
      connection is checked (expiry always, health when
      ``health_checks_enabled``); a bad one is closed and the next is tried.
    * Idle connections are reused most recently released first (hot
      connections stay warm; cold ones reach ``idle_timeout`` and go).
    * Limits: at most ``max_connections_per_peer`` open connections (idle or
      in use) per peer and ``max_total_connections`` overall.  When the total
      is reached but another peer has an idle connection, the least recently
      used idle connection is closed to make room (counted in
      ``connections_evicted``): an idle connection to one peer should not
      starve a live request for another.  The per-peer limit is checked
      first, so nothing is closed for a request that must fail anyway, and
      the idle connection is only closed once the new one is open, so a
      connector failure changes nothing.
    * A connector failure raises :class:`~aura_sync.errors.ConnectFailed`
      (the cause chained) and opens, lends and reclaims nothing; the only
      change it leaves is the closing (and counting) of expired or broken idle
      connections of that peer met on the way, which could never be handed out.
    * A handle is released at most once; a second release, or a handle of
      another pool, raises :class:`~aura_sync.errors.InvalidHandle`.  After
      :meth:`close_all` closed an in-use connection, releasing its handle is
      a harmless no-op (the first time).

Integration
    ``aura_sync.actors`` wraps the pool in ``PoolActor``, which keeps the
    handles and gives clients their integer :attr:`ConnectionHandle.handle_id`
    (see :meth:`ConnectionPool.handle`); messages are in
    :mod:`aura_sync.messages.pool`.  A crashed pool actor calls
    :meth:`close_all`.  Time comes from the injected clock (seconds).

Layer: cores (plain synchronous single-threaded class; no sleeping).
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import logging
from collections import OrderedDict
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, runtime_checkable

from aura_sync._checks import check_bool, check_clock_time, check_int, check_peer
from aura_sync.effects import Clock, SystemClock, check_seconds
from aura_sync.errors import (
    ConfigError,
    ConnectFailed,
    InvalidArgument,
    InvalidHandle,
    PoolExhausted,
    WrongType,
)
from aura_sync.ids import DeviceId

__all__ = [
    "Connection",
    "ConnectionHandle",
    "ConnectionMetadata",
    "ConnectionPool",
    "ConnectionState",
    "Connector",
    "PoolConfig",
    "PoolStatistics",
]

_log = logging.getLogger(__name__)


# --- effects: what the pool needs from the transport --------------------------------------


@runtime_checkable
class Connection(Protocol):
    """An open connection to a peer, as the transport provides it.

    If the object has a ``session_id`` attribute of type ``str``, the pool
    reports it in :class:`ConnectionMetadata`.
    """

    def is_healthy(self) -> bool:
        """Whether the connection can still carry traffic (cheap, non-blocking)."""
        ...

    def close(self) -> None:
        """Close the connection (idempotent, non-blocking)."""
        ...


@runtime_checkable
class Connector(Protocol):
    """Opens connections to peers (the transport effect injected into the pool)."""

    def connect(self, peer_id: DeviceId) -> Connection:
        """Open a new connection to ``peer_id``; raise on failure."""
        ...


# --- values -----------------------------------------------------------------------------


def _config_seconds(value: object, name: str, *, allow_zero: bool) -> float:
    try:
        return check_seconds(value, name, allow_zero=allow_zero)
    except InvalidArgument as exc:
        raise ConfigError(str(exc)) from None


def _config_count(value: object, name: str) -> int:
    try:
        return check_int(value, name, minimum=1)
    except InvalidArgument as exc:  # a bad config value is a ConfigError (WrongType passes)
        raise ConfigError(str(exc)) from None


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """Limits and timeouts of a :class:`ConnectionPool` (defaults from the Rust design).

    Fields
        max_total_connections: open connections overall (>= 1); 100.
        max_connections_per_peer: open connections per peer (>= 1); 10.
        idle_timeout: seconds an idle connection may stay pooled (> 0); 300.
        max_lifetime: seconds a connection may live; past it, it is closed
            when next idle (> 0); 1800.
        acquire_timeout: seconds the pool actor lets a queued acquire wait
            (>= 0; 0 = fail at once); 10.  The core itself never waits.
        health_checks_enabled: check ``is_healthy()`` on borrow and release; True.
        health_check_interval: seconds between periodic :meth:`~ConnectionPool.health_check`
            runs of idle connections (> 0); 60.

    Raises :class:`~aura_sync.errors.WrongType` (wrong type) or
    :class:`~aura_sync.errors.ConfigError` (out of range), naming the field
    and value.
    """

    max_total_connections: int = 100
    max_connections_per_peer: int = 10
    idle_timeout: float = 300.0
    max_lifetime: float = 1800.0
    acquire_timeout: float = 10.0
    health_checks_enabled: bool = True
    health_check_interval: float = 60.0

    def __post_init__(self) -> None:
        _config_count(self.max_total_connections, "max_total_connections")
        _config_count(self.max_connections_per_peer, "max_connections_per_peer")
        for name, allow_zero in (
            ("idle_timeout", False),
            ("max_lifetime", False),
            ("acquire_timeout", True),
            ("health_check_interval", False),
        ):
            seconds = _config_seconds(getattr(self, name), name, allow_zero=allow_zero)
            object.__setattr__(self, name, seconds)
        check_bool(self.health_checks_enabled, "health_checks_enabled")


class ConnectionState(enum.Enum):
    """Where a connection is in its life (see the module docstring)."""

    IDLE = "idle"
    IN_USE = "in_use"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class ConnectionMetadata:
    """A frozen snapshot of one connection's bookkeeping.

    Fields: ``connection_id`` (int, unique in the pool), ``peer_id``,
    ``session_id`` (the transport's, or None), ``established_at`` and
    ``last_used`` (clock seconds), ``reuse_count`` (times handed out again
    after the first), ``state``, ``healthy`` (the last health result).

    Raises :class:`~aura_sync.errors.WrongType` /
    :class:`~aura_sync.errors.InvalidArgument` naming a bad field and value.
    """

    connection_id: int
    peer_id: DeviceId
    session_id: str | None
    established_at: float
    last_used: float
    reuse_count: int
    state: ConnectionState
    healthy: bool

    def __post_init__(self) -> None:
        check_int(self.connection_id, "connection_id", minimum=1)
        check_peer(self.peer_id)
        if self.session_id is not None and type(self.session_id) is not str:
            raise WrongType(
                f"session_id must be a str or None, got {type(self.session_id).__name__} "
                f"{self.session_id!r}"
            )
        for name in ("established_at", "last_used"):
            object.__setattr__(self, name, check_clock_time(getattr(self, name), name))
        check_int(self.reuse_count, "reuse_count", minimum=0)
        if type(self.state) is not ConnectionState:
            raise WrongType(
                f"state must be a ConnectionState, got {type(self.state).__name__} {self.state!r}"
            )
        check_bool(self.healthy, "healthy")


@dataclass(frozen=True, slots=True)
class PoolStatistics:
    """A frozen snapshot of a pool's counters and gauges (Rust names first).

    Counters
        connections_created: opened through the connector.
        connections_reused: idle connections handed out again.
        connections_released: handles released (whether pooled or closed).
        connections_closed: connections closed, for any reason.
        connections_evicted: closed because expired (idle timeout, max
            lifetime) or reclaimed to make room for another peer.
        connection_limit_hits: acquires refused with ``PoolExhausted``.
        waits: acquires the actor queued (:meth:`~ConnectionPool.record_wait`).
        timeouts: queued acquires that timed out (:meth:`~ConnectionPool.record_timeout`).
        broken: connections closed because a health check failed.
    Gauges
        idle, in_use, total (= idle + in_use): open connections now.

    ``connections_created - connections_closed == total`` always holds.
    Every field is an int >= 0 (else ``WrongType`` / ``InvalidArgument``).
    """

    connections_created: int = 0
    connections_reused: int = 0
    connections_released: int = 0
    connections_closed: int = 0
    connections_evicted: int = 0
    connection_limit_hits: int = 0
    waits: int = 0
    timeouts: int = 0
    broken: int = 0
    idle: int = 0
    in_use: int = 0
    total: int = 0

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            check_int(getattr(self, field.name), field.name, minimum=0)


# --- internals --------------------------------------------------------------------------


class _Entry:
    """The pool's mutable record of one open connection."""

    __slots__ = (
        "connection",
        "connection_id",
        "established_at",
        "handle",
        "healthy",
        "last_used",
        "peer_id",
        "reuse_count",
        "session_id",
        "state",
    )

    def __init__(
        self, connection_id: int, peer_id: DeviceId, connection: Connection, now: float
    ) -> None:
        self.connection_id = connection_id
        self.peer_id = peer_id
        self.connection = connection
        session = getattr(connection, "session_id", None)
        self.session_id: str | None = session if type(session) is str else None
        self.established_at = now
        self.last_used = now
        self.reuse_count = 0
        self.state = ConnectionState.IN_USE
        self.healthy = True
        self.handle: ConnectionHandle | None = None

    def metadata(self) -> ConnectionMetadata:
        return ConnectionMetadata(
            connection_id=self.connection_id,
            peer_id=self.peer_id,
            session_id=self.session_id,
            established_at=self.established_at,
            last_used=self.last_used,
            reuse_count=self.reuse_count,
            state=self.state,
            healthy=self.healthy,
        )


class ConnectionHandle:
    """A lent connection; give it back with :meth:`ConnectionPool.release` (once).

    Also a context manager: leaving the ``with`` block releases it, unless it
    was already released or closed::

        with pool.acquire(peer) as handle:
            handle.connection.send(...)

    Attributes: ``handle_id`` (int, unique per acquisition; actors give it to
    clients), ``connection_id``, ``peer_id``, ``reused`` (whether an idle
    connection was reused).  :attr:`connection` is the transport connection
    and is refused once the handle is released.
    """

    __slots__ = ("_done", "_entry", "_pool", "connection_id", "handle_id", "peer_id", "reused")

    def __init__(self, pool: ConnectionPool, handle_id: int, entry: _Entry, reused: bool) -> None:
        self._pool = pool
        self._entry = entry
        self._done = False
        self.handle_id = handle_id
        self.connection_id = entry.connection_id
        self.peer_id = entry.peer_id
        self.reused = reused

    @property
    def connection(self) -> Connection:
        """The connection; raises :class:`~aura_sync.errors.InvalidHandle` after release."""
        if self._done:
            raise InvalidHandle(f"handle {self.handle_id} was already released")
        if self._entry.state is ConnectionState.CLOSED:
            raise InvalidHandle(
                f"connection {self.connection_id} of handle {self.handle_id} was closed by the pool"
            )
        return self._entry.connection

    @property
    def released(self) -> bool:
        """Whether the handle was released or closed (it can no longer be used)."""
        return self._done

    @property
    def closed_by_pool(self) -> bool:
        """Whether :meth:`ConnectionPool.close_all` closed the connection while it was lent."""
        return not self._done and self._entry.state is ConnectionState.CLOSED

    def release(self) -> None:
        """Give the connection back: ``pool.release(self.peer_id, self)``."""
        self._pool.release(self.peer_id, self)

    def __enter__(self) -> ConnectionHandle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._done:
            self._pool.release(self.peer_id, self)

    def __repr__(self) -> str:
        status = "released" if self._done else self._entry.state.value
        return (
            f"ConnectionHandle(handle_id={self.handle_id}, connection_id={self.connection_id}, "
            f"peer_id={self.peer_id}, {status})"
        )


# --- the pool ---------------------------------------------------------------------------


class ConnectionPool:
    """Connection lifecycle management within per-peer and total limits.

    Parameters
        config: the :class:`PoolConfig`.
        connector: the :class:`Connector` that opens connections.
        clock: the :class:`~aura_sync.effects.Clock` (seconds); default
            :class:`~aura_sync.effects.SystemClock`.

    Single-threaded: call it from one thread (its actor).  Raises
    :class:`~aura_sync.errors.WrongType` on arguments of the wrong type.
    """

    def __init__(
        self, config: PoolConfig, connector: Connector, *, clock: Clock | None = None
    ) -> None:
        if not isinstance(config, PoolConfig):
            raise WrongType(f"config must be a PoolConfig, got {type(config).__name__} {config!r}")
        if not isinstance(connector, Connector):
            raise WrongType(
                "connector must have a connect(peer_id) method, got "
                f"{type(connector).__name__} {connector!r}"
            )
        if clock is None:
            clock = SystemClock()
        elif not isinstance(clock, Clock):
            raise WrongType(f"clock must be a Clock, got {type(clock).__name__} {clock!r}")
        self._config = config
        self._connector = connector
        self._clock = clock
        self._entries: dict[int, _Entry] = {}
        self._idle: OrderedDict[int, _Entry] = OrderedDict()  # least recently released first
        self._peer_idle: dict[DeviceId, OrderedDict[int, _Entry]] = {}
        self._peer_open: dict[DeviceId, int] = {}
        self._handles: dict[int, ConnectionHandle] = {}  # live handles by handle_id
        self._connection_ids = itertools.count(1)
        self._handle_ids = itertools.count(1)
        self._last_health_check = clock.now()
        self._created = 0
        self._reused = 0
        self._released = 0
        self._closed = 0
        self._evicted = 0
        self._limit_hits = 0
        self._waits = 0
        self._timeouts = 0
        self._broken = 0

    @property
    def config(self) -> PoolConfig:
        """The pool's configuration."""
        return self._config

    # --- acquire / release ---

    def acquire(self, peer_id: DeviceId) -> ConnectionHandle:
        """Lend a connection to ``peer_id``; never blocks.

        Reuses the most recently released healthy, unexpired idle connection
        of that peer (closing bad ones on the way); else opens a new one if
        the limits allow (closing another peer's least recently used idle
        connection if only the total limit is in the way).

        Raises :class:`~aura_sync.errors.PoolExhausted` when a limit is
        reached (counted in ``connection_limit_hits``),
        :class:`~aura_sync.errors.ConnectFailed` when the connector fails
        (nothing is opened, lent or reclaimed; bad idle connections of the
        peer met on the way stay closed),
        :class:`~aura_sync.errors.WrongType` on a bad ``peer_id``.
        """
        check_peer(peer_id)
        now = self._clock.now()
        entry = self._take_idle(peer_id, now)
        if entry is not None:
            entry.state = ConnectionState.IN_USE
            entry.last_used = now
            entry.reuse_count += 1
            self._reused += 1
            return self._lend(entry, reused=True)
        cfg = self._config
        open_for_peer = self._peer_open.get(peer_id, 0)
        if open_for_peer >= cfg.max_connections_per_peer:
            self._limit_hits += 1
            raise PoolExhausted(
                f"peer {peer_id} already has {open_for_peer} connections "
                f"(max_connections_per_peer={cfg.max_connections_per_peer}), none idle"
            )
        must_reclaim = len(self._entries) >= cfg.max_total_connections
        if must_reclaim and not self._idle:
            self._limit_hits += 1
            raise PoolExhausted(
                f"pool has {len(self._entries)} connections in use "
                f"(max_total_connections={cfg.max_total_connections}), none idle"
            )
        try:
            connection: object = self._connector.connect(peer_id)
        except Exception as exc:
            raise ConnectFailed(
                f"connecting to peer {peer_id} failed: {type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(connection, Connection):
            _close_quietly(connection)
            raise WrongType(
                "connector.connect must return a Connection (is_healthy, close), got "
                f"{type(connection).__name__} {connection!r}"
            )
        if must_reclaim:
            victim = next(iter(self._idle.values()))  # least recently released
            self._unidle(victim)
            self._discard(victim)
            self._evicted += 1
        now = self._clock.now()
        entry = _Entry(next(self._connection_ids), peer_id, connection, now)
        self._entries[entry.connection_id] = entry
        self._peer_open[peer_id] = open_for_peer + 1
        self._created += 1
        return self._lend(entry, reused=False)

    def can_acquire(self, peer_id: DeviceId) -> bool:
        """Whether :meth:`acquire` for ``peer_id`` would not hit a limit now.

        For the actor's wait queue: True when the peer has an idle connection
        or a new one fits (possibly by reclaiming another peer's idle one).
        Changes nothing and counts nothing.
        """
        check_peer(peer_id)
        if self._peer_idle.get(peer_id):
            return True
        if self._peer_open.get(peer_id, 0) >= self._config.max_connections_per_peer:
            return False
        return len(self._entries) < self._config.max_total_connections or bool(self._idle)

    def _take_idle(self, peer_id: DeviceId, now: float) -> _Entry | None:
        idle = self._peer_idle.get(peer_id)
        while idle:
            _, entry = idle.popitem(last=True)
            del self._idle[entry.connection_id]
            if self._expired(entry, now):
                self._discard(entry)
                self._evicted += 1
                continue
            if self._config.health_checks_enabled and not self._check_health(entry):
                self._discard(entry)
                self._broken += 1
                continue
            return entry
        return None

    def _lend(self, entry: _Entry, *, reused: bool) -> ConnectionHandle:
        handle = ConnectionHandle(self, next(self._handle_ids), entry, reused)
        entry.handle = handle
        self._handles[handle.handle_id] = handle
        return handle

    def handle(self, handle_id: int) -> ConnectionHandle:
        """The live handle with this id (for actors that give clients ids).

        Raises :class:`~aura_sync.errors.InvalidHandle` if no live handle has
        that id (never issued, released, or closed), and
        :class:`~aura_sync.errors.WrongType` for a non-int.
        """
        if type(handle_id) is not int:
            raise WrongType(
                f"handle_id must be an int, got {type(handle_id).__name__} {handle_id!r}"
            )
        handle = self._handles.get(handle_id)
        if handle is None:
            raise InvalidHandle(f"no live connection handle with handle_id={handle_id}")
        return handle

    def _check_handle(self, handle: object) -> ConnectionHandle:
        if not isinstance(handle, ConnectionHandle):
            raise WrongType(
                f"handle must be a ConnectionHandle, got {type(handle).__name__} {handle!r}"
            )
        if handle._pool is not self:
            raise InvalidHandle(f"handle {handle.handle_id} belongs to another pool")
        if handle._done:
            raise InvalidHandle(f"handle {handle.handle_id} was already released")
        return handle

    def release(self, peer_id: DeviceId, handle: ConnectionHandle) -> None:
        """Give back the connection lent through ``handle``.

        The connection returns to the idle set, unless it is now unhealthy
        (with health checks enabled: closed, counted broken) or past
        ``max_lifetime`` (closed, counted evicted).  If :meth:`close_all`
        already closed it, this just retires the handle.

        Raises :class:`~aura_sync.errors.InvalidHandle` for a handle released
        before, of another pool, or of another peer;
        :class:`~aura_sync.errors.WrongType` for arguments of the wrong type.
        Nothing changes on a rejected call.
        """
        check_peer(peer_id)
        self._check_handle(handle)
        if handle.peer_id != peer_id:
            raise InvalidHandle(
                f"handle {handle.handle_id} is for peer {handle.peer_id}, not peer_id={peer_id}"
            )
        entry = handle._entry
        handle._done = True
        self._handles.pop(handle.handle_id, None)
        if entry.state is ConnectionState.CLOSED:
            return  # closed under the handle by close_all
        entry.handle = None
        self._released += 1
        now = self._clock.now()
        entry.last_used = now
        if self._config.health_checks_enabled and not self._check_health(entry):
            self._discard(entry)
            self._broken += 1
        elif now - entry.established_at >= self._config.max_lifetime:
            self._discard(entry)
            self._evicted += 1
        else:
            entry.state = ConnectionState.IDLE
            self._idle[entry.connection_id] = entry
            self._peer_idle.setdefault(entry.peer_id, OrderedDict())[entry.connection_id] = entry

    def close(self, handle: ConnectionHandle) -> None:
        """Close the connection lent through ``handle`` instead of pooling it.

        For a connection the caller found broken.  Retires the handle.
        Raises :class:`~aura_sync.errors.InvalidHandle` for a handle already
        released or closed, or of another pool.
        """
        self._check_handle(handle)
        entry = handle._entry
        handle._done = True
        self._handles.pop(handle.handle_id, None)
        if entry.state is ConnectionState.CLOSED:
            return
        entry.handle = None
        self._discard(entry)

    # --- maintenance ---

    def _expired(self, entry: _Entry, now: float) -> bool:
        cfg = self._config
        return (
            now - entry.last_used >= cfg.idle_timeout
            or now - entry.established_at >= cfg.max_lifetime
        )

    def evict_expired(self) -> int:
        """Close idle connections idle for ``idle_timeout`` or alive for ``max_lifetime``.

        In-use connections are left alone (a too-old one is closed when
        released).  Returns how many were closed (counted in
        ``connections_evicted``).
        """
        now = self._clock.now()
        expired = [e for e in self._idle.values() if self._expired(e, now)]
        for entry in expired:
            self._unidle(entry)
            self._discard(entry)
        self._evicted += len(expired)
        return len(expired)

    def health_check(self) -> int:
        """Check every idle connection's health; close the broken ones.

        Runs even when ``health_checks_enabled`` is False (an explicit call).
        Returns how many were closed (counted in ``broken``).
        """
        self._last_health_check = self._clock.now()
        broken = [e for e in list(self._idle.values()) if not self._check_health(e)]
        for entry in broken:
            self._unidle(entry)
            self._discard(entry)
        self._broken += len(broken)
        return len(broken)

    def health_check_due(self) -> bool:
        """Whether ``health_check_interval`` seconds passed since the last :meth:`health_check`."""
        return self._clock.now() - self._last_health_check >= self._config.health_check_interval

    def close_all(self) -> int:
        """Close every connection, idle and in use; returns how many were closed.

        Handles of in-use connections stay valid for one harmless release.
        The pool stays usable afterwards.
        """
        entries = list(self._entries.values())
        self._idle.clear()
        self._peer_idle.clear()
        for entry in entries:
            self._discard(entry)
        return len(entries)

    def _check_health(self, entry: _Entry) -> bool:
        try:
            healthy = entry.connection.is_healthy() is True
        except Exception:  # a check that raises means the connection is broken
            _log.debug("is_healthy() raised on connection %s", entry.connection_id, exc_info=True)
            healthy = False
        entry.healthy = healthy
        return healthy

    def _unidle(self, entry: _Entry) -> None:
        del self._idle[entry.connection_id]
        peer_idle = self._peer_idle[entry.peer_id]
        del peer_idle[entry.connection_id]
        if not peer_idle:
            del self._peer_idle[entry.peer_id]

    def _discard(self, entry: _Entry) -> None:
        """Close ``entry``'s connection and forget it (it must not be in the idle sets)."""
        entry.state = ConnectionState.CLOSED
        del self._entries[entry.connection_id]
        left = self._peer_open[entry.peer_id] - 1
        if left:
            self._peer_open[entry.peer_id] = left
        else:
            del self._peer_open[entry.peer_id]
            self._peer_idle.pop(entry.peer_id, None)
        self._closed += 1
        _close_quietly(entry.connection)

    # --- statistics ---

    def record_wait(self) -> None:
        """Count an acquire that the actor queued because the pool was exhausted."""
        self._waits += 1

    def record_timeout(self) -> None:
        """Count a queued acquire that timed out after ``acquire_timeout``."""
        self._timeouts += 1

    def connections(self) -> tuple[ConnectionMetadata, ...]:
        """Snapshots of every open connection, by connection id."""
        return tuple(self._entries[cid].metadata() for cid in sorted(self._entries))

    def peer_connections(self, peer_id: DeviceId) -> int:
        """How many connections (idle or in use) are open to ``peer_id``."""
        return self._peer_open.get(check_peer(peer_id), 0)

    def statistics(self) -> PoolStatistics:
        """A frozen snapshot of the counters and gauges."""
        total = len(self._entries)
        idle = len(self._idle)
        return PoolStatistics(
            connections_created=self._created,
            connections_reused=self._reused,
            connections_released=self._released,
            connections_closed=self._closed,
            connections_evicted=self._evicted,
            connection_limit_hits=self._limit_hits,
            waits=self._waits,
            timeouts=self._timeouts,
            broken=self._broken,
            idle=idle,
            in_use=total - idle,
            total=total,
        )

    def __len__(self) -> int:
        """The number of open connections (idle + in use)."""
        return len(self._entries)

    def __repr__(self) -> str:
        return (
            f"ConnectionPool(total={len(self._entries)}, idle={len(self._idle)}, "
            f"max_total={self._config.max_total_connections})"
        )


def _close_quietly(connection: object) -> None:
    """Close a connection; a failing close is logged, never raised (it is being dropped)."""
    close = getattr(connection, "close", None)
    if close is None:
        return
    try:
        close()
    except Exception:
        _log.warning("closing connection %r failed", connection, exc_info=True)
