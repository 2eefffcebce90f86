"""Real TCP transport: mutual TLS 1.3 over non-blocking sockets, driven by one selector thread.

One thread per :class:`TcpTransport` runs a :mod:`selectors` loop and makes
every pyOpenSSL call (an ``SSL`` object must not be shared between
threads; pyOpenSSL's verify hook, which checks that the peer's key hashes
to the expected DeviceId, does not plug into asyncio).  Actors never block
on the network: :meth:`TcpTransport.open`, ``send`` and ``request``
enqueue work and wake the loop through a socketpair; events are delivered
by callbacks on the loop thread.  :meth:`TcpTransport.connect` is the only
blocking call, for non-actor callers.

Wire: each frame is a 4-byte big-endian length and a codec message inside
TLS; both sides send a :class:`~aura_sync.messages.sync.Hello` after the
handshake (see :mod:`~aura_sync.transport.tcp_connection`).  Addresses are
``"host:port"`` (``"[::1]:port"`` for IPv6).  :meth:`TcpTransport.close`
closes everything, stops the loop thread and joins it.

Layer: runtime.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import heapq
import itertools
import logging
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Final

from OpenSSL import SSL

from aura_sync._checks import check_peer
from aura_sync.effects import check_seconds
from aura_sync.errors import (
    ConnectionClosed,
    HandshakeFailed,
    InvalidArgument,
    TransportError,
    WrongType,
)
from aura_sync.identity import NodeIdentity
from aura_sync.ids import DeviceId
from aura_sync.transport import tls
from aura_sync.transport.admission import Admission, AdmissionStatus, host_of
from aura_sync.transport.base import _check_handler
from aura_sync.transport.config import (
    Refusal,
    RefusalKind,
    TransportConfig,
    TransportStats,
    _Counters,
)
from aura_sync.transport.connection import Connection, Handler
from aura_sync.transport.tcp_connection import TcpConnection, _Timer

__all__ = ["TcpConnection", "TcpListener", "TcpTransport", "format_address", "parse_address"]

_log = logging.getLogger("aura_sync.transport.tcp")

_MAX_TICK: Final = 1.0
_ACCEPT_PAUSE: Final = 0.5
_ACCEPT_RESOURCE_ERRORS: Final = frozenset(
    {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
)


def parse_address(address: str) -> tuple[str, int]:
    """Split ``"host:port"`` (or ``"[v6]:port"``) into host and port (0..65535).

    Raises :class:`~aura_sync.errors.WrongType` for a non-str and
    :class:`~aura_sync.errors.InvalidArgument` for a malformed address.
    """
    if not isinstance(address, str):
        raise WrongType(f"address must be a str, got {type(address).__name__} {address!r}")
    host, sep, port_text = address.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise InvalidArgument(f"address must look like 'host:port', got {address!r}")
    if host.startswith("["):
        if not host.endswith("]") or len(host) < 3:
            raise InvalidArgument(f"malformed IPv6 address {address!r}")
        host = host[1:-1]
    elif ":" in host:
        raise InvalidArgument(f"an IPv6 host needs brackets ('[::1]:port'), got {address!r}")
    port = int(port_text)
    if port > 65535:
        raise InvalidArgument(f"port must be in 0..65535, got {port} in {address!r}")
    return host, port


def format_address(host: str, port: int) -> str:
    """The inverse of :func:`parse_address`."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class TcpListener:
    """A listening socket of a :class:`TcpTransport`; :attr:`address` is the bound "host:port"."""

    def __init__(self, transport: TcpTransport, sock: socket.socket, handler: Handler) -> None:
        self._transport = transport
        self._sock = sock
        self._handler = handler
        host, port = sock.getsockname()[:2]
        self._address = format_address(host, port)
        self._closed = False

    @property
    def address(self) -> str:
        """The address peers dial (port 0 resolved to the real port)."""
        return self._address

    @property
    def handler(self) -> Handler:
        """The handler that receives the events of accepted connections."""
        return self._handler

    def close(self) -> None:
        """Stop accepting; connections already accepted stay open.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._transport._call_soon(self._close_now, allow_closed=True)

    def _close_now(self) -> None:
        self._transport._unregister(self._sock)
        self._sock.close()
        self._transport._listeners.discard(self)

    def __repr__(self) -> str:
        return f"<TcpListener {self._address}{' closed' if self._closed else ''}>"


class TcpTransport:
    """Mutual-TLS TCP transport for one node identity (see the module docstring).

    ``identity``: this node's key and certificate.  ``config``: timeouts and
    limits.  ``advertised_address``: the address sent in Hello (default: the
    first listener's address).  ``on_refused``: called (on the loop thread)
    with a :class:`~aura_sync.transport.Refusal` for every refused
    connection (impostor, plaintext client, bad certificate, over the
    limit).  The loop thread starts at construction; :meth:`close` stops it.
    """

    def __init__(
        self,
        identity: NodeIdentity,
        config: TransportConfig | None = None,
        *,
        advertised_address: str | None = None,
        on_refused: Callable[[Refusal], None] | None = None,
    ) -> None:
        if not isinstance(identity, NodeIdentity):
            raise WrongType(f"identity must be a NodeIdentity, got {type(identity).__name__}")
        if config is None:
            config = TransportConfig()
        elif not isinstance(config, TransportConfig):
            raise WrongType(f"config must be a TransportConfig, got {type(config).__name__}")
        if advertised_address is not None:
            parse_address(advertised_address)
        _check_handler(on_refused, "on_refused", optional=True)
        self._identity = identity
        self._config = config
        self._advertised = advertised_address or ""
        self._on_refused = on_refused
        self._counters = _Counters()
        self._server_ctx = tls.server_context(identity)
        self._client_ctx = tls.client_context(identity)
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._calls: deque[Callable[[], None]] = deque()
        self._dirty: set[TcpConnection] = set()
        self._dirty_lock = threading.Lock()
        self._timers: list[tuple[float, int, _Timer]] = []
        self._timer_seq = itertools.count()
        self._connections: set[TcpConnection] = set()
        self._admission = Admission(config, time.monotonic)
        self._scorer: Callable[[Connection], float] | None = None
        self._send_lock = threading.Lock()
        self._send_total = 0
        self._listeners: set[TcpListener] = set()
        self._state_lock = threading.Lock()
        self._closed = False
        self._stop = False
        self._failure: str | None = None
        self._tick = min(
            _MAX_TICK,
            config.keepalive_interval / 4,
            config.read_timeout / 4,
            config.connect_timeout / 4,
            (config.idle_timeout - config.keepalive_interval) / 2,
        )
        self._next_tick = time.monotonic() + self._tick
        self._thread = threading.Thread(
            target=self._run, name=f"aura-sync-tcp-{str(identity.device_id)[:8]}", daemon=True
        )
        self._thread.start()

    # --- public API -------------------------------------------------------------------------

    @property
    def local_id(self) -> DeviceId:
        """This node's DeviceId."""
        return self._identity.device_id

    @property
    def config(self) -> TransportConfig:
        """The transport's configuration."""
        return self._config

    def listen(self, address: str, handler: Handler) -> TcpListener:
        """Accept mutual-TLS connections at ``address`` ("host:port"; port 0 picks one).

        ``handler`` receives the events of every accepted connection.  The
        first listener's address becomes the advertised address unless one
        was configured.  Raises :class:`~aura_sync.errors.InvalidArgument`
        for a malformed address, :class:`~aura_sync.errors.TransportError`
        if the address cannot be bound, and
        :class:`~aura_sync.errors.ConnectionClosed` after :meth:`close`.
        """
        host, port = parse_address(address)
        _check_handler(handler)
        self._ensure_open()
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            family, socktype, proto, _, sockaddr = infos[0]
            sock = socket.socket(family, socktype, proto)
        except OSError as exc:
            raise TransportError(f"cannot listen on {address!r}: {exc}") from exc
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(sockaddr)
            sock.listen(128)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise TransportError(f"cannot listen on {address!r}: {exc}") from exc
        listener = TcpListener(self, sock, handler)
        if not self._advertised:
            self._advertised = listener.address

        def register() -> None:
            self._listeners.add(listener)
            self._selector.register(sock, selectors.EVENT_READ, listener)

        try:
            self._call_soon(register)
        except ConnectionClosed:
            sock.close()
            raise
        _log.info("event=listening address=%s device_id=%s", listener.address, self.local_id)
        return listener

    def open(
        self, peer_id: DeviceId, address: str, *, handler: Handler | None = None
    ) -> TcpConnection:
        """Start connecting to ``peer_id`` at ``address``; returns at once (non-blocking).

        The returned connection's ``ready`` future completes once TLS
        verified that the peer holds the key of ``peer_id`` and Hellos were
        exchanged, or fails with :class:`~aura_sync.errors.HandshakeFailed`
        / :class:`~aura_sync.errors.PeerIdentityMismatch`.  ``handler``
        receives the connection's events (messages the peer sends that are
        not replies).  Raises :class:`~aura_sync.errors.WrongType` /
        :class:`~aura_sync.errors.InvalidArgument` for bad arguments and
        :class:`~aura_sync.errors.ConnectionClosed` after :meth:`close`.
        """
        check_peer(peer_id)
        host, port = parse_address(address)
        if port == 0:
            raise InvalidArgument(f"cannot connect to port 0 in {address!r}")
        _check_handler(handler, optional=True)
        self._ensure_open()
        conn = TcpConnection(
            self, initiator=True, peer_id=peer_id, remote_address=address, handler=handler
        )

        def start() -> None:
            refused = self._admission.admit_dial(conn, host)
            if refused is not None:
                self._counters.bump(refused[0])
                conn._finish(
                    "too many connections",
                    TransportError(f"cannot open a connection to {peer_id}: {refused[1]}"),
                )
                return
            self._connections.add(conn)
            self._counters.bump("connections_dialed")
            conn._start_dial(host, port)

        self._call_soon(start)
        return conn

    def connect(
        self,
        peer_id: DeviceId,
        address: str,
        *,
        handler: Handler | None = None,
        timeout: float | None = None,
    ) -> TcpConnection:
        """Open a connection and wait until it is ready (BLOCKING: never call from an actor).

        ``timeout`` seconds (default: ``connect_timeout`` plus a margin).
        Returns the open connection or raises the handshake error
        (:class:`~aura_sync.errors.HandshakeFailed`,
        :class:`~aura_sync.errors.PeerIdentityMismatch`).
        """
        if self._on_loop_thread():
            raise TransportError("connect() would block the transport's own loop thread")
        wait = (
            self._config.connect_timeout + 1.0
            if timeout is None
            else check_seconds(timeout, "timeout", allow_zero=False)
        )
        conn = self.open(peer_id, address, handler=handler)
        try:
            conn.ready.result(wait)
        except TimeoutError:
            conn.close()
            raise HandshakeFailed(
                f"connecting to {peer_id} at {address} did not finish within {wait} s"
            ) from None
        return conn

    def connections(self) -> tuple[TcpConnection, ...]:
        """The connections currently known (any state but closed)."""
        return tuple(self._connections)

    @property
    def failure(self) -> str | None:
        """Why the I/O loop died of an unexpected error (it then closed everything), else None.

        A transport whose loop died accepts and carries nothing any more; the
        node treats it as fatal.
        """
        return self._failure

    def stats(self) -> TransportStats:
        """A snapshot of the transport's counters."""
        return self._counters.snapshot()

    def admission_status(self) -> AdmissionStatus:
        """How full the connection slots and send buffers are (``exhausted`` names a shortage)."""
        return self._admission.status(self._send_total)

    def ban_address(self, address: str, seconds: float) -> None:
        """Refuse connections from ``address``'s host (at accept, before TLS) for ``seconds``.

        ``address`` is "host:port", "[v6]:port" or a bare host.  Connections
        already open stay (close them through the handler if needed).
        Raises :class:`~aura_sync.errors.InvalidArgument` for a bad duration.
        """
        self._admission.ban_address(address, seconds)

    def unban_address(self, address: str) -> None:
        """Lift the ban of ``address``'s host."""
        self._admission.unban_address(address)

    def is_banned(self, address: str) -> bool:
        """Whether connections from ``address``'s host are refused now."""
        return self._admission.is_banned(address)

    def protect(self, peer_id: DeviceId) -> None:
        """Never trim ``peer_id``'s connections at the watermarks."""
        check_peer(peer_id)
        self._admission.protect(peer_id)

    def unprotect(self, peer_id: DeviceId) -> None:
        """Let ``peer_id``'s connections be trimmed again."""
        check_peer(peer_id)
        self._admission.unprotect(peer_id)

    def set_connection_scorer(self, scorer: Callable[[Connection], float] | None) -> None:
        """Rank established connections for trimming: the lowest scores are closed first.

        Called on the I/O thread: it must be quick and must not block (read
        a cached score).  None (the default) trims the longest idle first;
        an error in the scorer counts as the lowest score.
        """
        _check_handler(scorer, "scorer", optional=True)
        self._scorer = scorer

    def close(self, timeout: float = 5.0) -> None:
        """Close every listener and connection, stop the loop thread and join it (blocking).

        Pending requests fail with :class:`~aura_sync.errors.ConnectionClosed`.
        Idempotent.  ``timeout``: seconds to wait for the thread.
        """
        check_seconds(timeout, "timeout")
        with self._state_lock:
            if self._closed:
                return
            self._closed = True
            self._calls.append(self._shutdown)
        self._wake()
        if not self._on_loop_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                _log.error("event=transport_close_timeout thread=%s", self._thread.name)

    def __enter__(self) -> TcpTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<TcpTransport {self.local_id} connections={len(self._connections)}>"

    # --- loop plumbing ------------------------------------------------------------------------

    def _ensure_open(self) -> None:
        if self._closed:
            raise ConnectionClosed(f"transport of {self.local_id} is closed")

    def _on_loop_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            self._wake_w.send(b"\0")

    def _call_soon(self, fn: Callable[[], None], *, allow_closed: bool = False) -> None:
        with self._state_lock:
            if self._closed and not allow_closed:
                raise ConnectionClosed(f"transport of {self.local_id} is closed")
            if self._stop:
                return
            self._calls.append(fn)
        if not self._on_loop_thread():
            self._wake()

    def _mark_dirty(self, conn: TcpConnection) -> None:
        with self._dirty_lock:
            self._dirty.add(conn)
        if not self._on_loop_thread():
            self._wake()

    def _schedule(self, delay: float, callback: Callable[[], None]) -> _Timer:
        timer = _Timer(time.monotonic() + delay, callback)

        def push() -> None:
            heapq.heappush(self._timers, (timer.deadline, next(self._timer_seq), timer))

        if self._on_loop_thread():
            push()
        else:
            with contextlib.suppress(ConnectionClosed):  # shutdown fails the connection anyway
                self._call_soon(push)
        return timer

    def _register(self, conn: TcpConnection) -> None:
        assert conn._sock is not None
        self._selector.register(conn._sock, selectors.EVENT_READ, conn)
        conn._mask = selectors.EVENT_READ

    def _modify(self, sock: socket.socket, mask: int, data: object) -> None:
        try:
            self._selector.modify(sock, mask, data)
        except KeyError:
            self._selector.register(sock, mask, data)

    def _unregister(self, sock: socket.socket) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(sock)

    def _trim(self) -> None:
        self._admission.expire_bans()
        scorer = self._scorer

        def score(key: Hashable) -> tuple[float, float]:
            assert isinstance(key, TcpConnection)
            value = -float("inf")
            if scorer is not None:
                try:
                    value = float(scorer(key))
                except Exception:
                    _log.exception("event=connection_scorer_failed conn=%s", key.session_id)
            return (value, key._last_recv)

        for conn in self._admission.trim(score):
            assert isinstance(conn, TcpConnection)
            self._counters.bump("connections_trimmed")
            _log.info("event=connection_trimmed conn=%s peer=%s", conn.session_id, conn._peer_id)
            conn._finish("trimmed: over the high watermark of established connections")

    def _reserve_send(self, size: int) -> str | None:
        """Count ``size`` more bytes queued node-wide, or say why they do not fit."""
        with self._send_lock:
            if self._send_total + size > self._config.max_total_send_buffer:
                total = self._send_total
            else:
                self._send_total += size
                return None
        self._admission.note_exhausted("send buffers")
        return f"node-wide send buffer full ({total} bytes queued, limit " + (
            f"{self._config.max_total_send_buffer})"
        )

    def _release_send(self, size: int) -> None:
        with self._send_lock:
            self._send_total -= size

    def _forget(self, conn: TcpConnection) -> None:
        self._connections.discard(conn)
        self._admission.closed(conn)

    def _refused(self, refusal: Refusal) -> None:
        if self._on_refused is None:
            return
        try:
            self._on_refused(refusal)
        except Exception:
            self._counters.bump("handler_errors")
            _log.exception("event=on_refused_error")

    def _accept(self, listener: TcpListener) -> None:
        while True:
            try:
                sock, addr = listener._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                _log.warning("event=accept_failed address=%s error=%s", listener.address, exc)
                if exc.errno in _ACCEPT_RESOURCE_ERRORS:
                    self._pause_listener(listener)
                return
            remote = format_address(addr[0], addr[1])
            host = host_of(addr[0])
            refused = self._admission.check_accepted(host)
            if refused is not None:  # before any TLS work
                self._counters.bump(refused[0])
                sock.close()
                kind = RefusalKind.BANNED if refused[0] == "refused_banned" else RefusalKind.LIMIT
                self._refused(Refusal(kind, remote, refused[1]))
                continue
            conn = TcpConnection(
                self, initiator=False, peer_id=None, remote_address=remote, handler=listener.handler
            )
            self._connections.add(conn)
            self._admission.add_accepted(conn, host)
            self._counters.bump("connections_accepted")
            try:
                conn._start_accepted(sock)
            except Exception as exc:  # closes only this connection, never the loop
                if not isinstance(exc, SSL.Error | OSError):
                    _log.exception("event=accept_start_failed remote=%s", remote)
                conn._finish(f"accept failed: {type(exc).__name__}: {exc}")  # unregisters
                sock.close()  # (if it got that far, _finish closed it already)

    def _pause_listener(self, listener: TcpListener) -> None:
        """Out of file descriptors (or memory): stop polling ``listener`` for a moment.

        The pending connection stays in the kernel's backlog and keeps the
        socket readable, so polling on would spin the loop (and flood the log)
        until descriptors free up; connections that time out free them.
        """
        self._counters.bump("connections_rejected")
        self._unregister(listener._sock)

        def resume() -> None:
            if not listener._closed and listener in self._listeners:
                self._modify(listener._sock, selectors.EVENT_READ, listener)

        self._schedule(_ACCEPT_PAUSE, resume)

    def _run(self) -> None:
        try:
            while not self._stop:
                self._iterate()
        except Exception as exc:
            self._failure = f"{type(exc).__name__}: {exc}"
            _log.exception("event=transport_loop_crashed")
            self._shutdown()
        finally:
            self._selector.close()
            self._wake_r.close()
            self._wake_w.close()

    def _iterate(self) -> None:
        now = time.monotonic()
        timeout = max(0.0, self._next_tick - now)
        if self._timers:
            timeout = min(timeout, max(0.0, self._timers[0][0] - now))
        if self._calls or self._dirty:
            timeout = 0.0
        for key, mask in self._selector.select(timeout):
            data = key.data
            if data is None:
                with contextlib.suppress(BlockingIOError, OSError):
                    while self._wake_r.recv(4096):
                        pass
            elif isinstance(data, TcpListener):
                self._accept(data)
            else:
                conn: TcpConnection = data
                self._guard(conn, functools.partial(conn._on_events, mask))
        while self._calls:
            fn = self._calls.popleft()
            try:
                fn()
            except Exception:
                _log.exception("event=loop_call_failed")
            if self._stop:
                return
        with self._dirty_lock:
            dirty = list(self._dirty)
            self._dirty.clear()
        for conn in dirty:
            if not conn._finished and conn._phase == "open":
                self._guard(conn, conn._pump)
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, timer = heapq.heappop(self._timers)
            if not timer.cancelled:
                try:
                    timer.callback()
                except Exception:
                    _log.exception("event=timer_callback_failed")
        if now >= self._next_tick:
            self._next_tick = now + self._tick
            for each in list(self._connections):
                self._guard(each, functools.partial(each._housekeeping, now))
            self._trim()

    def _guard(self, conn: TcpConnection, fn: Callable[[], None]) -> None:
        """Run a connection's I/O step; an unexpected error closes only that connection."""
        try:
            fn()
        except Exception as exc:
            _log.exception("event=connection_error conn=%s", conn.session_id)
            conn._finish(f"internal error: {type(exc).__name__}: {exc}")

    def _shutdown(self) -> None:
        with self._state_lock:
            self._stop = True
            self._closed = True
            self._calls.clear()
        for listener in list(self._listeners):
            listener._closed = True
            listener._close_now()
        for conn in list(self._connections):
            conn._finish("transport closed", ConnectionClosed("transport closed"))
        self._timers.clear()
