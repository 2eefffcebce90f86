"""The transport effect: what protocol actors, the pool's connector and discovery use.

A :class:`Transport` opens mutually authenticated connections to peers
(:meth:`Transport.open`, non-blocking; :meth:`Transport.connect`, blocking,
for non-actor callers) and accepts them (:meth:`Transport.listen`); events
of each :class:`~aura_sync.transport.connection.Connection` go to a quick,
non-blocking handler on the transport's I/O thread.
:class:`TransportConnector` adapts a transport to the pool core's
``Connector`` protocol.  The configuration, counters and events are defined
in :mod:`~aura_sync.transport.config` and
:mod:`~aura_sync.transport.connection` and re-exported here.

Layer: runtime.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from aura_sync._checks import check_peer
from aura_sync.errors import UnknownPeer, WrongType
from aura_sync.ids import DeviceId
from aura_sync.transport.config import (
    Refusal,
    RefusalKind,
    TransportConfig,
    TransportStats,
)
from aura_sync.transport.connection import (
    Connected,
    Connection,
    ConnectionState,
    Disconnected,
    Handler,
    Inbound,
    TransportEvent,
)

__all__ = [
    "Connected",
    "Connection",
    "ConnectionState",
    "Disconnected",
    "Handler",
    "Inbound",
    "Listener",
    "Refusal",
    "RefusalKind",
    "Transport",
    "TransportConfig",
    "TransportConnector",
    "TransportEvent",
    "TransportStats",
]


# --- the transport protocol -------------------------------------------------------------


@runtime_checkable
class Listener(Protocol):
    """An open listening endpoint."""

    @property
    def address(self) -> str:
        """The address peers dial (for TCP the actual "host:port", port 0 resolved)."""
        ...

    def close(self) -> None:
        """Stop accepting (established connections stay open).  Idempotent."""
        ...


@runtime_checkable
class Transport(Protocol):
    """The transport effect: mutually authenticated connections carrying messages."""

    @property
    def local_id(self) -> DeviceId:
        """This node's DeviceId (what peers verify)."""
        ...

    def listen(self, address: str, handler: Handler) -> Listener:
        """Accept connections at ``address``; ``handler`` gets their events."""
        ...

    def open(
        self, peer_id: DeviceId, address: str, *, handler: Handler | None = None
    ) -> Connection:
        """Start connecting to ``peer_id`` at ``address``; returns at once (see ``ready``)."""
        ...

    def connect(
        self,
        peer_id: DeviceId,
        address: str,
        *,
        handler: Handler | None = None,
        timeout: float | None = None,
    ) -> Connection:
        """Open and wait until ready (blocking: not for actor threads)."""
        ...

    def stats(self) -> TransportStats:
        """A snapshot of the counters."""
        ...

    def close(self) -> None:
        """Close every listener and connection and stop the transport's threads."""
        ...


class TransportConnector:
    """Adapts a :class:`Transport` to the pool core's ``Connector`` protocol.

    ``resolve(peer_id)`` returns the peer's address (or None if unknown);
    ``handler`` receives events of the connections it opens.  :meth:`connect`
    is non-blocking: it returns the connection while it connects.
    """

    def __init__(
        self,
        transport: Transport,
        resolve: Callable[[DeviceId], str | None],
        handler: Handler | None = None,
    ) -> None:
        if not callable(resolve):
            raise WrongType(f"resolve must be callable, got {type(resolve).__name__}")
        self._transport = transport
        self._resolve = resolve
        self._handler = handler

    def connect(self, peer_id: DeviceId) -> Connection:
        """Open a connection to ``peer_id`` at its resolved address.

        Raises :class:`~aura_sync.errors.UnknownPeer` if the address is
        unknown, and whatever :meth:`Transport.open` raises.
        """
        check_peer(peer_id)
        address = self._resolve(peer_id)
        if address is None:
            raise UnknownPeer(f"no known address for peer {peer_id}")
        return self._transport.open(peer_id, address, handler=self._handler)


def _check_handler(handler: Any, name: str = "handler", *, optional: bool = False) -> None:
    if handler is None and optional:
        return
    if not callable(handler):
        raise WrongType(f"{name} must be callable, got {type(handler).__name__} {handler!r}")
