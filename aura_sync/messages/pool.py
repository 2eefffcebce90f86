"""Connection-pool messages: requests to the pool actor and its replies.

Tags 0x0060-0x007F.  Every operation of
:class:`~aura_sync.infrastructure.connections.ConnectionPool` is reachable:

===========================  ==========================================
request                      reply
===========================  ==========================================
:class:`Acquire`             :class:`Acquired` (or an ``ErrorReply``:
                             ``PoolExhausted``, ``AcquireTimeout``,
                             ``ConnectFailed``)
:class:`Release`             :class:`~aura_sync.messages.common.Ack`
:class:`CloseConnection`     :class:`~aura_sync.messages.common.Ack`
:class:`EvictExpired`        :class:`Evicted`
:class:`HealthCheck`         :class:`HealthChecked`
:class:`CloseAll`            :class:`ClosedAll`
:class:`GetPoolStatistics`   :class:`PoolStatisticsReply`
:class:`ListConnections`     :class:`ConnectionsReply`
===========================  ==========================================

Connections themselves never travel: the pool actor keeps the
:class:`~aura_sync.infrastructure.connections.ConnectionHandle` objects and
gives the client the handle's integer ``handle_id``; the client names it in
:class:`Release` and :class:`CloseConnection`.  (The actor finds the handle
with :meth:`ConnectionPool.handle(handle_id)
<aura_sync.infrastructure.connections.ConnectionPool.handle>`.)

Layer: messages.  Imports the pool core for its enum and conversions.
"""

from __future__ import annotations

import math
from typing import Any

from aura_sync._checks import check_bool, check_clock_time, check_peer, check_u64
from aura_sync.errors import InvalidArgument, WrongType
from aura_sync.ids import EPOCH_MAX, DeviceId
from aura_sync.infrastructure.connections import (
    ConnectionMetadata,
    ConnectionState,
    PoolStatistics,
)
from aura_sync.messages._base import Message, message

__all__ = [
    "Acquire",
    "Acquired",
    "CloseAll",
    "CloseConnection",
    "ClosedAll",
    "ConnectionInfo",
    "ConnectionsReply",
    "EvictExpired",
    "Evicted",
    "GetPoolStatistics",
    "HealthCheck",
    "HealthChecked",
    "ListConnections",
    "PoolStatisticsReply",
    "Release",
]


_INF = math.inf


def _check_id(value: object, name: str) -> None:
    """A handle or connection id: an int in 1..2**64-1 (0 gets its own ">= 1" message)."""
    check_u64(value, name)
    if value == 0:
        raise InvalidArgument(f"{name} must be >= 1, got 0")


# --- acquire / release -----------------------------------------------------------------


@message(0x0060)
class Acquire(Message):
    """Lend a connection to ``peer_id``.  Reply: :class:`Acquired`.

    The pool actor waits (FIFO) for a connection to free up when the pool is
    exhausted, for ``timeout`` seconds (None: the pool's ``acquire_timeout``;
    0: do not wait), then replies with an ``AcquireTimeout`` error.

    :ivar peer_id: the peer to connect to.
    :ivar timeout: seconds to wait at most (>= 0, finite), or None.
    """

    peer_id: DeviceId
    timeout: float | None = None

    def __post_init__(self) -> None:
        check_peer(self.peer_id)
        if self.timeout is not None:
            seconds = check_clock_time(self.timeout, "timeout")  # finite seconds, int accepted
            if seconds < 0:
                raise InvalidArgument(f"timeout must be >= 0 seconds, got {self.timeout!r}")
            object.__setattr__(self, "timeout", seconds)


@message(0x0061)
class Acquired(Message):
    """Answer to :class:`Acquire`: a connection is lent under ``handle_id``.

    :ivar peer_id: the peer.
    :ivar handle_id: names this loan in :class:`Release` / :class:`CloseConnection`.
    :ivar connection_id: the pooled connection (stable across reuses).
    :ivar session_id: the transport's session id, or None.
    :ivar reused: whether an idle connection was reused.
    """

    peer_id: DeviceId
    handle_id: int
    connection_id: int
    session_id: str | None = None
    reused: bool = False

    def __post_init__(self) -> None:
        check_peer(self.peer_id)
        _check_id(self.handle_id, "handle_id")
        _check_id(self.connection_id, "connection_id")
        if self.session_id is not None and type(self.session_id) is not str:
            raise WrongType(
                f"session_id must be a str or None, got {type(self.session_id).__name__} "
                f"{self.session_id!r}"
            )
        check_bool(self.reused, "reused")


@message(0x0062)
class Release(Message):
    """Give back the connection lent under ``handle_id``.  Reply: ``Ack``.

    An ``InvalidHandle`` error comes back for a handle released before,
    unknown, or of another peer.
    """

    peer_id: DeviceId
    handle_id: int

    def __post_init__(self) -> None:
        check_peer(self.peer_id)
        _check_id(self.handle_id, "handle_id")


@message(0x0063)
class CloseConnection(Message):
    """Close (not pool) the connection lent under ``handle_id``, e.g. because it
    broke.  Reply: ``Ack`` (or ``InvalidHandle``)."""

    handle_id: int

    def __post_init__(self) -> None:
        _check_id(self.handle_id, "handle_id")


# --- maintenance -----------------------------------------------------------------------


@message(0x0064)
class EvictExpired(Message):
    """Close idle connections past their idle timeout or max lifetime.  Reply: :class:`Evicted`."""


@message(0x0065)
class Evicted(Message):
    """Answer to :class:`EvictExpired`: how many connections were closed."""

    count: int

    def __post_init__(self) -> None:
        check_u64(self.count, "count")


@message(0x0066)
class HealthCheck(Message):
    """Check every idle connection; close the broken ones.  Reply: :class:`HealthChecked`."""


@message(0x0067)
class HealthChecked(Message):
    """Answer to :class:`HealthCheck`: how many broken connections were closed."""

    broken: int

    def __post_init__(self) -> None:
        check_u64(self.broken, "broken")


@message(0x0068)
class CloseAll(Message):
    """Close every connection, idle and in use.  Reply: :class:`ClosedAll`."""


@message(0x0069)
class ClosedAll(Message):
    """Answer to :class:`CloseAll`: how many connections were closed."""

    count: int

    def __post_init__(self) -> None:
        check_u64(self.count, "count")


# --- statistics and listing ------------------------------------------------------------


@message(0x006A)
class GetPoolStatistics(Message):
    """Ask for the pool's counters.  Reply: :class:`PoolStatisticsReply`."""


@message(0x006B)
class PoolStatisticsReply(Message):
    """The fields of :class:`~aura_sync.infrastructure.connections.PoolStatistics`, in order."""

    connections_created: int
    connections_reused: int
    connections_released: int
    connections_closed: int
    connections_evicted: int
    connection_limit_hits: int
    waits: int
    timeouts: int
    broken: int
    idle: int
    in_use: int
    total: int

    def __post_init__(self) -> None:
        for name in _POOL_STAT_FIELDS:
            check_u64(getattr(self, name), name)

    @classmethod
    def from_statistics(cls, stats: PoolStatistics) -> PoolStatisticsReply:
        """The reply that carries ``stats``."""
        if not isinstance(stats, PoolStatistics):
            raise WrongType(f"stats must be a PoolStatistics, got {type(stats).__name__} {stats!r}")
        return cls(*(getattr(stats, name) for name in _POOL_STAT_FIELDS))

    def to_statistics(self) -> PoolStatistics:
        """The :class:`~aura_sync.infrastructure.connections.PoolStatistics` carried."""
        return PoolStatistics(*(getattr(self, name) for name in _POOL_STAT_FIELDS))


_POOL_STAT_FIELDS = (
    "connections_created",
    "connections_reused",
    "connections_released",
    "connections_closed",
    "connections_evicted",
    "connection_limit_hits",
    "waits",
    "timeouts",
    "broken",
    "idle",
    "in_use",
    "total",
)


@message(0x006C)
class ListConnections(Message):
    """Ask for every open connection.  Reply: :class:`ConnectionsReply`."""


@message(0x006D)
class ConnectionInfo(Message):
    """One connection's bookkeeping (a
    :class:`~aura_sync.infrastructure.connections.ConnectionMetadata` on the wire).

    Times are the pool clock's seconds.
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
        # Each check has a fast path for the valid common case (no call); anything
        # else goes through the full checker, which raises or normalises.
        value: Any = self.connection_id
        if value.__class__ is not int or not 0 < value <= EPOCH_MAX:
            _check_id(value, "connection_id")
        if self.peer_id.__class__ is not DeviceId:
            check_peer(self.peer_id)
        if self.session_id is not None and type(self.session_id) is not str:
            raise WrongType(
                f"session_id must be a str or None, got {type(self.session_id).__name__} "
                f"{self.session_id!r}"
            )
        value = self.established_at
        if value.__class__ is not float or not -_INF < value < _INF:
            object.__setattr__(self, "established_at", check_clock_time(value, "established_at"))
        value = self.last_used
        if value.__class__ is not float or not -_INF < value < _INF:
            object.__setattr__(self, "last_used", check_clock_time(value, "last_used"))
        value = self.reuse_count
        if value.__class__ is not int or not 0 <= value <= EPOCH_MAX:
            check_u64(value, "reuse_count")
        if not isinstance(self.state, ConnectionState):
            raise WrongType(
                f"state must be a ConnectionState, got {type(self.state).__name__} {self.state!r}"
            )
        value = self.healthy
        if value.__class__ is not bool:
            check_bool(value, "healthy")

    @classmethod
    def from_metadata(cls, metadata: ConnectionMetadata) -> ConnectionInfo:
        """The message that carries ``metadata``."""
        if not isinstance(metadata, ConnectionMetadata):
            raise WrongType(
                f"metadata must be a ConnectionMetadata, got {type(metadata).__name__} {metadata!r}"
            )
        return cls(
            metadata.connection_id,
            metadata.peer_id,
            metadata.session_id,
            metadata.established_at,
            metadata.last_used,
            metadata.reuse_count,
            metadata.state,
            metadata.healthy,
        )

    def to_metadata(self) -> ConnectionMetadata:
        """The :class:`~aura_sync.infrastructure.connections.ConnectionMetadata` carried."""
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


@message(0x006E)
class ConnectionsReply(Message):
    """Answer to :class:`ListConnections`: every open connection, by connection id."""

    connections: tuple[ConnectionInfo, ...]

    def __post_init__(self) -> None:
        if type(self.connections) is not tuple:
            raise WrongType(
                "connections must be a tuple of ConnectionInfo, got "
                f"{type(self.connections).__name__}"
            )
        for info in self.connections:
            if info.__class__ is not ConnectionInfo:
                break
        else:
            return  # the common case: exact ConnectionInfo items
        for i, info in enumerate(self.connections):
            if not isinstance(info, ConnectionInfo):
                raise WrongType(
                    f"connections[{i}] must be a ConnectionInfo, got {type(info).__name__} {info!r}"
                )

    @classmethod
    def from_metadata(cls, metadata: tuple[ConnectionMetadata, ...]) -> ConnectionsReply:
        """The reply listing ``metadata`` (e.g. ``pool.connections()``)."""
        return cls(tuple(ConnectionInfo.from_metadata(m) for m in metadata))
