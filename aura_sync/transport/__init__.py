"""Transports: how nodes reach each other.

* :mod:`~aura_sync.transport.base`: the :class:`Transport` effect and
  :class:`TransportConnector` (the pool's connector);
  :mod:`~aura_sync.transport.config` (:class:`TransportConfig`,
  :class:`TransportStats`, refusals); :mod:`~aura_sync.transport.connection`
  (the shared :class:`Connection` logic and the events handed to handlers).
* :mod:`~aura_sync.transport.tcp`: :class:`TcpTransport`, mutual TLS 1.3 over
  real sockets (one selector thread); :mod:`~aura_sync.transport.tls`: the
  pyOpenSSL contexts and verify callback.
* :mod:`~aura_sync.transport.memory`: :class:`MemoryNetwork`, a deterministic
  simulated network (seeded latency, loss, partitions) for fault tests.

Layer: runtime.
"""

from aura_sync.transport.base import (
    Connected,
    Connection,
    ConnectionState,
    Disconnected,
    Handler,
    Inbound,
    Listener,
    Refusal,
    RefusalKind,
    Transport,
    TransportConfig,
    TransportConnector,
    TransportEvent,
    TransportStats,
)
from aura_sync.transport.memory import MemoryConnection, MemoryNetwork, MemoryTransport
from aura_sync.transport.tcp import TcpConnection, TcpListener, TcpTransport

__all__ = [
    "Connected",
    "Connection",
    "ConnectionState",
    "Disconnected",
    "Handler",
    "Inbound",
    "Listener",
    "MemoryConnection",
    "MemoryNetwork",
    "MemoryTransport",
    "Refusal",
    "RefusalKind",
    "TcpConnection",
    "TcpListener",
    "TcpTransport",
    "Transport",
    "TransportConfig",
    "TransportConnector",
    "TransportEvent",
    "TransportStats",
]
