"""Endpoints of the simulated network: listeners, connections and one node's transport.

:class:`MemoryTransport` implements the same
:class:`~aura_sync.transport.Transport` protocol as the TCP transport, and
:class:`MemoryConnection` shares its
:class:`~aura_sync.transport.connection.Connection` logic; packets travel
through the owning :class:`~aura_sync.transport.memory.MemoryNetwork`.

Layer: runtime (internal to :mod:`aura_sync.transport.memory`).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from aura_sync._checks import check_peer
from aura_sync.effects import ManualClock, TimerHandle, check_seconds
from aura_sync.errors import (
    AuraError,
    ConnectionClosed,
    HandshakeFailed,
    InvalidArgument,
    TransportError,
    WrongType,
)
from aura_sync.ids import DeviceId
from aura_sync.transport._frames import HEADER_SIZE
from aura_sync.transport.base import _check_handler
from aura_sync.transport.config import Refusal, TransportStats, _Counters
from aura_sync.transport.connection import Connection, ConnectionState, Handler

if TYPE_CHECKING:
    from aura_sync.transport.memory import MemoryNetwork

__all__ = ["MemoryConnection", "MemoryListener", "MemoryTransport"]

_FRAME: Final = "frame"
_SYNACK: Final = "synack"
_FIN: Final = "fin"


class MemoryListener:
    """A listening address on a :class:`MemoryNetwork`."""

    def __init__(self, transport: MemoryTransport, address: str, handler: Handler) -> None:
        self._transport = transport
        self._address = address
        self._handler = handler
        self._closed = False

    @property
    def address(self) -> str:
        """The address peers dial."""
        return self._address

    def close(self) -> None:
        """Stop accepting (established connections stay open).  Idempotent."""
        net = self._transport._network
        with net._lock:
            if self._closed:
                return
            self._closed = True
            if net._listeners.get(self._address) is self:
                del net._listeners[self._address]

    def __repr__(self) -> str:
        return f"<MemoryListener {self._address}>"


class MemoryConnection(Connection):
    """A simulated connection (see :class:`~aura_sync.transport.Connection`)."""

    def __init__(
        self,
        transport: MemoryTransport,
        *,
        initiator: bool,
        peer_id: DeviceId,
        remote_address: str,
        handler: Handler | None,
    ) -> None:
        net = transport._network
        super().__init__(
            initiator=initiator,
            peer_id=peer_id,
            remote_address=remote_address,
            handler=handler,
            config=net._config,
            counters=transport._counters,
            listen_address=transport._advertised,
            now=net._clock.now,
        )
        self._transport = transport
        self._net = net
        self._peer: MemoryConnection | None = None
        self._inq: deque[tuple[float, str, object]] = deque()
        self._last_deadline = -math.inf
        self._finished = False
        self._tick_timer: TimerHandle | None = None
        self._idle_checks = net._keepalive

    # --- Connection hooks ---------------------------------------------------------------

    def _transmit(self, payload: bytes) -> None:
        peer = self._peer
        if self._finished or peer is None:
            raise ConnectionClosed(self._closed_message())
        self._counters.bump("frames_sent")
        self._counters.bump("bytes_sent", len(payload) + HEADER_SIZE)
        self._net._send(self, peer, _FRAME, payload)

    def _schedule(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        return self._net._call_later(delay, callback)

    def _begin_close(self) -> None:
        self._finish("closed locally", notify_peer=True)

    def _abort(self, reason: str, error: AuraError | None = None) -> None:
        self._finish(reason, error, notify_peer=True)

    # --- simulation ---------------------------------------------------------------------

    def _link(self, peer: MemoryConnection) -> None:
        self._peer = peer
        self._tls_established(peer._transport.local_id)

    def _drain(self) -> None:
        """Deliver every packet that is due, in order (timer callback)."""
        now = self._net._clock.now()
        while True:
            with self._net._lock:
                if not self._inq or self._inq[0][0] > now:
                    return
                _, kind, body = self._inq.popleft()
            if self._finished:
                continue
            if kind == _FRAME:
                assert isinstance(body, bytes)
                self._frame_received(body, len(body) + HEADER_SIZE)
            elif kind == _SYNACK:
                assert isinstance(body, MemoryConnection)
                self._link(body)
            elif kind == _FIN:
                assert isinstance(body, tuple)
                reason, error = body
                self._finish(reason, error, notify_peer=False)

    def _start_ticks(self) -> None:
        cfg = self._config
        step = min(cfg.connect_timeout, cfg.keepalive_interval, cfg.idle_timeout) / 2
        if not self._net._keepalive:
            step = cfg.connect_timeout
        self._tick_every(step)

    def _tick_every(self, step: float) -> None:
        def fire() -> None:
            if self._finished:
                return
            active = self._net._keepalive or self._state is ConnectionState.CONNECTING
            if active:
                self._tick(self._net._clock.now())
            if not self._finished and (
                self._net._keepalive or self._state is ConnectionState.CONNECTING
            ):
                self._tick_every(step)

        self._tick_timer = self._net._call_later(step, fire)

    def _finish(
        self, reason: str, error: AuraError | None = None, *, notify_peer: bool = True
    ) -> None:
        with self._net._lock:
            if self._finished:
                return
            self._finished = True
            self._transport._connections.discard(self)
            peer = self._peer
            tick = self._tick_timer
        if tick is not None:
            tick.cancel()
        if notify_peer and peer is not None:
            self._net._send(self, peer, _FIN, ("closed by peer", None))
        self._closed(reason, error)


class MemoryTransport:
    """One node's endpoint on a :class:`MemoryNetwork` (implements ``Transport``)."""

    def __init__(
        self,
        network: MemoryNetwork,
        device_id: DeviceId,
        on_refused: Callable[[Refusal], None] | None = None,
    ) -> None:
        self._network = network
        self._device_id = device_id
        self._on_refused = on_refused
        self._counters = _Counters()
        self._connections: set[MemoryConnection] = set()
        self._listeners: list[MemoryListener] = []
        self._advertised = ""
        self._closed = False
        self._bans: dict[str, float] = {}

    @property
    def local_id(self) -> DeviceId:
        """This node's DeviceId."""
        return self._device_id

    @property
    def network(self) -> MemoryNetwork:
        """The network this endpoint belongs to."""
        return self._network

    def listen(self, address: str, handler: Handler) -> MemoryListener:
        """Accept connections at ``address`` (any non-empty string without spaces).

        Raises :class:`~aura_sync.errors.InvalidArgument` for a malformed
        address, :class:`~aura_sync.errors.TransportError` if another
        endpoint listens there, :class:`~aura_sync.errors.ConnectionClosed`
        after :meth:`close`.
        """
        _check_address(address)
        _check_handler(handler)
        net = self._network
        with net._lock:
            self._ensure_open()
            existing = net._listeners.get(address)
            if existing is not None:
                raise TransportError(f"address {address!r} is already in use")
            listener = MemoryListener(self, address, handler)
            net._listeners[address] = listener
            self._listeners.append(listener)
            if not self._advertised:
                self._advertised = address
        return listener

    def open(
        self, peer_id: DeviceId, address: str, *, handler: Handler | None = None
    ) -> MemoryConnection:
        """Start connecting to ``peer_id`` at ``address``; returns at once (see ``ready``)."""
        check_peer(peer_id)
        _check_address(address)
        _check_handler(handler, optional=True)
        net = self._network
        conn = MemoryConnection(
            self, initiator=True, peer_id=peer_id, remote_address=address, handler=handler
        )
        with net._lock:
            self._ensure_open()
            self._connections.add(conn)
        self._counters.bump("connections_dialed")
        conn._start_ticks()
        net._send_syn(conn, address)
        return conn

    def connect(
        self,
        peer_id: DeviceId,
        address: str,
        *,
        handler: Handler | None = None,
        timeout: float | None = None,
    ) -> MemoryConnection:
        """Open and wait until ready.

        With a :class:`~aura_sync.effects.ManualClock` this drives virtual
        time itself (:meth:`MemoryNetwork.run_until`); with another clock it
        blocks the calling thread (not for actors).  Raises the handshake
        error, or :class:`~aura_sync.errors.HandshakeFailed` on timeout.
        """
        cfg = self._network._config
        wait = (
            cfg.connect_timeout
            if timeout is None
            else check_seconds(timeout, "timeout", allow_zero=False)
        )
        conn = self.open(peer_id, address, handler=handler)
        if isinstance(self._network._clock, ManualClock):
            self._network.run_until(conn.ready.done, timeout=wait)
            if not conn.ready.done():
                conn.close()
        try:
            conn.ready.result(0 if conn.ready.done() else wait)
        except TimeoutError:
            conn.close()
            raise HandshakeFailed(
                f"connecting to {peer_id} at {address} did not finish within {wait} s"
            ) from None
        return conn

    def connections(self) -> tuple[MemoryConnection, ...]:
        """The connections currently known (any state but closed)."""
        with self._network._lock:
            return tuple(sorted(self._connections, key=lambda c: c._serial))

    def stats(self) -> TransportStats:
        """A snapshot of this endpoint's counters."""
        return self._counters.snapshot()

    def close(self) -> None:
        """Close every listener and connection of this endpoint.  Idempotent."""
        with self._network._lock:
            if self._closed:
                return
            self._closed = True
            listeners = list(self._listeners)
            conns = sorted(self._connections, key=lambda c: c._serial)
        for listener in listeners:
            listener.close()
        for conn in conns:
            conn._finish("transport closed", ConnectionClosed("transport closed"))

    def ban_address(self, address: str, seconds: float) -> None:
        """Refuse connections from ``address`` for ``seconds`` of network-clock time."""
        _check_address(address)
        seconds = check_seconds(seconds, "seconds", allow_zero=False)
        with self._network._lock:
            self._bans[address] = self._network._clock.now() + seconds

    def unban_address(self, address: str) -> None:
        """Lift the ban of ``address``."""
        with self._network._lock:
            self._bans.pop(address, None)

    def is_banned(self, address: str) -> bool:
        """Whether connections from ``address`` (a dialer's advertised address) are refused."""
        with self._network._lock:
            until = self._bans.get(address)
        return until is not None and until > self._network._clock.now()

    def _ensure_open(self) -> None:
        if self._closed:
            raise ConnectionClosed(f"transport of {self._device_id} is closed")

    def _refused(self, refusal: Refusal) -> None:
        if self._on_refused is not None:
            try:
                self._on_refused(refusal)
            except Exception:
                self._counters.bump("handler_errors")

    def __repr__(self) -> str:
        return f"<MemoryTransport {self._device_id}>"


def _check_address(address: object) -> None:
    if not isinstance(address, str):
        raise WrongType(f"address must be a str, got {type(address).__name__} {address!r}")
    if not address or any(c.isspace() for c in address) or not address.isprintable():
        raise InvalidArgument(f"address must be non-empty, printable, without spaces: {address!r}")
