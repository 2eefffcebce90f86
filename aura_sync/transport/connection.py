"""The connection logic shared by the TCP and simulated transports, and the events.

A :class:`Connection` carries typed messages to one verified peer: Hello
exchange, :meth:`Connection.send`, :meth:`Connection.request` (a future
for the reply), keepalive Pings and the idle timeout; subclasses only move
encoded payloads (``_transmit``) and own the link.  Every frame from the
network is untrusted: any decode failure or protocol violation closes only
that connection and is counted.  Events (:class:`Connected`,
:class:`Inbound`, :class:`Disconnected`) go to a quick, non-blocking handler.

Layer: runtime.
"""

from __future__ import annotations

import abc
import contextlib
import enum
import itertools
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from typing import Final, Protocol

from aura_sync.effects import check_seconds
from aura_sync.errors import (
    AuraError,
    ConnectionClosed,
    HandshakeFailed,
    InvalidArgument,
    RequestTimeout,
    TransportError,
    WrongType,
)
from aura_sync.ids import DeviceId
from aura_sync.messages import codec
from aura_sync.messages._base import Message
from aura_sync.messages.common import ErrorReply
from aura_sync.messages.sync import (
    PROTOCOL_VERSION,
    TRANSPORT_MESSAGES,
    Hello,
    Ping,
    Pong,
    Reply,
    Request,
)
from aura_sync.transport.config import TransportConfig, _Counters

__all__ = [
    "Connected",
    "Connection",
    "ConnectionState",
    "Disconnected",
    "Handler",
    "Inbound",
    "TransportEvent",
]

_log = logging.getLogger("aura_sync.transport")

_U64_MAX: Final = 2**64 - 1


# --- events ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Inbound:
    """A message received on ``connection``; ``request_id`` is set when it is a request."""

    connection: Connection
    message: Message
    request_id: int | None = None

    def respond(self, reply: Message) -> None:
        """Send ``reply`` as the answer to this request (any thread; non-blocking).

        Raises :class:`~aura_sync.errors.InvalidArgument` if this message was
        not a request, :class:`~aura_sync.errors.ConnectionClosed` if the
        connection is gone.
        """
        if self.request_id is None:
            raise InvalidArgument(
                f"cannot respond to {type(self.message).__name__}: it was not sent as a request"
            )
        self.connection._respond(self.request_id, reply)


@dataclass(frozen=True, slots=True)
class Connected:
    """``connection`` is open: TLS verified the peer and both Hellos were exchanged."""

    connection: Connection


@dataclass(frozen=True, slots=True)
class Disconnected:
    """``connection`` (which had been open) is closed, for ``reason``."""

    connection: Connection
    reason: str


TransportEvent = Inbound | Connected | Disconnected
"""What a handler receives."""

Handler = Callable[[TransportEvent], None]
"""A quick, non-blocking callback that receives transport events."""


# --- connections ------------------------------------------------------------------------


class ConnectionState(enum.Enum):
    """The lifecycle state of a :class:`Connection`."""

    CONNECTING = "connecting"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class _Cancellable(Protocol):
    def cancel(self) -> None: ...


_session_ids = itertools.count(1)


class Connection(abc.ABC):
    """A connection to one verified peer; shared logic of the TCP and simulated transports.

    Thread-safe: :meth:`send`, :meth:`request`, :meth:`close` and
    :meth:`is_healthy` may be called from any thread and never block.
    """

    def __init__(
        self,
        *,
        initiator: bool,
        peer_id: DeviceId | None,
        remote_address: str,
        handler: Handler | None,
        config: TransportConfig,
        counters: _Counters,
        listen_address: str,
        now: Callable[[], float],
    ) -> None:
        self._initiator = initiator
        self._peer_id = peer_id
        self._remote_address = remote_address
        self._handler = handler
        self._config = config
        self._counters = counters
        self._listen_address = listen_address
        self._now = now
        self._lock = threading.Lock()
        self._state = ConnectionState.CONNECTING
        self._flushing_early = False
        self._early: list[bytes] = []
        self._early_bytes = 0
        self._pending: dict[int, tuple[Future[Message], _Cancellable | None]] = {}
        self._request_ids = itertools.count(1)
        self._ping_nonce = itertools.count(1)
        self._created = now()
        self._last_recv = self._created
        self._last_ping = self._created
        self._tls_done = False
        self._connected_emitted = False
        self._peer_listen_address: str | None = None
        self._closed_reason: str | None = None
        self._inflight = 0  # requests received and not answered yet (backpressure)
        self._idle_checks = True  # False: silence is not a sign of death (no keepalive)
        self._serial = next(_session_ids)  # creation order (deterministic sorting)
        self._session_id = f"conn-{self._serial}"
        self.ready: Future[Connection] = Future()
        """Completes with this connection once it is open, or fails with the handshake error."""

    # --- subclass hooks ----------------------------------------------------------------

    @abc.abstractmethod
    def _transmit(self, payload: bytes) -> None:
        """Queue one encoded message for the wire (any thread, non-blocking).

        Raise :class:`~aura_sync.errors.ConnectionClosed` if the link is gone
        or :class:`~aura_sync.errors.TransportError` if the send buffer is full.
        """

    @abc.abstractmethod
    def _schedule(self, delay: float, callback: Callable[[], None]) -> _Cancellable:
        """Run ``callback`` after ``delay`` seconds on the I/O thread (any thread may call)."""

    @abc.abstractmethod
    def _begin_close(self) -> None:
        """Flush what is queued, then close the link and call :meth:`_closed` (non-blocking)."""

    @abc.abstractmethod
    def _abort(self, reason: str, error: AuraError | None = None) -> None:
        """Close the link now (I/O thread) and call :meth:`_closed`."""

    # --- public API --------------------------------------------------------------------

    @property
    def peer_id(self) -> DeviceId:
        """The peer's DeviceId (for a dialed connection: the one expected; proven once open).

        Raises :class:`~aura_sync.errors.TransportError` on an accepted
        connection whose handshake has not finished yet (handlers only ever
        see connections after :class:`Connected`, so they never hit this).
        """
        peer = self._peer_id
        if peer is None:
            raise TransportError(f"{self._session_id}: the peer is not verified yet")
        return peer

    @property
    def initiator(self) -> bool:
        """True if this side dialed the connection."""
        return self._initiator

    @property
    def session_id(self) -> str:
        """A process-unique name of this connection (for logs and pool metadata)."""
        return self._session_id

    @property
    def remote_address(self) -> str:
        """The peer's transport address as seen by this side."""
        return self._remote_address

    @property
    def peer_listen_address(self) -> str | None:
        """Where the peer says it accepts connections (from its Hello), or None."""
        return self._peer_listen_address

    @property
    def state(self) -> ConnectionState:
        """The current lifecycle state."""
        return self._state

    @property
    def closed_reason(self) -> str | None:
        """Why the connection closed (None while it is not closed)."""
        return self._closed_reason

    def is_healthy(self) -> bool:
        """Whether the connection can carry traffic: not closed, not idle past ``idle_timeout``.

        A connection still connecting counts as healthy until its
        ``connect_timeout`` (messages sent meanwhile are queued).
        """
        state = self._state
        if state is ConnectionState.CLOSED or state is ConnectionState.CLOSING:
            return False
        now = self._now()
        if state is ConnectionState.CONNECTING:
            return now - self._created < self._config.connect_timeout
        return not self._idle_checks or now - self._last_recv < self._config.idle_timeout

    def send(self, msg: Message) -> None:
        """Send ``msg`` to the peer (queued, non-blocking; in order on this connection).

        Raises :class:`~aura_sync.errors.InvalidArgument` if ``msg`` is not a
        message or encodes to more than ``max_frame_size`` bytes,
        :class:`~aura_sync.errors.ConnectionClosed` if the connection is
        closing or closed, :class:`~aura_sync.errors.TransportError` if the
        send buffer is full.
        """
        if not isinstance(msg, Message):
            raise WrongType(f"msg must be a Message, got {type(msg).__name__} {msg!r}")
        self._send_payload(codec.encode(msg, max_size=self._config.max_frame_size))

    def request(self, msg: Message, timeout: float) -> Future[Message]:
        """Send ``msg`` as a request; the future completes with the reply message.

        ``timeout`` is in seconds (> 0).  The future fails with
        :class:`~aura_sync.errors.RequestTimeout` after ``timeout``, or with
        :class:`~aura_sync.errors.ConnectionClosed` if the connection closes
        first.  An error reply (:class:`~aura_sync.messages.ErrorReply`) is a
        reply like any other.  Raises like :meth:`send` for a message that
        cannot be sent at all.
        """
        timeout = check_seconds(timeout, "timeout", allow_zero=False)
        if not isinstance(msg, Message):
            raise WrongType(f"msg must be a Message, got {type(msg).__name__} {msg!r}")
        if isinstance(msg, TRANSPORT_MESSAGES):
            raise InvalidArgument(f"cannot send a transport message as a request: {msg!r}")
        request_id = next(self._request_ids)
        payload = codec.encode(
            Request(request_id, codec.encode(msg, max_size=self._config.max_frame_size)),
            max_size=self._config.max_frame_size,
        )
        future: Future[Message] = Future()
        with self._lock:
            if self._state is ConnectionState.CLOSING or self._state is ConnectionState.CLOSED:
                raise ConnectionClosed(self._closed_message())
            self._pending[request_id] = (future, None)
        try:
            self._send_payload(payload)
        except BaseException:
            with self._lock:
                self._pending.pop(request_id, None)
            raise
        timer = self._schedule(timeout, lambda: self._request_expired(request_id, timeout))
        with self._lock:
            entry = self._pending.get(request_id)
            if entry is not None:
                self._pending[request_id] = (entry[0], timer)
        if entry is None:  # already answered (or closed) before the timer was stored
            timer.cancel()
        self._counters.bump("requests_sent")
        return future

    def close(self) -> None:
        """Close gracefully: queued messages are flushed (for up to ``linger`` s), then closed.

        Pending requests fail with :class:`~aura_sync.errors.ConnectionClosed`.
        Idempotent and non-blocking.
        """
        with self._lock:
            state = self._state
            if state is ConnectionState.CLOSED or state is ConnectionState.CLOSING:
                return
            self._state = ConnectionState.CLOSING
        self._begin_close()

    def __repr__(self) -> str:
        peer = self._peer_id if self._peer_id is not None else "?"
        return (
            f"<{type(self).__name__} {self._session_id} peer={peer} "
            f"{self._remote_address} {self._state.value}>"
        )

    # --- internals used by the transports ---------------------------------------------------

    def _closed_message(self) -> str:
        peer = self._peer_id if self._peer_id is not None else self._remote_address
        reason = self._closed_reason or "closing"
        return f"connection {self._session_id} to {peer} is closed ({reason})"

    def _respond(self, request_id: int, reply: Message) -> None:
        """Send ``reply`` as the answer to request ``request_id`` (see :meth:`Inbound.respond`)."""
        if not isinstance(reply, Message):
            raise WrongType(f"reply must be a Message, got {type(reply).__name__} {reply!r}")
        if isinstance(reply, TRANSPORT_MESSAGES):
            raise InvalidArgument(f"cannot send a transport message as a reply: {reply!r}")
        with self._lock:
            self._inflight = max(0, self._inflight - 1)
        body = codec.encode(reply, max_size=self._config.max_frame_size)
        self._send_payload(
            codec.encode(Reply(request_id, body), max_size=self._config.max_frame_size)
        )

    def _send_payload(self, payload: bytes) -> None:
        with self._lock:
            state = self._state
            if state is ConnectionState.CLOSING or state is ConnectionState.CLOSED:
                raise ConnectionClosed(self._closed_message())
            if state is ConnectionState.CONNECTING or self._flushing_early:
                if self._early_bytes + len(payload) > self._config.max_send_buffer:
                    raise TransportError(
                        f"send buffer of {self._session_id} is full "
                        f"({self._early_bytes} bytes queued while connecting)"
                    )
                self._early.append(payload)
                self._early_bytes += len(payload)
                return
        self._transmit(payload)

    def _send_control(self, msg: Message) -> None:
        """Send a transport message (Hello, Ping, Pong) now, bypassing the early queue."""
        try:
            self._transmit(codec.encode(msg, max_size=self._config.max_frame_size))
        except TransportError as exc:
            _log.debug("event=control_send_failed conn=%s error=%s", self._session_id, exc)

    def _tls_established(self, peer_id: DeviceId) -> None:
        """The secure channel is up and ``peer_id`` proven: send our Hello."""
        if self._peer_id is None:
            self._peer_id = peer_id
        self._tls_done = True
        self._send_control(Hello(PROTOCOL_VERSION, self._listen_address))

    def _frame_received(self, payload: bytes, wire_size: int) -> None:
        """Decode and dispatch one frame payload (I/O thread)."""
        self._last_recv = self._now()
        self._counters.bump("frames_received")
        self._counters.bump("bytes_received", wire_size)
        try:
            msg = codec.decode(payload, max_size=self._config.max_frame_size)
        except Exception as exc:  # DecodeError; anything else is a codec bug, same verdict
            self._malformed("", exc)
            return
        kind = type(msg)
        if self._state is ConnectionState.CONNECTING:
            if kind is Hello:
                self._on_hello(msg)  # type: ignore[arg-type]
            else:
                self._violation(f"expected Hello first, got {kind.__name__}")
            return
        if kind is Ping:
            self._send_control(Pong(msg.nonce))  # type: ignore[attr-defined]
        elif kind is Pong:
            pass
        elif kind is Reply or kind is Request:
            body = self._decode_body(msg.body)  # type: ignore[attr-defined]
            if body is None:
                return
            if kind is Reply:
                self._on_reply(msg.request_id, body)  # type: ignore[attr-defined]
            else:
                with self._lock:
                    self._inflight += 1
                self._deliver(Inbound(self, body, msg.request_id))  # type: ignore[attr-defined]
        elif kind is Hello:
            self._violation("a second Hello")
        else:
            self._deliver(Inbound(self, msg, None))

    def _decode_body(self, data: bytes) -> Message | None:
        try:
            body = codec.decode(data, max_size=self._config.max_frame_size)
        except Exception as exc:
            self._malformed("request/reply body: ", exc)
            return None
        if isinstance(body, TRANSPORT_MESSAGES):
            self._violation(f"{type(body).__name__} inside a request or reply")
            return None
        return body

    def _malformed(self, where: str, exc: Exception) -> None:
        self._counters.bump("malformed_frames")
        if not isinstance(exc, AuraError):
            _log.error(
                "event=codec_unexpected_error conn=%s error=%r", self._session_id, exc, exc_info=exc
            )
        self._abort(f"malformed frame: {where}{exc}")

    def _violation(self, what: str) -> None:
        self._counters.bump("protocol_violations")
        self._abort(f"protocol violation: {what}")

    def _on_hello(self, hello: Hello) -> None:
        if hello.protocol_version != PROTOCOL_VERSION:
            self._violation(
                f"unsupported protocol version {hello.protocol_version} "
                f"(this node speaks {PROTOCOL_VERSION})"
            )
            return
        if not self._tls_done:
            self._violation("Hello before the secure channel was up")
            return
        self._peer_listen_address = hello.listen_address or None
        with self._lock:
            if self._state is not ConnectionState.CONNECTING:
                return
            self._state = ConnectionState.OPEN
            self._flushing_early = True
        self._flush_early()
        self._counters.bump("connections_established")
        self._connected_emitted = True
        with contextlib.suppress(InvalidStateError):
            self.ready.set_result(self)
        self._emit(Connected(self))

    def _flush_early(self) -> None:
        """Send what was queued while connecting, before any later send (I/O thread)."""
        while True:
            with self._lock:
                batch = self._early
                self._early = []
                self._early_bytes = 0
                if not batch or self._state is not ConnectionState.OPEN:
                    self._flushing_early = False
                    return  # nothing left (or closing: queued messages are dropped)
            for payload in batch:
                try:
                    self._transmit(payload)
                except TransportError as exc:
                    self._abort(f"cannot flush queued messages: {exc}")
                    return

    def _on_reply(self, request_id: int, body: Message) -> None:
        with self._lock:
            entry = self._pending.pop(request_id, None)
        if entry is None:
            self._counters.bump("late_replies")
            return
        future, timer = entry
        if timer is not None:
            timer.cancel()
        with contextlib.suppress(InvalidStateError):  # cancelled by the caller
            future.set_result(body)

    def _request_expired(self, request_id: int, timeout: float) -> None:
        with self._lock:
            entry = self._pending.pop(request_id, None)
        if entry is None:
            return
        self._counters.bump("request_timeouts")
        with contextlib.suppress(InvalidStateError):
            entry[0].set_exception(
                RequestTimeout(
                    f"no reply from {self._peer_id} on {self._session_id} within {timeout} s "
                    f"(request {request_id})"
                )
            )

    def _deliver(self, event: Inbound) -> None:
        handler = self._handler
        if handler is None:
            self._counters.bump("unhandled_messages")
            if event.request_id is not None:
                self._reply_error(
                    event.request_id,
                    "UnhandledMessage",
                    f"no handler for {type(event.message).__name__} on this connection",
                )
            return
        if not self._emit(event) and event.request_id is not None:
            self._reply_error(
                event.request_id,
                "ActorCrashed",
                f"the handler failed on {type(event.message).__name__}",
            )

    def _reply_error(self, request_id: int, error_type: str, text: str) -> None:
        with contextlib.suppress(TransportError):
            self._respond(request_id, ErrorReply(error_type, text))

    def _emit(self, event: TransportEvent) -> bool:
        handler = self._handler
        if handler is None:
            return True
        try:
            handler(event)
        except Exception:
            self._counters.bump("handler_errors")
            _log.exception(
                "event=handler_error conn=%s event_type=%s", self._session_id, type(event).__name__
            )
            return False
        return True

    def _tick(self, now: float) -> None:
        """Housekeeping (I/O thread): connect timeout, keepalive Ping, idle timeout."""
        state = self._state
        cfg = self._config
        if state is ConnectionState.CONNECTING:
            if now - self._created >= cfg.connect_timeout:
                self._abort(
                    f"connect timeout: not open after {cfg.connect_timeout} s",
                    HandshakeFailed(
                        f"connecting to {self._peer_id or self._remote_address} at "
                        f"{self._remote_address} timed out after {cfg.connect_timeout} s"
                    ),
                )
        elif state is ConnectionState.OPEN:
            idle = now - self._last_recv
            if idle >= cfg.idle_timeout:
                self._counters.bump("idle_timeouts")
                self._abort(f"idle timeout: nothing received for {idle:.3f} s")
            elif idle >= cfg.keepalive_interval and now - self._last_ping >= cfg.keepalive_interval:
                self._last_ping = now
                self._send_control(Ping(next(self._ping_nonce) & _U64_MAX))

    def _closed(self, reason: str, error: AuraError | None = None) -> None:
        """The link is gone: fail what waits, emit Disconnected (once; any thread)."""
        with self._lock:
            if self._state is ConnectionState.CLOSED:
                return
            self._state = ConnectionState.CLOSED
            self._closed_reason = reason
            pending = list(self._pending.values())
            self._pending.clear()
            self._early = []
            self._early_bytes = 0
        self._counters.bump("connections_closed")
        closed = ConnectionClosed(self._closed_message())
        for future, timer in pending:
            if timer is not None:
                timer.cancel()
            with contextlib.suppress(InvalidStateError):
                future.set_exception(closed)
        if not self.ready.done():
            failure = error or HandshakeFailed(
                f"connection {self._session_id} to {self._peer_id or self._remote_address} "
                f"at {self._remote_address} failed before it was open: {reason}"
            )
            with contextlib.suppress(InvalidStateError):
                self.ready.set_exception(failure)
        _log.debug("event=connection_closed conn=%s reason=%r", self._session_id, reason)
        if self._connected_emitted:
            self._emit(Disconnected(self, reason))
