"""Real TCP transport: mutual TLS 1.3 over non-blocking sockets, driven by one selector thread.

I/O model, and why
    One thread per :class:`TcpTransport` runs a :mod:`selectors` loop over
    non-blocking sockets; every pyOpenSSL call (handshake, ``recv``,
    ``send``, ``shutdown``) happens on that thread, with
    ``WantReadError``/``WantWriteError`` turned into read/write interest.

    * An OpenSSL ``SSL`` object must not be used by two threads at once, so
      a thread per connection doing blocking reads would still need every
      write to go through that thread (or a lock held across a blocking
      read).  One loop thread owns all SSL objects: no locking around TLS.
    * asyncio's TLS support is built on the stdlib ``ssl`` module, which has
      no hook to verify a self-signed peer certificate against the DeviceId
      we expect before the handshake completes; pyOpenSSL has that hook but
      does not plug into asyncio streams.  A selector loop is the simplest
      correct host for pyOpenSSL's non-blocking API.
    * The node talks to tens of peers with small frames; one thread is
      plenty, and it bounds the thread count regardless of the peer count.

    Actors never block on the network: :meth:`TcpTransport.open`,
    :meth:`Connection.send` and :meth:`Connection.request` enqueue work and
    wake the loop through a socketpair; incoming frames and request replies
    are delivered by callbacks on the loop thread, which just ``tell`` an
    actor.  :meth:`TcpTransport.connect` is the only blocking call (it waits
    for the handshake), meant for non-actor callers such as tests and tools.

Wire
    Each frame is a 4-byte big-endian length and a codec message (at most
    ``max_frame_size`` bytes), inside TLS.  After the handshake each side
    sends a :class:`~aura_sync.messages.sync.Hello`; the connection is open
    once the peer's Hello arrives.  A zero-length, oversized, undecodable
    or truncated frame, a frame before Hello, or a stalled frame (no
    progress for ``read_timeout``) closes that one connection and is
    counted; the listener keeps serving everyone else.

Addresses
    ``"host:port"`` (``"[::1]:port"`` for IPv6).  Numeric hosts are used as
    they are; a host name is resolved on the loop thread (meant for
    ``localhost`` and bootstrap names, resolution is quick).

Shutdown
    :meth:`TcpTransport.close` closes listeners and connections (pending
    requests fail with :class:`~aura_sync.errors.ConnectionClosed`), stops
    the loop thread and joins it: no thread or socket is left behind.

Layer: runtime.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import heapq
import itertools
import logging
import os
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Final

from OpenSSL import SSL

from aura_sync._checks import check_peer
from aura_sync.effects import check_seconds
from aura_sync.errors import (
    AuraError,
    ConnectionClosed,
    HandshakeFailed,
    InvalidArgument,
    PeerIdentityMismatch,
    TransportError,
    WrongType,
)
from aura_sync.identity import NodeIdentity
from aura_sync.ids import DeviceId
from aura_sync.transport import tls
from aura_sync.transport._frames import HEADER_SIZE, FrameDecoder, FrameError, encode_frame
from aura_sync.transport.base import (
    Connection,
    ConnectionState,
    Handler,
    Refusal,
    RefusalKind,
    TransportConfig,
    TransportStats,
    _check_handler,
    _Counters,
)

__all__ = ["TcpConnection", "TcpListener", "TcpTransport", "format_address", "parse_address"]

_log = logging.getLogger("aura_sync.transport.tcp")

_READ_CHUNK: Final = 65536
_WRITE_CHUNK: Final = 65536
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


class _Timer:
    __slots__ = ("callback", "cancelled", "deadline")

    def __init__(self, deadline: float, callback: Callable[[], None]) -> None:
        self.deadline = deadline
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


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


class TcpConnection(Connection):
    """A TLS connection of a :class:`TcpTransport`; its API is that of ``Connection``."""

    def __init__(
        self,
        transport: TcpTransport,
        *,
        initiator: bool,
        peer_id: DeviceId | None,
        remote_address: str,
        handler: Handler | None,
    ) -> None:
        super().__init__(
            initiator=initiator,
            peer_id=peer_id,
            remote_address=remote_address,
            handler=handler,
            config=transport._config,
            counters=transport._counters,
            listen_address=transport._advertised,
            now=time.monotonic,
        )
        self._transport = transport
        self._sock: socket.socket | None = None
        self._ssl: SSL.Connection | None = None
        self._check: tls.PeerCheck | None = None
        self._phase = "tcp" if initiator else "tls"
        self._decoder = FrameDecoder(transport._config.max_frame_size)
        self._last_progress = self._created
        self._outq: deque[bytes] = deque()
        self._out_lock = threading.Lock()
        self._queued_bytes = 0
        self._outbuf = bytearray()
        self._wchunk: bytes | None = None
        self._want_write = False
        self._read_wants_write = False
        self._mask = 0
        self._linger_timer: _Timer | None = None
        self._finished = False

    # --- Connection hooks (any thread) -------------------------------------------------

    def _transmit(self, payload: bytes) -> None:
        frame = encode_frame(payload)
        with self._out_lock:
            if self._finished:
                raise ConnectionClosed(self._closed_message())
            if self._queued_bytes + len(frame) > self._config.max_send_buffer:
                raise TransportError(
                    f"send buffer of {self.session_id} is full ({self._queued_bytes} bytes "
                    f"queued, limit {self._config.max_send_buffer})"
                )
            self._outq.append(frame)
            self._queued_bytes += len(frame)
        self._counters.bump("frames_sent")
        self._transport._mark_dirty(self)

    def _schedule(self, delay: float, callback: Callable[[], None]) -> _Timer:
        return self._transport._schedule(delay, callback)

    def _begin_close(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            self._transport._call_soon(self._close_requested)

    def _abort(self, reason: str, error: AuraError | None = None) -> None:
        if self._transport._on_loop_thread():
            self._finish(reason, error)
        else:
            with contextlib.suppress(ConnectionClosed):
                self._transport._call_soon(lambda: self._finish(reason, error))

    # --- loop-thread machinery -------------------------------------------------------------

    def _start_dial(self, host: str, port: int) -> None:
        """Begin the non-blocking TCP connect (loop thread)."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            family, socktype, proto, _, sockaddr = infos[0]
            sock = socket.socket(family, socktype, proto)
        except OSError as exc:
            self._finish(
                f"cannot resolve or open a socket for {self.remote_address}: {exc}",
                HandshakeFailed(f"cannot connect to {self.remote_address}: {exc}"),
            )
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        err = sock.connect_ex(sockaddr)
        if err not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN):
            self._finish(
                f"connect failed: {errno.errorcode.get(err, err)}",
                HandshakeFailed(f"cannot connect to {self.remote_address}: {_strerror(err)}"),
            )
            return
        self._transport._register(self)
        self._update_interest()

    def _start_accepted(self, sock: socket.socket) -> None:
        """Begin the server side of the TLS handshake on an accepted socket (loop thread)."""
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        ssl_conn = SSL.Connection(self._transport._server_ctx, sock)
        self._check = tls.attach_check(ssl_conn, None)
        ssl_conn.set_accept_state()
        self._ssl = ssl_conn
        self._transport._register(self)
        self._handshake()

    def _on_events(self, mask: int) -> None:
        if self._finished:
            return
        if self._phase == "tcp":
            if mask & selectors.EVENT_WRITE:
                self._tcp_connected()
            return
        if self._phase == "tls":
            self._handshake()
            return
        self._pump()

    def _tcp_connected(self) -> None:
        assert self._sock is not None
        err = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._finish(
                f"connect failed: {_strerror(err)}",
                HandshakeFailed(f"cannot connect to {self.remote_address}: {_strerror(err)}"),
            )
            return
        ssl_conn = SSL.Connection(self._transport._client_ctx, self._sock)
        self._check = tls.attach_check(ssl_conn, self._peer_id)
        ssl_conn.set_connect_state()
        self._ssl = ssl_conn
        self._phase = "tls"
        self._handshake()

    def _handshake(self) -> None:
        assert self._ssl is not None and self._check is not None
        try:
            self._ssl.do_handshake()
        except SSL.WantReadError:
            self._want_write = False
            self._update_interest()
            return
        except SSL.WantWriteError:
            self._want_write = True
            self._update_interest()
            return
        except (SSL.Error, OSError) as exc:
            self._handshake_failed(_ssl_error_text(exc))
            return
        self._want_write = False
        peer = self._check.verified
        if peer is None or (self._peer_id is not None and peer != self._peer_id):
            self._handshake_failed("handshake finished without a verified peer certificate")
            return
        self._phase = "open"
        self._last_progress = time.monotonic()
        self._tls_established(peer)  # queues our Hello
        self._pump()

    def _handshake_failed(self, detail: str) -> None:
        check = self._check
        reason = check.failure if check is not None and check.failure else detail
        expected = self._peer_id if self._initiator else None
        error: AuraError
        if check is not None and check.mismatch:
            self._counters.bump("identity_mismatches")
            kind = RefusalKind.IDENTITY_MISMATCH
            error = PeerIdentityMismatch(
                f"peer at {self.remote_address} is not {expected}: {reason}"
            )
        else:
            self._counters.bump("handshake_failures")
            kind = RefusalKind.HANDSHAKE
            error = HandshakeFailed(f"TLS handshake with {self.remote_address} failed: {reason}")
        _log.info(
            "event=peer_refused kind=%s remote=%s expected=%s reason=%r",
            kind.value,
            self.remote_address,
            expected,
            reason,
        )
        self._transport._refused(
            Refusal(
                kind,
                self.remote_address,
                reason,
                expected,
                check.presented if check is not None else None,
            )
        )
        self._finish(f"refused: {reason}", error)

    def _pump(self) -> None:
        """Move bytes both ways on an established TLS connection (loop thread)."""
        self._write()
        if not self._finished:
            self._read()
        if not self._finished:
            if self._state is ConnectionState.CLOSING and not self._has_output():
                self._finish("closed locally")
                return
            self._update_interest()

    def _has_output(self) -> bool:
        return bool(self._outbuf) or self._wchunk is not None or bool(self._outq)

    def _write(self) -> None:
        ssl_conn = self._ssl
        assert ssl_conn is not None
        self._want_write = False
        while True:
            if self._wchunk is None:
                if not self._outbuf:
                    with self._out_lock:
                        while self._outq and len(self._outbuf) < _WRITE_CHUNK:
                            self._outbuf += self._outq.popleft()
                if not self._outbuf:
                    return
                self._wchunk = bytes(self._outbuf[:_WRITE_CHUNK])
            try:
                sent = ssl_conn.send(self._wchunk)
            except SSL.WantWriteError:
                self._want_write = True
                return
            except SSL.WantReadError:
                return  # the read side will retry the write when data arrives
            except (SSL.Error, OSError) as exc:
                self._finish(f"write failed: {_ssl_error_text(exc)}")
                return
            del self._outbuf[:sent]
            with self._out_lock:
                self._queued_bytes -= sent
            self._counters.bump("bytes_sent", sent)
            self._wchunk = None

    def _read(self) -> None:
        ssl_conn = self._ssl
        assert ssl_conn is not None
        self._read_wants_write = False
        while not self._finished:
            try:
                data = ssl_conn.recv(_READ_CHUNK)
            except SSL.WantReadError:
                return
            except SSL.WantWriteError:
                self._read_wants_write = True
                return
            except SSL.ZeroReturnError:
                self._eof()
                return
            except SSL.SysCallError as exc:
                if exc.args and exc.args[0] in (-1, 0):  # EOF without close_notify
                    self._eof()
                else:
                    self._finish(f"read failed: {_ssl_error_text(exc)}")
                return
            except (SSL.Error, OSError) as exc:
                self._finish(f"read failed: {_ssl_error_text(exc)}")
                return
            if not data:
                self._eof()
                return
            self._last_progress = time.monotonic()
            try:
                payloads = self._decoder.feed(data)
            except FrameError as exc:
                self._counters.bump(f"{exc.kind}_frames")
                self._finish(f"{exc.kind} frame: {exc}")
                return
            for payload in payloads:
                if self._is_finished():
                    return
                self._frame_received(payload, len(payload) + HEADER_SIZE)

    def _is_finished(self) -> bool:
        return self._finished

    def _eof(self) -> None:
        if self._decoder.has_partial:
            self._counters.bump("truncated_frames")
            self._finish("truncated frame: the peer closed in the middle of a frame")
        else:
            self._finish("closed by peer")

    def _close_requested(self) -> None:
        if self._finished:
            return
        if self._phase != "open" or not self._has_output():
            self._finish("closed locally")
            return
        self._linger_timer = self._transport._schedule(
            self._config.linger, lambda: self._finish("closed locally (linger expired)")
        )
        self._pump()

    def _housekeeping(self, now: float) -> None:
        if self._finished:
            return
        if (
            self._phase == "open"
            and self._decoder.has_partial
            and now - self._last_progress >= self._config.read_timeout
        ):
            self._counters.bump("read_timeouts")
            self._finish(f"read timeout: frame incomplete for {self._config.read_timeout} s")
            return
        if self._phase == "tls" and now - self._created >= self._config.connect_timeout:
            self._handshake_failed(f"no TLS handshake within {self._config.connect_timeout} s")
            return
        self._tick(now)
        if not self._finished and self._phase == "open":
            self._pump()  # flush a Ping the tick may have queued

    def _update_interest(self) -> None:
        if self._finished or self._sock is None:
            return
        if self._phase == "tcp":
            mask = selectors.EVENT_WRITE
        else:
            mask = selectors.EVENT_READ
            if (
                self._want_write
                or self._read_wants_write
                or (self._phase == "open" and self._has_output())
            ):
                mask |= selectors.EVENT_WRITE
        if mask != self._mask:
            self._transport._modify(self._sock, mask, self)
            self._mask = mask

    def _finish(self, reason: str, error: AuraError | None = None) -> None:
        """Close the socket now and finalize (loop thread).  Idempotent."""
        if self._finished:
            return
        with self._out_lock:
            self._finished = True
            self._outq.clear()
            self._queued_bytes = 0
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        if self._ssl is not None and self._phase == "open":
            with contextlib.suppress(SSL.Error, OSError):
                self._ssl.shutdown()  # best effort close_notify (non-blocking)
        if self._sock is not None:
            self._transport._unregister(self._sock)
            self._sock.close()
        self._transport._connections.discard(self)
        self._closed(reason, error)


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
            if len(self._connections) >= self._config.max_connections:
                self._counters.bump("connections_rejected")
                conn._finish(
                    "too many connections",
                    TransportError(
                        f"cannot open a connection to {peer_id}: "
                        f"{self._config.max_connections} connections already open"
                    ),
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
            if len(self._connections) >= self._config.max_connections:
                self._counters.bump("connections_rejected")
                sock.close()
                self._refused(Refusal(RefusalKind.LIMIT, remote, "too many connections"))
                continue
            conn = TcpConnection(
                self, initiator=False, peer_id=None, remote_address=remote, handler=listener.handler
            )
            self._connections.add(conn)
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


def _strerror(err: int) -> str:
    try:
        return os.strerror(err)
    except (ValueError, OverflowError):
        return f"error {err}"


def _ssl_error_text(exc: BaseException) -> str:
    if isinstance(exc, SSL.SysCallError):
        return f"system call error {exc.args!r}"
    if isinstance(exc, SSL.Error) and exc.args and isinstance(exc.args[0], list):
        parts = [str(item[-1]) for item in exc.args[0] if item]
        if parts:
            return "; ".join(parts)
    return f"{type(exc).__name__}: {exc}"
