"""A simulated network in one process: seeded latency, loss and partitions, deterministic.

Role
    :class:`MemoryNetwork` stands in for the real network in fault tests.
    Each node gets a :class:`MemoryTransport` (``network.transport(device_id)``)
    that implements the same :class:`~aura_sync.transport.Transport` protocol
    as :class:`~aura_sync.transport.TcpTransport`, with the same
    :class:`~aura_sync.transport.Connection` logic (Hello exchange, requests,
    keepalive, idle detection).  Frames are really encoded and decoded with
    the codec, so everything that crosses it is wire-safe.

Determinism
    Time comes from the injected :class:`~aura_sync.effects.Clock` and every
    random choice from the injected :class:`~aura_sync.effects.Rng`: each
    packet's latency is ``rng.uniform(*latency)`` and each frame is lost
    with probability ``loss``.  Delivery happens in clock timers, so under a
    :class:`~aura_sync.effects.ManualClock` everything runs inside
    ``advance()`` on the test's thread, and the same seed and the same calls
    give the same trace (:meth:`MemoryNetwork.trace`).  Delivery on one
    connection is in order (like TCP): a packet never overtakes an earlier
    one on the same connection.

Faults
    * *loss*: frames (not the connection set-up/tear-down control packets)
      are dropped with probability ``loss``; a lost request times out, a lost
      Hello makes the connect time out.
    * *partitions*: :meth:`MemoryNetwork.partition` blocks every packet
      between two sets of nodes (both ways) until :meth:`MemoryNetwork.heal`.
      Connections across a partition are not told: they go quiet, their
      keepalive goes unanswered and they are closed by the idle timeout
      (exactly a half-open TCP connection).
    * *identity*: a dialer expecting ``X`` at an address where ``Y`` listens
      is refused with :class:`~aura_sync.errors.PeerIdentityMismatch`, as the
      TLS verify callback would.

Threading
    State is guarded by one network lock; clock timers are scheduled outside
    it, so actors on other threads may send while a test advances a
    :class:`ManualClock`.  Handlers run on the thread that fires the timer.

Layer: runtime.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from aura_sync._checks import check_peer
from aura_sync.effects import Clock, ManualClock, Rng, TimerHandle, check_seconds
from aura_sync.errors import (
    AuraError,
    HandshakeFailed,
    InvalidArgument,
    PeerIdentityMismatch,
    WrongType,
)
from aura_sync.ids import DeviceId
from aura_sync.messages import codec
from aura_sync.transport.base import _check_handler
from aura_sync.transport.config import Refusal, RefusalKind, TransportConfig
from aura_sync.transport.memory_endpoint import (
    _FRAME,
    _SYNACK,
    MemoryConnection,
    MemoryListener,
    MemoryTransport,
)

__all__ = [
    "MemoryConnection",
    "MemoryListener",
    "MemoryNetwork",
    "MemoryTransport",
    "NetworkStats",
    "TraceEntry",
]


@dataclass(frozen=True, slots=True)
class TraceEntry:
    """One packet event: at ``time`` (clock seconds), ``what`` went from ``src`` to ``dst``.

    ``what`` is a message class name or a control packet ("syn", "synack",
    "fin", "rst"); ``outcome`` is "sent", "lost", "partitioned",
    "delivered" or "dropped" (arrived at a closed endpoint).
    """

    time: float
    src: DeviceId
    dst: DeviceId
    what: str
    outcome: str


@dataclass(frozen=True, slots=True)
class NetworkStats:
    """Counters of the whole simulated network."""

    sent: int
    delivered: int
    lost: int
    partitioned: int
    dropped: int


class MemoryNetwork:
    """A deterministic simulated network (see the module docstring).

    ``clock``: drives latency and timeouts.  ``rng``: latency and loss
    draws.  ``latency``: (min, max) one-way delay in seconds.  ``loss``:
    probability in [0, 1) that a frame is dropped.  ``config``: the
    connections' timeouts (seconds) and limits.  ``keepalive``: send Pings
    and close idle connections; with False there are no Pings, silence never
    closes a connection nor makes it unhealthy, and the clock goes quiet once
    traffic stops (for tests that step until no timer is left).
    ``record_trace``: keep a :class:`TraceEntry` per packet event.
    """

    def __init__(
        self,
        clock: Clock,
        rng: Rng,
        *,
        latency: tuple[float, float] = (0.001, 0.005),
        loss: float = 0.0,
        config: TransportConfig | None = None,
        keepalive: bool = True,
        record_trace: bool = False,
    ) -> None:
        if not isinstance(clock, Clock):
            raise WrongType(f"clock must be a Clock, got {type(clock).__name__}")
        if not isinstance(rng, Rng):
            raise WrongType(f"rng must be an Rng, got {type(rng).__name__}")
        if config is None:
            config = TransportConfig()
        elif not isinstance(config, TransportConfig):
            raise WrongType(f"config must be a TransportConfig, got {type(config).__name__}")
        self._clock = clock
        self._rng = rng
        self._config = config
        self._keepalive = bool(keepalive)
        self._lock = threading.RLock()
        self._latency = _check_latency(latency)
        self._loss = _check_loss(loss)
        self._transports: dict[DeviceId, MemoryTransport] = {}
        self._listeners: dict[str, MemoryListener] = {}
        self._blocked: set[tuple[DeviceId, DeviceId]] = set()
        self._trace: list[TraceEntry] | None = [] if record_trace else None
        self._counts = {"sent": 0, "delivered": 0, "lost": 0, "partitioned": 0, "dropped": 0}

    # --- public API -------------------------------------------------------------------------

    @property
    def clock(self) -> Clock:
        """The clock that drives the network."""
        return self._clock

    def transport(
        self, device_id: DeviceId, *, on_refused: Callable[[Refusal], None] | None = None
    ) -> MemoryTransport:
        """The endpoint of node ``device_id`` (one per id).

        Raises :class:`~aura_sync.errors.InvalidArgument` if ``device_id``
        already has an endpoint.
        """
        check_peer(device_id, "device_id")
        _check_handler(on_refused, "on_refused", optional=True)
        with self._lock:
            existing = self._transports.get(device_id)
            if existing is not None and not existing._closed:
                raise InvalidArgument(f"device_id {device_id} already has a transport")
            transport = MemoryTransport(self, device_id, on_refused)
            self._transports[device_id] = transport
        return transport

    def partition(self, side_a: Iterable[DeviceId], side_b: Iterable[DeviceId]) -> None:
        """Block all packets between every node of ``side_a`` and every node of ``side_b``.

        Partitions accumulate until :meth:`heal`.  Raises
        :class:`~aura_sync.errors.InvalidArgument` if the sides overlap.
        """
        a = _check_ids(side_a, "side_a")
        b = _check_ids(side_b, "side_b")
        overlap = a & b
        if overlap:
            raise InvalidArgument(f"partition sides overlap: {sorted(str(d) for d in overlap)}")
        with self._lock:
            for x in a:
                for y in b:
                    self._blocked.add((x, y))
                    self._blocked.add((y, x))

    def heal(self) -> None:
        """Remove every partition."""
        with self._lock:
            self._blocked.clear()

    def is_partitioned(self, a: DeviceId, b: DeviceId) -> bool:
        """Whether packets between ``a`` and ``b`` are currently blocked."""
        with self._lock:
            return (a, b) in self._blocked

    def set_loss(self, loss: float) -> None:
        """Change the frame loss probability (in [0, 1))."""
        value = _check_loss(loss)
        with self._lock:
            self._loss = value

    def set_latency(self, latency: tuple[float, float]) -> None:
        """Change the (min, max) one-way latency in seconds."""
        value = _check_latency(latency)
        with self._lock:
            self._latency = value

    def trace(self) -> tuple[TraceEntry, ...]:
        """The packet events so far (empty unless ``record_trace`` was set)."""
        with self._lock:
            return tuple(self._trace or ())

    def stats(self) -> NetworkStats:
        """Counters of the whole network."""
        with self._lock:
            return NetworkStats(**self._counts)

    def run_until(self, predicate: Callable[[], bool], *, timeout: float) -> bool:
        """Advance a :class:`ManualClock` timer by timer until ``predicate()`` holds.

        Stops after ``timeout`` virtual seconds; returns ``predicate()``.
        Raises :class:`~aura_sync.errors.WrongType` if the clock is not a
        ManualClock.
        """
        clock = self._clock
        if not isinstance(clock, ManualClock):
            raise WrongType(f"run_until needs a ManualClock, got {type(clock).__name__}")
        timeout = check_seconds(timeout, "timeout")
        deadline = clock.now() + timeout
        while not predicate():
            now = clock.now()
            nxt = clock.next_deadline()
            if nxt is None or nxt > deadline:
                clock.advance(max(0.0, deadline - now))
                return predicate()
            clock.advance(max(0.0, nxt - now))
        return True

    # --- simulation -------------------------------------------------------------------------

    def _call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        return self._clock.call_at(self._clock.now() + delay, callback)

    def _record(self, src: DeviceId, dst: DeviceId, what: str, outcome: str) -> None:
        if self._trace is not None:
            self._trace.append(TraceEntry(self._clock.now(), src, dst, what, outcome))

    def _what(self, kind: str, body: object) -> str:
        if kind == _FRAME and isinstance(body, bytes):
            try:
                return type(codec.decode(body)).__name__
            except Exception:  # any decode failure, as the receiving connection treats it
                return "malformed"
        return kind

    def _send(self, src: MemoryConnection, dst: MemoryConnection, kind: str, body: object) -> None:
        """Queue a packet on ``dst``'s inbound link after a random latency (or drop it)."""
        src_id = src._transport.local_id
        dst_id = dst._transport.local_id
        with self._lock:
            self._counts["sent"] += 1
            what = self._what(kind, body) if self._trace is not None else kind
            if (src_id, dst_id) in self._blocked:
                self._counts["partitioned"] += 1
                src._counters.bump("messages_partitioned")
                self._record(src_id, dst_id, what, "partitioned")
                return
            if kind == _FRAME and self._loss > 0.0 and self._rng.random() < self._loss:
                self._counts["lost"] += 1
                src._counters.bump("messages_lost")
                self._record(src_id, dst_id, what, "lost")
                return
            lo, hi = self._latency
            deadline = max(self._clock.now() + self._rng.uniform(lo, hi), dst._last_deadline)
            dst._last_deadline = deadline
            dst._inq.append((deadline, kind, body))
            self._record(src_id, dst_id, what, "sent")
        self._clock.call_at(deadline, lambda: self._arrive(src_id, dst, what))

    def _arrive(self, src_id: DeviceId, dst: MemoryConnection, what: str) -> None:
        with self._lock:
            if dst._finished:
                self._counts["dropped"] += 1
                outcome = "dropped"
            else:
                self._counts["delivered"] += 1
                outcome = "delivered"
            self._record(src_id, dst._transport.local_id, what, outcome)
        dst._drain()

    def _send_syn(self, conn: MemoryConnection, address: str) -> None:
        """Start the simulated handshake: a SYN to whoever listens at ``address``."""
        src_id = conn._transport.local_id
        with self._lock:
            listener = self._listeners.get(address)
            dst_id = listener._transport.local_id if listener is not None else None
            self._counts["sent"] += 1
            if dst_id is not None and (src_id, dst_id) in self._blocked:
                self._counts["partitioned"] += 1
                conn._counters.bump("messages_partitioned")
                self._record(src_id, dst_id, "syn", "partitioned")
                return  # the dialer's connect timeout will fire
            lo, hi = self._latency
            delay = self._rng.uniform(lo, hi)
            self._record(src_id, dst_id or src_id, "syn", "sent")
        self._call_later(delay, lambda: self._syn_arrived(conn, address))

    def _syn_arrived(self, conn: MemoryConnection, address: str) -> None:
        if conn._finished:
            return
        with self._lock:
            listener = self._listeners.get(address)
        if listener is None or listener._transport._closed:
            self._reset(conn, f"connection refused: nothing listens at {address}")
            return
        server = listener._transport
        dialer = conn._transport
        remote = dialer._advertised or f"mem:{dialer.local_id}"
        if server.is_banned(remote):  # refused at accept, as TCP does before TLS
            server._counters.bump("refused_banned")
            server._refused(Refusal(RefusalKind.BANNED, remote, f"address {remote} is banned"))
            self._reset(conn, f"connection refused by {address}")
            return
        expected = conn.peer_id
        if server.local_id != expected:
            conn._counters.bump("identity_mismatches")
            reason = (
                f"peer's certificate key proves DeviceId {server.local_id}, not the expected "
                f"{expected}"
            )
            conn._transport._refused(
                Refusal(RefusalKind.IDENTITY_MISMATCH, address, reason, expected, server.local_id)
            )
            self._reset(
                conn,
                f"refused: {reason}",
                PeerIdentityMismatch(f"peer at {address} is not {expected}: {reason}"),
            )
            return
        accepted = MemoryConnection(
            server,
            initiator=False,
            peer_id=dialer.local_id,
            remote_address=remote,
            handler=listener._handler,
        )
        with self._lock:
            server._connections.add(accepted)
        server._counters.bump("connections_accepted")
        accepted._peer = conn
        accepted._start_ticks()
        self._send(accepted, conn, _SYNACK, accepted)
        accepted._tls_established(dialer.local_id)  # sends its Hello behind the SYNACK

    def _reset(self, conn: MemoryConnection, reason: str, error: AuraError | None = None) -> None:
        """Refuse ``conn`` after one more latency (the RST travelling back)."""
        with self._lock:
            lo, hi = self._latency
            delay = self._rng.uniform(lo, hi)
        if error is None:
            conn._counters.bump("handshake_failures")
            error = HandshakeFailed(f"cannot connect to {conn.remote_address}: {reason}")
        failure = error
        self._call_later(delay, lambda: conn._finish(reason, failure, notify_peer=False))


def _check_ids(items: object, name: str) -> set[DeviceId]:
    if isinstance(items, str | bytes) or not isinstance(items, Iterable):
        raise WrongType(f"{name} must be an iterable of DeviceId, got {type(items).__name__}")
    out = set()
    for item in items:
        if type(item) is not DeviceId:
            raise WrongType(f"{name} must hold DeviceIds, got {type(item).__name__} {item!r}")
        out.add(item)
    return out


def _check_loss(loss: object) -> float:
    if isinstance(loss, bool) or not isinstance(loss, int | float):
        raise WrongType(f"loss must be a probability, got {type(loss).__name__} {loss!r}")
    if not 0.0 <= loss < 1.0:
        raise InvalidArgument(f"loss must be in [0, 1), got {loss!r}")
    return float(loss)


def _check_latency(latency: object) -> tuple[float, float]:
    if not isinstance(latency, tuple) or len(latency) != 2:
        raise WrongType(f"latency must be a (min, max) tuple of seconds, got {latency!r}")
    lo = check_seconds(latency[0], "latency[0]")
    hi = check_seconds(latency[1], "latency[1]")
    if hi < lo:
        raise InvalidArgument(f"latency max must be >= min, got {latency!r}")
    return lo, hi
