"""Connection-pool requests, one per ``ConnectionPool`` operation (tags 0x0060-0x007F).

:class:`Acquire` is answered in-process with a :class:`~aura_sync.actors.pool.PoolLease`
(the live connection and its handle): it cannot be asked over the wire."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aura_sync.ids import DeviceId
from aura_sync.infrastructure.connections import ConnectionMetadata, PoolStatistics
from aura_sync.messages._base import Request, message

if TYPE_CHECKING:  # the reply type of Acquire lives in the actor layer
    from aura_sync.actors.pool import PoolLease  # noqa: F401 (named as a string below)


@message(0x0060)
class Acquire(Request["PoolLease"]):
    """Lend a connection to ``peer_id``, waiting (FIFO) up to ``timeout`` seconds (0:
    ``PoolExhausted`` at once; None: the pool's ``acquire_timeout``), then ``AcquireTimeout``."""

    peer_id: DeviceId
    timeout: float | None = None


@message(0x0061)
class Release(Request[None]):
    """Give back the connection lent under ``handle_id`` (``InvalidHandle`` if not lent)."""

    peer_id: DeviceId
    handle_id: int


@message(0x0062)
class CloseConnection(Request[None]):
    """Close (not pool) the connection lent under ``handle_id`` (it broke)."""

    handle_id: int


@message(0x0063)
class EvictExpired(Request[int]):
    """``ConnectionPool.evict_expired()``: how many idle connections were closed."""


@message(0x0064)
class HealthCheck(Request[int]):
    """``ConnectionPool.health_check()``: how many broken idle connections were closed."""


@message(0x0065)
class CloseAll(Request[int]):
    """``ConnectionPool.close_all()``: how many connections were closed."""


@message(0x0066)
class GetPoolStatistics(Request[PoolStatistics]):
    """``ConnectionPool.statistics()``."""


@message(0x0067)
class ListConnections(Request[tuple[ConnectionMetadata, ...]]):
    """``ConnectionPool.connections()``: every open connection, by id."""


@message(0x0068)
class GetConnectionMetadata(Request[tuple[ConnectionMetadata, ...]]):
    """``ConnectionPool.get_connection_metadata(peer_id)``: that peer's open connections."""

    peer_id: DeviceId


@message(0x0069)
class TotalConnections(Request[int]):
    """``ConnectionPool.total_connections()``: open connections, idle and in use."""


@message(0x006A)
class PeerCount(Request[int]):
    """``ConnectionPool.peer_count()``: peers with at least one open connection."""
