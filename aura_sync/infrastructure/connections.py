"""Connection pool: reuse connections to peers within per-peer and total limits.

:class:`ConnectionPool` lends a healthy idle connection (most recently released
first) or opens one through the :class:`Connector`; it never blocks (a limit raises
``PoolExhausted``; waiting is the actor's job) and never lends a broken or expired
connection.  At the total limit, the least recently released idle connection is
closed once the new one is open.  A handle is released once (``InvalidHandle`` else).
"""

from __future__ import annotations

import enum
import itertools
import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final, Protocol, runtime_checkable

from aura_sync._checks import check_bool, check_int, check_peer
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
from aura_sync.messages._base import Message, message

__all__ = [
    "Connection", "ConnectionHandle", "ConnectionMetadata", "ConnectionPool", "ConnectionState",
    "Connector", "PoolConfig", "PoolStatistics",
]  # fmt: skip

_log = logging.getLogger(__name__)


@runtime_checkable
class Connection(Protocol):
    """An open connection to a peer: ``is_healthy()`` is cheap and ``close()`` idempotent,
    neither blocks; its ``session_id`` str, if any, is reported."""

    def is_healthy(self) -> bool: ...

    def close(self) -> None: ...


@runtime_checkable
class Connector(Protocol):
    """Opens connections to peers (the transport effect): ``connect`` raises on failure."""

    def connect(self, peer_id: DeviceId) -> Connection: ...


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """Limits (>= 1) and timeouts (seconds > 0; ``acquire_timeout``, the actor's wait,
    >= 0) of a pool; ``max_lifetime`` is checked when idle; ``health_checks_enabled``
    calls ``is_healthy()`` on borrow and release.  WrongType / ConfigError."""

    max_total_connections: int = 100
    max_connections_per_peer: int = 10
    idle_timeout: float = 300.0
    max_lifetime: float = 1800.0
    acquire_timeout: float = 10.0
    health_checks_enabled: bool = True
    health_check_interval: float = 60.0

    def __post_init__(self) -> None:
        try:
            check_int(self.max_total_connections, "max_total_connections", minimum=1)
            check_int(self.max_connections_per_peer, "max_connections_per_peer", minimum=1)
            for n in ("idle_timeout", "max_lifetime", "acquire_timeout", "health_check_interval"):
                seconds = check_seconds(getattr(self, n), n, allow_zero=n == "acquire_timeout")
                object.__setattr__(self, n, seconds)
        except InvalidArgument as exc:  # a bad config value is a ConfigError (WrongType passes)
            raise ConfigError(str(exc)) from None
        check_bool(self.health_checks_enabled, "health_checks_enabled")


class ConnectionState(enum.Enum):
    """Where a connection is in its life: IDLE, IN_USE or CLOSED (final)."""

    IDLE = "idle"
    IN_USE = "in_use"
    CLOSED = "closed"


@message(0x007E)
class ConnectionMetadata(Message):
    """One connection: clock times, ``reuse_count`` (lent again), the last health result."""

    connection_id: int
    peer_id: DeviceId
    session_id: str | None
    established_at: float
    last_used: float
    reuse_count: int
    state: ConnectionState
    healthy: bool


@message(0x007F)
class PoolStatistics(Message):
    """A pool's counters and gauges (Rust names first); ``created - closed == total``.
    ``evicted``: expired or reclaimed; ``limit_hits``: ``PoolExhausted``; ``waits`` /
    ``timeouts``: acquires the actor queued / that timed out; ``broken``: unhealthy."""

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


class _Entry:
    """The pool's mutable record of one open connection."""

    __slots__ = (
        "connection", "connection_id", "established_at", "healthy", "last_used", "peer_id",
        "reuse_count", "session_id", "state",
    )  # fmt: skip

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

    def metadata(self) -> ConnectionMetadata:
        return ConnectionMetadata(
            self.connection_id, self.peer_id, self.session_id, self.established_at,
            self.last_used, self.reuse_count, self.state, self.healthy,
        )  # fmt: skip


class ConnectionHandle:
    """A lent connection, released once (``release()`` or ``with``); ``handle_id`` is unique
    per acquisition, ``reused`` says an idle connection was lent again."""

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
        """The connection; InvalidHandle once released or closed by the pool."""
        if self._done:
            raise InvalidHandle(f"handle {self.handle_id} was already released")
        if self._entry.state is ConnectionState.CLOSED:
            raise InvalidHandle(f"handle {self.handle_id}: its connection was closed by the pool")
        return self._entry.connection

    @property
    def released(self) -> bool:
        """Whether the handle was released or closed (it can no longer be used)."""
        return self._done

    def release(self) -> None:
        """Give the connection back: ``pool.release(self.peer_id, self)``."""
        self._pool.release(self.peer_id, self)

    @property
    def session_id(self) -> str | None:
        """The transport's session id of the connection, or None."""
        return self._entry.session_id

    def __enter__(self) -> ConnectionHandle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self._done:
            self._pool.release(self.peer_id, self)


class ConnectionPool:
    """Connections within per-peer and total limits; public methods check their arguments
    (WrongType / InvalidArgument) and a rejected call changes nothing."""

    def __init__(
        self, config: PoolConfig, connector: Connector, *, clock: Clock | None = None
    ) -> None:
        if not isinstance(config, PoolConfig):
            raise WrongType(f"config must be a PoolConfig, got {type(config).__name__} {config!r}")
        if not isinstance(connector, Connector):
            raise WrongType(f"connector must have a connect(peer_id) method, got {connector!r}")
        if clock is None:
            clock = SystemClock()
        elif not isinstance(clock, Clock):
            raise WrongType(f"clock must be a Clock, got {type(clock).__name__} {clock!r}")
        self.config: Final = config  # the pool's limits
        self._connector = connector
        self._clock = clock
        self._entries: dict[int, _Entry] = {}
        self._idle: OrderedDict[int, _Entry] = OrderedDict()  # least recently released first
        self._peer_idle: dict[DeviceId, OrderedDict[int, _Entry]] = {}
        self._peer_open: dict[DeviceId, int] = {}
        self._connection_ids = itertools.count(1)
        self._handle_ids = itertools.count(1)
        self._last_health_check = clock.now()
        self._created = self._reused = self._released = self._closed = self._evicted = 0
        self._limit_hits = self._waits = self._timeouts = self._broken = 0

    # --- acquire / release ---

    def acquire(self, peer_id: DeviceId) -> ConnectionHandle:
        """Lend a connection to ``peer_id``, idle or new; never blocks.  PoolExhausted at a
        limit, ConnectFailed if the connector raises (chained; nothing changes), WrongType
        for a bad ``peer_id`` or a connector returning no :class:`Connection`."""
        check_peer(peer_id)
        now = self._clock.now()
        entry = self._take_idle(peer_id, now)
        if entry is not None:
            entry.state = ConnectionState.IN_USE
            entry.last_used = now
            entry.reuse_count += 1
            self._reused += 1
            return ConnectionHandle(self, next(self._handle_ids), entry, True)
        cfg = self.config
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
            raise WrongType(f"connector.connect must return a Connection, got {connection!r}")
        if must_reclaim:
            victim = next(iter(self._idle.values()))  # least recently released
            self._unidle(victim)
            self._discard(victim)
            self._evicted += 1
        entry = _Entry(next(self._connection_ids), peer_id, connection, self._clock.now())
        self._entries[entry.connection_id] = entry
        self._peer_open[peer_id] = open_for_peer + 1
        self._created += 1
        return ConnectionHandle(self, next(self._handle_ids), entry, False)

    def can_acquire(self, peer_id: DeviceId) -> bool:
        """Whether :meth:`acquire` for ``peer_id`` would not hit a limit now (counts nothing)."""
        check_peer(peer_id)
        if self._peer_idle.get(peer_id):
            return True
        if self._peer_open.get(peer_id, 0) >= self.config.max_connections_per_peer:
            return False
        return len(self._entries) < self.config.max_total_connections or bool(self._idle)

    def _take_idle(self, peer_id: DeviceId, now: float) -> _Entry | None:
        idle = self._peer_idle.get(peer_id)
        while idle:
            _, entry = idle.popitem(last=True)
            del self._idle[entry.connection_id]
            if self._usable(entry, self._expired(entry, now)):
                return entry
        return None

    def _usable(self, entry: _Entry, expired: bool) -> bool:
        """False once ``entry`` is discarded: ``expired`` (evicted) or unhealthy (broken)."""
        if expired:
            self._evicted += 1
        elif self.config.health_checks_enabled and not self._check_health(entry):
            self._broken += 1
        else:
            return True
        self._discard(entry)
        return False

    def _retire(self, handle: object) -> _Entry | None:
        """Mark a live handle of this pool used up; its entry, or None if close_all closed it."""
        if not isinstance(handle, ConnectionHandle):
            raise WrongType(f"handle must be a ConnectionHandle, got {handle!r}")
        if handle._pool is not self:
            raise InvalidHandle(f"handle {handle.handle_id} belongs to another pool")
        if handle._done:
            raise InvalidHandle(f"handle {handle.handle_id} was already released")
        handle._done = True
        entry = handle._entry
        return None if entry.state is ConnectionState.CLOSED else entry

    def release(self, peer_id: DeviceId, handle: ConnectionHandle) -> None:
        """Give back ``handle``'s connection: idle again unless unhealthy (broken) or past
        ``max_lifetime`` (evicted).  InvalidHandle for a handle released before or of
        another pool or peer, WrongType for bad arguments."""
        check_peer(peer_id)
        if isinstance(handle, ConnectionHandle) and handle.peer_id != peer_id:
            raise InvalidHandle(
                f"handle {handle.handle_id} is for peer {handle.peer_id}, not peer_id={peer_id}"
            )
        entry = self._retire(handle)
        if entry is None:
            return
        self._released += 1
        now = self._clock.now()
        entry.last_used = now
        if self._usable(entry, now - entry.established_at >= self.config.max_lifetime):
            entry.state = ConnectionState.IDLE
            self._idle[entry.connection_id] = entry
            self._peer_idle.setdefault(entry.peer_id, OrderedDict())[entry.connection_id] = entry

    def close(self, handle: ConnectionHandle) -> None:
        """Close ``handle``'s connection instead of pooling it; raises as :meth:`release`."""
        entry = self._retire(handle)
        if entry is not None:
            self._discard(entry)

    # --- maintenance ---

    def _expired(self, entry: _Entry, now: float) -> bool:
        cfg = self.config
        too_old = now - entry.established_at >= cfg.max_lifetime
        return too_old or now - entry.last_used >= cfg.idle_timeout

    def _close_idle(self, entries: list[_Entry]) -> int:
        for entry in entries:
            self._unidle(entry)
            self._discard(entry)
        return len(entries)

    def evict_expired(self) -> int:
        """Close the idle connections past ``idle_timeout`` or ``max_lifetime``; how many."""
        now = self._clock.now()
        count = self._close_idle([e for e in self._idle.values() if self._expired(e, now)])
        self._evicted += count
        return count

    def health_check(self) -> int:
        """Close the idle connections failing ``is_healthy()`` (even with checks off); how many."""
        self._last_health_check = self._clock.now()
        count = self._close_idle([e for e in self._idle.values() if not self._check_health(e)])
        self._broken += count
        return count

    def health_check_due(self) -> bool:
        """Whether ``health_check_interval`` seconds passed since the last :meth:`health_check`."""
        return self._clock.now() - self._last_health_check >= self.config.health_check_interval

    def close_all(self) -> int:
        """Close every connection (lent ones' handles stay valid for one release); how many."""
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

    # --- statistics and inspection ---

    def record_wait(self) -> None:
        """Count an acquire the actor queued (the pool was exhausted)."""
        self._waits += 1

    def record_timeout(self) -> None:
        """Count a queued acquire that timed out."""
        self._timeouts += 1

    def connections(self) -> tuple[ConnectionMetadata, ...]:
        """Snapshots of every open connection, by connection id."""
        return tuple(self._entries[cid].metadata() for cid in sorted(self._entries))

    def get_connection_metadata(self, peer_id: DeviceId) -> tuple[ConnectionMetadata, ...]:
        """Snapshots of the open connections to ``peer_id`` (idle or in use), by id; maybe ()."""
        check_peer(peer_id)
        return tuple(m for m in self.connections() if m.peer_id == peer_id)

    def total_connections(self) -> int:
        """How many connections are open, idle and in use (the Rust ``total_connections``)."""
        return len(self._entries)

    def peer_count(self) -> int:
        """How many distinct peers have at least one open connection (the Rust ``peer_count``)."""
        return len(self._peer_open)

    def statistics(self) -> PoolStatistics:
        """A frozen snapshot of the counters and gauges."""
        total = len(self._entries)
        idle = len(self._idle)
        return PoolStatistics(
            self._created, self._reused, self._released, self._closed, self._evicted,
            self._limit_hits, self._waits, self._timeouts, self._broken, idle, total - idle, total,
        )  # fmt: skip


def _close_quietly(connection: object) -> None:
    """Close a connection; a failing close is logged, never raised (it is being dropped)."""
    close = getattr(connection, "close", None)
    if close is None:
        return
    try:
        close()
    except Exception:
        _log.warning("closing connection %r failed", connection, exc_info=True)
