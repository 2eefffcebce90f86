"""One TLS connection of the TCP transport: handshake, framing, buffered writes.

:class:`TcpConnection` is driven by the transport's selector thread, which
owns its socket and its pyOpenSSL object (no locking around TLS).  Senders
on other threads only append encoded frames to an outgoing queue bounded by
``max_send_buffer`` and wake the loop.  A zero-length, oversized,
undecodable or truncated frame, or a frame stalled for ``read_timeout``,
closes this connection only and is counted.

Layer: runtime (internal to :mod:`aura_sync.transport.tcp`).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from OpenSSL import SSL

from aura_sync.errors import (
    AuraError,
    ConnectionClosed,
    HandshakeFailed,
    PeerIdentityMismatch,
    TransportError,
)
from aura_sync.ids import DeviceId
from aura_sync.transport import tls
from aura_sync.transport._frames import HEADER_SIZE, FrameDecoder, FrameError, encode_frame
from aura_sync.transport.config import Refusal, RefusalKind
from aura_sync.transport.connection import Connection, ConnectionState, Handler

if TYPE_CHECKING:
    from aura_sync.transport.tcp import TcpTransport

__all__ = ["TcpConnection"]

_log = logging.getLogger("aura_sync.transport.tcp")

_READ_CHUNK: Final = 65536
_WRITE_CHUNK: Final = 65536


class _Timer:
    __slots__ = ("callback", "cancelled", "deadline")

    def __init__(self, deadline: float, callback: Callable[[], None]) -> None:
        self.deadline = deadline
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


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
        self._held: deque[bytes] = deque()  # decoded frames not dispatched (reading paused)
        self._paused = False

    # --- Connection hooks (any thread) -------------------------------------------------

    def _transmit(self, payload: bytes) -> None:
        frame = encode_frame(payload)
        with self._out_lock:
            if self._finished:
                raise ConnectionClosed(self._closed_message())
            if self._queued_bytes + len(frame) > self._config.max_send_buffer:
                self._counters.bump("send_buffer_full")
                raise TransportError(
                    f"send buffer of {self.session_id} is full ({self._queued_bytes} bytes "
                    f"queued, limit {self._config.max_send_buffer})"
                )
            full = self._transport._reserve_send(len(frame))
            if full is not None:
                self._counters.bump("send_buffer_full")
                raise TransportError(f"cannot send on {self.session_id}: {full}")
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
        refused = self._transport._admission.admit_verified(self, peer)
        if refused is not None:
            self._refuse_verified(peer, *refused)
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

    def _refuse_verified(self, peer: DeviceId, counter: str, reason: str) -> None:
        """TLS proved ``peer`` but no established slot is free for it: close at once."""
        self._counters.bump(counter)
        _log.info(
            "event=peer_refused kind=limit remote=%s peer=%s reason=%r",
            self.remote_address,
            peer,
            reason,
        )
        expected = self._peer_id if self._initiator else None
        self._transport._refused(
            Refusal(RefusalKind.LIMIT, self.remote_address, reason, expected, peer)
        )
        self._finish(
            f"refused: {reason}", TransportError(f"connection to {peer} refused: {reason}")
        )

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
            self._transport._release_send(sent)
            self._counters.bump("bytes_sent", sent)
            self._wchunk = None

    def _read_paused(self) -> bool:
        """Backpressure: too many bytes unsent or requests unanswered (count each pause)."""
        cfg = self._config
        queued = self._queued_bytes
        # While our own requests wait for replies the link is read whatever we queued
        # (two peers filling each other's buffers must not stop reading both ways).
        paused = self._inflight >= cfg.max_inflight_requests or (
            not self._pending
            and (
                queued > cfg.pause_reading_above
                or (queued > 0 and self._transport._send_total * 2 > cfg.max_total_send_buffer)
            )
        )
        if paused and not self._paused:
            self._counters.bump("reads_paused")
        self._paused = paused
        return paused

    def _deliver_held(self) -> bool:
        """Dispatch decoded frames while reading is allowed; False if reading must stop."""
        held = self._held
        while held:
            if self._finished or self._read_paused():
                return False
            payload = held.popleft()
            self._frame_received(payload, len(payload) + HEADER_SIZE)
        return not self._finished

    def _read(self) -> None:
        ssl_conn = self._ssl
        assert ssl_conn is not None
        self._read_wants_write = False
        while self._deliver_held() and not self._read_paused():
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
            self._held.extend(payloads)

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
            paused = self._phase == "open" and (self._paused or bool(self._held))
            mask = 0 if paused else selectors.EVENT_READ
            if (
                self._want_write
                or self._read_wants_write
                or (self._phase == "open" and self._has_output())
            ):
                mask |= selectors.EVENT_WRITE
        if mask != self._mask:
            if mask:
                self._transport._modify(self._sock, mask, self)
            else:  # a selector cannot watch for nothing: stop watching
                self._transport._unregister(self._sock)
            self._mask = mask

    def _finish(self, reason: str, error: AuraError | None = None) -> None:
        """Close the socket now and finalize (loop thread).  Idempotent."""
        if self._finished:
            return
        with self._out_lock:
            self._finished = True
            self._outq.clear()
            unsent, self._queued_bytes = self._queued_bytes, 0
        self._transport._release_send(unsent)
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        if self._ssl is not None and self._phase == "open":
            with contextlib.suppress(SSL.Error, OSError):
                self._ssl.shutdown()  # best effort close_notify (non-blocking)
        if self._sock is not None:
            self._transport._unregister(self._sock)
            self._sock.close()
        self._transport._forget(self)
        self._closed(reason, error)


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
